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
        int64_t n;
        int oh, ow;
        nnz_conv_pixel(g, p, &n, &oh, &ow);
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

/* ---- the weight gradient ---- */

#define CW_ROWS 256                     /* output pixels per block: as nnz_gemm_small_at's */
#define CW_SLOTS 16                     /* partials at most: as nnz_gemm_small_at's */
#define CW_PARTIAL_FLOATS ((size_t)1 << 21) /* all partials together at most (8 MB) */

void nnz_conv_implicit_wgrad_ref(const nnz_conv_window *g, int N, int IC, int OC, const float *inp,
                                 const float *dout, float *dw) {
    for (int kh = 0; kh < g->KH; kh++)
        for (int kw = 0; kw < g->KW; kw++)
            for (int c = 0; c < IC; c++)
                for (int o = 0; o < OC; o++) {
                    double acc = 0.0;
                    for (int n = 0; n < N; n++)
                        for (int oh = 0; oh < g->OH; oh++)
                            for (int ow = 0; ow < g->OW; ow++) {
                                const int ih = oh * g->stride - g->pad + kh, iw = ow * g->stride - g->pad + kw;
                                if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W) continue;
                                const int64_t p = ((int64_t)n * g->OH + oh) * g->OW + ow;
                                acc += (double)inp[(((int64_t)n * g->H + ih) * g->W + iw) * IC + c] *
                                       (double)dout[p * OC + o];
                            }
                    dw[((int64_t)(kh * g->KW + kw) * IC + c) * OC + o] += (float)acc;
                }
}

typedef void (*cw_rows_fn)(int, int, int, int, int, const float *, const int64_t *, const float *, int, float *);

/* inp (N,H,W,IC) into xp (N,Hp,Wp,IC): image pixel (h,w) at (h+pad, w+pad), zeros around it; the
 * padded image may end before the image does (strides that never reach its last rows/columns) */
static void pad_images(const nnz_conv_window *g, int N, int IC, const float *inp, int Hp, int Wp, float *xp) {
    const int p = g->pad, lead = p < Wp ? p : Wp, cols = Wp - lead < g->W ? Wp - lead : g->W;
#pragma omp parallel for schedule(static) if ((int64_t)N * Hp * Wp * IC >= CI_PARALLEL_MIN)
    for (int64_t row = 0; row < (int64_t)N * Hp; row++) {
        const int64_t n = row / Hp;
        const int h = (int)(row % Hp) - p;
        float *dst = xp + row * Wp * IC;
        if (h < 0 || h >= g->H) {
            memset(dst, 0, (size_t)Wp * IC * sizeof(float));
            continue;
        }
        memset(dst, 0, (size_t)lead * IC * sizeof(float));
        memcpy(dst + (size_t)lead * IC, inp + ((n * g->H + h) * g->W) * IC, (size_t)cols * IC * sizeof(float));
        memset(dst + (size_t)(lead + cols) * IC, 0, (size_t)(Wp - lead - cols) * IC * sizeof(float));
    }
}

/* the padded images' size: (O-1)*stride + K rows and columns cover every window */
static void padded_size(const nnz_conv_window *g, int *Hp, int *Wp) {
    *Hp = (g->OH - 1) * g->stride + g->KH;
    *Wp = (g->OW - 1) * g->stride + g->KW;
}

size_t nnz_conv_implicit_padded_floats(const nnz_conv_window *g, int IC) {
    int Hp, Wp;
    padded_size(g, &Hp, &Wp);
    return (size_t)Hp * Wp * IC;
}

void nnz_conv_implicit_prepadded(const nnz_conv_window *g, int N, int IC, int OC, const float *inp, const float *w,
                                 bool accumulate, const nnz_epilogue *ep, float *out, float *scratch) {
    int Hp, Wp;
    padded_size(g, &Hp, &Wp);
    pad_images(g, N, IC, inp, Hp, Wp, scratch);
    const nnz_conv_window inside = {.H = Hp, .W = Wp, .KH = g->KH, .KW = g->KW, .stride = g->stride, .pad = 0,
                                    .OH = g->OH, .OW = g->OW};
    nnz_conv_implicit(&inside, N, IC, OC, scratch, w, accumulate, ep, out);
}

static int wgrad_slots(const nnz_conv_window *g, int N, int IC, int OC) {
    const int64_t pixels = (int64_t)N * g->OH * g->OW, blocks = (pixels + CW_ROWS - 1) / CW_ROWS;
    const size_t kq = (size_t)g->KH * g->KW * IC * OC;
    int slots = blocks < CW_SLOTS ? (int)blocks : CW_SLOTS;
    while (slots > 1 && (size_t)slots * kq > CW_PARTIAL_FLOATS) slots--;
    return slots;
}

static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }

size_t nnz_conv_implicit_wgrad_scratch_floats(const nnz_conv_window *g, int N, int IC, int OC) {
    return round16((size_t)N * nnz_conv_implicit_padded_floats(g, IC)) +
           (size_t)wgrad_slots(g, N, IC, OC) * g->KH * g->KW * IC * OC;
}

void nnz_conv_implicit_wgrad(const nnz_conv_window *g, int N, int IC, int OC, const float *inp, const float *dout,
                             float *dw, float *scratch) {
    cw_rows_fn fn = NULL;
#if defined(__x86_64__)
    const nnz_isa isa = nnz_isa_active();
    if (isa >= NNZ_ISA_AVX512) fn = nnz_gemm_small_conv_wgrad_rows_f32_avx512;
    else if (isa == NNZ_ISA_AVX2) fn = nnz_gemm_small_conv_wgrad_rows_f32_avx2;
#endif
    if (!fn) {
        nnz_conv_implicit_wgrad_ref(g, N, IC, OC, inp, dout, dw);
        return;
    }
    const int64_t pixels = (int64_t)N * g->OH * g->OW;
    if (pixels <= 0) return;
    int Hp, Wp;
    padded_size(g, &Hp, &Wp);
    const size_t kq = (size_t)g->KH * g->KW * IC * OC;
    const int64_t blocks = (pixels + CW_ROWS - 1) / CW_ROWS;
    const int slots = wgrad_slots(g, N, IC, OC);
    float *xp = scratch, *part = scratch + round16((size_t)N * nnz_conv_implicit_padded_floats(g, IC));
    memset(part, 0, (size_t)slots * kq * sizeof(float));
    pad_images(g, N, IC, inp, Hp, Wp, xp);
#pragma omp parallel for schedule(static) if (pixels * (int64_t)kq >= CI_PARALLEL_MIN)
    for (int sl = 0; sl < slots; sl++) {
        int64_t off[CW_ROWS];
        const int64_t b0 = blocks * sl / slots, b1 = blocks * (sl + 1) / slots;
        for (int64_t b = b0; b < b1; b++) {
            const int64_t r0 = b * CW_ROWS;
            const int rows = (int)(pixels - r0 < CW_ROWS ? pixels - r0 : CW_ROWS);
            for (int r = 0; r < rows; r++) {
                int64_t n;
                int oh, ow;
                nnz_conv_pixel(g, r0 + r, &n, &oh, &ow);
                off[r] = ((n * Hp + (int64_t)oh * g->stride) * Wp + (int64_t)ow * g->stride) * IC;
            }
            fn(rows, g->KH, g->KW, Wp, IC, xp, off, dout + r0 * OC, OC, part + (size_t)sl * kq);
        }
    }
    for (int sl = 0; sl < slots; sl++) {
        const float *pp = part + (size_t)sl * kq;
#pragma omp simd
        for (size_t i = 0; i < kq; i++) dw[i] += pp[i];
    }
}
