/* Batch norm: train forward against a naive two-pass in double, PyTorch's
 * running-stat update, eval mode, accuracy at a large mean/std ratio, finite-
 * difference gradients (accumulating into pre-filled buffers), the same numbers
 * for any thread count, and every ISA path against the reference. */
#include "test_util.h"

#include "nn/nn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    double *mean, *var; /* biased */
} moments;

/* The oracle: two passes in double over the float input. */
static moments naive_moments(int M, int C, const float *x) {
    moments m = {calloc((size_t)C, sizeof(double)), calloc((size_t)C, sizeof(double))};
    for (int c = 0; c < C; c++) {
        double s = 0;
        for (int r = 0; r < M; r++) s += x[(int64_t)r * C + c];
        m.mean[c] = s / M;
        double v = 0;
        for (int r = 0; r < M; r++) {
            double d = x[(int64_t)r * C + c] - m.mean[c];
            v += d * d;
        }
        m.var[c] = v / M;
    }
    return m;
}

static void free_moments(moments *m) {
    free(m->mean);
    free(m->var);
}

/* x (M,C): uniform in [-1,1) times a per-channel spread plus a per-channel offset. */
static float *make_input(int M, int C, uint64_t seed, float spread, float offset) {
    float *x = malloc(sizeof(float) * (size_t)M * C);
    tu_fill_uniform(x, (int64_t)M * C, -1.0f, 1.0f, seed);
    for (int r = 0; r < M; r++)
        for (int c = 0; c < C; c++)
            x[(int64_t)r * C + c] = x[(int64_t)r * C + c] * spread * (1.0f + 0.1f * (float)(c % 5)) + offset * (float)(c % 3);
    return x;
}

static void check_train_forward(int M, int C) {
    float *x = make_input(M, C, 1000 + (uint64_t)M * 31 + (uint64_t)C, 1.5f, 0.7f);
    float *gamma = malloc(sizeof(float) * C), *beta = malloc(sizeof(float) * C);
    float *rm = malloc(sizeof(float) * C), *rv = malloc(sizeof(float) * C);
    float *rm0 = malloc(sizeof(float) * C), *rv0 = malloc(sizeof(float) * C);
    float *sm = malloc(sizeof(float) * C), *si = malloc(sizeof(float) * C);
    float *out = malloc(sizeof(float) * (size_t)M * C);
    tu_fill_uniform(gamma, C, 0.5f, 1.5f, 1);
    tu_fill_uniform(beta, C, -0.5f, 0.5f, 2);
    tu_fill_uniform(rm0, C, -0.2f, 0.2f, 3);
    tu_fill_uniform(rv0, C, 0.5f, 2.0f, 4);
    memcpy(rm, rm0, sizeof(float) * C);
    memcpy(rv, rv0, sizeof(float) * C);
    const float momentum = 0.1f, eps = 1e-5f;
    nnz_batchnorm_forward_train(M, C, x, gamma, beta, rm, rv, momentum, eps, out, sm, si);

    moments m = naive_moments(M, C, x);
    double worst_out = 0, worst_stat = 0;
    for (int c = 0; c < C; c++) {
        double invstd = 1.0 / sqrt(m.var[c] + eps);
        worst_stat = fmax(worst_stat, fabs(sm[c] - m.mean[c]) / fmax(1.0, fabs(m.mean[c])));
        worst_stat = fmax(worst_stat, fabs(si[c] - invstd) / invstd);
        double unbiased = M > 1 ? m.var[c] * M / (M - 1) : m.var[c];
        double erm = 0.9 * rm0[c] + 0.1 * m.mean[c], erv = 0.9 * rv0[c] + 0.1 * unbiased;
        worst_stat = fmax(worst_stat, fabs(rm[c] - erm) / fmax(1.0, fabs(erm)));
        worst_stat = fmax(worst_stat, fabs(rv[c] - erv) / fabs(erv));
        for (int r = 0; r < M; r++) {
            double e = (x[(int64_t)r * C + c] - m.mean[c]) * invstd * gamma[c] + beta[c];
            worst_out = fmax(worst_out, fabs(out[(int64_t)r * C + c] - e));
        }
    }
    /* outputs are O(1): a few float ulps; statistics: float rounding of a double result */
    if (worst_out > 2e-6 || worst_stat > 1e-6) print_error("M=%d C=%d: out err %g, stat err %g\n", M, C, worst_out, worst_stat);
    assert_true(worst_out <= 2e-6);
    assert_true(worst_stat <= 1e-6);
    free_moments(&m);
    free(x); free(gamma); free(beta); free(rm); free(rv); free(rm0); free(rv0); free(sm); free(si); free(out);
}

