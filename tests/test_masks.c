/* Masks (src/sparse): the symmetric eigen solver against closed forms and a Jacobi oracle;
 * Ramanujan bipartite graphs (biregularity, simple edges, determinism, the spectral bound);
 * RBGP (the Kronecker product of dense factors = the expansion = the succinct form queried per
 * element, the density formula, row/column degrees); HBsNN and the baselines (exact counts,
 * magnitude order, tie rule, level structure, determinism); nnz_mask_make's info and PGM. */
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nn.h"
#include "sparse/sparse.h"

/* ---- eigen solver ---- */

/* Cyclic Jacobi on a copy: the oracle (slow, simple, independent of Householder/QL). */
static void jacobi_eigs(int n, const double *a0, double *w) {
    double *a = malloc((size_t)n * n * sizeof(double));
    memcpy(a, a0, (size_t)n * n * sizeof(double));
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0.0;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++) off += a[p * n + q] * a[p * n + q];
        if (off < 1e-26) break;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++) {
                double apq = a[p * n + q];
                if (fabs(apq) < 1e-300) continue;
                double theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
                double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
                for (int k = 0; k < n; k++) { /* columns p, q */
                    double akp = a[k * n + p], akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for (int k = 0; k < n; k++) { /* rows p, q */
                    double apk = a[p * n + k], aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
            }
    }
    for (int i = 0; i < n; i++) w[i] = a[i * n + i];
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (w[j] < w[i]) {
                double t = w[i];
                w[i] = w[j], w[j] = t;
            }
    free(a);
}

static void test_eigen_closed_forms(void **state) {
    (void)state;
    /* the path Laplacian-like tridiagonal (2, -1): 2 - 2 cos(k pi / (n+1)) */
    for (int n = 1; n <= 64; n += 9) {
        double *a = calloc((size_t)n * n, sizeof(double)), *w = malloc(n * sizeof(double));
        for (int i = 0; i < n; i++) {
            a[i * n + i] = 2.0;
            if (i + 1 < n) a[i * n + i + 1] = a[(i + 1) * n + i] = -1.0;
        }
        assert_int_equal(nnz_sym_eigenvalues(n, a, w), NNZ_OK);
        for (int k = 1; k <= n; k++) {
            double want = 2.0 - 2.0 * cos(k * M_PI / (n + 1));
            if (fabs(w[k - 1] - want) > 1e-12) fail_msg("tridiagonal n=%d: eig %d = %.15g, want %.15g", n, k, w[k - 1], want);
        }
        free(a), free(w);
    }
    /* a diagonal matrix in scrambled order, and the all-ones matrix (n, 0, ..., 0) */
    double d[5 * 5] = {0}, w[5];
    const double diag[5] = {3, -1, 7, 0, 2};
    for (int i = 0; i < 5; i++) d[i * 5 + i] = diag[i];
    assert_int_equal(nnz_sym_eigenvalues(5, d, w), NNZ_OK);
    const double sorted[5] = {-1, 0, 2, 3, 7};
    for (int i = 0; i < 5; i++) assert_true(fabs(w[i] - sorted[i]) < 1e-14);
    for (int i = 0; i < 25; i++) d[i] = 1.0;
    assert_int_equal(nnz_sym_eigenvalues(5, d, w), NNZ_OK);
    assert_true(fabs(w[4] - 5.0) < 1e-13);
    for (int i = 0; i < 4; i++) assert_true(fabs(w[i]) < 1e-13);
    /* not finite: an error, not garbage */
    d[7] = NAN;
    assert_int_equal(nnz_sym_eigenvalues(5, d, w), NNZ_ERR_NUMERIC);
}

static void test_eigen_vs_jacobi(void **state) {
    (void)state;
    const int sizes[] = {2, 3, 17, 60};
    for (int si = 0; si < 4; si++) {
        const int n = sizes[si];
        double *a = malloc((size_t)n * n * sizeof(double)), *w = malloc(n * sizeof(double)), *o = malloc(n * sizeof(double));
        nnz_rng r = nnz_rng_make(7, (uint64_t)n);
        for (int i = 0; i < n; i++)
            for (int j = 0; j <= i; j++) a[i * n + j] = a[j * n + i] = nnz_rng_normal(&r);
        if (n == 60) /* a repeated eigenvalue: a block of equal rows */
            for (int i = 0; i < 10; i++)
                for (int j = 0; j < 10; j++) a[i * n + j] = 1.0;
        assert_int_equal(nnz_sym_eigenvalues(n, a, w), NNZ_OK);
        jacobi_eigs(n, a, o);
        for (int i = 0; i < n; i++)
            if (fabs(w[i] - o[i]) > 1e-10 * (1.0 + fabs(o[i])))
                fail_msg("random symmetric n=%d: eig %d = %.15g, Jacobi %.15g", n, i, w[i], o[i]);
        free(a), free(w), free(o);
    }
}

/* ---- bipartite graphs ---- */

/* Graph from a dense 0/1 matrix whose rows all hold dl ones (test-side construction). */
static nnz_bigraph graph_from_dense(const uint8_t *b, int rows, int cols, int dl) {
    nnz_bigraph g = {.rows = rows, .cols = cols, .dl = dl, .dr_min = rows, .dr_max = 0};
    g.adj = nnz_alloc((size_t)rows * dl * sizeof(int32_t), "test graph");
    for (int i = 0; i < rows; i++) {
        int k = 0;
        for (int j = 0; j < cols; j++)
            if (b[i * cols + j]) g.adj[i * dl + k++] = j;
        assert_int_equal(k, dl);
    }
    for (int j = 0; j < cols; j++) {
        int c = 0;
        for (int i = 0; i < rows; i++) c += b[i * cols + j];
        if (c < g.dr_min) g.dr_min = c;
        if (c > g.dr_max) g.dr_max = c;
    }
    return g;
}

