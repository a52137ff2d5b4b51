/* Sparse weight formats (BSR; CSR = 1x1) and the fp32 sparse kernels: forward SpMM,
 * backward-data and SDDMM, for every supported block shape, on every ISA path this machine
 * has, against the double-accumulating dense oracle nnz_sgemm_ref of the masked matrix and
 * against the sparse reference nnz_*_ref. Matrices: random element masks, random block masks,
 * empty rows and empty block rows, all-zero, a single nonzero; sizes not divisible by the
 * block, M = 1, K odd, M beyond one 64-row panel, padded leading dimensions.
 *
 * Tolerance per element: a float32 sum of n products computed in any order (FMA or not) is
 * within n*u*sum|a_k b_k| of the exact sum (u = 2^-24), plus one rounding of each add of
 * the base (out, bias): |err| <= (n+2)*u*(sum|a_k b_k| + |base|); we allow 2x that. The
 * oracle (double) is itself within u of exact. A wrong index, block layout or lane is off by
 * O(|a b|) and fails. Round trips are exact (==). Threads: 1 and 2 threads give the same bits. */
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

#define UNIT_ROUNDOFF 5.9604644775390625e-8 /* 2^-24 */

typedef enum { PAT_ELEM, PAT_BLOCK, PAT_EMPTY_ROWS, PAT_ALL_ZERO, PAT_SINGLE, PAT_COUNT } pattern;
static const char *const pattern_names[] = {"elem", "block", "empty-rows", "all-zero", "single"};

static const int blocks[][2] = {{1, 1},  {1, 4},  {1, 8},  {1, 16}, {1, 32}, {4, 4},  {4, 8},  {4, 16},
                                {4, 32}, {8, 4},  {8, 8},  {8, 16}, {8, 32}, {16, 4}, {16, 8}, {16, 16},
                                {16, 32}, {32, 4}, {32, 8}, {32, 16}, {32, 32}};
#define NBLOCKS ((int)(sizeof blocks / sizeof blocks[0]))

/* the shared masks (test_util.h); the pattern enum above in their order, PAT_SINGLE = TU_MASK_SINGLE */
static uint8_t *make_mask(pattern p, int rows, int cols, int64_t ldw, int r, int c, uint64_t seed) {
    return tu_sparse_mask(p == PAT_SINGLE ? TU_MASK_SINGLE : (tu_mask_pattern)p, rows, cols, ldw, r, c, seed);
}

/* |x| of a row-major (n, m) matrix with ld */
static float *absm(const float *x, int64_t n, int64_t m, int64_t ld) {
    float *a = tu_falloc((size_t)(n * ld));
    for (int64_t i = 0; i < n * ld; i++) a[i] = i % ld < m ? fabsf(x[i]) : 0.0f;
    return a;
}

static void check_close(const char *what, const char *ctx, const float *got, const float *want, const float *S,
                        const float *base, int64_t n, int64_t cols, int64_t ld, int nterms) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = 0; k < cols; k++) {
            const int64_t at = i * ld + k;
            const double b = base ? fabs((double)base[at]) : 0.0;
            const double tol = 2.0 * (nterms + 2) * UNIT_ROUNDOFF * ((double)S[at] + b) + 1e-30;
            const double d = fabs((double)got[at] - (double)want[at]);
            if (!(d <= tol))
                fail_msg("%s %s: [%lld,%lld] = %.9g, expected %.9g (tol %g)", what, ctx, (long long)i, (long long)k,
                         got[at], want[at], tol);
        }
}

typedef struct {
    int rows, cols, M;
    int pad; /* extra leading-dimension floats */
} shape;

