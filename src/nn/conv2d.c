/* conv2d layer: shape checks, scratch sizing, and dispatch to the kernels.
 *
 * Dispatch (see conv_path_of):
 *   groups == 1, 1x1, stride 1, pad 0  -> one GEMM over all N*H*W rows, no im2col
 *   groups == 1 otherwise              -> im2col of a chunk of images into scratch + one GEMM per chunk
 *   groups == IC == OC                 -> the depthwise kernels (weights transposed to (KH,KW,C) in scratch)
 *   other groups                       -> per chunk, per group: im2col of the group's channels + GEMM
 * Chunks hold as many images as keep the im2col buffer within CONV_SCRATCH_TARGET floats
 * (at least one image), so scratch stays bounded while the GEMMs keep a large M.
 * Chunking depends only on the shape, so results are reproducible for a thread count. */
#include "kernels/kernels.h"
#include "nn/nn.h"

#include <limits.h>
#include <string.h>

#define CONV_SCRATCH_TARGET ((size_t)8 << 20) /* floats: 32 MB */

typedef enum { CONV_GEMM_1X1, CONV_IM2COL, CONV_DEPTHWISE, CONV_GROUPED } conv_path;

static conv_path conv_path_of(const nnz_conv_shape *s) {
    if (s->groups == 1)
        return (s->KH == 1 && s->KW == 1 && s->stride == 1 && s->pad == 0) ? CONV_GEMM_1X1 : CONV_IM2COL;
    if (s->groups == s->IC && s->OC == s->IC) return CONV_DEPTHWISE;
    return CONV_GROUPED;
}

nnz_status nnz_conv_shape_init(nnz_conv_shape *s, int N, int H, int W, int IC, int OC, int KH, int KW, int stride,
                               int pad, int groups) {
    if (N < 1 || H < 1 || W < 1 || IC < 1 || OC < 1 || KH < 1 || KW < 1 || stride < 1 || pad < 0 || groups < 1)
        return nnz_fail(NNZ_ERR_INVALID_ARG,
                        "conv2d: bad shape N=%d H=%d W=%d IC=%d OC=%d k=%dx%d stride=%d pad=%d groups=%d; sizes, "
                        "stride and groups must be >= 1 and pad >= 0", N, H, W, IC, OC, KH, KW, stride, pad, groups);
    if (IC % groups != 0 || OC % groups != 0)
        return nnz_fail(NNZ_ERR_INVALID_ARG,
                        "conv2d: groups=%d must divide both in_channels=%d and out_channels=%d", groups, IC, OC);
    if ((int64_t)H + 2 * (int64_t)pad < KH || (int64_t)W + 2 * (int64_t)pad < KW)
        return nnz_fail(NNZ_ERR_INVALID_ARG,
                        "conv2d: kernel %dx%d is larger than the padded input %dx%d (pad %d); the output would be "
                        "empty: use a smaller kernel or more padding", KH, KW, H + 2 * pad, W + 2 * pad, pad);
    int OH = (int)(((int64_t)H + 2 * pad - KH) / stride + 1), OW = (int)(((int64_t)W + 2 * pad - KW) / stride + 1);
    /* the GEMMs take int dimensions */
    if ((int64_t)N * H * W > INT_MAX || (int64_t)N * OH * OW > INT_MAX || (int64_t)KH * KW * IC > INT_MAX)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "conv2d: shape N=%d H=%d W=%d IC=%d k=%dx%d is too large; use a smaller "
                        "batch", N, H, W, IC, KH, KW);
    *s = (nnz_conv_shape){.N = N, .H = H, .W = W, .IC = IC, .OC = OC, .KH = KH, .KW = KW, .stride = stride,
                          .pad = pad, .groups = groups, .OH = OH, .OW = OW};
    return NNZ_OK;
}

static nnz_conv_window window_of(const nnz_conv_shape *s) {
    return (nnz_conv_window){.H = s->H, .W = s->W, .KH = s->KH, .KW = s->KW, .stride = s->stride, .pad = s->pad,
                             .OH = s->OH, .OW = s->OW};
}

/* floats of one image's im2col rows for one group */
static size_t col_floats_per_image(const nnz_conv_shape *s) {
    return (size_t)s->OH * s->OW * s->KH * s->KW * (s->IC / s->groups);
}

static int images_per_chunk(const nnz_conv_shape *s) {
    size_t per = col_floats_per_image(s);
    size_t b = per ? CONV_SCRATCH_TARGET / per : (size_t)s->N;
    if (b < 1) b = 1;
    return b > (size_t)s->N ? s->N : (int)b;
}

size_t nnz_conv2d_scratch_floats(const nnz_conv_shape *s) {
    switch (conv_path_of(s)) {
    case CONV_GEMM_1X1: return 0;
    case CONV_DEPTHWISE: {
        nnz_conv_window g = window_of(s);
        return 2 * (size_t)s->KH * s->KW * s->IC + nnz_dwconv_work_floats(&g, s->N, s->IC);
    }
    case CONV_IM2COL:
    case CONV_GROUPED: break;
    }
    return (size_t)images_per_chunk(s) * col_floats_per_image(s);
}

/* (C,KH*KW) <-> (KH*KW,C) for depthwise weights */
static void transpose_taps(int C, int taps, const float *src, float *dst) {
    for (int c = 0; c < C; c++)
        for (int t = 0; t < taps; t++) dst[(size_t)t * C + c] = src[(size_t)c * taps + t];
}