static void test_spectrum_known_graphs(void **state) {
    (void)state;
    /* complete bipartite K(m, n): sigma1 = sqrt(mn), every other singular value 0 */
    {
        uint8_t b[6 * 9];
        memset(b, 1, sizeof b);
        nnz_bigraph g = graph_from_dense(b, 6, 9, 9);
        nnz_bigraph_spectrum s;
        assert_int_equal(nnz_bigraph_spectrum_of(&g, &s), NNZ_OK);
        assert_true(fabs(s.sigma1 - sqrt(54.0)) < 1e-12);
        assert_true(s.sigma2 < 1e-6);
        assert_true(fabs(s.bound - (sqrt(8.0) + sqrt(5.0))) < 1e-12);
        assert_true(s.ramanujan);
        nnz_bigraph_free(&g);
    }
    /* the cycle C_2n as a bipartite graph, B = I + shift: singular values 2|cos(pi j / n)| */
    for (int n = 3; n <= 40; n += 37) {
        uint8_t *b = calloc((size_t)n * n, 1);
        for (int i = 0; i < n; i++) b[i * n + i] = b[i * n + (i + 1) % n] = 1;
        nnz_bigraph g = graph_from_dense(b, n, n, 2);
        nnz_bigraph_spectrum s;
        assert_int_equal(nnz_bigraph_spectrum_of(&g, &s), NNZ_OK);
        assert_true(fabs(s.sigma1 - 2.0) < 1e-12);
        double want = 2.0 * cos(M_PI / n); /* |1 + e^(2 pi i / n)| */
        if (fabs(s.sigma2 - want) > 1e-9) fail_msg("cycle n=%d: sigma2 %.12g, want %.12g", n, s.sigma2, want);
        assert_true(s.ramanujan); /* 2cos(pi/n) <= 2 = 1 + 1 */
        /* the transpose (B^T B side) gives the same */
        uint8_t *bt = calloc((size_t)n * n, 1);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) bt[j * n + i] = b[i * n + j];
        nnz_bigraph gt = graph_from_dense(bt, n, n, 2);
        nnz_bigraph_spectrum st;
        assert_int_equal(nnz_bigraph_spectrum_of(&gt, &st), NNZ_OK);
        assert_true(fabs(st.sigma2 - s.sigma2) < 1e-9);
        nnz_bigraph_free(&g), nnz_bigraph_free(&gt);
        free(b), free(bt);
    }
    /* a perfect matching (dl = dr = 1): disconnected, sigma2 = 1 > bound 0 */
    {
        uint8_t b[16] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
        nnz_bigraph g = graph_from_dense(b, 4, 4, 1);
        nnz_bigraph_spectrum s;
        assert_int_equal(nnz_bigraph_spectrum_of(&g, &s), NNZ_OK);
        assert_true(fabs(s.sigma2 - 1.0) < 1e-12);
        assert_false(s.ramanujan);
        nnz_bigraph_free(&g);
    }
}

/* Checks the graph's invariants against a dense recount: row degree dl, ascending (so simple)
 * rows, right degrees as recorded and within one of each other (equal when biregular). */
static void check_graph(const nnz_bigraph *g, int rows, int cols, int dl) {
    assert_int_equal(g->rows, rows);
    assert_int_equal(g->cols, cols);
    assert_int_equal(g->dl, dl);
    int *deg = calloc((size_t)cols, sizeof(int));
    for (int i = 0; i < rows; i++)
        for (int t = 0; t < dl; t++) {
            int j = g->adj[i * dl + t];
            assert_true(j >= 0 && j < cols);
            if (t) assert_true(j > g->adj[i * dl + t - 1]);
            deg[j]++;
        }
    int lo = deg[0], hi = deg[0];
    for (int j = 1; j < cols; j++) lo = deg[j] < lo ? deg[j] : lo, hi = deg[j] > hi ? deg[j] : hi;
    assert_int_equal(lo, g->dr_min);
    assert_int_equal(hi, g->dr_max);
    if ((int64_t)rows * dl % cols == 0) {
        if (lo != hi) fail_msg("%dx%d dl=%d should be biregular: right degrees %d..%d", rows, cols, dl, lo, hi);
        assert_int_equal(lo, (int)((int64_t)rows * dl / cols));
    } else {
        assert_int_equal(hi - lo, 1);
    }
    free(deg);
}

static void test_graphs_regular_and_deterministic(void **state) {
    (void)state;
    const struct { int rows, cols, dl; nnz_bigraph_method m; } cases[] = {
        {32, 64, 16, NNZ_BIGRAPH_LIFT},  {8, 8, 4, NNZ_BIGRAPH_LIFT},     {24, 32, 4, NNZ_BIGRAPH_LIFT},
        {48, 48, 6, NNZ_BIGRAPH_SWITCH}, {100, 150, 30, NNZ_BIGRAPH_SWITCH}, {10, 7, 3, NNZ_BIGRAPH_SWITCH},
        {16, 16, 12, NNZ_BIGRAPH_SWITCH}, {5, 1, 1, NNZ_BIGRAPH_SWITCH},  {1, 9, 9, NNZ_BIGRAPH_SWITCH},
        {64, 128, 32, NNZ_BIGRAPH_AUTO},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        nnz_rng r1 = nnz_rng_make(5, 0), r2 = nnz_rng_make(5, 0), r3 = nnz_rng_make(6, 0);
        nnz_bigraph a, b, c;
        assert_int_equal(nnz_bigraph_random(cases[k].rows, cases[k].cols, cases[k].dl, cases[k].m, &r1, &a), NNZ_OK);
        assert_int_equal(nnz_bigraph_random(cases[k].rows, cases[k].cols, cases[k].dl, cases[k].m, &r2, &b), NNZ_OK);
        assert_int_equal(nnz_bigraph_random(cases[k].rows, cases[k].cols, cases[k].dl, cases[k].m, &r3, &c), NNZ_OK);
        check_graph(&a, cases[k].rows, cases[k].cols, cases[k].dl);
        check_graph(&c, cases[k].rows, cases[k].cols, cases[k].dl);
        const size_t e = (size_t)cases[k].rows * cases[k].dl;
        assert_memory_equal(a.adj, b.adj, e * sizeof(int32_t)); /* same seed, same graph */
        if (cases[k].rows >= 8 && cases[k].dl < cases[k].cols && cases[k].cols > 1) /* another seed, another graph */
            assert_memory_not_equal(a.adj, c.adj, e * sizeof(int32_t));
        nnz_bigraph_free(&a), nnz_bigraph_free(&b), nnz_bigraph_free(&c);
    }
    /* bad arguments */
    nnz_rng r = nnz_rng_make(1, 0);
    nnz_bigraph g;
    assert_int_equal(nnz_bigraph_random(8, 8, 0, NNZ_BIGRAPH_AUTO, &r, &g), NNZ_ERR_INVALID_ARG);
    assert_int_equal(nnz_bigraph_random(8, 8, 9, NNZ_BIGRAPH_AUTO, &r, &g), NNZ_ERR_INVALID_ARG);
    assert_int_equal(nnz_bigraph_random(0, 8, 1, NNZ_BIGRAPH_AUTO, &r, &g), NNZ_ERR_INVALID_ARG);
    assert_int_equal(nnz_bigraph_random(12, 8, 3, NNZ_BIGRAPH_LIFT, &r, &g), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "2-lifts"));
    assert_true(nnz_bigraph_liftable(24, 32, 4) && !nnz_bigraph_liftable(24, 32, 3) && !nnz_bigraph_liftable(20, 24, 4));
}

