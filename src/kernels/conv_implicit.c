/* Implicit-GEMM convolution (the small GEMM reading its rows from the image): dispatch,
 * threading, the reference. Contract in kernels.h (nnz_conv_implicit). */
#include "kernels/kernels.h"

#include <string.h>

/* Output pixels per OpenMP task: a block of the output that stays in L2 (as nnz_gemm_small) */
#define CI_BLOCK_FLOATS 32768
#define CI_PARALLEL_MIN ((int64_t)1 << 16) /* multiply-adds; below this one thread is faster */

void nnz_conv_implicit_ref(const nnz_conv_window *g, int N, int IC, int OC, const float *inp, const float *w,
                           bool accumulate, const nnz_epilogue *ep, float *out) {
    const int64_t pixels = (int64_t)N * g->OH * g->OW;
    for (int64_t p = 0; p < pixels; p++) {
        const int64_t n = p / ((int64_t)g->OH * g->OW);
        const int oh = (int)(p / g->OW % g->OH), ow = (int)(p % g->OW);
        const float *img = inp + n * g->H * g->W * IC;
        float *o = out + p * OC;
        if (!accumulate) memset(o, 0, (size_t)OC * sizeof(float));
        for (int kh = 0; kh < g->KH; kh++)
            for (int kw = 0; kw < g->KW; kw++) {
                const int ih = oh * g->stride - g->pad + kh, iw = ow * g->stride - g->pad + kw;
                const bool inside = ih >= 0 && ih < g->H && iw >= 0 && iw < g->W;
                for (int c = 0; c < IC; c++) {
                    const float a = inside ? img[((int64_t)ih * g->W + iw) * IC + c] : 0.0f;
                    const float *b = w + ((int64_t)(kh * g->KW + kw) * IC + c) * OC;
                    for (int o2 = 0; o2 < OC; o2++) o[o2] += a * b[o2];
                }
            }
    }
    if (ep) nnz_epilogue_apply(pixels, OC, ep, out);
}

typedef void (*ci_rows_fn)(const nnz_conv_window *, int, const float *, int64_t, int, const float *, int, bool,
                           const nnz_epilogue *, float *);

void nnz_conv_implicit(const nnz_conv_window *g, int N, int IC, int OC, const float *inp, const float *w,
                       bool accumulate, const nnz_epilogue *ep, float *out) {
    ci_rows_fn fn = NULL;
#if defined(__x86_64__)
    const nnz_isa isa = nnz_isa_active();
    if (isa >= NNZ_ISA_AVX512) fn = nnz_gemm_small_conv_rows_f32_avx512;
    else if (isa == NNZ_ISA_AVX2) fn = nnz_gemm_small_conv_rows_f32_avx2;
#endif
    if (!fn) {
        nnz_conv_implicit_ref(g, N, IC, OC, inp, w, accumulate, ep, out);
        return;
    }
    const int64_t pixels = (int64_t)N * g->OH * g->OW, K = (int64_t)g->KH * g->KW * IC;
    const int64_t rows = CI_BLOCK_FLOATS / OC > 4 ? CI_BLOCK_FLOATS / OC : 4;
    const int64_t blocks = (pixels + rows - 1) / rows;
#pragma omp parallel for schedule(static) if (pixels * OC * K >= CI_PARALLEL_MIN)
    for (int64_t b = 0; b < blocks; b++) {
        const int64_t r0 = b * rows, m = pixels - r0 < rows ? pixels - r0 : rows;
        fn(g, IC, inp, r0, (int)m, w, OC, accumulate, ep, out + r0 * OC);
    }
}