static void test_train_forward_matches_two_pass(void **state) {
    (void)state;
    /* odd channel counts, M below/at/above a block and a group, C above a channel tile */
    const int shapes[][2] = {{2, 1}, {7, 3}, {16, 17}, {33, 17}, {257, 5}, {300, 1}, {1000, 300}, {4099, 96}, {6, 513}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) check_train_forward(shapes[i][0], shapes[i][1]);
}

static void test_running_stats_update(void **state) {
    (void)state;
    /* M=4, one channel with values 1,2,3,6: mean 3, biased var 3.5, unbiased 14/3 */
    const float x[4] = {1, 2, 3, 6};
    float gamma = 1, beta = 0, rm = 0.5f, rv = 2.0f, out[4], sm, si;
    nnz_batchnorm_forward_train(4, 1, x, &gamma, &beta, &rm, &rv, 0.3f, 0.0f, out, &sm, &si);
    assert_float_equal(sm, 3.0f, 1e-6);
    assert_float_equal(si, 1.0 / sqrt(3.5), 1e-6);
    assert_float_equal(rm, 0.7 * 0.5 + 0.3 * 3.0, 1e-6);
    assert_float_equal(rv, 0.7 * 2.0 + 0.3 * (14.0 / 3.0), 1e-6);
    /* NULL running buffers: no update, same output */
    float out2[4];
    nnz_batchnorm_forward_train(4, 1, x, &gamma, &beta, NULL, NULL, 0.3f, 0.0f, out2, &sm, &si);
    for (int i = 0; i < 4; i++) assert_float_equal(out2[i], out[i], 0);
    /* M=1: PyTorch refuses; we take the biased variance (0) and stay finite */
    float one = 5.0f, o1;
    rm = 1.0f;
    rv = 1.0f;
    nnz_batchnorm_forward_train(1, 1, &one, &gamma, &beta, &rm, &rv, 0.1f, 1e-5f, &o1, &sm, &si);
    assert_float_equal(rv, 0.9, 1e-6);
    assert_float_equal(rm, 0.9 + 0.5, 1e-6);
    assert_float_equal(o1, 0.0f, 0);
}

static void test_eval_uses_running_stats(void **state) {
    (void)state;
    const int M = 37, C = 19;
    float *x = make_input(M, C, 5, 2.0f, 1.0f);
    float gamma[19], beta[19], rm[19], rv[19], out[37 * 19];
    tu_fill_uniform(gamma, C, 0.5f, 1.5f, 6);
    tu_fill_uniform(beta, C, -0.5f, 0.5f, 7);
    tu_fill_uniform(rm, C, -1.0f, 1.0f, 8);
    tu_fill_uniform(rv, C, 0.1f, 3.0f, 9);
    const float eps = 1e-3f;
    nnz_batchnorm_forward_eval(M, C, x, gamma, beta, rm, rv, eps, out);
    double worst = 0;
    for (int r = 0; r < M; r++)
        for (int c = 0; c < C; c++) {
            double e = (x[r * C + c] - (double)rm[c]) / sqrt((double)rv[c] + eps) * gamma[c] + beta[c];
            worst = fmax(worst, fabs(out[r * C + c] - e));
        }
    assert_true(worst <= 2e-6);
    free(x);
}

