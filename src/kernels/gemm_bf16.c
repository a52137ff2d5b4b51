/* bf16 GEMM: the dispatcher, the emulation path and the oracle (contract in kernels.h).
 * Emulation rounds the operands to bf16 values held in fp32 and calls the fp32 GEMM:
 * products of two bf16 are exact in fp32, so only the order of the fp32 sums differs
 * from the native paths. */
#include "kernels/kernels.h"

static inline float read_operand(const void *X, int64_t idx, bool f32in) {
    return f32in ? nnz_bf16_round(((const float *)X)[idx]) : nnz_bf16_to_f32(((const nnz_bf16 *)X)[idx]);
}

/* op(X) is (rows, cols) stored with leading dimension ld (transposed when trans): copy it,
 * rounded to bf16, into a dense (rows, cols) fp32 matrix. */
static void round_operand(bool trans, int rows, int cols, const void *X, int ld, bool f32in, float *out) {
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++)
            out[(size_t)i * cols + j] =
                read_operand(X, trans ? (int64_t)j * ld + i : (int64_t)i * ld + j, f32in);
}

/* Without memory for the copies: a triple loop with fp32 sums (slow, but correct). */
static void gemm_direct(bool transA, bool transB, int M, int N, int K, float alpha, const void *A, int lda,
                        const void *B, int ldb, bool f32in, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float acc = 0.0f;
            for (int k = 0; k < K; k++)
                acc += read_operand(A, transA ? (int64_t)k * lda + i : (int64_t)i * lda + k, f32in) *
                       read_operand(B, transB ? (int64_t)j * ldb + k : (int64_t)k * ldb + j, f32in);
            float *c = &C[(size_t)i * ldc + j];
            *c = beta == 0.0f ? alpha * acc : alpha * acc + beta * *c;
        }
}

void nnz_gemm_bf16_emulated(bool transA, bool transB, int M, int N, int K, float alpha, const void *A, int lda,
                            const void *B, int ldb, bool f32in, float beta, float *C, int ldc) {
    float *a = nnz_alloc((size_t)M * K * sizeof(float), "bf16 GEMM operand A");
    float *b = a ? nnz_alloc((size_t)K * N * sizeof(float), "bf16 GEMM operand B") : NULL;
    if (a && b) {
        round_operand(transA, M, K, A, lda, f32in, a);
        round_operand(transB, K, N, B, ldb, f32in, b);
        nnz_sgemm(false, false, M, N, K, alpha, a, K, b, N, beta, C, ldc);
    } else {
        gemm_direct(transA, transB, M, N, K, alpha, A, lda, B, ldb, f32in, beta, C, ldc);
    }
    nnz_free(a);
    nnz_free(b);
}

static void gemm_dispatch(bool transA, bool transB, int M, int N, int K, float alpha, const void *A, int lda,
                          const void *B, int ldb, bool f32in, float beta, float *C, int ldc) {
    if (M == 0 || N == 0) return;
    if (K == 0 || alpha == 0.0f) {
        nnz_sgemm(false, false, M, N, 0, alpha, NULL, 1, NULL, N, beta, C, ldc);
        return;
    }
    const nnz_isa isa = nnz_isa_active();
    /* a path that cannot get its packing buffers falls through to the emulation */
    if (isa >= NNZ_ISA_AMX && nnz_gemm_bf16_amx(transA, transB, M, N, K, alpha, A, lda, B, ldb, f32in, beta, C, ldc))
        return;
    if (isa >= NNZ_ISA_AVX512BF16 &&
        nnz_gemm_bf16_avx512bf16(transA, transB, M, N, K, alpha, A, lda, B, ldb, f32in, beta, C, ldc))
        return;
    nnz_gemm_bf16_emulated(transA, transB, M, N, K, alpha, A, lda, B, ldb, f32in, beta, C, ldc);
}

bool nnz_gemm_bf16_has_native(void) {
    return nnz_isa_active() >= NNZ_ISA_AVX512BF16 || nnz_isa_bf16_tiles_emulated();
}

size_t nnz_gemm_bf16_native_bytes(int threads) {
    const nnz_isa isa = nnz_isa_active();
    if (nnz_isa_bf16_tiles_emulated()) return nnz_gemm_bf16_amx_bytes(threads);
    if (isa < NNZ_ISA_AVX512BF16) return 0;
    const size_t v = nnz_gemm_bf16_avx512bf16_bytes(threads), a = isa >= NNZ_ISA_AMX ? nnz_gemm_bf16_amx_bytes(threads) : 0;
    return a > v ? a : v; /* AMX falls back to avx512bf16 after it has freed its own */
}

bool nnz_gemm_bf16_src(int M, int N, int K, float alpha, const nnz_bf16_src *A, const nnz_bf16_src *B, float beta,
                       float *C, int ldc) {
    const nnz_isa isa = nnz_isa_active();
    if (nnz_isa_bf16_tiles_emulated()) return nnz_gemm_bf16_amx_emulated_src(M, N, K, alpha, A, B, beta, C, ldc);
    if (isa >= NNZ_ISA_AMX && nnz_gemm_bf16_amx_src(M, N, K, alpha, A, B, beta, C, ldc)) return true;
    return isa >= NNZ_ISA_AVX512BF16 && nnz_gemm_bf16_avx512bf16_src(M, N, K, alpha, A, B, beta, C, ldc);
}

void nnz_gemm_bf16(bool transA, bool transB, int M, int N, int K, float alpha, const nnz_bf16 *A, int lda,
                   const nnz_bf16 *B, int ldb, float beta, float *C, int ldc) {
    gemm_dispatch(transA, transB, M, N, K, alpha, A, lda, B, ldb, false, beta, C, ldc);
}

void nnz_gemm_bf16_f32in(bool transA, bool transB, int M, int N, int K, float alpha, const float *A, int lda,
                         const float *B, int ldb, float beta, float *C, int ldc) {
    gemm_dispatch(transA, transB, M, N, K, alpha, A, lda, B, ldb, true, beta, C, ldc);
}

/* The oracle: a triple loop over exact bf16 products, summed in double; beta == 0 never reads C. */
void nnz_gemm_bf16_ref(bool transA, bool transB, int M, int N, int K, float alpha, const nnz_bf16 *A, int lda,
                       const nnz_bf16 *B, int ldb, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double acc = 0.0;
            if (alpha != 0.0f)
                for (int k = 0; k < K; k++) {
                    float a = nnz_bf16_to_f32(transA ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]);
                    float b = nnz_bf16_to_f32(transB ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
                    acc += (double)a * (double)b;
                }
            float *c = &C[(size_t)i * ldc + j];
            double prev = beta == 0.0f ? 0.0 : (double)beta * (double)*c;
            *c = (float)((double)alpha * acc + prev);
        }
}
