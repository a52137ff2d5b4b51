/* k-means weight sharing in one dimension (Deep Compression, section 3).
 *
 * In 1-D the clusters of Lloyd's algorithm are contiguous ranges of the sorted
 * values, separated at the midpoints between neighbouring centroids. So the values
 * are sorted once (a radix sort on the float bits), and each iteration finds the
 * ranges by binary search and recomputes each centroid as its range's mean. The
 * iteration stops when no range boundary moves. Midpoints are compared in double,
 * where the midpoint of two floats is exact, so a value equal to a centroid always
 * lands in that centroid's cluster (which makes <= K distinct values lossless).
 * A centroid left with no values (linear initialization spreads the centroids over
 * [min, max]; a few far-out values leave most of them empty) is moved: the range with
 * the largest squared error is split in two at its mean instead. */
#include "pack/pack.h"

#include <math.h>
#include <string.h>

/* Order-preserving map of a float's bits to an unsigned key. */
static inline uint32_t float_key(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* LSD radix sort of n floats (3 passes of 11 bits); tmp has n floats. Result in x. */
static void radix_sort_floats(float *x, float *tmp, int64_t n) {
    enum { BITS = 11, BUCKETS = 1 << BITS };
    static const int shifts[3] = {0, 11, 22};
    float *src = x, *dst = tmp;
    for (int pass = 0; pass < 3; pass++) {
        int64_t count[BUCKETS + 1];
        memset(count, 0, sizeof count);
        int sh = shifts[pass];
        for (int64_t i = 0; i < n; i++) count[((float_key(src[i]) >> sh) & (BUCKETS - 1)) + 1]++;
        for (int b = 0; b < BUCKETS; b++) count[b + 1] += count[b];
        for (int64_t i = 0; i < n; i++) dst[count[(float_key(src[i]) >> sh) & (BUCKETS - 1)]++] = src[i];
        float *t = src;
        src = dst;
        dst = t;
    }
    if (src != x) memcpy(x, src, (size_t)n * sizeof *x); /* 3 passes: result is in tmp */
}

/* Sum of squared deviations from the mean of the sorted values [lo, hi) (0 when empty). */
static double range_sse(const float *sorted, int64_t lo, int64_t hi, double *mean) {
    double s = 0, q = 0;
    for (int64_t i = lo; i < hi; i++) s += sorted[i];
    *mean = hi > lo ? s / (double)(hi - lo) : 0;
    for (int64_t i = lo; i < hi; i++) q += ((double)sorted[i] - *mean) * ((double)sorted[i] - *mean);
    return q;
}

/* Empty clusters: k centroids c over the ranges start[0..k] of the sorted values, some of them
 * empty. Keeps the non-empty ranges and splits the one with the largest squared error at its
 * mean, as often as there were empty ones (a range of one repeated value is never split), so the
 * centroids that linear initialization left without members (heavy tails: a few weights far
 * out stretch [min, max]) move to where the values are. Returns the new number of centroids
 * (ascending in c: the ranges stay in order), which is k unless nothing could be split. */
static int relocate_empty(const float *sorted, const int64_t *start, int k, double *c) {
    int64_t lo[NNZ_KMEANS_MAX_K], hi[NNZ_KMEANS_MAX_K];
    double sse[NNZ_KMEANS_MAX_K];
    int m = 0;
    for (int j = 0; j < k; j++)
        if (start[j + 1] > start[j]) {
            lo[m] = start[j];
            hi[m] = start[j + 1];
            sse[m] = range_sse(sorted, lo[m], hi[m], &c[m]);
            m++;
        }
    while (m < k) {
        int best = -1;
        for (int j = 0; j < m; j++)
            if (sse[j] > 0 && (best < 0 || sse[j] > sse[best])) best = j;
        if (best < 0) break;
        /* split at the mean: [lo, first value > mean) and the rest, both non-empty */
        int64_t a = lo[best], b = hi[best];
        while (a < b) {
            int64_t mid = a + (b - a) / 2;
            if ((double)sorted[mid] <= c[best]) a = mid + 1;
            else b = mid;
        }
        if (a <= lo[best] || a >= hi[best]) { /* no value on one side (rounding): leave it whole */
            sse[best] = 0;
            continue;
        }
        for (int j = m; j > best + 1; j--) {
            lo[j] = lo[j - 1];
            hi[j] = hi[j - 1];
            sse[j] = sse[j - 1];
            c[j] = c[j - 1];
        }
        lo[best + 1] = a;
        hi[best + 1] = hi[best];
        hi[best] = a;
        sse[best] = range_sse(sorted, lo[best], hi[best], &c[best]);
        sse[best + 1] = range_sse(sorted, lo[best + 1], hi[best + 1], &c[best + 1]);
        m++;
    }
    return m;
}

/* Nearest-centroid index of v among k ascending centroids (ties to the lower one). */
static inline int nearest(const double *mid, int k, float v) {
    int lo = 0, hi = k - 1; /* answer in [lo, hi]; mid[j] separates j and j+1 */
    while (lo < hi) {
        int m = (lo + hi) / 2;
        if ((double)v <= mid[m]) hi = m;
        else lo = m + 1;
    }
    return lo;
}

nnz_status nnz_kmeans_quantize(const float *x, int64_t n, int bits, int max_iters, const char *what,
                               nnz_codebook *cb, uint8_t *idx) {
    memset(cb, 0, sizeof *cb);
    if (bits < 1 || bits > 8) return nnz_fail(NNZ_ERR_INVALID_ARG, "k-means bits must be 1..8, got %d", bits);
    if (n <= 0) return NNZ_OK;
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return nnz_fail(NNZ_ERR_NUMERIC, "tensor '%s' holds a NaN or infinity at element %lld; cannot quantize it",
                            what ? what : "?", (long long)i);
    const int K = 1 << bits;
    size_t bytes;
    if (!nnz_mul_size((size_t)n, 2 * sizeof(float), &bytes))
        return nnz_fail(NNZ_ERR_NOMEM, "tensor '%s' is too large to quantize", what ? what : "?");
    float *sorted = nnz_alloc(bytes, "k-means sort buffer");
    if (!sorted) return NNZ_ERR_NOMEM;
    memcpy(sorted, x, (size_t)n * sizeof *x);
    radix_sort_floats(sorted, sorted + n, n);

    double c[NNZ_KMEANS_MAX_K], mid[NNZ_KMEANS_MAX_K];
    int64_t start[NNZ_KMEANS_MAX_K + 1], prev_start[NNZ_KMEANS_MAX_K + 1];
    /* distinct values: at most K of them -> they are the codebook */
    int distinct = 0;
    for (int64_t i = 0; i < n && distinct <= K; i++)
        if (i == 0 || sorted[i] != sorted[i - 1]) {
            if (distinct < K) c[distinct] = sorted[i];
            distinct++;
        }
    int k;
    if (distinct <= K) {
        k = distinct;
    } else {
        k = K;
        double lo = sorted[0], hi = sorted[n - 1];
        for (int j = 0; j < K; j++) c[j] = lo + (hi - lo) * j / (K - 1);
        for (int j = 0; j <= K; j++) prev_start[j] = -1;
        for (int it = 0; it < max_iters; it++) {
            start[0] = 0;
            for (int j = 0; j + 1 < k; j++) {
                double b = 0.5 * (c[j] + c[j + 1]);
                /* values <= b go to j (ties to the lower centroid): first index with value > b */
                int64_t lo_i = start[j], hi_i = n;
                while (lo_i < hi_i) {
                    int64_t m = lo_i + (hi_i - lo_i) / 2;
                    if ((double)sorted[m] <= b) lo_i = m + 1;
                    else hi_i = m;
                }
                start[j + 1] = lo_i;
            }
            start[k] = n;
            int empty = 0;
            for (int j = 0; j < k; j++) empty += start[j + 1] == start[j];
            if (empty) {
                k = relocate_empty(sorted, start, k, c);
                for (int j = 0; j <= K; j++) prev_start[j] = -1;
                continue;
            }
            if (memcmp(start, prev_start, (size_t)(k + 1) * sizeof *start) == 0) break;
            memcpy(prev_start, start, (size_t)(k + 1) * sizeof *start);
            for (int j = 0; j < k; j++) {
                double s = 0;
                for (int64_t i = start[j]; i < start[j + 1]; i++) s += sorted[i];
                c[j] = s / (double)(start[j + 1] - start[j]);
            }
        }
    }
    /* as floats, strictly ascending (rounding may merge neighbours) */
    int w = 0;
    for (int j = 0; j < k; j++) {
        float v = (float)c[j];
        if (w == 0 || v != cb->value[w - 1]) cb->value[w++] = v;
    }
    /* drop centroids that no value is nearest to (removing them changes no assignment) */
    int64_t count[NNZ_KMEANS_MAX_K] = {0};
    for (int j = 0; j + 1 < w; j++) mid[j] = 0.5 * ((double)cb->value[j] + (double)cb->value[j + 1]);
    for (int64_t i = 0; i < n; i++) count[nearest(mid, w, sorted[i])]++;
    int kept = 0;
    for (int j = 0; j < w; j++)
        if (count[j]) cb->value[kept++] = cb->value[j];
    cb->k = kept;
    for (int j = 0; j + 1 < kept; j++) mid[j] = 0.5 * ((double)cb->value[j] + (double)cb->value[j + 1]);
    for (int64_t i = 0; i < n; i++) idx[i] = (uint8_t)nearest(mid, kept, x[i]);
    nnz_free(sorted);
    return NNZ_OK;
}
