/* Elementwise layers (relu, relu6, add, accumulate), pooling (max, avg, global
 * avg, shape checks) and dropout: forward against naive loops, backward against
 * finite differences, and the accumulate (+=) convention of every backward. */
#include "test_util.h"

#include "nn/nn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Finite-difference tolerance for the piecewise-linear layers here: inputs stay
 * at least 2h away from every kink, so the central difference is exact up to
 * float rounding of the forward: |fd - analytic| <= 1e-3 with h = 1e-2 on O(1)
 * values (the loss sums < 2000 float outputs). A wrong gradient is off by O(0.1). */
#define FD_H 1e-2f
#define FD_TOL 1e-3

typedef double (*loss_fn)(void *ctx); /* sum_i w_i * forward(x)_i in double */

static double central_diff(loss_fn f, void *ctx, float *p) {
    const float v = *p;
    *p = v + FD_H;
    const double hp = *p, Lp = f(ctx);
    *p = v - FD_H;
    const double hm = *p, Lm = f(ctx);
    *p = v;
    return (Lp - Lm) / (hp - hm);
}

static double dot(const float *w, const float *y, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)w[i] * y[i];
    return s;
}

/* Checks pre-filled grad minus pre against finite differences of f over x (n). */
static void check_grad(const char *what, loss_fn f, void *ctx, float *x, int64_t n, const float *grad,
                       const float *pre) {
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double fd = central_diff(f, ctx, &x[i]), an = (double)grad[i] - pre[i];
        if (fabs(fd - an) > worst) worst = fabs(fd - an);
        if (fabs(fd - an) > FD_TOL) {
            print_error("%s[%lld]: finite difference %.6g, analytic %.6g\n", what, (long long)i, fd, an);
            fail();
        }
    }
}

static float *filled(int64_t n, float lo, float hi, uint64_t seed) {
    float *x = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    tu_fill_uniform(x, n, lo, hi, seed);
    return x;
}

static float *copy_of(const float *x, int64_t n) {
    float *y = malloc(sizeof(float) * (size_t)n);
    memcpy(y, x, sizeof(float) * (size_t)n);
    return y;
}

/* ===================== elementwise ===================== */

typedef struct {
    int64_t n;
    float *x, *w, *out;
    bool six;
} act_ctx;

static double act_loss(void *p) {
    act_ctx *k = p;
    (k->six ? nnz_relu6_forward : nnz_relu_forward)(k->n, k->x, k->out);
    return dot(k->w, k->out, k->n);
}

static void test_relu_forward_values(void **state) {
    (void)state;
    const float x[] = {-2.0f, -0.0f, 0.0f, 1e-30f, 3.0f, 5.999f, 6.0f, 7.5f, NAN};
    const int n = (int)(sizeof x / sizeof x[0]);
    float r[9], r6[9];
    nnz_relu_forward(n, x, r);
    nnz_relu6_forward(n, x, r6);
    for (int i = 0; i < n - 1; i++) {
        assert_float_equal(r[i], x[i] > 0 ? x[i] : 0.0f, 0);
        assert_float_equal(r6[i], x[i] > 6 ? 6.0f : (x[i] > 0 ? x[i] : 0.0f), 0);
    }
    assert_true(isnan(r[n - 1]) && isnan(r6[n - 1])); /* NaN propagates, as in PyTorch */
    /* in place, and a long input that takes the parallel path */
    const int64_t big = 300001;
    float *a = filled(big, -8, 8, 1), *b = copy_of(a, big);
    nnz_relu6_forward(big, a, a);
    for (int64_t i = 0; i < big; i++) assert_float_equal(a[i], fminf(fmaxf(b[i], 0.0f), 6.0f), 0);
    free(a);
    free(b);
}

