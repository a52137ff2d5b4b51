/* conv2d and linear layers: forward against a direct convolution, backward against
 * finite differences, the accumulate (+=) contract, NULL dinp/dbias/bias. */
#include "test_util.h"
#include "kernels/kernels.h"
#include "nn/nn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Forward vs the direct convolution (double accumulation): fp32 sums of <= 250 products
 * of values in [-1,1), so 1e-5 relative to max(|ref|,1). */
#define FWD_TOL 1e-5
/* Finite differences. The loss L = sum(out * R) is linear in each single input, weight or
 * bias element, so the central difference has no truncation error for any step; with
 * h = 0.5 its error is the fp32 rounding of L (|L| <~ 50, ~1e-5) over 2h, and the analytic
 * gradient's own fp32 rounding is smaller. 1e-4 relative to max(|analytic|,1). */
#define FD_STEP 0.5f
#define FD_TOL 1e-4

/* direct convolution, any groups: inp (N,H,W,IC), w (OC,KH,KW,IC/G) -> out (N,OH,OW,OC) */
static void direct_conv(const nnz_conv_shape *s, const float *inp, const float *w, const float *bias, float *out) {
    const int ICg = s->IC / s->groups, OCg = s->OC / s->groups;
    for (int n = 0; n < s->N; n++)
        for (int oh = 0; oh < s->OH; oh++)
            for (int ow = 0; ow < s->OW; ow++)
                for (int o = 0; o < s->OC; o++) {
                    const int c0 = (o / OCg) * ICg;
                    double acc = bias ? bias[o] : 0.0;
                    for (int kh = 0; kh < s->KH; kh++)
                        for (int kw = 0; kw < s->KW; kw++) {
                            int ih = oh * s->stride - s->pad + kh, iw = ow * s->stride - s->pad + kw;
                            if (ih < 0 || ih >= s->H || iw < 0 || iw >= s->W) continue;
                            for (int c = 0; c < ICg; c++)
                                acc += (double)inp[(((size_t)n * s->H + ih) * s->W + iw) * s->IC + c0 + c] *
                                       w[(((size_t)o * s->KH + kh) * s->KW + kw) * ICg + c];
                        }
                    out[(((size_t)n * s->OH + oh) * s->OW + ow) * s->OC + o] = (float)acc;
                }
}

typedef struct {
    const nnz_conv_shape *s;
    float *inp, *w, *bias, *out, *scratch;
    const float *R;
    size_t out_n;
} conv_ctx;

static double conv_loss(conv_ctx *c) {
    nnz_conv2d_forward(c->s, c->inp, c->w, c->bias, c->out, c->scratch);
    double L = 0;
    for (size_t i = 0; i < c->out_n; i++) L += (double)c->out[i] * c->R[i];
    return L;
}

/* central differences of conv_loss over every element of x, compared with grad */
static void fd_check(conv_ctx *c, float *x, size_t n, const float *grad, const char *what) {
    for (size_t i = 0; i < n; i++) {
        float keep = x[i];
        x[i] = keep + FD_STEP;
        double lp = conv_loss(c);
        x[i] = keep - FD_STEP;
        double lm = conv_loss(c);
        x[i] = keep;
        double fd = (lp - lm) / (2.0 * FD_STEP), an = grad[i];
        double err = fabs(fd - an) / (fabs(an) > 1 ? fabs(an) : 1);
        if (!(err <= FD_TOL))
            fail_msg("%s[%zu]: analytic %g, finite difference %g (N=%d H=%d W=%d IC=%d OC=%d k=%d s=%d p=%d g=%d)",
                     what, i, an, fd, c->s->N, c->s->H, c->s->W, c->s->IC, c->s->OC, c->s->KH, c->s->stride,
                     c->s->pad, c->s->groups);
    }
}