/* |mean|/std = 3000 over 100k rows: a one-pass float E[x^2]-E[x]^2 would lose every digit. */
static void test_large_offset_stays_accurate(void **state) {
    (void)state;
    const int M = 100000, C = 3;
    float *x = malloc(sizeof(float) * M * C);
    nnz_rng r = nnz_rng_make(77, 0);
    for (int i = 0; i < M * C; i++) x[i] = 300.0f + 0.1f * nnz_rng_normal(&r);
    float gamma[3] = {1, 1, 1}, beta[3] = {0, 0, 0}, sm[3], si[3];
    float *out = malloc(sizeof(float) * M * C);
    nnz_batchnorm_forward_train(M, C, x, gamma, beta, NULL, NULL, 0.1f, 0.0f, out, sm, si);
    moments m = naive_moments(M, C, x);
    for (int c = 0; c < C; c++) {
        double invstd = 1.0 / sqrt(m.var[c]);
        double err = fabs(si[c] - invstd) / invstd;
        /* rounding invstd to float alone costs up to 6e-8; dropping the block-mean
         * correction of the two-pass scheme costs ~1e-6 here */
        if (err > 2e-7) print_error("channel %d: invstd %g vs %g (rel %g)\n", c, si[c], invstd, err);
        assert_true(err <= 2e-7);
        assert_float_equal(sm[c], m.mean[c], 1e-4); /* float spacing at 300 is 3e-5 */
    }
    /* the normalized output has mean ~0 and variance ~1 */
    double s = 0, s2 = 0;
    for (int i = 0; i < M; i++) {
        s += out[i * C];
        s2 += (double)out[i * C] * out[i * C];
    }
    assert_true(fabs(s / M) < 1e-3);
    assert_true(fabs(s2 / M - 1.0) < 1e-3);
    free_moments(&m);
    free(x);
    free(out);
}

/* ---- gradients ---- */

typedef struct {
    int M, C;
    float *x, *gamma, *beta, *w; /* w (M,C): the loss is sum w*out, in double */
    float *out, *sm, *si;
} bn_case;

static double bn_loss(bn_case *k) {
    nnz_batchnorm_forward_train(k->M, k->C, k->x, k->gamma, k->beta, NULL, NULL, 0.1f, 1e-5f, k->out, k->sm, k->si);
    double L = 0;
    for (int64_t i = 0; i < (int64_t)k->M * k->C; i++) L += (double)k->w[i] * k->out[i];
    return L;
}

/* Central difference of bn_loss w.r.t. *p; the step is the one float actually takes. */
static double central_diff(bn_case *k, float *p, float h) {
    const float v = *p;
    *p = v + h;
    const double hp = (double)*p, Lp = bn_loss(k);
    *p = v - h;
    const double hm = (double)*p, Lm = bn_loss(k);
    *p = v;
    return (Lp - Lm) / (hp - hm);
}

/* Tolerance for these checks: |fd - analytic| <= 5e-4 + 5e-4*|fd| with h = 1e-2 on
 * O(1) inputs. Float forward noise over ~100 outputs is ~1e-6/h = 1e-4, truncation
 * O(h^2) ~ 1e-4 (the worst seen is 1.2e-4); a wrong term (e.g. a missing mean or variance path) is O(0.1). */
#define FD_H 1e-2f
#define FD_ABS 5e-4
#define FD_REL 5e-4

static void check_fd(const char *what, int i, double fd, double an) {
    if (fabs(fd - an) > FD_ABS + FD_REL * fabs(fd)) {
        print_error("%s[%d]: finite difference %.6g, analytic %.6g\n", what, i, fd, an);
        fail();
    }
}

