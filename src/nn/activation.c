/* Elementwise layers: relu, relu6, add, and the identity's gradient.
 *
 * Memory-bound one-pass loops over n contiguous floats: OpenMP over the range
 * (only when it is big enough to pay for the fork), `omp simd` inside so GCC
 * vectorizes at -O2. Forward outputs may alias their inputs exactly (in-place);
 * backward functions accumulate into dinp (see nn.h). NaN propagates through
 * the forward passes, as in PyTorch. */
#include "nn/nn.h"

#include <string.h>

/* Below this many elements one thread is faster than forking a team. */
#define ELTWISE_PARALLEL_MIN 65536

void nnz_relu_forward(int64_t n, const float *inp, float *out) {
#pragma omp parallel for simd schedule(static) if (n >= ELTWISE_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = x < 0.0f ? 0.0f : x;
    }
}

void nnz_relu_backward_ex(int64_t n, const float *out, const float *dout, float *dinp, bool accumulate) {
    if (!dinp) return;
    if (accumulate) {
#pragma omp parallel for simd schedule(static) if (n >= ELTWISE_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) {
            const float g = dout[i]; /* loaded unconditionally: the select vectorizes */
            dinp[i] += out[i] > 0.0f ? g : 0.0f;
        }
    } else {
#pragma omp parallel for simd schedule(static) if (n >= ELTWISE_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) {
            const float g = dout[i];
            dinp[i] = out[i] > 0.0f ? g : 0.0f;
        }
    }
}

void nnz_relu_backward(int64_t n, const float *out, const float *dout, float *dinp) {
    nnz_relu_backward_ex(n, out, dout, dinp, true);
}

void nnz_relu6_forward(int64_t n, const float *inp, float *out) {
#pragma omp parallel for simd schedule(static) if (n >= ELTWISE_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = x < 0.0f ? 0.0f : (x > 6.0f ? 6.0f : x);
    }
}

void nnz_relu6_backward_ex(int64_t n, const float *out, const float *dout, float *dinp, bool accumulate) {
    if (!dinp) return;
    if (accumulate) {
#pragma omp parallel for simd schedule(static) if (n >= ELTWISE_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) {
            const float o = out[i], g = dout[i];
            dinp[i] += ((o > 0.0f) & (o < 6.0f)) ? g : 0.0f;
        }
    } else {
#pragma omp parallel for simd schedule(static) if (n >= ELTWISE_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) {
            const float o = out[i], g = dout[i];
            dinp[i] = ((o > 0.0f) & (o < 6.0f)) ? g : 0.0f;
        }
    }
}

void nnz_relu6_backward(int64_t n, const float *out, const float *dout, float *dinp) {
    nnz_relu6_backward_ex(n, out, dout, dinp, true);
}

void nnz_add_forward(int64_t n, const float *a, const float *b, float *out) {
#pragma omp parallel for simd schedule(static) if (n >= ELTWISE_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void nnz_accumulate(int64_t n, const float *dout, float *dinp) {
    if (!dinp) return;
#pragma omp parallel for simd schedule(static) if (n >= ELTWISE_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) dinp[i] += dout[i];
}

void nnz_add_backward_ex(int64_t n, const float *dout, float *da, bool da_accumulate, float *db) {
    if (!da || !db) { /* one operand: one pass */
        if (da && !da_accumulate) nnz_copy_floats(n, dout, da);
        else nnz_accumulate(n, dout, da ? da : db);
        return;
    }
    /* both in one pass over dout */
    if (da_accumulate) {
#pragma omp parallel for simd schedule(static) if (n >= ELTWISE_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) da[i] += dout[i], db[i] += dout[i];
    } else {
#pragma omp parallel for simd schedule(static) if (n >= ELTWISE_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) da[i] = dout[i], db[i] += dout[i];
    }
}

/* Big buffers in chunks across the threads: one thread's memset or memcpy does not reach
 * the memory bandwidth of two. */
#define ELTWISE_CHUNK 16384

void nnz_zero_floats(int64_t n, float *p) {
    const int64_t chunks = (n + ELTWISE_CHUNK - 1) / ELTWISE_CHUNK;
#pragma omp parallel for schedule(static) if (n >= ELTWISE_PARALLEL_MIN)
    for (int64_t c = 0; c < chunks; c++) {
        const int64_t i = c * ELTWISE_CHUNK, len = n - i < ELTWISE_CHUNK ? n - i : ELTWISE_CHUNK;
        memset(p + i, 0, (size_t)len * sizeof(float));
    }
}

void nnz_copy_floats(int64_t n, const float *src, float *dst) {
    const int64_t chunks = (n + ELTWISE_CHUNK - 1) / ELTWISE_CHUNK;
#pragma omp parallel for schedule(static) if (n >= ELTWISE_PARALLEL_MIN)
    for (int64_t c = 0; c < chunks; c++) {
        const int64_t i = c * ELTWISE_CHUNK, len = n - i < ELTWISE_CHUNK ? n - i : ELTWISE_CHUNK;
        memcpy(dst + i, src + i, (size_t)len * sizeof(float));
    }
}
