/* Every zoo model's training step against PyTorch: tests/fixtures/<model>_step.safetensors,
 * written by tests/gen/make_fixtures.py (read its docstring for the fixture's contents).
 *
 * For each model: build it with the zoo, overwrite every parameter with the
 * fixture's deterministic formula, run one train-mode forward, impose the
 * fixture's pinned ReLU/ReLU6/max-pool decisions, softmax cross-entropy with
 * label smoothing 0.1, backward, and one SGD step (lr 0.1, momentum 0.9,
 * Nesterov, weight decay 5e-4 on conv/linear weights only); compare logits,
 * loss, gradients, updated parameters and BN running statistics with PyTorch's.
 *
 * The oracle is PyTorch's step computed in float64 from the same float32
 * starting values, so every difference is nnz's float32 rounding (or a bug).
 * Tolerances (the generator's --check-f32 runs float32 PyTorch through this
 * same comparison: its worst error/tolerance is 0.08, i.e. >= 12x headroom):
 *  - logits, loss, running stats: max|d| <= 1e-4 * max|ref|. A forward pass is
 *    a few thousand float32 multiply-adds deep, amplified by batch norm:
 *    float32 PyTorch lands at 3e-6 (logits), 2e-6 (running stats) of the maximum.
 *  - gradients: max|d| <= 1e-3 * max|ref| per tensor. Gradients are sums over
 *    N*H*W = up to 6272 positions of products that went through batch norm's
 *    backward (which subtracts two projections, losing digits where channels
 *    are nearly constant); float32 PyTorch: <= 1.2e-5 of the maximum. Tensors
 *    whose exact gradient is zero (the BN beta of a layer that feeds only a
 *    1x1 conv and another BN: the second BN removes any constant shift) are
 *    measured against the largest gradient of the model instead: <= 1e-6 of it.
 *  - sampled tensors (> 4096 values): the 256 samples as above, the full sum
 *    within 1e-3 * sum|g|, the L2 norm within 1e-3 relative.
 *  - updated values: max|d| <= 1e-3 * max|update| + 1e-6 * max|value|, i.e. the
 *    gradient tolerance carried through the step plus float32 rounding of the value.
 * Without the pinned decisions a correct float32 implementation misses the
 * gradient tolerance on mbv2-tiny by 4x (a handful of ReLU6 inputs within
 * rounding of 0 flip; each flip moves a gradient by ~1/sqrt(N*H*W)). */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/io.h"
#include "nn/nn.h"

#define BATCH 8
#define CLASSES 10
#define SAMPLES 256
#define FULL_MAX 4096

#define TOL_FWD 1e-4
#define TOL_GRAD 1e-3
#define TOL_ZERO 1e-6
#define TOL_NEW_ABS 1e-6

/* The fixture's initial values (tests/gen/make_fixtures.py): phase in double, in
 * Python's order of operations; volatile keeps the compiler from fusing a
 * multiply-add, which would change the last bit of the phase. */
static double zoo_phase(int64_t j, int k) {
    volatile double a = 0.7 * (double)j;
    volatile double b = 1.3 * (double)k;
    volatile double c = 0.001 * (double)j;
    volatile double d = c * (double)j;
    volatile double ab = a + b;
    return ab + d;
}

typedef enum { INIT_SCALED, INIT_GAMMA, INIT_BETA } init_kind;

static float zoo_init_value(init_kind kind, double scale, int64_t j, int k) {
    double s = sin(zoo_phase(j, k));
    switch (kind) {
    case INIT_GAMMA: return (float)(1.0 + 0.1 * s);
    case INIT_BETA: return (float)(0.1 * s);
    default: return (float)(scale * s);
    }
}

/* How parameter p is initialised: its kind, scale and index k in param_order. */
typedef struct {
    int param;
    init_kind kind;
    double scale;
    int k;
} param_init;

typedef struct {
    const char *model;
    nnz_st_file f;
    nnz_model *m;
    param_init *inits;
    int n_inits;
    double worst[16]; /* error / tolerance per metric, for the report */
} zoo_case;

enum { M_LOGITS, M_LOSS, M_GRAD, M_GRAD_ZERO, M_GRAD_SAMPLED, M_GRAD_SUM, M_GRAD_NORM, M_NEW, M_RUNNING, M_COUNT };
static const char *metric_names[M_COUNT] = {"logits", "loss", "grad", "grad(zero)", "grad_sampled",
                                            "grad_sum", "grad_norm", "new", "running"};

