/* Pooling over NHWC: max and average with a square K x K window, and global
 * average pooling.
 *
 * Contract (PyTorch's defaults): floor mode, OH = (H + 2 pad - K) / stride + 1;
 * pad <= K/2, so every window holds at least one real input and never reaches
 * past H + pad (hence the average always divides by K*K, padding counted,
 * count_include_pad=True). Max pooling treats padding as -inf, propagates NaN,
 * and on ties keeps the first maximum in row-major window order; argmax stores
 * ih*W + iw of the winner, initialised to the window's first real input (so an
 * all -inf window routes its gradient there, as PyTorch does).
 *
 * Loops vectorize over the contiguous channel axis. Forward passes run in
 * parallel over output rows; backward passes over images (windows of one image
 * overlap when stride < K, windows of different images never do), the max
 * pool's over input rows when its windows do not overlap. */
#include "nn/nn.h"

#include <math.h>
#include <string.h>

/* Below this many output floats one thread is faster than forking a team. */
#define POOL_PARALLEL_MIN 32768

nnz_status nnz_pool_shape_init(nnz_pool_shape *s, int N, int H, int W, int C, int K, int stride, int pad) {
    if (N <= 0 || H <= 0 || W <= 0 || C <= 0)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "pool input shape (%d,%d,%d,%d) must be positive in every dimension",
                        N, H, W, C);
    if (K <= 0 || stride <= 0 || pad < 0)
        return nnz_fail(NNZ_ERR_INVALID_ARG,
                        "pool kernel %d, stride %d, pad %d: kernel and stride must be >= 1 and pad >= 0", K, stride,
                        pad);
    if (pad > K / 2)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "pool pad %d is more than half the kernel %d; use pad <= %d", pad, K,
                        K / 2);
    if ((int64_t)H + 2 * (int64_t)pad < K || (int64_t)W + 2 * (int64_t)pad < K)
        return nnz_fail(NNZ_ERR_INVALID_ARG,
                        "pool kernel %d does not fit the %dx%d input with pad %d: the output would be empty; "
                        "use a smaller kernel or more padding",
                        K, H, W, pad);
    if ((int64_t)H * W > INT32_MAX)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "pool input %dx%d has more than 2^31 pixels per channel", H, W);
    s->N = N;
    s->H = H;
    s->W = W;
    s->C = C;
    s->K = K;
    s->stride = stride;
    s->pad = pad;
    s->OH = (int)(((int64_t)H + 2 * pad - K) / stride + 1);
    s->OW = (int)(((int64_t)W + 2 * pad - K) / stride + 1);
    return NNZ_OK;
}

/* The real-input part [lo, hi) of the window starting at `start` (may be negative). */
static inline void window_range(int start, int K, int size, int *lo, int *hi) {
    *lo = start < 0 ? 0 : start;
    *hi = start + K > size ? size : start + K;
}

#define ALWAYS_INLINE static inline __attribute__((always_inline))
#define TARGET_AVX2 __attribute__((target("avx2,fma")))
#define TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")))

/* One output row (oh) of one image: the windows' maxima and, when WITH_ARGMAX, their argmax (a
 * NULL otherwise). Compiled per ISA (target attributes, no intrinsics), as batch norm's passes. */
ALWAYS_INLINE void pool_fwd_row_body(const nnz_pool_shape *s, const float *img, int oh, float *o, int32_t *a,
                                     const bool WITH_ARGMAX) {
    const int H = s->H, W = s->W, C = s->C;
    int h0, h1;
    window_range(oh * s->stride - s->pad, s->K, H, &h0, &h1);
    for (int ow = 0; ow < s->OW; ow++, o += C) {
        int32_t *const aw = WITH_ARGMAX ? a + (int64_t)ow * C : NULL;
        int w0, w1;
        window_range(ow * s->stride - s->pad, s->K, W, &w0, &w1);
        const int32_t first = h0 * W + w0;
#pragma omp simd
        for (int c = 0; c < C; c++) {
            o[c] = -INFINITY;
            if (WITH_ARGMAX) aw[c] = first;
        }
        for (int ih = h0; ih < h1; ih++)
            for (int iw = w0; iw < w1; iw++) {
                const float *x = img + ((int64_t)ih * W + iw) * C;
                const int32_t idx = ih * W + iw;
#pragma omp simd
                for (int c = 0; c < C; c++) {
                    const float v = x[c];
                    const int better = (v > o[c]) | (v != v); /* strict: ties keep the first */
                    o[c] = better ? v : o[c];
                    if (WITH_ARGMAX) aw[c] = better ? idx : aw[c];
                }
            }
    }
}

