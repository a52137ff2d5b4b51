/* The bf16 sparse kernels (bf16 weights and activations, fp32 accumulation): forward SpMM
 * (overwrite over NaNs, accumulate, bias) and backward-data, for every block shape, on every
 * path this machine can run (the dispatcher on every ISA path; explicitly the reference,
 * avx512bf16, real AMX where the CPU and OS allow it, and the AMX layout through the plain-C
 * tile emulator everywhere), against
 *   - the double-precision dense product of the bf16-rounded masked matrix and bf16-rounded
 *     activations (nnz_gemm_bf16_ref's arithmetic), and
 *   - the reference nnz_spmm_bsr_bf16_ref (the AMX emulation: bit for bit; the others within
 *     the summation bound, since vdpbf16ps may add a pair in the other order),
 * on random element masks, random block masks, empty rows and block rows, an all-zero matrix
 * and a single nonzero block, with shapes not divisible by the block, M = 1, odd K, M past
 * one 48/64-row item, padded leading dimensions. Also: the VNNI pair layout of val_bf16 at
 * every kept position, fp32 activations (_f32in) equal to pre-rounded bf16 ones bit for bit,
 * refreshed values, unpacked matrices and inapplicable paths refused, 1 and 2 threads
 * bit-identical on every path. And the bf16 SDDMM (weight gradient at the kept blocks) the
 * same way: every block shape, every path, odd M and M past one staging chunk, against the
 * double oracle of the bf16-rounded inputs and the reference (AMX emulation bit for bit),
 * padding of dval untouched, 1 and 2 threads bit-identical.
 *
 * Tolerance (as test_sparse_kernels): the products of two bf16 are exact in fp32, so each
 * path's result is a float32 sum of n exact terms plus the base: within
 * (n+2)*u*(sum|a_k b_k| + |base|) of exact (u = 2^-24); we allow 2x that against the double
 * oracle, and 2x + 2x against the reference (both sides' error). Inputs are uniform in
 * [-1, 1]: no denormals, so the DAZ/FTZ of the hardware paths does not enter. */
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

#define UNIT_ROUNDOFF 5.9604644775390625e-8 /* 2^-24 */

typedef enum { PAT_ELEM, PAT_BLOCK, PAT_EMPTY_ROWS, PAT_ALL_ZERO, PAT_SINGLE, PAT_COUNT } pattern;
static const char *const pattern_names[] = {"elem", "block", "empty-rows", "all-zero", "single-block"};

static const int blocks[][2] = {{1, 1},   {1, 4},   {4, 4},   {4, 32},  {8, 8},   {8, 16},  {16, 4},
                                {16, 16}, {16, 32}, {32, 8},  {32, 16}, {32, 32}, {1, 32},  {8, 32}};
#define NBLOCKS ((int)(sizeof blocks / sizeof blocks[0]))

static void *xalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}
static float *falloc(size_t n) { return xalloc(n * sizeof(float)); }

/* the shared masks (test_util.h); the pattern enum above in their order, PAT_SINGLE = TU_MASK_SINGLE_BLOCK */
static uint8_t *make_mask(pattern p, int rows, int cols, int64_t ldw, int r, int c, uint64_t seed) {
    return tu_sparse_mask(p == PAT_SINGLE ? TU_MASK_SINGLE_BLOCK : (tu_mask_pattern)p, rows, cols, ldw, r, c, seed);
}

/* got vs want (both (n, cols) with ld): |d| <= mult * (nterms+2) * u * (S + |base|) */
static void check_close(const char *what, const char *ctx, const float *got, const double *want, const double *S,
                        const float *base, int64_t n, int64_t cols, int64_t ld, int nterms, double mult) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = 0; k < cols; k++) {
            const int64_t at = i * ld + k;
            const double b = base ? fabs((double)base[at]) : 0.0;
            const double tol = mult * (nterms + 2) * UNIT_ROUNDOFF * (S[at] + b) + 1e-30;
            const double d = fabs((double)got[at] - want[at]);
            if (!(d <= tol))
                fail_msg("%s %s: [%lld,%lld] = %.9g, expected %.9g (tol %g)", what, ctx, (long long)i, (long long)k,
                         got[at], want[at], tol);
        }
}

/* want (M, n) = base + A(M,K) * B, B given as (n,K) when bT else (K,n), all fp32 (bf16 values);
 * S the same with |.| */
static void dense_oracle(int M, int n, int K, const float *A, int64_t lda, const float *B, bool bT,
                         const float *base, int64_t ldo, double *want, double *S) {
    for (int m = 0; m < M; m++)
        for (int j = 0; j < n; j++) {
            double s = 0, a = 0;
            for (int k = 0; k < K; k++) {
                const double p = (double)A[(int64_t)m * lda + k] * (bT ? B[(int64_t)j * K + k] : B[(int64_t)k * n + j]);
                s += p, a += fabs(p);
            }
            want[(int64_t)m * ldo + j] = (double)base[(int64_t)m * ldo + j] + s;
            S[(int64_t)m * ldo + j] = a;
        }
}

