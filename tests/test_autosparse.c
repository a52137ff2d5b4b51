/* AutoSparse (STR + Gradient Annealing) and the GMP baseline (src/sparse/str.c, gmp.c, prune.c).
 *
 * The test model has no activations: its loss L = sum(logits * r) is multilinear in the
 * weights, and w~ is linear in w and in sigmoid(s) away from the threshold, so central
 * differences are exact up to fp32 rounding (weights are kept at least GAP from the threshold,
 * farther than any finite-difference step moves w or sigmoid(s)). The analytic gradients are
 * also compared with a twin model whose weights were thresholded by hand: its dL/dW is dL/dw~. */
#include "test_util.h"
#include "nn/nn.h"
#include "sparse/sparse.h"
#include "train/train.h"
#include "kernels/kernels.h"

#include <stdio.h>
#include <unistd.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define N 4
#define TAU 0.05f
#define GAP 0.005f

static nnz_model *tiny(void) {
    nnz_model *m = NULL;
    assert_int_equal(nnz_model_create(6, 6, 2, &m), NNZ_OK);
    nnz_add_conv2d(m, "c1", 3, 3, 1, 1, 1, true);
    nnz_add_conv2d(m, "c2", 4, 3, 1, 1, 1, true); /* STR */
    nnz_add_flatten(m, "flat");
    nnz_add_linear(m, "f1", 8, true);             /* STR */
    nnz_add_linear(m, "f2", 3, true);
    assert_int_equal(nnz_model_finalize(m, 7), NNZ_OK);
    assert_int_equal(nnz_model_reserve(m, N), NNZ_OK);
    /* keep every STR weight at least GAP away from the threshold TAU */
    static const char *const w[] = {"c2.weight", "f1.weight"};
    for (int k = 0; k < 2; k++) {
        nnz_param *p = &m->params[nnz_model_find_param(m, w[k])];
        float *W = nnz_tensor_f32(&p->value);
        for (int64_t i = 0; i < nnz_tensor_numel(&p->value); i++)
            if (fabsf(fabsf(W[i]) - TAU) < GAP) W[i] = copysignf(fabsf(W[i]) < TAU ? TAU - 2 * GAP : TAU + 2 * GAP, W[i]);
    }
    return m;
}

static float s_for(float tau) { return logf(tau / (1.0f - tau)); }

static void fill_inputs(float *x, float *r) {
    tu_fill_uniform(x, N * 6 * 6 * 2, -1, 1, 11);
    tu_fill_uniform(r, N * 3, -1, 1, 12);
}

static double loss_of(nnz_model *m, const float *x, const float *r) {
    assert_int_equal(nnz_model_forward(m, x, N, true), NNZ_OK);
    const float *o = nnz_model_output(m);
    double L = 0;
    for (int i = 0; i < N * 3; i++) L += (double)o[i] * r[i];
    return L;
}

/* L through STR (apply, forward, restore) */
static double str_loss(nnz_str *st, nnz_model *m, const float *x, const float *r) {
    nnz_str_apply(st, m);
    double L = loss_of(m, x, r);
    nnz_str_restore(st, m);
    return L;
}

/* the twin: same weights, thresholded by hand per row with the STR thresholds */
static nnz_model *hand_thresholded(const nnz_str *st, nnz_model *m) {
    nnz_model *h = tiny();
    for (int p = 0; p < h->n_params; p++)
        memcpy(h->params[p].value.data, m->params[nnz_model_find_param(m, h->params[p].name)].value.data,
               nnz_tensor_bytes(&h->params[p].value));
    for (int l = 0; l < st->n; l++) {
        float *W = nnz_tensor_f32(&h->params[st->weight[l]].value);
        const float *s = nnz_tensor_f32(&m->params[st->threshold[l]].value);
        for (int row = 0; row < st->rows[l]; row++) {
            const float t = (float)(1.0 / (1.0 + exp(-(double)s[st->per_channel ? row : 0])));
            for (int k = 0; k < st->cols[l]; k++) {
                float *w = &W[(size_t)row * st->cols[l] + k];
                *w = fabsf(*w) > t ? copysignf(fabsf(*w) - t, *w) : 0.0f;
            }
        }
    }
    return h;
}

static void test_forward_matches_hand_thresholded(void **state) {
    (void)state;
    float x[N * 72], r[N * 3];
    fill_inputs(x, r);
    for (int pc = 0; pc < 2; pc++) {
        nnz_model *m = tiny();
        nnz_str st;
        assert_int_equal(nnz_str_init(&st, m, pc, s_for(TAU), 0), NNZ_OK);
        assert_int_equal(st.n, 2); /* c2 and f1: first and last stay dense */
        assert_int_equal(m->nodes[st.node[0]].op, NNZ_OP_CONV2D);
        assert_string_equal(m->params[st.threshold[1]].name, "f1.threshold");
        assert_true(m->params[st.threshold[0]].no_decay);
        if (pc) { /* channels get different thresholds */
            float *s = nnz_tensor_f32(&m->params[st.threshold[0]].value);
            for (int c = 0; c < 4; c++) s[c] = s_for(0.02f + 0.02f * (float)c);
        }
        nnz_model *h = hand_thresholded(&st, m);
        const double sp = nnz_str_sparsity(&st, m);
        assert_true(sp > 0.1 && sp < 0.9);
        float *W2 = nnz_tensor_f32(&m->params[st.weight[0]].value);
        const float before = W2[5];
        nnz_str_apply(&st, m);
        for (int l = 0; l < st.n; l++) /* w~ is what the layers read */
            assert_memory_equal(m->params[st.weight[l]].value.data, h->params[st.weight[l]].value.data,
                                nnz_tensor_bytes(&h->params[st.weight[l]].value));
        const double a = loss_of(m, x, r), b = loss_of(h, x, r);
        assert_true(a == b);
        nnz_str_restore(&st, m);
        assert_true(W2[5] == before); /* the master came back */
        assert_true(str_loss(&st, m, x, r) == b);
        /* bake: w~ becomes the weight */
        nnz_str_bake(&st, m);
        assert_true(loss_of(m, x, r) == b);
        assert_memory_equal(m->params[st.weight[1]].value.data, h->params[st.weight[1]].value.data,
                            nnz_tensor_bytes(&h->params[st.weight[1]].value));
        nnz_str_free(&st);
        nnz_model_free(h);
        nnz_model_free(m);
    }
}

