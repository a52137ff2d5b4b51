/* nn: running the graph: a whole-model finite-difference gradient check,
 * train vs eval batch norm, dropout, in-place activations and aliases,
 * determinism, predict, buffer reservation, and every zoo model end to end. */
#include "test_util.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nn.h"

enum { N = 3, H = 6, W = 6, C = 2, CLASSES = 5 };

/* input 6x6x2 -> conv 3x3 (4, bias) -> bn -> relu6 -> grouped conv 3x3 (4, groups 2)
 * -> bn -> add(relu6) -> maxpool 2/2 -> identity -> flatten -> dropout(0) -> linear 5 */
static nnz_model *small_model(uint64_t seed, bool keep_activations) {
    nnz_model *m;
    assert_int_equal(nnz_model_create(H, W, C, &m), NNZ_OK);
    nnz_add_conv2d(m, "c1", 4, 3, 1, 1, 1, true);
    nnz_add_batchnorm(m, "bn1");
    int act = nnz_add_activation(m, "act1", NNZ_OP_RELU6);
    nnz_block_begin(m);
    nnz_add_conv2d(m, "c2", 4, 3, 1, 1, 2, false);
    nnz_add_batchnorm(m, "bn2");
    nnz_add_residual(m, "res", act);
    nnz_block_end(m);
    nnz_add_pool(m, "mp", NNZ_OP_MAXPOOL, 2, 2, 0);
    nnz_add_activation(m, "id", NNZ_OP_IDENTITY);
    nnz_add_flatten(m, "flat");
    nnz_add_dropout(m, "drop", 0.0f);
    nnz_add_linear(m, "fc", CLASSES, true);
    if (nnz_model_finalize(m, seed) != NNZ_OK) fail_msg("%s", nnz_last_error());
    m->keep_activations = keep_activations;
    m->input_grad = true;
    /* non-trivial BN affine parameters, so their gradients are exercised */
    for (int i = 0; i < m->n_params; i++) {
        nnz_param *p = &m->params[i];
        if (!p->trainable || m->nodes[p->node].op != NNZ_OP_BATCHNORM) continue;
        tu_fill_uniform(nnz_tensor_f32(&p->value), nnz_tensor_numel(&p->value), 0.5f, 1.5f, 100 + (uint64_t)i);
    }
    return m;
}

/* L = sum r .* logits, in double; dL/dlogits = r */
static double loss(nnz_model *m, const float *x, const float *r) {
    assert_int_equal(nnz_model_forward(m, x, N, true), NNZ_OK);
    const float *out = nnz_model_output(m);
    double l = 0;
    for (int i = 0; i < N * CLASSES; i++) l += (double)r[i] * out[i];
    return l;
}

/* Which side of every kink the forward is on: relu6 regions and maxpool winners.
 * A finite difference across a kink measures nothing, so such coordinates are skipped. */
static uint64_t kink_pattern(const nnz_model *m) {
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < m->n_nodes; i++) {
        const nnz_node *nd = &m->nodes[i];
        int64_t n = (int64_t)N * nd->h * nd->w * nd->c;
        for (int64_t e = 0; e < n; e++) {
            uint64_t v;
            if (nd->op == NNZ_OP_RELU6) v = m->act[i][e] <= 0 ? 0 : m->act[i][e] >= 6 ? 2 : 1;
            else if (nd->op == NNZ_OP_MAXPOOL) v = (uint64_t)((int32_t *)m->aux[i])[e];
            else continue;
            h = (h ^ v) * 1099511628211ull;
        }
    }
    return h;
}

typedef struct {
    float *value; /* the float perturbed */
    double analytic;
    const char *what;
} coord;

/* sum |r .* logits|: the scale of L's float32 rounding */
static double loss_magnitude(const nnz_model *m, const float *r) {
    const float *out = nnz_model_output(m);
    double s = 0;
    for (int i = 0; i < N * CLASSES; i++) s += fabs((double)r[i] * out[i]);
    return s;
}

/* Central differences, step h = 1e-2: the forward is float32, so a smaller step
 * drowns in rounding; truncation error is O(h^2) (observed: 2e-4 relative). Agreement:
 * |fd - analytic| <= 2e-3 * max(|fd|, |analytic|) + FLT_EPSILON * sum|r .* logits| / h.
 * The second term is the difference quotient's own rounding: L(+h) and L(-h) each carry
 * about u * sum|r .* logits| per level of rounding in the logits (u = FLT_EPSILON / 2), two
 * levels allowed, over 2h. Here it is 7e-5; a fixed 2e-5 was below it: the same backward value
 * (-0.0089285) met finite differences 3.2e-5 apart under OpenBLAS's Prescott and SkylakeX
 * kernels, and failed under one. A 0.5% error in any parameter gradient still fails. */
