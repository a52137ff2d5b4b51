/* im2col / col2im for NHWC images; the contract is in kernels.h above the declarations.
 * Layout recap: col row (b,oh,ow) holds KH*KW*Cg floats ordered (kh,kw,c), c fastest,
 * matching a weight row (OC,KH,KW,Cg); padding taps are zeros. */
#include "kernels/kernels.h"

#include <string.h>

/* Short runs (a 1-channel image copies 1 float per tap) in a plain loop: a libc call per
 * tap would cost more than the copy. */
static inline void copy_floats(float *dst, const float *src, size_t n) {
    if (n >= 64) {
        memcpy(dst, src, n * sizeof(float));
        return;
    }
    for (size_t i = 0; i < n; i++) dst[i] = src[i];
}

static inline void zero_floats(float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = 0.0f;
}

/* The bf16 flavour: runs rounded to nearest even (nnz_cvt_f32_to_bf16 for runs long enough to
 * vectorize, the scalar rounding below that: they differ only on fp32 denormals, docs/BF16.md). */
static inline void copy_bf16(nnz_bf16 *dst, const float *src, size_t n) {
    if (n >= 32) {
        nnz_cvt_f32_to_bf16((int64_t)n, src, dst);
        return;
    }
    for (size_t i = 0; i < n; i++) dst[i] = nnz_bf16_from_f32(src[i]);
}

static inline void zero_bf16(nnz_bf16 *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = 0;
}

/* One output pixel's im2col row: KH*KW*Cg values, (kh,kw,c) order, zeros outside the image;
 * one walk for both element types (fp32, and bf16 rounded to nearest even). */
#define IM2COL_PIXEL(name, T, zero, copy)                                                                    \
    static void name(const nnz_conv_window *g, int C, int c0, int Cg, const float *img, int oh, int ow,       \
                     T *dst) {                                                                                \
        const size_t tap_row = (size_t)g->KW * Cg; /* values of one kh slice of a col row */                 \
        const int iw0 = ow * g->stride - g->pad;                                                              \
        /* taps [kw_lo, kw_hi) lie inside the image */                                                        \
        const int kw_lo = iw0 < 0 ? -iw0 : 0, kw_hi = g->W - iw0 < g->KW ? g->W - iw0 : g->KW;                \
        for (int kh = 0; kh < g->KH; kh++, dst += tap_row) {                                                  \
            int ih = oh * g->stride - g->pad + kh;                                                            \
            if (ih < 0 || ih >= g->H || kw_lo >= kw_hi) {                                                     \
                zero(dst, tap_row);                                                                           \
                continue;                                                                                     \
            }                                                                                                 \
            zero(dst, (size_t)kw_lo * Cg);                                                                    \
            const float *src = img + ((size_t)ih * g->W + (iw0 + kw_lo)) * C + c0;                            \
            if (Cg == C) { /* all channels: the inside taps are one contiguous run of the image row */        \
                copy(dst + (size_t)kw_lo * Cg, src, (size_t)(kw_hi - kw_lo) * Cg);                            \
            } else {                                                                                          \
                for (int kw = kw_lo; kw < kw_hi; kw++)                                                        \
                    copy(dst + (size_t)kw * Cg, src + (size_t)(kw - kw_lo) * C, (size_t)Cg);                  \
            }                                                                                                 \
            zero(dst + (size_t)kw_hi * Cg, (size_t)(g->KW - kw_hi) * Cg);                                     \
        }                                                                                                     \
    }
IM2COL_PIXEL(im2col_pixel, float, zero_floats, copy_floats)
IM2COL_PIXEL(im2col_pixel_bf16, nnz_bf16, zero_bf16, copy_bf16)

static void im2col_image_bf16(const nnz_conv_window *g, int C, int c0, int Cg, const float *img, nnz_bf16 *col) {
    const size_t row = (size_t)g->KH * g->KW * Cg;
    for (int oh = 0; oh < g->OH; oh++)
        for (int ow = 0; ow < g->OW; ow++)
            im2col_pixel_bf16(g, C, c0, Cg, img, oh, ow, col + ((size_t)oh * g->OW + ow) * row);
}

static void im2col_image(const nnz_conv_window *g, int C, int c0, int Cg, const float *img, float *col) {
    const size_t row = (size_t)g->KH * g->KW * Cg;
    for (int oh = 0; oh < g->OH; oh++)
        for (int ow = 0; ow < g->OW; ow++)
            im2col_pixel(g, C, c0, Cg, img, oh, ow, col + ((size_t)oh * g->OW + ow) * row);
}

void nnz_im2col_rows_nhwc(const nnz_conv_window *g, int C, const float *img, int64_t pix0, int rows, float *col,
                          int64_t ldc) {
    for (int r = 0; r < rows; r++) {
        int64_t n;
        int oh, ow;
        nnz_conv_pixel(g, pix0 + r, &n, &oh, &ow);
        im2col_pixel(g, C, 0, C, img + n * g->H * g->W * C, oh, ow, col + r * ldc);
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

void nnz_im2col_nhwc_bf16(const nnz_conv_window *g, int B, int C, int c0, int Cg, const float *img, nnz_bf16 *col) {
    const size_t img_floats = (size_t)g->H * g->W * C;
    const size_t col_elems = (size_t)g->OH * g->OW * g->KH * g->KW * Cg;
#pragma omp parallel for schedule(static) if (B > 1)
    for (int b = 0; b < B; b++) im2col_image_bf16(g, C, c0, Cg, img + b * img_floats, col + b * col_elems);
}

void nnz_col2im_nhwc_acc(const nnz_conv_window *g, int B, int C, int c0, int Cg, const float *col, float *img) {
    const size_t img_floats = (size_t)g->H * g->W * C;
    const size_t col_floats = (size_t)g->OH * g->OW * g->KH * g->KW * Cg;
#pragma omp parallel for schedule(static) if (B > 1)
    for (int b = 0; b < B; b++) col2im_image(g, C, c0, Cg, col + b * col_floats, img + b * img_floats);
}