/* one STR step's gradients: into m's grads (dL/dw, dL/ds) */
static void str_grads(nnz_str *st, nnz_model *m, const float *x, const float *r, float alpha) {
    nnz_model_zero_grad(m);
    nnz_str_apply(st, m);
    assert_int_equal(nnz_model_forward(m, x, N, true), NNZ_OK);
    assert_int_equal(nnz_model_backward(m, x, N, r), NNZ_OK);
    nnz_str_backward(st, m, alpha);
}

static void check_grads(bool per_channel, float alpha) {
    float x[N * 72], r[N * 3];
    fill_inputs(x, r);
    nnz_model *m = tiny();
    nnz_str st;
    assert_int_equal(nnz_str_init(&st, m, per_channel, s_for(TAU), 0), NNZ_OK);
    nnz_model *h = hand_thresholded(&st, m);
    nnz_model_zero_grad(h);
    assert_int_equal(nnz_model_forward(h, x, N, true), NNZ_OK);
    assert_int_equal(nnz_model_backward(h, x, N, r), NNZ_OK);
    str_grads(&st, m, x, r, alpha);
    int checked_pruned = 0, checked_kept = 0;
    for (int l = 0; l < st.n; l++) {
        nnz_param *p = &m->params[st.weight[l]];
        float *W = nnz_tensor_f32(&p->value);
        const float *Gh = h->params[st.weight[l]].grad;
        const float t = TAU;
        for (int64_t i = 0; i < nnz_tensor_numel(&p->value); i++) {
            const bool kept = fabsf(W[i]) > t;
            /* against the twin: kept weights pass dL/dw~, pruned ones alpha times it */
            const float want = kept ? Gh[i] : alpha * Gh[i];
            if (fabsf(p->grad[i] - want) > 1e-6f * fmaxf(1.0f, fabsf(want)))
                fail_msg("%s[%lld]: grad %g, want %g (kept %d)", p->name, (long long)i, p->grad[i], want, kept);
            if (alpha == 0 && !kept) assert_true(p->grad[i] == 0.0f);
            if (!kept && alpha != 0) { /* not differentiable there in the STR sense: checked above */
                checked_pruned++;
                continue;
            }
            /* central difference: multilinear loss, exact up to rounding */
            const float w0 = W[i], eps = 1e-3f;
            W[i] = w0 + eps;
            const double lp = str_loss(&st, m, x, r);
            W[i] = w0 - eps;
            const double lm = str_loss(&st, m, x, r);
            W[i] = w0;
            const double fd = (lp - lm) / (2.0 * eps);
            if (fabs(fd - p->grad[i]) > 2e-3 * fmax(1.0, fabs(fd)))
                fail_msg("%s[%lld]: grad %g, finite difference %g", p->name, (long long)i, p->grad[i], fd);
            checked_kept += kept;
            checked_pruned += !kept;
        }
        nnz_param *tp = &m->params[st.threshold[l]];
        float *s = nnz_tensor_f32(&tp->value);
        for (int64_t c = 0; c < nnz_tensor_numel(&tp->value); c++) {
            const float s0 = s[c], eps = 1e-2f;
            s[c] = s0 + eps;
            const double lp = str_loss(&st, m, x, r);
            s[c] = s0 - eps;
            const double lm = str_loss(&st, m, x, r);
            s[c] = s0;
            const double fd = (lp - lm) / (2.0 * eps);
            assert_true(fabs(fd) > 1e-5); /* the check can fail */
            if (fabs(fd - tp->grad[c]) > 1e-4 + 1e-2 * fabs(fd))
                fail_msg("%s[%lld]: grad %g, finite difference %g", tp->name, (long long)c, tp->grad[c], fd);
        }
    }
    assert_true(checked_kept > 50 && checked_pruned > 50);
    nnz_str_free(&st);
    nnz_model_free(h);
    nnz_model_free(m);
}

static void test_grads_str(void **state) {
    (void)state;
    check_grads(false, 0.0f);
    check_grads(true, 0.0f);
}
static void test_grads_annealed(void **state) {
    (void)state;
    check_grads(false, 0.3f);
    check_grads(true, 0.3f);
}

