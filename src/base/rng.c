/* Counter-based random numbers: SplitMix64's finaliser over (key, counter). */
#include "base/base.h"

#include <math.h>

uint64_t nnz_rng_hash(uint64_t key, uint64_t counter) {
    uint64_t z = key + (counter + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

nnz_rng nnz_rng_make(uint64_t seed, uint64_t stream) {
    nnz_rng r = {nnz_rng_hash(seed, stream ^ 0xD1B54A32D192ED03ull), 0};
    return r;
}

uint64_t nnz_rng_u64(nnz_rng *r) { return nnz_rng_hash(r->key, r->counter++); }

uint32_t nnz_rng_below(nnz_rng *r, uint32_t n) {
    return (uint32_t)(((nnz_rng_u64(r) >> 32) * (uint64_t)n) >> 32);
}

float nnz_rng_uniform(nnz_rng *r) { return (float)(nnz_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

float nnz_rng_normal(nnz_rng *r) {
    /* Box-Muller; u1 in (0,1] so the log is finite. */
    double u1 = ((double)(nnz_rng_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(nnz_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void nnz_rng_shuffle(nnz_rng *r, int32_t *idx, int n) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)nnz_rng_below(r, (uint32_t)i + 1);
        int32_t t = idx[i]; idx[i] = idx[j]; idx[j] = t;
    }
}
