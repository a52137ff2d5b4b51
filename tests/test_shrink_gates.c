/* shrink: the search's gates. A relu/relu6 turned off through m->act_identity computes
 * exactly what an identity node computes (forward, backward, eval; fused and unfused
 * plans); the score's straight-through gradient equals the derivative of the loss along
 * out = x + g*(act(x) - x) at g = 1 and g = 0 (by finite differences); top-k selection,
 * its ties and its Gumbel noise. */
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "shrink/shrink.h"

enum { N = 4, HW = 6, C = 3, CLASSES = 5 };

/* input 6x6x3 -> c0 conv3x3 (4, bias) -> a0 relu6 -> [pw1 1x1 (8) -> bn1 -> act1 -> dw 3x3 -> bn2 -> act2
 * -> pw2 1x1 (4) -> bn3 -> add(a0)] -> flatten -> fc. identity_at: nodes built as identity instead. */
static nnz_model *gated_model(const bool *identity_at, bool keep_activations) {
    nnz_model *m;
    assert_int_equal(nnz_model_create(HW, HW, C, &m), NNZ_OK);
    int k = 0;
#define ACT(name) nnz_add_activation(m, name, identity_at && identity_at[k++] ? NNZ_OP_IDENTITY : NNZ_OP_RELU6)
    nnz_add_conv2d(m, "c0", 4, 3, 1, 1, 1, true);
    int a0 = ACT("a0");
    nnz_block_begin(m);
    nnz_add_conv2d(m, "b.pw1", 8, 1, 1, 0, 1, false);
    nnz_add_batchnorm(m, "b.bn1");
    ACT("b.act1");
    nnz_add_conv2d(m, "b.dw", 8, 3, 1, 1, 8, false);
    nnz_add_batchnorm(m, "b.bn2");
    ACT("b.act2");
    nnz_add_conv2d(m, "b.pw2", 4, 1, 1, 0, 1, false);
    nnz_add_batchnorm(m, "b.bn3");
    nnz_add_residual(m, "b.add", a0);
    nnz_block_end(m);
#undef ACT
    nnz_add_flatten(m, "flat");
    nnz_add_linear(m, "fc", CLASSES, true);
    if (nnz_model_finalize(m, 11) != NNZ_OK) fail_msg("%s", nnz_last_error());
    m->keep_activations = keep_activations;
    for (int i = 0; i < m->n_params; i++) { /* BN affine away from the identity; c0 shifted so relu6 clips */
        nnz_param *p = &m->params[i];
        if (m->nodes[p->node].op == NNZ_OP_BATCHNORM && p->trainable)
            tu_fill_uniform(nnz_tensor_f32(&p->value), nnz_tensor_numel(&p->value), 0.5f, 2.5f, 50 + (uint64_t)i);
    }
    return m;
}

static const uint8_t LABELS[N] = {0, 3, 1, 4};

/* one train step: the loss; the logits into logits; every parameter gradient */
static float train_step(nnz_model *m, const float *x, float *logits) {
    assert_int_equal(nnz_model_forward(m, x, N, true), NNZ_OK);
    memcpy(logits, nnz_model_output(m), sizeof(float) * N * CLASSES);
    float dl[N * CLASSES];
    float loss = nnz_softmax_xent(N, CLASSES, logits, LABELS, 0.0f, dl, NULL);
    nnz_model_zero_grad(m);
    assert_int_equal(nnz_model_backward(m, x, N, dl), NNZ_OK);
    return loss;
}