static void check_activation_grad(bool six, int64_t n) {
    act_ctx k = {n, filled(n, -8, 8, 2 + (uint64_t)six), filled(n, -1, 1, 3), malloc(sizeof(float) * n), six};
    /* keep inputs 2h away from the kinks at 0 and 6 */
    for (int64_t i = 0; i < n; i++) {
        if (fabsf(k.x[i]) < 4 * FD_H) k.x[i] += 8 * FD_H;
        if (fabsf(k.x[i] - 6.0f) < 4 * FD_H) k.x[i] += 8 * FD_H;
    }
    float *pre = filled(n, -2, 2, 4), *din = copy_of(pre, n);
    act_loss(&k);
    (six ? nnz_relu6_backward : nnz_relu_backward)(n, k.out, k.w, din);
    check_grad(six ? "relu6" : "relu", act_loss, &k, k.x, n, din, pre);
    (six ? nnz_relu6_backward : nnz_relu_backward)(n, k.out, k.w, NULL); /* no upstream: no-op */
    free(k.x); free(k.w); free(k.out); free(pre); free(din);
}

static void test_relu_backward_finite_differences(void **state) {
    (void)state;
    check_activation_grad(false, 257);
    check_activation_grad(true, 257);
    check_activation_grad(true, 1);
}

static void test_add_and_accumulate(void **state) {
    (void)state;
    const int64_t n = 100003; /* parallel path, odd tail */
    float *a = filled(n, -1, 1, 5), *b = filled(n, -1, 1, 6), *out = malloc(sizeof(float) * n);
    nnz_add_forward(n, a, b, out);
    for (int64_t i = 0; i < n; i++) assert_float_equal(out[i], a[i] + b[i], 0);
    float *g = filled(n, -1, 1, 7), *da = filled(n, -1, 1, 8), *db = filled(n, -1, 1, 9);
    float *da0 = copy_of(da, n), *db0 = copy_of(db, n);
    nnz_add_backward_ex(n, g, da, true, db);
    for (int64_t i = 0; i < n; i++) {
        assert_float_equal(da[i], da0[i] + g[i], 0);
        assert_float_equal(db[i], db0[i] + g[i], 0);
    }
    nnz_add_backward_ex(n, g, NULL, true, db); /* one operand needs no gradient */
    for (int64_t i = 0; i < n; i++) assert_float_equal(db[i], (db0[i] + g[i]) + g[i], 0);
    nnz_accumulate(n, g, da0);
    for (int64_t i = 0; i < n; i++) assert_float_equal(da0[i], da[i], 0);
    nnz_add_forward(n, a, b, a); /* in place */
    for (int64_t i = 0; i < n; i++) assert_float_equal(a[i], out[i], 0);
    free(a); free(b); free(out); free(g); free(da); free(db); free(da0); free(db0);
}

/* the one-pass add backward: da overwritten or accumulated, db accumulated, either absent, both the
 * same buffer (x + x); and the threaded zero and copy, on the parallel path and a short one */
static void test_add_backward_one_pass(void **state) {
    (void)state;
    const int64_t sizes[] = {100003, 7};
    for (int k = 0; k < 2; k++) {
        const int64_t n = sizes[k];
        float *g = filled(n, -1, 1, 11), *da = filled(n, -1, 1, 12), *db = filled(n, -1, 1, 13);
        float *db0 = copy_of(db, n), *da0 = copy_of(da, n);
        nnz_add_backward_ex(n, g, da, false, db);
        for (int64_t i = 0; i < n; i++) {
            assert_float_equal(da[i], g[i], 0);
            assert_float_equal(db[i], db0[i] + g[i], 0);
        }
        memcpy(da, da0, sizeof(float) * n), memcpy(db, db0, sizeof(float) * n);
        nnz_add_backward_ex(n, g, da, true, db);
        for (int64_t i = 0; i < n; i++) {
            assert_float_equal(da[i], da0[i] + g[i], 0);
            assert_float_equal(db[i], db0[i] + g[i], 0);
        }
        memcpy(da, da0, sizeof(float) * n);
        nnz_add_backward_ex(n, g, da, false, NULL); /* no skip gradient: a copy */
        for (int64_t i = 0; i < n; i++) assert_float_equal(da[i], g[i], 0);
        memcpy(db, db0, sizeof(float) * n);
        nnz_add_backward_ex(n, g, NULL, false, db); /* no main gradient: db accumulates */
        for (int64_t i = 0; i < n; i++) assert_float_equal(db[i], db0[i] + g[i], 0);
        memcpy(da, da0, sizeof(float) * n);
        nnz_add_backward_ex(n, g, da, false, da); /* x + x: dout twice */
        for (int64_t i = 0; i < n; i++) assert_float_equal(da[i], g[i] + g[i], 0);
        nnz_copy_floats(n, g, db);
        assert_memory_equal(db, g, sizeof(float) * n);
        nnz_zero_floats(n, db);
        for (int64_t i = 0; i < n; i++) assert_true(db[i] == 0.0f && !signbit(db[i]));
        free(g); free(da); free(db); free(db0); free(da0);
    }
}

