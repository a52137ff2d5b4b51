/* Dense fp32 GEMM: a row-major wrapper over OpenBLAS's cblas_sgemm, and its oracle.
 *
 * Contract (both functions): C(M,N) = alpha * op(A) * op(B) + beta * C, row-major.
 *   op(A) (M,K): A is (M,K) with lda >= max(1,K), or (K,M) with lda >= max(1,M) when transA.
 *   op(B) (K,N): B is (K,N) with ldb >= max(1,N), or (N,K) with ldb >= max(1,K) when transB.
 *   ldc >= max(1,N). M or N == 0: nothing is touched. K == 0 or alpha == 0: C = beta*C and
 *   A, B are not read. beta == 0 overwrites C (NaN/Inf already in C do not propagate).
 * Threads: OpenBLAS's own (pthreads build); never call nnz_sgemm from inside an OpenMP
 * parallel region, the two thread pools would oversubscribe the cores. */
#include "kernels/kernels.h"

#include <assert.h>
#include <cblas.h>

/* C = beta*C, with beta == 0 writing exact zeros. */
static void scale_c(int M, int N, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++) {
        float *c = C + (size_t)i * ldc;
        if (beta == 0.0f)
            for (int j = 0; j < N; j++) c[j] = 0.0f;
        else if (beta != 1.0f)
            for (int j = 0; j < N; j++) c[j] *= beta;
    }
}

void nnz_sgemm(bool transA, bool transB, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc) {
    assert(M >= 0 && N >= 0 && K >= 0);
    if (M == 0 || N == 0) return;
    assert(ldc >= N);
    if (K == 0 || alpha == 0.0f) {
        scale_c(M, N, beta, C, ldc);
        return;
    }
    assert(lda >= (transA ? M : K) && ldb >= (transB ? K : N));
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, M, N, K,
                alpha, A, lda, B, ldb, beta, C, ldc);
}

/* The oracle: a triple loop with double accumulation; beta == 0 never reads C. */
void nnz_sgemm_ref(bool transA, bool transB, int M, int N, int K, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double acc = 0.0;
            if (alpha != 0.0f)
                for (int k = 0; k < K; k++) {
                    float a = transA ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                    float b = transB ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                    acc += (double)a * (double)b;
                }
            float *c = &C[(size_t)i * ldc + j];
            double prev = beta == 0.0f ? 0.0 : (double)beta * (double)*c;
            *c = (float)((double)alpha * acc + prev);
        }
}