static void check_coords(nnz_model *m, const float *x, const float *r, coord *cs, int n, int *checked) {
    const float h = 1e-2f;
    for (int i = 0; i < n; i++) {
        float saved = *cs[i].value;
        loss(m, x, r);
        const double scale = loss_magnitude(m, r);
        uint64_t base = kink_pattern(m);
        *cs[i].value = saved + h;
        double lp = loss(m, x, r);
        uint64_t kp = kink_pattern(m);
        *cs[i].value = saved - h;
        double lm = loss(m, x, r);
        uint64_t km = kink_pattern(m);
        *cs[i].value = saved;
        if (kp != base || km != base) continue;
        double fd = (lp - lm) / (2.0 * (double)h);
        double tol = 2e-3 * fmax(fabs(fd), fabs(cs[i].analytic)) + FLT_EPSILON * scale / h;
        if (getenv("NNZ_TEST_VERBOSE"))
            print_message("%-16s fd %12.6g bw %12.6g err %.2e\n", cs[i].what, fd, cs[i].analytic,
                          fabs(fd - cs[i].analytic) / fmax(fmax(fabs(fd), fabs(cs[i].analytic)), 1e-2));
        if (fabs(fd - cs[i].analytic) > tol)
            fail_msg("%s: finite difference %.6g, backward %.6g", cs[i].what, fd, cs[i].analytic);
        (*checked)++;
    }
}

static void test_whole_model_gradient_check(void **state) {
    (void)state;
    nnz_model *m = small_model(3, false);
    float x[N * H * W * C], r[N * CLASSES];
    tu_fill_uniform(x, N * H * W * C, -1.0f, 1.0f, 1);
    tu_fill_uniform(r, N * CLASSES, -1.0f, 1.0f, 2);
    assert_int_equal(nnz_model_reserve(m, N), NNZ_OK);
    loss(m, x, r);
    nnz_model_zero_grad(m);
    assert_int_equal(nnz_model_backward(m, x, N, r), NNZ_OK);

    /* c1.bias feeds a batch norm, which removes it: its gradient is exactly 0, so
     * finite differences would measure only rounding; check the zero instead. */
    const nnz_param *c1w = &m->params[nnz_model_find_param(m, "c1.weight")];
    const nnz_param *c1b = &m->params[nnz_model_find_param(m, "c1.bias")];
    float gmax = 0;
    for (int64_t e = 0; e < nnz_tensor_numel(&c1w->value); e++) gmax = fmaxf(gmax, fabsf(c1w->grad[e]));
    assert_true(gmax > 0.1f);
    for (int e = 0; e < 4; e++) assert_true(fabsf(c1b->grad[e]) < 1e-5f * gmax);

    static const char *const names[] = {"c1.weight", "bn1.weight", "bn1.bias", "c2.weight",
                                        "bn2.weight", "bn2.bias",  "fc.weight", "fc.bias"};
    enum { PER = 6, NP = sizeof names / sizeof names[0] };
    coord cs[NP * PER + 12];
    char labels[NP * PER + 12][80];
    int n = 0;
    nnz_rng pick = nnz_rng_make(9, 9);
    for (int k = 0; k < NP; k++) {
        int pi = nnz_model_find_param(m, names[k]);
        assert_true(pi >= 0);
        nnz_param *p = &m->params[pi];
        int64_t numel = nnz_tensor_numel(&p->value);
        for (int j = 0; j < PER; j++) {
            int64_t e = nnz_rng_below(&pick, (uint32_t)numel);
            snprintf(labels[n], sizeof labels[n], "%s[%lld]", names[k], (long long)e);
            cs[n] = (coord){nnz_tensor_f32(&p->value) + e, p->grad[e], labels[n]};
            n++;
        }
    }
    float xp[N * H * W * C];
    memcpy(xp, x, sizeof x);
    for (int j = 0; j < 12; j++) { /* the input, through dinput */
        int64_t e = nnz_rng_below(&pick, N * H * W * C);
        snprintf(labels[n], sizeof labels[n], "input[%lld]", (long long)e);
        cs[n] = (coord){xp + e, m->dinput[e], labels[n]};
        n++;
    }
    /* the analytic values were taken above; the perturbed input is xp */
    int checked = 0;
    check_coords(m, xp, r, cs, n, &checked);
    /* kinks are rare with these values: nearly every coordinate is checked */
    if (checked < n * 3 / 4) fail_msg("only %d of %d coordinates away from kinks", checked, n);
    if (getenv("NNZ_TEST_VERBOSE")) print_message("checked %d of %d coordinates\n", checked, n);
    nnz_model_free(m);
}

/* Gradients accumulate across backward calls until zero_grad. */
static void test_backward_accumulates(void **state) {
    (void)state;
    nnz_model *m = small_model(4, false);
    float x[N * H * W * C], r[N * CLASSES];
    tu_fill_uniform(x, N * H * W * C, -1.0f, 1.0f, 3);
    tu_fill_uniform(r, N * CLASSES, -1.0f, 1.0f, 4);
    int wi = nnz_model_find_param(m, "c1.weight");
    int64_t numel = nnz_tensor_numel(&m->params[wi].value);
    float *once = malloc((size_t)numel * sizeof(float));
    loss(m, x, r);
    nnz_model_zero_grad(m);
    assert_int_equal(nnz_model_backward(m, x, N, r), NNZ_OK);
    memcpy(once, m->params[wi].grad, (size_t)numel * sizeof(float));
    assert_int_equal(nnz_model_backward(m, x, N, r), NNZ_OK);
    /* the second pass adds its float sums onto the first: equal to 2x up to rounding (1e-5 relative) */
    for (int64_t e = 0; e < numel; e++) assert_float_equal(m->params[wi].grad[e], 2 * once[e], 1e-5 * fabs(once[e]) + 1e-9);
    nnz_model_zero_grad(m);
    for (int64_t e = 0; e < numel; e++) assert_float_equal(m->params[wi].grad[e], 0, 0);
    free(once);
    nnz_model_free(m);
}

