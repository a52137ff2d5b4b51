/* Fused paths against the unfused composition of the same layers, on every ISA path:
 *  - batch norm + relu/relu6 (train forward, eval forward, backward with the mask read
 *    from the fused output; accumulate and overwrite): the same arithmetic, so equal
 *    to the last bit;
 *  - the conv epilogue (eval batch norm + activation applied by the conv) on the 1x1
 *    GEMM, depthwise and im2col paths: within GEMM rounding (1e-5 of the largest output;
 *    the 1x1 GEMM runs in row blocks, which may round differently), exact for depthwise;
 *  - the overwrite variants of the backward functions (conv on all paths, linear,
 *    relu, relu6): dinp holding NaN beforehand equals accumulating into zeros, exactly;
 *  - whole zoo models: the fused plan (default) against keep_activations (no fusion):
 *    train-mode logits and every parameter gradient equal to the last bit, eval logits
 *    within GEMM rounding; mbv2-tiny's training forward defers thirteen batch norms into the
 *    depthwise and 1x1 convs after them (the conv applies the norm as it reads its input), and its
 *    backward hands nineteen batch norms' data gradients to the 1x1 and depthwise convs before
 *    them block by block (never stored).
 * Shapes are odd (channel tails for every vector width, more than one 256-channel tile). */
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "nn/nn.h"

static void fill_nan(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = NAN;
}

static void act_forward(nnz_op act, int64_t n, float *x) {
    if (act == NNZ_OP_RELU) nnz_relu_forward(n, x, x);
    else if (act == NNZ_OP_RELU6) nnz_relu6_forward(n, x, x);
}

/* ---------------- batch norm + activation ---------------- */

static void bn_act_case(int M, int C, nnz_op act) {
    const size_t n = (size_t)M * C;
    float *x = tu_falloc(n), *dy = tu_falloc(n), *gamma = tu_falloc(C), *beta = tu_falloc(C);
    float *rm1 = tu_falloc(C), *rv1 = tu_falloc(C), *rm2 = tu_falloc(C), *rv2 = tu_falloc(C);
    float *y1 = tu_falloc(n), *y2 = tu_falloc(n), *sm1 = tu_falloc(C), *si1 = tu_falloc(C), *sm2 = tu_falloc(C), *si2 = tu_falloc(C);
    float *d1 = tu_falloc(n), *d2 = tu_falloc(n), *tmp = tu_falloc(n);
    float *dg1 = tu_falloc(C), *db1 = tu_falloc(C), *dg2 = tu_falloc(C), *db2 = tu_falloc(C);
    tu_fill_uniform(x, (int64_t)n, -2.0f, 3.0f, 1);
    tu_fill_uniform(dy, (int64_t)n, -1.0f, 1.0f, 2);
    tu_fill_uniform(gamma, C, 0.5f, 4.0f, 3); /* large gamma: many outputs above 6 */
    tu_fill_uniform(beta, C, -1.0f, 2.0f, 4);
    tu_fill_uniform(rm1, C, -0.5f, 0.5f, 5);
    tu_fill_uniform(rv1, C, 0.5f, 2.0f, 6);
    memcpy(rm2, rm1, C * sizeof(float));
    memcpy(rv2, rv1, C * sizeof(float));

    /* train forward */
    fill_nan(y1, n);
    nnz_batchnorm_forward_train_act(M, C, x, gamma, beta, rm1, rv1, 0.1f, 1e-5f, act, y1, sm1, si1);
    nnz_batchnorm_forward_train(M, C, x, gamma, beta, rm2, rv2, 0.1f, 1e-5f, y2, sm2, si2);
    act_forward(act, (int64_t)n, y2);
    assert_memory_equal(y1, y2, n * sizeof(float));
    assert_memory_equal(rm1, rm2, C * sizeof(float));
    assert_memory_equal(rv1, rv2, C * sizeof(float));
    assert_memory_equal(sm1, sm2, C * sizeof(float));
    assert_memory_equal(si1, si2, C * sizeof(float));
    if (act == NNZ_OP_RELU6) { /* the mask's edges are exercised: exact 0 and exact 6 occur */
        int zeros = 0, sixes = 0;
        for (size_t i = 0; i < n; i++) zeros += y1[i] == 0.0f, sixes += y1[i] == 6.0f;
        assert_true(zeros > 0 && sixes > 0);
    }

    /* backward: fused (mask from y1) vs activation backward into zeros, then batch norm */
    memset(tmp, 0, n * sizeof(float));
    if (act == NNZ_OP_RELU) nnz_relu_backward(n, y1, dy, tmp);
    else if (act == NNZ_OP_RELU6) nnz_relu6_backward(n, y1, dy, tmp);
    else memcpy(tmp, dy, n * sizeof(float));
    for (int accumulate = 0; accumulate < 2; accumulate++) {
        tu_fill_uniform(d2, (int64_t)n, -1.0f, 1.0f, 7);
        if (accumulate) memcpy(d1, d2, n * sizeof(float));
        else fill_nan(d1, n), memset(d2, 0, n * sizeof(float));
        tu_fill_uniform(dg1, C, -1.0f, 1.0f, 8);
        tu_fill_uniform(db1, C, -1.0f, 1.0f, 9);
        memcpy(dg2, dg1, C * sizeof(float));
        memcpy(db2, db1, C * sizeof(float));
        nnz_batchnorm_backward_act(M, C, x, act, gamma, beta, sm1, si1, dy, d1, accumulate, dg1, db1);
        nnz_batchnorm_backward(M, C, x, gamma, sm1, si1, tmp, d2, dg2, db2);
        /* d2 was built by adding into zeros, where -0 becomes +0 (M = 1 gives exact zeros) */
        tu_assert_same_values(d1, d2, (int64_t)n);
        assert_memory_equal(dg1, dg2, C * sizeof(float));
        assert_memory_equal(db1, db2, C * sizeof(float));
    }

    /* eval forward */
    fill_nan(y1, n);
    nnz_batchnorm_forward_eval_act(M, C, x, gamma, beta, rm1, rv1, 1e-5f, act, y1);
    nnz_batchnorm_forward_eval(M, C, x, gamma, beta, rm1, rv1, 1e-5f, y2);
    act_forward(act, (int64_t)n, y2);
    assert_memory_equal(y1, y2, n * sizeof(float));

    free(x), free(dy), free(gamma), free(beta), free(rm1), free(rv1), free(rm2), free(rv2), free(y1), free(y2);
    free(sm1), free(si1), free(sm2), free(si2), free(d1), free(d2), free(tmp), free(dg1), free(db1), free(dg2);
    free(db2);
}