static void check_conv(int N, int H, int W, int IC, int OC, int K, int stride, int pad, int groups, bool has_bias) {
    nnz_conv_shape s;
    assert_int_equal(nnz_conv_shape_init(&s, N, H, W, IC, OC, K, K, stride, pad, groups), NNZ_OK);
    size_t in_n = (size_t)N * H * W * IC, out_n = (size_t)N * s.OH * s.OW * OC;
    size_t w_n = (size_t)OC * K * K * (IC / groups);
    float *inp = tu_falloc(in_n), *w = tu_falloc(w_n), *bias = has_bias ? tu_falloc(OC) : NULL, *out = tu_falloc(out_n);
    float *want = tu_falloc(out_n), *R = tu_falloc(out_n), *scratch = tu_falloc(nnz_conv2d_scratch_floats(&s));
    float *dinp = tu_falloc(in_n), *dw = tu_falloc(w_n), *db = tu_falloc(OC);
    tu_fill_uniform(inp, (int64_t)in_n, -1, 1, 1);
    tu_fill_uniform(w, (int64_t)w_n, -1, 1, 2);
    if (bias) tu_fill_uniform(bias, OC, -1, 1, 3);
    tu_fill_uniform(R, (int64_t)out_n, -1, 1, 4);

    for (size_t i = 0; i < out_n; i++) out[i] = NAN; /* forward overwrites */
    nnz_conv2d_forward(&s, inp, w, bias, out, scratch);
    direct_conv(&s, inp, w, bias, want);
    double e = tu_max_rel_err(out, want, (int64_t)out_n, 1.0);
    if (!(e <= FWD_TOL))
        fail_msg("forward err %g (N=%d H=%d W=%d IC=%d OC=%d k=%d s=%d p=%d g=%d bias=%d)", e, N, H, W, IC, OC, K,
                 stride, pad, groups, has_bias);
    /* the forward alone in exactly its own (smaller) scratch, as eval and nnz run give it: the same
     * output (an overrun shows under the sanitizers) */
    float *fscratch = tu_falloc(nnz_conv2d_forward_scratch_floats(&s)), *out_f = tu_falloc(out_n);
    assert_true(nnz_conv2d_forward_scratch_floats(&s) <= nnz_conv2d_scratch_floats(&s));
    nnz_conv2d_forward(&s, inp, w, bias, out_f, fscratch);
    assert_memory_equal(out_f, out, out_n * sizeof(float));
    free(fscratch), free(out_f);

    memset(dinp, 0, in_n * sizeof(float));
    memset(dw, 0, w_n * sizeof(float));
    memset(db, 0, OC * sizeof(float));
    nnz_conv2d_backward(&s, inp, w, R, dinp, dw, bias ? db : NULL, scratch);
    conv_ctx c = {&s, inp, w, bias, out, scratch, R, out_n};
    fd_check(&c, inp, in_n, dinp, "dinp");
    fd_check(&c, w, w_n, dw, "dweight");
    if (bias) fd_check(&c, bias, OC, db, "dbias");

    /* accumulate: a second pass onto prefilled buffers adds the same gradient */
    float *dinp2 = tu_falloc(in_n), *dw2 = tu_falloc(w_n), *db2 = tu_falloc(OC);
    for (size_t i = 0; i < in_n; i++) dinp2[i] = 2.0f;
    for (size_t i = 0; i < w_n; i++) dw2[i] = -3.0f;
    for (int i = 0; i < OC; i++) db2[i] = 0.25f;
    nnz_conv2d_backward(&s, inp, w, R, dinp2, dw2, db2, scratch);
    for (size_t i = 0; i < in_n; i++) assert_true(fabsf(dinp2[i] - (dinp[i] + 2.0f)) <= 1e-5f * (1 + fabsf(dinp[i])));
    for (size_t i = 0; i < w_n; i++) assert_true(fabsf(dw2[i] - (dw[i] - 3.0f)) <= 1e-5f * (1 + fabsf(dw[i])));
    if (bias)
        for (int i = 0; i < OC; i++) assert_true(fabsf(db2[i] - (db[i] + 0.25f)) <= 1e-5f * (1 + fabsf(db[i])));
    /* dinp = NULL, dbias = NULL: the weight gradient alone, the same */
    memset(dw2, 0, w_n * sizeof(float));
    nnz_conv2d_backward(&s, inp, w, R, NULL, dw2, NULL, scratch);
    assert_true(tu_max_rel_err(dw2, dw, (int64_t)w_n, 1.0) <= FWD_TOL);

    free(inp), free(w), free(bias), free(out), free(want), free(R), free(scratch), free(dinp), free(dw), free(db);
    free(dinp2), free(dw2), free(db2);
}