/* In-place relu6 and the identity/flatten aliases change no number. */
static void test_inplace_and_aliases_match_copies(void **state) {
    (void)state;
    nnz_model *a = small_model(5, false), *b = small_model(5, true);
    float x[N * H * W * C], r[N * CLASSES];
    tu_fill_uniform(x, N * H * W * C, -1.0f, 1.0f, 5);
    tu_fill_uniform(r, N * CLASSES, -1.0f, 1.0f, 6);
    nnz_model *ms[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        loss(ms[k], x, r);
        nnz_model_zero_grad(ms[k]);
        assert_int_equal(nnz_model_backward(ms[k], x, N, r), NNZ_OK);
    }
    int act1 = 2, bn1 = 1, id = 7, mp = 6, flat = 8;
    assert_ptr_equal(a->act[act1], a->act[bn1]); /* relu6 ran in place */
    assert_ptr_not_equal(b->act[act1], b->act[bn1]);
    assert_ptr_equal(a->act[id], a->act[mp]);
    assert_ptr_equal(a->act[flat], a->act[mp]);
    assert_ptr_equal(a->dact[flat], a->dact[mp]);
    assert_memory_equal(nnz_model_output(a), nnz_model_output(b), N * CLASSES * sizeof(float));
    for (int i = 0; i < a->n_params; i++) {
        size_t bytes = nnz_tensor_bytes(&a->params[i].value);
        assert_memory_equal(a->params[i].value.data, b->params[i].value.data, bytes); /* running stats too */
        if (a->params[i].grad) assert_memory_equal(a->params[i].grad, b->params[i].grad, bytes);
    }
    assert_memory_equal(a->dinput, b->dinput, sizeof x);
    nnz_model_free(a);
    nnz_model_free(b);
}

/* input 2x2x3 -> bn -> flatten */
static void test_batchnorm_train_vs_eval(void **state) {
    (void)state;
    enum { B = 4, HW = 4, CH = 3 };
    nnz_model *m;
    assert_int_equal(nnz_model_create(2, 2, CH, &m), NNZ_OK);
    nnz_add_batchnorm(m, "bn");
    nnz_add_flatten(m, "f");
    assert_int_equal(nnz_model_finalize(m, 1), NNZ_OK);
    float x[B * HW * CH];
    tu_fill_uniform(x, B * HW * CH, 1.0f, 3.0f, 7);
    float *rm = nnz_tensor_f32(&m->params[m->nodes[0].running_mean].value);
    float *rv = nnz_tensor_f32(&m->params[m->nodes[0].running_var].value);

    /* train: batch statistics, so each channel of the output has mean 0, biased variance 1 */
    assert_int_equal(nnz_model_forward(m, x, B, true), NNZ_OK);
    const float *y = nnz_model_output(m);
    for (int c = 0; c < CH; c++) {
        double mean = 0, var = 0, xm = 0, xv = 0;
        for (int i = 0; i < B * HW; i++) mean += y[i * CH + c], xm += x[i * CH + c];
        mean /= B * HW, xm /= B * HW;
        for (int i = 0; i < B * HW; i++) {
            var += (y[i * CH + c] - mean) * (y[i * CH + c] - mean);
            xv += (x[i * CH + c] - xm) * (x[i * CH + c] - xm);
        }
        assert_float_equal(mean, 0, 1e-5);
        assert_float_equal(var / (B * HW), 1, 1e-3); /* eps 1e-5 against a variance ~0.3 */
        /* running statistics moved by momentum 0.1 from (0, 1), with the unbiased variance */
        assert_float_equal(rm[c], 0.1 * xm, 1e-6);
        assert_float_equal(rv[c], 0.9 + 0.1 * xv / (B * HW - 1), 1e-6);
    }
    /* eval: the running statistics, and they stay put */
    float rm0[CH], rv0[CH];
    memcpy(rm0, rm, sizeof rm0);
    memcpy(rv0, rv, sizeof rv0);
    assert_int_equal(nnz_model_forward(m, x, B, false), NNZ_OK);
    y = nnz_model_output(m);
    for (int i = 0; i < B * HW; i++)
        for (int c = 0; c < CH; c++)
            assert_float_equal(y[i * CH + c], (x[i * CH + c] - rm[c]) / sqrt(rv[c] + 1e-5), 1e-5);
    assert_memory_equal(rm0, rm, sizeof rm0);
    assert_memory_equal(rv0, rv, sizeof rv0);
    nnz_model_free(m);
}