static void bn_act_isa(nnz_isa isa, void *ctx) {
    (void)isa, (void)ctx;
    static const int shapes[][2] = {{531, 19}, {37, 300}, {1024, 16}, {1, 5}};
    static const nnz_op acts[] = {NNZ_OP_IDENTITY, NNZ_OP_RELU, NNZ_OP_RELU6};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int a = 0; a < 3; a++) {
            if (shapes[s][0] == 1 && acts[a] == NNZ_OP_RELU6) continue; /* M = 1: all outputs are beta */
            bn_act_case(shapes[s][0], shapes[s][1], acts[a]);
        }
}

static void test_batchnorm_act_fused(void **state) {
    (void)state;
    tu_for_each_isa(bn_act_isa, NULL);
}

/* ---------------- conv epilogue ---------------- */

typedef struct {
    int N, H, W, IC, OC, K, stride, pad, groups;
    bool bias;
} conv_case;

static void conv_epilogue_case(const conv_case *cc, nnz_op act, bool with_bn) {
    nnz_conv_shape s;
    assert_int_equal(nnz_conv_shape_init(&s, cc->N, cc->H, cc->W, cc->IC, cc->OC, cc->K, cc->K, cc->stride, cc->pad,
                                         cc->groups),
                     NNZ_OK);
    const size_t in_n = (size_t)s.N * s.H * s.W * s.IC, out_n = (size_t)s.N * s.OH * s.OW * s.OC;
    const size_t w_n = (size_t)s.OC * s.KH * s.KW * (s.IC / s.groups);
    float *inp = tu_falloc(in_n), *w = tu_falloc(w_n), *b = tu_falloc(s.OC), *scratch = tu_falloc(nnz_conv2d_scratch_floats(&s));
    float *o1 = tu_falloc(out_n), *o2 = tu_falloc(out_n), *o3 = tu_falloc(out_n);
    float *gamma = tu_falloc(s.OC), *beta = tu_falloc(s.OC), *rm = tu_falloc(s.OC), *rv = tu_falloc(s.OC), *scale = tu_falloc(s.OC);
    tu_fill_uniform(inp, (int64_t)in_n, -1.0f, 1.0f, 11);
    tu_fill_uniform(w, (int64_t)w_n, -1.0f, 1.0f, 12);
    tu_fill_uniform(b, s.OC, -1.0f, 1.0f, 13);
    tu_fill_uniform(gamma, s.OC, 0.5f, 4.0f, 14);
    tu_fill_uniform(beta, s.OC, -1.0f, 2.0f, 15);
    tu_fill_uniform(rm, s.OC, -0.5f, 0.5f, 16);
    tu_fill_uniform(rv, s.OC, 0.1f, 1.0f, 17);
    const float *bias = cc->bias ? b : NULL;

    nnz_epilogue ep = {.lo = -INFINITY, .hi = INFINITY};
    if (with_bn) {
        nnz_batchnorm_eval_coeffs(s.OC, gamma, rv, 1e-5f, scale);
        ep.sub = rm, ep.mul = scale, ep.add = beta;
    }
    if (act != NNZ_OP_IDENTITY) ep.lo = 0.0f, ep.hi = act == NNZ_OP_RELU6 ? 6.0f : INFINITY;
    fill_nan(o1, out_n);
    nnz_conv2d_forward_ep(&s, inp, w, bias, &ep, o1, scratch);

    nnz_conv2d_forward(&s, inp, w, bias, o2, scratch);
    const int64_t rows = (int64_t)s.N * s.OH * s.OW;
    if (with_bn) nnz_batchnorm_forward_eval_act(rows, s.OC, o2, gamma, beta, rm, rv, 1e-5f, act, o3);
    else memcpy(o3, o2, out_n * sizeof(float)), act_forward(act, (int64_t)out_n, o3);

    double mx = 0, err = 0;
    for (size_t i = 0; i < out_n; i++) {
        mx = fmax(mx, fabs((double)o3[i]));
        double d = fabs((double)o1[i] - (double)o3[i]);
        err = d <= err ? err : (isnan(d) ? INFINITY : d);
    }
    const bool exact = s.groups == s.IC && s.groups > 1; /* depthwise: same kernel, the epilogue per row */
    if (exact ? err != 0.0 : !(err <= 1e-5 * mx))
        fail_msg("conv epilogue isa=%s %dx%d IC=%d OC=%d k=%d s=%d g=%d bn=%d act=%s: error %g (max %g)",
                 nnz_isa_name(nnz_isa_active()), s.H, s.W, s.IC, s.OC, s.KH, s.stride, s.groups, with_bn,
                 nnz_op_name(act), err, mx);
    free(inp), free(w), free(b), free(scratch), free(o1), free(o2), free(o3), free(gamma), free(beta), free(rm);
    free(rv), free(scale);
}

