/* nnz_conv_implicit (the small GEMM reading its rows from the image) on every ISA path:
 *  - against the plain-loop reference (double-free float chains, bound as test_gemm_small's:
 *    2(K+1)u sum_k |a_k b_k| times the epilogue's multiplier, plus 4 ulp of the value);
 *  - bit for bit against im2col + nnz_gemm_small on the same ISA (its contract: the same
 *    FMA chain per output, padding taps included as zeros);
 * over windows 1x1..5x5, stride 1-3, pad 0-2, odd images, 1-600 input channels (more than
 * one pass of the kernel's zero row), output channels with lane tails, tiles that cross
 * rows and images, overwrite (NaN beforehand) and accumulate, with and without the epilogue.
 * The weight gradient against its double reference. And the same numbers for 1 and 2 threads. */
#include "test_util.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

#define UNIT_ROUNDOFF 5.9604644775390625e-8 /* 2^-24 */

typedef struct {
    int N, H, W, IC, OC, KH, KW, stride, pad;
} conv_case;

static nnz_conv_window window(const conv_case *c) {
    return (nnz_conv_window){.H = c->H, .W = c->W, .KH = c->KH, .KW = c->KW, .stride = c->stride, .pad = c->pad,
                             .OH = (c->H + 2 * c->pad - c->KH) / c->stride + 1,
                             .OW = (c->W + 2 * c->pad - c->KW) / c->stride + 1};
}

static void run_case(const conv_case *cc, bool accumulate, bool with_ep) {
    const nnz_conv_window g = window(cc);
    const int K = cc->KH * cc->KW * cc->IC, OC = cc->OC;
    const int64_t M = (int64_t)cc->N * g.OH * g.OW, in_n = (int64_t)cc->N * cc->H * cc->W * cc->IC;
    float *inp = tu_falloc((size_t)in_n), *w = tu_falloc((size_t)K * OC), *out = tu_falloc((size_t)(M * OC));
    float *ref = tu_falloc((size_t)(M * OC)), *viag = tu_falloc((size_t)(M * OC)), *col = tu_falloc((size_t)(M * K));
    float *sub = tu_falloc(OC), *mul = tu_falloc(OC), *add = tu_falloc(OC);
    tu_fill_uniform(inp, in_n, -1, 1, 11);
    tu_fill_uniform(w, (int64_t)K * OC, -1, 1, 12);
    tu_fill_uniform(sub, OC, -0.5f, 0.5f, 13);
    tu_fill_uniform(mul, OC, 0.5f, 3.0f, 14);
    tu_fill_uniform(add, OC, -1, 1, 15);
    if (accumulate) tu_fill_uniform(out, M * OC, -1, 1, 16);
    else for (int64_t i = 0; i < M * OC; i++) out[i] = NAN;
    memcpy(ref, out, (size_t)(M * OC) * sizeof(float));
    memcpy(viag, out, (size_t)(M * OC) * sizeof(float));
    float *pre = tu_falloc((size_t)(M * OC));
    memcpy(pre, out, (size_t)(M * OC) * sizeof(float));
    const nnz_epilogue ep = {.sub = sub, .mul = mul, .add = add, .lo = 0.0f, .hi = 6.0f};
    const nnz_epilogue *e = with_ep ? &ep : NULL;

    nnz_conv_implicit(&g, cc->N, cc->IC, OC, inp, w, accumulate, e, out);
    nnz_conv_implicit_ref(&g, cc->N, cc->IC, OC, inp, w, accumulate, e, ref);
    nnz_im2col_nhwc(&g, cc->N, cc->IC, 0, cc->IC, inp, col);
    nnz_gemm_small(M, OC, K, col, K, w, accumulate, e, viag);
    /* over a zero-padded copy of the input (what stems over 1-3 channels run) */
    float *padded = tu_falloc((size_t)cc->N * nnz_conv_implicit_padded_floats(&g, cc->IC));
    nnz_conv_implicit_prepadded(&g, cc->N, cc->IC, OC, inp, w, accumulate, e, pre, padded);

    /* the rounding scale: sum_k |a_k b_k| (+ |C| accumulating), from the |col| GEMM */
    float *acol = tu_falloc((size_t)(M * K)), *aw = tu_falloc((size_t)K * OC), *S = tu_falloc((size_t)(M * OC));
    for (int64_t i = 0; i < M * K; i++) acol[i] = fabsf(col[i]);
    for (int64_t i = 0; i < (int64_t)K * OC; i++) aw[i] = fabsf(w[i]);
    if (accumulate) tu_fill_uniform(S, M * OC, -1, 1, 16); /* out's values before the call */
    for (int64_t i = 0; i < M * OC; i++) S[i] = accumulate ? fabsf(S[i]) : 0.0f;
    nnz_sgemm_ref(false, false, (int)M, OC, K, 1.0f, acol, K, aw, OC, 1.0f, S, OC);

    for (int64_t i = 0; i < M * OC; i++) {
        const double m = with_ep ? mul[i % OC] : 1.0;
        const double tol = 2.0 * (K + 1) * UNIT_ROUNDOFF * S[i] * m + 4.0 * UNIT_ROUNDOFF * fabs((double)ref[i]) + 1e-30;
        const double d = fabs((double)out[i] - (double)ref[i]);
        if (!(d <= tol))
            fail_msg("conv_implicit isa=%s N=%d %dx%dx%d->%d k=%dx%d s=%d p=%d acc=%d ep=%d: out[%lld] = %.9g, "
                     "reference %.9g (tol %g)", nnz_isa_name(nnz_isa_active()), cc->N, cc->H, cc->W, cc->IC, OC,
                     cc->KH, cc->KW, cc->stride, cc->pad, accumulate, with_ep, (long long)i, out[i], ref[i], tol);
    }
    if (memcmp(out, viag, (size_t)(M * OC) * sizeof(float)) != 0)
        fail_msg("conv_implicit isa=%s N=%d %dx%dx%d->%d k=%dx%d s=%d p=%d acc=%d ep=%d: not bit-identical to "
                 "im2col + gemm_small", nnz_isa_name(nnz_isa_active()), cc->N, cc->H, cc->W, cc->IC, OC, cc->KH,
                 cc->KW, cc->stride, cc->pad, accumulate, with_ep);
    if (memcmp(pre, viag, (size_t)(M * OC) * sizeof(float)) != 0)
        fail_msg("conv_implicit_prepadded isa=%s N=%d %dx%dx%d->%d k=%dx%d s=%d p=%d acc=%d ep=%d: not bit-identical "
                 "to im2col + gemm_small", nnz_isa_name(nnz_isa_active()), cc->N, cc->H, cc->W, cc->IC, OC, cc->KH,
                 cc->KW, cc->stride, cc->pad, accumulate, with_ep);
    free(pre), free(padded);
    free(inp), free(w), free(out), free(ref), free(viag), free(col), free(sub), free(mul), free(add);
    free(acol), free(aw), free(S);
}