/* input 4x4x2 -> flatten -> dropout p -> linear (identity-initialised) */
static void test_dropout_train_and_eval(void **state) {
    (void)state;
    enum { B = 8, F = 32 };
    nnz_model *m;
    assert_int_equal(nnz_model_create(4, 4, 2, &m), NNZ_OK);
    nnz_add_flatten(m, "f");
    nnz_add_dropout(m, "d", 0.5f);
    nnz_add_global_avgpool(m, "g"); /* (1,1,32) -> (1,1,32): a no-op average over one position */
    assert_int_equal(nnz_model_finalize(m, 1), NNZ_OK);
    float x[B * F];
    tu_fill_uniform(x, B * F, 1.0f, 2.0f, 8);
    assert_int_equal(nnz_model_forward(m, x, B, false), NNZ_OK);
    assert_memory_equal(nnz_model_output(m), x, sizeof x); /* eval: no dropout */
    float first[B * F];
    int zeros = 0;
    assert_int_equal(nnz_model_forward(m, x, B, true), NNZ_OK);
    memcpy(first, nnz_model_output(m), sizeof first);
    for (int i = 0; i < B * F; i++) {
        if (first[i] == 0) zeros++;
        else assert_float_equal(first[i], 2 * x[i], 1e-6);
    }
    assert_true(zeros > B * F / 4 && zeros < 3 * B * F / 4);
    assert_int_equal(nnz_model_forward(m, x, B, true), NNZ_OK); /* the rng moved on: a new mask */
    assert_memory_not_equal(nnz_model_output(m), first, sizeof first);
    nnz_model_free(m);
}

static void test_determinism_predict_and_reserve(void **state) {
    (void)state;
    enum { B = 5 };
    nnz_model *a = small_model(11, false), *b = small_model(11, false);
    float x[B * H * W * C], y1[B * CLASSES], y2[B * CLASSES], y3[B * CLASSES];
    tu_fill_uniform(x, B * H * W * C, -1.0f, 1.0f, 10);
    assert_int_equal(nnz_model_forward(a, x, B, false), NNZ_OK);
    assert_int_equal(a->batch_cap, B); /* forward reserved what it needed */
    memcpy(y1, nnz_model_output(a), sizeof y1);
    assert_int_equal(nnz_model_forward(a, x, B, false), NNZ_OK);
    assert_memory_equal(y1, nnz_model_output(a), sizeof y1);
    assert_int_equal(nnz_model_predict(b, x, B, y2), NNZ_OK);
    assert_memory_equal(y1, y2, sizeof y1);
    /* predict in chunks of the reserved batch gives the same logits, up to the
     * GEMMs' summation order, which may depend on the batch (rows): 1e-5 relative */
    nnz_model *c = small_model(11, false);
    assert_int_equal(nnz_model_reserve(c, 2), NNZ_OK);
    assert_int_equal(nnz_model_predict(c, x, B, y3), NNZ_OK);
    assert_true(tu_max_rel_err(y3, y1, B * CLASSES, 1e-2) < 1e-5);
    /* a larger batch reallocates; a smaller one keeps the buffers */
    float *before = c->act[0];
    assert_int_equal(nnz_model_reserve(c, 1), NNZ_OK);
    assert_ptr_equal(before, c->act[0]);
    assert_int_equal(nnz_model_reserve(c, 64), NNZ_OK);
    assert_int_equal(c->batch_cap, 64);
    assert_int_equal(nnz_model_predict(c, x, B, y3), NNZ_OK);
    assert_memory_equal(y1, y3, sizeof y1); /* one chunk of 5 again: bit-identical */
    /* errors */
    float r[B * CLASSES] = {0};
    assert_int_equal(nnz_model_backward(a, x, B + 1, r), NNZ_ERR_INVALID_ARG);
    assert_int_equal(nnz_model_forward(a, NULL, B, false), NNZ_ERR_INVALID_ARG);
    assert_int_equal(nnz_model_forward(a, x, 0, false), NNZ_ERR_INVALID_ARG);
    assert_int_equal(nnz_model_reserve(a, 0), NNZ_ERR_INVALID_ARG);
    assert_int_equal(nnz_model_predict(a, x, B, NULL), NNZ_ERR_INVALID_ARG);
    nnz_model *raw;
    assert_int_equal(nnz_model_create(2, 2, 1, &raw), NNZ_OK);
    assert_int_equal(nnz_model_forward(raw, x, 1, false), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "not finalized"));
    nnz_model_free(raw);
    nnz_model_free(a);
    nnz_model_free(b);
    nnz_model_free(c);
}

/* Every zoo model: a train step's forward/backward is finite and reaches the
 * first layer; eval logits are finite. */
static void test_zoo_models_run(void **state) {
    (void)state;
    enum { B = 2, HH = 16, WW = 16, CC = 1, K = 10 };
    float x[B * HH * WW * CC], d[B * K];
    tu_fill_uniform(x, B * HH * WW * CC, 0.0f, 1.0f, 12);
    tu_fill_uniform(d, B * K, -0.1f, 0.1f, 13);
    for (const char *const *name = nnz_zoo_names(); *name; name++) {
        nnz_model *m;
        assert_int_equal(nnz_model_from_zoo(*name, HH, WW, CC, K, 1, &m), NNZ_OK);
        assert_int_equal(nnz_model_forward(m, x, B, true), NNZ_OK);
        const float *y = nnz_model_output(m);
        for (int i = 0; i < B * K; i++) assert_true(isfinite(y[i]));
        nnz_model_zero_grad(m);
        assert_int_equal(nnz_model_backward(m, x, B, d), NNZ_OK);
        for (int i = 0; i < m->n_params; i++) {
            const nnz_param *p = &m->params[i];
            if (!p->grad) continue;
            double norm = 0;
            for (int64_t e = 0; e < nnz_tensor_numel(&p->value); e++) norm += (double)p->grad[e] * p->grad[e];
            if (!isfinite(norm)) fail_msg("%s: %s has a non-finite gradient", *name, p->name);
            if (i == 0 && !(norm > 0)) fail_msg("%s: no gradient reached %s", *name, p->name);
        }
        float logits[B * K];
        assert_int_equal(nnz_model_predict(m, x, B, logits), NNZ_OK);
        for (int i = 0; i < B * K; i++) assert_true(isfinite(logits[i]));
        nnz_model_free(m);
    }
}