static void test_threshold_decay_and_optimizer(void **state) {
    (void)state;
    float x[N * 72], r[N * 3];
    fill_inputs(x, r);
    const float decay = 0.25f, lr = 0.1f, s0 = s_for(TAU);
    nnz_model *a = tiny(), *b = tiny();
    nnz_str sa, sb;
    assert_int_equal(nnz_str_init(&sa, a, false, s0, 0), NNZ_OK);
    assert_int_equal(nnz_str_init(&sb, b, false, s0, decay), NNZ_OK);
    str_grads(&sa, a, x, r, 0.3f);
    str_grads(&sb, b, x, r, 0.3f);
    for (int l = 0; l < sa.n; l++) {
        const float ga = a->params[sa.threshold[l]].grad[0], gb = b->params[sb.threshold[l]].grad[0];
        assert_true(fabsf(gb - (ga + decay * s0)) < 1e-6f);
    }
    /* the optimizer (SGD, no momentum, no decay) steps the master weights and the thresholds */
    nnz_optimizer o;
    assert_int_equal(nnz_optimizer_init(&o, a, NNZ_OPT_SGD, 0.0f, false, 0.0f, false), NNZ_OK);
    const nnz_param *w = &a->params[sa.weight[1]];
    const int64_t n = nnz_tensor_numel(&w->value);
    float *before = malloc(sizeof(float) * (size_t)n), *g = malloc(sizeof(float) * (size_t)n);
    memcpy(before, w->value.data, sizeof(float) * (size_t)n);
    memcpy(g, w->grad, sizeof(float) * (size_t)n);
    const float t0 = nnz_tensor_f32(&a->params[sa.threshold[1]].value)[0], gt = a->params[sa.threshold[1]].grad[0];
    nnz_optimizer_step(&o, a, lr);
    int moved_pruned = 0;
    for (int64_t i = 0; i < n; i++) {
        const float now = nnz_tensor_f32(&w->value)[i], want = before[i] - lr * g[i];
        if (fabsf(now - want) > 1e-7f * fmaxf(1.0f, fabsf(want)))
            fail_msg("f1.weight[%lld]: %g after the step, want %g", (long long)i, now, want);
        moved_pruned += fabsf(before[i]) <= TAU && g[i] != 0.0f && now != before[i];
    }
    assert_true(moved_pruned > 10); /* Gradient Annealing: pruned masters still learn */
    assert_true(fabsf(nnz_tensor_f32(&a->params[sa.threshold[1]].value)[0] - (t0 - lr * gt)) < 1e-6f);
    free(before);
    free(g);
    nnz_optimizer_free(&o);
    nnz_str_free(&sa);
    nnz_str_free(&sb);
    nnz_model_free(a);
    nnz_model_free(b);
}

static void test_anneal_schedule(void **state) {
    (void)state;
    const float a0 = 0.5f;
    struct { nnz_anneal_kind k; double f, want; } c[] = {
        {NNZ_ANNEAL_COSINE_SIGMOID, 0.0, 1.0},
        {NNZ_ANNEAL_COSINE_SIGMOID, 0.25, 1.0 - 1.0 / (1.0 + exp(3.0))}, /* the sigmoid branch: 0.9526 */
        {NNZ_ANNEAL_COSINE_SIGMOID, 0.5, 0.5},
        {NNZ_ANNEAL_COSINE_SIGMOID, 0.75, (1.0 + cos(0.75 * 3.14159265358979)) / 2.0}, /* cosine: 0.1464 */
        {NNZ_ANNEAL_COSINE_SIGMOID, 1.0, 1.0 - 1.0 / (1.0 + exp(-6.0))},                /* 0.00247 */
        {NNZ_ANNEAL_COSINE, 0.25, (1.0 + sqrt(0.5)) / 2.0},
        {NNZ_ANNEAL_COSINE, 1.0, 0.0},
        {NNZ_ANNEAL_SIGMOID, 0.5, 0.5},
        {NNZ_ANNEAL_SIGMOID, 0.75, 1.0 / (1.0 + exp(3.0))},
        {NNZ_ANNEAL_LINEAR, 0.25, 0.75},
        {NNZ_ANNEAL_LINEAR, 2.0, 0.0}, /* clamped */
        {NNZ_ANNEAL_CONSTANT, 0.9, 1.0},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        const float got = nnz_anneal_alpha(c[i].k, a0, c[i].f);
        if (fabs(got - a0 * c[i].want) > 1e-6)
            fail_msg("%s at %g: %g, want %g", nnz_anneal_name(c[i].k), c[i].f, got, a0 * c[i].want);
    }
    assert_true(fabsf(nnz_anneal_alpha(NNZ_ANNEAL_COSINE_SIGMOID, a0, 0.25) - 0.5f * 0.9526f) < 1e-4f);
    nnz_anneal_kind k;
    assert_int_equal(nnz_anneal_parse("cosine-sigmoid", &k), NNZ_OK);
    assert_int_equal(k, NNZ_ANNEAL_COSINE_SIGMOID);
    assert_int_equal(nnz_anneal_parse("cos", &k), NNZ_ERR_INVALID_ARG);
    nnz_prune_kind pk;
    assert_int_equal(nnz_prune_kind_parse("gmp", &pk), NNZ_OK);
    assert_int_equal(pk, NNZ_PRUNE_GMP);
    assert_int_equal(nnz_prune_kind_parse("str", &pk), NNZ_ERR_INVALID_ARG);
}