static const conv_case cases[] = {
    /* N  H   W  IC  OC KH KW s  p */
    {1, 1, 1, 1, 1, 1, 1, 1, 0},      /* one pixel */
    {2, 5, 7, 3, 5, 3, 3, 1, 1},      /* tiles across rows and images, OC < one vector */
    {1, 28, 28, 1, 16, 3, 3, 1, 1},   /* a stem */
    {3, 9, 9, 1, 32, 5, 5, 1, 2},     /* lenet5's conv1 */
    {2, 11, 10, 3, 20, 3, 3, 2, 1},   /* RGB, stride 2, lane tail */
    {2, 9, 7, 2, 7, 5, 5, 2, 2},      /* two channels, padding wider than a stride */
    {2, 14, 14, 24, 24, 3, 3, 1, 1},  /* a merged block, 24 = 16 + 8 lanes */
    {2, 28, 28, 16, 24, 3, 3, 2, 1},  /* a merged stride-2 block */
    {1, 7, 7, 32, 64, 3, 3, 1, 1},    /* a merged 32->64 block, 4 vectors */
    {2, 8, 6, 5, 70, 2, 3, 3, 0},     /* stride 3, no padding, OC past one register tile */
    {1, 4, 5, 600, 17, 1, 1, 1, 0},   /* IC beyond the zero row: two passes per tap */
    {1, 3, 3, 600, 9, 3, 3, 2, 2},    /* ... with padding taps on every pixel */
    {2, 6, 5, 200, 80, 3, 3, 1, 1},   /* B panels (K*64 > 8192): two per tap, 4 + 1 vectors, rows left over */
    {2, 5, 6, 200, 4, 3, 3, 1, 0},    /* window rows of 600 floats inside the image: a run in two passes */
};