typedef struct {
    int rows, cols, M;
    int pad;
} shape;

static const nnz_spmm_bf16_path all_paths[] = {NNZ_SPMM_BF16_REF, NNZ_SPMM_BF16_AVX512BF16, NNZ_SPMM_BF16_AMX,
                                               NNZ_SPMM_BF16_AMX_EMULATED};

/* the documented pair layout: every in-bounds position of every kept block */
static void check_layout(const nnz_bsr *A, const float *Wb, int64_t ldw, bool transposed, const char *ctx) {
    const int r = A->r, c = A->c, cp = (c + 1) / 2 * 2;
    for (int br = 0; br < A->brows; br++)
        for (int32_t j = A->ptr[br]; j < A->ptr[br + 1]; j++)
            for (int kk = 0; kk < cp; kk++)
                for (int ii = 0; ii < r; ii++) {
                    const int i = br * r + ii, k = A->idx[j] * c + kk;
                    const float got = nnz_bf16_to_f32(A->val_bf16[(int64_t)j * r * cp + (kk / 2) * r * 2 + ii * 2 + kk % 2]);
                    float want = 0.0f;
                    if (kk < c && i < A->rows && k < A->cols)
                        want = transposed ? Wb[(int64_t)k * ldw + i] : Wb[(int64_t)i * ldw + k];
                    if (got != want) fail_msg("%s: val_bf16 (%d,%d) = %g, expected %g", ctx, i, k, got, want);
                }
}

/* One product on every path that applies plus the dispatcher, against the oracle and the ref.
 * A: the orientation; X (M, K) fp32 holding bf16 values, ldx; Xb the same as bf16; Wt: the
 * bf16-rounded masked matrix of the orientation as (n, K) row-major dense. */
static void check_product(const char *what, const char *ctx, const nnz_spmat *s, bool bwd, int M, int n, int K,
                          const float *Xr, const nnz_bf16 *Xb, const float *Xf, int64_t ldx, const float *Wt,
                          const float *bias, int64_t ldo, uint64_t seed) {
    const nnz_bsr *A = bwd ? &s->tr : &s->fwd;
    const int64_t len = (int64_t)M * ldo;
    for (int variant = 0; variant < (bwd ? 2 : 3); variant++) {
        const bool acc = variant == 1, use_bias = variant == 2;
        float *init = falloc((size_t)len), *base = falloc((size_t)len), *ref = falloc((size_t)len),
              *out = falloc((size_t)len);
        double *want = xalloc((size_t)len * sizeof(double)), *S = xalloc((size_t)len * sizeof(double));
        tu_fill_uniform(init, len, -1, 1, seed + variant);
        for (int64_t i = 0; i < len; i++) {
            base[i] = (acc ? init[i] : 0.0f) + (use_bias ? bias[i % ldo] : 0.0f);
            if (!acc) init[i] = NAN; /* overwrite must ignore NaNs */
        }
        dense_oracle(M, n, K, Xr, ldx, Wt, true, base, ldo, want, S);
        const float *bptr = use_bias ? bias : NULL;
        const nnz_bf16_src xsrc = {.p = Xb, .ld = ldx, .trans = false, .f32 = false};
        memcpy(ref, init, (size_t)len * sizeof(float));
        nnz_spmm_bsr_bf16_ref(A, M, &xsrc, bptr, acc, ref, ldo);
        char c2[300];
        snprintf(c2, sizeof c2, "%s %s acc=%d bias=%d", what, ctx, acc, use_bias);
        check_close("ref vs dense", c2, ref, want, S, base, M, n, ldo, K, 2.0);
        double *refd = xalloc((size_t)len * sizeof(double));
        for (int64_t i = 0; i < len; i++) refd[i] = ref[i];
        /* the dispatcher on the active ISA, bf16 and fp32 activations */
        for (int f32 = 0; f32 < 2; f32++) {
            memcpy(out, init, (size_t)len * sizeof(float));
            nnz_status st;
            if (!bwd)
                st = f32 ? nnz_spmm_bf16_f32in(s, M, Xf, ldx, bptr, acc, out, ldo)
                         : nnz_spmm_bf16(s, M, Xb, ldx, bptr, acc, out, ldo);
            else
                st = f32 ? nnz_spmm_bwd_data_bf16_f32in(s, M, Xf, ldx, acc, out, ldo)
                         : nnz_spmm_bwd_data_bf16(s, M, Xb, ldx, acc, out, ldo);
            assert_int_equal(st, NNZ_OK);
            char c3[340];
            snprintf(c3, sizeof c3, "%s dispatch(%s)%s", c2, nnz_spmm_bf16_path_name(nnz_spmm_bf16_path_for(A)),
                     f32 ? " f32in" : "");
            check_close("vs dense", c3, out, want, S, base, M, n, ldo, K, 2.0);
            check_close("vs ref", c3, out, refd, S, base, M, n, ldo, K, 4.0);
        }
        /* every explicit path that applies at this ISA (below avx512 the AMX emulation's
         * epilogue is plain C) */
        for (size_t p = 0; p < sizeof all_paths / sizeof all_paths[0]; p++) {
                if (!nnz_spmm_bf16_path_applies(all_paths[p], A)) continue;
                for (int f32 = 0; f32 < 2; f32++) {
                    const nnz_bf16_src src = {.p = f32 ? (const void *)Xf : (const void *)Xb, .ld = ldx, .trans = false, .f32 = f32 != 0};
                    memcpy(out, init, (size_t)len * sizeof(float));
                    assert_int_equal(nnz_spmm_bf16_via(all_paths[p], A, M, &src, bptr, acc, out, ldo), NNZ_OK);
                    char c3[340];
                    snprintf(c3, sizeof c3, "%s path=%s%s", c2, nnz_spmm_bf16_path_name(all_paths[p]), f32 ? " f32in" : "");
                    check_close("vs dense", c3, out, want, S, base, M, n, ldo, K, 2.0);
                    if (all_paths[p] == NNZ_SPMM_BF16_AMX_EMULATED || all_paths[p] == NNZ_SPMM_BF16_REF) {
                        for (int m = 0; m < M; m++) tu_assert_same_values(out + (int64_t)m * ldo, ref + (int64_t)m * ldo, n);
                    } else {
                        check_close("vs ref", c3, out, refd, S, base, M, n, ldo, K, 4.0);
                    }
                }
            }
        free(init), free(base), free(ref), free(out), free(want), free(S), free(refd);
    }
}