static void test_gmp_schedule_and_zeros(void **state) {
    (void)state;
    /* Zhu & Gupta with s_i = 0, s_f = 0.8 over steps 100..200 */
    assert_true(nnz_gmp_sparsity(0.8, 100, 200, 50) == 0.0);
    assert_true(nnz_gmp_sparsity(0.8, 100, 200, 100) == 0.0);
    assert_true(fabs(nnz_gmp_sparsity(0.8, 100, 200, 150) - 0.8 * (1 - 0.125)) < 1e-12);
    assert_true(fabs(nnz_gmp_sparsity(0.8, 100, 200, 200) - 0.8) < 1e-12);
    assert_true(fabs(nnz_gmp_sparsity(0.8, 100, 200, 999) - 0.8) < 1e-12);

    float x[N * 72], r[N * 3];
    fill_inputs(x, r);
    nnz_model *m = tiny();
    nnz_optimizer o;
    assert_int_equal(nnz_optimizer_init(&o, m, NNZ_OPT_SGD, 0.9f, false, 5e-4f, false), NNZ_OK);
    nnz_gmp g;
    const int64_t total = 12;
    assert_int_equal(nnz_gmp_init(&g, 0.9f, 0.0f, 0.75f, 3, total), NNZ_OK); /* prune at 0, 3, 6, 9 */
    assert_int_equal(g.end, 9);
    int node[8];
    assert_int_equal(nnz_prune_layers(m, node, 8), 2);
    uint8_t *was_zero[2];
    for (int l = 0; l < 2; l++) was_zero[l] = calloc((size_t)nnz_tensor_numel(&m->params[m->nodes[node[l]].weight].value), 1);
    double want = 0;
    for (int64_t step = 0; step < total; step++) {
        assert_int_equal(nnz_gmp_step(&g, m, &o, step), NNZ_OK);
        if (step % 3 == 0 && step <= 9) want = nnz_gmp_sparsity(0.9, 0, 9, step);
        for (int l = 0; l < 2; l++) {
            const nnz_param *p = &m->params[m->nodes[node[l]].weight];
            const int64_t n = nnz_tensor_numel(&p->value);
            int64_t zeros = 0;
            for (int64_t i = 0; i < n; i++) {
                const bool z = nnz_tensor_f32(&p->value)[i] == 0.0f;
                if (was_zero[l][i] && !z) fail_msg("step %lld: %s[%lld] came back", (long long)step, p->name, (long long)i);
                was_zero[l][i] = z;
                zeros += z;
            }
            const int64_t kept = llround((1.0 - want) * (double)n);
            if (zeros != n - (kept < 1 ? 1 : kept))
                fail_msg("step %lld: %s has %lld zeros of %lld, schedule says %.4f", (long long)step, p->name,
                         (long long)zeros, (long long)n, want);
        }
        nnz_model_zero_grad(m);
        assert_int_equal(nnz_model_forward(m, x, N, true), NNZ_OK);
        assert_int_equal(nnz_model_backward(m, x, N, r), NNZ_OK);
        nnz_optimizer_step(&o, m, 0.02f);
    }
    assert_true(fabs(want - 0.9) < 1e-12);
    for (int l = 0; l < 2; l++) free(was_zero[l]);
    nnz_optimizer_free(&o);
    nnz_model_free(m);
    assert_int_equal(nnz_gmp_init(&g, 1.0f, 0, 0.75f, 0, 10), NNZ_ERR_INVALID_ARG);
}

static void test_flops(void **state) {
    (void)state;
    nnz_model *m = tiny();
    double dense = 0, per[16];
    const double F = nnz_model_sparse_flops(m, per, &dense);
    assert_true(F == dense && F > 0); /* no zeros yet */
    double Fd = 0;
    for (int i = 0; i < m->n_nodes; i++) Fd += (double)m->nodes[i].flops;
    assert_true(F == Fd);
    double td = 0;
    assert_true(nnz_train_step_flops(m, false, &td) == 3 * Fd && td == 3 * Fd);
    /* zero 3/4 of c2 and half of f1 */
    const int c2 = m->params[nnz_model_find_param(m, "c2.weight")].node;
    const int f1 = m->params[nnz_model_find_param(m, "f1.weight")].node;
    nnz_param *p2 = &m->params[m->nodes[c2].weight], *p1 = &m->params[m->nodes[f1].weight];
    for (int64_t i = 0; i < nnz_tensor_numel(&p2->value); i++) if (i % 4) nnz_tensor_f32(&p2->value)[i] = 0;
    for (int64_t i = 0; i < nnz_tensor_numel(&p1->value); i++) if (i % 2) nnz_tensor_f32(&p1->value)[i] = 0;
    const double fc2 = (double)m->nodes[c2].flops, ff1 = (double)m->nodes[f1].flops;
    const double want = Fd - 0.75 * fc2 - 0.5 * ff1;
    assert_true(fabs(nnz_model_sparse_flops(m, per, &dense) - want) < 1e-6 * Fd);
    assert_true(dense == Fd);
    assert_true(fabs(per[c2] - 0.25 * fc2) < 1e-9 * fc2);
    /* training: fwd + bwd-data sparse; bwd-weight dense (alpha > 0) or sparse */
    assert_true(fabs(nnz_train_step_flops(m, false, &td) - 3 * want) < 1e-6 * Fd);
    assert_true(fabs(nnz_train_step_flops(m, true, &td) - (2 * want + Fd)) < 1e-6 * Fd);
    assert_true(td == 3 * Fd);
    nnz_model_free(m);
}

/* ---------- through nnz_train: exact resume, the config's prune section ---------- */

typedef struct {
    float loss[32];
    int64_t stop_at;
} recorder;

static bool record(const nnz_progress *p, void *user) {
    recorder *r = user;
    if (p->epoch_end) return true;
    assert_true(p->step >= 1 && p->step <= 32);
    r->loss[p->step - 1] = p->loss;
    return p->step != r->stop_at;
}

