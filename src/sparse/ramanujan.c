/* Random (near-)biregular bipartite graphs and their spectral check against the Ramanujan
 * bound: the factor graphs of RBGP masks. Two constructions (sparse.h says when each is
 * used): the RBGP paper's random 2-lifts of a complete bipartite graph, and a switch chain
 * that reaches every shape and degree. */
#include "sparse/sparse.h"

#include <math.h>
#include <string.h>

const char *nnz_bigraph_method_name(nnz_bigraph_method m) {
    switch (m) {
    case NNZ_BIGRAPH_AUTO: return "auto";
    case NNZ_BIGRAPH_LIFT: return "2-lift";
    case NNZ_BIGRAPH_SWITCH: return "switch";
    }
    return "?";
}

bool nnz_bigraph_liftable(int rows, int cols, int dl) {
    if (rows < 1 || cols < 1 || dl < 1 || dl > cols || cols % dl) return false;
    int q = cols / dl; /* 2^k */
    if (q & (q - 1)) return false;
    return rows % q == 0;
}

void nnz_bigraph_free(nnz_bigraph *g) {
    if (!g) return;
    nnz_free(g->adj);
    memset(g, 0, sizeof *g);
}

/* Fills g's adjacency lists and right degrees from a dense rows x cols 0/1 matrix whose rows
 * all hold dl ones. */
static nnz_status from_dense(const uint8_t *a, int rows, int cols, int dl, nnz_bigraph *g) {
    memset(g, 0, sizeof *g);
    g->adj = nnz_alloc((size_t)rows * dl * sizeof(int32_t), "bipartite graph");
    int32_t *deg = nnz_calloc((size_t)cols * sizeof(int32_t), "bipartite graph degrees");
    if (!g->adj || !deg) {
        nnz_free(g->adj), nnz_free(deg);
        g->adj = NULL;
        return NNZ_ERR_NOMEM;
    }
    g->rows = rows, g->cols = cols, g->dl = dl;
    for (int i = 0; i < rows; i++) {
        int k = 0;
        for (int j = 0; j < cols; j++)
            if (a[(size_t)i * cols + j]) {
                if (k < dl) g->adj[(size_t)i * dl + k] = j;
                k++;
                deg[j]++;
            }
        if (k != dl) { /* a construction bug, never user input */
            nnz_free(deg);
            nnz_bigraph_free(g);
            return nnz_fail(NNZ_ERR_NUMERIC, "bipartite graph: row %d has degree %d, expected %d (internal error)", i, k, dl);
        }
    }
    g->dr_min = g->dr_max = deg[0];
    for (int j = 1; j < cols; j++) {
        if (deg[j] < g->dr_min) g->dr_min = deg[j];
        if (deg[j] > g->dr_max) g->dr_max = deg[j];
    }
    nnz_free(deg);
    return NNZ_OK;
}

/* The RBGP paper's construction: K(dr, dl), then k times: place a copy of the current graph
 * on the diagonal and cross each of its edges to the off-diagonal copies with probability 1/2. */
static void lift(uint8_t *a, int rows, int cols, int dl, nnz_rng *rng) {
    const int q = cols / dl, dr = rows / q;
    for (int i = 0; i < dr; i++) memset(a + (size_t)i * cols, 1, (size_t)dl);
    for (int cr = dr, cc = dl; cc < cols; cr *= 2, cc *= 2) {
        for (int i = 0; i < cr; i++) memcpy(a + (size_t)(i + cr) * cols + cc, a + (size_t)i * cols, (size_t)cc);
        for (int i = 0; i < cr; i++)
            for (int j = 0; j < cc; j++) {
                if (!a[(size_t)i * cols + j] || !(nnz_rng_u64(rng) >> 63)) continue;
                a[(size_t)i * cols + j] = 0, a[(size_t)(i + cr) * cols + j + cc] = 0;
                a[(size_t)i * cols + j + cc] = 1, a[(size_t)(i + cr) * cols + j] = 1;
            }
    }
}

/* Row i -> columns (i*d + t) mod cols, t < d, then 10 switch attempts per edge:
 * edges (u1,v1), (u2,v2) become (u1,v2), (u2,v1) when both are absent. Degrees never change. */