static const conv_case conv_cases[] = {
    {3, 7, 9, 19, 37, 1, 1, 0, 1, false},   /* 1x1 GEMM path, odd everything */
    {2, 30, 30, 5, 300, 1, 1, 0, 1, true},  /* 1x1, many row blocks, more than 256 channels */
    {3, 9, 7, 19, 19, 3, 2, 1, 19, false},  /* depthwise, stride 2, channel tail */
    {2, 8, 8, 33, 33, 3, 1, 1, 33, true},   /* depthwise with bias */
    {2, 12, 21, 40, 40, 3, 1, 1, 40, false}, /* depthwise stride 1 wide enough for 8-pixel interior runs */
    {2, 9, 11, 17, 17, 5, 1, 2, 17, true},  /* depthwise 5x5: the generic window kernel */
    {2, 11, 10, 3, 21, 5, 1, 2, 1, true},   /* im2col */
    {2, 9, 9, 6, 10, 3, 2, 1, 2, false},    /* grouped */
};

static void conv_epilogue_isa(nnz_isa isa, void *ctx) {
    (void)isa, (void)ctx;
    static const nnz_op acts[] = {NNZ_OP_IDENTITY, NNZ_OP_RELU, NNZ_OP_RELU6};
    for (size_t c = 0; c < sizeof conv_cases / sizeof conv_cases[0]; c++)
        for (int a = 0; a < 3; a++)
            for (int bn = 0; bn < 2; bn++) conv_epilogue_case(&conv_cases[c], acts[a], bn);
}

