/* The public mask API (include/nnz.h): one entry point over the mask kinds, their statistics
 * and index sizes, the RBGP factor graphs as text, and the PGM picture. */
#include "sparse/sparse.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "io/io.h"

static const char *const kind_names[] = {"dense", "unstructured", "block", "hbsnn", "rbgp", "channel-block"};

const char *nnz_mask_kind_name(nnz_mask_kind k) {
    return (unsigned)k < sizeof kind_names / sizeof kind_names[0] ? kind_names[k] : "?";
}

nnz_status nnz_mask_kind_parse(const char *name, nnz_mask_kind *out) {
    for (int i = 0; i < (int)(sizeof kind_names / sizeof kind_names[0]); i++)
        if (name && strcmp(name, kind_names[i]) == 0) {
            *out = (nnz_mask_kind)i;
            return NNZ_OK;
        }
    return nnz_fail(NNZ_ERR_INVALID_ARG, "unknown mask kind '%s': use dense, unstructured, block, hbsnn, rbgp or channel-block",
                    name ? name : "(null)");
}

int64_t nnz_mask_count(const uint8_t *mask, int64_t n) {
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) k += mask[i] != 0;
    return k;
}

int64_t nnz_mask_csr_bytes(const uint8_t *mask, int rows, int cols) {
    return ((int64_t)rows + 1) * 4 + nnz_mask_count(mask, (int64_t)rows * cols) * 4;
}

int64_t nnz_mask_bsr_bytes(const uint8_t *mask, int rows, int cols, int r, int c, int64_t *nblocks) {
    const int gr = (rows + r - 1) / r, gc = (cols + c - 1) / c;
    int64_t nb = 0;
    for (int bi = 0; bi < gr; bi++)
        for (int bj = 0; bj < gc; bj++) {
            bool any = false;
            for (int i = bi * r; i < rows && i < bi * r + r && !any; i++)
                for (int j = bj * c; j < cols && j < bj * c + c; j++)
                    if (mask[(size_t)i * cols + j]) {
                        any = true;
                        break;
                    }
            nb += any;
        }
    if (nblocks) *nblocks = nb;
    return ((int64_t)gr + 1) * 4 + nb * 4;
}

nnz_status nnz_mask_measure(const uint8_t *mask, int rows, int cols, int block_rows, int block_cols,
                            nnz_mask_info *info) {
    if (!info) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_mask_measure: info is NULL");
    memset(info, 0, sizeof *info);
    if (!mask || rows < 1 || cols < 1 || block_rows < 1 || block_cols < 1)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_mask_measure: a %dx%d mask with %dx%d blocks (all must be >= 1, mask set)",
                        rows, cols, block_rows, block_cols);
    info->rows = rows, info->cols = cols;
    info->kept = nnz_mask_count(mask, (int64_t)rows * cols);
    info->density = (double)info->kept / ((double)rows * cols);
    info->block_rows = block_rows, info->block_cols = block_cols;
    info->bytes_csr = nnz_mask_csr_bytes(mask, rows, cols);
    info->bytes_bsr = nnz_mask_bsr_bytes(mask, rows, cols, block_rows, block_cols, &info->nblocks);
    info->bytes_bitmap = ((int64_t)rows * cols + 7) / 8;
    return NNZ_OK;
}

static void fill_factor(nnz_mask_factor *f, const nnz_bigraph *g, const nnz_bigraph_spectrum *s, int tries,
                        nnz_bigraph_method m) {
    *f = (nnz_mask_factor){.rows = g->rows, .cols = g->cols, .dl = g->dl, .dr_min = g->dr_min, .dr_max = g->dr_max,
                           .sigma1 = s->sigma1, .sigma2 = s->sigma2, .bound = s->bound,
                           .biregular = g->dr_min == g->dr_max, .ramanujan = s->ramanujan, .tries = tries,
                           .method = nnz_bigraph_method_name(m)};
}

static int max_tries_of(const nnz_mask_spec *spec) { return spec->max_tries > 0 ? spec->max_tries : 16; }

