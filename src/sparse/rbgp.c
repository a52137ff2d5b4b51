/* RBGP masks: G_o (x) J_r (x) G_i (x) J_b, planned for a weight's shape and sparsity, kept
 * succinctly as the two factor graphs plus the block sizes, expanded or queried per element. */
#include "sparse/sparse.h"

#include <math.h>
#include <string.h>

#define DEFAULT_MICRO 4  /* J_b: 4x4, the paper's small inner blocks; 16x16 fits an AVX-512 register tile */
#define CORE_MICRO 8.0   /* preferred core block: about 8x8 micro-blocks (32x32 elements at 4x4) */

typedef struct {
    int o, r, i; /* outer graph side, repeat, inner graph side */
} split3;

/* Every (o, r, i) with o*r*i = n and graph sides <= max_side; fixed_i / fixed_r (> 0) pin them. */
static int splits(int n, int fixed_r, int fixed_i, split3 *out, int cap) {
    int k = 0;
    for (int o = 1; o <= n; o++) {
        if (n % o) continue;
        for (int r = 1; r <= n / o; r++) {
            if ((n / o) % r) continue;
            int i = n / o / r;
            if (o > NNZ_BIGRAPH_MAX_SIDE || i > NNZ_BIGRAPH_MAX_SIDE) continue;
            if ((fixed_r && r != fixed_r) || (fixed_i && i != fixed_i)) continue;
            if (k < cap) out[k++] = (split3){o, r, i};
        }
    }
    return k;
}

/* Penalties of one factor graph m x n with left degree d (see sparse.h). */
static double graph_penalty(int m, int n, int d) {
    double p = 0.0;
    int64_t e = (int64_t)m * d;
    if (e % n) p += 0.5;                                    /* not biregular */
    if (e < n) p += 6.0;                                    /* some right vertex (input tile) has no edge */
    int dr_max = (int)((e + n - 1) / n);
    if (m > 1 && n > 1 && d < n && (d == 1 || dr_max == 1)) p += 2.0; /* cannot be connected */
    return p;
}

nnz_status nnz_rbgp_plan_make(int rows, int cols, const nnz_mask_spec *spec, nnz_rbgp_plan *out) {
    memset(out, 0, sizeof *out);
    if (rows < 1 || cols < 1) return nnz_fail(NNZ_ERR_INVALID_ARG, "rbgp: shape %dx%d must be at least 1x1", rows, cols);
    const double s = spec->sparsity;
    if (!(s >= 0.0 && s < 1.0)) return nnz_fail(NNZ_ERR_INVALID_ARG, "rbgp: sparsity %g must be in [0, 1)", s);
    if (spec->block_rows < 0 || spec->block_cols < 0 || spec->block_rows > rows || spec->block_cols > cols)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "rbgp: micro-block %dx%d does not fit the %dx%d weight", spec->block_rows,
                        spec->block_cols, rows, cols);
    /* the default micro-block is clipped to small shapes; one asked for must fit */
    const int br = spec->block_rows ? spec->block_rows : rows < DEFAULT_MICRO ? rows : DEFAULT_MICRO;
    const int bc = spec->block_cols ? spec->block_cols : cols < DEFAULT_MICRO ? cols : DEFAULT_MICRO;
    const int Rb = (rows + br - 1) / br, Cb = (cols + bc - 1) / bc;
    const double D = 1.0 - s;
    const double inner_s = spec->inner_sparsity;
    if (!(inner_s >= 0.0 && inner_s < 1.0))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "rbgp: inner sparsity %g must be in [0, 1) (0 = automatic)", inner_s);
    const double Ti = inner_s > 0 ? 1.0 - inner_s : sqrt(D);
    const double wi = inner_s > 0 ? 30.0 : 1.0; /* an inner sparsity asked for weighs like the density */
    int fixed_mi = 0, fixed_ni = 0;
    if (spec->core_rows) {
        if (spec->core_rows < 0 || spec->core_rows % br || Rb % (spec->core_rows / br))
            return nnz_fail(NNZ_ERR_INVALID_ARG,
                            "rbgp: core block rows %d must be a multiple of the micro-block (%d) dividing the %d padded rows",
                            spec->core_rows, br, Rb * br);
        fixed_mi = spec->core_rows / br;
    }
    if (spec->core_cols) {
        if (spec->core_cols < 0 || spec->core_cols % bc || Cb % (spec->core_cols / bc))
            return nnz_fail(NNZ_ERR_INVALID_ARG,
                            "rbgp: core block cols %d must be a multiple of the micro-block (%d) dividing the %d padded cols",
                            spec->core_cols, bc, Cb * bc);
        fixed_ni = spec->core_cols / bc;
    }
    if (spec->repeat_rows < 0 || spec->repeat_cols < 0)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "rbgp: repeat %dx%d must be positive", spec->repeat_rows, spec->repeat_cols);
    enum { CAP = 4096 };
    split3 *rs = nnz_alloc(2 * CAP * sizeof(split3), "rbgp planner");
    if (!rs) return NNZ_ERR_NOMEM;
    split3 *cs = rs + CAP;
    int nr = splits(Rb, spec->repeat_rows, fixed_mi, rs, CAP), nc = splits(Cb, spec->repeat_cols, fixed_ni, cs, CAP);
    if (!nr || !nc) {
        nnz_free(rs);
        return nnz_fail(NNZ_ERR_INVALID_ARG,
                        "rbgp: no factorisation of the %dx%d micro-block grid fits (repeat %dx%d, core %dx%d, graph sides <= %d);"
                        " use a larger --block or other --core/--repeat",
                        Rb, Cb, spec->repeat_rows, spec->repeat_cols, spec->core_rows, spec->core_cols, NNZ_BIGRAPH_MAX_SIDE);
    }
    double best = INFINITY;
    for (int a = 0; a < nr; a++)
        for (int b = 0; b < nc; b++) {
            const split3 R = rs[a], C = cs[b];
            const double shape_pen = 0.3 * (fabs(log(R.i / CORE_MICRO)) + fabs(log(C.i / CORE_MICRO))) +
                                     0.1 * (log((double)R.r) + log((double)C.r));
            if (shape_pen >= best) continue;
            for (int dli = 1; dli <= C.i; dli++) {
                const double di = (double)dli / C.i;
                const double pen_i = shape_pen + wi * fabs(log(di / Ti)) + graph_penalty(R.i, C.i, dli);
                if (pen_i >= best) continue;
                const double want = D / di * C.o;
                int cand[2] = {(int)floor(want), (int)ceil(want)};
                for (int t = 0; t < 2; t++) {
                    int dlo = cand[t] < 1 ? 1 : cand[t] > C.o ? C.o : cand[t];
                    const double dens = di * dlo / C.o;
                    const double cost = pen_i + 30.0 * fabs(log(dens / D)) + graph_penalty(R.o, C.o, dlo);
                    if (cost < best) {
                        best = cost;
                        *out = (nnz_rbgp_plan){.rows = rows, .cols = cols, .pad_rows = Rb * br, .pad_cols = Cb * bc,
                                               .br = br, .bc = bc, .mi = R.i, .ni = C.i, .dli = dli, .rr = R.r,
                                               .rc = C.r, .mo = R.o, .no = C.o, .dlo = dlo, .density = dens, .target = D};
                    }
                }
            }
        }
    nnz_free(rs);
    return NNZ_OK;
}