/* ===================== pooling ===================== */

static void test_pool_shape_init(void **state) {
    (void)state;
    nnz_pool_shape s;
    /* PyTorch's floor-mode sizes: MaxPool2d(3,2,1) on 7x5 -> 4x3; (2,2,0) on 7x7 -> 3x3 */
    assert_int_equal(nnz_pool_shape_init(&s, 2, 7, 5, 3, 3, 2, 1), NNZ_OK);
    assert_int_equal(s.OH, 4);
    assert_int_equal(s.OW, 3);
    assert_int_equal(nnz_pool_shape_init(&s, 1, 7, 7, 1, 2, 2, 0), NNZ_OK);
    assert_int_equal(s.OH, 3);
    assert_int_equal(s.OW, 3);
    assert_int_equal(nnz_pool_shape_init(&s, 1, 1, 1, 1, 1, 1, 0), NNZ_OK);
    assert_int_equal(s.OH, 1);
    /* impossible shapes: a status and a message naming the problem */
    struct { int N, H, W, C, K, stride, pad; const char *says; } bad[] = {
        {1, 7, 7, 1, 3, 2, 2, "pad"},      /* pad > K/2 */
        {1, 2, 9, 1, 5, 1, 1, "empty"},    /* K > H + 2 pad */
        {1, 9, 2, 1, 5, 1, 1, "empty"},    /* K > W + 2 pad */
        {0, 7, 7, 1, 3, 1, 1, "positive"}, /* no images */
        {1, 7, 7, 0, 3, 1, 1, "positive"}, /* no channels */
        {1, 7, 7, 1, 0, 1, 0, "kernel"},   /* empty window */
        {1, 7, 7, 1, 3, 0, 1, "stride"},   /* stride 0 */
        {1, 7, 7, 1, 3, 1, -1, "pad"},     /* negative pad */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        nnz_clear_error();
        assert_int_equal(nnz_pool_shape_init(&s, bad[i].N, bad[i].H, bad[i].W, bad[i].C, bad[i].K, bad[i].stride,
                                             bad[i].pad),
                         NNZ_ERR_INVALID_ARG);
        if (!strstr(nnz_last_error(), bad[i].says)) {
            print_error("case %zu: message '%s' does not mention '%s'\n", i, nnz_last_error(), bad[i].says);
            fail();
        }
    }
}

/* The oracle: PyTorch's definitions written as plain loops. */
static void naive_pool(const nnz_pool_shape *s, const float *x, bool max, float *out, int32_t *arg) {
    for (int n = 0; n < s->N; n++)
        for (int oh = 0; oh < s->OH; oh++)
            for (int ow = 0; ow < s->OW; ow++)
                for (int c = 0; c < s->C; c++) {
                    double best = -INFINITY, sum = 0;
                    int32_t where = -1;
                    for (int kh = 0; kh < s->K; kh++)
                        for (int kw = 0; kw < s->K; kw++) {
                            int ih = oh * s->stride - s->pad + kh, iw = ow * s->stride - s->pad + kw;
                            if (ih < 0 || ih >= s->H || iw < 0 || iw >= s->W) continue; /* padding */
                            double v = x[(((int64_t)n * s->H + ih) * s->W + iw) * s->C + c];
                            sum += v;
                            if (where < 0 || v > best) {
                                best = v;
                                where = ih * s->W + iw;
                            }
                        }
                    int64_t o = (((int64_t)n * s->OH + oh) * s->OW + ow) * s->C + c;
                    out[o] = (float)(max ? best : sum / (s->K * s->K));
                    if (arg) arg[o] = where;
                }
}