static void run_case(const shape *sh, int r, int c, pattern p, uint64_t seed) {
    const int rows = sh->rows, cols = sh->cols, M = sh->M;
    const int64_t ldw = cols + sh->pad, ldx = cols + sh->pad, ldo = rows + sh->pad;
    char ctx[200];
    snprintf(ctx, sizeof ctx, "isa=%s block=%dx%d W=%dx%d M=%d pad=%d pattern=%s", nnz_isa_name(nnz_isa_active()),
             r, c, rows, cols, M, sh->pad, pattern_names[p]);

    float *W = falloc((size_t)(rows * ldw));
    tu_fill_uniform(W, rows * ldw, -1, 1, seed);
    uint8_t *mask = make_mask(p, rows, cols, ldw, r, c, seed + 1);
    nnz_spmat s;
    assert_int_equal(nnz_spmat_from_dense(rows, cols, W, ldw, mask, r, c, &s), NNZ_OK);
    assert_int_equal(nnz_spmat_pack_bf16(&s), NNZ_OK);
    /* the bf16-rounded masked matrix (rows, cols) dense, and its transpose */
    float *Wb = falloc((size_t)rows * cols), *WbT = falloc((size_t)rows * cols);
    for (int i = 0; i < rows; i++)
        for (int k = 0; k < cols; k++) {
            const int64_t at = (int64_t)i * ldw + k;
            Wb[(int64_t)i * cols + k] = mask[at] ? nnz_bf16_round(W[at]) : 0.0f;
            WbT[(int64_t)k * rows + i] = Wb[(int64_t)i * cols + k];
        }
    check_layout(&s.fwd, Wb, cols, false, ctx);
    check_layout(&s.tr, Wb, cols, true, ctx);

    /* activations: fp32 originals, their bf16 values as fp32, and as bf16 */
    const int64_t ldd = rows + sh->pad;
    float *Xf = falloc((size_t)(M * ldx)), *Xr = falloc((size_t)(M * ldx)), *Df = falloc((size_t)(M * ldd)),
          *Dr = falloc((size_t)(M * ldd)), *bias = falloc((size_t)ldo);
    nnz_bf16 *Xb = xalloc((size_t)(M * ldx) * 2 + 2), *Db = xalloc((size_t)(M * ldd) * 2 + 2);
    tu_fill_uniform(Xf, M * ldx, -1, 1, seed + 2);
    tu_fill_uniform(Df, M * ldd, -1, 1, seed + 3);
    tu_fill_uniform(bias, ldo, -1, 1, seed + 4);
    for (int64_t i = 0; i < M * ldx; i++) {
        if (i % ldx >= cols) Xf[i] = NAN; /* padding is never read */
        Xb[i] = nnz_bf16_from_f32(Xf[i]), Xr[i] = nnz_bf16_to_f32(Xb[i]);
    }
    for (int64_t i = 0; i < M * ldd; i++) {
        if (i % ldd >= rows) Df[i] = NAN;
        Db[i] = nnz_bf16_from_f32(Df[i]), Dr[i] = nnz_bf16_to_f32(Db[i]);
    }
    check_product("fwd", ctx, &s, false, M, rows, cols, Xr, Xb, Xf, ldx, Wb, bias, ldo, seed + 10);
    check_product("bwd_data", ctx, &s, true, M, cols, rows, Dr, Db, Df, ldd, WbT, NULL, ldx, seed + 20);
    nnz_spmat_free(&s);
    free(W), free(mask), free(Wb), free(WbT), free(Xf), free(Xr), free(Df), free(Dr), free(bias), free(Xb), free(Db);
}

