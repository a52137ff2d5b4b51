/* Layers at bf16 precision (nnz_conv_shape.compute, nnz_linear_*(NNZ_BF16, ...)), on every ISA
 * path: each GEMM input (weight, activation, output gradient) is rounded to bf16 and the sums are
 * fp32. So a bf16 layer must equal the fp32 layer run on pre-rounded inputs up to the order of
 * the fp32 sums, and must differ from the fp32 layer on the raw inputs (the rounding happened).
 *
 * The bound: products of two bf16 are exact in fp32, and a recursive fp32 sum of n terms is
 * within (n-1)*2^-24*sum|terms| of the exact sum; two such sums (bf16 path, fp32 path) differ by
 * at most 2*n*2^-24*S = n*2^-23*S, where S (per output) is the same computation on |inputs|.
 * n is the length of the longest chain of fp32 additions that feeds an output (stated per case). */
#include "test_util.h"
#include "kernels/kernels.h"
#include "nn/nn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static float *rounded(const float *x, size_t n) {
    float *r = tu_falloc_zeroed(n);
    for (size_t i = 0; i < n; i++) r[i] = nnz_bf16_round(x[i]);
    return r;
}
static float *absolute(const float *x, size_t n) {
    float *r = tu_falloc_zeroed(n);
    for (size_t i = 0; i < n; i++) r[i] = fabsf(x[i]);
    return r;
}

/* got (bf16 layer) vs want (fp32 layer on rounded inputs) within chain*2^-23*S[i] (+ a floor for
 * outputs whose S underflows); raw (fp32 layer on raw inputs) must differ from got beyond the
 * bound somewhere, or the bf16 flag was ignored. */
static void check_against(const char *what, const float *got, const float *want, const float *raw, const float *S,
                          size_t n, double chain) {
    const double u = ldexp(1.0, -23);
    size_t beyond = 0;
    for (size_t i = 0; i < n; i++) {
        double bound = chain * u * S[i] + 1e-30;
        if (fabs((double)got[i] - want[i]) > bound) fail_msg("%s[%zu]: bf16 %.9g vs rounded fp32 %.9g, bound %.3g", what, i, got[i], want[i], bound);
        if (raw && fabs((double)got[i] - raw[i]) > bound) beyond++;
    }
    /* a long chain's bound (chain * 2^-23 near bf16's 2^-9) holds the rounding's effect too */
    if (raw && beyond == 0 && chain < 4096)
        fail_msg("%s: bf16 equals fp32 on unrounded inputs: nothing was rounded", what);
}

typedef struct { int N, H, W, IC, OC, k, stride, pad, groups; } conv_case;