static void check(zoo_case *c, int metric, const char *what, double err, double tol) {
    double ratio = err / tol;
    if (!(ratio <= 1.0)) { /* also catches NaN */
        fail_msg("%s: %s: error %.3g exceeds tolerance %.3g", c->model, what, err, tol);
    }
    if (ratio > c->worst[metric]) c->worst[metric] = ratio;
}

static const nnz_st_tensor *need(const zoo_case *c, const char *name, const char *dtype, int64_t numel) {
    const nnz_st_tensor *t = nnz_st_find(&c->f, name);
    if (!t) fail_msg("%s: fixture lacks tensor '%s'", c->model, name);
    if (strcmp(t->dtype, dtype) != 0) fail_msg("%s: '%s' is %s, expected %s", c->model, name, t->dtype, dtype);
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    if (numel >= 0 && n != numel)
        fail_msg("%s: '%s' holds %lld values, expected %lld", c->model, name, (long long)n, (long long)numel);
    return t;
}

static int find_consumer(const nnz_model *m, int input, nnz_op op) {
    for (int i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].op == op && m->nodes[i].input == input) return i;
    return -1;
}

static int64_t node_out_numel(const nnz_node *nd, int n) { return (int64_t)n * nd->h * nd->w * nd->c; }

/* Splits a comma-separated list in place; returns the count. */
static int split_commas(char *s, char **items, int cap) {
    int n = 0;
    if (!*s) return 0;
    for (char *tok = strtok(s, ","); tok && n < cap; tok = strtok(NULL, ",")) items[n++] = tok;
    return n;
}

/* Writes the formula's values into every parameter; checks that the model's
 * trainable parameters are exactly the fixture's, with the same shapes. */
static void set_parameters(zoo_case *c) {
    nnz_model *m = c->m;
    const char *order = nnz_st_meta(&c->f, "param_order");
    assert_non_null(order);
    char *list = strdup(order);
    char **names = calloc((size_t)m->n_params + 1, sizeof *names);
    assert_non_null(list);
    assert_non_null(names);
    int n = split_commas(list, names, m->n_params + 1);
    int trainable = 0;
    for (int i = 0; i < m->n_params; i++) trainable += m->params[i].trainable;
    if (n != trainable) fail_msg("%s: nnz has %d trainable parameters, PyTorch %d", c->model, trainable, n);

    c->inits = calloc((size_t)n, sizeof *c->inits);
    assert_non_null(c->inits);
    c->n_inits = n;
    for (int k = 0; k < n; k++) {
        int p = nnz_model_find_param(m, names[k]);
        if (p < 0) fail_msg("%s: nnz has no parameter '%s'", c->model, names[k]);
        nnz_param *par = &m->params[p];
        assert_true(par->trainable);
        const nnz_node *nd = &m->nodes[par->node];
        param_init *pi = &c->inits[k];
        pi->param = p;
        pi->k = k;
        if (nd->op == NNZ_OP_BATCHNORM) {
            pi->kind = p == nd->weight ? INIT_GAMMA : INIT_BETA;
        } else {
            /* conv (OC,KH,KW,IC/g) and linear (OUT,IN): fan_in = weight numel / rows */
            assert_true(nd->weight >= 0);
            const nnz_tensor *w = &m->params[nd->weight].value;
            pi->kind = INIT_SCALED;
            pi->scale = 1.0 / sqrt((double)(nnz_tensor_numel(w) / w->shape[0]));
        }
        /* the fixture's shape is nnz's shape (full tensors) */
        char key[256];
        int64_t numel = nnz_tensor_numel(&par->value);
        snprintf(key, sizeof key, "grad/%s", names[k]);
        const nnz_st_tensor *g = nnz_st_find(&c->f, key);
        if (numel <= FULL_MAX) {
            if (!g) fail_msg("%s: fixture lacks '%s' (nnz's tensor has %lld values)", c->model, key, (long long)numel);
            if (g->ndim != par->value.ndim) fail_msg("%s: '%s' rank %d vs nnz %d", c->model, key, g->ndim, par->value.ndim);
            for (int d = 0; d < g->ndim; d++)
                if (g->shape[d] != par->value.shape[d]) fail_msg("%s: '%s' shape differs from nnz's", c->model, key);
        } else {
            snprintf(key, sizeof key, "grad_stats/%s", names[k]);
            if (g || !nnz_st_find(&c->f, key))
                fail_msg("%s: '%s' has %lld values in nnz but the fixture disagrees", c->model, names[k], (long long)numel);
        }
        float *v = nnz_tensor_f32(&par->value);
        for (int64_t j = 0; j < numel; j++) v[j] = zoo_init_value(pi->kind, pi->scale, j, k);
    }
    for (int i = 0; i < m->n_nodes; i++) {
        const nnz_node *nd = &m->nodes[i];
        if (nd->op != NNZ_OP_BATCHNORM) continue;
        float *mean = nnz_tensor_f32(&m->params[nd->running_mean].value);
        float *var = nnz_tensor_f32(&m->params[nd->running_var].value);
        for (int ch = 0; ch < nd->c; ch++) mean[ch] = 0.0f, var[ch] = 1.0f;
    }
    free(names);
    free(list);
}