static void cases_isa(nnz_isa isa, void *ctx) {
    (void)isa, (void)ctx;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const nnz_conv_window g = window(&cases[i]);
        if (g.OH < 1 || g.OW < 1) continue;
        for (int acc = 0; acc < 2; acc++)
            for (int ep = 0; ep < 2; ep++) run_case(&cases[i], acc, ep);
    }
}

static void test_conv_implicit_all_isas(void **state) {
    (void)state;
    tu_for_each_isa(cases_isa, NULL);
}

/* The weight gradient against the double-summing reference: each element is summed in chains of
 * 256 rows, + the blocks of its slot, + the slots, so the bound is 2(256 + blocks + 17)u
 * sum_r |x_r dout_r| (+ |dw| before). (How close the sums stay in practice over 18,432 rows is
 * test_conv_linear's chunked-batch test: 1e-4 relative between batch 2 and two batch-1 runs.) */
static void run_wgrad_case(const conv_case *cc) {
    const nnz_conv_window g = window(cc);
    const int K = cc->KH * cc->KW * cc->IC, OC = cc->OC;
    const int64_t M = (int64_t)cc->N * g.OH * g.OW, in_n = (int64_t)cc->N * cc->H * cc->W * cc->IC;
    float *inp = tu_falloc((size_t)in_n), *dout = tu_falloc((size_t)(M * OC)), *col = tu_falloc((size_t)(M * K));
    float *dw = tu_falloc((size_t)K * OC), *ref = tu_falloc((size_t)K * OC);
    float *S = tu_falloc((size_t)K * OC), *acol = tu_falloc((size_t)(M * K)), *adout = tu_falloc((size_t)(M * OC));
    tu_fill_uniform(inp, in_n, -1, 1, 31);
    tu_fill_uniform(dout, M * OC, -1, 1, 32);
    tu_fill_uniform(dw, (int64_t)K * OC, -1, 1, 33); /* accumulates onto what is there */
    memcpy(ref, dw, (size_t)K * OC * sizeof(float));
    float *scratch = tu_falloc(nnz_conv_implicit_wgrad_scratch_floats(&g, cc->N, cc->IC, OC));
    nnz_conv_implicit_wgrad(&g, cc->N, cc->IC, OC, inp, dout, dw, scratch);
    free(scratch);
    nnz_conv_implicit_wgrad_ref(&g, cc->N, cc->IC, OC, inp, dout, ref);
    nnz_im2col_nhwc(&g, cc->N, cc->IC, 0, cc->IC, inp, col);
    for (int64_t i = 0; i < M * K; i++) acol[i] = fabsf(col[i]);
    for (int64_t i = 0; i < M * OC; i++) adout[i] = fabsf(dout[i]);
    for (int64_t i = 0; i < (int64_t)K * OC; i++) S[i] = fabsf(ref[i]);
    nnz_sgemm_ref(true, false, K, OC, (int)M, 1.0f, acol, K, adout, OC, 1.0f, S, OC);
    for (int64_t i = 0; i < (int64_t)K * OC; i++) {
        const double tol = 2.0 * (256 + (M + 255) / 256 + 17) * UNIT_ROUNDOFF * S[i] + 1e-30;
        if (!(fabs((double)dw[i] - (double)ref[i]) <= tol))
            fail_msg("conv_implicit_wgrad isa=%s N=%d %dx%dx%d->%d k=%dx%d s=%d p=%d: dw[%lld] = %.9g, reference %.9g "
                     "(tol %g)", nnz_isa_name(nnz_isa_active()), cc->N, cc->H, cc->W, cc->IC, OC, cc->KH, cc->KW,
                     cc->stride, cc->pad, (long long)i, dw[i], ref[i], tol);
    }
    free(inp), free(dout), free(col), free(dw), free(ref), free(S), free(acol), free(adout);
}

static void wgrad_isa(nnz_isa isa, void *ctx) {
    (void)isa, (void)ctx;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_wgrad_case(&cases[i]);
    const conv_case more[] = {
        {3, 14, 14, 6, 20, 3, 3, 1, 1},  /* several blocks and slots; channels not a multiple of 4 */
        {2, 9, 11, 7, 33, 5, 5, 2, 2},
        {2, 96, 96, 8, 3, 3, 3, 1, 1},   /* 18,432 rows: blocked summation keeps the bound */
        {1, 20, 20, 64, 520, 3, 3, 1, 1} /* K x OC too large for 16 partials: fewer slots */
    };
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++) run_wgrad_case(&more[i]);
}

