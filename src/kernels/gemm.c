/* nnz_gemm: the GEMM the layers call, on fp32 data, computed at the layer's precision. */
#include "kernels/kernels.h"

void nnz_gemm(nnz_dtype compute, bool transA, bool transB, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc) {
    if (compute == NNZ_BF16)
        nnz_gemm_bf16_f32in(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else
        nnz_sgemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