/* Levels of an HBSNN / BLOCK / UNSTRUCTURED mask with their defaults (sparse.h). */
static nnz_status levels_of(const nnz_mask_spec *spec, double D, int *L, int *lr, int *lc, double *dens) {
    const int b_r = spec->block_rows > 0 ? spec->block_rows : 16, b_c = spec->block_cols > 0 ? spec->block_cols : 16;
    if (spec->block_rows < 0 || spec->block_cols < 0)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "mask: block %dx%d must be positive", spec->block_rows, spec->block_cols);
    switch (spec->kind) {
    case NNZ_MASK_UNSTRUCTURED:
        *L = 1, lr[0] = lc[0] = 1, dens[0] = D;
        return NNZ_OK;
    case NNZ_MASK_BLOCK:
    case NNZ_MASK_CHANNEL_BLOCK:
        *L = 1, lr[0] = b_r, lc[0] = b_c, dens[0] = D;
        return NNZ_OK;
    default:
        break;
    }
    if (spec->levels < 0 || spec->levels > NNZ_MASK_MAX_LEVELS)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "hbsnn: %d levels; 1..%d are supported", spec->levels, NNZ_MASK_MAX_LEVELS);
    if (spec->levels == 0) {
        *L = 2;
        lr[0] = b_r, lc[0] = b_c;
        lr[1] = b_r >= 4 && b_r % 4 == 0 ? b_r / 4 : 1;
        lc[1] = b_c >= 4 && b_c % 4 == 0 ? b_c / 4 : 1;
    } else {
        *L = spec->levels;
        for (int l = 0; l < *L; l++) {
            lr[l] = spec->level_rows[l] ? spec->level_rows[l] : (l == 0 ? b_r : 0);
            lc[l] = spec->level_cols[l] ? spec->level_cols[l] : (l == 0 ? b_c : 0);
        }
    }
    bool given = false;
    for (int l = 0; l < *L; l++) given |= spec->level_density[l] != 0.0f;
    for (int l = 0; l < *L; l++) dens[l] = given ? spec->level_density[l] : pow(D, (double)(l + 1) / *L);
    if (given && fabs(dens[*L - 1] - D) > 1e-6 && spec->sparsity != 0.0f)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "hbsnn: the last level's density %g contradicts sparsity %g (density %g)",
                        dens[*L - 1], spec->sparsity, D);
    return NNZ_OK;
}

/* The blocks a random channel-block mask keeps: k of the gr x gc grid, spread so that every block
 * row and every block column holds k/gr and k/gc of them, rounded (as RBGP's biregular graphs):
 * cell i = (i mod gr, (i + i / L) mod gc), L = lcm(gr, gc), for i < k, then the grid's rows and
 * columns shuffled by the seed. The L cells of each shift s = i / L (< gcd) are distinct, and the
 * shifts partition the grid (a cell (r, c) lies in shift (c - r) mod gcd only); rows cycle with i,
 * and columns advance one per cell within a shift, so any prefix is balanced both ways. Drawn
 * uniformly instead, whole output or input blocks went empty at high sparsity: on vgg8 at 90%,
 * whose 64-channel conv keeps 2 of its 16 blocks, seed 1 drew a network with no path from its
 * input to its output (10% accuracy), seed 2 one that trained. */
static int64_t gcd64(int64_t a, int64_t b) { return b ? gcd64(b, a % b) : a; }

static nnz_status spread_blocks(int gr, int gc, int64_t k, uint64_t seed, uint8_t *keep) {
    int32_t *pr = nnz_alloc(sizeof(int32_t) * ((size_t)gr + gc), "a channel-block mask's shuffles");
    if (!pr) return NNZ_ERR_NOMEM;
    int32_t *pc = pr + gr;
    for (int i = 0; i < gr; i++) pr[i] = i;
    for (int i = 0; i < gc; i++) pc[i] = i;
    nnz_rng rng = nnz_rng_make(seed, 0x636862); /* "chb" */
    nnz_rng_shuffle(&rng, pr, gr);
    nnz_rng_shuffle(&rng, pc, gc);
    memset(keep, 0, (size_t)gr * gc);
    const int64_t L = (int64_t)gr / gcd64(gr, gc) * gc;
    for (int64_t i = 0; i < k; i++) keep[(size_t)pr[i % gr] * gc + pc[(i + i / L) % gc]] = 1;
    nnz_free(pr);
    return NNZ_OK;
}

/* A block mask over (rows, cols / taps) channels, repeated at every tap: by the blocks' L1 norms
 * summed over the taps (weight given), or spread at random (spread_blocks) */