void nnz_conv2d_forward(const nnz_conv_shape *s, const float *inp, const float *weight, const float *bias,
                        float *out, float *scratch) {
    const nnz_conv_window g = window_of(s);
    const int64_t out_rows = (int64_t)s->N * s->OH * s->OW;
    const conv_path path = conv_path_of(s);
    if (path == CONV_DEPTHWISE) {
        float *weight_t = scratch;
        transpose_taps(s->IC, s->KH * s->KW, weight, weight_t);
        nnz_dwconv_forward(&g, s->N, s->IC, inp, weight_t, bias, out);
        return;
    }
    /* bias first, then GEMMs accumulate onto it (beta = 1) */
    float beta = 0.0f;
    if (bias) {
        nnz_bias_fill_rows(out_rows, s->OC, bias, out);
        beta = 1.0f;
    }
    if (path == CONV_GEMM_1X1) {
        nnz_sgemm(false, true, (int)out_rows, s->OC, s->IC, 1.0f, inp, s->IC, weight, s->IC, beta, out, s->OC);
        return;
    }
    const int G = s->groups, ICg = s->IC / G, OCg = s->OC / G, Kg = s->KH * s->KW * ICg;
    const size_t in_img = (size_t)s->H * s->W * s->IC, out_img = (size_t)s->OH * s->OW * s->OC;
    const int chunk = images_per_chunk(s);
    for (int n0 = 0; n0 < s->N; n0 += chunk) {
        const int B = s->N - n0 < chunk ? s->N - n0 : chunk, M = B * s->OH * s->OW;
        for (int gi = 0; gi < G; gi++) {
            nnz_im2col_nhwc(&g, B, s->IC, gi * ICg, ICg, inp + n0 * in_img, scratch);
            nnz_sgemm(false, true, M, OCg, Kg, 1.0f, scratch, Kg, weight + (size_t)gi * OCg * Kg, Kg, beta,
                      out + n0 * out_img + (size_t)gi * OCg, s->OC);
        }
    }
}

void nnz_conv2d_backward(const nnz_conv_shape *s, const float *inp, const float *weight, const float *dout,
                         float *dinp, float *dweight, float *dbias, float *scratch) {
    const nnz_conv_window g = window_of(s);
    const int64_t out_rows = (int64_t)s->N * s->OH * s->OW;
    if (dbias) nnz_bias_grad_acc(out_rows, s->OC, dout, dbias);
    const conv_path path = conv_path_of(s);
    if (path == CONV_DEPTHWISE) {
        const int C = s->IC, taps = s->KH * s->KW;
        float *weight_t = scratch, *dweight_t = scratch + (size_t)taps * C, *work = dweight_t + (size_t)taps * C;
        memset(dweight_t, 0, (size_t)taps * C * sizeof(float));
        nnz_dwconv_backward_weight(&g, s->N, C, inp, dout, dweight_t, work);
        for (int c = 0; c < C; c++)
            for (int t = 0; t < taps; t++) dweight[(size_t)c * taps + t] += dweight_t[(size_t)t * C + c];
        if (dinp) {
            transpose_taps(C, taps, weight, weight_t);
            nnz_dwconv_backward_data(&g, s->N, C, dout, weight_t, dinp);
        }
        return;
    }
    if (path == CONV_GEMM_1X1) {
        const int M = (int)out_rows;
        /* dweight (OC,IC) += dout^T (OC,M) * inp (M,IC);  dinp (M,IC) += dout (M,OC) * weight (OC,IC) */
        nnz_sgemm(true, false, s->OC, s->IC, M, 1.0f, dout, s->OC, inp, s->IC, 1.0f, dweight, s->IC);
        if (dinp) nnz_sgemm(false, false, M, s->IC, s->OC, 1.0f, dout, s->OC, weight, s->IC, 1.0f, dinp, s->IC);
        return;
    }
    const int G = s->groups, ICg = s->IC / G, OCg = s->OC / G, Kg = s->KH * s->KW * ICg;
    const size_t in_img = (size_t)s->H * s->W * s->IC, out_img = (size_t)s->OH * s->OW * s->OC;
    const int chunk = images_per_chunk(s);
    for (int n0 = 0; n0 < s->N; n0 += chunk) {
        const int B = s->N - n0 < chunk ? s->N - n0 : chunk, M = B * s->OH * s->OW;
        const float *dout_c = dout + n0 * out_img;
        for (int gi = 0; gi < G; gi++) {
            const float *w_g = weight + (size_t)gi * OCg * Kg;
            float *dw_g = dweight + (size_t)gi * OCg * Kg;
            /* dweight_g (OCg,Kg) += dout_g^T (OCg,M) * col (M,Kg) */
            nnz_im2col_nhwc(&g, B, s->IC, gi * ICg, ICg, inp + n0 * in_img, scratch);
            nnz_sgemm(true, false, OCg, Kg, M, 1.0f, dout_c + (size_t)gi * OCg, s->OC, scratch, Kg, 1.0f, dw_g, Kg);
            if (!dinp) continue;
            /* dcol (M,Kg) = dout_g (M,OCg) * weight_g (OCg,Kg), reusing the col buffer; dinp += col2im(dcol) */
            nnz_sgemm(false, false, M, Kg, OCg, 1.0f, dout_c + (size_t)gi * OCg, s->OC, w_g, Kg, 0.0f, scratch, Kg);
            nnz_col2im_nhwc_acc(&g, B, s->IC, gi * ICg, ICg, scratch, dinp + n0 * in_img);
        }
    }
}