typedef void (*pool_fwd_row_fn)(const nnz_pool_shape *s, const float *img, int oh, float *o, int32_t *a);
#define POOL_FWD_ROW(suffix, attr)                                                                            \
    attr static void pool_fwd_row_##suffix(const nnz_pool_shape *s, const float *img, int oh, float *o,       \
                                           int32_t *a) {                                                      \
        if (a) pool_fwd_row_body(s, img, oh, o, a, true);                                                     \
        else pool_fwd_row_body(s, img, oh, o, NULL, false);                                                   \
    }
POOL_FWD_ROW(ref, )
#if defined(__x86_64__)
POOL_FWD_ROW(avx2, TARGET_AVX2)
POOL_FWD_ROW(avx512, TARGET_AVX512)
#endif

/* Windows that do not overlap (stride == K, pad 0): every input pixel is in at most one window,
 * so each is written once, in order, with no scatter: the selected pixel gets its window's
 * gradient, the others (and the columns past the last window) zero. One input row: a, g, y are
 * its windows' argmax, gradient and (relu_out, or NULL) pooled output rows. Compiled per ISA
 * (target attributes, no intrinsics), as batch norm's passes. */
ALWAYS_INLINE void pool_bwd_row_body(int W, int C, int K, int OW, int ih, const int32_t *a, const float *g,
                                     const float *y, bool accumulate, float *di) {
    for (int ow = 0; ow < OW; ow++, a += C, g += C, y = y ? y + C : NULL)
        for (int kw = 0; kw < K; kw++) {
            const int iw = ow * K + kw;
            const int32_t idx = ih * W + iw;
            float *d = di + (int64_t)iw * C;
            if (y && accumulate) {
#pragma omp simd
                for (int c = 0; c < C; c++) d[c] = ((a[c] == idx) & (y[c] > 0.0f)) ? d[c] + g[c] : d[c];
            } else if (y) {
#pragma omp simd
                for (int c = 0; c < C; c++) d[c] = ((a[c] == idx) & (y[c] > 0.0f)) ? g[c] : 0.0f;
            } else if (accumulate) {
#pragma omp simd
                for (int c = 0; c < C; c++) d[c] = a[c] == idx ? d[c] + g[c] : d[c];
            } else {
#pragma omp simd
                for (int c = 0; c < C; c++) d[c] = a[c] == idx ? g[c] : 0.0f;
            }
        }
    if (!accumulate)
        for (int64_t i = (int64_t)OW * K * C; i < (int64_t)W * C; i++) di[i] = 0.0f;
}

typedef void (*pool_bwd_row_fn)(int W, int C, int K, int OW, int ih, const int32_t *a, const float *g, const float *y,
                                bool accumulate, float *di);
#define POOL_BWD_ROW(suffix, attr)                                                                              \
    attr static void pool_bwd_row_##suffix(int W, int C, int K, int OW, int ih, const int32_t *a, const float *g, \
                                           const float *y, bool accumulate, float *di) {                        \
        pool_bwd_row_body(W, C, K, OW, ih, a, g, y, accumulate, di);                                           \
    }
POOL_BWD_ROW(ref, )
#if defined(__x86_64__)
POOL_BWD_ROW(avx2, TARGET_AVX2)
POOL_BWD_ROW(avx512, TARGET_AVX512)
#endif

