/* im2col / col2im for NHWC images; the contract is in kernels.h above the declarations.
 * Layout recap: col row (b,oh,ow) holds KH*KW*Cg floats ordered (kh,kw,c), c fastest,
 * matching a weight row (OC,KH,KW,Cg); padding taps are zeros. */
#include "kernels/kernels.h"

#include <string.h>

static void im2col_image(const nnz_conv_window *g, int C, int c0, int Cg, const float *img, float *col) {
    const size_t tap_row = (size_t)g->KW * Cg; /* floats of one kh slice of a col row */
    for (int oh = 0; oh < g->OH; oh++)
        for (int ow = 0; ow < g->OW; ow++) {
            float *dst = col + ((size_t)oh * g->OW + ow) * g->KH * tap_row;
            for (int kh = 0; kh < g->KH; kh++, dst += tap_row) {
                int ih = oh * g->stride - g->pad + kh;
                if (ih < 0 || ih >= g->H) {
                    memset(dst, 0, tap_row * sizeof(float));
                    continue;
                }
                for (int kw = 0; kw < g->KW; kw++) {
                    int iw = ow * g->stride - g->pad + kw;
                    float *d = dst + (size_t)kw * Cg;
                    if (iw < 0 || iw >= g->W)
                        memset(d, 0, (size_t)Cg * sizeof(float));
                    else
                        memcpy(d, img + ((size_t)ih * g->W + iw) * C + c0, (size_t)Cg * sizeof(float));
                }
            }
        }
}

static void col2im_image(const nnz_conv_window *g, int C, int c0, int Cg, const float *col, float *img) {
    const size_t tap_row = (size_t)g->KW * Cg;
    for (int oh = 0; oh < g->OH; oh++)
        for (int ow = 0; ow < g->OW; ow++) {
            const float *src = col + ((size_t)oh * g->OW + ow) * g->KH * tap_row;
            for (int kh = 0; kh < g->KH; kh++, src += tap_row) {
                int ih = oh * g->stride - g->pad + kh;
                if (ih < 0 || ih >= g->H) continue;
                for (int kw = 0; kw < g->KW; kw++) {
                    int iw = ow * g->stride - g->pad + kw;
                    if (iw < 0 || iw >= g->W) continue;
                    const float *s = src + (size_t)kw * Cg;
                    float *d = img + ((size_t)ih * g->W + iw) * C + c0;
#pragma omp simd
                    for (int c = 0; c < Cg; c++) d[c] += s[c];
                }
            }
        }
}

void nnz_im2col_nhwc(const nnz_conv_window *g, int B, int C, int c0, int Cg, const float *img, float *col) {
    const size_t img_floats = (size_t)g->H * g->W * C;
    const size_t col_floats = (size_t)g->OH * g->OW * g->KH * g->KW * Cg;
#pragma omp parallel for schedule(static) if (B > 1)
    for (int b = 0; b < B; b++) im2col_image(g, C, c0, Cg, img + b * img_floats, col + b * col_floats);
}

void nnz_col2im_nhwc_acc(const nnz_conv_window *g, int B, int C, int c0, int Cg, const float *col, float *img) {
    const size_t img_floats = (size_t)g->H * g->W * C;
    const size_t col_floats = (size_t)g->OH * g->OW * g->KH * g->KW * Cg;
#pragma omp parallel for schedule(static) if (B > 1)
    for (int b = 0; b < B; b++) col2im_image(g, C, c0, Cg, col + b * col_floats, img + b * img_floats);
}