static nnz_status channel_block_mask(int rows, int cols, int taps, int br, int bc, double D, const float *weight,
                                     uint64_t seed, uint8_t *mask) {
    if (cols % taps)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "channel-block mask: %d columns are not %d taps of whole channels", cols, taps);
    const int C = cols / taps;
    uint8_t *small = nnz_alloc((size_t)rows * C, "a channel-block mask");
    float *norm = weight ? nnz_calloc(sizeof(float) * (size_t)rows * C, "a channel-block mask's norms") : NULL;
    if (!small || (weight && !norm)) {
        nnz_free(small), nnz_free(norm);
        return NNZ_ERR_NOMEM;
    }
    for (int r = 0; weight && r < rows; r++)
        for (int t = 0; t < taps; t++)
            for (int c = 0; c < C; c++) norm[(size_t)r * C + c] += fabsf(weight[(size_t)r * cols + (size_t)t * C + c]);
    nnz_status st = NNZ_OK;
    if (weight) st = nnz_hbsnn_mask(rows, C, 1, &br, &bc, &D, norm, seed, small);
    else if (br < 1 || bc < 1 || !(D > 0.0 && D <= 1.0))
        st = nnz_fail(NNZ_ERR_INVALID_ARG, "channel-block mask: block %dx%d must be at least 1x1, density %g in (0, 1]",
                      br, bc, D);
    else { /* the same count as a block mask: round(density * blocks), at least one */
        const int gr = (rows + br - 1) / br, gc = (C + bc - 1) / bc;
        int64_t k = llround(D * (double)gr * gc);
        k = k < 1 ? 1 : k;
        uint8_t *keep = nnz_alloc((size_t)gr * gc, "a channel-block mask's blocks");
        st = keep ? spread_blocks(gr, gc, k, seed, keep) : NNZ_ERR_NOMEM;
        for (int r = 0; st == NNZ_OK && r < rows; r++)
            for (int c = 0; c < C; c++) small[(size_t)r * C + c] = keep[(size_t)(r / br) * gc + c / bc];
        nnz_free(keep);
    }
    for (int r = 0; st == NNZ_OK && r < rows; r++)
        for (int t = 0; t < taps; t++) memcpy(mask + (size_t)r * cols + (size_t)t * C, small + (size_t)r * C, (size_t)C);
    nnz_free(small), nnz_free(norm);
    return st;
}

nnz_status nnz_mask_make(const nnz_mask_spec *spec, int rows, int cols, const float *weight, uint64_t seed,
                         uint8_t *mask, nnz_mask_info *info) {
    if (info) memset(info, 0, sizeof *info);
    if (!spec || !mask) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_mask_make: spec and mask must not be NULL");
    if (rows < 1 || cols < 1) return nnz_fail(NNZ_ERR_INVALID_ARG, "mask: shape %dx%d must be at least 1x1", rows, cols);
    if ((int64_t)rows * cols > ((int64_t)1 << 31))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "mask: shape %dx%d has more than 2^31 elements", rows, cols);
    if (!(spec->sparsity >= 0.0f && spec->sparsity < 1.0f))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "mask: sparsity %g must be in [0, 1) (0.9 = keep 10%%)", spec->sparsity);
    const double D = 1.0 - spec->sparsity;
    nnz_rbgp rb;
    bool have_rb = false;
    int br = spec->block_rows > 0 ? spec->block_rows : 4, bc = spec->block_cols > 0 ? spec->block_cols : 4;
    switch (spec->kind) {
    case NNZ_MASK_DENSE:
        memset(mask, 1, (size_t)rows * cols);
        break;
    case NNZ_MASK_UNSTRUCTURED:
    case NNZ_MASK_BLOCK:
    case NNZ_MASK_HBSNN: {
        int L = 1, lr[NNZ_MASK_MAX_LEVELS], lc[NNZ_MASK_MAX_LEVELS];
        double dens[NNZ_MASK_MAX_LEVELS];
        NNZ_TRY(levels_of(spec, D, &L, lr, lc, dens));
        NNZ_TRY(nnz_hbsnn_mask(rows, cols, L, lr, lc, dens, weight, seed, mask));
        if (spec->kind != NNZ_MASK_UNSTRUCTURED) { /* BSR count at the finest block level */
            int l = lr[L - 1] * lc[L - 1] > 1 ? L - 1 : 0;
            br = lr[l], bc = lc[l];
        }
        break;
    }
    case NNZ_MASK_CHANNEL_BLOCK: {
        int L = 1, lr[NNZ_MASK_MAX_LEVELS], lc[NNZ_MASK_MAX_LEVELS];
        double dens[NNZ_MASK_MAX_LEVELS];
        NNZ_TRY(levels_of(spec, D, &L, lr, lc, dens));
        NNZ_TRY(channel_block_mask(rows, cols, spec->taps > 1 ? spec->taps : 1, lr[0], lc[0], D, weight, seed, mask));
        br = lr[0], bc = lc[0];
        break;
    }
    case NNZ_MASK_RBGP: {
        nnz_rbgp_plan plan;
        NNZ_TRY(nnz_rbgp_plan_make(rows, cols, spec, &plan));
        NNZ_TRY(nnz_rbgp_make(&plan, seed, max_tries_of(spec), &rb));
        have_rb = true;
        nnz_rbgp_expand(&rb, mask);
        br = plan.br, bc = plan.bc;
        break;
    }
    default:
        return nnz_fail(NNZ_ERR_INVALID_ARG, "mask: unknown kind %d", (int)spec->kind);
    }
    if (info) {
        info->rows = rows, info->cols = cols;
        info->kept = nnz_mask_count(mask, (int64_t)rows * cols);
        info->density = (double)info->kept / ((double)rows * cols);
        info->target_density = D;
        info->block_rows = br, info->block_cols = bc;
        info->bytes_csr = nnz_mask_csr_bytes(mask, rows, cols);
        info->bytes_bsr = nnz_mask_bsr_bytes(mask, rows, cols, br, bc, &info->nblocks);
        info->bytes_bitmap = ((int64_t)rows * cols + 7) / 8;
        if (have_rb) {
            const nnz_rbgp_plan *p = &rb.plan;
            info->bytes_succinct = nnz_rbgp_succinct_bytes(&rb);
            info->repeat_rows = p->rr, info->repeat_cols = p->rc;
            info->pad_rows = p->pad_rows, info->pad_cols = p->pad_cols;
            fill_factor(&info->outer, &rb.go, &rb.so, rb.tries_o, rb.method_o);
            fill_factor(&info->inner, &rb.gi, &rb.si, rb.tries_i, rb.method_i);
        }
    }
    if (have_rb) nnz_rbgp_free(&rb);
    return NNZ_OK;
}