/* The per-layer profile: while on, each training forward and backward adds every node's time;
 * the nodes' times are parts of the calls that ran them (their sum within the calls' wall time);
 * every conv and linear layer takes time both ways; eval forwards and steps after it is off add
 * nothing; turning it on zeroes the counters; a node out of range is an error. */
static void test_profile(void **state) {
    (void)state;
    enum { B = 8, HH = 28, K = 10 };
    float *x = malloc(sizeof(float) * B * HH * HH), d[B * K];
    assert_non_null(x);
    tu_fill_uniform(x, B * HH * HH, 0.0f, 1.0f, 21);
    tu_fill_uniform(d, B * K, -0.1f, 0.1f, 22);
    nnz_model *m;
    assert_int_equal(nnz_model_from_zoo("lenet5", HH, HH, 1, K, 1, &m), NNZ_OK);
    nnz_node_profile p;
    assert_int_equal(nnz_model_profile_node(m, 0, &p), NNZ_OK); /* never profiled: zeros */
    assert_true(p.steps == 0 && p.forward_sec == 0 && p.backward_sec == 0);
    assert_int_equal(nnz_model_forward(m, x, B, true), NNZ_OK); /* reserve and plan outside the profile */
    assert_int_equal(nnz_model_backward(m, x, B, d), NNZ_OK);
    assert_int_equal(nnz_model_profile(m, true), NNZ_OK);
    double wall = 0;
    for (int step = 0; step < 3; step++) {
        const double t0 = nnz_now_sec();
        assert_int_equal(nnz_model_forward(m, x, B, true), NNZ_OK);
        assert_int_equal(nnz_model_backward(m, x, B, d), NNZ_OK);
        wall += nnz_now_sec() - t0;
    }
    assert_int_equal(nnz_model_forward(m, x, B, false), NNZ_OK); /* eval: not counted */
    assert_int_equal(nnz_model_profile(m, false), NNZ_OK);
    assert_int_equal(nnz_model_forward(m, x, B, true), NNZ_OK); /* off: not counted */
    assert_int_equal(nnz_model_backward(m, x, B, d), NNZ_OK);
    const int n = nnz_model_node_count(m);
    assert_int_equal(n, m->n_nodes);
    double sum = 0;
    for (int i = 0; i < n; i++) {
        assert_int_equal(nnz_model_profile_node(m, i, &p), NNZ_OK);
        assert_int_equal(p.steps, 3);
        assert_string_equal(p.name, m->nodes[i].name);
        assert_string_equal(p.op, nnz_op_name(m->nodes[i].op));
        assert_true(p.forward_sec >= 0 && p.backward_sec >= 0);
        if ((m->nodes[i].op == NNZ_OP_CONV2D || m->nodes[i].op == NNZ_OP_LINEAR) &&
            !(p.forward_sec > 0 && p.backward_sec > 0))
            fail_msg("%s took no time: forward %g s, backward %g s", p.name, p.forward_sec, p.backward_sec);
        sum += p.forward_sec + p.backward_sec;
    }
    if (!(sum > 0 && sum <= wall)) fail_msg("the nodes' times add up to %g s, the steps took %g s", sum, wall);
    assert_int_equal(nnz_model_profile(m, true), NNZ_OK); /* a new start zeroes */
    assert_int_equal(nnz_model_profile_node(m, 0, &p), NNZ_OK);
    assert_true(p.steps == 0 && p.forward_sec == 0 && p.backward_sec == 0);
    assert_int_equal(nnz_model_profile_node(m, n, &p), NNZ_ERR_INVALID_ARG);
    assert_int_equal(nnz_model_profile_node(m, -1, &p), NNZ_ERR_INVALID_ARG);
    nnz_model_free(m);
    free(x);
}

/* An eval forward on a model with no buffers reserves for inference only: no activation
 * gradients or pool indices, under half of training's bytes, the same logits; a backward is
 * refused until a training forward reserves training's buffers, and then gives the gradients
 * of a model that was reserved for training from the start. */