static void conv_case_run(const conv_case *cc, uint64_t seed) {
    nnz_conv_shape s;
    assert_int_equal(nnz_conv_shape_init(&s, cc->N, cc->H, cc->W, cc->IC, cc->OC, cc->k, cc->k, cc->stride, cc->pad,
                                         cc->groups), NNZ_OK);
    s.direct = true; /* the fp32 oracle sums each output's taps directly: the bound below is that sum's */
    const size_t ni = (size_t)s.N * s.H * s.W * s.IC, no = (size_t)s.N * s.OH * s.OW * s.OC,
                 nw = (size_t)s.OC * s.KH * s.KW * (s.IC / s.groups);
    float *inp = tu_falloc_zeroed(ni), *w = tu_falloc_zeroed(nw), *dout = tu_falloc_zeroed(no), *bias = tu_falloc_zeroed((size_t)s.OC);
    tu_fill_uniform(inp, (int64_t)ni, -1, 1, seed);
    tu_fill_uniform(w, (int64_t)nw, -1, 1, seed + 1);
    tu_fill_uniform(dout, (int64_t)no, -1, 1, seed + 2);
    tu_fill_uniform(bias, s.OC, -1, 1, seed + 3);
    float *inp_r = rounded(inp, ni), *w_r = rounded(w, nw), *dout_r = rounded(dout, no);
    float *inp_a = absolute(inp_r, ni), *w_a = absolute(w_r, nw), *dout_a = absolute(dout_r, no),
          *bias_a = absolute(bias, (size_t)s.OC);
    const bool depthwise = s.groups == s.IC && s.groups == s.OC;
    nnz_conv_shape s16 = s;
    s16.compute = NNZ_BF16;
    /* one scratch for both runs: bf16's holds bf16 weights and output gradients, fp32's the
     * implicit-GEMM gradients' padded images */
    const size_t sf16 = nnz_conv2d_scratch_floats(&s16), sf32 = nnz_conv2d_scratch_floats(&s);
    float *scratch = tu_falloc_zeroed(sf16 > sf32 ? sf16 : sf32);

    /* forward: the chain is the reduction (K = k*k*IC/groups products) plus the bias */
    float *out16 = tu_falloc_zeroed(no), *out_r = tu_falloc_zeroed(no), *out_raw = tu_falloc_zeroed(no), *S = tu_falloc_zeroed(no);
    nnz_conv2d_forward(&s16, inp, w, bias, out16, scratch);
    nnz_conv2d_forward(&s, inp_r, w_r, bias, out_r, scratch);
    nnz_conv2d_forward(&s, inp, w, bias, out_raw, scratch);
    nnz_conv2d_forward(&s, inp_a, w_a, bias_a, S, scratch);
    const double K = (double)s.KH * s.KW * (s.IC / s.groups);
    if (depthwise) /* depthwise convolutions stay fp32 (docs/BF16.md): bit-identical */
        assert_memory_equal(out16, out_raw, no * sizeof(float));
    else
        check_against("conv forward", out16, out_r, out_raw, S, no, K + 1);

    /* backward: dweight sums M = N*OH*OW products; dinp sums OC/groups products per tap, then
     * col2im adds up to k*k taps, or (the turned-window convolution of a native bf16 path, and
     * fp32's implicit data gradient) all k*k*OC/groups products in one chain: the longer bound */
    float *dw16 = tu_falloc_zeroed(nw), *dw_r = tu_falloc_zeroed(nw), *dw_raw = tu_falloc_zeroed(nw), *Sw = tu_falloc_zeroed(nw);
    float *di16 = tu_falloc_zeroed(ni), *di_r = tu_falloc_zeroed(ni), *di_raw = tu_falloc_zeroed(ni), *Si = tu_falloc_zeroed(ni);
    nnz_conv2d_backward(&s16, inp, w, dout, di16, dw16, NULL, scratch);
    /* a first layer's backward (no data gradient; for few input channels, another path) */
    float *dw16_only = tu_falloc_zeroed(nw);
    nnz_conv2d_backward(&s16, inp, w, dout, NULL, dw16_only, NULL, scratch);
    nnz_conv2d_backward(&s, inp_r, w_r, dout_r, di_r, dw_r, NULL, scratch);
    nnz_conv2d_backward(&s, inp, w, dout, di_raw, dw_raw, NULL, scratch);
    nnz_conv2d_backward(&s, inp_a, w_a, dout_a, Si, Sw, NULL, scratch);
    if (depthwise) {
        assert_memory_equal(dw16, dw_raw, nw * sizeof(float));
        assert_memory_equal(dw16_only, dw_raw, nw * sizeof(float));
        assert_memory_equal(di16, di_raw, ni * sizeof(float));
    } else {
        check_against("conv dweight", dw16, dw_r, dw_raw, Sw, nw, (double)s.N * s.OH * s.OW + 1);
        check_against("conv dweight without dinp", dw16_only, dw_r, dw_raw, Sw, nw, (double)s.N * s.OH * s.OW + 1);
        const double per_tap = (double)(s.OC / s.groups) + s.KH * s.KW, turned = (double)(s.OC / s.groups) * s.KH * s.KW;
        check_against("conv dinp", di16, di_r, di_raw, Si, ni, (per_tap > turned ? per_tap : turned) + 1);
    }
    float *bufs[] = {inp, w, dout, bias, inp_r, w_r, dout_r, inp_a, w_a, dout_a, bias_a, scratch, out16, out_r,
                     out_raw, S, dw16, dw_r, dw_raw, Sw, di16, di_r, di_raw, Si, dw16_only};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}