static void test_ramanujan_bound(void **state) {
    (void)state;
    const struct { int rows, cols, dl; nnz_bigraph_method m; } cases[] = {
        {16, 16, 8, NNZ_BIGRAPH_LIFT},   {32, 64, 16, NNZ_BIGRAPH_LIFT}, {64, 64, 16, NNZ_BIGRAPH_LIFT},
        {32, 32, 4, NNZ_BIGRAPH_LIFT},   {48, 48, 6, NNZ_BIGRAPH_SWITCH}, {60, 90, 30, NNZ_BIGRAPH_SWITCH},
        {100, 150, 30, NNZ_BIGRAPH_SWITCH}, {64, 64, 56, NNZ_BIGRAPH_SWITCH}, {200, 100, 10, NNZ_BIGRAPH_SWITCH},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        nnz_bigraph g;
        nnz_bigraph_spectrum s, again;
        int tries = 0;
        assert_int_equal(nnz_ramanujan_make(cases[k].rows, cases[k].cols, cases[k].dl, cases[k].m, 42, 16, &g, &s, &tries),
                         NNZ_OK);
        check_graph(&g, cases[k].rows, cases[k].cols, cases[k].dl);
        assert_int_equal(nnz_bigraph_spectrum_of(&g, &again), NNZ_OK);
        assert_true(again.sigma2 == s.sigma2 && again.bound == s.bound);
        const double dr = (double)cases[k].rows * cases[k].dl / cases[k].cols;
        assert_true(fabs(s.sigma1 - sqrt(cases[k].dl * dr)) < 1e-9); /* biregular: sqrt(dl*dr) */
        if (!s.ramanujan || !(s.sigma2 <= s.bound))
            fail_msg("%dx%d dl=%d (%s): sigma2 %.4f > bound %.4f after %d tries", cases[k].rows, cases[k].cols,
                     cases[k].dl, nnz_bigraph_method_name(cases[k].m), s.sigma2, s.bound, tries);
        print_message("  %4dx%-4d dl=%-3d %-6s sigma1 %7.3f sigma2 %7.3f bound %7.3f gap %6.3f tries %d\n", cases[k].rows,
                      cases[k].cols, cases[k].dl, nnz_bigraph_method_name(cases[k].m), s.sigma1, s.sigma2, s.bound,
                      s.bound - s.sigma2, tries);
        nnz_bigraph_free(&g);
    }
    /* a matching cannot meet the bound: every try is drawn, the best is kept, no error */
    nnz_bigraph g;
    nnz_bigraph_spectrum s;
    int tries = 0;
    assert_int_equal(nnz_ramanujan_make(8, 8, 1, NNZ_BIGRAPH_AUTO, 1, 3, &g, &s, &tries), NNZ_OK);
    assert_int_equal(tries, 3);
    assert_false(s.ramanujan);
    nnz_bigraph_free(&g);
}

/* ---- RBGP ---- */

/* C (ar*br x ac*bc) = A (x) B for dense 0/1 matrices. */
static uint8_t *kron(const uint8_t *A, int ar, int ac, const uint8_t *B, int br, int bc) {
    uint8_t *C = malloc((size_t)ar * br * ac * bc);
    const int cc = ac * bc;
    for (int i = 0; i < ar; i++)
        for (int j = 0; j < ac; j++)
            for (int k = 0; k < br; k++)
                for (int l = 0; l < bc; l++) C[(size_t)(i * br + k) * cc + j * bc + l] = A[i * ac + j] & B[k * bc + l];
    return C;
}

static uint8_t *ones(int r, int c) {
    uint8_t *o = malloc((size_t)r * c);
    memset(o, 1, (size_t)r * c);
    return o;
}

/* The expansion, the per-element query and the Kronecker product of the dense factors agree;
 * returns the plan for further checks. */
static nnz_rbgp rbgp_checked(int rows, int cols, const nnz_mask_spec *spec, uint64_t seed) {
    nnz_rbgp_plan plan;
    nnz_rbgp m;
    assert_int_equal(nnz_rbgp_plan_make(rows, cols, spec, &plan), NNZ_OK);
    assert_int_equal(nnz_rbgp_make(&plan, seed, 8, &m), NNZ_OK);
    const nnz_rbgp_plan *p = &m.plan;
    assert_int_equal(p->mo * p->rr * p->mi * p->br, p->pad_rows);
    assert_int_equal(p->no * p->rc * p->ni * p->bc, p->pad_cols);
    assert_true(p->pad_rows >= rows && p->pad_rows < rows + p->br);
    assert_true(p->pad_cols >= cols && p->pad_cols < cols + p->bc);
    assert_true(fabs(p->density - (double)p->dlo / p->no * p->dli / p->ni) < 1e-15);
    uint8_t *go = malloc((size_t)p->mo * p->no), *gi = malloc((size_t)p->mi * p->ni);
    nnz_bigraph_to_dense(&m.go, go);
    nnz_bigraph_to_dense(&m.gi, gi);
    uint8_t *jr = ones(p->rr, p->rc), *jb = ones(p->br, p->bc);
    uint8_t *t1 = kron(go, p->mo, p->no, jr, p->rr, p->rc);
    uint8_t *t2 = kron(t1, p->mo * p->rr, p->no * p->rc, gi, p->mi, p->ni);
    uint8_t *full = kron(t2, p->mo * p->rr * p->mi, p->no * p->rc * p->ni, jb, p->br, p->bc);
    uint8_t *mask = malloc((size_t)rows * cols);
    nnz_rbgp_expand(&m, mask);
    int64_t kept_pad = 0;
    for (int64_t i = 0; i < (int64_t)p->pad_rows * p->pad_cols; i++) kept_pad += full[i];
    assert_true(fabs((double)kept_pad / ((double)p->pad_rows * p->pad_cols) - p->density) < 1e-12);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            uint8_t want = full[(size_t)r * p->pad_cols + c];
            if (mask[(size_t)r * cols + c] != want || nnz_rbgp_get(&m, r, c) != (bool)want)
                fail_msg("rbgp %dx%d: (%d,%d) expand %d get %d kron %d", rows, cols, r, c, mask[(size_t)r * cols + c],
                         nnz_rbgp_get(&m, r, c), want);
        }
    free(go), free(gi), free(jr), free(jb), free(t1), free(t2), free(full), free(mask);
    return m;
}

