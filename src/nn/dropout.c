/* Inverted dropout.
 *
 * Element i keeps its value with probability 1-p. Its draw is
 * nnz_rng_hash(rng->key, rng->counter + i), a pure function of the rng state
 * and i, so the mask is the same whatever the thread count, and the rng's
 * counter simply advances by n per call (a checkpoint that saves the counter
 * resumes the exact same masks). Kept values are scaled by 1/(1-p) (computed in
 * float as PyTorch does), so the expected output equals the input. */
#include "nn/nn.h"

#include <assert.h>

#define DROPOUT_PARALLEL_MIN 65536

void nnz_dropout_forward(int64_t n, float p, nnz_rng *rng, const float *inp, float *out, uint8_t *mask) {
    assert(p >= 0.0f && p <= 1.0f && rng);
    const uint64_t key = rng->key, base = rng->counter;
    rng->counter += (uint64_t)n;
    if (p >= 1.0f) { /* everything dropped; 1/(1-p) would be inf */
        for (int64_t i = 0; i < n; i++) {
            out[i] = 0.0f;
            mask[i] = 0;
        }
        return;
    }
    /* The draw is u = (h >> 40) / 2^24 in [0,1) (nnz_rng_uniform's rule); keep iff
     * u >= p, i.e. iff the 24-bit integer is >= ceil(p * 2^24). */
    const double scaled = (double)p * 16777216.0;
    uint64_t threshold = (uint64_t)scaled;
    if ((double)threshold < scaled) threshold++;
    const float scale = 1.0f / (1.0f - p);
#pragma omp parallel for schedule(static) if (n >= DROPOUT_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        uint8_t keep = (nnz_rng_hash(key, base + (uint64_t)i) >> 40) >= threshold;
        mask[i] = keep;
        out[i] = keep ? inp[i] * scale : 0.0f;
    }
}

void nnz_dropout_backward(int64_t n, float p, const uint8_t *mask, const float *dout, float *dinp) {
    if (!dinp || p >= 1.0f) return;
    const float scale = 1.0f / (1.0f - p);
#pragma omp parallel for simd schedule(static) if (n >= DROPOUT_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float g = dout[i] * scale; /* unconditionally: the select vectorizes */
        dinp[i] += mask[i] ? g : 0.0f;
    }
}