static const int pool_cases[][7] = {
    /* N, H, W, C, K, stride, pad */
    {2, 7, 5, 3, 3, 2, 1}, {1, 6, 6, 1, 2, 2, 0}, {2, 5, 7, 17, 3, 1, 1}, {1, 9, 7, 4, 3, 2, 0},
    {2, 7, 7, 3, 2, 3, 1}, {1, 11, 9, 2, 5, 2, 2}, {3, 4, 4, 5, 4, 4, 0}, {1, 3, 3, 1, 3, 1, 1},
    {1, 1, 1, 3, 1, 1, 0}, {1, 8, 5, 3, 1, 2, 0},
};
/* more windows that tile the input (stride == K, pad 0), with rows and columns left over, vector
 * tails, and the parallel size (test_maxpool_all_isas; too large for the finite differences) */
static const int tiled_pool_cases[][7] = {{2, 7, 9, 33, 2, 2, 0}, {1, 8, 7, 20, 3, 3, 0}, {4, 17, 13, 40, 2, 2, 0}};
#define N_POOL_CASES (sizeof pool_cases / sizeof pool_cases[0])

static nnz_pool_shape pool_case(size_t i) {
    const int *p = pool_cases[i];
    nnz_pool_shape s;
    assert_int_equal(nnz_pool_shape_init(&s, p[0], p[1], p[2], p[3], p[4], p[5], p[6]), NNZ_OK);
    return s;
}

static int64_t in_size(const nnz_pool_shape *s) { return (int64_t)s->N * s->H * s->W * s->C; }
static int64_t out_size(const nnz_pool_shape *s) { return (int64_t)s->N * s->OH * s->OW * s->C; }

/* Distinct values 0.05 apart (>> 2h), shuffled, shifted negative so padding must not win. */
static float *distinct_values(int64_t n, uint64_t seed) {
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) idx[i] = (int32_t)i;
    nnz_rng r = nnz_rng_make(seed, 3);
    nnz_rng_shuffle(&r, idx, (int)n);
    float *x = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) x[i] = 0.05f * (float)idx[i] - 0.05f * (float)n - 1.0f;
    free(idx);
    return x;
}

static void test_pool_forward_matches_naive(void **state) {
    (void)state;
    for (size_t i = 0; i < N_POOL_CASES; i++) {
        nnz_pool_shape s = pool_case(i);
        float *x = filled(in_size(&s), -3, -1, 10 + i); /* all negative: a 0 from padding would show */
        float *out = malloc(sizeof(float) * out_size(&s)), *ref = malloc(sizeof(float) * out_size(&s));
        int32_t *arg = malloc(sizeof(int32_t) * out_size(&s)), *refarg = malloc(sizeof(int32_t) * out_size(&s));
        nnz_maxpool_forward(&s, x, out, arg);
        naive_pool(&s, x, true, ref, refarg);
        assert_memory_equal(out, ref, sizeof(float) * out_size(&s));
        assert_memory_equal(arg, refarg, sizeof(int32_t) * out_size(&s));
        /* without indices (inference): the same maxima */
        for (int64_t j = 0; j < out_size(&s); j++) out[j] = NAN;
        nnz_maxpool_forward(&s, x, out, NULL);
        assert_memory_equal(out, ref, sizeof(float) * out_size(&s));
        nnz_avgpool_forward(&s, x, out);
        naive_pool(&s, x, false, ref, NULL);
        assert_true(tu_max_rel_err(out, ref, out_size(&s), 1.0) <= 1e-6);
        free(x); free(out); free(ref); free(arg); free(refarg);
    }
}