static void prune_config(nnz_train_config *c, recorder *r, nnz_prune_kind kind, const char *out) {
    nnz_train_config_init(c);
    c->model = "lenet5";
    c->epochs = 2;
    c->batch = 16;
    c->train_limit = 80; /* 5 steps per epoch */
    c->test_limit = 32;
    c->seed = 5;
    c->threads = 2;
    c->log_every = 1;
    c->progress = record;
    c->progress_user = r;
    c->out_path = out;
    c->prune.kind = kind;
    c->prune.threshold_init = -5.0f;
    c->prune.per_channel = true;
    c->prune.target_sparsity = 0.8f;
    c->prune.gmp_every = 2;
}

/* returns how many STR thresholds the files hold */
static int assert_files_equal(const char *a, const char *b) {
    nnz_checkpoint x, y;
    assert_int_equal(nnz_checkpoint_open(a, &x), NNZ_OK);
    assert_int_equal(nnz_checkpoint_open(b, &y), NNZ_OK);
    assert_int_equal(x.file.n, y.file.n);
    int thresholds = 0;
    for (int i = 0; i < x.file.n; i++) {
        const nnz_st_tensor *t = &x.file.tensors[i], *u = nnz_st_find(&y.file, t->name);
        assert_non_null(u);
        assert_int_equal(t->nbytes, u->nbytes);
        if (memcmp(t->data, u->data, t->nbytes) != 0) fail_msg("tensor '%s' differs", t->name);
        thresholds += strstr(t->name, ".threshold") != NULL;
    }
    nnz_checkpoint_close(&x);
    nnz_checkpoint_close(&y);
    return thresholds;
}

static void assert_bytes_equal(const char *a, const char *b) {
    size_t na, nb;
    uint8_t *x = tu_read_file(a, &na), *y = tu_read_file(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(x, y, na);
    free(x);
    free(y);
}

static int64_t checkpoint_step(const char *path) {
    nnz_checkpoint ck;
    assert_int_equal(nnz_checkpoint_open(path, &ck), NNZ_OK);
    const int64_t step = ck.state.step;
    nnz_checkpoint_close(&ck);
    return step;
}

/* A crash at any step: the checkpoint written there (--checkpoint-every, or at a stop) resumes to the
 * uninterrupted run's final checkpoint byte for byte, the run's last step included (an autosparse
 * checkpoint there already holds w~). */
static void test_train_resume_is_bitwise(void **state) {
    (void)state;
    char dir[256], pa[300], pb[300];
    tu_make_temp_dir(dir, sizeof dir);
    snprintf(pa, sizeof pa, "%s/a.safetensors", dir);
    snprintf(pb, sizeof pb, "%s/b.safetensors", dir);
    for (int kind = NNZ_PRUNE_AUTOSPARSE; kind <= NNZ_PRUNE_GMP; kind++) {
        recorder r1 = {0}, r2 = {0};
        nnz_train_config c;
        nnz_train_result res;
        prune_config(&c, &r1, (nnz_prune_kind)kind, pa);
        assert_int_equal(nnz_train(&c, &res), NNZ_OK);
        assert_int_equal(res.steps, 10);
        assert_int_equal(res.prune, kind);
        if (kind == NNZ_PRUNE_GMP) assert_true(fabs(res.sparsity - 0.8) < 1e-3);
        /* FLOPs: below dense, training above inference's fraction (dense early steps, GA's dense wgrad) */
        const double ft = res.train_flops / res.train_flops_dense, fi = res.infer_flops / res.infer_flops_dense;
        assert_true(ft < 1.0 && fi < 1.0 && ft > fi);
        if (kind != NNZ_PRUNE_GMP) assert_true(res.sparsity > 0.01 && res.sparsity < 0.999);
        /* stopped at step 7 (a crash after --checkpoint-every's save there), then at the last step: */
        static const int64_t stops[] = {7, 10};
        for (int i = 0; i < 2; i++) {
            prune_config(&c, &r2, (nnz_prune_kind)kind, pb);
            c.checkpoint_every = 2; /* saves at steps 2, 4, 6 besides the epoch ends: they must not disturb the run */
            r2.stop_at = stops[i];
            assert_int_equal(nnz_train(&c, &res), NNZ_ERR_INTERRUPTED);
            assert_int_equal(checkpoint_step(pb), stops[i]);
            nnz_train_config_init(&c);
            c.resume_path = pb;
            c.out_path = pb;
            c.epochs = 0;
            c.test_limit = 32;
            c.threads = 2;
            c.log_every = 1;
            c.checkpoint_every = 3;
            c.progress = record;
            c.progress_user = &r2;
            r2.stop_at = 0;
            assert_int_equal(nnz_train(&c, &res), NNZ_OK);
            assert_int_equal(res.prune, kind);
            assert_int_equal(res.steps, 10);
            assert_memory_equal(r1.loss, r2.loss, 10 * sizeof(float));
            assert_int_equal(assert_files_equal(pa, pb), kind == NNZ_PRUNE_AUTOSPARSE ? 4 : 0); /* conv2, fc1 and their momentum */
            /* byte for byte: resuming a finished autosparse run must not threshold its w~ again */
            assert_bytes_equal(pa, pb);
        }
        /* the final autosparse checkpoint holds w~ and loads as a plain model */
        nnz_model *m = NULL;
        assert_int_equal(nnz_checkpoint_load_model(pa, &m), NNZ_OK);
        const nnz_param *w = &m->params[nnz_model_find_param(m, "conv2.weight")];
        int64_t zeros = 0;
        for (int64_t i = 0; i < nnz_tensor_numel(&w->value); i++) zeros += nnz_tensor_f32(&w->value)[i] == 0.0f;
        assert_true(zeros > 0);
        nnz_model_free(m);
        remove(pa);
        remove(pb);
    }
    rmdir(dir);
}

static void test_config_prune_round_trip(void **state) {
    (void)state;
    nnz_train_config a, b;
    nnz_train_config_init(&a);
    assert_int_equal(a.prune.kind, NNZ_PRUNE_NONE);
    a.prune.kind = NNZ_PRUNE_AUTOSPARSE;
    a.prune.alpha0 = 0.25f;
    a.prune.anneal = NNZ_ANNEAL_SIGMOID;
    a.prune.alpha_off_epoch = 9;
    a.prune.threshold_init = -7.5f;
    a.prune.threshold_decay = 1e-4f;
    a.prune.per_channel = true;
    a.prune.target_sparsity = 0.6f;
    a.prune.gmp_begin = 0.1f;
    a.prune.gmp_end = 0.5f;
    a.prune.gmp_every = 13;
    a.prune.bn_recalibrate = 777;
    char *json = NULL, model[64];
    assert_int_equal(nnz_train_config_to_json(&a, &json), NNZ_OK);
    nnz_train_config_init(&b);
    assert_int_equal(nnz_train_config_from_json(json, &b, model, sizeof model), NNZ_OK);
    assert_memory_equal(&a.prune, &b.prune, sizeof a.prune);
    /* a checkpoint from before the recalibration (no key): its runs kept the running averages */
    char *at = strstr(json, ",\"bn_recalibrate\":777");
    assert_non_null(at);
    memmove(at, at + strlen(",\"bn_recalibrate\":777"), strlen(at + strlen(",\"bn_recalibrate\":777")) + 1);
    assert_int_equal(nnz_train_config_from_json(json, &b, model, sizeof model), NNZ_OK);
    assert_int_equal(b.prune.bn_recalibrate, 0);
    free(json);
    /* no prune section (a checkpoint from before pruning): none */
    a.prune.kind = NNZ_PRUNE_NONE;
    assert_int_equal(nnz_train_config_to_json(&a, &json), NNZ_OK);
    assert_null(strstr(json, "prune"));
    b.prune.kind = NNZ_PRUNE_GMP;
    assert_int_equal(nnz_train_config_from_json(json, &b, model, sizeof model), NNZ_OK);
    assert_int_equal(b.prune.kind, NNZ_PRUNE_NONE);
    free(json);
}

/* ---- the batch norms' statistics at the end of a pruned run ----
 * mbv2-tiny (batch norms after every conv), 4 steps of 16 images, then the checkpoint's model
 * runs one training-mode forward with momentum 1 over the first images in file order: its running
 * statistics become exactly that batch's statistics. With --bn-recalibrate 16 (one batch) the
 * checkpoint must already hold them (within the summation-order tolerance: the run and this forward
 * may run the pruned layers on different kernels); with 32 (two batches of 16) the first batch
 * norm's running mean must be the mean over all 32 images (the batches weighted by their images,
 * not an exponential average); with 0, 4 steps of
 * momentum 0.1 from the initial statistics leave them far away. The batch norms' momentum is back
 * at 0.1 in the saved architecture. */
static float *bn_stats(const nnz_model *m, int *count) { /* every running mean, then every running var */
    float *v = NULL;
    int n = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < m->n_nodes; i++) {
            const nnz_node *nd = &m->nodes[i];
            if (nd->op != NNZ_OP_BATCHNORM) continue;
            for (int k = 0; k < 2; k++) {
                const nnz_param *p = &m->params[k ? nd->running_var : nd->running_mean];
                const int64_t e = nnz_tensor_numel(&p->value);
                if (pass) memcpy(v + n, nnz_tensor_f32(&p->value), (size_t)e * sizeof(float));
                n += (int)e;
            }
            if (pass) assert_true(fabsf(nd->momentum - 0.1f) < 1e-7f);
        }
        if (!pass) {
            v = malloc((size_t)n * sizeof(float));
            assert_non_null(v);
            n = 0;
        }
    }
    *count = n;
    return v;
}