static void test_rbgp_kronecker_and_degrees(void **state) {
    (void)state;
    /* a conv 3x3 128->128 (K = 1152) at 87.5%, 4x4 micro-blocks: divides, so exact and
     * regular: every row keeps dlo*rc*dli*bc, every column dro*rr*dri*br */
    nnz_mask_spec spec = {.kind = NNZ_MASK_RBGP, .sparsity = 0.875f};
    const int R = 128, C = 1152;
    nnz_rbgp m = rbgp_checked(R, C, &spec, 3);
    const nnz_rbgp_plan *p = &m.plan;
    assert_true(fabs(p->density - 0.125) < 1e-12);
    assert_int_equal(p->br, 4);
    uint8_t *mask = malloc(R * C);
    nnz_rbgp_expand(&m, mask);
    const int row_deg = p->dlo * p->rc * p->dli * p->bc;
    for (int r = 0; r < R; r++) assert_int_equal(nnz_mask_count(mask + r * C, C), row_deg);
    assert_true(m.go.dr_min == m.go.dr_max && m.gi.dr_min == m.gi.dr_max);
    const int col_deg = m.go.dr_max * p->rr * m.gi.dr_max * p->br;
    for (int c = 0; c < C; c++) {
        int k = 0;
        for (int r = 0; r < R; r++) k += mask[r * C + c];
        assert_int_equal(k, col_deg);
    }
    free(mask);
    nnz_rbgp_free(&m);
    /* 64x576 at 87.5% factors only into near-biregular graphs: rows stay exact, columns
     * within the product of the factors' right-degree ranges */
    m = rbgp_checked(64, 576, &spec, 3);
    p = &m.plan;
    mask = malloc(64 * 576);
    nnz_rbgp_expand(&m, mask);
    for (int r = 0; r < 64; r++) assert_int_equal(nnz_mask_count(mask + r * 576, 576), p->dlo * p->rc * p->dli * p->bc);
    for (int c = 0; c < 576; c++) {
        int k = 0;
        for (int r = 0; r < 64; r++) k += mask[r * 576 + c];
        assert_true(k >= m.go.dr_min * p->rr * m.gi.dr_min * p->br && k <= m.go.dr_max * p->rr * m.gi.dr_max * p->br);
    }
    free(mask);
    nnz_rbgp_free(&m);

    /* fixed core and repeat, 16x16 micro-blocks, inner sparsity asked for */
    nnz_mask_spec s2 = {.kind = NNZ_MASK_RBGP, .sparsity = 0.75f, .block_rows = 16, .block_cols = 16, .core_rows = 64,
                        .core_cols = 64, .repeat_rows = 2, .repeat_cols = 1, .inner_sparsity = 0.5f};
    m = rbgp_checked(256, 512, &s2, 9);
    assert_int_equal(m.plan.mi, 4);
    assert_int_equal(m.plan.ni, 4);
    assert_int_equal(m.plan.rr, 2);
    assert_int_equal(m.plan.rc, 1);
    assert_int_equal(m.plan.dli, 2);
    assert_true(fabs(m.plan.density - 0.25) < 1e-12);
    nnz_rbgp_free(&m);

    /* shapes that do not divide the micro-block, or factor badly: the query still agrees */
    const int shapes[][2] = {{10, 75}, {13, 97}, {1, 32}, {37, 9}, {128, 784}};
    for (int k = 0; k < 5; k++) {
        nnz_mask_spec s3 = {.kind = NNZ_MASK_RBGP, .sparsity = 0.9f};
        m = rbgp_checked(shapes[k][0], shapes[k][1], &s3, (uint64_t)k);
        nnz_rbgp_free(&m);
    }
    /* sparsity 0: dense */
    nnz_mask_spec s4 = {.kind = NNZ_MASK_RBGP, .sparsity = 0.0f};
    m = rbgp_checked(32, 32, &s4, 1);
    assert_true(m.plan.density == 1.0);
    nnz_rbgp_free(&m);
}

static void test_rbgp_planner(void **state) {
    (void)state;
    /* nice shapes reach the asked density exactly, with both graphs biregular */
    const float sp[] = {0.5f, 0.75f, 0.875f, 0.9375f};
    const int shapes[][2] = {{64, 576}, {128, 1152}, {32, 288}, {256, 256}};
    for (int k = 0; k < 4; k++)
        for (int s = 0; s < 4; s++) {
            nnz_mask_spec spec = {.kind = NNZ_MASK_RBGP, .sparsity = sp[s]};
            nnz_rbgp_plan p;
            assert_int_equal(nnz_rbgp_plan_make(shapes[k][0], shapes[k][1], &spec, &p), NNZ_OK);
            /* a micro-block row must be able to keep a whole number of micro-blocks (32x288 at
             * 93.75% would need 4.5 of its 72: it gets the closest, 4) */
            const double per_row = shapes[k][1] / 4 * (1.0 - sp[s]);
            if (per_row != floor(per_row)) {
                assert_true(fabs(p.density - (1.0 - sp[s])) / (1.0 - sp[s]) < 0.12);
                continue;
            }
            if (fabs(p.density - (1.0 - sp[s])) > 1e-12)
                fail_msg("%dx%d at %g: planned density %g", shapes[k][0], shapes[k][1], sp[s], p.density);
            if (k == 3 || (k == 1 && s < 3)) { /* these factor into biregular graphs */
                assert_int_equal((int64_t)p.mo * p.dlo % p.no, 0);
                assert_int_equal((int64_t)p.mi * p.dli % p.ni, 0);
            }
            assert_true((int64_t)p.mo * p.dlo >= p.no && (int64_t)p.mi * p.dli >= p.ni); /* no unused input tile */
        }
    /* an awkward density gets the closest achievable one, reported */
    nnz_mask_spec spec = {.kind = NNZ_MASK_RBGP, .sparsity = 0.9f};
    nnz_rbgp_plan p;
    assert_int_equal(nnz_rbgp_plan_make(64, 576, &spec, &p), NNZ_OK);
    assert_true(fabs(p.density - 0.1) < 0.01);
    assert_true(fabs(p.target - 0.1) < 1e-6);
    /* errors name the problem */
    spec.sparsity = 1.0f;
    assert_int_equal(nnz_rbgp_plan_make(64, 576, &spec, &p), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "sparsity"));
    spec.sparsity = 0.5f;
    assert_int_equal(nnz_rbgp_plan_make(0, 576, &spec, &p), NNZ_ERR_INVALID_ARG);
    spec.core_rows = 6; /* not a multiple of the 4-row micro-block */
    assert_int_equal(nnz_rbgp_plan_make(64, 576, &spec, &p), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "core"));
    spec.core_rows = 0, spec.block_rows = 16;
    assert_int_equal(nnz_rbgp_plan_make(8, 576, &spec, &p), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "micro-block"));
}