static void test_pool_parallel_path_matches_naive(void **state) {
    (void)state;
    nnz_pool_shape s;
    assert_int_equal(nnz_pool_shape_init(&s, 8, 15, 15, 40, 3, 2, 1), NNZ_OK); /* > parallel threshold */
    float *x = filled(in_size(&s), -1, 1, 20);
    float *out = malloc(sizeof(float) * out_size(&s)), *ref = malloc(sizeof(float) * out_size(&s));
    int32_t *arg = malloc(sizeof(int32_t) * out_size(&s)), *refarg = malloc(sizeof(int32_t) * out_size(&s));
    nnz_maxpool_forward(&s, x, out, arg);
    naive_pool(&s, x, true, ref, refarg);
    assert_memory_equal(out, ref, sizeof(float) * out_size(&s));
    assert_memory_equal(arg, refarg, sizeof(int32_t) * out_size(&s));
    nnz_avgpool_forward(&s, x, out);
    naive_pool(&s, x, false, ref, NULL);
    assert_true(tu_max_rel_err(out, ref, out_size(&s), 1.0) <= 1e-6);
    /* backward in parallel over images equals the naive scatter */
    float *g = filled(out_size(&s), -1, 1, 21), *din = calloc((size_t)in_size(&s), sizeof(float));
    float *naive = calloc((size_t)in_size(&s), sizeof(float));
    nnz_maxpool_backward(&s, arg, g, din);
    for (int64_t o = 0; o < out_size(&s); o++) {
        int64_t img = o / ((int64_t)s.OH * s.OW * s.C), c = o % s.C;
        naive[(img * s.H * s.W + refarg[o]) * s.C + c] += g[o];
    }
    assert_true(tu_max_rel_err(din, naive, in_size(&s), 1.0) <= 1e-6);
    free(x); free(out); free(ref); free(arg); free(refarg); free(g); free(din); free(naive);
}

static void test_maxpool_ties_and_nan(void **state) {
    (void)state;
    nnz_pool_shape s;
    assert_int_equal(nnz_pool_shape_init(&s, 1, 4, 4, 3, 2, 2, 0), NNZ_OK);
    float x[4 * 4 * 3];
    for (int i = 0; i < 4 * 4 * 3; i++) x[i] = 0.0f;
    /* channel 1: the top-left window has its max 5 at (0,1) and (1,0): (0,1) comes first */
    x[(0 * 4 + 1) * 3 + 1] = 5.0f;
    x[(1 * 4 + 0) * 3 + 1] = 5.0f;
    /* channel 1: the bottom-right window ties at (3,2) and (3,3): (3,2) */
    x[(3 * 4 + 2) * 3 + 1] = 2.0f;
    x[(3 * 4 + 3) * 3 + 1] = 2.0f;
    /* channel 2: a NaN in the top-right window wins */
    x[(1 * 4 + 3) * 3 + 2] = NAN;
    float out[2 * 2 * 3];
    int32_t arg[2 * 2 * 3];
    nnz_maxpool_forward(&s, x, out, arg);
    /* channel 0 all equal: every window picks its first (top-left) input */
    assert_int_equal(arg[(0 * 2 + 0) * 3 + 0], 0 * 4 + 0);
    assert_int_equal(arg[(0 * 2 + 1) * 3 + 0], 0 * 4 + 2);
    assert_int_equal(arg[(1 * 2 + 0) * 3 + 0], 2 * 4 + 0);
    assert_int_equal(arg[(1 * 2 + 1) * 3 + 0], 2 * 4 + 2);
    assert_int_equal(arg[(0 * 2 + 0) * 3 + 1], 0 * 4 + 1);
    assert_float_equal(out[(0 * 2 + 0) * 3 + 1], 5.0f, 0);
    assert_int_equal(arg[(1 * 2 + 1) * 3 + 1], 3 * 4 + 2);
    assert_true(isnan(out[(0 * 2 + 1) * 3 + 2]));
    assert_int_equal(arg[(0 * 2 + 1) * 3 + 2], 1 * 4 + 3);
    /* the gradient of a tie goes to the winner only, added to what is there */
    float dout[2 * 2 * 3], din[4 * 4 * 3];
    for (int i = 0; i < 12; i++) dout[i] = 1.0f + (float)i;
    for (int i = 0; i < 48; i++) din[i] = 0.5f;
    nnz_maxpool_backward(&s, arg, dout, din);
    assert_float_equal(din[(0 * 4 + 1) * 3 + 1], 0.5f + dout[1], 0);
    assert_float_equal(din[(1 * 4 + 0) * 3 + 1], 0.5f, 0);
    assert_float_equal(din[(3 * 4 + 2) * 3 + 1], 0.5f + dout[(1 * 2 + 1) * 3 + 1], 0);
    assert_float_equal(din[(3 * 4 + 3) * 3 + 1], 0.5f, 0);
}

