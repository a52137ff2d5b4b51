/* linear layer: out = inp * weight^T + bias, weight (OUT,IN) in PyTorch's layout; GEMMs via nnz_sgemm. */
#include "kernels/kernels.h"
#include "nn/nn.h"

void nnz_linear_forward(int N, int IN, int OUT, const float *inp, const float *weight, const float *bias,
                        float *out) {
    float beta = 0.0f;
    if (bias) {
        nnz_bias_fill_rows(N, OUT, bias, out);
        beta = 1.0f;
    }
    nnz_sgemm(false, true, N, OUT, IN, 1.0f, inp, IN, weight, IN, beta, out, OUT);
}

void nnz_linear_backward(int N, int IN, int OUT, const float *inp, const float *weight, const float *dout,
                         float *dinp, float *dweight, float *dbias) {
    /* dweight (OUT,IN) += dout^T (OUT,N) * inp (N,IN) */
    nnz_sgemm(true, false, OUT, IN, N, 1.0f, dout, OUT, inp, IN, 1.0f, dweight, IN);
    /* dinp (N,IN) += dout (N,OUT) * weight (OUT,IN) */
    if (dinp) nnz_sgemm(false, false, N, IN, OUT, 1.0f, dout, OUT, weight, IN, 1.0f, dinp, IN);
    if (dbias) nnz_bias_grad_acc(N, OUT, dout, dbias);
}