static void run_case(const shape *sh, int r, int c, pattern p, uint64_t seed) {
    const int rows = sh->rows, cols = sh->cols, M = sh->M;
    const int64_t ldw = cols + sh->pad, ldx = cols + sh->pad, ldo = rows + sh->pad;
    char ctx[200];
    snprintf(ctx, sizeof ctx, "isa=%s block=%dx%d W=%dx%d M=%d pad=%d pattern=%s", nnz_isa_name(nnz_isa_active()),
             r, c, rows, cols, M, sh->pad, pattern_names[p]);

    float *W = tu_falloc((size_t)(rows * ldw)), *Wm = tu_falloc((size_t)rows * cols);
    tu_fill_uniform(W, rows * ldw, -1, 1, seed);
    uint8_t *mask = make_mask(p, rows, cols, ldw, r, c, seed + 1);
    int64_t nnz = 0;
    for (int i = 0; i < rows; i++)
        for (int k = 0; k < cols; k++) {
            const bool kept = mask[(int64_t)i * ldw + k];
            Wm[(int64_t)i * cols + k] = kept ? W[(int64_t)i * ldw + k] : 0.0f;
            nnz += kept;
        }

    /* conversion: counts and the exact round trip */
    nnz_spmat s;
    assert_int_equal(nnz_spmat_from_dense(rows, cols, W, ldw, mask, r, c, &s), NNZ_OK);
    if (s.nnz != nnz) fail_msg("%s: nnz %lld, expected %lld", ctx, (long long)s.nnz, (long long)nnz);
    nnz_sparse_stats st;
    assert_int_equal(nnz_sparse_measure(rows, cols, W, ldw, mask, r, c, &st), NNZ_OK);
    assert_int_equal(st.nblocks, s.nblocks);
    assert_int_equal(st.nnz, nnz);
    assert_int_equal(s.tr.ptr[s.tr.brows], s.nblocks);
    float *back = tu_falloc((size_t)rows * cols);
    nnz_spmat_to_dense(&s, back, cols);
    for (int64_t i = 0; i < (int64_t)rows * cols; i++)
        if (back[i] != Wm[i]) fail_msg("%s: round trip [%lld] %g != %g", ctx, (long long)i, back[i], Wm[i]);

    float *X = tu_falloc((size_t)(M * ldx)), *bias = tu_falloc((size_t)rows);
    float *dout = tu_falloc((size_t)(M * ldo));
    tu_fill_uniform(X, M * ldx, -1, 1, seed + 2);
    tu_fill_uniform(bias, rows, -1, 1, seed + 3);
    tu_fill_uniform(dout, M * ldo, -1, 1, seed + 4);
    float *aX = absm(X, M, cols, ldx), *aWm = absm(Wm, rows, cols, cols), *aD = absm(dout, M, rows, ldo);

    /* forward: out (M, rows), with and without accumulate / bias */
    for (int variant = 0; variant < 3; variant++) {
        const bool acc = variant == 1, use_bias = variant != 0;
        float *out = tu_falloc((size_t)(M * ldo)), *ref = tu_falloc((size_t)(M * ldo)), *want = tu_falloc((size_t)(M * ldo));
        float *S = tu_falloc((size_t)(M * ldo)), *base = tu_falloc((size_t)(M * ldo));
        tu_fill_uniform(base, M * ldo, -1, 1, seed + 5);
        for (int64_t i = 0; i < M * ldo; i++) out[i] = acc ? base[i] : NAN; /* overwrite must ignore NaNs */
        memcpy(ref, out, (size_t)(M * ldo) * sizeof(float));
        for (int m = 0; m < M; m++)
            for (int i = 0; i < rows; i++) {
                const int64_t at = (int64_t)m * ldo + i;
                base[at] = (acc ? base[at] : 0.0f) + (use_bias ? bias[i] : 0.0f);
                want[at] = base[at];
                S[at] = 0.0f;
            }
        nnz_sgemm_ref(false, true, M, rows, cols, 1.0f, X, (int)ldx, Wm, cols, 1.0f, want, (int)ldo);
        nnz_sgemm_ref(false, true, M, rows, cols, 1.0f, aX, (int)ldx, aWm, cols, 1.0f, S, (int)ldo);
        assert_int_equal(nnz_spmm_f32(&s, M, X, ldx, use_bias ? bias : NULL, acc, out, ldo), NNZ_OK);
        nnz_spmm_f32_ref(&s.fwd, M, X, ldx, use_bias ? bias : NULL, acc, ref, ldo);
        check_close("spmm vs dense", ctx, out, want, S, base, M, rows, ldo, cols);
        check_close("spmm_ref vs dense", ctx, ref, want, S, base, M, rows, ldo, cols);
        free(out), free(ref), free(want), free(S), free(base);
    }

    /* backward-data: dX (M, cols) (+)= dout * Wm */
    for (int acc = 0; acc < 2; acc++) {
        float *dX = tu_falloc((size_t)(M * ldx)), *want = tu_falloc((size_t)(M * ldx)), *S = tu_falloc((size_t)(M * ldx));
        float *base = tu_falloc((size_t)(M * ldx));
        tu_fill_uniform(base, M * ldx, -1, 1, seed + 6);
        for (int64_t i = 0; i < M * ldx; i++) {
            dX[i] = acc ? base[i] : NAN;
            if (!acc) base[i] = 0.0f;
            want[i] = base[i];
            S[i] = 0.0f;
        }
        nnz_sgemm_ref(false, false, M, cols, rows, 1.0f, dout, (int)ldo, Wm, cols, 1.0f, want, (int)ldx);
        nnz_sgemm_ref(false, false, M, cols, rows, 1.0f, aD, (int)ldo, aWm, cols, 1.0f, S, (int)ldx);
        assert_int_equal(nnz_spmm_bwd_data_f32(&s, M, dout, ldo, acc, dX, ldx), NNZ_OK);
        check_close("bwd_data vs dense", ctx, dX, want, S, base, M, cols, ldx, rows);
        free(dX), free(want), free(S), free(base);
    }

    /* SDDMM: dval += dout^T X at the kept blocks' in-bounds positions; padding untouched */
    {
        const int64_t nv = nnz_spmat_val_count(&s);
        float *dval = tu_falloc((size_t)nv), *dref = tu_falloc((size_t)nv), *init = tu_falloc((size_t)nv);
        tu_fill_uniform(init, nv, -1, 1, seed + 7);
        memcpy(dval, init, (size_t)nv * sizeof(float));
        memcpy(dref, init, (size_t)nv * sizeof(float));
        float *G = tu_falloc((size_t)rows * cols), *SG = tu_falloc((size_t)rows * cols);
        nnz_sgemm_ref(true, false, rows, cols, M, 1.0f, dout, (int)ldo, X, (int)ldx, 0.0f, G, cols);
        nnz_sgemm_ref(true, false, rows, cols, M, 1.0f, aD, (int)ldo, aX, (int)ldx, 0.0f, SG, cols);
        assert_int_equal(nnz_sddmm_f32(&s, M, dout, ldo, X, ldx, dval), NNZ_OK);
        nnz_sddmm_f32_ref(&s.fwd, M, dout, ldo, X, ldx, dref);
        const nnz_bsr *A = &s.fwd;
        for (int br = 0; br < A->brows; br++)
            for (int32_t j = A->ptr[br]; j < A->ptr[br + 1]; j++)
                for (int kk = 0; kk < c; kk++)
                    for (int ii = 0; ii < r; ii++) {
                        const int64_t at = (int64_t)j * r * c + kk * r + ii;
                        const int i = br * r + ii, k = A->idx[j] * c + kk;
                        if (i >= rows || k >= cols) {
                            if (dval[at] != init[at] || dref[at] != init[at])
                                fail_msg("sddmm %s: padding [%d,%d] written", ctx, i, k);
                            continue;
                        }
                        const double want = (double)init[at] + G[(int64_t)i * cols + k];
                        const double tol = 2.0 * (M + 2) * UNIT_ROUNDOFF * (SG[(int64_t)i * cols + k] + fabs(init[at]));
                        if (!(fabs(dval[at] - want) <= tol) || !(fabs(dref[at] - want) <= tol))
                            fail_msg("sddmm %s: [%d,%d] = %.9g (ref %.9g), expected %.9g (tol %g)", ctx, i, k, dval[at],
                                     dref[at], want, tol);
                    }
        free(dval), free(dref), free(init), free(G), free(SG);
    }
    nnz_spmat_free(&s);
    free(W), free(Wm), free(mask), free(back), free(X), free(bias), free(dout), free(aX), free(aWm), free(aD);
}