static void test_conv_implicit_wgrad_all_isas(void **state) {
    (void)state;
    tu_for_each_isa(wgrad_isa, NULL);
}

/* A random (OC, K) weight with whole r x c blocks kept when (a*br + b*bc) % keep_mod == 0 (none
 * when keep_mod is 0) and block row 1 always empty, as the sparse matrix the kernels take. */
static nnz_spmat block_sparse_weight(int OC, int K, int r, int c, int keep_mod, int a, int b, uint64_t seed) {
    float *w = tu_falloc((size_t)OC * K);
    uint8_t *mask = malloc((size_t)OC * K);
    assert_non_null(mask);
    tu_fill_uniform(w, (int64_t)OC * K, -1, 1, seed);
    for (int o = 0; o < OC; o++)
        for (int k = 0; k < K; k++)
            mask[(size_t)o * K + k] = keep_mod > 0 && o / r != 1 && (a * (o / r) + b * (k / c)) % keep_mod == 0;
    nnz_spmat sp;
    assert_int_equal(nnz_spmat_from_dense(OC, K, w, K, mask, r, c, &sp), NNZ_OK);
    free(w), free(mask);
    return sp;
}

/* nnz_spmm_conv_f32 (the sparse forward building its im2col rows in the SpMM's scratch) bit for
 * bit against nnz_im2col_nhwc + nnz_spmm_f32, for 16x16 and 16x32 blocks with empty block rows
 * (and an all-zero mask), bias and accumulate; r < 16 and the reference ISA are refused with
 * nothing written. */
static void spmm_conv_case(const conv_case *cc, int r, int c, int keep_mod) {
    const nnz_conv_window g = window(cc);
    const int K = cc->KH * cc->KW * cc->IC, OC = cc->OC;
    const int64_t M = (int64_t)cc->N * g.OH * g.OW, in_n = (int64_t)cc->N * cc->H * cc->W * cc->IC;
    float *inp = tu_falloc((size_t)in_n), *bias = tu_falloc(OC), *col = tu_falloc((size_t)(M * K));
    float *out = tu_falloc((size_t)(M * OC)), *want = tu_falloc((size_t)(M * OC));
    tu_fill_uniform(inp, in_n, -1, 1, 41);
    tu_fill_uniform(bias, OC, -1, 1, 43);
    nnz_spmat sp = block_sparse_weight(OC, K, r, c, keep_mod, 3, 7, 42);
    for (int acc = 0; acc < 2; acc++) {
        tu_fill_uniform(out, M * OC, -1, 1, 44);
        memcpy(want, out, (size_t)(M * OC) * sizeof(float));
        const nnz_status st = nnz_spmm_conv_f32(&sp, &g, cc->N, cc->IC, inp, bias, acc, out, OC);
        if (r < 16 || !nnz_sparse_kernels_simd()) {
            assert_int_equal(st, NNZ_ERR_UNSUPPORTED);
            tu_fill_uniform(want, M * OC, -1, 1, 44);
            assert_memory_equal(out, want, (size_t)(M * OC) * sizeof(float)); /* untouched */
            continue;
        }
        assert_int_equal(st, NNZ_OK);
        nnz_im2col_nhwc(&g, cc->N, cc->IC, 0, cc->IC, inp, col);
        assert_int_equal(nnz_spmm_f32(&sp, M, col, K, bias, acc, want, OC), NNZ_OK);
        if (memcmp(out, want, (size_t)(M * OC) * sizeof(float)) != 0)
            fail_msg("spmm_conv isa=%s %dx%dx%d->%d k=%d s=%d p=%d block %dx%d acc=%d: not bit-identical to im2col + "
                     "spmm", nnz_isa_name(nnz_isa_active()), cc->H, cc->W, cc->IC, OC, cc->KH, cc->stride, cc->pad, r,
                     c, acc);
    }
    nnz_spmat_free(&sp);
    free(inp), free(bias), free(col), free(out), free(want);
}