/* ---- HBsNN and baselines ---- */

static void test_unstructured_exact_and_ordered(void **state) {
    (void)state;
    const int R = 37, C = 53;
    float *w = malloc(R * C * sizeof(float));
    uint8_t *m = malloc(R * C), *m2 = malloc(R * C);
    tu_fill_uniform(w, R * C, -1, 1, 11);
    const int L = 1, one = 1;
    const double d = 0.1;
    assert_int_equal(nnz_hbsnn_mask(R, C, L, &one, &one, &d, w, 0, m), NNZ_OK);
    assert_int_equal(nnz_mask_count(m, R * C), llround(0.1 * R * C));
    float min_kept = INFINITY, max_pruned = 0;
    for (int i = 0; i < R * C; i++) {
        if (m[i]) min_kept = fminf(min_kept, fabsf(w[i]));
        else max_pruned = fmaxf(max_pruned, fabsf(w[i]));
    }
    assert_true(min_kept >= max_pruned);
    /* ties: all equal magnitudes keep the lowest indices */
    for (int i = 0; i < R * C; i++) w[i] = (i % 2) ? 0.5f : -0.5f;
    assert_int_equal(nnz_hbsnn_mask(R, C, L, &one, &one, &d, w, 0, m), NNZ_OK);
    const int64_t k = llround(0.1 * R * C);
    for (int i = 0; i < R * C; i++) assert_int_equal(m[i], i < k);
    /* random: exact count, same seed same mask, another seed another */
    assert_int_equal(nnz_hbsnn_mask(R, C, L, &one, &one, &d, NULL, 5, m), NNZ_OK);
    assert_int_equal(nnz_hbsnn_mask(R, C, L, &one, &one, &d, NULL, 5, m2), NNZ_OK);
    assert_memory_equal(m, m2, R * C);
    assert_int_equal(nnz_mask_count(m, R * C), k);
    assert_int_equal(nnz_hbsnn_mask(R, C, L, &one, &one, &d, NULL, 6, m2), NNZ_OK);
    assert_memory_not_equal(m, m2, R * C);
    /* NaN weight */
    w[100] = NAN;
    assert_int_equal(nnz_hbsnn_mask(R, C, L, &one, &one, &d, w, 0, m), NNZ_ERR_NUMERIC);
    free(w), free(m), free(m2);
}

/* Every br x bc block of mask is all kept or all pruned. */
static bool blocks_whole(const uint8_t *m, int R, int C, int br, int bc) {
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++)
            if (m[r * C + c] != m[(r / br * br) * C + c / bc * bc]) return false;
    return true;
}

static void test_hbsnn_levels(void **state) {
    (void)state;
    const int R = 64, C = 128;
    float *w = malloc(R * C * sizeof(float));
    uint8_t *m = malloc(R * C), *m2 = malloc(R * C);
    tu_fill_uniform(w, R * C, -1, 1, 12);
    for (int i = 0; i < 16; i++) /* make 16x16 block (1, 2) the heaviest */
        for (int j = 0; j < 16; j++) w[(16 + i) * C + 32 + j] = 5.0f;
    const int lr[2] = {16, 4}, lc[2] = {16, 4};
    const double d[2] = {0.25, 0.1};
    for (int pass = 0; pass < 2; pass++) {
        const float *wt = pass ? NULL : w;
        assert_int_equal(nnz_hbsnn_mask(R, C, 2, lr, lc, d, wt, 77, m), NNZ_OK);
        assert_true(blocks_whole(m, R, C, 4, 4));
        /* level 1 kept exactly round(0.1 * 512) 4x4 blocks */
        assert_int_equal(nnz_mask_count(m, R * C), llround(0.1 * (R / 4) * (C / 4)) * 16);
        /* every 16x16 block holding a kept element is one of round(0.25 * 32) = 8 */
        int parents = 0;
        for (int bi = 0; bi < R / 16; bi++)
            for (int bj = 0; bj < C / 16; bj++) {
                int any = 0;
                for (int i = 0; i < 16; i++) any |= (int)nnz_mask_count(m + (bi * 16 + i) * C + bj * 16, 16) > 0;
                parents += any;
            }
        assert_true(parents <= 8);
        if (!pass) assert_int_equal(nnz_mask_count(m + 16 * C + 32, 16), 16); /* the heavy block survives whole */
        assert_int_equal(nnz_hbsnn_mask(R, C, 2, lr, lc, d, wt, 77, m2), NNZ_OK);
        assert_memory_equal(m, m2, R * C);
    }
    /* magnitude level 0: the kept 16x16 blocks are the 8 heaviest */
    const double d1[1] = {0.25};
    assert_int_equal(nnz_hbsnn_mask(R, C, 1, lr, lc, d1, w, 0, m), NNZ_OK);
    double l1[32];
    for (int b = 0; b < 32; b++) {
        l1[b] = 0;
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < 16; j++) l1[b] += fabsf(w[(b / 8 * 16 + i) * C + b % 8 * 16 + j]);
    }
    double min_kept = INFINITY, max_pruned = 0;
    for (int b = 0; b < 32; b++) {
        bool kept = m[(b / 8 * 16) * C + b % 8 * 16];
        if (kept) min_kept = fmin(min_kept, l1[b]);
        else max_pruned = fmax(max_pruned, l1[b]);
    }
    assert_true(min_kept >= max_pruned);
    /* edge blocks: a shape the blocks do not divide still gives whole (clipped) blocks */
    assert_int_equal(nnz_hbsnn_mask(50, 70, 2, lr, lc, d, NULL, 3, m), NNZ_OK);
    assert_true(blocks_whole(m, 50, 70, 4, 4));
    /* errors */
    const int bad_r[2] = {16, 5};
    assert_int_equal(nnz_hbsnn_mask(R, C, 2, bad_r, lc, d, w, 0, m), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "divide"));
    const double bad_d[2] = {0.1, 0.25};
    assert_int_equal(nnz_hbsnn_mask(R, C, 2, lr, lc, bad_d, w, 0, m), NNZ_ERR_INVALID_ARG);
    const double zero_d[2] = {0.25, 0.0};
    assert_int_equal(nnz_hbsnn_mask(R, C, 2, lr, lc, zero_d, w, 0, m), NNZ_ERR_INVALID_ARG);
    free(w), free(m), free(m2);
}

/* ---- the public entry point ---- */

