/* RBGP weights (G_o (x) J_r (x) G_i (x) J_b): packing, the reference forward kernel, the
 * dispatch and the threading. Layout and contract in kernels.h ("RBGP weights"). */
#include "kernels/kernels.h"

#include <omp.h>
#include <string.h>

#define RB_PANEL 64                        /* rows of X per item: the transposed panel */
#define RB_PARALLEL_MIN ((int64_t)1 << 16) /* multiply-adds; below this one thread is faster */
#define RB_ITEMS_PER_THREAD 4
#define RB_MAX_PARTS 1024

static int64_t micro_rows(const nnz_rbgp_geom *g) { return (int64_t)g->mo * g->rr * g->mi; }
static int64_t blocks_per_row(const nnz_rbgp_geom *g) { return (int64_t)g->dlo * g->rc * g->dli; }

static nnz_status check_adj(const char *name, const int32_t *adj, int n, int deg, int side) {
    for (int i = 0; i < n; i++)
        for (int t = 0; t < deg; t++) {
            const int32_t v = adj[(int64_t)i * deg + t];
            if (v < 0 || v >= side || (t > 0 && v <= adj[(int64_t)i * deg + t - 1]))
                return nnz_fail(NNZ_ERR_INVALID_ARG,
                                "nnz_rbgp_mat_pack: %s row %d: neighbour %d is out of range 0..%d or not ascending; "
                                "pass the graph's sorted adjacency lists",
                                name, i, (int)v, side - 1);
        }
    return NNZ_OK;
}

static nnz_status check_geom(const nnz_rbgp_geom *g, const int32_t *go, const int32_t *gi) {
    const int v[] = {g->rows, g->cols, g->br, g->bc, g->mi, g->ni, g->dli, g->rr, g->rc, g->mo, g->no, g->dlo};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        if (v[i] < 1)
            return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_rbgp_mat_pack: every size and degree must be >= 1 (got %d)", v[i]);
    const int64_t pr = micro_rows(g) * g->br, pc = (int64_t)g->no * g->rc * g->ni * g->bc;
    if (pr < g->rows || pr >= (int64_t)g->rows + g->br || pc < g->cols || pc >= (int64_t)g->cols + g->bc)
        return nnz_fail(NNZ_ERR_INVALID_ARG,
                        "nnz_rbgp_mat_pack: the padded shape %lldx%lld does not cover %dx%d within one %dx%d "
                        "micro-block; use the plan's factors",
                        (long long)pr, (long long)pc, g->rows, g->cols, g->br, g->bc);
    if (g->dli > g->ni || g->dlo > g->no)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_rbgp_mat_pack: degree above the graph's side (dl_i %d of %d, dl_o %d of %d)",
                        g->dli, g->ni, g->dlo, g->no);
    if (micro_rows(g) * blocks_per_row(g) * g->br * g->bc > ((int64_t)1 << 40) || pc * 64 > INT32_MAX)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_rbgp_mat_pack: too many values or columns (%lld)", (long long)pc);
    if (!go || !gi) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_rbgp_mat_pack: the adjacency arrays are NULL");
    NNZ_TRY(check_adj("G_o", go, g->mo, g->dlo, g->no));
    return check_adj("G_i", gi, g->mi, g->dli, g->ni);
}

/* first column of block t of micro-row gr */
static inline int64_t block_col(const nnz_rbgp_mat *A, int64_t gr, int64_t t) {
    const nnz_rbgp_geom *g = &A->g;
    const int64_t R = gr / ((int64_t)g->rr * g->mi), ir = gr % g->mi;
    const int64_t b = t % g->dli, q = (t / g->dli) % g->rc, a = t / ((int64_t)g->dli * g->rc);
    return (int64_t)A->go[R * g->dlo + a] * g->rc * g->ni * g->bc + q * g->ni * g->bc +
           (int64_t)A->gi[ir * g->dli + b] * g->bc;
}