static void spmm_conv_isa(nnz_isa isa, void *ctx) {
    (void)isa, (void)ctx;
    const conv_case a = {3, 9, 7, 16, 48, 3, 3, 1, 1}, b = {2, 11, 11, 32, 64, 3, 3, 2, 1}, d = {1, 5, 5, 8, 40, 5, 5, 1, 2};
    spmm_conv_case(&a, 16, 16, 3);
    spmm_conv_case(&a, 16, 16, 0); /* all-zero */
    spmm_conv_case(&b, 16, 32, 2);
    spmm_conv_case(&d, 16, 16, 4); /* K = 200: a partial last block column */
    spmm_conv_case(&a, 4, 4, 3);   /* refused */
}

static void test_spmm_conv_all_isas(void **state) {
    (void)state;
    tu_for_each_isa(spmm_conv_isa, NULL);
}

/* nnz_sddmm_conv_f32 (the SDDMM building its im2col rows per chunk, summed in fixed ranges of
 * rows) against im2col + nnz_sddmm_f32: bit for bit when M fits one chunk, else within the
 * summation bound of the double reference (2(M+slots+2)u (sum|dout x| + |dval|)); every kept
 * block's positions get exactly their sums (the += contract), for 1 and 2 threads alike (same
 * bits). r < 16 and the reference ISA are refused with dval untouched. */
static void sddmm_conv_case(const conv_case *cc, int r, int c, int keep_mod) {
    const nnz_conv_window g = window(cc);
    const int K = cc->KH * cc->KW * cc->IC, OC = cc->OC;
    const int64_t M = (int64_t)cc->N * g.OH * g.OW, in_n = (int64_t)cc->N * cc->H * cc->W * cc->IC;
    float *inp = tu_falloc((size_t)in_n), *dout = tu_falloc((size_t)(M * OC));
    float *col = tu_falloc((size_t)(M * K)), *acol = tu_falloc((size_t)(M * K)), *adout = tu_falloc((size_t)(M * OC));
    tu_fill_uniform(inp, in_n, -1, 1, 51);
    tu_fill_uniform(dout, M * OC, -1, 1, 53);
    nnz_spmat sp = block_sparse_weight(OC, K, r, c, keep_mod, 5, 3, 52);
    const int64_t nv = nnz_spmat_val_count(&sp);
    float *got = tu_falloc((size_t)nv + 1), *got2 = tu_falloc((size_t)nv + 1), *want = tu_falloc((size_t)nv + 1);
    double *ref = calloc((size_t)nv + 1, sizeof(double)), *bound = calloc((size_t)nv + 1, sizeof(double));
    assert_non_null(ref);
    assert_non_null(bound);
    tu_fill_uniform(got, nv, -1, 1, 54);
    memcpy(want, got, (size_t)nv * sizeof(float));
    memcpy(got2, got, (size_t)nv * sizeof(float));
    const int saved = nnz_get_threads();
    nnz_set_threads(1);
    const nnz_status st = nnz_sddmm_conv_f32(&sp, &g, cc->N, cc->IC, inp, dout, OC, got);
    nnz_set_threads(2);
    const nnz_status st2 = nnz_sddmm_conv_f32(&sp, &g, cc->N, cc->IC, inp, dout, OC, got2);
    nnz_set_threads(saved);
    assert_int_equal(st, st2);
    if (r < 16 || !nnz_sparse_kernels_simd()) {
        assert_int_equal(st, NNZ_ERR_UNSUPPORTED);
        assert_memory_equal(got, want, (size_t)nv * sizeof(float)); /* untouched */
    } else {
        assert_int_equal(st, NNZ_OK);
        assert_memory_equal(got, got2, (size_t)nv * sizeof(float)); /* thread count independent */
        nnz_im2col_nhwc(&g, cc->N, cc->IC, 0, cc->IC, inp, col);
        for (int64_t i = 0; i < M * K; i++) acol[i] = fabsf(col[i]);
        for (int64_t i = 0; i < M * OC; i++) adout[i] = fabsf(dout[i]);
        float *exact = tu_falloc((size_t)nv + 1), *sabs = tu_falloc((size_t)nv + 1);
        memset(exact, 0, (size_t)nv * sizeof(float));
        memset(sabs, 0, (size_t)nv * sizeof(float));
        nnz_sddmm_f32_ref(&sp.fwd, M, dout, OC, col, K, exact);
        nnz_sddmm_f32_ref(&sp.fwd, M, adout, OC, acol, K, sabs);
        for (int64_t i = 0; i < nv; i++) {
            ref[i] = (double)want[i] + exact[i];
            bound[i] = 2.0 * (double)(M + 8 + 2) * UNIT_ROUNDOFF * (sabs[i] + fabs(want[i])) + 1e-30;
        }
        assert_int_equal(nnz_sddmm_f32(&sp, M, dout, OC, col, K, want), NNZ_OK);
        const bool one_chunk = M <= 128 && nnz_spmm_tile_scratch_ld(K) * M <= (1 << 17);
        if (one_chunk && memcmp(got, want, (size_t)nv * sizeof(float)) != 0)
            fail_msg("sddmm_conv isa=%s M=%lld: one chunk, not bit-identical to im2col + sddmm",
                     nnz_isa_name(nnz_isa_active()), (long long)M);
        for (int64_t i = 0; i < nv; i++)
            if (fabs((double)got[i] - ref[i]) > bound[i])
                fail_msg("sddmm_conv isa=%s %dx%dx%d->%d k=%d s=%d block %dx%d: dval[%lld] = %.9g, want %.9g (bound %.3g)",
                         nnz_isa_name(nnz_isa_active()), cc->H, cc->W, cc->IC, OC, cc->KH, cc->stride, r, c,
                         (long long)i, got[i], ref[i], bound[i]);
        free(exact), free(sabs);
    }
    nnz_spmat_free(&sp);
    free(inp), free(dout), free(col), free(acol), free(adout);
    free(got), free(got2), free(want), free(ref), free(bound);
}