/* Imposes the float64 run's near-boundary decisions (see make_fixtures.py). */
static void apply_pins(zoo_case *c, nnz_op act_op) {
    nnz_model *m = c->m;
    char *lists[2] = {strdup(nnz_st_meta(&c->f, "act_srcs") ? nnz_st_meta(&c->f, "act_srcs") : ""),
                      strdup(nnz_st_meta(&c->f, "pool_srcs") ? nnz_st_meta(&c->f, "pool_srcs") : "")};
    char *srcs[64];
    for (int which = 0; which < 2; which++) {
        assert_non_null(lists[which]);
        int n = split_commas(lists[which], srcs, 64);
        for (int s = 0; s < n; s++) {
            int src = nnz_model_find_node(m, srcs[s]);
            if (src < 0) fail_msg("%s: nnz has no node '%s'", c->model, srcs[s]);
            int act = find_consumer(m, src, act_op);
            if (act < 0) fail_msg("%s: no %s after '%s' in nnz's graph", c->model, nnz_op_name(act_op), srcs[s]);
            char key[256];
            if (which == 0) {
                snprintf(key, sizeof key, "pin_act_idx/%s", srcs[s]);
                const nnz_st_tensor *ti = nnz_st_find(&c->f, key);
                if (!ti) continue; /* nothing near a boundary */
                int64_t k = ti->shape[0];
                snprintf(key, sizeof key, "pin_act_val/%s", srcs[s]);
                const float *val = need(c, key, "F32", k)->data;
                const int32_t *idx = ti->data;
                float *out = m->act[act];
                int64_t lim = node_out_numel(&m->nodes[act], BATCH);
                for (int64_t i = 0; i < k; i++) {
                    assert_true(idx[i] >= 0 && idx[i] < lim);
                    out[idx[i]] = val[i];
                }
            } else {
                int pool = find_consumer(m, act, NNZ_OP_MAXPOOL);
                if (pool < 0) fail_msg("%s: no maxpool after the activation of '%s'", c->model, srcs[s]);
                snprintf(key, sizeof key, "pin_pool/%s", srcs[s]);
                const nnz_st_tensor *tp = nnz_st_find(&c->f, key);
                if (!tp) continue;
                const int32_t *pins = tp->data;
                int32_t *argmax = m->aux[pool];
                int64_t lim = node_out_numel(&m->nodes[pool], BATCH);
                int32_t in_hw = m->nodes[pool].in_h * m->nodes[pool].in_w;
                for (int64_t i = 0; i < tp->shape[0]; i++) {
                    assert_true(pins[2 * i] >= 0 && pins[2 * i] < lim);
                    assert_true(pins[2 * i + 1] >= 0 && pins[2 * i + 1] < in_hw);
                    argmax[pins[2 * i]] = pins[2 * i + 1];
                }
            }
        }
        free(lists[which]);
    }
}

static double max_abs_f32(const float *a, int64_t n) {
    double mx = 0;
    for (int64_t i = 0; i < n; i++) mx = fmax(mx, fabs((double)a[i]));
    return mx;
}

static double max_abs_diff(const float *a, const float *b, int64_t n) {
    double mx = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= mx)) mx = isnan(d) ? INFINITY : d;
    }
    return mx;
}

