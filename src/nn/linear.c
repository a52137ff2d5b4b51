/* linear layer: out = inp * weight^T + bias, weight (OUT,IN) in PyTorch's layout; GEMMs via nnz_gemm at the caller's precision. */
#include "kernels/kernels.h"
#include "nn/nn.h"

void nnz_linear_forward(nnz_dtype compute, int N, int IN, int OUT, const float *inp, const float *weight, const float *bias,
                        float *out) {
    float beta = 0.0f;
    if (bias) {
        nnz_bias_fill_rows(N, OUT, bias, out);
        beta = 1.0f;
    }
    nnz_gemm(compute, false, true, N, OUT, IN, 1.0f, inp, IN, weight, IN, beta, out, OUT);
}

void nnz_linear_backward_ex(nnz_dtype compute, int N, int IN, int OUT, const float *inp, const float *weight, const float *dout,
                            float *dinp, bool accumulate, float *dweight, float *dbias) {
    /* dweight (OUT,IN) += dout^T (OUT,N) * inp (N,IN) */
    nnz_gemm(compute, true, false, OUT, IN, N, 1.0f, dout, OUT, inp, IN, 1.0f, dweight, IN);
    /* dinp (N,IN) += dout (N,OUT) * weight (OUT,IN) */
    if (dinp) nnz_gemm(compute, false, false, N, IN, OUT, 1.0f, dout, OUT, weight, IN, accumulate ? 1.0f : 0.0f, dinp, IN);
    if (dbias) nnz_bias_grad_acc(N, OUT, dout, dbias);
}

void nnz_linear_backward(int N, int IN, int OUT, const float *inp, const float *weight, const float *dout,
                         float *dinp, float *dweight, float *dbias) {
    nnz_linear_backward_ex(NNZ_F32, N, IN, OUT, inp, weight, dout, dinp, true, dweight, dbias);
}