static void sddmm_conv_isa(nnz_isa isa, void *ctx) {
    (void)isa, (void)ctx;
    const conv_case one = {1, 5, 5, 8, 40, 5, 5, 1, 2};     /* M = 25: one chunk; K = 200, a partial block column */
    const conv_case two = {3, 9, 7, 16, 48, 3, 3, 1, 1};    /* M = 189: two ranges */
    const conv_case many = {8, 14, 14, 32, 32, 3, 3, 1, 1}; /* M = 1568: 8 ranges of 13 chunks */
    const conv_case wide = {2, 9, 9, 256, 32, 3, 3, 2, 1};  /* K = 2304: 56-row chunks, stride 2 */
    sddmm_conv_case(&one, 16, 16, 3);
    sddmm_conv_case(&two, 16, 16, 2);
    sddmm_conv_case(&two, 16, 16, 0); /* all-zero: no blocks */
    sddmm_conv_case(&many, 16, 32, 3);
    sddmm_conv_case(&many, 32, 16, 2);
    sddmm_conv_case(&wide, 16, 16, 5);
    sddmm_conv_case(&two, 8, 8, 3); /* refused */
}

static void test_sddmm_conv_all_isas(void **state) {
    (void)state;
    tu_for_each_isa(sddmm_conv_isa, NULL);
}

/* nnz_gemm_small_im2col (the small GEMM building its im2col rows per row block in cache) bit for
 * bit against nnz_im2col_nhwc + nnz_gemm_small on each SIMD ISA, over 1-3 input channels (the
 * convolutions that keep im2col), strides, padding, accumulate and the epilogue; the reference
 * ISA refuses with nothing written. */
static void small_im2col_case(const conv_case *cc, bool accumulate, bool with_ep) {
    const nnz_conv_window g = window(cc);
    const int K = cc->KH * cc->KW * cc->IC, OC = cc->OC;
    const int64_t M = (int64_t)cc->N * g.OH * g.OW, in_n = (int64_t)cc->N * cc->H * cc->W * cc->IC;
    float *inp = tu_falloc((size_t)in_n), *w = tu_falloc((size_t)K * OC), *col = tu_falloc((size_t)(M * K));
    float *out = tu_falloc((size_t)(M * OC)), *want = tu_falloc((size_t)(M * OC)), *add = tu_falloc(OC);
    tu_fill_uniform(inp, in_n, -1, 1, 61);
    tu_fill_uniform(w, (int64_t)K * OC, -1, 1, 62);
    tu_fill_uniform(add, OC, -1, 1, 63);
    const nnz_epilogue ep = {.add = add, .lo = 0.0f, .hi = 6.0f};
    tu_fill_uniform(out, M * OC, -1, 1, 64);
    memcpy(want, out, (size_t)(M * OC) * sizeof(float));
    const bool ok = nnz_gemm_small_im2col(&g, cc->N, cc->IC, inp, OC, w, accumulate, with_ep ? &ep : NULL, out);
    if (nnz_isa_active() < NNZ_ISA_AVX2) {
        assert_false(ok);
        assert_memory_equal(out, want, (size_t)(M * OC) * sizeof(float)); /* untouched */
    } else {
        assert_true(ok);
        nnz_im2col_nhwc(&g, cc->N, cc->IC, 0, cc->IC, inp, col);
        nnz_gemm_small(M, OC, K, col, K, w, accumulate, with_ep ? &ep : NULL, want);
        if (memcmp(out, want, (size_t)(M * OC) * sizeof(float)) != 0)
            fail_msg("gemm_small_im2col isa=%s %dx%dx%d->%d k=%d s=%d p=%d acc=%d ep=%d: not bit-identical",
                     nnz_isa_name(nnz_isa_active()), cc->H, cc->W, cc->IC, OC, cc->KH, cc->stride, cc->pad, accumulate,
                     with_ep);
    }
    free(inp), free(w), free(col), free(out), free(want), free(add);
}