/* The max pool on every ISA path: the forward (values and argmax) equal to the naive loop, and
 * nnz_maxpool_backward_ex (accumulate or overwrite over NaN, with or without the fused relu
 * mask) equal to the naive scatter of the gradient into what was there (or zeros), skipping
 * windows whose pooled value is <= 0 when masked: the tiled path (stride == K, pad 0) and the
 * scatter path alike. */
static void maxpool_isa(nnz_isa isa, void *ctx) {
    (void)ctx;
    const size_t n_tiled = sizeof tiled_pool_cases / sizeof tiled_pool_cases[0];
    for (size_t i = 0; i < N_POOL_CASES + n_tiled; i++) {
        nnz_pool_shape s;
        if (i < N_POOL_CASES) s = pool_case(i);
        else {
            const int *p = tiled_pool_cases[i - N_POOL_CASES];
            assert_int_equal(nnz_pool_shape_init(&s, p[0], p[1], p[2], p[3], p[4], p[5], p[6]), NNZ_OK);
        }
        const int64_t ni = in_size(&s), no = out_size(&s);
        float *x = filled(ni, -1, 1, 40 + i), *g = filled(no, -1, 1, 41 + i), *pre = filled(ni, -1, 1, 42 + i);
        float *out = malloc(sizeof(float) * no), *ref = malloc(sizeof(float) * no);
        int32_t *arg = malloc(sizeof(int32_t) * no), *refarg = malloc(sizeof(int32_t) * no);
        float *got = malloc(sizeof(float) * ni), *want = malloc(sizeof(float) * ni);
        nnz_maxpool_forward(&s, x, out, arg);
        naive_pool(&s, x, true, ref, refarg);
        assert_memory_equal(out, ref, sizeof(float) * no);
        assert_memory_equal(arg, refarg, sizeof(int32_t) * no);
        for (int mode = 0; mode < 4; mode++) {
            const bool acc = mode & 1, masked = mode & 2;
            for (int64_t k = 0; k < ni; k++) {
                want[k] = acc ? pre[k] : 0.0f;
                got[k] = acc ? pre[k] : NAN;
            }
            for (int64_t o = 0; o < no; o++) {
                const int64_t img = o / ((int64_t)s.OH * s.OW * s.C), c = o % s.C;
                if (!masked || out[o] > 0.0f) want[(img * s.H * s.W + arg[o]) * s.C + c] += g[o];
            }
            nnz_maxpool_backward_ex(&s, arg, g, masked ? out : NULL, got, acc);
            for (int64_t k = 0; k < ni; k++)
                if (!(got[k] == want[k]))
                    fail_msg("maxpool backward isa=%s case %zu acc=%d relu=%d: dinp[%lld] = %g, want %g",
                             nnz_isa_name(isa), i, acc, masked, (long long)k, got[k], want[k]);
        }
        free(x); free(g); free(pre); free(out); free(ref); free(arg); free(refarg); free(got); free(want);
    }
}

static void test_maxpool_all_isas(void **state) {
    (void)state;
    tu_for_each_isa(maxpool_isa, NULL);
}