nnz_status nnz_rbgp_make(const nnz_rbgp_plan *plan, uint64_t seed, int max_tries, nnz_rbgp *out) {
    memset(out, 0, sizeof *out);
    out->plan = *plan;
    const nnz_rbgp_plan *p = plan;
    out->method_o = nnz_bigraph_liftable(p->mo, p->no, p->dlo) ? NNZ_BIGRAPH_LIFT : NNZ_BIGRAPH_SWITCH;
    out->method_i = nnz_bigraph_liftable(p->mi, p->ni, p->dli) ? NNZ_BIGRAPH_LIFT : NNZ_BIGRAPH_SWITCH;
    nnz_status st = nnz_ramanujan_make(p->mo, p->no, p->dlo, out->method_o, nnz_rng_hash(seed, 1), max_tries, &out->go,
                                       &out->so, &out->tries_o);
    if (st == NNZ_OK)
        st = nnz_ramanujan_make(p->mi, p->ni, p->dli, out->method_i, nnz_rng_hash(seed, 2), max_tries, &out->gi, &out->si,
                                &out->tries_i);
    if (st != NNZ_OK) nnz_rbgp_free(out);
    return st;
}

bool nnz_rbgp_get(const nnz_rbgp *m, int r, int c) {
    const nnz_rbgp_plan *p = &m->plan;
    const int tile_r = p->rr * p->mi * p->br, tile_c = p->rc * p->ni * p->bc;
    return nnz_bigraph_has(&m->go, r / tile_r, c / tile_c) && nnz_bigraph_has(&m->gi, (r / p->br) % p->mi, (c / p->bc) % p->ni);
}

void nnz_rbgp_expand(const nnz_rbgp *m, uint8_t *mask) {
    const nnz_rbgp_plan *p = &m->plan;
    const int tile_r = p->rr * p->mi * p->br, tile_c = p->rc * p->ni * p->bc, core_c = p->ni * p->bc;
    memset(mask, 0, (size_t)p->rows * p->cols);
    for (int r = 0; r < p->rows; r++) {
        uint8_t *row = mask + (size_t)r * p->cols;
        const int32_t *outer = m->go.adj + (size_t)(r / tile_r) * p->dlo;
        const int32_t *inner = m->gi.adj + (size_t)((r / p->br) % p->mi) * p->dli;
        for (int a = 0; a < p->dlo; a++)
            for (int q = 0; q < p->rc; q++)
                for (int b = 0; b < p->dli; b++) {
                    int c0 = outer[a] * tile_c + q * core_c + inner[b] * p->bc;
                    int c1 = c0 + p->bc < p->cols ? c0 + p->bc : p->cols;
                    if (c0 < c1) memset(row + c0, 1, (size_t)(c1 - c0));
                }
    }
}

static int index_bytes(int side) { return side <= 256 ? 1 : 2; }

int64_t nnz_rbgp_succinct_bytes(const nnz_rbgp *m) {
    const nnz_rbgp_plan *p = &m->plan;
    return 48 + (int64_t)p->mo * p->dlo * index_bytes(p->no) + (int64_t)p->mi * p->dli * index_bytes(p->ni);
}

void nnz_rbgp_free(nnz_rbgp *m) {
    if (!m) return;
    nnz_bigraph_free(&m->go);
    nnz_bigraph_free(&m->gi);
}