static void small_im2col_isa(nnz_isa isa, void *ctx) {
    (void)isa, (void)ctx;
    static const conv_case cases[] = {
        {3, 28, 28, 1, 32, 5, 5, 1, 2}, /* lenet5's conv1: several row blocks */
        {2, 9, 7, 1, 16, 3, 3, 1, 1},   /* mbv2's stem */
        {2, 11, 10, 3, 20, 3, 3, 2, 1}, /* RGB, stride 2, lane tail */
        {1, 5, 6, 2, 7, 5, 5, 1, 0},    /* no padding, narrow output */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int mode = 0; mode < 4; mode++) small_im2col_case(&cases[c], mode & 1, mode & 2);
}

static void test_gemm_small_im2col_all_isas(void **state) {
    (void)state;
    tu_for_each_isa(small_im2col_isa, NULL);
}

/* The same numbers for any thread count: pixels are blocked by shape only. */
static void test_conv_implicit_thread_independent(void **state) {
    (void)state;
    const conv_case c = {8, 14, 14, 24, 40, 3, 3, 1, 1};
    const nnz_conv_window g = window(&c);
    const int K = 9 * c.IC;
    const int64_t M = (int64_t)c.N * g.OH * g.OW, in_n = (int64_t)c.N * c.H * c.W * c.IC;
    float *inp = tu_falloc((size_t)in_n), *w = tu_falloc((size_t)K * c.OC), *o1 = tu_falloc((size_t)(M * c.OC)),
          *o2 = tu_falloc((size_t)(M * c.OC));
    tu_fill_uniform(inp, in_n, -1, 1, 21);
    tu_fill_uniform(w, (int64_t)K * c.OC, -1, 1, 22);
    const int saved = nnz_get_threads();
    nnz_set_threads(1);
    nnz_conv_implicit(&g, c.N, c.IC, c.OC, inp, w, false, NULL, o1);
    nnz_set_threads(2);
    nnz_conv_implicit(&g, c.N, c.IC, c.OC, inp, w, false, NULL, o2);
    assert_memory_equal(o1, o2, sizeof(float) * M * c.OC);
    float *d1 = calloc((size_t)K * c.OC, sizeof(float)), *d2 = calloc((size_t)K * c.OC, sizeof(float));
    assert_non_null(d1);
    assert_non_null(d2);
    float *scratch = tu_falloc(nnz_conv_implicit_wgrad_scratch_floats(&g, c.N, c.IC, c.OC));
    nnz_set_threads(1);
    nnz_conv_implicit_wgrad(&g, c.N, c.IC, c.OC, inp, o1, d1, scratch);
    nnz_set_threads(2);
    nnz_conv_implicit_wgrad(&g, c.N, c.IC, c.OC, inp, o1, d2, scratch);
    free(scratch);
    nnz_set_threads(saved);
    assert_memory_equal(d1, d2, sizeof(float) * K * c.OC);
    free(d1), free(d2);
    free(inp), free(w), free(o1), free(o2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_implicit_all_isas),
        cmocka_unit_test(test_conv_implicit_wgrad_all_isas),
        cmocka_unit_test(test_spmm_conv_all_isas),
        cmocka_unit_test(test_sddmm_conv_all_isas),
        cmocka_unit_test(test_gemm_small_im2col_all_isas),
        cmocka_unit_test(test_conv_implicit_thread_independent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