static const shape shapes[] = {
    {37, 45, 5, 0},  /* nothing divisible */
    {64, 64, 13, 3}, /* divisible by every block; padded ld */
    {33, 70, 1, 0},  /* M = 1 */
    {20, 150, 3, 2}, /* M <= 4: CSR by gathers, rows of 32+ nonzeros */
    {17, 31, 66, 1}, /* K odd, M beyond one 64-row panel */
    {256, 256, 9, 0}, /* ld a multiple of 256: the tile kernel copies X rows first (fwd and bwd);
                          only block masks with r or c >= 16 (the tile kernel's shapes), for time */
};

static void all_blocks_isa(nnz_isa isa, void *ctx) {
    (void)isa, (void)ctx;
    uint64_t seed = 100;
    for (int b = 0; b < NBLOCKS; b++)
        for (size_t sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++)
            for (int p = 0; p < PAT_COUNT; p++) {
                const bool big = shapes[sh].rows >= 256, tile = blocks[b][0] >= 16 || blocks[b][1] >= 16;
                if (!big || (p == PAT_BLOCK && tile)) run_case(&shapes[sh], blocks[b][0], blocks[b][1], (pattern)p, seed);
                seed++;
            }
}

static void test_sparse_all_blocks_all_isas(void **state) {
    (void)state;
    tu_for_each_isa(all_blocks_isa, NULL);
}