/* The row kernels of the active ISA: 0 plain, 1 AVX2, 2 AVX-512 */
static int pool_variant(void) {
#if defined(__x86_64__)
    const nnz_isa isa = nnz_isa_active();
    if (isa >= NNZ_ISA_AVX512) return 2;
    if (isa >= NNZ_ISA_AVX2) return 1;
#endif
    return 0;
}
#if defined(__x86_64__)
static const pool_fwd_row_fn pool_fwd_rows[] = {pool_fwd_row_ref, pool_fwd_row_avx2, pool_fwd_row_avx512};
static const pool_bwd_row_fn pool_bwd_rows[] = {pool_bwd_row_ref, pool_bwd_row_avx2, pool_bwd_row_avx512};
#else
static const pool_fwd_row_fn pool_fwd_rows[] = {pool_fwd_row_ref};
static const pool_bwd_row_fn pool_bwd_rows[] = {pool_bwd_row_ref};
#endif

void nnz_maxpool_forward(const nnz_pool_shape *s, const float *inp, float *out, int32_t *argmax) {
    const int64_t rows = (int64_t)s->N * s->OH;
    const pool_fwd_row_fn row_fn = pool_fwd_rows[pool_variant()];
#pragma omp parallel for schedule(static) if (rows * s->OW * s->C >= POOL_PARALLEL_MIN)
    for (int64_t row = 0; row < rows; row++) {
        const int n = (int)(row / s->OH), oh = (int)(row % s->OH);
        const int64_t o = row * s->OW * s->C;
        row_fn(s, inp + (int64_t)n * s->H * s->W * s->C, oh, out + o, argmax ? argmax + o : NULL);
    }
}

static void maxpool_backward_tiled(const nnz_pool_shape *s, const int32_t *argmax, const float *dout,
                                   const float *relu_out, float *dinp, bool accumulate) {
    const int H = s->H, W = s->W, C = s->C, K = s->K, OH = s->OH, OW = s->OW;
    const int64_t rows = (int64_t)s->N * H;
    const pool_bwd_row_fn row_fn = pool_bwd_rows[pool_variant()];
#pragma omp parallel for schedule(static) if (rows * W * C >= POOL_PARALLEL_MIN)
    for (int64_t row = 0; row < rows; row++) {
        const int n = (int)(row / H), ih = (int)(row % H), oh = ih / K;
        float *di = dinp + row * W * C;
        if (oh >= OH) { /* below the last window */
            if (!accumulate)
                for (int64_t i = 0; i < (int64_t)W * C; i++) di[i] = 0.0f;
            continue;
        }
        const int64_t o = ((int64_t)n * OH + oh) * OW * C;
        row_fn(W, C, K, OW, ih, argmax + o, dout + o, relu_out ? relu_out + o : NULL, accumulate, di);
    }
}

void nnz_maxpool_backward_ex(const nnz_pool_shape *s, const int32_t *argmax, const float *dout, const float *relu_out,
                             float *dinp, bool accumulate) {
    if (!dinp) return;
    if (s->stride == s->K && s->pad == 0) {
        maxpool_backward_tiled(s, argmax, dout, relu_out, dinp, accumulate);
        return;
    }
    const int C = s->C;
    const int64_t in_img = (int64_t)s->H * s->W * C, out_pix = (int64_t)s->OH * s->OW;
    if (!accumulate) memset(dinp, 0, (size_t)(s->N * in_img) * sizeof(float));
#pragma omp parallel for schedule(static) if (s->N * out_pix * C >= POOL_PARALLEL_MIN)
    for (int n = 0; n < s->N; n++) {
        float *di = dinp + n * in_img;
        for (int64_t p = 0; p < out_pix; p++) {
            const int64_t o = ((int64_t)n * out_pix + p) * C;
            const float *g = dout + o, *y = relu_out ? relu_out + o : NULL;
            const int32_t *a = argmax + o;
            for (int c = 0; c < C; c++)
                if (!y || y[c] > 0.0f) di[(int64_t)a[c] * C + c] += g[c];
        }
    }
}

void nnz_maxpool_backward(const nnz_pool_shape *s, const int32_t *argmax, const float *dout, float *dinp) {
    nnz_maxpool_backward_ex(s, argmax, dout, NULL, dinp, true);
}