static nnz_status switch_chain(uint8_t *a, int rows, int cols, int d, nnz_rng *rng) {
    const int64_t E = (int64_t)rows * d;
    for (int i = 0; i < rows; i++)
        for (int t = 0; t < d; t++) a[(size_t)i * cols + (size_t)(((int64_t)i * d + t) % cols)] = 1;
    if (E < 2) return NNZ_OK;
    int32_t *eu = nnz_alloc((size_t)E * sizeof(int32_t), "switch chain edges");
    int32_t *ev = nnz_alloc((size_t)E * sizeof(int32_t), "switch chain edges");
    if (!eu || !ev) {
        nnz_free(eu), nnz_free(ev);
        return NNZ_ERR_NOMEM;
    }
    for (int64_t e = 0; e < E; e++) eu[e] = (int32_t)(e / d), ev[e] = (int32_t)(e % cols); /* e = i*d + t */
    const int64_t steps = 10 * E;
    for (int64_t s = 0; s < steps; s++) {
        uint64_t r = nnz_rng_u64(rng);
        int64_t x = (int64_t)(((r >> 32) * (uint64_t)E) >> 32), y = (int64_t)(((r & 0xFFFFFFFFu) * (uint64_t)E) >> 32);
        int u1 = eu[x], v1 = ev[x], u2 = eu[y], v2 = ev[y];
        if (u1 == u2 || v1 == v2) continue;
        uint8_t *p12 = a + (size_t)u1 * cols + v2, *p21 = a + (size_t)u2 * cols + v1;
        if (*p12 || *p21) continue;
        a[(size_t)u1 * cols + v1] = 0, a[(size_t)u2 * cols + v2] = 0;
        *p12 = 1, *p21 = 1;
        ev[x] = v2, ev[y] = v1;
    }
    nnz_free(eu), nnz_free(ev);
    return NNZ_OK;
}

nnz_status nnz_bigraph_random(int rows, int cols, int dl, nnz_bigraph_method method, nnz_rng *rng, nnz_bigraph *out) {
    memset(out, 0, sizeof *out);
    if (rows < 1 || cols < 1 || rows > NNZ_BIGRAPH_MAX_SIDE || cols > NNZ_BIGRAPH_MAX_SIDE)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "bipartite graph %dx%d: sides must be 1..%d", rows, cols, NNZ_BIGRAPH_MAX_SIDE);
    if (dl < 1 || dl > cols)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "bipartite graph %dx%d: left degree %d must be 1..%d", rows, cols, dl, cols);
    if (method == NNZ_BIGRAPH_AUTO) method = nnz_bigraph_liftable(rows, cols, dl) ? NNZ_BIGRAPH_LIFT : NNZ_BIGRAPH_SWITCH;
    if (method == NNZ_BIGRAPH_LIFT && !nnz_bigraph_liftable(rows, cols, dl))
        return nnz_fail(NNZ_ERR_INVALID_ARG,
                        "bipartite graph %dx%d, left degree %d: 2-lifts need cols = dl*2^k and rows a multiple of 2^k",
                        rows, cols, dl);
    uint8_t *a = nnz_calloc((size_t)rows * cols, "bipartite graph matrix");
    if (!a) return NNZ_ERR_NOMEM;
    nnz_status st = NNZ_OK;
    if (method == NNZ_BIGRAPH_LIFT) {
        lift(a, rows, cols, dl, rng);
    } else {
        /* Above density 1/2 switches rarely succeed: randomise the complement instead. */
        bool comp = 2 * dl > cols;
        st = switch_chain(a, rows, cols, comp ? cols - dl : dl, rng);
        if (comp)
            for (size_t i = 0; i < (size_t)rows * cols; i++) a[i] ^= 1;
    }
    if (st == NNZ_OK) st = from_dense(a, rows, cols, dl, out);
    nnz_free(a);
    return st;
}