static const shape shapes[] = {
    {37, 45, 5, 0},   /* nothing divisible */
    {64, 64, 13, 3},  /* divisible by every block; padded ld */
    {33, 70, 1, 0},   /* M = 1 */
    {17, 31, 66, 1},  /* K odd, M past one 48- and one 64-row item */
    {40, 100, 50, 2}, /* more blocks per row */
    {48, 96, 72, 7},  /* cols a multiple of 32: the AMX tiles read bf16 X in place for the first
                         64-row item, the 8-row tail item is staged; padded ld */
};

/* Every shape and pattern at the best ISA (where every path is tried); below it the
 * dispatcher runs the reference, checked on the first shape, every pattern, for time. */
static void all_blocks_isa(nnz_isa isa, void *ctx) {
    (void)ctx;
    uint64_t seed = 100;
    const size_t nshapes = isa == nnz_isa_best() ? sizeof shapes / sizeof shapes[0] : 1;
    for (int b = 0; b < NBLOCKS; b++)
        for (size_t sh = 0; sh < nshapes; sh++)
            for (int p = 0; p < PAT_COUNT; p++) run_case(&shapes[sh], blocks[b][0], blocks[b][1], (pattern)p, seed++);
}

static void test_spmm_bf16_all_blocks_all_isas(void **state) {
    (void)state;
    tu_for_each_isa(all_blocks_isa, NULL);
}

/* M = 0 leaves out alone; an unpacked matrix and a path that cannot run are refused with a message */
static void test_spmm_bf16_refusals(void **state) {
    (void)state;
    float W[32 * 64];
    tu_fill_uniform(W, 32 * 64, -1, 1, 3);
    nnz_spmat s;
    assert_int_equal(nnz_spmat_from_dense(32, 64, W, 64, NULL, 16, 16, &s), NNZ_OK);
    nnz_bf16 X[64] = {0};
    float out[32];
    assert_int_equal(nnz_spmm_bf16(&s, 1, X, 64, NULL, false, out, 32), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "nnz_spmat_pack_bf16"));
    assert_false(nnz_spmm_bf16_path_applies(NNZ_SPMM_BF16_REF, &s.fwd));
    assert_int_equal(nnz_spmat_pack_bf16(&s), NNZ_OK);
    const nnz_bf16_src src = {.p = X, .ld = 64, .trans = false, .f32 = false};
    /* 16x16: not an AMX shape */
    assert_false(nnz_spmm_bf16_path_applies(NNZ_SPMM_BF16_AMX_EMULATED, &s.fwd));
    assert_int_equal(nnz_spmm_bf16_via(NNZ_SPMM_BF16_AMX_EMULATED, &s.fwd, 1, &src, NULL, false, out, 32),
                     NNZ_ERR_UNSUPPORTED);
    assert_non_null(strstr(nnz_last_error(), "16x16"));
    for (int i = 0; i < 32; i++) out[i] = 7.0f;
    assert_int_equal(nnz_spmm_bf16(&s, 0, X, 64, NULL, false, out, 32), NNZ_OK);
    for (int i = 0; i < 32; i++) assert_true(out[i] == 7.0f);
    nnz_spmat_free(&s);
    /* CSR: the reference only */
    assert_int_equal(nnz_spmat_from_dense(32, 64, W, 64, NULL, 1, 1, &s), NNZ_OK);
    assert_int_equal(nnz_spmat_pack_bf16(&s), NNZ_OK);
    assert_int_equal(nnz_spmm_bf16_path_for(&s.fwd), NNZ_SPMM_BF16_REF);
    assert_false(nnz_spmm_bf16_path_applies(NNZ_SPMM_BF16_AVX512BF16, &s.fwd));
    nnz_spmat_free(&s);
}