static void compare_to_identity_graph(bool keep_activations) {
    /* turn off a0 (a conv's fused relu6) and b.act2 (a batch norm's fused relu6) */
    const bool off[3] = {true, false, true};
    nnz_model *gated = gated_model(NULL, keep_activations), *plain = gated_model(off, keep_activations);
    uint8_t *identity = calloc((size_t)gated->n_nodes, 1);
    identity[1] = identity[7] = 1; /* a0, b.act2 */
    assert_string_equal(gated->nodes[7].name, "b.act2");
    float x[N * HW * HW * C];
    tu_fill_uniform(x, N * HW * HW * C, -3.0f, 3.0f, 4);
    float lg[N * CLASSES], lp[N * CLASSES];
    /* with all gates on, the models differ (so the comparison below means something); eval mode
     * leaves the running statistics alone */
    assert_int_equal(nnz_model_predict(gated, x, N, lg), NNZ_OK);
    assert_int_equal(nnz_model_predict(plain, x, N, lp), NNZ_OK);
    assert_true(tu_max_rel_err(lg, lp, N * CLASSES, 1e-3) > 1e-3);
    gated->act_identity = identity; /* switched on a reserved model: no new plan */
    for (int step = 0; step < 2; step++) {
        float loss_g = train_step(gated, x, lg), loss_p = train_step(plain, x, lp);
        assert_true(fabsf(loss_g - loss_p) <= 1e-6f * fabsf(loss_p));
        assert_true(tu_max_rel_err(lg, lp, N * CLASSES, 1e-6) <= 1e-6);
        for (int i = 0; i < plain->n_params; i++) {
            const nnz_param *p = &plain->params[i], *q = &gated->params[i];
            assert_string_equal(p->name, q->name);
            int64_t n = nnz_tensor_numel(&p->value);
            if (p->grad && tu_max_rel_err(q->grad, p->grad, n, 1e-6) > 1e-6)
                fail_msg("%s gradient differs (keep_activations %d)", p->name, keep_activations);
        }
        float eg[N * CLASSES], ep[N * CLASSES];
        assert_int_equal(nnz_model_predict(gated, x, N, eg), NNZ_OK);
        assert_int_equal(nnz_model_predict(plain, x, N, ep), NNZ_OK);
        assert_true(tu_max_rel_err(eg, ep, N * CLASSES, 1e-6) <= 1e-6);
    }
    free(identity);
    gated->act_identity = NULL;
    nnz_model_free(gated);
    nnz_model_free(plain);
}

static void test_identity_fused(void **state) {
    (void)state;
    compare_to_identity_graph(false);
}

static void test_identity_unfused(void **state) {
    (void)state;
    compare_to_identity_graph(true);
}

/* input -> conv 3x3 -> bn -> relu6 (the gate) -> conv 3x3 -> flatten -> fc: after the gate everything is
 * linear, so the logits along out = x + g*(relu6(x) - x) are z(g) = z0 + g*(z1 - z0) exactly. */
static nnz_model *fd_model(void) {
    nnz_model *m;
    assert_int_equal(nnz_model_create(HW, HW, C, &m), NNZ_OK);
    nnz_add_conv2d(m, "c1", 6, 3, 1, 1, 1, true);
    nnz_add_batchnorm(m, "bn");
    nnz_add_activation(m, "act", NNZ_OP_RELU6);
    nnz_add_conv2d(m, "c2", 4, 3, 1, 1, 1, true);
    nnz_add_flatten(m, "flat");
    nnz_add_linear(m, "fc", CLASSES, true);
    if (nnz_model_finalize(m, 3) != NNZ_OK) fail_msg("%s", nnz_last_error());
    nnz_param *gamma = &m->params[nnz_model_find_param(m, "bn.weight")];
    for (int c = 0; c < 6; c++) nnz_tensor_f32(&gamma->value)[c] = 4.0f; /* both relu6 kinks are hit */
    return m;
}

static double xent_at(const float *z0, const float *z1, double g) {
    double loss = 0;
    for (int i = 0; i < N; i++) {
        double z[CLASSES], mx = -1e300, sum = 0;
        for (int c = 0; c < CLASSES; c++) {
            z[c] = z0[i * CLASSES + c] + g * ((double)z1[i * CLASSES + c] - z0[i * CLASSES + c]);
            if (z[c] > mx) mx = z[c];
        }
        for (int c = 0; c < CLASSES; c++) sum += exp(z[c] - mx);
        loss += log(sum) + mx - z[LABELS[i]];
    }
    return loss / N;
}