static void test_conv2d_groups1(void **state) {
    (void)state;
    check_conv(2, 5, 7, 3, 4, 1, 1, 0, 1, true);   /* 1x1: the plain GEMM path */
    check_conv(2, 5, 7, 3, 4, 1, 1, 0, 1, false);
    check_conv(1, 7, 5, 5, 3, 1, 2, 0, 1, true);   /* 1x1 strided: im2col */
    check_conv(2, 5, 7, 3, 5, 3, 1, 1, 1, true);
    check_conv(2, 7, 5, 3, 2, 3, 2, 1, 1, false);
    check_conv(1, 7, 7, 2, 3, 5, 1, 2, 1, true);
    check_conv(2, 9, 5, 1, 3, 5, 2, 2, 1, true);
    check_conv(1, 5, 5, 3, 3, 3, 2, 0, 1, true);
    check_conv(2, 3, 5, 3, 3, 3, 1, 2, 1, false);  /* pad 2 > what a 3x3 needs */
}

/* The implicit-GEMM paths (4+ input channels: the forward; stride 1, pad < k, 4+ output channels:
 * the data gradient as the turned-window convolution of dout), on every ISA path. */
static void conv_implicit_isa(nnz_isa isa, void *ctx) {
    (void)isa, (void)ctx;
    check_conv(2, 6, 5, 8, 6, 3, 1, 1, 1, true);   /* forward and data gradient */
    check_conv(1, 7, 6, 5, 7, 5, 1, 2, 1, false);  /* 5x5 pad 2 (lenet5's) */
    check_conv(2, 5, 6, 4, 4, 3, 1, 0, 1, true);   /* pad 0: the gradient's pad is 2 */
    check_conv(1, 4, 5, 4, 5, 3, 1, 2, 1, true);   /* pad 2: the gradient's pad is 0 */
    check_conv(1, 5, 5, 6, 5, 3, 2, 1, 1, true);   /* stride 2: implicit forward, col2im gradient */
    check_conv(2, 5, 4, 3, 17, 3, 1, 1, 1, false); /* 3 input channels: im2col forward, implicit gradient */
}
static void test_conv2d_implicit_every_isa(void **state) {
    (void)state;
    tu_for_each_isa(conv_implicit_isa, NULL);
}

static void test_conv2d_grouped(void **state) {
    (void)state;
    check_conv(2, 5, 7, 6, 4, 3, 1, 1, 2, true);
    check_conv(1, 7, 5, 6, 6, 1, 1, 0, 2, false);  /* 1x1 grouped */
    check_conv(2, 5, 5, 4, 6, 5, 2, 2, 2, true);
    check_conv(1, 5, 7, 3, 6, 3, 2, 1, 3, true);   /* depth multiplier 2 (groups == IC, OC = 2*IC) */
}

static void test_conv2d_depthwise(void **state) {
    (void)state;
    check_conv(2, 5, 7, 3, 3, 3, 1, 1, 3, true);
    check_conv(2, 7, 5, 17, 17, 3, 2, 1, 17, false);
    check_conv(1, 7, 7, 5, 5, 5, 1, 2, 5, true);
    check_conv(2, 9, 7, 3, 3, 5, 2, 2, 3, true);
    check_conv(1, 5, 5, 19, 19, 3, 1, 0, 19, true);
    check_conv(2, 3, 3, 1, 1, 3, 2, 2, 1, true);   /* IC = OC = groups = 1 is groups==1 too */
}

/* Every depthwise ISA path through the layer (the forward vs the direct convolution). */
static void conv_depthwise_isa(nnz_isa isa, void *ctx) {
    (void)isa, (void)ctx;
    check_conv(2, 7, 5, 35, 35, 3, 2, 1, 35, true);
}
static void test_conv2d_depthwise_every_isa(void **state) {
    (void)state;
    tu_for_each_isa(conv_depthwise_isa, NULL);
}

/* Big enough that one image's im2col fills the 32 MB scratch target: images go one per
 * GEMM chunk. The two-image results must equal the sum/concatenation of single-image runs. */