/* load_values after an "optimizer step" refreshes the bf16 copy of both orientations */
static void test_spmm_bf16_load_values(void **state) {
    (void)state;
    const int rows = 48, cols = 64;
    float *W = falloc(rows * cols);
    tu_fill_uniform(W, rows * cols, -1, 1, 9);
    uint8_t *mask = make_mask(PAT_BLOCK, rows, cols, cols, 16, 32, 3);
    nnz_spmat s;
    assert_int_equal(nnz_spmat_from_dense(rows, cols, W, cols, mask, 16, 32, &s), NNZ_OK);
    assert_int_equal(nnz_spmat_pack_bf16(&s), NNZ_OK);
    for (int i = 0; i < rows * cols; i++) W[i] = W[i] * -2.0f + 0.25f;
    nnz_spmat_load_values(&s, W, cols, mask);
    float *Wb = falloc(rows * cols);
    for (int i = 0; i < rows * cols; i++) Wb[i] = mask[i] ? nnz_bf16_round(W[i]) : 0.0f;
    check_layout(&s.fwd, Wb, cols, false, "load_values");
    check_layout(&s.tr, Wb, cols, true, "load_values");
    nnz_spmat_free(&s);
    free(W), free(mask), free(Wb);
}

/* 1 and 2 threads: bit-identical on every path (big enough to run threaded) */
static void test_spmm_bf16_threads_deterministic(void **state) {
    (void)state;
    const int rows = 200, cols = 301, M = 211;
    float *W = falloc((size_t)rows * cols), *Xf = falloc((size_t)M * cols), *Df = falloc((size_t)M * rows);
    tu_fill_uniform(W, (int64_t)rows * cols, -1, 1, 11);
    tu_fill_uniform(Xf, (int64_t)M * cols, -1, 1, 12);
    tu_fill_uniform(Df, (int64_t)M * rows, -1, 1, 13);
    const int threads_before = nnz_get_threads();
    for (int b = 0; b < NBLOCKS; b++) {
        const int r = blocks[b][0], c = blocks[b][1];
        uint8_t *mask = make_mask(PAT_BLOCK, rows, cols, cols, r, c, 20 + b);
        nnz_spmat s;
        assert_int_equal(nnz_spmat_from_dense(rows, cols, W, cols, mask, r, c, &s), NNZ_OK);
        assert_int_equal(nnz_spmat_pack_bf16(&s), NNZ_OK);
        for (size_t p = 0; p < sizeof all_paths / sizeof all_paths[0]; p++)
            for (int bwd = 0; bwd < 2; bwd++) {
                const nnz_bsr *A = bwd ? &s.tr : &s.fwd;
                if (!nnz_spmm_bf16_path_applies(all_paths[p], A) || all_paths[p] == NNZ_SPMM_BF16_REF) continue;
                const int n = bwd ? cols : rows;
                const nnz_bf16_src src = {.p = bwd ? Df : Xf, .ld = bwd ? rows : cols, .trans = false, .f32 = true};
                float *out[2];
                for (int t = 0; t < 2; t++) {
                    nnz_set_threads(t + 1);
                    out[t] = falloc((size_t)M * n);
                    assert_int_equal(nnz_spmm_bf16_via(all_paths[p], A, M, &src, NULL, false, out[t], n), NNZ_OK);
                }
                if (memcmp(out[0], out[1], (size_t)M * n * sizeof(float)))
                    fail_msg("block %dx%d %s path %s: 1 and 2 threads differ", r, c, bwd ? "bwd" : "fwd",
                             nnz_spmm_bf16_path_name(all_paths[p]));
                free(out[0]), free(out[1]);
            }
        nnz_spmat_free(&s);
        free(mask);
    }
    nnz_set_threads(threads_before);
    free(W), free(Xf), free(Df);
}

/* ---- SDDMM (bf16 inputs, fp32 sums): dval (+)= dout^T X at the kept blocks ---- */

/* M not a multiple of 2, 16 or 32 (odd pairs, partial tiles) in every shape; past one
 * 256-row staging chunk in the last */
static const shape sddmm_shapes[] = {
    {37, 45, 5, 0},    /* nothing divisible */
    {64, 64, 13, 3},   /* divisible by every block; padded ld */
    {33, 70, 1, 0},    /* M = 1 */
    {17, 31, 67, 1},   /* K odd */
    {48, 96, 45, 7},   /* cols a multiple of 32; padded ld */
    {40, 64, 301, 2},  /* M past one 256-row chunk */
};

/* a denormal: vdpbf16ps and tdpbf16ps flush one they add to, so a padded position that a
 * SIMD path reads and writes back (even with only zero products) changes */
#define PAD_SENTINEL 1e-40f

