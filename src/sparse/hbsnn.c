/* HBsNN masks (hierarchical block sparsity) and, as their one-level cases, the unstructured
 * and block baselines: level by level, keep the best-scoring blocks among those inside the
 * blocks the level above kept. Semantics in sparse.h, reasons in docs/RBGP.md. */
#include "sparse/sparse.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    double score;
    int64_t idx; /* row-major block index within the level's grid */
} scored;

/* Larger score first; equal scores: lower index first. */
static int by_score(const void *a, const void *b) {
    const scored *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

nnz_status nnz_hbsnn_mask(int rows, int cols, int levels, const int *lr, const int *lc, const double *density,
                          const float *weight, uint64_t seed, uint8_t *mask) {
    if (rows < 1 || cols < 1) return nnz_fail(NNZ_ERR_INVALID_ARG, "mask: shape %dx%d must be at least 1x1", rows, cols);
    if (levels < 1 || levels > NNZ_MASK_MAX_LEVELS)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "hbsnn: %d levels; 1..%d are supported", levels, NNZ_MASK_MAX_LEVELS);
    for (int l = 0; l < levels; l++) {
        if (lr[l] < 1 || lc[l] < 1)
            return nnz_fail(NNZ_ERR_INVALID_ARG, "hbsnn: level %d block %dx%d must be at least 1x1", l, lr[l], lc[l]);
        if (!(density[l] > 0.0 && density[l] <= 1.0))
            return nnz_fail(NNZ_ERR_INVALID_ARG, "hbsnn: level %d density %g must be in (0, 1]", l, density[l]);
        if (l && (lr[l - 1] % lr[l] || lc[l - 1] % lc[l]))
            return nnz_fail(NNZ_ERR_INVALID_ARG, "hbsnn: level %d block %dx%d must divide level %d's %dx%d", l, lr[l], lc[l],
                            l - 1, lr[l - 1], lc[l - 1]);
        if (l && density[l] > density[l - 1])
            return nnz_fail(NNZ_ERR_INVALID_ARG, "hbsnn: level %d density %g exceeds level %d's %g (a level only removes)", l,
                            density[l], l - 1, density[l - 1]);
    }
    const int64_t n = (int64_t)rows * cols;
    if (weight)
        for (int64_t i = 0; i < n; i++)
            if (!isfinite(weight[i]))
                return nnz_fail(NNZ_ERR_NUMERIC, "mask: weight element %lld (row %lld, col %lld) is %g", (long long)i,
                                (long long)(i / cols), (long long)(i % cols), weight[i]);
    memset(mask, 1, (size_t)n);
    for (int l = 0; l < levels; l++) {
        const int bh = lr[l], bw = lc[l];
        const int64_t gr = (rows + bh - 1) / bh, gc = (cols + bw - 1) / bw, nb = gr * gc;
        scored *cand = nnz_alloc((size_t)nb * sizeof(scored), "hbsnn candidates");
        if (!cand) return NNZ_ERR_NOMEM;
        const uint64_t key = nnz_rng_hash(seed, (uint64_t)l + 1);
        int64_t nc = 0;
        for (int64_t b = 0; b < nb; b++) {
            const int r0 = (int)(b / gc) * bh, c0 = (int)(b % gc) * bw;
            if (!mask[(size_t)r0 * cols + c0]) continue; /* its parent was pruned: blocks go whole */
            double s = 0.0;
            if (weight) {
                const int r1 = r0 + bh < rows ? r0 + bh : rows, c1 = c0 + bw < cols ? c0 + bw : cols;
                for (int r = r0; r < r1; r++)
                    for (int c = c0; c < c1; c++) s += fabs((double)weight[(size_t)r * cols + c]);
            } else {
                s = (double)(nnz_rng_hash(key, (uint64_t)b) >> 11) * (1.0 / 9007199254740992.0);
            }
            cand[nc++] = (scored){s, b};
        }
        int64_t k = llround(density[l] * (double)nb);
        if (k < 1) k = 1;
        if (k > nc) k = nc;
        qsort(cand, (size_t)nc, sizeof(scored), by_score);
        for (int64_t j = k; j < nc; j++) {
            const int r0 = (int)(cand[j].idx / gc) * bh, c0 = (int)(cand[j].idx % gc) * bw;
            const int r1 = r0 + bh < rows ? r0 + bh : rows, c1 = c0 + bw < cols ? c0 + bw : cols;
            for (int r = r0; r < r1; r++) memset(mask + (size_t)r * cols + c0, 0, (size_t)(c1 - c0));
        }
        nnz_free(cand);
    }
    return NNZ_OK;
}