/* the running statistics after one momentum-1 training forward of m over the first `images` images */
static float *batch_stats(nnz_model *m, int images, int *count) {
    nnz_dataset d;
    assert_int_equal(nnz_dataset_load_first(NNZ_DEFAULT_DATA_DIR, true, images, &d), NNZ_OK);
    nnz_batcher b;
    assert_int_equal(nnz_batcher_init(&b, &d, images, images, false, false, 1), NNZ_OK);
    float *x = malloc((size_t)images * 28 * 28 * sizeof(float));
    uint8_t *y = malloc((size_t)images);
    assert_true(x && y);
    assert_int_equal(nnz_batcher_fill(&b, 0, x, y), images);
    for (int i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].op == NNZ_OP_BATCHNORM) m->nodes[i].momentum = 1.0f;
    assert_int_equal(nnz_model_forward(m, x, images, true), NNZ_OK);
    for (int i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].op == NNZ_OP_BATCHNORM) m->nodes[i].momentum = 0.1f;
    free(x), free(y);
    nnz_batcher_free(&b);
    nnz_dataset_free(&d);
    return bn_stats(m, count);
}

/* the largest |a - b| over the first n entries, relative to the largest |b| */
static double rel_diff(const float *a, const float *b, int n) {
    double d = 0, big = 0;
    for (int i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        big = fmax(big, fabs((double)b[i]));
    }
    return d / fmax(big, 1e-30);
}