static void test_inference_reservation(void **state) {
    (void)state;
    enum { B = 3, HH = 16, WW = 16, K = 10 };
    float x[B * HH * WW], d[B * K];
    tu_fill_uniform(x, B * HH * WW, 0.0f, 1.0f, 21);
    tu_fill_uniform(d, B * K, -0.1f, 0.1f, 22);
    for (const char *const *name = nnz_zoo_names(); *name; name++) {
        nnz_model *a, *b;
        assert_int_equal(nnz_model_from_zoo(*name, HH, WW, 1, K, 5, &a), NNZ_OK);
        assert_int_equal(nnz_model_from_zoo(*name, HH, WW, 1, K, 5, &b), NNZ_OK);
        /* per image (the slope from 32 to 64 images: the per-thread eval scratch and the weight
         * copies are the same in both modes) */
        size_t infer[2], train[2], infer_bytes;
        a->act_grads_apart = true; /* every gradient its own buffer, as inference has none (act_store.c) */
        for (int k = 0; k < 2; k++) {
            assert_int_equal(nnz_model_activation_bytes(a, 32 << k, false, &infer[k]), NNZ_OK);
            assert_int_equal(nnz_model_activation_bytes(a, 32 << k, true, &train[k]), NNZ_OK);
        }
        a->act_grads_apart = false;
        /* (with a pthreads OpenBLAS eval runs the whole batch at once: no frames, and the batch's
         * forward scratch instead) */
        if (nnz_sgemm_nestable() && !(2 * (infer[1] - infer[0]) <= train[1] - train[0]))
            fail_msg("%s: 32 more images take %zu bytes for inference, %zu for training", *name,
                     infer[1] - infer[0], train[1] - train[0]);
        assert_int_equal(nnz_model_activation_bytes(a, B, false, &infer_bytes), NNZ_OK);

        assert_int_equal(nnz_model_forward(a, x, B, false), NNZ_OK);
        assert_false(a->reserved_training);
        assert_true(a->act_arena.used <= infer_bytes);
        for (int i = 0; i < a->n_nodes; i++) {
            assert_null(a->dact[i]);
            if (a->nodes[i].op == NNZ_OP_MAXPOOL) assert_null(a->aux[i]);
        }
        assert_int_equal(nnz_model_reserve(b, B), NNZ_OK);
        assert_true(b->reserved_training);
        assert_int_equal(nnz_model_forward(b, x, B, false), NNZ_OK);
        assert_memory_equal(nnz_model_output(a), nnz_model_output(b), sizeof(float) * B * K);

        nnz_model_zero_grad(a);
        assert_int_equal(nnz_model_backward(a, x, B, d), NNZ_ERR_INVALID_ARG);
        assert_non_null(strstr(nnz_last_error(), "inference"));
        assert_int_equal(nnz_model_forward(a, x, B, true), NNZ_OK);
        assert_true(a->reserved_training);
        assert_int_equal(nnz_model_forward(b, x, B, true), NNZ_OK);
        nnz_model_zero_grad(a);
        nnz_model_zero_grad(b);
        assert_int_equal(nnz_model_backward(a, x, B, d), NNZ_OK);
        assert_int_equal(nnz_model_backward(b, x, B, d), NNZ_OK);
        for (int i = 0; i < a->n_params; i++)
            if (a->params[i].grad)
                assert_memory_equal(a->params[i].grad, b->params[i].grad,
                                    sizeof(float) * (size_t)nnz_tensor_numel(&a->params[i].value));
        /* training's buffers stay: an eval forward now keeps them */
        float *dact0 = a->dact[0];
        assert_int_equal(nnz_model_forward(a, x, B, false), NNZ_OK);
        assert_true(a->reserved_training);
        assert_ptr_equal(dact0, a->dact[0]);
        nnz_model_free(a);
        nnz_model_free(b);
    }
}

/* Eval runs depth-first over per-thread chunks of images: each image's logits must not
 * depend on the chunking (image at a time vs a batch, 1 vs 2 threads), and repeated
 * multi-threaded runs must agree bit for bit (chunks run concurrently, each with its own
 * scratch; a shared buffer or a non-reentrant GEMM would show up here). Batch norm gets
 * non-trivial running statistics so the folded epilogue is exercised. */
/* A zoo model whose batch norms have non-trivial running statistics. */
static nnz_model *zoo_with_running_stats(const char *name) {
    nnz_model *m = NULL;
    assert_int_equal(nnz_zoo_build(name, 28, 28, 1, 10, &m), NNZ_OK);
    assert_int_equal(nnz_model_finalize(m, 7), NNZ_OK);
    for (int p = 0; p < m->n_params; p++) {
        nnz_param *pr = &m->params[p];
        float *v = nnz_tensor_f32(&pr->value);
        int64_t n = nnz_tensor_numel(&pr->value);
        if (strstr(pr->name, "running_mean")) tu_fill_uniform(v, n, -0.2f, 0.2f, 100 + p);
        if (strstr(pr->name, "running_var")) tu_fill_uniform(v, n, 0.5f, 1.5f, 200 + p);
    }
    return m;
}