/* mask NULL: kept = nonzero, on a matrix with zeros in it */
static void test_sparse_mask_null(void **state) {
    (void)state;
    const int rows = 20, cols = 27;
    float W[20 * 27], back[20 * 27];
    tu_fill_uniform(W, rows * cols, -1, 1, 5);
    for (int i = 0; i < rows * cols; i++)
        if (i % 3) W[i] = 0.0f;
    nnz_spmat s;
    assert_int_equal(nnz_spmat_from_dense(rows, cols, W, cols, NULL, 4, 8, &s), NNZ_OK);
    assert_int_equal(s.nnz, (rows * cols + 2) / 3);
    nnz_spmat_to_dense(&s, back, cols);
    assert_memory_equal(W, back, sizeof W);
    nnz_spmat_free(&s);
}

/* stats on a hand-made matrix: 8x8, block 4x4, kept: (0,0), (0,1), (5,6) -> 2 blocks, fill 3/32 */
static void test_sparse_measure(void **state) {
    (void)state;
    float W[64] = {0};
    W[0] = 1, W[1] = 2, W[5 * 8 + 6] = 3;
    nnz_sparse_stats st;
    assert_int_equal(nnz_sparse_measure(8, 8, W, 8, NULL, 4, 4, &st), NNZ_OK);
    assert_int_equal(st.nnz, 3);
    assert_int_equal(st.nblocks, 2);
    assert_true(fabs(st.block_fill - 3.0 / 32.0) < 1e-12);
    assert_true(fabs(st.density - 3.0 / 64.0) < 1e-12);
}

static void test_sparse_invalid_args(void **state) {
    (void)state;
    float W[16] = {1};
    nnz_spmat s;
    assert_int_equal(nnz_spmat_from_dense(-1, 4, W, 4, NULL, 4, 4, &s), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "negative"));
    assert_int_equal(nnz_spmat_from_dense(4, 4, W, 4, NULL, 3, 3, &s), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "block 3x3"));
    assert_int_equal(nnz_spmat_from_dense(4, 4, W, 4, NULL, 16, 1, &s), NNZ_ERR_INVALID_ARG);
    assert_int_equal(nnz_spmat_from_dense(4, 4, W, 2, NULL, 4, 4, &s), NNZ_ERR_INVALID_ARG);
    assert_int_equal(nnz_spmat_from_dense(4, 4, NULL, 4, NULL, 4, 4, &s), NNZ_ERR_INVALID_ARG);
    nnz_spmat_free(&s); /* left empty: safe */
    nnz_sparse_stats st;
    assert_int_equal(nnz_sparse_measure(4, 4, W, 4, NULL, 4, 2, &st), NNZ_ERR_INVALID_ARG);
    /* an empty matrix is fine */
    assert_int_equal(nnz_spmat_from_dense(0, 0, NULL, 0, NULL, 16, 16, &s), NNZ_OK);
    assert_int_equal(s.nblocks, 0);
    nnz_spmat_free(&s);
}

