/* nnz_gemm_small (the 1x1-convolution GEMM) on every ISA path against the double-
 * accumulating oracle nnz_sgemm_ref: odd M (row tails of the 4-row tile), N with lane
 * tails for 8 and 16 lanes and more vectors than one register tile, lda > K, K = 0,
 * overwrite (C full of NaN beforehand) and accumulate, with and without an epilogue.
 * Tolerance per element, the standard bound of a float32 dot product of K terms,
 * |err| <= K*u*sum_k |a_k*b_k| (u = 2^-24), doubled for slack, times the epilogue's
 * multiplier, plus 4 ulp of the value for the epilogue's own rounding; a wrong tap or
 * lane is off by O(|a*b|) and fails. */
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

#define UNIT_ROUNDOFF 5.9604644775390625e-8 /* 2^-24 */

static void gemm_case(int64_t M, int N, int K, int pad_lda, bool accumulate, bool with_ep) {
    const int64_t lda = K + pad_lda;
    float *A = tu_falloc((size_t)(M * lda)), *B = tu_falloc((size_t)K * N), *C = tu_falloc((size_t)(M * N));
    float *R = tu_falloc((size_t)(M * N)), *sub = tu_falloc(N), *mul = tu_falloc(N), *add = tu_falloc(N);
    tu_fill_uniform(A, M * lda, -1, 1, 1);
    tu_fill_uniform(B, (int64_t)K * N, -1, 1, 2);
    tu_fill_uniform(sub, N, -0.5f, 0.5f, 3);
    tu_fill_uniform(mul, N, 0.5f, 3.0f, 4);
    tu_fill_uniform(add, N, -1, 1, 5);
    if (accumulate) tu_fill_uniform(C, M * N, -1, 1, 6);
    else for (int64_t i = 0; i < M * N; i++) C[i] = NAN; /* overwrite: NaN must not propagate */
    memcpy(R, C, (size_t)(M * N) * sizeof(float));
    const nnz_epilogue ep = {.sub = sub, .mul = mul, .add = add, .lo = 0.0f, .hi = 6.0f};

    /* sum_k |a_k b_k| (+ |C| when accumulating), the scale of the rounding error */
    float *absA = tu_falloc((size_t)(M * lda)), *absB = tu_falloc((size_t)K * N), *S = tu_falloc((size_t)(M * N));
    for (int64_t i = 0; i < M * lda; i++) absA[i] = fabsf(A[i]);
    for (int64_t i = 0; i < (int64_t)K * N; i++) absB[i] = fabsf(B[i]);
    for (int64_t i = 0; i < M * N; i++) S[i] = accumulate ? fabsf(C[i]) : 0.0f;
    nnz_sgemm_ref(false, false, (int)M, N, K, 1.0f, absA, (int)lda, absB, N, 1.0f, S, N);

    nnz_gemm_small(M, N, K, A, lda, B, accumulate, with_ep ? &ep : NULL, C);
    nnz_sgemm_ref(false, false, (int)M, N, K, 1.0f, A, (int)lda, B, N, accumulate ? 1.0f : 0.0f, R, N);
    if (with_ep) nnz_epilogue_apply(M, N, &ep, R);
    for (int64_t i = 0; i < M * N; i++) {
        const double m = with_ep ? mul[i % N] : 1.0;
        const double tol = 2.0 * (K + 1) * UNIT_ROUNDOFF * S[i] * m + 4.0 * UNIT_ROUNDOFF * fabs((double)R[i]) + 1e-30;
        const double d = fabs((double)C[i] - (double)R[i]);
        if (!(d <= tol))
            fail_msg("gemm_small isa=%s M=%lld N=%d K=%d lda=%lld acc=%d ep=%d: C[%lld] = %.9g, oracle %.9g (tol %g)",
                     nnz_isa_name(nnz_isa_active()), (long long)M, N, K, (long long)lda, accumulate, with_ep,
                     (long long)i, C[i], R[i], tol);
    }
    free(A), free(B), free(C), free(R), free(sub), free(mul), free(add), free(absA), free(absB), free(S);
}

static void gemm_isa(nnz_isa isa, void *ctx) {
    (void)isa, (void)ctx;
    static const int shapes[][3] = {{1, 1, 1},   {3, 5, 7},     {4, 16, 16},  {7, 24, 96},   {13, 144, 24},
                                    {6, 81, 33}, {509, 96, 16}, {2050, 37, 300}, {5, 300, 3}, {9, 17, 0},
                                    {21, 32, 40}, {17, 24, 144},  /* two vectors: 8-row tiles, then 4 and 1 */
                                    {70, 100, 200}, {19, 32, 300}, {9, 16, 600}}; /* B in two panels */
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int acc = 0; acc < 2; acc++)
            for (int ep = 0; ep < 2; ep++) {
                gemm_case(shapes[s][0], shapes[s][1], shapes[s][2], 0, acc, ep);
                gemm_case(shapes[s][0], shapes[s][1], shapes[s][2], 3, acc, ep);
            }
}