static void test_conv_epilogue(void **state) {
    (void)state;
    tu_for_each_isa(conv_epilogue_isa, NULL);
}

/* ---------------- overwrite variants of the backward functions ---------------- */

static void conv_overwrite_case(const conv_case *cc) {
    nnz_conv_shape s;
    assert_int_equal(nnz_conv_shape_init(&s, cc->N, cc->H, cc->W, cc->IC, cc->OC, cc->K, cc->K, cc->stride, cc->pad,
                                         cc->groups),
                     NNZ_OK);
    const size_t in_n = (size_t)s.N * s.H * s.W * s.IC, out_n = (size_t)s.N * s.OH * s.OW * s.OC;
    const size_t w_n = (size_t)s.OC * s.KH * s.KW * (s.IC / s.groups);
    float *inp = tu_falloc(in_n), *w = tu_falloc(w_n), *dout = tu_falloc(out_n), *scratch = tu_falloc(nnz_conv2d_scratch_floats(&s));
    float *d1 = tu_falloc(in_n), *d2 = tu_falloc(in_n), *dw1 = tu_falloc(w_n), *dw2 = tu_falloc(w_n);
    tu_fill_uniform(inp, (int64_t)in_n, -1.0f, 1.0f, 21);
    tu_fill_uniform(w, (int64_t)w_n, -1.0f, 1.0f, 22);
    tu_fill_uniform(dout, (int64_t)out_n, -1.0f, 1.0f, 23);
    fill_nan(d1, in_n);
    memset(d2, 0, in_n * sizeof(float));
    memset(dw1, 0, w_n * sizeof(float));
    memset(dw2, 0, w_n * sizeof(float));
    nnz_conv2d_backward_ex(&s, inp, w, dout, d1, false, dw1, NULL, scratch);
    nnz_conv2d_backward(&s, inp, w, dout, d2, dw2, NULL, scratch);
    assert_memory_equal(d1, d2, in_n * sizeof(float));
    assert_memory_equal(dw1, dw2, w_n * sizeof(float));
    free(inp), free(w), free(dout), free(scratch), free(d1), free(d2), free(dw1), free(dw2);
}

static void overwrite_isa(nnz_isa isa, void *ctx) {
    (void)isa, (void)ctx;
    for (size_t c = 0; c < sizeof conv_cases / sizeof conv_cases[0]; c++) conv_overwrite_case(&conv_cases[c]);

    enum { NL = 7, IN = 29, OUT = 13 };
    float inp[NL * IN], w[OUT * IN], dout[NL * OUT], d1[NL * IN], d2[NL * IN], dw1[OUT * IN], dw2[OUT * IN];
    tu_fill_uniform(inp, NL * IN, -1, 1, 31);
    tu_fill_uniform(w, OUT * IN, -1, 1, 32);
    tu_fill_uniform(dout, NL * OUT, -1, 1, 33);
    fill_nan(d1, NL * IN);
    memset(d2, 0, sizeof d2);
    memset(dw1, 0, sizeof dw1);
    memset(dw2, 0, sizeof dw2);
    nnz_linear_backward_ex(NNZ_F32, NL, IN, OUT, inp, w, dout, d1, false, dw1, NULL);
    nnz_linear_backward(NL, IN, OUT, inp, w, dout, d2, dw2, NULL);
    assert_memory_equal(d1, d2, sizeof d1);
    assert_memory_equal(dw1, dw2, sizeof dw1);

    enum { NE = 70001 }; /* above the parallel threshold, odd */
    float *y = tu_falloc(NE), *g = tu_falloc(NE), *e1 = tu_falloc(NE), *e2 = tu_falloc(NE);
    tu_fill_uniform(y, NE, -2.0f, 8.0f, 41);
    tu_fill_uniform(g, NE, -1.0f, 1.0f, 42);
    for (int i = 0; i < NE; i += 97) y[i] = (i / 97) % 2 ? 6.0f : 0.0f; /* the edges */
    for (int six = 0; six < 2; six++) {
        fill_nan(e1, NE);
        memset(e2, 0, NE * sizeof(float));
        (six ? nnz_relu6_backward_ex : nnz_relu_backward_ex)(NE, y, g, e1, false);
        (six ? nnz_relu6_backward : nnz_relu_backward)(NE, y, g, e2);
        assert_memory_equal(e1, e2, NE * sizeof(float));
    }
    free(y), free(g), free(e1), free(e2);
}