static void check_backward(int M, int C) {
    bn_case k = {M, C, make_input(M, C, 11 + (uint64_t)M, 1.0f, 0.5f), malloc(sizeof(float) * C),
                 malloc(sizeof(float) * C), malloc(sizeof(float) * M * C), malloc(sizeof(float) * M * C),
                 malloc(sizeof(float) * C), malloc(sizeof(float) * C)};
    tu_fill_uniform(k.gamma, C, 0.5f, 1.5f, 12);
    tu_fill_uniform(k.beta, C, -0.5f, 0.5f, 13);
    tu_fill_uniform(k.w, (int64_t)M * C, -1.0f, 1.0f, 14);
    /* pre-filled gradients: backward must add to them */
    float *dinp = malloc(sizeof(float) * M * C), *pre = malloc(sizeof(float) * M * C);
    float *dgamma = malloc(sizeof(float) * C), *dbeta = malloc(sizeof(float) * C);
    float *preg = malloc(sizeof(float) * C), *preb = malloc(sizeof(float) * C);
    tu_fill_uniform(pre, (int64_t)M * C, -3.0f, 3.0f, 15);
    tu_fill_uniform(preg, C, -3.0f, 3.0f, 16);
    tu_fill_uniform(preb, C, -3.0f, 3.0f, 17);
    memcpy(dinp, pre, sizeof(float) * M * C);
    memcpy(dgamma, preg, sizeof(float) * C);
    memcpy(dbeta, preb, sizeof(float) * C);
    bn_loss(&k);
    nnz_batchnorm_backward(M, C, k.x, k.gamma, k.sm, k.si, k.w, dinp, dgamma, dbeta);
    for (int i = 0; i < M * C; i++) check_fd("dinp", i, central_diff(&k, &k.x[i], FD_H), (double)dinp[i] - pre[i]);
    for (int c = 0; c < C; c++) {
        check_fd("dgamma", c, central_diff(&k, &k.gamma[c], FD_H), (double)dgamma[c] - preg[c]);
        check_fd("dbeta", c, central_diff(&k, &k.beta[c], FD_H), (double)dbeta[c] - preb[c]);
    }
    /* dinp NULL: parameter gradients still accumulate (a second time) */
    bn_loss(&k);
    float *dg2 = malloc(sizeof(float) * C);
    memcpy(dg2, dgamma, sizeof(float) * C);
    nnz_batchnorm_backward(M, C, k.x, k.gamma, k.sm, k.si, k.w, NULL, dg2, NULL);
    for (int c = 0; c < C; c++) assert_float_equal(dg2[c] - dgamma[c], dgamma[c] - preg[c], 1e-5);
    free(dg2);
    free(k.x); free(k.gamma); free(k.beta); free(k.w); free(k.out); free(k.sm); free(k.si);
    free(dinp); free(pre); free(dgamma); free(dbeta); free(preg); free(preb);
}

static void test_backward_finite_differences(void **state) {
    (void)state;
    check_backward(10, 3);
    check_backward(21, 1);
    check_backward(6, 17);
    check_backward(40, 5); /* more than two blocks */
}

/* ---- determinism and ISA paths ---- */

typedef struct {
    float *out, *sm, *si, *rm, *rv, *dinp, *dg, *db;
} bn_result;

static bn_result run_all(int M, int C, const float *x, const float *dy) {
    bn_result r = {malloc(sizeof(float) * M * C), malloc(sizeof(float) * C), malloc(sizeof(float) * C),
                   calloc((size_t)C, sizeof(float)), malloc(sizeof(float) * C), calloc((size_t)M * C, sizeof(float)),
                   calloc((size_t)C, sizeof(float)), calloc((size_t)C, sizeof(float))};
    float *gamma = malloc(sizeof(float) * C), *beta = malloc(sizeof(float) * C);
    tu_fill_uniform(gamma, C, 0.5f, 1.5f, 21);
    tu_fill_uniform(beta, C, -0.5f, 0.5f, 22);
    for (int c = 0; c < C; c++) r.rv[c] = 1.0f;
    nnz_batchnorm_forward_train(M, C, x, gamma, beta, r.rm, r.rv, 0.1f, 1e-5f, r.out, r.sm, r.si);
    nnz_batchnorm_backward(M, C, x, gamma, r.sm, r.si, dy, r.dinp, r.dg, r.db);
    free(gamma);
    free(beta);
    return r;
}

static void free_result(bn_result *r) {
    free(r->out); free(r->sm); free(r->si); free(r->rm); free(r->rv); free(r->dinp); free(r->dg); free(r->db);
}