void nnz_avgpool_forward(const nnz_pool_shape *s, const float *inp, float *out) {
    const int H = s->H, W = s->W, C = s->C, OH = s->OH, OW = s->OW;
    const float area = (float)(s->K * s->K);
    const int64_t rows = (int64_t)s->N * OH;
#pragma omp parallel for schedule(static) if (rows * OW * C >= POOL_PARALLEL_MIN)
    for (int64_t row = 0; row < rows; row++) {
        const int n = (int)(row / OH), oh = (int)(row % OH);
        int h0, h1;
        window_range(oh * s->stride - s->pad, s->K, H, &h0, &h1);
        const float *img = inp + (int64_t)n * H * W * C;
        for (int ow = 0; ow < OW; ow++) {
            int w0, w1;
            window_range(ow * s->stride - s->pad, s->K, W, &w0, &w1);
            float *o = out + ((row * OW) + ow) * C;
#pragma omp simd
            for (int c = 0; c < C; c++) o[c] = 0.0f;
            for (int ih = h0; ih < h1; ih++)
                for (int iw = w0; iw < w1; iw++) {
                    const float *x = img + ((int64_t)ih * W + iw) * C;
#pragma omp simd
                    for (int c = 0; c < C; c++) o[c] += x[c];
                }
#pragma omp simd
            for (int c = 0; c < C; c++) o[c] /= area;
        }
    }
}

void nnz_avgpool_backward(const nnz_pool_shape *s, const float *dout, float *dinp) {
    if (!dinp) return;
    const int H = s->H, W = s->W, C = s->C, OH = s->OH, OW = s->OW;
    const float area = (float)(s->K * s->K);
    const int64_t in_img = (int64_t)H * W * C;
#pragma omp parallel for schedule(static) if ((int64_t)s->N * OH * OW * C >= POOL_PARALLEL_MIN)
    for (int n = 0; n < s->N; n++) {
        float *di = dinp + n * in_img;
        for (int oh = 0; oh < OH; oh++) {
            int h0, h1;
            window_range(oh * s->stride - s->pad, s->K, H, &h0, &h1);
            for (int ow = 0; ow < OW; ow++) {
                int w0, w1;
                window_range(ow * s->stride - s->pad, s->K, W, &w0, &w1);
                const float *g = dout + (((int64_t)n * OH + oh) * OW + ow) * C;
                for (int ih = h0; ih < h1; ih++)
                    for (int iw = w0; iw < w1; iw++) {
                        float *d = di + ((int64_t)ih * W + iw) * C;
#pragma omp simd
                        for (int c = 0; c < C; c++) d[c] += g[c] / area;
                    }
            }
        }
    }
}

void nnz_global_avgpool_forward(int N, int HW, int C, const float *inp, float *out) {
    const float count = (float)HW;
#pragma omp parallel for schedule(static) if ((int64_t)N * HW * C >= POOL_PARALLEL_MIN)
    for (int n = 0; n < N; n++) {
        float *o = out + (int64_t)n * C;
#pragma omp simd
        for (int c = 0; c < C; c++) o[c] = 0.0f;
        for (int p = 0; p < HW; p++) {
            const float *x = inp + ((int64_t)n * HW + p) * C;
#pragma omp simd
            for (int c = 0; c < C; c++) o[c] += x[c];
        }
#pragma omp simd
        for (int c = 0; c < C; c++) o[c] /= count;
    }
}

void nnz_global_avgpool_backward(int N, int HW, int C, const float *dout, float *dinp) {
    if (!dinp) return;
    const float count = (float)HW;
#pragma omp parallel for schedule(static) if ((int64_t)N * HW * C >= POOL_PARALLEL_MIN)
    for (int n = 0; n < N; n++) {
        const float *g = dout + (int64_t)n * C;
        for (int p = 0; p < HW; p++) {
            float *d = dinp + ((int64_t)n * HW + p) * C;
#pragma omp simd
            for (int c = 0; c < C; c++) d[c] += g[c] / count;
        }
    }
}