static void test_gradient_finite_difference(void **state) {
    (void)state;
    nnz_model *m = fd_model();
    const int acts[2] = {2, -1};
    const char *names[1] = {"g"};
    nnz_gates g;
    assert_int_equal(nnz_gates_init(&g, m, 1, acts, names, 1), NNZ_OK);
    assert_true(m->keep_activations);
    int p = nnz_model_find_param(m, "g.gate");
    assert_true(p >= 0 && m->params[p].trainable && m->params[p].no_decay);
    float x[N * HW * HW * C], z[2][N * CLASSES];
    tu_fill_uniform(x, N * HW * HW * C, -2.0f, 2.0f, 8);
    float grad[2];
    for (int on = 0; on < 2; on++) { /* the logits and the library's gradient with the gate off, then on */
        g.act_identity[2] = (uint8_t)!on;
        train_step(m, x, z[on]);
        nnz_gates_backward(&g, m, N);
        grad[on] = m->params[p].grad[0];
    }
    for (int on = 0; on < 2; on++) {
        const double h = 1e-3;
        double fd = (xent_at(z[0], z[1], on + h) - xent_at(z[0], z[1], on - h)) / (2 * h);
        if (!(fabs(grad[on] - fd) <= 2e-3 * fabs(fd) + 1e-7))
            fail_msg("gate %s: gradient %g, finite difference %g", on ? "on" : "off", grad[on], fd);
        assert_true(fabs(fd) > 1e-4); /* the check measured something */
    }
    nnz_gates_free(&g, m);
    assert_null(m->act_identity);
    nnz_model_free(m);
}

static void test_select(void **state) {
    (void)state;
    nnz_model *m;
    assert_int_equal(nnz_model_create(1, 1, 2, &m), NNZ_OK);
    const char *names[4] = {"a", "b", "c", "d"};
    for (int i = 0; i < 4; i++) nnz_add_activation(m, names[i], NNZ_OP_RELU6);
    assert_int_equal(nnz_model_finalize(m, 1), NNZ_OK);
    const int acts[8] = {0, -1, 1, -1, 2, -1, 3, -1};
    nnz_gates g;
    assert_int_equal(nnz_gates_init(&g, m, 4, acts, names, 2), NNZ_OK);
    const float scores[4] = {0.5f, -1.0f, 2.0f, 0.5f};
    for (int i = 0; i < 4; i++) nnz_tensor_f32(&m->params[g.param[i]].value)[0] = scores[i];
    nnz_gates_select(&g, m, NULL, 0.0f);
    assert_true(g.keep[0] && !g.keep[1] && g.keep[2] && !g.keep[3]); /* the tie 0.5/0.5 goes to the lower index */
    assert_int_equal(g.act_identity[1], 1);
    assert_int_equal(g.act_identity[3], 1);
    assert_int_equal(g.act_identity[0], 0);
    /* Gumbel noise: always k kept, every gate kept sometimes, and reproducible */
    nnz_rng r1 = nnz_rng_make(5, 1), r2 = nnz_rng_make(5, 1);
    int kept[4] = {0};
    for (int t = 0; t < 400; t++) {
        nnz_gates_select(&g, m, &r1, 1.0f);
        bool first[4];
        memcpy(first, g.keep, sizeof first);
        nnz_gates_select(&g, m, &r2, 1.0f);
        int count = 0;
        for (int i = 0; i < 4; i++) {
            assert_int_equal(first[i], g.keep[i]);
            count += g.keep[i];
            kept[i] += g.keep[i];
        }
        assert_int_equal(count, 2);
    }
    for (int i = 0; i < 4; i++) assert_true(kept[i] > 0 && kept[i] < 400);
    assert_true(kept[2] > kept[1]); /* the score still matters */
    nnz_gates_free(&g, m);
    nnz_model_free(m);
}

static void test_init_errors(void **state) {
    (void)state;
    nnz_model *m = fd_model();
    nnz_gates g;
    const char *names[1] = {"g"};
    const int not_act[2] = {0, -1}; /* a conv */
    assert_int_equal(nnz_gates_init(&g, m, 1, not_act, names, 1), NNZ_ERR_INVALID_ARG);
    const int acts[2] = {2, -1};
    assert_int_equal(nnz_gates_init(&g, m, 1, acts, names, 2), NNZ_ERR_INVALID_ARG); /* k > n */
    assert_int_equal(nnz_model_reserve(m, 2), NNZ_OK);                                /* in-place plan */
    assert_int_equal(nnz_gates_init(&g, m, 1, acts, names, 1), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "in-place"));
    nnz_model_free(m);
    /* a gate whose score parameter exists already: a name clash, not a want of memory */
    m = fd_model();
    assert_int_equal(nnz_gates_init(&g, m, 1, acts, names, 1), NNZ_OK);
    nnz_gates_free(&g, m);
    assert_int_equal(nnz_gates_init(&g, m, 1, acts, names, 1), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "already used"));
    nnz_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity_fused),
        cmocka_unit_test(test_identity_unfused),
        cmocka_unit_test(test_gradient_finite_difference),
        cmocka_unit_test(test_select),
        cmocka_unit_test(test_init_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