static void test_conv2d_chunked_batch(void **state) {
    (void)state;
    const int H = 96, W = 96, IC = 64, OC = 3;
    nnz_conv_shape s2, s1;
    assert_int_equal(nnz_conv_shape_init(&s2, 2, H, W, IC, OC, 3, 3, 1, 1, 1), NNZ_OK);
    assert_int_equal(nnz_conv_shape_init(&s1, 1, H, W, IC, OC, 3, 3, 1, 1, 1), NNZ_OK);
    /* scratch is one image of im2col: the batch is chunked */
    assert_int_equal(nnz_conv2d_scratch_floats(&s2), (size_t)H * W * 9 * IC);
    size_t img = (size_t)H * W * IC, oimg = (size_t)H * W * OC, w_n = (size_t)OC * 9 * IC;
    float *inp = tu_falloc(2 * img), *w = tu_falloc(w_n), *b = tu_falloc(OC), *out = tu_falloc(2 * oimg), *o1 = tu_falloc(oimg);
    float *R = tu_falloc(2 * oimg), *scratch = tu_falloc(nnz_conv2d_scratch_floats(&s2));
    float *dinp = tu_falloc(2 * img), *d1 = tu_falloc(img), *dw = tu_falloc(w_n), *dw1 = tu_falloc(w_n);
    tu_fill_uniform(inp, (int64_t)(2 * img), -1, 1, 5);
    tu_fill_uniform(w, (int64_t)w_n, -0.1f, 0.1f, 6);
    tu_fill_uniform(b, OC, -1, 1, 7);
    tu_fill_uniform(R, (int64_t)(2 * oimg), -1, 1, 8);
    nnz_conv2d_forward(&s2, inp, w, b, out, scratch);
    memset(dinp, 0, 2 * img * sizeof(float));
    memset(dw, 0, w_n * sizeof(float));
    memset(dw1, 0, w_n * sizeof(float));
    nnz_conv2d_backward(&s2, inp, w, R, dinp, dw, NULL, scratch);
    for (int n = 0; n < 2; n++) {
        nnz_conv2d_forward(&s1, inp + n * img, w, b, o1, scratch);
        assert_true(tu_max_rel_err(out + n * oimg, o1, (int64_t)oimg, 1.0) <= FWD_TOL);
        memset(d1, 0, img * sizeof(float));
        nnz_conv2d_backward(&s1, inp + n * img, w, R + n * oimg, d1, dw1, NULL, scratch);
        assert_true(tu_max_rel_err(dinp + n * img, d1, (int64_t)img, 1.0) <= FWD_TOL);
    }
    /* dw sums 2*96*96 products per element: fp32 order differences stay well under 1e-4 relative */
    assert_true(tu_max_rel_err(dw, dw1, (int64_t)w_n, 1.0) <= 1e-4);
    free(inp), free(w), free(b), free(out), free(o1), free(R), free(scratch), free(dinp), free(d1), free(dw), free(dw1);
}

static void test_conv_shape_init_rejects(void **state) {
    (void)state;
    nnz_conv_shape s;
    assert_int_equal(nnz_conv_shape_init(&s, 1, 5, 5, 6, 4, 3, 3, 1, 1, 4), NNZ_ERR_INVALID_ARG); /* 6 % 4 */
    assert_non_null(strstr(nnz_last_error(), "groups"));
    assert_int_equal(nnz_conv_shape_init(&s, 1, 5, 5, 6, 3, 3, 3, 1, 1, 2), NNZ_ERR_INVALID_ARG); /* OC 3 % 2 */
    assert_int_equal(nnz_conv_shape_init(&s, 1, 2, 2, 1, 1, 5, 5, 1, 1, 1), NNZ_ERR_INVALID_ARG); /* empty */
    assert_int_equal(nnz_conv_shape_init(&s, 1, 5, 5, 1, 1, 3, 3, 0, 1, 1), NNZ_ERR_INVALID_ARG); /* stride 0 */
    assert_int_equal(nnz_conv_shape_init(&s, 1, 5, 5, 1, 1, 3, 3, 1, -1, 1), NNZ_ERR_INVALID_ARG);
    assert_int_equal(nnz_conv_shape_init(&s, 0, 5, 5, 1, 1, 3, 3, 1, 1, 1), NNZ_ERR_INVALID_ARG);
    assert_int_equal(nnz_conv_shape_init(&s, 3, 28, 27, 8, 16, 3, 3, 2, 1, 1), NNZ_OK);
    assert_int_equal(s.OH, 14);
    assert_int_equal(s.OW, 14);
    assert_int_equal(nnz_conv_shape_init(&s, 1, 7, 7, 4, 4, 5, 5, 3, 2, 4), NNZ_OK);
    assert_int_equal(s.OH, 3);
}

/* ------------------------------ linear ------------------------------ */

static double linear_loss(int N, int IN, int OUT, const float *inp, const float *w, const float *b, const float *R,
                          float *out) {
    nnz_linear_forward(NNZ_F32, N, IN, OUT, inp, w, b, out);
    double L = 0;
    for (int i = 0; i < N * OUT; i++) L += (double)out[i] * R[i];
    return L;
}