static void compare_gradients(zoo_case *c) {
    nnz_model *m = c->m;
    char key[256];
    /* the largest reference gradient of the model, the scale of exactly-zero ones */
    double gmax = 0;
    for (int k = 0; k < c->n_inits; k++) {
        const char *name = m->params[c->inits[k].param].name;
        snprintf(key, sizeof key, "grad/%s", name);
        const nnz_st_tensor *t = nnz_st_find(&c->f, key);
        if (!t) {
            snprintf(key, sizeof key, "grad_sampled/%s", name);
            t = need(c, key, "F32", SAMPLES);
        }
        gmax = fmax(gmax, max_abs_f32(t->data, (int64_t)(t->nbytes / 4)));
    }
    assert_true(gmax > 0);
    for (int k = 0; k < c->n_inits; k++) {
        const nnz_param *par = &m->params[c->inits[k].param];
        int64_t numel = nnz_tensor_numel(&par->value);
        char what[300];
        if (numel <= FULL_MAX) {
            snprintf(key, sizeof key, "grad/%s", par->name);
            const float *ref = need(c, key, "F32", numel)->data;
            double rmax = max_abs_f32(ref, numel), err = max_abs_diff(par->grad, ref, numel);
            if (rmax <= 1e-9 * gmax)
                check(c, M_GRAD_ZERO, key, err, TOL_ZERO * gmax);
            else
                check(c, M_GRAD, key, err, TOL_GRAD * rmax);
        } else {
            snprintf(key, sizeof key, "grad_sampled/%s", par->name);
            const float *ref = need(c, key, "F32", SAMPLES)->data;
            float got[SAMPLES];
            for (int i = 0; i < SAMPLES; i++) got[i] = par->grad[(int64_t)i * numel / SAMPLES];
            check(c, M_GRAD_SAMPLED, key, max_abs_diff(got, ref, SAMPLES), TOL_GRAD * max_abs_f32(ref, SAMPLES));
            snprintf(key, sizeof key, "grad_stats/%s", par->name);
            const double *st = need(c, key, "F64", 3)->data;
            double sum = 0, sumsq = 0;
            for (int64_t j = 0; j < numel; j++) sum += par->grad[j], sumsq += (double)par->grad[j] * par->grad[j];
            snprintf(what, sizeof what, "sum of %s", key);
            check(c, M_GRAD_SUM, what, fabs(sum - st[0]), TOL_GRAD * st[2]);
            snprintf(what, sizeof what, "L2 norm of %s", key);
            check(c, M_GRAD_NORM, what, fabs(sqrt(sumsq) - sqrt(st[1])), TOL_GRAD * sqrt(st[1]));
        }
    }
}

static void compare_updates(zoo_case *c) {
    nnz_model *m = c->m;
    char key[256];
    for (int k = 0; k < c->n_inits; k++) {
        const param_init *pi = &c->inits[k];
        const nnz_param *par = &m->params[pi->param];
        const float *v = nnz_tensor_f32(&par->value);
        int64_t numel = nnz_tensor_numel(&par->value);
        bool full = numel <= FULL_MAX;
        int64_t n = full ? numel : SAMPLES;
        snprintf(key, sizeof key, full ? "new/%s" : "new_sampled/%s", par->name);
        const float *ref = need(c, key, "F32", n)->data;
        double max_update = 0, max_value = 0, err = 0;
        for (int64_t i = 0; i < n; i++) {
            int64_t j = full ? i : i * numel / SAMPLES;
            double p0 = zoo_init_value(pi->kind, pi->scale, j, pi->k);
            max_update = fmax(max_update, fabs(p0 - ref[i]));
            max_value = fmax(max_value, fabs((double)ref[i]));
            double d = fabs((double)v[j] - ref[i]);
            err = d <= err ? err : (isnan(d) ? INFINITY : d);
        }
        check(c, M_NEW, key, err, TOL_GRAD * max_update + TOL_NEW_ABS * max_value);
    }
    for (int i = 0; i < m->n_params; i++) {
        const nnz_param *par = &m->params[i];
        if (par->trainable) continue;
        int64_t numel = nnz_tensor_numel(&par->value);
        snprintf(key, sizeof key, "new/%s", par->name);
        const float *ref = need(c, key, "F32", numel)->data;
        check(c, M_RUNNING, key, max_abs_diff(nnz_tensor_f32(&par->value), ref, numel),
              TOL_FWD * max_abs_f32(ref, numel));
    }
}

