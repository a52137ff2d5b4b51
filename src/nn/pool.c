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
 * overlap when stride < K, windows of different images never do). */
#include "nn/nn.h"

#include <math.h>

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

void nnz_maxpool_forward(const nnz_pool_shape *s, const float *inp, float *out, int32_t *argmax) {
    const int H = s->H, W = s->W, C = s->C, OH = s->OH, OW = s->OW;
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
            int32_t *a = argmax + ((row * OW) + ow) * C;
            const int32_t first = h0 * W + w0;
#pragma omp simd
            for (int c = 0; c < C; c++) {
                o[c] = -INFINITY;
                a[c] = first;
            }
            for (int ih = h0; ih < h1; ih++)
                for (int iw = w0; iw < w1; iw++) {
                    const float *x = img + ((int64_t)ih * W + iw) * C;
                    const int32_t idx = ih * W + iw;
#pragma omp simd
                    for (int c = 0; c < C; c++) {
                        float v = x[c];
                        int better = (v > o[c]) | (v != v); /* strict: ties keep the first */
                        o[c] = better ? v : o[c];
                        a[c] = better ? idx : a[c];
                    }
                }
        }
    }
}

void nnz_maxpool_backward(const nnz_pool_shape *s, const int32_t *argmax, const float *dout, float *dinp) {
    if (!dinp) return;
    const int C = s->C;
    const int64_t in_img = (int64_t)s->H * s->W * C, out_pix = (int64_t)s->OH * s->OW;
#pragma omp parallel for schedule(static) if (s->N * out_pix * C >= POOL_PARALLEL_MIN)
    for (int n = 0; n < s->N; n++) {
        float *di = dinp + n * in_img;
        for (int64_t p = 0; p < out_pix; p++) {
            const float *g = dout + ((int64_t)n * out_pix + p) * C;
            const int32_t *a = argmax + ((int64_t)n * out_pix + p) * C;
            for (int c = 0; c < C; c++) di[(int64_t)a[c] * C + c] += g[c];
        }
    }
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