static void test_backward_overwrite(void **state) {
    (void)state;
    tu_for_each_isa(overwrite_isa, NULL);
}

/* ---------------- whole models: fused plan vs keep_activations ---------------- */

enum { MB = 4 };

static bool is_conv_weight(const nnz_model *m, const nnz_param *p) {
    return p->node >= 0 && m->nodes[p->node].op == NNZ_OP_CONV2D && p == &m->params[m->nodes[p->node].weight];
}

static nnz_model *zoo_model(const char *name, bool keep) {
    nnz_model *m;
    if (nnz_model_from_zoo(name, 28, 28, 1, 10, 5, &m) != NNZ_OK) fail_msg("%s: %s", name, nnz_last_error());
    m->keep_activations = keep;
    tu_randomize_batchnorms(m, 50);
    return m;
}

/* batch norms a training forward defers into the conv after them */
static int deferred_bns(const nnz_model *m) {
    int n = 0;
    for (int i = 0; i < m->n_nodes; i++) n += m->exec[i].deferred_to >= 0;
    return n;
}

/* deferred batch norms whose output the last training forward made after all (the conv after it
 * could not apply it) */
static int made_bns(const nnz_model *m) {
    int n = 0;
    for (int i = 0; i < m->n_nodes; i++) n += m->exec[i].deferred_to >= 0 && m->exec[i].deferred_made;
    return n;
}

/* convs whose backward the last backward ran from the batch norm after them, block by block */
static int streamed_convs(const nnz_model *m) {
    int n = 0;
    for (int i = 0; i < m->n_nodes; i++) n += m->exec[i].dout_streamed;
    return n;
}

/* batch norms whose backward sums the last backward took from the conv after them */
static int sums_given_bns(const nnz_model *m) {
    int n = 0;
    for (int i = 0; i < m->n_nodes; i++) n += m->exec[i].grad_sums_given;
    return n;
}

/* batch norms whose backward (and their 1x1 conv's) the last backward took from the depthwise conv
 * after them (expansion_grad.c) */
static int taken_bns(const nnz_model *m) {
    int n = 0;
    for (int i = 0; i < m->n_nodes; i++) n += m->exec[i].grad_taken;
    return n;
}

static void model_case_at(const char *name, nnz_dtype precision, int deferred, int made, int streamed, int sums) {
    nnz_model *a = zoo_model(name, false), *b = zoo_model(name, true);
    a->exact_grad = true; /* bit for bit: not the expansion's backward (test_expansion_grad) */
    assert_int_equal(nnz_model_set_precision(a, precision), NNZ_OK);
    assert_int_equal(nnz_model_set_precision(b, precision), NNZ_OK);
    float *x = tu_falloc((size_t)MB * 784), dl[MB * 10];
    tu_fill_uniform(x, MB * 784, 0.0f, 20.0f, 61); /* large: relu outputs above 6 occur (relu is not relu6) */
    tu_fill_uniform(dl, MB * 10, -1.0f, 1.0f, 62);
    /* eval: folded batch norm, within GEMM rounding */
    assert_int_equal(nnz_model_forward(a, x, MB, false), NNZ_OK);
    assert_int_equal(nnz_model_forward(b, x, MB, false), NNZ_OK);
    double e = tu_max_rel_err(nnz_model_output(a), nnz_model_output(b), MB * 10, 1.0);
    if (!(e <= 1e-5)) fail_msg("%s eval logits: fused vs unfused error %g", name, e);
    /* train: same arithmetic */
    assert_int_equal(nnz_model_forward(a, x, MB, true), NNZ_OK);
    assert_int_equal(nnz_model_forward(b, x, MB, true), NNZ_OK);
    assert_int_equal(deferred_bns(a), deferred);
    assert_int_equal(deferred_bns(b), 0);
    assert_int_equal(made_bns(a), made);
    assert_memory_equal(nnz_model_output(a), nnz_model_output(b), sizeof dl);
    nnz_model_zero_grad(a);
    nnz_model_zero_grad(b);
    assert_int_equal(nnz_model_backward(a, x, MB, dl), NNZ_OK);
    assert_int_equal(nnz_model_backward(b, x, MB, dl), NNZ_OK);
    assert_int_equal(streamed_convs(a), streamed);
    assert_int_equal(streamed_convs(b), 0);
    assert_int_equal(sums_given_bns(a), sums);
    assert_int_equal(sums_given_bns(b), 0);
    assert_int_equal(taken_bns(a), 0);
    for (int i = 0; i < a->n_params; i++) {
        const nnz_param *p = &a->params[i], *q = &b->params[i];
        int64_t n = nnz_tensor_numel(&p->value);
        assert_memory_equal(nnz_tensor_f32(&p->value), nnz_tensor_f32(&q->value), (size_t)n * sizeof(float));
        if (p->grad && memcmp(p->grad, q->grad, (size_t)n * sizeof(float)) != 0)
            fail_msg("%s: gradient of %s differs between the fused and unfused plans", name, p->name);
    }
    free(x);
    nnz_model_free(a);
    nnz_model_free(b);
}

