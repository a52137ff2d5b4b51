/* Small-K GEMM for 1x1 convolutions: dispatch, threading, the reference. Contract in kernels.h. */
#include "kernels/kernels.h"

#include <string.h>

/* Rows per OpenMP task: a block of C (and the A rows feeding it) stays in L2 for the epilogue. */
#define GS_BLOCK_FLOATS 32768
#define GS_PARALLEL_MIN ((int64_t)1 << 16) /* multiply-adds; below this one thread is faster */

void nnz_gemm_small_ref(int64_t M, int N, int K, const float *A, int64_t lda, const float *B, bool accumulate,
                        const nnz_epilogue *ep, float *C) {
    for (int64_t r = 0; r < M; r++) {
        float *c = C + r * N;
        if (!accumulate) memset(c, 0, (size_t)N * sizeof(float));
        for (int k = 0; k < K; k++) {
            const float a = A[r * lda + k];
            const float *b = B + (int64_t)k * N;
            for (int n = 0; n < N; n++) c[n] += a * b[n];
        }
    }
    if (ep) nnz_epilogue_apply(M, N, ep, C);
}

typedef void (*gs_rows_fn)(int, int, int, const float *, int64_t, const float *, bool, float *);

void nnz_gemm_small(int64_t M, int N, int K, const float *A, int64_t lda, const float *B, bool accumulate,
                    const nnz_epilogue *ep, float *C) {
    gs_rows_fn fn = NULL;
#if defined(__x86_64__)
    const nnz_isa isa = nnz_isa_active();
    if (isa >= NNZ_ISA_AVX512) fn = nnz_gemm_small_rows_f32_avx512;
    else if (isa == NNZ_ISA_AVX2) fn = nnz_gemm_small_rows_f32_avx2;
#endif
    if (!fn) {
        nnz_gemm_small_ref(M, N, K, A, lda, B, accumulate, ep, C);
        return;
    }
    const int64_t rows = GS_BLOCK_FLOATS / N > 4 ? GS_BLOCK_FLOATS / N : 4;
    const int64_t blocks = (M + rows - 1) / rows;
#pragma omp parallel for schedule(static) if (M * N * K >= GS_PARALLEL_MIN)
    for (int64_t b = 0; b < blocks; b++) {
        const int64_t r0 = b * rows, m = M - r0 < rows ? M - r0 : rows;
        fn((int)m, N, K, A + r0 * lda, lda, B, accumulate, C + r0 * N);
        if (ep) nnz_epilogue_apply(m, N, ep, C + r0 * N);
    }
}
