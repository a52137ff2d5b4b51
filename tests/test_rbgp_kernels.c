/* The RBGP forward kernel (src/kernels/sparse_rbgp*.c): packing against the definition of the
 * mask (element (r, c) kept iff G_o has (r / tile_r, c / tile_c) and G_i has
 * ((r / br) mod mi, (c / bc) mod ni)), and the forward product on every ISA path this machine
 * has against the double-accumulating dense oracle nnz_sgemm_ref of the masked matrix and
 * against nnz_spmm_rbgp_f32_ref: micro-blocks 1x1 .. 16x16 and odd ones (3x5), repetition
 * (J_r), shapes cropped from the padded one (not divisible by the micro-block), M = 1, M past
 * one 64-row panel, padded leading dimensions, overwrite over NaNs, accumulate, bias, an
 * all-zero weight; 1 and 2 threads bit-identical; bad geometries refused with a message.
 * Tolerance as test_sparse_kernels: 2(n+2) 2^-24 (sum|a b| + |base|) per element. */
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

#define UNIT_ROUNDOFF 5.9604644775390625e-8 /* 2^-24 */

/* random graph: every row dl distinct columns of 0..cols-1, ascending */
static int32_t *random_adj(int rows, int cols, int dl, uint64_t seed) {
    int32_t *adj = malloc(sizeof(int32_t) * (size_t)rows * dl);
    uint8_t *pick = malloc((size_t)cols);
    assert_non_null(adj);
    assert_non_null(pick);
    nnz_rng g = nnz_rng_make(seed, 3);
    for (int i = 0; i < rows; i++) {
        memset(pick, 0, (size_t)cols);
        for (int t = 0; t < dl;) {
            const int c = (int)(nnz_rng_uniform(&g) * cols) % cols;
            if (!pick[c]) pick[c] = 1, t++;
        }
        for (int c = 0, t = 0; c < cols; c++)
            if (pick[c]) adj[(int64_t)i * dl + t++] = c;
    }
    free(pick);
    return adj;
}

static bool adj_has(const int32_t *adj, int dl, int i, int j) {
    for (int t = 0; t < dl; t++)
        if (adj[(int64_t)i * dl + t] == j) return true;
    return false;
}

typedef struct {
    nnz_rbgp_geom g;
    int crop_r, crop_c; /* rows = padded - crop_r (crop < micro-block) */
    int M, pad;
} rcase;

static const rcase cases[] = {
    /* rows/cols filled from the factors below; br bc mi ni dli rr rc mo no dlo */
    {{0, 0, 4, 4, 8, 8, 2, 1, 1, 4, 9, 3}, 0, 0, 67, 0},    /* vgg-like 4x4, M past one panel */
    {{0, 0, 4, 4, 8, 8, 4, 1, 1, 2, 4, 1}, 3, 1, 1, 5},     /* cropped, M = 1, padded ld */
    {{0, 0, 4, 4, 4, 6, 3, 2, 3, 3, 2, 2}, 1, 3, 130, 3},   /* J_r 2x3 */
    {{0, 0, 16, 16, 2, 3, 1, 1, 1, 2, 5, 2}, 7, 9, 33, 0},  /* 16x16 micro-blocks */
    {{0, 0, 8, 4, 4, 4, 2, 1, 2, 3, 3, 2}, 5, 0, 64, 1},    /* 8x4 */
    {{0, 0, 3, 5, 5, 7, 3, 2, 1, 2, 3, 2}, 2, 4, 17, 0},    /* odd micro-block: row chunks 2+1 */
    {{0, 0, 1, 1, 16, 16, 4, 1, 1, 2, 2, 1}, 0, 0, 40, 2},  /* 1x1 (element-level inner graph) */
    {{0, 0, 2, 8, 3, 5, 5, 1, 1, 1, 1, 1}, 1, 7, 9, 0},     /* dense (complete graphs) */
    {{0, 0, 12, 4, 2, 4, 2, 1, 1, 2, 3, 3}, 11, 0, 70, 0},  /* br 12 = 8 + 4, 1 row kept of the last */
};
#define NCASES ((int)(sizeof cases / sizeof cases[0]))

