/* Depthwise convolution, the oracles: one output element at a time, every tap bounds
 * checked, single-threaded. Contract (layouts, accumulate semantics) in kernels.h. */
#include "kernels/kernels.h"

void nnz_dwconv_forward_ref(const nnz_conv_window *g, int N, int C, const float *inp, const float *weight_t,
                            const float *bias, float *out) {
    for (int n = 0; n < N; n++)
        for (int oh = 0; oh < g->OH; oh++)
            for (int ow = 0; ow < g->OW; ow++)
                for (int c = 0; c < C; c++) {
                    float acc = bias ? bias[c] : 0.0f;
                    for (int kh = 0; kh < g->KH; kh++)
                        for (int kw = 0; kw < g->KW; kw++) {
                            int ih = oh * g->stride - g->pad + kh, iw = ow * g->stride - g->pad + kw;
                            if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W) continue;
                            acc += inp[(((size_t)n * g->H + ih) * g->W + iw) * C + c] *
                                   weight_t[((size_t)kh * g->KW + kw) * C + c];
                        }
                    out[(((size_t)n * g->OH + oh) * g->OW + ow) * C + c] = acc;
                }
}

/* Scatter form (the transpose of the forward), unlike the gather the SIMD variants use. */
void nnz_dwconv_backward_data_ref(const nnz_conv_window *g, int N, int C, const float *dout,
                                  const float *weight_t, float *dinp) {
    for (int n = 0; n < N; n++)
        for (int oh = 0; oh < g->OH; oh++)
            for (int ow = 0; ow < g->OW; ow++)
                for (int c = 0; c < C; c++) {
                    float d = dout[(((size_t)n * g->OH + oh) * g->OW + ow) * C + c];
                    for (int kh = 0; kh < g->KH; kh++)
                        for (int kw = 0; kw < g->KW; kw++) {
                            int ih = oh * g->stride - g->pad + kh, iw = ow * g->stride - g->pad + kw;
                            if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W) continue;
                            dinp[(((size_t)n * g->H + ih) * g->W + iw) * C + c] +=
                                d * weight_t[((size_t)kh * g->KW + kw) * C + c];
                        }
                }
}

void nnz_dwconv_backward_weight_ref(const nnz_conv_window *g, int N, int C, const float *inp, const float *dout,
                                    float *dweight_t) {
    for (int kh = 0; kh < g->KH; kh++)
        for (int kw = 0; kw < g->KW; kw++)
            for (int c = 0; c < C; c++) {
                double acc = 0.0;
                for (int n = 0; n < N; n++)
                    for (int oh = 0; oh < g->OH; oh++)
                        for (int ow = 0; ow < g->OW; ow++) {
                            int ih = oh * g->stride - g->pad + kh, iw = ow * g->stride - g->pad + kw;
                            if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W) continue;
                            acc += (double)inp[(((size_t)n * g->H + ih) * g->W + iw) * C + c] *
                                   dout[(((size_t)n * g->OH + oh) * g->OW + ow) * C + c];
                        }
                dweight_t[((size_t)kh * g->KW + kw) * C + c] += (float)acc;
            }
}