static void test_gemm_small_all_isas(void **state) {
    (void)state;
    tu_for_each_isa(gemm_isa, NULL);
}

/* The epilogue fused into the register tiles against the GEMM followed by nnz_epilogue_apply,
 * for each form (sub, mul, add each missing; clamp only; no clamp): within 4 ulp of the value
 * (the fused path may contract differently), and a NaN row stays NaN through relu's clamp. */
static void ep_forms_isa(nnz_isa isa, void *ctx) {
    (void)isa, (void)ctx;
    enum { M = 13, N = 37, K = 11 };
    float A[M * K], B[K * N], C[M * N], R[M * N], sub[N], mul[N], add[N];
    tu_fill_uniform(A, M * K, -1, 1, 31);
    tu_fill_uniform(B, K * N, -1, 1, 32);
    tu_fill_uniform(sub, N, -0.5f, 0.5f, 33);
    tu_fill_uniform(mul, N, 0.5f, 3.0f, 34);
    tu_fill_uniform(add, N, -1, 1, 35);
    A[5 * K + 3] = NAN; /* row 5 */
    const nnz_epilogue forms[] = {
        {.sub = sub, .mul = mul, .add = add, .lo = 0.0f, .hi = 6.0f},
        {.mul = mul, .add = add, .lo = 0.0f, .hi = INFINITY},
        {.sub = sub, .add = add, .lo = -INFINITY, .hi = INFINITY},
        {.sub = sub, .mul = mul, .lo = -1.0f, .hi = 1.0f},
        {.lo = 0.0f, .hi = 6.0f},
        {.add = add, .lo = -INFINITY, .hi = 0.5f},
    };
    for (size_t f = 0; f < sizeof forms / sizeof forms[0]; f++) {
        nnz_gemm_small(M, N, K, A, K, B, false, &forms[f], C);
        nnz_gemm_small(M, N, K, A, K, B, false, NULL, R);
        nnz_epilogue_apply(M, N, &forms[f], R);
        for (int i = 0; i < M * N; i++) {
            const bool nan_row = i / N == 5;
            if (nan_row ? !isnan(C[i]) : !(fabs((double)C[i] - (double)R[i]) <= 4.0 * UNIT_ROUNDOFF * fabs((double)R[i]) + 1e-30))
                fail_msg("gemm_small epilogue isa=%s form %zu: C[%d] = %.9g, unfused %.9g", nnz_isa_name(nnz_isa_active()),
                         f, i, C[i], R[i]);
        }
    }
}

static void test_gemm_small_epilogue_forms(void **state) {
    (void)state;
    tu_for_each_isa(ep_forms_isa, NULL);
}

/* D += X^T Y against the double oracle (nnz_gemm_small_at and its serial variant); bound as above,
 * over the longest float chain. Row counts cover one partial block, several slots, and slots of
 * unequal size. */