/* One case: the reference against the double oracle of the bf16-rounded inputs, then the
 * dispatcher and every explicit path that applies (bf16 and fp32 inputs) against the oracle
 * and the reference (the AMX emulation and the reference itself bit for bit). dval starts at
 * random values (the running sums start there); padded positions hold a sentinel that must
 * stay. The matrix is not packed: the SDDMM reads only the structure. */
static void run_sddmm_case(const shape *sh, int r, int c, pattern p, uint64_t seed) {
    const int rows = sh->rows, cols = sh->cols, M = sh->M;
    const int64_t ldw = cols, ldx = cols + sh->pad, ldd = rows + sh->pad;
    char ctx[200];
    snprintf(ctx, sizeof ctx, "sddmm isa=%s block=%dx%d W=%dx%d M=%d pad=%d pattern=%s",
             nnz_isa_name(nnz_isa_active()), r, c, rows, cols, M, sh->pad, pattern_names[p]);
    float *W = falloc((size_t)rows * cols);
    tu_fill_uniform(W, (int64_t)rows * cols, -1, 1, seed);
    uint8_t *mask = make_mask(p, rows, cols, ldw, r, c, seed + 1);
    nnz_spmat s;
    assert_int_equal(nnz_spmat_from_dense(rows, cols, W, ldw, mask, r, c, &s), NNZ_OK);
    const nnz_bsr *A = &s.fwd;
    float *Xf = falloc((size_t)M * ldx), *Xr = falloc((size_t)M * ldx), *Df = falloc((size_t)M * ldd),
          *Dr = falloc((size_t)M * ldd);
    nnz_bf16 *Xb = xalloc((size_t)M * ldx * 2), *Db = xalloc((size_t)M * ldd * 2);
    tu_fill_uniform(Xf, (int64_t)M * ldx, -1, 1, seed + 2);
    tu_fill_uniform(Df, (int64_t)M * ldd, -1, 1, seed + 3);
    for (int64_t i = 0; i < (int64_t)M * ldx; i++) {
        if (i % ldx >= cols) Xf[i] = NAN; /* padding is never read */
        Xb[i] = nnz_bf16_from_f32(Xf[i]), Xr[i] = nnz_bf16_to_f32(Xb[i]);
    }
    for (int64_t i = 0; i < (int64_t)M * ldd; i++) {
        if (i % ldd >= rows) Df[i] = NAN;
        Db[i] = nnz_bf16_from_f32(Df[i]), Dr[i] = nnz_bf16_to_f32(Db[i]);
    }
    const int64_t nv = nnz_spmat_val_count(&s);
    float *init = falloc((size_t)nv), *ref = falloc((size_t)nv), *out = falloc((size_t)nv);
    double *want = xalloc((size_t)(nv ? nv : 1) * sizeof(double)), *S = xalloc((size_t)(nv ? nv : 1) * sizeof(double));
    bool *inb = xalloc((size_t)(nv ? nv : 1));
    tu_fill_uniform(init, nv, -1, 1, seed + 4);
    for (int br = 0; br < A->brows; br++)
        for (int32_t j = A->ptr[br]; j < A->ptr[br + 1]; j++)
            for (int kk = 0; kk < c; kk++)
                for (int ii = 0; ii < r; ii++) {
                    const int64_t at = (int64_t)j * r * c + kk * r + ii;
                    const int i = br * r + ii, k = A->idx[j] * c + kk;
                    inb[at] = i < rows && k < cols;
                    if (!inb[at]) {
                        init[at] = PAD_SENTINEL; /* padding: neither read nor written */
                        continue;
                    }
                    double sum = 0, a = 0;
                    for (int m = 0; m < M; m++) {
                        const double prod = (double)Dr[(int64_t)m * ldd + i] * Xr[(int64_t)m * ldx + k];
                        sum += prod, a += fabs(prod);
                    }
                    want[at] = (double)init[at] + sum, S[at] = a;
                }
    const nnz_bf16_src db = {.p = Db, .ld = ldd, .trans = false, .f32 = false}, xb = {.p = Xb, .ld = ldx, .trans = false, .f32 = false};
    const nnz_bf16_src dfs = {.p = Df, .ld = ldd, .trans = false, .f32 = true}, xfs = {.p = Xf, .ld = ldx, .trans = false, .f32 = true};
    memcpy(ref, init, (size_t)nv * sizeof(float));
    nnz_sddmm_bsr_bf16_ref(A, M, &db, &xb, ref);
    double *refd = xalloc((size_t)(nv ? nv : 1) * sizeof(double));
    for (int64_t v = 0; v < nv; v++) refd[v] = ref[v];
    /* got vs want at the in-bounds positions (tolerance mult*(M+2)*u*(S + |init|)), the sentinel elsewhere */
    #define SDDMM_CHECK(label, got, against, mult)                                                               \
        for (int64_t v = 0; v < nv; v++) {                                                                       \
            if (!inb[v]) {                                                                                       \
                if ((got)[v] != PAD_SENTINEL) fail_msg("%s %s: padding value %lld written", label, ctx, (long long)v); \
                continue;                                                                                        \
            }                                                                                                    \
            const double tol = (mult) * (M + 2) * UNIT_ROUNDOFF * (S[v] + fabs((double)init[v])) + 1e-30;        \
            if (!(fabs((double)(got)[v] - (against)[v]) <= tol))                                                 \
                fail_msg("%s %s: value %lld = %.9g, expected %.9g (tol %g)", label, ctx, (long long)v, (got)[v], \
                         (against)[v], tol);                                                                     \
        }
    SDDMM_CHECK("ref vs dense", ref, want, 2.0);
    for (int f32 = 0; f32 < 2; f32++) { /* the dispatcher */
        memcpy(out, init, (size_t)nv * sizeof(float));
        assert_int_equal(f32 ? nnz_sddmm_bf16_f32in(&s, M, Df, ldd, Xf, ldx, out)
                             : nnz_sddmm_bf16(&s, M, Db, ldd, Xb, ldx, out), NNZ_OK);
        char label[80];
        snprintf(label, sizeof label, "dispatch(%s)%s", nnz_spmm_bf16_path_name(nnz_sddmm_bf16_path_for(A)),
                 f32 ? " f32in" : "");
        SDDMM_CHECK(label, out, want, 2.0);
        SDDMM_CHECK(label, out, refd, 4.0);
    }
    for (size_t q = 0; q < sizeof all_paths / sizeof all_paths[0]; q++) {
        if (!nnz_sddmm_bf16_path_applies(all_paths[q], A)) continue;
        for (int f32 = 0; f32 < 2; f32++) {
            memcpy(out, init, (size_t)nv * sizeof(float));
            assert_int_equal(nnz_sddmm_bf16_via(all_paths[q], A, M, f32 ? &dfs : &db, f32 ? &xfs : &xb, out), NNZ_OK);
            char label[80];
            snprintf(label, sizeof label, "path=%s%s", nnz_spmm_bf16_path_name(all_paths[q]), f32 ? " f32in" : "");
            SDDMM_CHECK(label, out, want, 2.0);
            if (all_paths[q] == NNZ_SPMM_BF16_AMX_EMULATED || all_paths[q] == NNZ_SPMM_BF16_REF)
                tu_assert_same_values(out, ref, nv);
            else
                SDDMM_CHECK(label, out, refd, 4.0);
        }
    }
    #undef SDDMM_CHECK
    nnz_spmat_free(&s);
    free(W), free(mask), free(Xf), free(Xr), free(Df), free(Dr), free(Xb), free(Db);
    free(init), free(ref), free(out), free(want), free(S), free(inb), free(refd);
}

