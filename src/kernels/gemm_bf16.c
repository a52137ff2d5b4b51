/* bf16 GEMM: the dispatcher and the emulation path (contract in kernels.h).
 * Emulation rounds the operands to bf16 values held in fp32 and calls the fp32 GEMM:
 * products of two bf16 are exact in fp32, so only the order of the fp32 sums differs
 * from the native paths. */
#include "kernels/kernels.h"

#include <assert.h>

/* op(X) is (rows, cols) stored with leading dimension ld (transposed when trans): copy it,
 * rounded, into a dense (rows, cols) fp32 matrix. */
static void round_operand_f32(bool trans, int rows, int cols, const float *X, int ld, float *out) {
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++)
            out[(size_t)i * cols + j] = nnz_bf16_round(trans ? X[(size_t)j * ld + i] : X[(size_t)i * ld + j]);
}
static void widen_operand_bf16(bool trans, int rows, int cols, const nnz_bf16 *X, int ld, float *out) {
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++)
            out[(size_t)i * cols + j] = nnz_bf16_to_f32(trans ? X[(size_t)j * ld + i] : X[(size_t)i * ld + j]);
}

/* Both operands as dense rounded fp32 copies, then nnz_sgemm (or the oracle when the copy
 * cannot be allocated: slow but correct). */
static void gemm_emulated(bool transA, bool transB, int M, int N, int K, float alpha, const void *A, int lda,
                          const void *B, int ldb, bool bf16_in, float beta, float *C, int ldc) {
    float *a = nnz_alloc((size_t)M * K * sizeof(float), "bf16 GEMM operand A");
    float *b = nnz_alloc((size_t)K * N * sizeof(float), "bf16 GEMM operand B");
    if (a && b) {
        if (bf16_in) {
            widen_operand_bf16(transA, M, K, A, lda, a);
            widen_operand_bf16(transB, K, N, B, ldb, b);
        } else {
            round_operand_f32(transA, M, K, A, lda, a);
            round_operand_f32(transB, K, N, B, ldb, b);
        }
        nnz_sgemm(false, false, M, N, K, alpha, a, K, b, N, beta, C, ldc);
    }
    nnz_free(a);
    nnz_free(b);
    assert(a && b);
}

void nnz_gemm_bf16(bool transA, bool transB, int M, int N, int K, float alpha, const nnz_bf16 *A, int lda,
                   const nnz_bf16 *B, int ldb, float beta, float *C, int ldc) {
    if (M == 0 || N == 0) return;
    if (K == 0 || alpha == 0.0f) {
        nnz_sgemm(false, false, M, N, 0, alpha, NULL, 1, NULL, N, beta, C, ldc);
        return;
    }
    gemm_emulated(transA, transB, M, N, K, alpha, A, lda, B, ldb, true, beta, C, ldc);
}

void nnz_gemm_bf16_f32in(bool transA, bool transB, int M, int N, int K, float alpha, const float *A, int lda,
                         const float *B, int ldb, float beta, float *C, int ldc) {
    if (M == 0 || N == 0) return;
    if (K == 0 || alpha == 0.0f) {
        nnz_sgemm(false, false, M, N, 0, alpha, NULL, 1, NULL, N, beta, C, ldc);
        return;
    }
    gemm_emulated(transA, transB, M, N, K, alpha, A, lda, B, ldb, false, beta, C, ldc);
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

void nnz_cvt_f32_to_bf16(int64_t n, const float *x, nnz_bf16 *y) {
    for (int64_t i = 0; i < n; i++) y[i] = nnz_bf16_from_f32(x[i]);
}
void nnz_cvt_bf16_to_f32(int64_t n, const nnz_bf16 *x, float *y) {
    for (int64_t i = 0; i < n; i++) y[i] = nnz_bf16_to_f32(x[i]);
}