static void conv_all(nnz_isa isa, void *ctx) {
    (void)ctx;
    static const conv_case cases[] = {
        {2, 9, 7, 5, 7, 3, 1, 1, 1},    /* im2col, odd everything */
        {3, 8, 8, 13, 17, 1, 1, 0, 1},  /* 1x1: the small GEMM over operands rounded as it stages them */
        {1, 3, 5, 260, 9, 1, 1, 0, 1},  /* 1x1 past its channel limit (256): the bf16 GEMM */
        {2, 10, 9, 6, 8, 5, 2, 2, 2},   /* grouped, stride 2 */
        {2, 7, 7, 8, 8, 3, 1, 1, 8},    /* depthwise: stays fp32 */
        {1, 4, 4, 64, 40, 3, 1, 1, 1},  /* K = 576 */
        {3, 9, 8, 1, 6, 5, 1, 2, 1},    /* 1 channel: the fp32 implicit kernel over rounded operands */
        {2, 10, 7, 3, 5, 3, 2, 1, 1},   /* 3 channels, stride 2: the same */
        {3, 96, 96, 1, 64, 5, 1, 2, 1}, /* 1 channel, its backward in chunks of one image (> 2^20 / 2 floats each) */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) conv_case_run(&cases[i], 100 + 10 * i + (uint64_t)isa);
}

static void test_conv_bf16(void **state) {
    (void)state;
    tu_for_each_isa(conv_all, NULL);
    /* the native route (im2col sources, the turned data gradient, bf16 copies of the input) with
     * the AMX tile in plain C: what a CPU without AVX512-BF16 cannot run otherwise */
    nnz_isa_emulate_bf16_tiles(true);
    conv_all(nnz_isa_active(), NULL);
    nnz_isa_emulate_bf16_tiles(false);
}

static void linear_run(nnz_isa isa, void *ctx) {
    (void)ctx;
    const int N = 13, IN = 37, OUT = 11;
    const size_t ni = (size_t)N * IN, no = (size_t)N * OUT, nw = (size_t)OUT * IN;
    float *inp = tu_falloc_zeroed(ni), *w = tu_falloc_zeroed(nw), *b = tu_falloc_zeroed(OUT), *dout = tu_falloc_zeroed(no);
    tu_fill_uniform(inp, (int64_t)ni, -2, 2, 7 + isa);
    tu_fill_uniform(w, (int64_t)nw, -1, 1, 8 + isa);
    tu_fill_uniform(b, OUT, -1, 1, 9);
    tu_fill_uniform(dout, (int64_t)no, -1, 1, 10 + isa);
    float *inp_r = rounded(inp, ni), *w_r = rounded(w, nw), *dout_r = rounded(dout, no);
    float *inp_a = absolute(inp_r, ni), *w_a = absolute(w_r, nw), *dout_a = absolute(dout_r, no), *b_a = absolute(b, OUT);
    float *o16 = tu_falloc_zeroed(no), *o_r = tu_falloc_zeroed(no), *o_raw = tu_falloc_zeroed(no), *S = tu_falloc_zeroed(no);
    nnz_linear_forward(NNZ_BF16, N, IN, OUT, inp, w, b, o16);
    nnz_linear_forward(NNZ_F32, N, IN, OUT, inp_r, w_r, b, o_r);
    nnz_linear_forward(NNZ_F32, N, IN, OUT, inp, w, b, o_raw);
    nnz_linear_forward(NNZ_F32, N, IN, OUT, inp_a, w_a, b_a, S);
    check_against("linear forward", o16, o_r, o_raw, S, no, IN + 1);
    float *dw16 = tu_falloc_zeroed(nw), *dw_r = tu_falloc_zeroed(nw), *dw_raw = tu_falloc_zeroed(nw), *Sw = tu_falloc_zeroed(nw);
    float *di16 = tu_falloc_zeroed(ni), *di_r = tu_falloc_zeroed(ni), *di_raw = tu_falloc_zeroed(ni), *Si = tu_falloc_zeroed(ni);
    nnz_linear_backward_ex(NNZ_BF16, N, IN, OUT, inp, w, dout, di16, false, dw16, NULL);
    nnz_linear_backward_ex(NNZ_F32, N, IN, OUT, inp_r, w_r, dout_r, di_r, false, dw_r, NULL);
    nnz_linear_backward_ex(NNZ_F32, N, IN, OUT, inp, w, dout, di_raw, false, dw_raw, NULL);
    nnz_linear_backward_ex(NNZ_F32, N, IN, OUT, inp_a, w_a, dout_a, Si, false, Sw, NULL);
    check_against("linear dweight", dw16, dw_r, dw_raw, Sw, nw, N + 1);
    check_against("linear dinp", di16, di_r, di_raw, Si, ni, OUT + 1);
    float *bufs[] = {inp, w, b, dout, inp_r, w_r, dout_r, inp_a, w_a, dout_a, b_a, o16, o_r, o_raw, S,
                     dw16, dw_r, dw_raw, Sw, di16, di_r, di_raw, Si};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}

