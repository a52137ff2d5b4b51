/* kernels: the compute core. Dense fp32 GEMM (OpenBLAS underneath), im2col /
 * col2im for NHWC convolutions, depthwise convolution, elementwise ops.
 *
 * Every optimized kernel has a plain-C reference `<op>_ref` that is its oracle;
 * variants are named `<op>_<dtype>_<isa>` and chosen from nnz_isa_active().
 * Each kernel's contract (layouts, edge cases) is written above its definition.
 * beta = 0 always overwrites the output (NaNs already there do not propagate). */
#ifndef NNZ_KERNELS_H
#define NNZ_KERNELS_H

#include "base/base.h"

/* Row-major C(M,N) = alpha * op(A) * op(B) + beta * C.
 * op(A) is (M,K): A is (M,K) with lda >= K, or (K,M) with lda >= M when transA.
 * op(B) is (K,N): B is (K,N) with ldb >= N, or (N,K) with ldb >= K when transB.
 * M, N or K may be 0 (K = 0: C = beta*C). Threads: OpenBLAS's own. */
void nnz_sgemm(bool transA, bool transB, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc);
void nnz_sgemm_ref(bool transA, bool transB, int M, int N, int K, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc);

/* --- further kernels (im2col, depthwise, eltwise) are declared below by their owner --- */

#endif