static void test_same_numbers_for_any_thread_count(void **state) {
    (void)state;
    const int M = 3001, C = 40; /* big enough to run in parallel, many groups */
    float *x = make_input(M, C, 31, 2.0f, 3.0f), *dy = make_input(M, C, 32, 1.0f, 0.0f);
    int before = nnz_get_threads();
    nnz_set_threads(1);
    bn_result a = run_all(M, C, x, dy);
    nnz_set_threads(2);
    bn_result b = run_all(M, C, x, dy);
    nnz_set_threads(3);
    bn_result c = run_all(M, C, x, dy);
    nnz_set_threads(before);
    const bn_result *others[2] = {&b, &c};
    for (int k = 0; k < 2; k++) {
        assert_memory_equal(a.out, others[k]->out, sizeof(float) * M * C);
        assert_memory_equal(a.sm, others[k]->sm, sizeof(float) * C);
        assert_memory_equal(a.si, others[k]->si, sizeof(float) * C);
        assert_memory_equal(a.rv, others[k]->rv, sizeof(float) * C);
        assert_memory_equal(a.dinp, others[k]->dinp, sizeof(float) * M * C);
        assert_memory_equal(a.dg, others[k]->dg, sizeof(float) * C);
        assert_memory_equal(a.db, others[k]->db, sizeof(float) * C);
    }
    free_result(&a);
    free_result(&b);
    free_result(&c);
    free(x);
    free(dy);
}

typedef struct {
    int M, C;
    float *x, *dy;
    bn_result ref;
} isa_ctx;

static void compare_isa(nnz_isa isa, void *p) {
    isa_ctx *k = p;
    bn_result r = run_all(k->M, k->C, k->x, k->dy);
    /* same math, different vector width and FMA contraction: rounding-level differences */
    double e_out = tu_max_rel_err(r.out, k->ref.out, (int64_t)k->M * k->C, 1.0);
    double e_si = tu_max_rel_err(r.si, k->ref.si, k->C, 1.0);
    double e_din = tu_max_rel_err(r.dinp, k->ref.dinp, (int64_t)k->M * k->C, 1e-2);
    double e_dg = tu_max_rel_err(r.dg, k->ref.dg, k->C, 1.0);
    double e_db = tu_max_rel_err(r.db, k->ref.db, k->C, 1.0);
    if (e_out > 1e-6 || e_si > 1e-6 || e_din > 1e-4 || e_dg > 1e-5 || e_db > 1e-5)
        print_error("isa %s: out %g invstd %g dinp %g dgamma %g dbeta %g\n", nnz_isa_name(isa), e_out, e_si, e_din,
                    e_dg, e_db);
    assert_true(e_out <= 1e-6 && e_si <= 1e-6 && e_din <= 1e-4 && e_dg <= 1e-5 && e_db <= 1e-5);
    free_result(&r);
}

static void test_every_isa_matches_reference(void **state) {
    (void)state;
    const int shapes[][2] = {{1031, 17}, {600, 96}, {70, 300}};
    for (int s = 0; s < 3; s++) {
        isa_ctx k = {shapes[s][0], shapes[s][1], NULL, NULL, {0}};
        k.x = make_input(k.M, k.C, 41, 2.0f, 1.0f);
        k.dy = make_input(k.M, k.C, 42, 1.0f, 0.0f);
        nnz_isa before = nnz_isa_active();
        assert_int_equal(nnz_isa_set(NNZ_ISA_REF), NNZ_OK);
        k.ref = run_all(k.M, k.C, k.x, k.dy);
        assert_int_equal(nnz_isa_set(before), NNZ_OK);
        tu_for_each_isa(compare_isa, &k);
        free_result(&k.ref);
        free(k.x);
        free(k.dy);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_train_forward_matches_two_pass),
        cmocka_unit_test(test_running_stats_update),
        cmocka_unit_test(test_eval_uses_running_stats),
        cmocka_unit_test(test_large_offset_stays_accurate),
        cmocka_unit_test(test_backward_finite_differences),
        cmocka_unit_test(test_same_numbers_for_any_thread_count),
        cmocka_unit_test(test_every_isa_matches_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