/* Every block shape, shape and pattern at the best ISA (every path that applies is tried);
 * below it the dispatcher runs the reference: the first two shapes, every pattern */
static void sddmm_isa(nnz_isa isa, void *ctx) {
    (void)ctx;
    uint64_t seed = 500;
    const size_t nshapes = isa == nnz_isa_best() ? sizeof sddmm_shapes / sizeof sddmm_shapes[0] : 2;
    for (int b = 0; b < NBLOCKS; b++)
        for (size_t sh = 0; sh < nshapes; sh++)
            for (int p = 0; p < PAT_COUNT; p++)
                run_sddmm_case(&sddmm_shapes[sh], blocks[b][0], blocks[b][1], (pattern)p, seed++);
}

static void test_sddmm_bf16_all_blocks_all_isas(void **state) {
    (void)state;
    tu_for_each_isa(sddmm_isa, NULL);
}

/* Which paths apply to which blocks; a path that cannot run is refused with a message; M = 0
 * leaves dval alone */
static void test_sddmm_bf16_paths_and_refusals(void **state) {
    (void)state;
    float W[32 * 64];
    tu_fill_uniform(W, 32 * 64, -1, 1, 5);
    for (int b = 0; b < NBLOCKS; b++) {
        const int r = blocks[b][0], c = blocks[b][1];
        nnz_spmat s;
        assert_int_equal(nnz_spmat_from_dense(32, 64, W, 64, NULL, r, c, &s), NNZ_OK);
        const bool amx = (r == 16 || r == 32) && (c == 16 || c == 32), csr = r == 1 && c == 1;
        assert_true(nnz_sddmm_bf16_path_applies(NNZ_SPMM_BF16_REF, &s.fwd)); /* unpacked: no bf16 values needed */
        assert_int_equal(nnz_sddmm_bf16_path_applies(NNZ_SPMM_BF16_AMX_EMULATED, &s.fwd), amx);
        if (csr) assert_false(nnz_sddmm_bf16_path_applies(NNZ_SPMM_BF16_AVX512BF16, &s.fwd));
        const nnz_spmm_bf16_path want = amx && nnz_isa_supported(NNZ_ISA_AMX) ? NNZ_SPMM_BF16_AMX
                                        : !csr && nnz_isa_supported(NNZ_ISA_AVX512BF16) ? NNZ_SPMM_BF16_AVX512BF16
                                                                                         : NNZ_SPMM_BF16_REF;
        assert_int_equal(nnz_sddmm_bf16_path_for(&s.fwd), want);
        if (!amx) {
            nnz_bf16 X[64] = {0};
            float dv[32 * 64];
            const nnz_bf16_src src = {.p = X, .ld = 64, .trans = false, .f32 = false};
            assert_int_equal(nnz_sddmm_bf16_via(NNZ_SPMM_BF16_AMX_EMULATED, &s.fwd, 1, &src, &src, dv),
                             NNZ_ERR_UNSUPPORTED);
            char blk[16];
            snprintf(blk, sizeof blk, "%dx%d", r, c);
            assert_non_null(strstr(nnz_last_error(), blk));
        }
        const int64_t nv = nnz_spmat_val_count(&s);
        float *dv = falloc((size_t)nv);
        for (int64_t v = 0; v < nv; v++) dv[v] = 7.0f;
        float X[64] = {0};
        assert_int_equal(nnz_sddmm_bf16_f32in(&s, 0, X, 32, X, 64, dv), NNZ_OK);
        for (int64_t v = 0; v < nv; v++) assert_true(dv[v] == 7.0f);
        free(dv);
        nnz_spmat_free(&s);
    }
}