nnz_status nnz_rbgp_mat_pack(const nnz_rbgp_geom *g, const int32_t *go, const int32_t *gi, const float *W,
                             int64_t ldw, nnz_rbgp_mat *out) {
    if (!out) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_rbgp_mat_pack: out is NULL");
    memset(out, 0, sizeof *out);
    if (!g) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_rbgp_mat_pack: the geometry is NULL");
    NNZ_TRY(check_geom(g, go, gi));
    if (!W || ldw < g->cols)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_rbgp_mat_pack: W is NULL or ldw %lld < cols %d", (long long)ldw, g->cols);
    out->g = *g;
    const int64_t nb = blocks_per_row(g), bsz = (int64_t)g->br * g->bc, nval = micro_rows(g) * nb * bsz;
    out->go = nnz_alloc(sizeof(int32_t) * (size_t)g->mo * g->dlo, "RBGP outer graph");
    out->gi = nnz_alloc(sizeof(int32_t) * (size_t)g->mi * g->dli, "RBGP inner graph");
    out->val = nnz_alloc(sizeof(float) * (size_t)nval, "RBGP values");
    if (!out->go || !out->gi || !out->val) {
        nnz_rbgp_mat_free(out);
        return NNZ_ERR_NOMEM;
    }
    memcpy(out->go, go, sizeof(int32_t) * (size_t)g->mo * g->dlo);
    memcpy(out->gi, gi, sizeof(int32_t) * (size_t)g->mi * g->dli);
    for (int64_t gr = 0; gr < micro_rows(g); gr++)
        for (int64_t t = 0; t < nb; t++) {
            const int64_t c0 = block_col(out, gr, t);
            float *v = out->val + (gr * nb + t) * bsz;
            for (int kk = 0; kk < g->bc; kk++)
                for (int i = 0; i < g->br; i++) {
                    const int64_t r = gr * g->br + i, c = c0 + kk;
                    v[kk * g->br + i] = r < g->rows && c < g->cols ? W[r * ldw + c] : 0.0f;
                }
        }
    return NNZ_OK;
}

void nnz_rbgp_mat_to_dense(const nnz_rbgp_mat *A, float *W, int64_t ldw) {
    const nnz_rbgp_geom *g = &A->g;
    for (int r = 0; r < g->rows; r++) memset(W + (int64_t)r * ldw, 0, sizeof(float) * (size_t)g->cols);
    const int64_t nb = blocks_per_row(g), bsz = (int64_t)g->br * g->bc;
    for (int64_t gr = 0; gr < micro_rows(g); gr++)
        for (int64_t t = 0; t < nb; t++) {
            const int64_t c0 = block_col(A, gr, t);
            const float *v = A->val + (gr * nb + t) * bsz;
            for (int kk = 0; kk < g->bc; kk++)
                for (int i = 0; i < g->br; i++) {
                    const int64_t r = gr * g->br + i, c = c0 + kk;
                    if (r < g->rows && c < g->cols) W[r * ldw + c] = v[kk * g->br + i];
                }
        }
}

void nnz_rbgp_mat_free(nnz_rbgp_mat *A) {
    if (!A) return;
    nnz_free(A->go);
    nnz_free(A->gi);
    nnz_free(A->val);
    memset(A, 0, sizeof *A);
}

int64_t nnz_rbgp_mat_value_bytes(const nnz_rbgp_mat *A) {
    return micro_rows(&A->g) * blocks_per_row(&A->g) * A->g.br * A->g.bc * (int64_t)sizeof(float);
}

int64_t nnz_rbgp_mat_index_bytes(const nnz_rbgp_mat *A) {
    return (int64_t)sizeof(nnz_rbgp_geom) + 4 * ((int64_t)A->g.mo * A->g.dlo + (int64_t)A->g.mi * A->g.dli);
}

void nnz_spmm_rbgp_f32_ref(const nnz_rbgp_mat *A, int64_t M, const float *X, int64_t ldx, const float *bias,
                           bool accumulate, float *out, int64_t ldo) {
    const nnz_rbgp_geom *g = &A->g;
    const int64_t nb = blocks_per_row(g), bsz = (int64_t)g->br * g->bc;
    for (int64_t m = 0; m < M; m++)
        for (int r = 0; r < g->rows; r++) {
            const int64_t gr = r / g->br, i = r % g->br;
            float s = 0.0f;
            for (int64_t t = 0; t < nb; t++) {
                const int64_t c0 = block_col(A, gr, t);
                const float *v = A->val + (gr * nb + t) * bsz;
                for (int kk = 0; kk < g->bc; kk++)
                    if (c0 + kk < g->cols) s += v[kk * g->br + i] * X[m * ldx + c0 + kk];
            }
            const float base = (accumulate ? out[m * ldo + r] : 0.0f) + (bias ? bias[r] : 0.0f);
            out[m * ldo + r] = base + s;
        }
}