static void test_bn_recalibrated_at_the_end(void **state) {
    (void)state;
    char dir[256], path[300];
    tu_make_temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/bn.safetensors", dir);
    static const struct { nnz_prune_kind kind; int images; } runs[] = {
        {NNZ_PRUNE_AUTOSPARSE, 16}, {NNZ_PRUNE_GMP, 16}, {NNZ_PRUNE_GMP, 32}, {NNZ_PRUNE_GMP, 0}};
    for (size_t r = 0; r < sizeof runs / sizeof *runs; r++) {
        nnz_train_config c;
        nnz_train_config_init(&c);
        c.model = "mbv2-tiny";
        c.epochs = 1;
        c.batch = 16;
        c.train_limit = 64;
        c.test_limit = 16;
        c.seed = 3;
        c.threads = 2;
        c.out_path = path;
        c.prune.kind = runs[r].kind;
        c.prune.threshold_init = -4.0f;
        c.prune.target_sparsity = 0.5f;
        c.prune.gmp_every = 1;
        c.prune.bn_recalibrate = runs[r].images;
        nnz_train_result res;
        assert_int_equal(nnz_train(&c, &res), NNZ_OK);
        assert_true(res.sparsity > 0.05);
        nnz_model *m = NULL;
        assert_int_equal(nnz_checkpoint_load_model(path, &m), NNZ_OK);
        int n = 0, n2 = 0;
        float *saved = bn_stats(m, &n);
        float *want = batch_stats(m, runs[r].images ? runs[r].images : 16, &n2);
        assert_int_equal(n, n2);
        const double mean_diff = rel_diff(saved, want, n / 2), var_diff = rel_diff(saved + n / 2, want + n / 2, n / 2);
        if (runs[r].images == 16) {
            assert_true(mean_diff < 1e-5);
            assert_true(var_diff < 1e-5);
        } else if (runs[r].images == 32) {
            /* the first batch norm's input does not depend on batch statistics: its mean over two batches
               of 16 is the mean over the 32 images (deeper ones see each batch normalized by its own
               statistics, and the variances are the mean of two batches' variances) */
            int first_c = 0;
            for (int i = 0; i < m->n_nodes && !first_c; i++)
                if (m->nodes[i].op == NNZ_OP_BATCHNORM) first_c = m->nodes[i].c;
            assert_true(first_c > 0);
            assert_true(rel_diff(saved, want, first_c) < 1e-5);
            assert_true(var_diff > 1e-4);
        } else {
            assert_true(mean_diff > 1e-2 || var_diff > 1e-2);
        }
        free(saved), free(want);
        nnz_model_free(m);
        remove(path);
    }
    rmdir(dir);
}

/* ---- sparse execution of autosparse training steps ----
 * lenet5 with per-layer thresholds at the 90th percentile of |w| in conv2 and fc1 (90% of w~ is
 * zero), one model with m->train_sparse (the layers replanned from w~ each step, forward and
 * backward-data on the sparse kernels; the weight gradient dense while alpha > 0, SDDMM at alpha
 * = 0), its twin on the dense kernels. Two SGD steps (the zeros move between them) must give the
 * same loss and the same gradient of every parameter (weights, biases, thresholds). Tolerance:
 * both sum the same fp32 products in different orders (conv_direct: the twin's convolutions do
 * not run Winograd, whose rounding is not that of the direct sums); every gradient entry within
 * 1e-5 of its tensor's largest magnitude (the loss within 1e-5 relative). */
static int cmp_float(const void *x, const void *y) {
    const float a = *(const float *)x, b = *(const float *)y;
    return (a > b) - (a < b);
}
static float percentile_abs(const float *W, int64_t n, double q) {
    float *a = malloc((size_t)n * sizeof(float));
    assert_non_null(a);
    for (int64_t i = 0; i < n; i++) a[i] = fabsf(W[i]);
    qsort(a, (size_t)n, sizeof(float), cmp_float);
    const float v = a[(int64_t)(q * (double)(n - 1))];
    free(a);
    return v;
}

typedef struct {
    nnz_model *m;
    nnz_str st;
    nnz_optimizer opt;
} str_run;

/* tau[l]: the 90th percentile of |w| of STR layer l of lenet5 (seed 5), computed once */
static void str_run_init(str_run *r, bool sparse, const char *format, float *tau) {
    memset(r, 0, sizeof *r);
    assert_int_equal(nnz_model_from_zoo("lenet5", 28, 28, 1, 10, 5, &r->m), NNZ_OK);
    r->m->conv_direct = true;
    assert_int_equal(nnz_str_init(&r->st, r->m, false, -10.0f, 1e-3f), NNZ_OK);
    assert_true(r->st.n == 2);
    for (int l = 0; l < r->st.n; l++) { /* 90% of each layer below its threshold */
        const nnz_param *w = &r->m->params[r->st.weight[l]];
        if (tau[l] == 0) tau[l] = percentile_abs(nnz_tensor_f32(&w->value), nnz_tensor_numel(&w->value), 0.9);
        nnz_tensor_f32(&r->m->params[r->st.threshold[l]].value)[0] = s_for(tau[l]);
    }
    assert_int_equal(nnz_model_set_sparse_format(r->m, format), NNZ_OK);
    r->m->train_sparse = sparse;
    assert_int_equal(nnz_optimizer_init(&r->opt, r->m, NNZ_OPT_SGD, 0.9f, false, 5e-4f, false), NNZ_OK);
    assert_int_equal(nnz_model_reserve(r->m, 32), NNZ_OK);
}