/* Weights changed between two forwards (an optimizer step, a pruning) reach every layer: the
 * weights the convs read in their kernels' layouts are made again at each forward. The model
 * that ran before must give what a fresh model with the same weights gives. */
static void test_weights_changed_between_forwards(void **state) {
    (void)state;
    nnz_model *a = zoo_model("mbv2-tiny", false), *c = zoo_model("mbv2-tiny", false);
    float *x = tu_falloc((size_t)MB * 784);
    tu_fill_uniform(x, MB * 784, 0.0f, 1.0f, 71);
    assert_int_equal(nnz_model_forward(a, x, MB, false), NNZ_OK);
    assert_int_equal(nnz_model_forward(a, x, MB, true), NNZ_OK);
    for (int i = 0; i < a->n_params; i++) {
        nnz_param *p = &a->params[i];
        if (is_conv_weight(a, p)) tu_fill_uniform(nnz_tensor_f32(&p->value), nnz_tensor_numel(&p->value), -0.5f, 0.5f, 80 + (uint64_t)i);
    }
    for (int i = 0; i < a->n_params; i++)
        memcpy(nnz_tensor_f32(&c->params[i].value), nnz_tensor_f32(&a->params[i].value),
               (size_t)nnz_tensor_numel(&a->params[i].value) * sizeof(float));
    for (int train = 0; train < 2; train++) {
        assert_int_equal(nnz_model_forward(a, x, MB, train), NNZ_OK);
        assert_int_equal(nnz_model_forward(c, x, MB, train), NNZ_OK);
        assert_memory_equal(nnz_model_output(a), nnz_model_output(c), MB * 10 * sizeof(float));
    }
    free(x);
    nnz_model_free(a);
    nnz_model_free(c);
}

static void model_case(const char *name, int deferred, int streamed, int sums) {
    model_case_at(name, NNZ_F32, deferred, 0, streamed, sums);
}

static void model_isa(nnz_isa isa, void *ctx) {
    (void)isa, (void)ctx;
    /* deferred: each block's expansion batch norm into its depthwise conv (the stem's also feeds an
     * add), each depthwise conv's batch norm into the projection after it, and the last block's
     * output batch norm into the head (the other blocks' outputs also feed an add or the next
     * add); every 1x1 conv (6 expansions, 6 projections, the head) and every depthwise conv (6) gets
     * its gradient from the batch norm after it; sums: each block's two batch norms before a conv
     * (expansion, depthwise) take their backward sums from that conv's data gradient, and so does
     * the last block's output batch norm from the head's */
    model_case("mbv2-tiny", 13, 19, 13);
    model_case("lenet5", 0, 0, 0);
    model_case("mlp", 0, 0, 0);
    model_case("vgg8", 0, 0, 0); /* 3x3 convs */
}

static void test_models_fused_vs_unfused(void **state) {
    (void)state;
    tu_for_each_isa(model_isa, NULL);
}

/* bf16: the 1x1 convs run the small GEMM over operands rounded to bf16 as it stages them, so every
 * fusion into them applies as in fp32 (nothing made; the same streamed gradients and sums); only
 * the expansion's backward stays fp32-only, and exact_grad turns it off here anyway: the same bits */
static void model_bf16_isa(nnz_isa isa, void *ctx) {
    (void)isa, (void)ctx;
    model_case_at("mbv2-tiny", NNZ_BF16, 13, 0, 19, 13);
}