static void fd_linear(int N, int IN, int OUT, float *inp, float *w, float *b, const float *R, float *out, float *x,
                      int n, const float *grad) {
    for (int i = 0; i < n; i++) {
        float keep = x[i];
        x[i] = keep + FD_STEP;
        double lp = linear_loss(N, IN, OUT, inp, w, b, R, out);
        x[i] = keep - FD_STEP;
        double lm = linear_loss(N, IN, OUT, inp, w, b, R, out);
        x[i] = keep;
        double fd = (lp - lm) / (2.0 * FD_STEP);
        assert_true(fabs(fd - grad[i]) / (fabs(grad[i]) > 1 ? fabs(grad[i]) : 1) <= FD_TOL);
    }
}

static void check_linear(int N, int IN, int OUT, bool has_bias) {
    float *inp = tu_falloc((size_t)N * IN), *w = tu_falloc((size_t)OUT * IN), *b = has_bias ? tu_falloc(OUT) : NULL;
    float *out = tu_falloc((size_t)N * OUT), *R = tu_falloc((size_t)N * OUT);
    float *dinp = tu_falloc((size_t)N * IN), *dw = tu_falloc((size_t)OUT * IN), *db = tu_falloc(OUT);
    tu_fill_uniform(inp, (int64_t)N * IN, -1, 1, 41);
    tu_fill_uniform(w, (int64_t)OUT * IN, -1, 1, 42);
    if (b) tu_fill_uniform(b, OUT, -1, 1, 43);
    tu_fill_uniform(R, (int64_t)N * OUT, -1, 1, 44);
    for (int i = 0; i < N * OUT; i++) out[i] = NAN;
    nnz_linear_forward(NNZ_F32, N, IN, OUT, inp, w, b, out);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OUT; o++) {
            double acc = b ? b[o] : 0.0;
            for (int i = 0; i < IN; i++) acc += (double)inp[n * IN + i] * w[o * IN + i];
            assert_true(fabs(out[n * OUT + o] - acc) <= FWD_TOL * (fabs(acc) > 1 ? fabs(acc) : 1));
        }
    /* prefilled gradients: the backward accumulates */
    for (int i = 0; i < N * IN; i++) dinp[i] = 1.0f;
    for (int i = 0; i < OUT * IN; i++) dw[i] = -2.0f;
    for (int i = 0; i < OUT; i++) db[i] = 0.5f;
    nnz_linear_backward(N, IN, OUT, inp, w, R, dinp, dw, b ? db : NULL);
    for (int i = 0; i < N * IN; i++) dinp[i] -= 1.0f;
    for (int i = 0; i < OUT * IN; i++) dw[i] += 2.0f;
    for (int i = 0; i < OUT; i++) db[i] -= 0.5f;
    fd_linear(N, IN, OUT, inp, w, b, R, out, inp, N * IN, dinp);
    fd_linear(N, IN, OUT, inp, w, b, R, out, w, OUT * IN, dw);
    if (b) fd_linear(N, IN, OUT, inp, w, b, R, out, b, OUT, db);
    /* dinp = NULL */
    float *dw2 = tu_falloc((size_t)OUT * IN);
    memset(dw2, 0, (size_t)OUT * IN * sizeof(float));
    nnz_linear_backward(N, IN, OUT, inp, w, R, NULL, dw2, NULL);
    assert_true(tu_max_rel_err(dw2, dw, (int64_t)OUT * IN, 1.0) <= FD_TOL);
    free(inp), free(w), free(b), free(out), free(R), free(dinp), free(dw), free(db), free(dw2);
}

static void test_linear(void **state) {
    (void)state;
    check_linear(1, 7, 5, true);
    check_linear(3, 17, 1, true);
    check_linear(5, 1, 9, false);
    check_linear(4, 33, 10, true);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_shape_init_rejects),
        cmocka_unit_test(test_conv2d_groups1),
        cmocka_unit_test(test_conv2d_implicit_every_isa),
        cmocka_unit_test(test_conv2d_grouped),
        cmocka_unit_test(test_conv2d_depthwise),
        cmocka_unit_test(test_conv2d_depthwise_every_isa),
        cmocka_unit_test(test_conv2d_chunked_batch),
        cmocka_unit_test(test_linear),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