/* load_values after an "optimizer step": kernels see the new values, structure unchanged */
static void test_sparse_load_values(void **state) {
    (void)state;
    const int rows = 40, cols = 50;
    float *W = tu_falloc(rows * cols), *back = tu_falloc(rows * cols);
    tu_fill_uniform(W, rows * cols, -1, 1, 9);
    uint8_t *mask = make_mask(PAT_BLOCK, rows, cols, cols, 8, 8, 3);
    nnz_spmat s;
    assert_int_equal(nnz_spmat_from_dense(rows, cols, W, cols, mask, 8, 8, &s), NNZ_OK);
    for (int i = 0; i < rows * cols; i++) W[i] *= -2.0f;
    nnz_spmat_load_values(&s, W, cols, mask);
    nnz_spmat_to_dense(&s, back, cols);
    for (int i = 0; i < rows * cols; i++) assert_true(back[i] == (mask[i] ? W[i] : 0.0f));
    /* and the transposed copy: bwd-data with dout = e_i gives row i of Wm */
    float *dout = calloc(rows, sizeof(float)), *dX = tu_falloc(cols);
    assert_non_null(dout);
    for (int i = 0; i < rows; i++) {
        dout[i] = 1.0f;
        assert_int_equal(nnz_spmm_bwd_data_f32(&s, 1, dout, rows, false, dX, cols), NNZ_OK);
        for (int k = 0; k < cols; k++) assert_true(dX[k] == back[i * cols + k]);
        dout[i] = 0.0f;
    }
    nnz_spmat_free(&s);
    free(W), free(back), free(mask), free(dout), free(dX);
}

/* 1 and 2 threads: bit-identical outputs (SIMD paths, big enough to run threaded) */
static void determinism_isa(nnz_isa isa, void *ctx) {
    (void)ctx;
    if (isa < NNZ_ISA_AVX2) return; /* the reference is single-threaded */
    const int rows = 200, cols = 301, M = 211;
    float *W = tu_falloc((size_t)rows * cols), *X = tu_falloc((size_t)M * cols), *D = tu_falloc((size_t)M * rows);
    tu_fill_uniform(W, (int64_t)rows * cols, -1, 1, 11);
    tu_fill_uniform(X, (int64_t)M * cols, -1, 1, 12);
    tu_fill_uniform(D, (int64_t)M * rows, -1, 1, 13);
    const int threads_before = nnz_get_threads();
    for (int b = 0; b < NBLOCKS; b++) {
        const int r = blocks[b][0], c = blocks[b][1];
        uint8_t *mask = make_mask(r == 1 && c == 1 ? PAT_ELEM : PAT_BLOCK, rows, cols, cols, r, c, 20 + b);
        nnz_spmat s;
        assert_int_equal(nnz_spmat_from_dense(rows, cols, W, cols, mask, r, c, &s), NNZ_OK);
        const int64_t nv = nnz_spmat_val_count(&s);
        float *out[2], *dX[2], *dv[2];
        for (int t = 0; t < 2; t++) {
            nnz_set_threads(t + 1);
            out[t] = tu_falloc((size_t)M * rows), dX[t] = tu_falloc((size_t)M * cols), dv[t] = calloc((size_t)nv + 1, 4);
            assert_non_null(dv[t]);
            assert_int_equal(nnz_spmm_f32(&s, M, X, cols, NULL, false, out[t], rows), NNZ_OK);
            assert_int_equal(nnz_spmm_bwd_data_f32(&s, M, D, rows, false, dX[t], cols), NNZ_OK);
            assert_int_equal(nnz_sddmm_f32(&s, M, D, rows, X, cols, dv[t]), NNZ_OK);
        }
        if (memcmp(out[0], out[1], (size_t)M * rows * 4) || memcmp(dX[0], dX[1], (size_t)M * cols * 4) ||
            memcmp(dv[0], dv[1], (size_t)nv * 4))
            fail_msg("block %dx%d: 1 and 2 threads differ", r, c);
        for (int t = 0; t < 2; t++) free(out[t]), free(dX[t]), free(dv[t]);
        nnz_spmat_free(&s);
        free(mask);
    }
    nnz_set_threads(threads_before);
    free(W), free(X), free(D);
}

