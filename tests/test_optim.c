/* nn: SGD and AdamW against values of the torch.optim formulas over 3 steps,
 * and the learning-rate schedules at known points.
 *
 * The expected numbers were computed by hand (Python, float64) from the update
 * rules in torch/optim/sgd.py and adamw.py:
 *   SGD:   g += wd*w; buf = g (first step) or momentum*buf + g; g = g + momentum*buf
 *          (Nesterov) or buf; w -= lr*g
 *   AdamW: w *= 1-lr*wd; m = b1*m+(1-b1)*g; v = b2*v+(1-b2)*g^2;
 *          w -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
 * starting from fc.weight = {0.5,-0.3,0.8,-1.2}, fc.bias = {0.1,-0.2}, with the
 * gradients of step t (0,1,2): weight {0.2-0.1t, -0.1+0.05t, 0.05, 0.3+0.2t},
 * bias {0.4, -0.5+0.3t}. nnz runs in float32, so results agree to float
 * rounding over 3 steps: the values and gradients are O(1) and some results
 * come from cancellation (-0.2 -> 0.00715), so the check is relative error
 * 1e-6 with an absolute floor of 1 (about 8 float ulps at 1). */
#include "test_util.h"

#include <math.h>
#include <string.h>

#include "nn/nn.h"

static nnz_model *tiny_model(void) {
    nnz_model *m;
    assert_int_equal(nnz_model_create(1, 1, 2, &m), NNZ_OK);
    nnz_add_linear(m, "fc", 2, true);
    nnz_add_batchnorm(m, "bn");
    assert_int_equal(nnz_model_finalize(m, 1), NNZ_OK);
    return m;
}

static float *value(nnz_model *m, const char *name) {
    int i = nnz_model_find_param(m, name);
    assert_true(i >= 0);
    return nnz_tensor_f32(&m->params[i].value);
}

static float *grad(nnz_model *m, const char *name) {
    int i = nnz_model_find_param(m, name);
    assert_true(i >= 0);
    return m->params[i].grad;
}

static void set_grads(nnz_model *m, int t) {
    float gw[4] = {0.2f - 0.1f * t, -0.1f + 0.05f * t, 0.05f, 0.3f + 0.2f * t};
    float gb[2] = {0.4f, -0.5f + 0.3f * t};
    nnz_model_zero_grad(m);
    memcpy(grad(m, "fc.weight"), gw, sizeof gw);
    memcpy(grad(m, "fc.bias"), gb, sizeof gb);
    /* BN parameters get zero gradients: they move only by weight decay */
}

typedef struct {
    nnz_optimizer_kind kind;
    float lr, momentum, wd;
    bool nesterov, decay_all;
    float w[4], b[2];
} optim_case;

static const optim_case cases[] = {
    {NNZ_OPT_SGD, 0.1f, 0, 0, false, false, {0.47f, -0.285f, 0.785f, -1.35f}, {-0.02f, -0.14f}},
    {NNZ_OPT_SGD, 0.1f, 0.9f, 0, false, false, {0.4268f, -0.2634f, 0.77195f, -1.4463f}, {-0.1244f, -0.0365f}},
    {NNZ_OPT_SGD, 0.05f, 0.8f, 0.1f, false, false, {0.453762187f, -0.275576838f, 0.766089338f, -1.28490322f},
     {-0.0048f, -0.126f}},
    {NNZ_OPT_SGD, 0.1f, 0.9f, 0.01f, true, false, {0.400344373f, -0.249770432f, 0.753396427f, -1.56153865f},
     {-0.22196f, 0.00715f}},
    {NNZ_OPT_SGD, 0.1f, 0.9f, 0.01f, true, true, {0.400344373f, -0.249770432f, 0.753396427f, -1.56153865f},
     {-0.222207464f, 0.00817026272f}},
    {NNZ_OPT_ADAMW, 0.01f, 0, 0.1f, false, false, {0.472003241f, -0.272602643f, 0.767632395f, -1.22597179f},
     {0.0700000008f, -0.175352556f}},
    {NNZ_OPT_ADAMW, 0.01f, 0, 0.1f, false, true, {0.472003241f, -0.272602643f, 0.767632395f, -1.22597179f},
     {0.0697302906f, -0.174782131f}},
};

static void test_optimizers_match_torch_formulas(void **state) {
    (void)state;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const optim_case *k = &cases[c];
        nnz_model *m = tiny_model();
        const float w0[4] = {0.5f, -0.3f, 0.8f, -1.2f}, b0[2] = {0.1f, -0.2f};
        memcpy(value(m, "fc.weight"), w0, sizeof w0);
        memcpy(value(m, "fc.bias"), b0, sizeof b0);
        value(m, "bn.running_mean")[0] = 0.25f;
        nnz_optimizer o;
        assert_int_equal(nnz_optimizer_init(&o, m, k->kind, k->momentum, k->nesterov, k->wd, k->decay_all), NNZ_OK);
        for (int t = 0; t < 3; t++) {
            set_grads(m, t);
            float g_before[4];
            memcpy(g_before, grad(m, "fc.weight"), sizeof g_before);
            nnz_optimizer_step(&o, m, k->lr);
            assert_memory_equal(g_before, grad(m, "fc.weight"), sizeof g_before); /* gradients are read only */
        }
        assert_int_equal(o.t, 3);
        double ew = tu_max_rel_err(value(m, "fc.weight"), k->w, 4, 1.0);
        double eb = tu_max_rel_err(value(m, "fc.bias"), k->b, 2, 1.0);
        if (ew > 1e-6 || eb > 1e-6) fail_msg("case %zu: relative error weight %g bias %g", c, ew, eb);
        /* BN gamma (zero gradient) changes only when decayed */
        float gamma = value(m, "bn.weight")[0];
        if (!k->decay_all || k->wd == 0) assert_float_equal(gamma, 1.0f, 0);
        else if (k->kind == NNZ_OPT_ADAMW) assert_float_equal(gamma, powf(1 - k->lr * k->wd, 3), 1e-7);
        else assert_true(gamma < 1.0f);
        /* buffers are never touched */
        assert_float_equal(value(m, "bn.running_mean")[0], 0.25f, 0);
        assert_float_equal(value(m, "bn.running_var")[1], 1.0f, 0);
        nnz_optimizer_free(&o);
        nnz_model_free(m);
    }
}