static void test_mask_make_info_and_pgm(void **state) {
    (void)state;
    const int R = 64, C = 576;
    uint8_t *m = malloc(R * C);
    float *w = malloc(R * C * sizeof(float));
    tu_fill_uniform(w, R * C, -1, 1, 13);
    nnz_mask_info info;
    const nnz_mask_kind kinds[] = {NNZ_MASK_DENSE, NNZ_MASK_UNSTRUCTURED, NNZ_MASK_BLOCK, NNZ_MASK_HBSNN, NNZ_MASK_RBGP};
    for (int k = 0; k < 5; k++) {
        nnz_mask_spec spec = {.kind = kinds[k], .sparsity = kinds[k] == NNZ_MASK_DENSE ? 0.0f : 0.875f};
        assert_int_equal(nnz_mask_make(&spec, R, C, kinds[k] == NNZ_MASK_RBGP ? NULL : w, 1, m, &info), NNZ_OK);
        assert_int_equal(info.kept, nnz_mask_count(m, R * C));
        assert_int_equal(info.bytes_csr, (R + 1) * 4 + info.kept * 4);
        int64_t nb;
        assert_int_equal(info.bytes_bsr, nnz_mask_bsr_bytes(m, R, C, info.block_rows, info.block_cols, &nb));
        assert_int_equal(info.nblocks, nb);
        nnz_mask_info mi; /* nnz_mask_measure of the same mask agrees with nnz_mask_make's info */
        assert_int_equal(nnz_mask_measure(m, R, C, info.block_rows, info.block_cols, &mi), NNZ_OK);
        assert_int_equal(mi.kept, info.kept);
        assert_int_equal(mi.nblocks, info.nblocks);
        assert_int_equal(mi.bytes_bsr, info.bytes_bsr);
        assert_int_equal(mi.bytes_csr, info.bytes_csr);
        assert_int_equal(mi.bytes_bitmap, (R * C + 7) / 8);
        assert_true(mi.density == info.density && mi.bytes_succinct == 0);
        if (kinds[k] != NNZ_MASK_DENSE) assert_true(fabs(info.density - 0.125) < 1e-12);
        else assert_int_equal(info.kept, R * C);
        if (kinds[k] == NNZ_MASK_RBGP) {
            assert_true(info.bytes_succinct > 0 && info.bytes_succinct < info.bytes_bsr);
            assert_true(info.outer.dr_max - info.outer.dr_min <= 1 && info.inner.dr_max - info.inner.dr_min <= 1);
            assert_true(info.outer.dr_min >= 1 && info.inner.dr_min >= 1);
            assert_true(info.outer.sigma2 <= info.outer.bound || !info.outer.ramanujan);
            assert_int_equal(info.nblocks * 16, info.kept); /* whole 4x4 micro-blocks */
            print_message("  rbgp 64x576 @87.5%%: G_o %dx%d dl %d (%s, sigma2 %.3f bound %.3f), G_i %dx%d dl %d (%s, "
                          "sigma2 %.3f bound %.3f); bytes succinct %lld, BSR 4x4 %lld, CSR %lld\n",
                          info.outer.rows, info.outer.cols, info.outer.dl, info.outer.method, info.outer.sigma2,
                          info.outer.bound, info.inner.rows, info.inner.cols, info.inner.dl, info.inner.method,
                          info.inner.sigma2, info.inner.bound, (long long)info.bytes_succinct,
                          (long long)info.bytes_bsr, (long long)info.bytes_csr);
        }
    }
    /* nnz_mask_measure on a hand-made 5x7 mask: kept (0,0), (0,6), (4,3), (4,4); 2x3 blocks (edge
     * blocks partial): (0,0), (0,2), (2,1) -> 3 of 9 blocks; CSR (5+1)*4 + 4*4 bytes */
    {
        uint8_t hm[35] = {0};
        hm[0] = hm[6] = hm[4 * 7 + 3] = hm[4 * 7 + 4] = 1;
        nnz_mask_info hi;
        assert_int_equal(nnz_mask_measure(hm, 5, 7, 2, 3, &hi), NNZ_OK);
        assert_int_equal(hi.kept, 4);
        assert_int_equal(hi.nblocks, 3);
        assert_int_equal(hi.bytes_csr, 6 * 4 + 4 * 4);
        assert_int_equal(hi.bytes_bsr, (3 + 1) * 4 + 3 * 4);
        assert_true(fabs(hi.density - 4.0 / 35.0) < 1e-15);
        assert_int_equal(nnz_mask_measure(hm, 5, 7, 0, 3, &hi), NNZ_ERR_INVALID_ARG);
        assert_int_equal(nnz_mask_measure(NULL, 5, 7, 2, 3, &hi), NNZ_ERR_INVALID_ARG);
    }
    /* bad input is a status with a message */
    nnz_mask_spec bad = {.kind = NNZ_MASK_BLOCK, .sparsity = -0.1f};
    assert_int_equal(nnz_mask_make(&bad, R, C, NULL, 1, m, &info), NNZ_ERR_INVALID_ARG);
    bad.sparsity = 0.5f;
    assert_int_equal(nnz_mask_make(&bad, 0, C, NULL, 1, m, &info), NNZ_ERR_INVALID_ARG);
    bad.kind = (nnz_mask_kind)99;
    assert_int_equal(nnz_mask_make(&bad, R, C, NULL, 1, m, &info), NNZ_ERR_INVALID_ARG);
    nnz_mask_kind kk;
    assert_int_equal(nnz_mask_kind_parse("rbgp", &kk), NNZ_OK);
    assert_int_equal(kk, NNZ_MASK_RBGP);
    assert_int_equal(nnz_mask_kind_parse("rgbp", &kk), NNZ_ERR_INVALID_ARG);
    /* factor text */
    char text[4096];
    nnz_mask_spec rs = {.kind = NNZ_MASK_RBGP, .sparsity = 0.75f};
    assert_int_equal(nnz_mask_factors_text(&rs, R, C, 1, 4, text, sizeof text), NNZ_OK);
    assert_non_null(strstr(text, "G_o"));
    assert_non_null(strstr(text, "G_i"));
    /* PGM: header and pixels */
    char dir[512], path[600];
    tu_make_temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/m.pgm", dir);
    assert_int_equal(nnz_mask_make(&rs, 8, 12, NULL, 1, m, NULL), NNZ_OK);
    assert_int_equal(nnz_mask_write_pgm(m, 8, 12, 2, path), NNZ_OK);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    int pw = 0, ph = 0, mx = 0;
    assert_int_equal(fscanf(f, "P5 %d %d %d", &pw, &ph, &mx), 3);
    fgetc(f);
    assert_int_equal(pw, 24);
    assert_int_equal(ph, 16);
    uint8_t px[24 * 16];
    assert_int_equal(fread(px, 1, sizeof px, f), sizeof px);
    fclose(f);
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 24; x++) assert_int_equal(px[y * 24 + x], m[(y / 2) * 12 + x / 2] ? 0 : 255);
    snprintf(path, sizeof path, "%s/no/such/dir/m.pgm", dir);
    assert_int_not_equal(nnz_mask_write_pgm(m, 8, 12, 2, path), NNZ_OK);
    free(m), free(w);
}