typedef struct {
    nnz_pool_shape s;
    float *x, *w, *out;
    int32_t *arg;
    int kind; /* 0 max, 1 avg, 2 global avg */
} pool_ctx;

static double pool_loss(void *p) {
    pool_ctx *k = p;
    int64_t n;
    if (k->kind == 0) {
        nnz_maxpool_forward(&k->s, k->x, k->out, k->arg);
        n = out_size(&k->s);
    } else if (k->kind == 1) {
        nnz_avgpool_forward(&k->s, k->x, k->out);
        n = out_size(&k->s);
    } else {
        nnz_global_avgpool_forward(k->s.N, k->s.H * k->s.W, k->s.C, k->x, k->out);
        n = (int64_t)k->s.N * k->s.C;
    }
    return dot(k->w, k->out, n);
}

static void check_pool_grad(nnz_pool_shape s, int kind) {
    const int64_t ni = in_size(&s), no = kind == 2 ? (int64_t)s.N * s.C : out_size(&s);
    pool_ctx k = {s, distinct_values(ni, 30 + (uint64_t)kind), filled(no, -1, 1, 31), malloc(sizeof(float) * no),
                  malloc(sizeof(int32_t) * no), kind};
    float *pre = filled(ni, -2, 2, 32), *din = copy_of(pre, ni);
    pool_loss(&k);
    if (kind == 0) nnz_maxpool_backward(&s, k.arg, k.w, din);
    if (kind == 1) nnz_avgpool_backward(&s, k.w, din);
    if (kind == 2) nnz_global_avgpool_backward(s.N, s.H * s.W, s.C, k.w, din);
    const char *names[3] = {"maxpool", "avgpool", "global_avgpool"};
    check_grad(names[kind], pool_loss, &k, k.x, ni, din, pre);
    if (kind == 0) nnz_maxpool_backward(&s, k.arg, k.w, NULL);
    if (kind == 1) nnz_avgpool_backward(&s, k.w, NULL);
    if (kind == 2) nnz_global_avgpool_backward(s.N, s.H * s.W, s.C, k.w, NULL);
    free(k.x); free(k.w); free(k.out); free(k.arg); free(pre); free(din);
}

static void test_pool_backward_finite_differences(void **state) {
    (void)state;
    for (size_t i = 0; i < N_POOL_CASES; i++) {
        check_pool_grad(pool_case(i), 0);
        check_pool_grad(pool_case(i), 1);
    }
    nnz_pool_shape s;
    const int global[][3] = {{2, 7, 5}, {1, 1, 1}, {3, 3, 17}}; /* N, H*W = 7 (as 7x1), C */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(nnz_pool_shape_init(&s, global[i][0], global[i][1], 1, global[i][2], 1, 1, 0), NNZ_OK);
        check_pool_grad(s, 2);
    }
}

static void test_global_avgpool_matches_naive(void **state) {
    (void)state;
    const int N = 5, HW = 49, C = 160; /* parallel path */
    float *x = filled((int64_t)N * HW * C, -1, 1, 40), out[5 * 160];
    nnz_global_avgpool_forward(N, HW, C, x, out);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            double s = 0;
            for (int p = 0; p < HW; p++) s += x[((int64_t)n * HW + p) * C + c];
            assert_float_equal(out[n * C + c], s / HW, 1e-6);
        }
    free(x);
}

/* ===================== dropout ===================== */