static void test_optimizer_state_and_errors(void **state) {
    (void)state;
    nnz_model *m = tiny_model();
    nnz_optimizer o;
    int mean = nnz_model_find_param(m, "bn.running_mean");
    assert_int_equal(nnz_optimizer_init(&o, m, NNZ_OPT_SGD, 0, false, 0, false), NNZ_OK);
    for (int i = 0; i < o.n; i++) assert_null(o.state1[i]); /* no momentum, no buffers */
    nnz_optimizer_free(&o);
    assert_int_equal(nnz_optimizer_init(&o, m, NNZ_OPT_ADAMW, 0, false, 0.05f, false), NNZ_OK);
    assert_int_equal(o.n, m->n_params);
    assert_null(o.state1[mean]);
    assert_non_null(o.state1[nnz_model_find_param(m, "fc.weight")]);
    assert_non_null(o.state2[nnz_model_find_param(m, "bn.bias")]);
    assert_float_equal(o.beta1, 0.9f, 0);
    assert_float_equal(o.beta2, 0.999f, 0);
    assert_float_equal(o.eps, 1e-8f, 0);
    nnz_optimizer_free(&o);
    nnz_optimizer_free(&o); /* idempotent */
    assert_int_equal(nnz_optimizer_init(&o, m, NNZ_OPT_SGD, 0, true, 0, false), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "Nesterov"));
    assert_int_equal(nnz_optimizer_init(&o, m, NNZ_OPT_SGD, 1.5f, false, 0, false), NNZ_ERR_INVALID_ARG);
    assert_int_equal(nnz_optimizer_init(&o, m, NNZ_OPT_SGD, 0.9f, false, -1, false), NNZ_ERR_INVALID_ARG);
    assert_int_equal(nnz_optimizer_init(&o, m, (nnz_optimizer_kind)7, 0.9f, false, 0, false), NNZ_ERR_INVALID_ARG);
    nnz_model_free(m);
}

static float lr_at(nnz_schedule_kind kind, int64_t warm, int64_t total, float min_lr, int64_t step) {
    nnz_schedule s = {kind, 0.1f, total, warm, 30, 0.1f, min_lr};
    return nnz_schedule_lr(&s, step);
}

static void test_schedules_at_known_points(void **state) {
    (void)state;
    /* cosine, 10 warm-up steps of 110: (step+1)/10 * base, then a half cosine over 100 */
    const int64_t steps[] = {0, 4, 9, 10, 35, 60, 109, 110, 500};
    const double cos0[] = {0.01, 0.05, 0.1, 0.1, 0.0853553391, 0.05, 2.46719817e-05, 0, 0};
    const double cos1[] = {0.01, 0.05, 0.1, 0.1, 0.0855017857, 0.0505, 0.00102442526, 0.001, 0.001};
    for (int i = 0; i < 9; i++) {
        assert_float_equal(lr_at(NNZ_SCHED_COSINE, 10, 110, 0, steps[i]), cos0[i], 1e-8);
        assert_float_equal(lr_at(NNZ_SCHED_COSINE, 10, 110, 0.001f, steps[i]), cos1[i], 1e-8);
    }
    assert_float_equal(lr_at(NNZ_SCHED_COSINE, 0, 100, 0, 0), 0.1, 1e-8); /* no warm-up: starts at base */
    assert_float_equal(lr_at(NNZ_SCHED_COSINE, 0, 100, 0, 50), 0.05, 1e-8);
    /* step: x0.1 every 30 steps */
    assert_float_equal(lr_at(NNZ_SCHED_STEP, 0, 100, 0, 29), 0.1, 1e-8);
    assert_float_equal(lr_at(NNZ_SCHED_STEP, 0, 100, 0, 30), 0.01, 1e-9);
    assert_float_equal(lr_at(NNZ_SCHED_STEP, 0, 100, 0, 65), 0.001, 1e-10);
    /* one-cycle over 100 steps: phase 1 ends at step 0.3*100-1 = 29, phase 2 at 99 */
    const int64_t oc_steps[] = {0, 10, 29, 30, 64, 99};
    const double oc[] = {0.004, 0.0295163948, 0.1, 0.0999496535, 0.0500002, 4e-07};
    for (int i = 0; i < 6; i++) assert_float_equal(lr_at(NNZ_SCHED_ONECYCLE, 0, 100, 0, oc_steps[i]), oc[i], 1e-8);
    for (int64_t s = 0; s < 200; s += 37) assert_float_equal(lr_at(NNZ_SCHED_CONSTANT, 5, 100, 0, s), 0.1, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_optimizers_match_torch_formulas),
        cmocka_unit_test(test_optimizer_state_and_errors),
        cmocka_unit_test(test_schedules_at_known_points),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