static void at_case(int64_t M, int P, int Q, int pad) {
    const int64_t ldx = P + pad, ldy = Q + 2 * pad;
    float *X = tu_falloc((size_t)(M * ldx)), *Y = tu_falloc((size_t)(M * ldy)), *D = tu_falloc((size_t)P * Q);
    float *R = tu_falloc((size_t)P * Q), *S = tu_falloc((size_t)P * Q), *aX = tu_falloc((size_t)(M * ldx));
    float *aY = tu_falloc((size_t)(M * ldy));
    tu_fill_uniform(X, M * ldx, -1, 1, 21);
    tu_fill_uniform(Y, M * ldy, -1, 1, 22);
    tu_fill_uniform(D, (int64_t)P * Q, -1, 1, 23); /* accumulates onto what is there */
    memcpy(R, D, sizeof(float) * P * Q);
    for (int64_t i = 0; i < M * ldx; i++) aX[i] = fabsf(X[i]);
    for (int64_t i = 0; i < M * ldy; i++) aY[i] = fabsf(Y[i]);
    for (int64_t i = 0; i < (int64_t)P * Q; i++) S[i] = fabsf(D[i]);
    nnz_gemm_small_at_ref(M, P, Q, aX, ldx, aY, ldy, S);
    /* the longest float chain: a slot's rows (256-row blocks over at most 16 slots), then the 16 partials
     * (the reference path is double: its chain is shorter still) */
    const int64_t blocks = (M + 255) / 256, slots = blocks < 16 ? blocks : 16;
    const int64_t chain = (slots ? (blocks + slots - 1) / slots * 256 : 0) + 17;
    assert_true(nnz_gemm_small_at(M, P, Q, X, ldx, Y, ldy, D));
    nnz_gemm_small_at_ref(M, P, Q, X, ldx, Y, ldy, R);
    for (int64_t i = 0; i < (int64_t)P * Q; i++) {
        const double tol = 2.0 * (double)chain * UNIT_ROUNDOFF * S[i] + 1e-30;
        if (!(fabs((double)D[i] - (double)R[i]) <= tol))
            fail_msg("gemm_small_at isa=%s M=%lld P=%d Q=%d: D[%lld] = %.9g, oracle %.9g (tol %g)",
                     nnz_isa_name(nnz_isa_active()), (long long)M, P, Q, (long long)i, D[i], R[i], tol);
    }
    /* the serial variant: every row's product straight into D, the chain as long as M */
    tu_fill_uniform(D, (int64_t)P * Q, -1, 1, 23);
    nnz_gemm_small_at_serial(M, P, Q, X, ldx, Y, ldy, D);
    for (int64_t i = 0; i < (int64_t)P * Q; i++) {
        const double tol = 2.0 * (double)(M + 1) * UNIT_ROUNDOFF * S[i] + 1e-30;
        if (!(fabs((double)D[i] - (double)R[i]) <= tol))
            fail_msg("gemm_small_at_serial isa=%s M=%lld P=%d Q=%d: D[%lld] = %.9g, oracle %.9g (tol %g)",
                     nnz_isa_name(nnz_isa_active()), (long long)M, P, Q, (long long)i, D[i], R[i], tol);
    }
    free(X), free(Y), free(D), free(R), free(S), free(aX), free(aY);
}

static void at_isa(nnz_isa isa, void *ctx) {
    (void)isa, (void)ctx;
    static const int shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {255, 16, 16}, {257, 24, 96}, {5000, 37, 19},
                                    {4099, 96, 24}, {100, 300, 3}, {0, 4, 4},
                                    /* one vector of Q: tiles of 8 values of p, then 4, then 1 */
                                    {784, 13, 16}, {64, 9, 5}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int pad = 0; pad < 2; pad++) at_case(shapes[s][0], shapes[s][1], shapes[s][2], pad);
}

static void test_gemm_small_at_all_isas(void **state) {
    (void)state;
    tu_for_each_isa(at_isa, NULL);
}

/* The 1x1 backward in one pass over dout against the two calls it replaces: bit-identical
 * weight and data gradients (overwrite over NaN and accumulate), and the weight gradient
 * alone when dinp is NULL. Row counts: one partial block, several slots of unequal size, a
 * count that is no multiple of the 4- and 8-row tiles; channels with lane tails, two
 * vectors (8-row tiles) and a weight long enough for panels. Overwriting, also with dout's rows
 * made block by block (nnz_gemm_small_backward_src) and the data gradient's rows handed to a
 * sink in groups of `unit`: the same numbers, every group handed once, done; a sink with
 * accumulate, or with a unit that does not divide the blocks, refused. */