typedef void (*rbgp_panel_fn)(const nnz_rbgp_mat *, int64_t, int, int, int, const float *, int64_t, const float *,
                              bool, float *, int64_t, float *, float *, float *);

static rbgp_panel_fn simd_panel(void) {
#if defined(__x86_64__)
    const nnz_isa isa = nnz_isa_active();
    if (isa >= NNZ_ISA_AVX512) return nnz_spmm_rbgp_panel_f32_avx512;
    if (isa == NNZ_ISA_AVX2) return nnz_spmm_rbgp_panel_f32_avx2;
#endif
    return NULL;
}

nnz_status nnz_spmm_rbgp_f32(const nnz_rbgp_mat *A, int64_t M, const float *X, int64_t ldx, const float *bias,
                             bool accumulate, float *out, int64_t ldo) {
    const rbgp_panel_fn panel = simd_panel();
    if (!panel) {
        nnz_spmm_rbgp_f32_ref(A, M, X, ldx, bias, accumulate, out, ldo);
        return NNZ_OK;
    }
    const nnz_rbgp_geom *g = &A->g;
    if (M <= 0 || g->rows <= 0) return NNZ_OK;
    const int64_t mitems = (M + RB_PANEL - 1) / RB_PANEL;
    const int64_t work = micro_rows(g) * blocks_per_row(g) * g->br * g->bc * M;
    const int threads = work >= RB_PARALLEL_MIN ? nnz_threads() : 1;
    int64_t want = threads == 1 ? 1 : ((int64_t)threads * RB_ITEMS_PER_THREAD + mitems - 1) / mitems;
    if (want > g->mo) want = g->mo;
    if (want > RB_MAX_PARTS) want = RB_MAX_PARTS;
    const int nparts = want < 1 ? 1 : (int)want; /* G_o is row-regular: equal tile counts are equal work */
    const int64_t items = mitems * nparts;
    size_t xt_floats = (size_t)g->no * g->rc * g->ni * g->bc * RB_PANEL; /* the panel, or (br = 16) X's rows */
    if ((size_t)nnz_spmm_tile_scratch_ld(g->cols) * RB_PANEL > xt_floats)
        xt_floats = (size_t)nnz_spmm_tile_scratch_ld(g->cols) * RB_PANEL;
    const size_t ot_floats = ((size_t)g->mo * g->rr * g->mi * g->br + RB_PANEL) * RB_PANEL; /* a part's rows */
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
        const size_t offs_ints = (size_t)g->mi * blocks_per_row(g); /* after tt: a row tile's column offsets */
        float *xt = nnz_alloc((xt_floats + ot_floats + RB_PANEL * RB_PANEL + offs_ints + 48) * sizeof(float),
                              "rbgp spmm scratch");
        if (nnz_omp_all_ok(xt != NULL, &failed)) {
            float *ot = xt + xt_floats + 16, *tt = ot + ot_floats + 16;
#pragma omp for schedule(dynamic, 1)
            for (int64_t it = 0; it < items; it++) {
                const int64_t mi = it / nparts;
                const int p = (int)(it % nparts);
                const int64_t m0 = mi * RB_PANEL;
                const int mrows = (int)(M - m0 < RB_PANEL ? M - m0 : RB_PANEL);
                const int R0 = (int)((int64_t)g->mo * p / nparts), R1 = (int)((int64_t)g->mo * (p + 1) / nparts);
                panel(A, m0, mrows, R0, R1, X, ldx, bias, accumulate, out, ldo, xt, ot, tt);
            }
        }
        nnz_free(xt);
    }
    return failed ? NNZ_ERR_NOMEM : NNZ_OK;
}