bool nnz_bigraph_has(const nnz_bigraph *g, int i, int j) {
    const int32_t *row = g->adj + (size_t)i * g->dl;
    int lo = 0, hi = g->dl;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (row[mid] < j) lo = mid + 1;
        else hi = mid;
    }
    return lo < g->dl && row[lo] == j;
}

void nnz_bigraph_to_dense(const nnz_bigraph *g, uint8_t *b) {
    memset(b, 0, (size_t)g->rows * g->cols);
    for (int i = 0; i < g->rows; i++)
        for (int t = 0; t < g->dl; t++) b[(size_t)i * g->cols + g->adj[(size_t)i * g->dl + t]] = 1;
}

nnz_status nnz_bigraph_spectrum_of(const nnz_bigraph *g, nnz_bigraph_spectrum *out) {
    memset(out, 0, sizeof *out);
    /* Gram matrix of the smaller side: entry (x, y) = common neighbours, from bitsets. */
    const bool by_rows = g->rows <= g->cols;
    const int s = by_rows ? g->rows : g->cols, len = by_rows ? g->cols : g->rows;
    const int words = (len + 63) / 64;
    uint64_t *bits = nnz_calloc((size_t)s * words * sizeof(uint64_t), "spectrum bitsets");
    double *m = nnz_alloc((size_t)s * s * sizeof(double), "spectrum matrix");
    double *w = nnz_alloc((size_t)s * sizeof(double), "spectrum eigenvalues");
    if (!bits || !m || !w) {
        nnz_free(bits), nnz_free(m), nnz_free(w);
        return NNZ_ERR_NOMEM;
    }
    for (int i = 0; i < g->rows; i++)
        for (int t = 0; t < g->dl; t++) {
            int j = g->adj[(size_t)i * g->dl + t];
            int x = by_rows ? i : j, y = by_rows ? j : i;
            bits[(size_t)x * words + y / 64] |= 1ull << (y % 64);
        }
    for (int x = 0; x < s; x++)
        for (int y = x; y < s; y++) {
            int c = 0;
            for (int k = 0; k < words; k++) c += __builtin_popcountll(bits[(size_t)x * words + k] & bits[(size_t)y * words + k]);
            m[(size_t)x * s + y] = m[(size_t)y * s + x] = c;
        }
    nnz_status st = nnz_sym_eigenvalues(s, m, w);
    if (st == NNZ_OK) {
        out->sigma1 = sqrt(fmax(w[s - 1], 0.0));
        out->sigma2 = s >= 2 ? sqrt(fmax(w[s - 2], 0.0)) : 0.0;
        out->bound = sqrt((double)(g->dl - 1)) + sqrt(fmax(g->dr_max - 1, 0));
        out->ramanujan = out->sigma2 <= out->bound + 1e-9;
    }
    nnz_free(bits), nnz_free(m), nnz_free(w);
    return st;
}

nnz_status nnz_ramanujan_make(int rows, int cols, int dl, nnz_bigraph_method method, uint64_t seed, int max_tries,
                              nnz_bigraph *out, nnz_bigraph_spectrum *sp, int *tries) {
    memset(out, 0, sizeof *out);
    memset(sp, 0, sizeof *sp);
    *tries = 0;
    if (max_tries < 1) return nnz_fail(NNZ_ERR_INVALID_ARG, "Ramanujan graph: max_tries %d must be >= 1", max_tries);
    for (int t = 0; t < max_tries; t++) {
        nnz_rng rng = nnz_rng_make(seed, (uint64_t)t);
        nnz_bigraph g;
        nnz_bigraph_spectrum s;
        NNZ_TRY(nnz_bigraph_random(rows, cols, dl, method, &rng, &g));
        nnz_status st = nnz_bigraph_spectrum_of(&g, &s);
        if (st != NNZ_OK) {
            nnz_bigraph_free(&g);
            nnz_bigraph_free(out);
            return st;
        }
        *tries = t + 1;
        if (!out->adj || s.sigma2 - s.bound < sp->sigma2 - sp->bound) {
            nnz_bigraph_free(out);
            *out = g, *sp = s;
        } else {
            nnz_bigraph_free(&g);
        }
        if (sp->ramanujan) break;
    }
    return NNZ_OK;
}