static void test_eval_depth_first_matches_image_at_a_time(void **state) {
    (void)state;
    const char *names[] = {"mbv2-tiny", "lenet5", "mlp", "vgg8"};
    const int n = 37; /* odd: a ragged last chunk */
    int threads_before = nnz_get_threads();
    for (int k = 0; k < 4; k++) {
        nnz_model *m = zoo_with_running_stats(names[k]);
        float *x = malloc(sizeof(float) * n * 784), *one = malloc(sizeof(float) * n * 10);
        float *b1 = malloc(sizeof(float) * n * 10), *b2 = malloc(sizeof(float) * n * 10), *b3 = malloc(sizeof(float) * n * 10);
        tu_fill_uniform(x, (int64_t)n * 784, -1.0f, 2.0f, 5);
        for (int i = 0; i < n; i++) {
            assert_int_equal(nnz_model_forward(m, x + (int64_t)i * 784, 1, false), NNZ_OK);
            memcpy(one + i * 10, nnz_model_output(m), sizeof(float) * 10);
        }
        nnz_set_threads(1);
        assert_int_equal(nnz_model_forward(m, x, n, false), NNZ_OK);
        memcpy(b1, nnz_model_output(m), sizeof(float) * n * 10);
        nnz_set_threads(2);
        nnz_model_free(m);
        m = zoo_with_running_stats(names[k]); /* a fresh model: 2-thread buffers from the start */
        assert_int_equal(nnz_model_forward(m, x, n, false), NNZ_OK);
        memcpy(b2, nnz_model_output(m), sizeof(float) * n * 10);
        for (int rep = 0; rep < 5; rep++) {
            assert_int_equal(nnz_model_forward(m, x, n, false), NNZ_OK);
            memcpy(b3, nnz_model_output(m), sizeof(float) * n * 10);
            assert_memory_equal(b2, b3, sizeof(float) * n * 10);
        }
        /* GEMM blocking may differ with the chunk's row count: float rounding only */
        double e1 = tu_max_rel_err(b1, one, (int64_t)n * 10, 1e-2), e2 = tu_max_rel_err(b2, one, (int64_t)n * 10, 1e-2);
        if (e1 > 1e-4 || e2 > 1e-4) fail_msg("%s: batched eval differs from image-at-a-time: %g (1 thread), %g (2 threads)", names[k], e1, e2);
        free(x), free(one), free(b1), free(b2), free(b3);
        nnz_model_free(m);
    }
    nnz_set_threads(threads_before);
}

/* A conv's weight in its kernel's layout (Winograd's transform for lenet5's conv2 and vgg8's 3x3
 * convs) is kept between forwards only while the weight is unchanged: after a weight changes,
 * eval must give what a fresh model with that weight gives, bit for bit. */
static void test_kernel_weight_follows_the_weight(void **state) {
    (void)state;
    const char *names[] = {"lenet5", "vgg8"};
    const int n = 5;
    for (int k = 0; k < 2; k++) {
        nnz_model *m = zoo_with_running_stats(names[k]), *fresh = zoo_with_running_stats(names[k]);
        float *x = malloc(sizeof(float) * n * 784), *before = malloc(sizeof(float) * n * 10);
        tu_fill_uniform(x, (int64_t)n * 784, -1.0f, 2.0f, 6);
        assert_int_equal(nnz_model_forward(m, x, n, false), NNZ_OK);
        memcpy(before, nnz_model_output(m), sizeof(float) * n * 10);
        int changed = 0;
        for (int p = 0; p < m->n_params; p++) { /* every conv weight, in the model and the fresh one */
            nnz_param *pr = &m->params[p];
            if (!strstr(pr->name, "conv") || !strstr(pr->name, "weight")) continue;
            float *v = nnz_tensor_f32(&pr->value), *f = nnz_tensor_f32(&fresh->params[p].value);
            for (int64_t i = 0; i < nnz_tensor_numel(&pr->value); i += 7) v[i] = f[i] = v[i] * -0.5f + 0.01f;
            changed++;
        }
        assert_true(changed >= 2);
        assert_int_equal(nnz_model_forward(m, x, n, false), NNZ_OK);
        assert_int_equal(nnz_model_forward(fresh, x, n, false), NNZ_OK);
        assert_memory_equal(nnz_model_output(m), nnz_model_output(fresh), sizeof(float) * n * 10);
        if (!memcmp(nnz_model_output(m), before, sizeof(float) * n * 10))
            fail_msg("%s: changing the conv weights changed no logit", names[k]);
        free(x), free(before);
        nnz_model_free(m), nnz_model_free(fresh);
    }
}

/* Branching graphs through aliases and residuals (identity with a sibling consumer,
 * an add whose skip is the model input, x + x): the fused plan (in-place relus, aliases,
 * overwritten sole-consumer gradients) must give the same gradients as keep_activations. */
static nnz_model *branchy_model(bool keep_activations) {
    nnz_model *m = NULL;
    assert_int_equal(nnz_model_create(1, 1, 6, &m), NNZ_OK);
    int a = nnz_add_linear(m, "a", 6, true);               /* 0: from the input */
    int id = nnz_add_activation(m, "id", NNZ_OP_IDENTITY);  /* 1: alias of a */
    nnz_add_linear(m, "b", 6, true);                         /* 2: a -> id -> b */
    nnz_node c = {.op = NNZ_OP_LINEAR, .input = a, .skip = -1, .block = -1, .out_ch = 6, .has_bias = true};
    strcpy(c.name, "c");
    assert_true(nnz_add_node(m, &c) >= 0);                   /* 3: a -> c, a second consumer of a */
    nnz_add_residual(m, "add1", 2);                          /* 4: c + b */
    nnz_add_residual(m, "add2", -1);                         /* 5: + the model input */
    nnz_add_activation(m, "r", NNZ_OP_RELU);                 /* 6 */
    int r = 6;
    nnz_add_residual(m, "add3", r);                          /* 7: r + r */
    nnz_add_linear(m, "out", 3, true);
    (void)id;
    m->keep_activations = keep_activations;
    m->input_grad = true;
    assert_int_equal(nnz_model_finalize(m, 9), NNZ_OK);
    return m;
}