static void test_linear_bf16(void **state) {
    (void)state;
    tu_for_each_isa(linear_run, NULL);
}

/* A whole model: the precision setter's contract, and a bf16 forward that is close to (but not
 * the same as) the fp32 one. The closeness bound is loose on purpose (a relative 5e-2 on the
 * logits of lenet5 at init: bf16 has 8 significant bits, 2^-8 = 4e-3 per rounding, and errors
 * from 5 layers add); the test's point is that the model honours the setting, the tight
 * per-layer checks are above. */
static void test_model_precision(void **state) {
    (void)state;
    nnz_model *m = NULL;
    assert_int_equal(nnz_model_from_zoo("lenet5", 28, 28, 1, 10, 3, &m), NNZ_OK);
    assert_int_equal(nnz_model_precision(m), NNZ_F32);
    assert_int_equal(nnz_model_set_precision(m, (nnz_dtype)7), NNZ_ERR_INVALID_ARG);
    assert_int_equal(nnz_model_precision(m), NNZ_F32);
    const int n = 6;
    float *x = tu_falloc_zeroed((size_t)n * 784), *l32 = tu_falloc_zeroed((size_t)n * 10), *l16 = tu_falloc_zeroed((size_t)n * 10);
    tu_fill_uniform(x, n * 784, -1, 2, 5);
    assert_int_equal(nnz_model_predict(m, x, n, l32), NNZ_OK);
    assert_int_equal(nnz_model_set_precision(m, NNZ_BF16), NNZ_OK);
    assert_int_equal(nnz_model_precision(m), NNZ_BF16);
    assert_int_equal(nnz_model_predict(m, x, n, l16), NNZ_OK);
    double maxabs = 0, maxdiff = 0;
    for (int i = 0; i < n * 10; i++) {
        maxabs = fmax(maxabs, fabs(l32[i]));
        maxdiff = fmax(maxdiff, fabs((double)l32[i] - l16[i]));
    }
    assert_true(maxdiff > 0.0);
    assert_true(maxdiff < 5e-2 * maxabs);
    nnz_dtype d;
    assert_int_equal(nnz_precision_parse("bf16", &d), NNZ_OK);
    assert_int_equal(d, NNZ_BF16);
    assert_int_equal(nnz_precision_parse("fp32", &d), NNZ_OK);
    assert_int_equal(d, NNZ_F32);
    assert_int_equal(nnz_precision_parse("fp16", &d), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "fp16"));
    free(x);
    free(l32);
    free(l16);
    nnz_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_bf16),
        cmocka_unit_test(test_linear_bf16),
        cmocka_unit_test(test_model_precision),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