static void run_case(const char *model) {
    zoo_case c = {.model = model};
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/fixtures/%s_step.safetensors", tu_source_dir(), model);
    if (nnz_st_load(path, &c.f) != NNZ_OK) fail_msg("%s: %s", path, nnz_last_error());

    if (nnz_zoo_build(model, 28, 28, 1, CLASSES, &c.m) != NNZ_OK) fail_msg("zoo build %s: %s", model, nnz_last_error());
    if (nnz_model_finalize(c.m, 1) != NNZ_OK) fail_msg("finalize %s: %s", model, nnz_last_error());
    assert_int_equal(c.m->num_classes, CLASSES);
    set_parameters(&c);

    const uint8_t *x_u8 = need(&c, "x_u8", "U8", BATCH * 28 * 28)->data;
    const uint8_t *labels = need(&c, "labels", "U8", BATCH)->data;
    float *x = malloc(sizeof(float) * BATCH * 28 * 28);
    assert_non_null(x);
    for (int i = 0; i < BATCH * 28 * 28; i++) x[i] = (float)x_u8[i] / 255.0f;

    /* The pins below write the float64 run's near-boundary activation outputs, which the relu/relu6
     * nodes' backward reads as its mask. The fused plan's batch norm recomputes that mask from its
     * own input instead, so the comparison runs the unfused plan (every node its own output);
     * test_fusion proves the fused plan bit-identical to it, gradients included. */
    c.m->keep_activations = true;
    assert_int_equal(nnz_model_reserve(c.m, BATCH), NNZ_OK);
    if (nnz_model_forward(c.m, x, BATCH, true) != NNZ_OK) fail_msg("forward %s: %s", model, nnz_last_error());
    const float *logits = nnz_model_output(c.m);
    const float *ref_logits = need(&c, "logits", "F32", BATCH * CLASSES)->data;
    check(&c, M_LOGITS, "logits", max_abs_diff(logits, ref_logits, BATCH * CLASSES),
          TOL_FWD * max_abs_f32(ref_logits, BATCH * CLASSES));
    float dlogits[BATCH * CLASSES];
    float loss = nnz_softmax_xent(BATCH, CLASSES, logits, labels, 0.1f, dlogits, NULL);
    float ref_loss = *(const float *)need(&c, "loss", "F32", 1)->data;
    check(&c, M_LOSS, "loss", fabs((double)loss - ref_loss), TOL_FWD * fabs((double)ref_loss));

    apply_pins(&c, strcmp(model, "mbv2-tiny") == 0 ? NNZ_OP_RELU6 : NNZ_OP_RELU);
    nnz_model_zero_grad(c.m);
    if (nnz_model_backward(c.m, x, BATCH, dlogits) != NNZ_OK) fail_msg("backward %s: %s", model, nnz_last_error());
    compare_gradients(&c);

    nnz_optimizer opt;
    assert_int_equal(nnz_optimizer_init(&opt, c.m, NNZ_OPT_SGD, 0.9f, true, 5e-4f, false), NNZ_OK);
    nnz_optimizer_step(&opt, c.m, 0.1f);
    compare_updates(&c);

    char report[512];
    int len = snprintf(report, sizeof report, "%s (%s): worst error/tolerance", model, nnz_isa_name(nnz_isa_active()));
    for (int i = 0; i < M_COUNT && len < (int)sizeof report; i++)
        if (c.worst[i] > 0) len += snprintf(report + len, sizeof report - (size_t)len, " %s %.2g", metric_names[i], c.worst[i]);
    print_message("%s\n", report);

    nnz_optimizer_free(&opt);
    free(x);
    free(c.inits);
    nnz_model_free(c.m);
    nnz_st_free(&c.f);
}

/* The active ISA's kernels, and the plain-C reference path when that differs. */
static void run_model(const char *model) {
    nnz_isa active = nnz_isa_active();
    run_case(model);
    if (active != NNZ_ISA_REF) {
        assert_int_equal(nnz_isa_set(NNZ_ISA_REF), NNZ_OK);
        run_case(model);
        assert_int_equal(nnz_isa_set(active), NNZ_OK);
    }
}

static void test_mlp(void **state) { (void)state; run_model("mlp"); }
static void test_lenet5(void **state) { (void)state; run_model("lenet5"); }
static void test_vgg8(void **state) { (void)state; run_model("vgg8"); }
static void test_mbv2_tiny(void **state) { (void)state; run_model("mbv2-tiny"); }

/* The formula must reproduce the fixture's starting values bit for bit; these
 * were printed by Python (make_fixtures.formula_values, as hex floats). */
static void test_formula_matches_python(void **state) {
    (void)state;
    assert_true(zoo_init_value(INIT_SCALED, 1.0 / sqrt(9.0), 5, 2) == -0x1.ae26f4p-5f);
    assert_true(zoo_init_value(INIT_GAMMA, 0, 3, 1) == 0x1.f278aap-1f);
    assert_true(zoo_init_value(INIT_BETA, 0, 7, 4) == -0x1.0f61b6p-4f);
    assert_true(zoo_init_value(INIT_SCALED, 1.0 / sqrt(1024.0), 1000003, 5) == -0x1.9aa082p-6f);
    assert_true(zoo_init_value(INIT_SCALED, 1.0 / sqrt(576.0), 589823, 3) == 0x1.112516p-7f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_formula_matches_python),
        cmocka_unit_test(test_mlp),
        cmocka_unit_test(test_lenet5),
        cmocka_unit_test(test_vgg8),
        cmocka_unit_test(test_mbv2_tiny),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