static void test_sparse_threads_deterministic(void **state) {
    (void)state;
    tu_for_each_isa(determinism_isa, NULL);
}

/* The planner's one-pass count of every candidate block equals nnz_sparse_measure's per block:
 * shapes not divisible by any block, ld > cols, random and blocky zero patterns, all zero,
 * all kept, a single kept element in the last corner. */
/* The turned-window matrix W'[ic][t*OC + oc] = W[oc][(taps-1-t)*IC + ic], built by moving W^T's
 * blocks, equals the same matrix made element by element, for every block shape that divides
 * the channels and every pattern; values follow W after nnz_spmat_load_values; blocks that would
 * straddle two taps are refused, a wrong tap count is an error. */
static void test_sparse_turned(void **state) {
    (void)state;
    const int taps = 9, IC = 32, OC = 64, K = taps * IC;
    float *W = tu_falloc((size_t)OC * K), *want = tu_falloc((size_t)IC * taps * OC), *got = tu_falloc((size_t)IC * taps * OC);
    for (int b = 0; b < NBLOCKS; b++)
        for (int p = 0; p < PAT_COUNT; p++) {
            const int r = blocks[b][0], c = blocks[b][1];
            tu_fill_uniform(W, (int64_t)OC * K, -1, 1, 50 + b * 7 + p);
            uint8_t *mask = make_mask((pattern)p, OC, K, K, r, c, 90 + b + p);
            nnz_spmat S;
            assert_int_equal(nnz_spmat_from_dense(OC, K, W, K, mask, r, c, &S), NNZ_OK);
            nnz_spmat_turned T;
            assert_int_equal(nnz_spmat_turned_build(&S, taps, IC, &T), NNZ_OK);
            for (int round = 0; round < 2; round++) {
                if (round == 1) { /* new values, same structure */
                    for (int64_t i = 0; i < (int64_t)OC * K; i++) W[i] = W[i] * -2.0f + 0.5f;
                    nnz_spmat_load_values(&S, W, K, mask);
                    nnz_spmat_turned_load(&S, &T);
                }
                for (int ic = 0; ic < IC; ic++)
                    for (int t = 0; t < taps; t++)
                        for (int oc = 0; oc < OC; oc++) {
                            const int64_t at = (int64_t)oc * K + (int64_t)(taps - 1 - t) * IC + ic;
                            want[((int64_t)ic * taps + t) * OC + oc] = mask[at] ? W[at] : 0.0f;
                        }
                nnz_spmat_to_dense(&T.mat, got, (int64_t)taps * OC);
                for (int64_t i = 0; i < (int64_t)IC * taps * OC; i++)
                    if (got[i] != want[i])
                        fail_msg("turned %dx%d %s round %d: [%lld] = %g, want %g", r, c, pattern_names[p], round,
                                 (long long)i, got[i], want[i]);
            }
            assert_int_equal(T.mat.nblocks, S.nblocks);
            nnz_spmat_turned_free(&T);
            nnz_spmat_free(&S);
            free(mask);
        }
    /* 16 channels per tap with 32-wide blocks along K: a block straddles two taps */
    nnz_spmat S;
    tu_fill_uniform(W, (int64_t)OC * 9 * 16, -1, 1, 3);
    assert_int_equal(nnz_spmat_from_dense(OC, 9 * 16, W, 9 * 16, NULL, 16, 32, &S), NNZ_OK);
    nnz_spmat_turned T;
    assert_int_equal(nnz_spmat_turned_build(&S, 9, 16, &T), NNZ_ERR_UNSUPPORTED);
    assert_null(T.mat.fwd.ptr);
    assert_int_equal(nnz_spmat_turned_build(&S, 4, 16, &T), NNZ_ERR_INVALID_ARG);
    nnz_spmat_turned_free(&T);
    nnz_spmat_free(&S);
    free(W);
    free(want);
    free(got);
}