static void test_models_fused_vs_unfused_bf16(void **state) {
    (void)state;
    tu_for_each_isa(model_bf16_isa, NULL);
    nnz_isa_emulate_bf16_tiles(true); /* the native bf16 route, its AMX tile in plain C */
    model_bf16_isa(nnz_isa_active(), NULL);
    nnz_isa_emulate_bf16_tiles(false);
}

/* The expansion's backward (expansion_grad.c) on mbv2-tiny against the unfused plan: the same
 * gradients up to rounding, in every parameter, with the expansions of blocks 1-3 taken; x also
 * shifted by a large offset, so that the batch norms' inputs have means far from zero (the form
 * subtracts x·W1ᵀ's mean from terms built on x·W1ᵀ). Within 1e-4 of each gradient's largest
 * element (measured: up to 6e-6); a gradient that is zero up to rounding in the unfused plan (the
 * bias of a batch norm whose output feeds only a 1x1 conv and another batch norm: under 1e-6 of the
 * model's largest gradient element) must stay that small. */
static void expansion_case(float x_lo, float x_hi) {
    nnz_model *a = zoo_model("mbv2-tiny", false), *b = zoo_model("mbv2-tiny", true);
    float *x = tu_falloc((size_t)MB * 784), dl[MB * 10];
    tu_fill_uniform(x, MB * 784, x_lo, x_hi, 63);
    tu_fill_uniform(dl, MB * 10, -1.0f, 1.0f, 64);
    assert_int_equal(nnz_model_forward(a, x, MB, true), NNZ_OK);
    assert_int_equal(nnz_model_forward(b, x, MB, true), NNZ_OK);
    nnz_model_zero_grad(a);
    nnz_model_zero_grad(b);
    assert_int_equal(nnz_model_backward(a, x, MB, dl), NNZ_OK);
    assert_int_equal(nnz_model_backward(b, x, MB, dl), NNZ_OK);
    assert_int_equal(taken_bns(a), 3); /* blocks 1-3: expanded, images of 14x14 or more */
    assert_int_equal(taken_bns(b), 0);
    double scale = 0.0; /* the largest gradient element of the model */
    for (int i = 0; i < b->n_params; i++)
        for (int64_t j = 0; b->params[i].grad && j < nnz_tensor_numel(&b->params[i].value); j++)
            scale = fabs(b->params[i].grad[j]) > scale ? fabs(b->params[i].grad[j]) : scale;
    for (int i = 0; i < a->n_params; i++) {
        const nnz_param *p = &a->params[i], *q = &b->params[i];
        if (!p->grad) continue;
        const int64_t n = nnz_tensor_numel(&p->value);
        double big = 0.0, fused = 0.0;
        for (int64_t j = 0; j < n; j++) big = fabs(q->grad[j]) > big ? fabs(q->grad[j]) : big;
        for (int64_t j = 0; j < n; j++) fused = fabs(p->grad[j]) > fused ? fabs(p->grad[j]) : fused;
        if (big < 1e-6 * scale) { /* zero up to rounding (a bias before a 1x1 conv and a batch norm): stays so */
            if (!(fused < 1e-6 * scale))
                fail_msg("x in [%g, %g): gradient of %s: %g in the expansion's backward, %g unfused (of %g)",
                         (double)x_lo, (double)x_hi, p->name, fused, big, scale);
            continue;
        }
        const double e = tu_max_rel_err(p->grad, q->grad, n, big);
        if (!(e <= 1e-4))
            fail_msg("x in [%g, %g): gradient of %s: the expansion's backward off by %g of its largest element",
                     (double)x_lo, (double)x_hi, p->name, e);
    }
    free(x);
    nnz_model_free(a);
    nnz_model_free(b);
}

static void expansion_isa(nnz_isa isa, void *ctx) {
    (void)isa, (void)ctx;
    expansion_case(0.0f, 20.0f);
    expansion_case(300.0f, 340.0f);
}

static void test_expansion_grad(void **state) {
    (void)state;
    tu_for_each_isa(expansion_isa, NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batchnorm_act_fused),
        cmocka_unit_test(test_conv_epilogue),
        cmocka_unit_test(test_backward_overwrite),
        cmocka_unit_test(test_models_fused_vs_unfused),
        cmocka_unit_test(test_models_fused_vs_unfused_bf16),
        cmocka_unit_test(test_expansion_grad),
        cmocka_unit_test(test_weights_changed_between_forwards),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