/* nnz_model_apply_magnitude_masks keeps each masked layer's largest weights (unstructured) or
 * the blocks of largest L1 norm (block), leaves them unchanged and zeroes the rest; the plain
 * nnz_model_apply_masks (random at initialization) does not follow the magnitudes. */
static bool magnitude_ordered(const float *before, const float *after, int rows, int cols, int br, int bc) {
    double min_kept = INFINITY, max_pruned = 0;
    for (int r0 = 0; r0 < rows; r0 += br)
        for (int c0 = 0; c0 < cols; c0 += bc) {
            double norm = 0;
            int kept = 0, n = 0;
            for (int r = r0; r < r0 + br && r < rows; r++)
                for (int c = c0; c < c0 + bc && c < cols; c++, n++) {
                    norm += fabs(before[(size_t)r * cols + c]);
                    kept += after[(size_t)r * cols + c] != 0.0f;
                }
            if (kept) min_kept = fmin(min_kept, norm);
            else max_pruned = fmax(max_pruned, norm);
            if (kept && kept != n) return false; /* a block is kept or pruned whole */
        }
    return min_kept >= max_pruned;
}

static void check_model_masks(nnz_mask_kind kind, int br, int bc, bool by_magnitude, bool expect_ordered) {
    nnz_model *m = NULL;
    assert_int_equal(nnz_model_from_zoo("lenet5", 28, 28, 1, 10, 7, &m), NNZ_OK);
    int node[8];
    const int n = nnz_prune_layers(m, node, 8);
    assert_int_equal(n, 2); /* conv2, fc1 */
    float *before[8];
    for (int l = 0; l < n; l++) {
        const nnz_tensor *w = &m->params[m->nodes[node[l]].weight].value;
        before[l] = malloc(sizeof(float) * (size_t)nnz_tensor_numel(w));
        memcpy(before[l], nnz_tensor_f32(w), sizeof(float) * (size_t)nnz_tensor_numel(w));
    }
    nnz_mask_spec spec = {.kind = kind, .sparsity = 0.75f, .block_rows = br, .block_cols = bc};
    if (by_magnitude) assert_int_equal(nnz_model_apply_magnitude_masks(m, &spec, 3, NULL, 0), NNZ_OK);
    else assert_int_equal(nnz_model_apply_masks(m, &spec, 3, NULL, 0), NNZ_OK);
    bool all_ordered = true;
    for (int l = 0; l < n; l++) {
        const nnz_node *nd = &m->nodes[node[l]];
        const nnz_tensor *w = &m->params[nd->weight].value;
        const int64_t numel = nnz_tensor_numel(w);
        const int rows = nd->out_ch, cols = (int)(numel / rows);
        const float *after = nnz_tensor_f32(w);
        int64_t kept = 0;
        for (int64_t i = 0; i < numel; i++) {
            if (after[i] != 0.0f) assert_true(after[i] == before[l][i]); /* kept weights unchanged */
            kept += after[i] != 0.0f;
        }
        assert_true(llabs(kept - (int64_t)llround(0.25 * (double)numel)) <= (int64_t)br * bc);
        all_ordered &= magnitude_ordered(before[l], after, rows, cols, br, bc);
        free(before[l]);
    }
    assert_true(all_ordered == expect_ordered);
    nnz_model_free(m);
}

static void test_model_magnitude_masks(void **state) {
    (void)state;
    check_model_masks(NNZ_MASK_UNSTRUCTURED, 1, 1, true, true);
    check_model_masks(NNZ_MASK_BLOCK, 4, 4, true, true);
    check_model_masks(NNZ_MASK_UNSTRUCTURED, 1, 1, false, false); /* random keys: not by magnitude */
    check_model_masks(NNZ_MASK_BLOCK, 4, 4, false, false);
}


/* nnz_model_weight_layers: lenet5's conv/linear weights as (OC, K) matrices, in graph order,
 * pointing at the parameters; the first and last are not maskable; cap bounds the fill */
static void test_model_weight_layers(void **state) {
    (void)state;
    nnz_model *m = NULL;
    assert_int_equal(nnz_model_from_zoo("lenet5", 28, 28, 1, 10, 3, &m), NNZ_OK);
    nnz_weight_layer ls[8];
    assert_int_equal(nnz_model_weight_layers(m, NULL, 0), 4);
    assert_int_equal(nnz_model_weight_layers(m, ls, 8), 4);
    const char *names[] = {"conv1", "conv2", "fc1", "fc2"};
    const int shapes[][2] = {{32, 25}, {64, 800}, {512, 3136}, {10, 512}};
    for (int i = 0; i < 4; i++) {
        assert_string_equal(ls[i].name, names[i]);
        assert_string_equal(ls[i].op, i < 2 ? "conv" : "linear");
        assert_int_equal(ls[i].rows, shapes[i][0]);
        assert_int_equal(ls[i].cols, shapes[i][1]);
        assert_int_equal(ls[i].maskable, i == 1 || i == 2);
        assert_string_equal(m->nodes[ls[i].node].name, names[i]);
        char w[64];
        snprintf(w, sizeof w, "%s.weight", names[i]);
        const int p = nnz_model_find_param(m, w);
        assert_true(p >= 0 && ls[i].weight == nnz_tensor_f32(&m->params[p].value));
    }
    nnz_weight_layer one[2] = {{0}, {.name = "untouched"}};
    assert_int_equal(nnz_model_weight_layers(m, one, 1), 4);
    assert_string_equal(one[0].name, "conv1");
    assert_string_equal(one[1].name, "untouched");
    nnz_model_free(m);
}

/* channel-block: a block mask over (rows, channels) repeated at every tap: the same pattern at each
 * tap, whole 16x16 blocks, the asked density; at random spread over the block rows and columns; by
 * magnitude it keeps the blocks whose |weights| summed over all taps are largest; taps must divide
 * the columns; taps 0 or 1 by magnitude is the plain block mask */