/* snprintf into buf at *pos without overrunning len. */
static void put(char *buf, size_t len, size_t *pos, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void put(char *buf, size_t len, size_t *pos, const char *fmt, ...) {
    if (*pos >= len) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf + *pos, len - *pos, fmt, ap);
    va_end(ap);
    if (k > 0) *pos = *pos + (size_t)k < len ? *pos + (size_t)k : len;
}

static void graph_text(const char *name, const nnz_bigraph *g, int max_rows, char *buf, size_t len, size_t *pos) {
    put(buf, len, pos, "%s: %d x %d, left degree %d, right degree %d", name, g->rows, g->cols, g->dl, g->dr_min);
    if (g->dr_max != g->dr_min) put(buf, len, pos, "..%d", g->dr_max);
    put(buf, len, pos, "\n");
    for (int i = 0; i < g->rows && i < max_rows; i++) {
        put(buf, len, pos, "  %4d:", i);
        for (int t = 0; t < g->dl; t++) put(buf, len, pos, " %d", g->adj[(size_t)i * g->dl + t]);
        put(buf, len, pos, "\n");
    }
    if (g->rows > max_rows) put(buf, len, pos, "  ... (%d more rows)\n", g->rows - max_rows);
}

nnz_status nnz_mask_factors_text(const nnz_mask_spec *spec, int rows, int cols, uint64_t seed, int max_rows,
                                 char *buf, size_t len) {
    if (!spec || !buf || !len) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_mask_factors_text: NULL argument");
    buf[0] = '\0';
    if (spec->kind != NNZ_MASK_RBGP) return nnz_fail(NNZ_ERR_INVALID_ARG, "mask: only rbgp masks have factor graphs");
    nnz_rbgp_plan plan;
    nnz_rbgp rb;
    NNZ_TRY(nnz_rbgp_plan_make(rows, cols, spec, &plan));
    NNZ_TRY(nnz_rbgp_make(&plan, seed, max_tries_of(spec), &rb));
    size_t pos = 0;
    graph_text("G_o (outer tiles)", &rb.go, max_rows, buf, len, &pos);
    graph_text("G_i (micro-blocks of a core block)", &rb.gi, max_rows, buf, len, &pos);
    nnz_rbgp_free(&rb);
    return NNZ_OK;
}

nnz_status nnz_mask_write_pgm(const uint8_t *mask, int rows, int cols, int scale, const char *path) {
    if (!mask || !path || rows < 1 || cols < 1 || scale < 1)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "mask picture: bad arguments (%dx%d, scale %d)", rows, cols, scale);
    const int64_t w = (int64_t)cols * scale, h = (int64_t)rows * scale;
    if (w > 65535 || h > 65535 || w * h > ((int64_t)1 << 28))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "mask picture: %lldx%lld pixels is too large; use a smaller scale",
                        (long long)w, (long long)h);
    uint8_t *line = nnz_alloc((size_t)w, "mask picture line");
    if (!line) return NNZ_ERR_NOMEM;
    nnz_atomic_file af;
    nnz_status st = nnz_atomic_open(&af, path);
    if (st != NNZ_OK) {
        nnz_free(line);
        return st;
    }
    char head[64];
    int hl = snprintf(head, sizeof head, "P5\n%lld %lld\n255\n", (long long)w, (long long)h);
    st = nnz_atomic_write(&af, head, (size_t)hl);
    for (int r = 0; r < rows && st == NNZ_OK; r++) {
        for (int64_t x = 0; x < w; x++) line[x] = mask[(size_t)r * cols + (size_t)(x / scale)] ? 0 : 255;
        for (int k = 0; k < scale && st == NNZ_OK; k++) st = nnz_atomic_write(&af, line, (size_t)w);
    }
    nnz_free(line);
    if (st != NNZ_OK) {
        nnz_atomic_abort(&af);
        return st;
    }
    return nnz_atomic_commit(&af);
}