static void run_case(const rcase *c0, int ci, bool all_zero) {
    rcase c = *c0;
    nnz_rbgp_geom *g = &c.g;
    g->rows = g->mo * g->rr * g->mi * g->br - c.crop_r;
    g->cols = g->no * g->rc * g->ni * g->bc - c.crop_c;
    const int rows = g->rows, cols = g->cols, M = c.M;
    const int64_t ldw = cols + c.pad, ldx = cols + c.pad, ldo = rows + c.pad;
    char ctx[160];
    snprintf(ctx, sizeof ctx, "isa=%s case %d W=%dx%d J_b %dx%d M=%d%s", nnz_isa_name(nnz_isa_active()), ci, rows, cols,
             g->br, g->bc, M, all_zero ? " all-zero" : "");
    int32_t *go = random_adj(g->mo, g->no, g->dlo, 100 + ci), *gi = random_adj(g->mi, g->ni, g->dli, 200 + ci);
    float *W = tu_falloc((size_t)(rows * ldw));
    tu_fill_uniform(W, rows * ldw, -1, 1, 300 + ci);
    if (all_zero) memset(W, 0, sizeof(float) * (size_t)(rows * ldw));

    /* the masked matrix from the definition */
    const int tile_r = g->rr * g->mi * g->br, tile_c = g->rc * g->ni * g->bc;
    float *Wm = tu_falloc((size_t)rows * cols);
    int64_t kept = 0;
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < cols; k++) {
            const bool keep = adj_has(go, g->dlo, r / tile_r, k / tile_c) &&
                              adj_has(gi, g->dli, (r / g->br) % g->mi, (k / g->bc) % g->ni);
            Wm[(int64_t)r * cols + k] = keep ? W[(int64_t)r * ldw + k] : 0.0f;
            kept += keep;
        }
    if (!c.crop_r && !c.crop_c && kept != (int64_t)rows * cols * g->dlo / g->no * g->dli / g->ni)
        fail_msg("%s: %lld kept, the density formula says otherwise", ctx, (long long)kept);

    nnz_rbgp_mat A;
    assert_int_equal(nnz_rbgp_mat_pack(g, go, gi, W, ldw, &A), NNZ_OK);
    float *back = tu_falloc((size_t)rows * cols);
    nnz_rbgp_mat_to_dense(&A, back, cols);
    for (int64_t i = 0; i < (int64_t)rows * cols; i++)
        if (back[i] != Wm[i]) fail_msg("%s: round trip [%lld] %g != %g", ctx, (long long)i, back[i], Wm[i]);
    assert_int_equal(nnz_rbgp_mat_value_bytes(&A),
                     (int64_t)g->mo * g->rr * g->mi * g->dlo * g->rc * g->dli * g->br * g->bc * 4);

    float *X = tu_falloc((size_t)(M * ldx)), *bias = tu_falloc((size_t)rows);
    tu_fill_uniform(X, M * ldx, -1, 1, 400 + ci);
    tu_fill_uniform(bias, rows, -1, 1, 500 + ci);
    float *aX = tu_falloc((size_t)(M * ldx)), *aW = tu_falloc((size_t)rows * cols);
    for (int64_t i = 0; i < M * ldx; i++) aX[i] = fabsf(X[i]);
    for (int64_t i = 0; i < (int64_t)rows * cols; i++) aW[i] = fabsf(Wm[i]);
    for (int variant = 0; variant < 3; variant++) {
        const bool acc = variant == 1, use_bias = variant != 0;
        float *out = tu_falloc((size_t)(M * ldo)), *ref = tu_falloc((size_t)(M * ldo)), *want = tu_falloc((size_t)(M * ldo));
        float *S = tu_falloc((size_t)(M * ldo)), *base = tu_falloc((size_t)(M * ldo));
        tu_fill_uniform(base, M * ldo, -1, 1, 600 + ci);
        for (int64_t i = 0; i < M * ldo; i++) out[i] = acc ? base[i] : NAN; /* overwrite ignores NaNs */
        memcpy(ref, out, sizeof(float) * (size_t)(M * ldo));
        for (int m = 0; m < M; m++)
            for (int i = 0; i < rows; i++) {
                const int64_t at = (int64_t)m * ldo + i;
                base[at] = (acc ? base[at] : 0.0f) + (use_bias ? bias[i] : 0.0f);
                want[at] = base[at];
                S[at] = 0.0f;
            }
        nnz_sgemm_ref(false, true, M, rows, cols, 1.0f, X, (int)ldx, Wm, cols, 1.0f, want, (int)ldo);
        nnz_sgemm_ref(false, true, M, rows, cols, 1.0f, aX, (int)ldx, aW, cols, 1.0f, S, (int)ldo);
        assert_int_equal(nnz_spmm_rbgp_f32(&A, M, X, ldx, use_bias ? bias : NULL, acc, out, ldo), NNZ_OK);
        nnz_spmm_rbgp_f32_ref(&A, M, X, ldx, use_bias ? bias : NULL, acc, ref, ldo);
        for (int m = 0; m < M; m++)
            for (int i = 0; i < ldo; i++) {
                const int64_t at = (int64_t)m * ldo + i;
                if (i >= rows) { /* padding of out untouched */
                    if (!(acc ? out[at] == base[at] : isnan(out[at])))
                        fail_msg("%s: out padding [%d,%d] written", ctx, m, i);
                    continue;
                }
                const double tol = 2.0 * (cols + 2) * UNIT_ROUNDOFF * ((double)S[at] + fabs((double)base[at])) + 1e-30;
                if (!(fabs((double)out[at] - want[at]) <= tol) || !(fabs((double)ref[at] - want[at]) <= tol))
                    fail_msg("%s variant %d: [%d,%d] = %.9g (ref %.9g), expected %.9g (tol %g)", ctx, variant, m, i,
                             out[at], ref[at], want[at], tol);
            }
        free(out), free(ref), free(want), free(S), free(base);
    }
    nnz_rbgp_mat_free(&A);
    free(go), free(gi), free(W), free(Wm), free(back), free(X), free(bias), free(aX), free(aW);
}