/* 1 and 2 threads: bit-identical on every path (big enough to run threaded, two chunks of m) */
static void test_sddmm_bf16_threads_deterministic(void **state) {
    (void)state;
    const int rows = 200, cols = 301, M = 299;
    float *W = falloc((size_t)rows * cols), *Xf = falloc((size_t)M * cols), *Df = falloc((size_t)M * rows);
    tu_fill_uniform(W, (int64_t)rows * cols, -1, 1, 31);
    tu_fill_uniform(Xf, (int64_t)M * cols, -1, 1, 32);
    tu_fill_uniform(Df, (int64_t)M * rows, -1, 1, 33);
    const int threads_before = nnz_get_threads();
    const nnz_bf16_src d = {.p = Df, .ld = rows, .trans = false, .f32 = true}, x = {.p = Xf, .ld = cols, .trans = false, .f32 = true};
    for (int b = 0; b < NBLOCKS; b++) {
        const int r = blocks[b][0], c = blocks[b][1];
        uint8_t *mask = make_mask(PAT_BLOCK, rows, cols, cols, r, c, 40 + b);
        nnz_spmat s;
        assert_int_equal(nnz_spmat_from_dense(rows, cols, W, cols, mask, r, c, &s), NNZ_OK);
        const int64_t nv = nnz_spmat_val_count(&s);
        for (size_t p = 0; p < sizeof all_paths / sizeof all_paths[0]; p++) {
            if (!nnz_sddmm_bf16_path_applies(all_paths[p], &s.fwd) || all_paths[p] == NNZ_SPMM_BF16_REF) continue;
            float *dv[2];
            for (int t = 0; t < 2; t++) {
                nnz_set_threads(t + 1);
                dv[t] = falloc((size_t)nv);
                tu_fill_uniform(dv[t], nv, -1, 1, 50);
                assert_int_equal(nnz_sddmm_bf16_via(all_paths[p], &s.fwd, M, &d, &x, dv[t]), NNZ_OK);
            }
            if (memcmp(dv[0], dv[1], (size_t)nv * sizeof(float)))
                fail_msg("sddmm block %dx%d path %s: 1 and 2 threads differ", r, c,
                         nnz_spmm_bf16_path_name(all_paths[p]));
            free(dv[0]), free(dv[1]);
        }
        nnz_spmat_free(&s);
        free(mask);
    }
    nnz_set_threads(threads_before);
    free(W), free(Xf), free(Df);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spmm_bf16_refusals),
        cmocka_unit_test(test_spmm_bf16_load_values),
        cmocka_unit_test(test_spmm_bf16_all_blocks_all_isas),
        cmocka_unit_test(test_spmm_bf16_threads_deterministic),
        cmocka_unit_test(test_sddmm_bf16_paths_and_refusals),
        cmocka_unit_test(test_sddmm_bf16_all_blocks_all_isas),
        cmocka_unit_test(test_sddmm_bf16_threads_deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