static void backward_case(int64_t M, int IC, int OC, bool accumulate, bool with_dinp, int unit) {
    float *dout = tu_falloc((size_t)(M * OC)), *inp = tu_falloc((size_t)(M * IC)), *w = tu_falloc((size_t)OC * IC);
    float *dw1 = tu_falloc((size_t)OC * IC), *dw2 = tu_falloc((size_t)OC * IC);
    float *dx1 = tu_falloc((size_t)(M * IC)), *dx2 = tu_falloc((size_t)(M * IC));
    tu_fill_uniform(dout, M * OC, -1, 1, 41);
    tu_fill_uniform(inp, M * IC, -1, 1, 42);
    tu_fill_uniform(w, (int64_t)OC * IC, -1, 1, 43);
    tu_fill_uniform(dw1, (int64_t)OC * IC, -1, 1, 44);
    memcpy(dw2, dw1, sizeof(float) * OC * IC);
    if (accumulate) tu_fill_uniform(dx1, M * IC, -1, 1, 45);
    else for (int64_t i = 0; i < M * IC; i++) dx1[i] = NAN;
    memcpy(dx2, dx1, sizeof(float) * (size_t)(M * IC));
    assert_true(nnz_gemm_small_at(M, OC, IC, dout, OC, inp, IC, dw1));
    if (with_dinp) nnz_gemm_small(M, IC, OC, dout, OC, w, accumulate, NULL, dx1);
    assert_true(nnz_gemm_small_backward(M, IC, OC, dout, inp, w, dw2, accumulate, with_dinp ? dx2 : NULL));
    if (memcmp(dw1, dw2, sizeof(float) * OC * IC) != 0 || memcmp(dx1, dx2, sizeof(float) * (size_t)(M * IC)) != 0)
        fail_msg("gemm_small_backward isa=%s M=%lld IC=%d OC=%d acc=%d dinp=%d: not the two calls' numbers",
                 nnz_isa_name(nnz_isa_active()), (long long)M, IC, OC, accumulate, with_dinp);
    if (with_dinp && !accumulate) {
        const tu_scaled_rows ro = {dout, OC, 1.0f};
        const nnz_row_source src = {tu_scaled_rows_fn, &ro};
        tu_row_record rec;
        const nnz_row_sink sink = {tu_row_record_fn, &rec};
        memcpy(dw2, dw1, sizeof(float) * OC * IC); /* dw1 twice: the src call adds the same again */
        assert_true(nnz_gemm_small_at(M, OC, IC, dout, OC, inp, IC, dw1));
        assert_false(nnz_gemm_small_backward_src(M, IC, OC, &src, inp, NULL, w, dw2, true, dx2, &sink, unit));
        assert_false(nnz_gemm_small_backward_src(M, IC, OC, &src, inp, NULL, w, dw2, false, dx2, &sink, 96));
        for (int64_t i = 0; i < M * IC; i++) dx2[i] = NAN;
        tu_row_record_init(&rec, M, IC, unit);
        assert_true(nnz_gemm_small_backward_src(M, IC, OC, &src, inp, NULL, w, dw2, false, dx2, &sink, unit));
        if (memcmp(dw1, dw2, sizeof(float) * OC * IC) != 0 || memcmp(dx1, dx2, sizeof(float) * (size_t)(M * IC)) != 0)
            fail_msg("gemm_small_backward_src isa=%s M=%lld IC=%d OC=%d: not nnz_gemm_small_backward's numbers",
                     nnz_isa_name(nnz_isa_active()), (long long)M, IC, OC);
        tu_row_record_check(&rec, dx2, "gemm_small_backward_src's data-gradient sink");
    }
    free(dout), free(inp), free(w), free(dw1), free(dw2), free(dx1), free(dx2);
}

static void backward_isa(nnz_isa isa, void *ctx) {
    (void)isa, (void)ctx;
    static const int shapes[][3] = {{1, 1, 1},    {3, 5, 7},       {255, 16, 96}, {257, 96, 16}, {4099, 24, 144},
                                    {5001, 144, 24}, {1030, 32, 300}, {600, 7, 0},   {0, 4, 4}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int acc = 0; acc < 2; acc++) {
            const int unit = s % 2 ? 256 : 32;
            backward_case(shapes[s][0], shapes[s][1], shapes[s][2], acc, true, unit);
            if (acc) backward_case(shapes[s][0], shapes[s][1], shapes[s][2], true, false, unit);
        }
}

static void test_gemm_small_backward_all_isas(void **state) {
    (void)state;
    tu_for_each_isa(backward_isa, NULL);
}

/* The same numbers for any thread count: rows are blocked by shape only. */
static void test_gemm_small_thread_independent(void **state) {
    (void)state;
    enum { M = 3001, N = 72, K = 40 };
    float *A = tu_falloc(M * K), *B = tu_falloc(K * N), *C1 = tu_falloc(M * N), *C2 = tu_falloc(M * N);
    tu_fill_uniform(A, M * K, -1, 1, 7);
    tu_fill_uniform(B, K * N, -1, 1, 8);
    int saved = nnz_get_threads();
    nnz_set_threads(1);
    nnz_gemm_small(M, N, K, A, K, B, false, NULL, C1);
    nnz_set_threads(2);
    nnz_gemm_small(M, N, K, A, K, B, false, NULL, C2);
    assert_memory_equal(C1, C2, sizeof(float) * M * N);
    /* D (K,N) += A^T (K,M) * C1 (M,N) */
    float *D1 = calloc(K * N, sizeof(float)), *D2 = calloc(K * N, sizeof(float));
    assert_non_null(D1);
    assert_non_null(D2);
    nnz_set_threads(1);
    assert_true(nnz_gemm_small_at(M, K, N, A, K, C1, N, D1));
    nnz_set_threads(2);
    assert_true(nnz_gemm_small_at(M, K, N, A, K, C1, N, D2));
    nnz_set_threads(saved);
    assert_memory_equal(D1, D2, sizeof(float) * K * N);
    free(D1), free(D2);
    free(A), free(B), free(C1), free(C2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_small_all_isas),
        cmocka_unit_test(test_gemm_small_epilogue_forms),
        cmocka_unit_test(test_gemm_small_at_all_isas),
        cmocka_unit_test(test_gemm_small_backward_all_isas),
        cmocka_unit_test(test_gemm_small_thread_independent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