static void cases_isa(nnz_isa isa, void *ctx) {
    (void)isa, (void)ctx;
    for (int i = 0; i < NCASES; i++) {
        run_case(&cases[i], i, false);
        if (i < 2) run_case(&cases[i], i, true);
    }
}

static void test_rbgp_forward_all_isas(void **state) {
    (void)state;
    tu_for_each_isa(cases_isa, NULL);
}

/* 1 and 2 threads, bit-identical (a shape big enough to be split) */
static void determinism_isa(nnz_isa isa, void *ctx) {
    (void)ctx;
    if (isa < NNZ_ISA_AVX2) return; /* the reference is single-threaded */
    nnz_rbgp_geom g = {.br = 4, .bc = 4, .mi = 8, .ni = 8, .dli = 3, .rr = 1, .rc = 1, .mo = 6, .no = 9, .dlo = 4};
    g.rows = g.mo * g.mi * g.br - 2, g.cols = g.no * g.ni * g.bc - 1;
    const int M = 300;
    int32_t *go = random_adj(g.mo, g.no, g.dlo, 7), *gi = random_adj(g.mi, g.ni, g.dli, 8);
    float *W = tu_falloc((size_t)g.rows * g.cols), *X = tu_falloc((size_t)M * g.cols);
    tu_fill_uniform(W, (int64_t)g.rows * g.cols, -1, 1, 9);
    tu_fill_uniform(X, (int64_t)M * g.cols, -1, 1, 10);
    nnz_rbgp_mat A;
    assert_int_equal(nnz_rbgp_mat_pack(&g, go, gi, W, g.cols, &A), NNZ_OK);
    const int before = nnz_get_threads();
    float *out[2];
    for (int t = 0; t < 2; t++) {
        nnz_set_threads(t + 1);
        out[t] = tu_falloc((size_t)M * g.rows);
        assert_int_equal(nnz_spmm_rbgp_f32(&A, M, X, g.cols, NULL, false, out[t], g.rows), NNZ_OK);
    }
    nnz_set_threads(before);
    if (memcmp(out[0], out[1], sizeof(float) * (size_t)M * g.rows)) fail_msg("isa %s: 1 and 2 threads differ", nnz_isa_name(isa));
    nnz_rbgp_mat_free(&A);
    free(out[0]), free(out[1]), free(go), free(gi), free(W), free(X);
}

static void test_rbgp_threads_deterministic(void **state) {
    (void)state;
    tu_for_each_isa(determinism_isa, NULL);
}

static void test_rbgp_pack_errors(void **state) {
    (void)state;
    const nnz_rbgp_geom ok = {.rows = 32, .cols = 32, .br = 4, .bc = 4, .mi = 4, .ni = 4, .dli = 2, .rr = 1, .rc = 1,
                              .mo = 2, .no = 2, .dlo = 1};
    int32_t go[2] = {0, 1}, gi[8] = {0, 1, 1, 2, 2, 3, 0, 3};
    float W[32 * 32] = {0};
    nnz_rbgp_mat A;
    assert_int_equal(nnz_rbgp_mat_pack(&ok, go, gi, W, 32, &A), NNZ_OK);
    nnz_rbgp_mat_free(&A);
    struct {
        nnz_rbgp_geom g;
        const char *msg;
    } bad[] = {
        {ok, "does not cover"}, {ok, "does not cover"}, {ok, ">= 1"}, {ok, "degree above"},
    };
    bad[0].g.rows = 28;  /* a whole micro-block short */
    bad[1].g.cols = 33;  /* not covered */
    bad[2].g.mi = 0;
    bad[3].g.dlo = 3;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(nnz_rbgp_mat_pack(&bad[i].g, go, gi, W, 32, &A), NNZ_ERR_INVALID_ARG);
        assert_non_null(strstr(nnz_last_error(), bad[i].msg));
        assert_null(A.val);
    }
    int32_t gi_bad[8] = {0, 1, 2, 1, 2, 3, 0, 3}; /* row 1 not ascending */
    assert_int_equal(nnz_rbgp_mat_pack(&ok, go, gi_bad, W, 32, &A), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "G_i row 1"));
    int32_t go_bad[2] = {0, 2}; /* out of range */
    assert_int_equal(nnz_rbgp_mat_pack(&ok, go_bad, gi, W, 32, &A), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "G_o row 1"));
    assert_int_equal(nnz_rbgp_mat_pack(&ok, go, gi, W, 31, &A), NNZ_ERR_INVALID_ARG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rbgp_forward_all_isas),
        cmocka_unit_test(test_rbgp_threads_deterministic),
        cmocka_unit_test(test_rbgp_pack_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