static float str_run_step(str_run *r, const float *x, const uint8_t *y, int n, float alpha, float *dlogits) {
    nnz_str_apply(&r->st, r->m);
    r->m->dense_wgrad = alpha > 0;
    assert_int_equal(nnz_model_forward(r->m, x, n, true), NNZ_OK);
    int correct = 0;
    const float loss = nnz_softmax_xent(n, 10, nnz_model_output(r->m), y, 0.0f, dlogits, &correct);
    nnz_model_zero_grad(r->m);
    assert_int_equal(nnz_model_backward(r->m, x, n, dlogits), NNZ_OK);
    nnz_str_backward(&r->st, r->m, alpha);
    return loss;
}

static void sparse_step_case(const char *format, float alpha, float *tau) {
    const int n = 16;
    float *x = malloc(sizeof(float) * n * 784), *dl = malloc(sizeof(float) * n * 10);
    uint8_t y[16];
    assert_non_null(x);
    assert_non_null(dl);
    tu_fill_uniform(x, n * 784, -1, 2, 21);
    for (int i = 0; i < n; i++) y[i] = (uint8_t)(i * 7 % 10);
    str_run sp, de;
    str_run_init(&sp, true, format, tau);
    str_run_init(&de, false, format, tau);
    const bool expect_sparse = strcmp(format, "auto") != 0 || nnz_sparse_kernels_simd();
    for (int step = 0; step < 2; step++) {
        const float l_sp = str_run_step(&sp, x, y, n, alpha, dl);
        const float l_de = str_run_step(&de, x, y, n, alpha, dl);
        if (!(fabsf(l_sp - l_de) <= 1e-5f * fabsf(l_de)))
            fail_msg("%s alpha %g step %d: loss %.9g sparse vs %.9g dense", format, (double)alpha, step, (double)l_sp,
                     (double)l_de);
        for (int p = 0; p < sp.m->n_params; p++) {
            const nnz_param *a = &sp.m->params[p], *b = &de.m->params[p];
            const int64_t cnt = nnz_tensor_numel(&a->value);
            double scale = 0, worst = 0;
            for (int64_t k = 0; k < cnt; k++) scale = fmax(scale, fabs((double)b->grad[k]));
            for (int64_t k = 0; k < cnt; k++) {
                const double d = fabs((double)a->grad[k] - (double)b->grad[k]);
                if (!(d <= worst)) worst = d;
            }
            if (!(worst <= 1e-5 * scale))
                fail_msg("%s alpha %g step %d: %s gradient differs by %.3g (largest %.3g)", format, (double)alpha, step,
                         a->name, worst, scale);
        }
        /* the layers really ran sparse (and the twin did not), and replanned from this step's w~ */
        for (int l = 0; l < sp.st.n; l++) {
            const int node = sp.st.node[l];
            const nnz_node_exec *e = &sp.m->exec[node];
            if (expect_sparse) {
                assert_int_equal(e->sparse_forwards, step + 1);
                assert_int_equal(e->sparse_backwards, step + 1);
                assert_non_null(sp.m->sparse[node]);
                int rows, cols;
                assert_true(nnz_node_weight_matrix(&sp.m->nodes[node], &rows, &cols));
                /* the matrix holds the nonzeros of the w~ it ran with: count them in the master */
                const float *M = sp.st.master + sp.st.offset[l];
                const float tau = 1.0f / (1.0f + expf(-nnz_tensor_f32(&sp.m->params[sp.st.threshold[l]].value)[0]));
                int64_t kept = 0;
                for (int64_t k = 0; k < (int64_t)rows * cols; k++) kept += fabsf(M[k]) > tau;
                const nnz_spmat *A = &sp.m->sparse[node]->mat;
                if (nnz_spmat_is_csr(A)) assert_int_equal(A->nblocks, kept);
                else assert_true(nnz_spmat_val_count(A) >= kept && A->nblocks > 0);
                assert_true(sp.m->sparse_plan[node].r > 0);
                assert_true(sp.m->sparse_plan[node].density < 0.2);
            }
            assert_int_equal(de.m->exec[node].sparse_forwards, 0);
            assert_int_equal(de.m->exec[node].sparse_backwards, 0);
        }
        nnz_optimizer_step(&sp.opt, sp.m, 0.05f);
        nnz_optimizer_step(&de.opt, de.m, 0.05f);
    }
    str_run *runs[] = {&sp, &de};
    for (int i = 0; i < 2; i++) {
        nnz_optimizer_free(&runs[i]->opt);
        nnz_str_free(&runs[i]->st);
        nnz_model_free(runs[i]->m);
    }
    free(x);
    free(dl);
}

static void test_sparse_training_step(void **state) {
    (void)state;
    float tau[2] = {0, 0};
    sparse_step_case("auto", 0.5f, tau);    /* Gradient Annealing: dense weight gradient */
    sparse_step_case("auto", 0.0f, tau);    /* STR: SDDMM at w~'s nonzeros */
    sparse_step_case("csr", 0.0f, tau);
    sparse_step_case("bsr:4x4", 0.5f, tau);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_matches_hand_thresholded),
        cmocka_unit_test(test_grads_str),
        cmocka_unit_test(test_grads_annealed),
        cmocka_unit_test(test_threshold_decay_and_optimizer),
        cmocka_unit_test(test_anneal_schedule),
        cmocka_unit_test(test_gmp_schedule_and_zeros),
        cmocka_unit_test(test_flops),
        cmocka_unit_test(test_train_resume_is_bitwise),
        cmocka_unit_test(test_config_prune_round_trip),
        cmocka_unit_test(test_bn_recalibrated_at_the_end),
        cmocka_unit_test(test_sparse_training_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