static void test_channel_block_mask(void **state) {
    (void)state;
    const int R = 64, taps = 9, Cc = 48, C = taps * Cc;
    uint8_t *m = malloc((size_t)R * C), *b = malloc((size_t)R * Cc);
    float *w = malloc((size_t)R * C * sizeof(float));
    assert_non_null(m), assert_non_null(b), assert_non_null(w);
    nnz_mask_info info;
    nnz_mask_spec spec = {.kind = NNZ_MASK_CHANNEL_BLOCK, .sparsity = 0.75f, .taps = taps};
    assert_int_equal(nnz_mask_make(&spec, R, C, NULL, 3, m, &info), NNZ_OK);
    assert_true(fabs(info.density - 0.25) < 1e-12);
    assert_int_equal(info.block_rows, 16);
    assert_int_equal(info.block_cols, 16);
    /* at random the kept blocks are spread: at 90% on 256 x 128 channels (16 x 8 blocks, 13 kept) every
     * block column keeps 1 or 2, every block row 0 or 1; on 64 x 64 (4 x 4, 2 kept) two rows and two
     * columns; the same seed the same mask, another seed another */
    {
        /* and on grids whose sides do not divide each other: 24 x 16 blocks, 38 kept: rows 1-2, columns 2-3 */
        static const int shapes[][3] = {{256, 128, 13}, {64, 64, 2}, {128, 256, 13}, {384, 256, 38}, {80, 128, 4}};
        for (int q = 0; q < 5; q++) {
            const int rr = shapes[q][0], cc = shapes[q][1], gr = rr / 16, gc = cc / 16, k = shapes[q][2];
            uint8_t *x = malloc((size_t)rr * cc * 9), *y = malloc((size_t)rr * cc * 9);
            assert_non_null(x), assert_non_null(y);
            const nnz_mask_spec sp = {.kind = NNZ_MASK_CHANNEL_BLOCK, .sparsity = 0.9f, .taps = 9};
            assert_int_equal(nnz_mask_make(&sp, rr, cc * 9, NULL, 5, x, &info), NNZ_OK);
            assert_int_equal(info.kept, (int64_t)k * 256 * 9);
            int rmin = 1 << 30, rmax = 0, cmin = 1 << 30, cmax = 0;
            for (int br = 0; br < gr; br++) {
                int n = 0;
                for (int bc = 0; bc < gc; bc++) n += x[(size_t)br * 16 * cc * 9 + bc * 16];
                rmin = n < rmin ? n : rmin, rmax = n > rmax ? n : rmax;
            }
            for (int bc = 0; bc < gc; bc++) {
                int n = 0;
                for (int br = 0; br < gr; br++) n += x[(size_t)br * 16 * cc * 9 + bc * 16];
                cmin = n < cmin ? n : cmin, cmax = n > cmax ? n : cmax;
            }
            if (rmin != k / gr || rmax != (k + gr - 1) / gr || cmin != k / gc || cmax != (k + gc - 1) / gc)
                fail_msg("%dx%d channels, %d of %dx%d blocks: rows keep %d..%d, columns %d..%d", rr, cc, k, gr, gc, rmin,
                         rmax, cmin, cmax);
            assert_int_equal(nnz_mask_make(&sp, rr, cc * 9, NULL, 5, y, NULL), NNZ_OK);
            assert_memory_equal(x, y, (size_t)rr * cc * 9);
            assert_int_equal(nnz_mask_make(&sp, rr, cc * 9, NULL, 6, y, NULL), NNZ_OK);
            assert_true(memcmp(x, y, (size_t)rr * cc * 9) != 0);
            free(x), free(y);
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < taps; t++)
            for (int c = 0; c < Cc; c++) {
                const uint8_t k = m[(size_t)r * C + (size_t)t * Cc + c];
                if (k != m[(size_t)r * C + c]) fail_msg("tap %d differs from tap 0 at (%d, %d)", t, r, c);
                if (k != m[(size_t)(r / 16 * 16) * C + c / 16 * 16]) fail_msg("(%d, %d) not a whole 16x16 block", r, c);
            }
    /* magnitude, one block of the 12 kept: block (0,0) holds 2 at tap 0 only (L1 512), block (1,1) v at
     * every tap (L1 v*256*9), the rest 0.001: (1,1) wins with v = 0.25 (576), (0,0) with v = 0.2 (461) */
    spec.sparsity = 1.0f - 1.0f / 12.0f;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < (size_t)R * C; i++) w[i] = 0.001f;
        for (int r = 0; r < 16; r++)
            for (int c = 0; c < 16; c++) {
                w[(size_t)r * C + c] = 2.0f;
                for (int t = 0; t < taps; t++) w[(size_t)(16 + r) * C + (size_t)t * Cc + 16 + c] = pass ? 0.2f : 0.25f;
            }
        assert_int_equal(nnz_mask_make(&spec, R, C, w, 3, m, &info), NNZ_OK);
        assert_int_equal(info.kept, 256 * taps);
        assert_int_equal(m[(size_t)16 * C + 5 * Cc + 31], pass == 0);
        assert_int_equal(m[(size_t)3 * C + 8 * Cc + 2], pass == 1); /* (0,0) at every tap, though only tap 0 was large */
    }
    /* taps that do not divide the columns; no taps: the block mask */
    spec.taps = 7;
    assert_int_equal(nnz_mask_make(&spec, R, C, NULL, 3, m, &info), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "taps"));
    spec.taps = 0; /* one tap: a block mask (by magnitude, the same one) */
    nnz_mask_spec block = {.kind = NNZ_MASK_BLOCK, .sparsity = spec.sparsity};
    assert_int_equal(nnz_mask_make(&spec, R, Cc, w, 4, b, NULL), NNZ_OK);
    assert_int_equal(nnz_mask_make(&block, R, Cc, w, 4, m, NULL), NNZ_OK);
    assert_memory_equal(b, m, (size_t)R * Cc);
    nnz_mask_kind kk;
    assert_int_equal(nnz_mask_kind_parse("channel-block", &kk), NNZ_OK);
    assert_int_equal(kk, NNZ_MASK_CHANNEL_BLOCK);
    assert_string_equal(nnz_mask_kind_name(NNZ_MASK_CHANNEL_BLOCK), "channel-block");
    free(m), free(b), free(w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_weight_layers),
        cmocka_unit_test(test_eigen_closed_forms),
        cmocka_unit_test(test_eigen_vs_jacobi),
        cmocka_unit_test(test_spectrum_known_graphs),
        cmocka_unit_test(test_graphs_regular_and_deterministic),
        cmocka_unit_test(test_ramanujan_bound),
        cmocka_unit_test(test_rbgp_kronecker_and_degrees),
        cmocka_unit_test(test_rbgp_planner),
        cmocka_unit_test(test_unstructured_exact_and_ordered),
        cmocka_unit_test(test_hbsnn_levels),
        cmocka_unit_test(test_mask_make_info_and_pgm),
        cmocka_unit_test(test_channel_block_mask),
        cmocka_unit_test(test_model_magnitude_masks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