static void test_branching_graph_fused_matches_unfused(void **state) {
    (void)state;
    nnz_model *a = branchy_model(false), *b = branchy_model(true);
    enum { NB = 5 };
    float x[NB * 6], r[NB * 3];
    tu_fill_uniform(x, NB * 6, -1.0f, 1.0f, 11);
    tu_fill_uniform(r, NB * 3, -1.0f, 1.0f, 12);
    nnz_model *ms[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        assert_int_equal(nnz_model_forward(ms[k], x, NB, true), NNZ_OK);
        nnz_model_zero_grad(ms[k]);
        assert_int_equal(nnz_model_backward(ms[k], x, NB, r), NNZ_OK);
    }
    assert_memory_equal(nnz_model_output(a), nnz_model_output(b), NB * 3 * sizeof(float));
    for (int i = 0; i < a->n_params; i++) {
        if (!a->params[i].grad) continue;
        double e = tu_max_rel_err(a->params[i].grad, b->params[i].grad, nnz_tensor_numel(&a->params[i].value), 1e-3);
        if (e > 1e-5) fail_msg("gradient of %s differs between fused and unfused plans: %g", a->params[i].name, e);
    }
    assert_true(tu_max_rel_err(a->dinput, b->dinput, NB * 6, 1e-3) <= 1e-5);
    nnz_model_free(a);
    nnz_model_free(b);
}

/* Eval in per-thread frames (buffers reused once their last reader ran) gives the logits of eval
 * over the batch's buffers, bit for bit, on the zoo and on the branching graph (aliases, a second
 * consumer, skips from the model input and x + x); the frames really share space. */
static void check_frames_match(nnz_model *a, nnz_model *b, const char *name, int n, bool expect_sharing) {
    b->eval_batch_buffers = true;
    const int64_t in = (int64_t)a->in_h * a->in_w * a->in_c, out = a->num_classes;
    float *x = malloc(sizeof(float) * (size_t)(n * in)), *ya = malloc(sizeof(float) * (size_t)(n * out));
    tu_fill_uniform(x, n * in, -1.0f, 2.0f, 6);
    for (int rep = 0; rep < 2; rep++) { /* the second pass reuses frames the first one filled */
        assert_int_equal(nnz_model_forward(a, x, n, false), NNZ_OK);
        memcpy(ya, nnz_model_output(a), sizeof(float) * (size_t)(n * out));
        assert_int_equal(nnz_model_forward(b, x, n, false), NNZ_OK);
        if (memcmp(ya, nnz_model_output(b), sizeof(float) * (size_t)(n * out)) != 0)
            fail_msg("%s: eval in frames differs from eval over the batch's buffers", name);
    }
    assert_non_null(a->eval_frames);
    assert_null(b->eval_frames);
    size_t owned = 0; /* floats per image if no two buffers shared frame space */
    for (int i = 0; i < a->n_nodes - 1; i++)
        if (a->exec[i].act_owner == i && a->exec[i].frame_offset != SIZE_MAX)
            owned += ((size_t)(a->nodes[i].h * a->nodes[i].w * a->nodes[i].c) + 15) & ~(size_t)15;
    if (expect_sharing && !(a->eval_frame_per_image < owned))
        fail_msg("%s: the frame (%zu floats per image) shares no space (%zu)", name, a->eval_frame_per_image, owned);
    free(x), free(ya);
}

static void test_eval_frames_match_batch_buffers(void **state) {
    (void)state;
    if (!nnz_sgemm_nestable()) skip(); /* a pthreads OpenBLAS: eval runs the whole batch, no frames */
    const char *names[] = {"mbv2-tiny", "lenet5", "mlp", "vgg8"};
    int threads_before = nnz_get_threads();
    nnz_set_threads(2);
    for (int k = 0; k < 4; k++) {
        nnz_model *a = zoo_with_running_stats(names[k]), *b = zoo_with_running_stats(names[k]);
        check_frames_match(a, b, names[k], 37, strcmp(names[k], "mlp") != 0); /* mlp: sizes too unequal */
        nnz_model_free(a);
        nnz_model_free(b);
    }
    nnz_model *a = branchy_model(false), *b = branchy_model(false);
    check_frames_match(a, b, "branching graph", 29, true);
    nnz_model_free(a);
    nnz_model_free(b);
    nnz_set_threads(threads_before);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_model_gradient_check),
        cmocka_unit_test(test_backward_accumulates),
        cmocka_unit_test(test_inplace_and_aliases_match_copies),
        cmocka_unit_test(test_batchnorm_train_vs_eval),
        cmocka_unit_test(test_dropout_train_and_eval),
        cmocka_unit_test(test_determinism_predict_and_reserve),
        cmocka_unit_test(test_zoo_models_run),
        cmocka_unit_test(test_profile),
        cmocka_unit_test(test_inference_reservation),
        cmocka_unit_test(test_branching_graph_fused_matches_unfused),
        cmocka_unit_test(test_eval_depth_first_matches_image_at_a_time),
        cmocka_unit_test(test_kernel_weight_follows_the_weight),
        cmocka_unit_test(test_eval_frames_match_batch_buffers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