static void test_dropout(void **state) {
    (void)state;
    const int64_t n = 200001;
    float *x = filled(n, -1, 1, 50), *out = malloc(sizeof(float) * n), *out2 = malloc(sizeof(float) * n);
    uint8_t *mask = malloc((size_t)n), *mask2 = malloc((size_t)n);
    /* p = 0: the identity, everything kept */
    nnz_rng r = nnz_rng_make(7, 1);
    nnz_dropout_forward(n, 0.0f, &r, x, out, mask);
    assert_memory_equal(out, x, sizeof(float) * n);
    for (int64_t i = 0; i < n; i++) assert_int_equal(mask[i], 1);
    assert_int_equal(r.counter, n); /* the counter advances by n per call */
    /* p = 0.5: about half kept (6 sigma = 0.0067), kept ones doubled, the rest zero */
    r = nnz_rng_make(7, 1);
    nnz_dropout_forward(n, 0.5f, &r, x, out, mask);
    int64_t kept = 0;
    for (int64_t i = 0; i < n; i++) {
        kept += mask[i];
        assert_float_equal(out[i], mask[i] ? 2.0f * x[i] : 0.0f, 0);
    }
    assert_true(fabs((double)kept / n - 0.5) < 0.0067);
    /* p = 0.2: keep rate 0.8 */
    nnz_rng r2 = nnz_rng_make(9, 1);
    nnz_dropout_forward(n, 0.2f, &r2, x, out2, mask2);
    kept = 0;
    for (int64_t i = 0; i < n; i++) kept += mask2[i];
    assert_true(fabs((double)kept / n - 0.8) < 0.0054);
    /* same rng state -> same mask, whatever the thread count; the next call differs */
    int before = nnz_get_threads();
    nnz_set_threads(1);
    r2 = nnz_rng_make(7, 1);
    nnz_dropout_forward(n, 0.5f, &r2, x, out2, mask2);
    nnz_set_threads(before);
    assert_memory_equal(mask, mask2, (size_t)n);
    assert_memory_equal(out, out2, sizeof(float) * n);
    nnz_dropout_forward(n, 0.5f, &r2, x, out2, mask2);
    assert_true(memcmp(mask, mask2, (size_t)n) != 0);
    /* skipping the counter ahead reproduces a later call */
    nnz_rng r3 = nnz_rng_make(7, 1);
    r3.counter = (uint64_t)n;
    nnz_dropout_forward(n, 0.5f, &r3, x, out, mask);
    assert_memory_equal(mask, mask2, (size_t)n);
    /* p = 1: all dropped, no inf/NaN */
    nnz_dropout_forward(n, 1.0f, &r3, x, out, mask);
    for (int64_t i = 0; i < n; i++) assert_true(out[i] == 0.0f && mask[i] == 0);
    free(x); free(out); free(out2); free(mask); free(mask2);
}

static void test_dropout_backward(void **state) {
    (void)state;
    const int64_t n = 1001;
    const float p = 0.3f;
    float *x = filled(n, -1, 1, 60), *out = malloc(sizeof(float) * n), *g = filled(n, -1, 1, 61);
    float *pre = filled(n, -1, 1, 62), *din = copy_of(pre, n);
    uint8_t *mask = malloc((size_t)n);
    nnz_rng r = nnz_rng_make(3, 2);
    nnz_dropout_forward(n, p, &r, x, out, mask);
    nnz_dropout_backward(n, p, mask, g, din);
    /* the forward is linear in x for a fixed mask: the gradient is out/x elementwise */
    for (int64_t i = 0; i < n; i++) {
        double slope = (double)out[i] / x[i];
        assert_float_equal(din[i] - pre[i], g[i] * slope, 1e-6);
        assert_true(mask[i] ? fabs(slope - 1.0 / (1.0 - p)) < 1e-6 : slope == 0.0);
    }
    nnz_dropout_backward(n, p, mask, g, NULL);
    free(x); free(out); free(g); free(pre); free(din); free(mask);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_relu_forward_values),
        cmocka_unit_test(test_relu_backward_finite_differences),
        cmocka_unit_test(test_add_and_accumulate),
        cmocka_unit_test(test_add_backward_one_pass),
        cmocka_unit_test(test_pool_shape_init),
        cmocka_unit_test(test_pool_forward_matches_naive),
        cmocka_unit_test(test_pool_parallel_path_matches_naive),
        cmocka_unit_test(test_maxpool_ties_and_nan),
        cmocka_unit_test(test_maxpool_all_isas),
        cmocka_unit_test(test_pool_backward_finite_differences),
        cmocka_unit_test(test_global_avgpool_matches_naive),
        cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_dropout_backward),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