static void test_sparse_measure_ladder(void **state) {
    (void)state;
    static const int shapes[][2] = {{37, 61}, {16, 32}, {1, 1}, {64, 576}, {33, 100}, {5, 3}, {17, 129}, {128, 31}};
    for (size_t sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++) {
        const int rows = shapes[sh][0], cols = shapes[sh][1], ld = cols + 3;
        float *W = calloc((size_t)rows * ld, sizeof(float));
        assert_non_null(W);
        for (int pattern = 0; pattern < 6; pattern++) {
            nnz_rng r = nnz_rng_make(sh * 10 + (uint64_t)pattern, 3);
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < ld; j++) {
                    bool keep;
                    switch (pattern) {
                    case 0: keep = nnz_rng_uniform(&r) < 0.1f; break;
                    case 1: keep = nnz_rng_uniform(&r) < 0.5f; break;
                    case 2: keep = nnz_rng_hash(sh, (uint64_t)(i / 8) * 131 + (uint64_t)(j / 8)) % 3 == 0; break;
                    case 3: keep = false; break;
                    case 4: keep = true; break;
                    default: keep = i == rows - 1 && j == cols - 1; break;
                    }
                    /* the padding past cols holds nonzeros that must not count */
                    W[(size_t)i * ld + j] = j >= cols ? 1.0f : keep ? nnz_rng_uniform(&r) - 2.0f : 0.0f;
                }
            int64_t ladder[NNZ_SPARSE_LADDER_N];
            assert_int_equal(nnz_sparse_measure_ladder(rows, cols, W, ld, ladder), NNZ_OK);
            for (int k = 0; k < NNZ_SPARSE_LADDER_N; k++) {
                nnz_sparse_stats st;
                assert_int_equal(nnz_sparse_measure(rows, cols, W, ld, NULL, NNZ_SPARSE_LADDER[k][0],
                                                    NNZ_SPARSE_LADDER[k][1], &st), NNZ_OK);
                if (ladder[k] != (k == 0 ? st.nnz : st.nblocks))
                    fail_msg("%dx%d pattern %d, %dx%d blocks: ladder %lld, measure %lld", rows, cols, pattern,
                             NNZ_SPARSE_LADDER[k][0], NNZ_SPARSE_LADDER[k][1], (long long)ladder[k],
                             (long long)(k == 0 ? st.nnz : st.nblocks));
            }
        }
        free(W);
    }
    int64_t ladder[NNZ_SPARSE_LADDER_N];
    float w[4] = {0};
    assert_int_equal(nnz_sparse_measure_ladder(-1, 4, w, 4, ladder), NNZ_ERR_INVALID_ARG);
    assert_int_equal(nnz_sparse_measure_ladder(1, 4, w, 3, ladder), NNZ_ERR_INVALID_ARG);
    assert_int_equal(nnz_sparse_measure_ladder(1, 4, w, 4, NULL), NNZ_ERR_INVALID_ARG);
    assert_int_equal(nnz_sparse_measure_ladder(0, 0, w, 0, ladder), NNZ_OK);
    for (int k = 0; k < NNZ_SPARSE_LADDER_N; k++) assert_int_equal(ladder[k], 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sparse_measure),
        cmocka_unit_test(test_sparse_measure_ladder),
        cmocka_unit_test(test_sparse_invalid_args),
        cmocka_unit_test(test_sparse_mask_null),
        cmocka_unit_test(test_sparse_load_values),
        cmocka_unit_test(test_sparse_all_blocks_all_isas),
        cmocka_unit_test(test_sparse_threads_deterministic),
        cmocka_unit_test(test_sparse_turned),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
