/* kernels: sgemm vs its oracle, im2col/col2im vs a direct convolution, depthwise
 * convolution on every ISA path this machine has vs its oracle. */
#include "test_util.h"
#include "kernels/kernels.h"

#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* Tolerances. Inputs are uniform in [-1,1); sums of at most ~250 products, computed in
 * fp32 in a different order than the oracle: 1e-5 relative to max(|ref|, 1) is ~100
 * fp32 ulps of the largest partial sum, far below any indexing or masking mistake. */
#define TOL 1e-5

/* ------------------------------ sgemm ------------------------------ */

static void check_sgemm(bool ta, bool tb, int M, int N, int K, float alpha, float beta, uint64_t seed) {
    const int pad = 3; /* leading dimensions larger than the minimum */
    int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    size_t an = (size_t)(ta ? K : M) * lda, bn = (size_t)(tb ? N : K) * ldb, cn = (size_t)M * ldc;
    float *A = tu_falloc(an), *B = tu_falloc(bn), *C = tu_falloc(cn), *R = tu_falloc(cn);
    tu_fill_uniform(A, (int64_t)an, -1, 1, seed);
    tu_fill_uniform(B, (int64_t)bn, -1, 1, seed + 1);
    tu_fill_uniform(C, (int64_t)cn, -1, 1, seed + 2);
    if (beta == 0.0f)
        for (size_t i = 0; i < cn; i++) C[i] = NAN; /* beta = 0 must overwrite, not propagate */
    for (int i = 0; i < M; i++) C[(size_t)i * ldc + N] = 12345.0f; /* beyond column N: untouched */
    memcpy(R, C, cn * sizeof(float));
    nnz_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    nnz_sgemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, R, ldc);
    for (int i = 0; i < M; i++) {
        assert_true(tu_max_rel_err(C + (size_t)i * ldc, R + (size_t)i * ldc, N, 1.0) <= TOL);
        assert_true(C[(size_t)i * ldc + N] == 12345.0f);
    }
    free(A), free(B), free(C), free(R);
}

static void test_sgemm_odd_shapes(void **state) {
    (void)state;
    const int sizes[] = {0, 1, 3, 17, 33};
    const float betas[] = {0.0f, 1.0f, -0.5f};
    uint64_t seed = 1;
    for (int t = 0; t < 4; t++)
        for (int mi = 0; mi < 5; mi++)
            for (int ni = 0; ni < 5; ni++)
                for (int ki = 0; ki < 5; ki++)
                    for (int bi = 0; bi < 3; bi++)
                        check_sgemm(t & 1, t & 2, sizes[mi], sizes[ni], sizes[ki], bi == 2 ? 0.75f : 1.0f,
                                    betas[bi], seed += 3);
}

static void test_sgemm_ref_known_values(void **state) {
    (void)state;
    /* [1 2; 3 4] * [5 6; 7 8] = [19 22; 43 50]; the oracle itself is checked against hand values */
    const float A[4] = {1, 2, 3, 4}, B[4] = {5, 6, 7, 8};
    float C[4] = {NAN, NAN, NAN, NAN};
    nnz_sgemm_ref(false, false, 2, 2, 2, 1.0f, A, 2, B, 2, 0.0f, C, 2);
    assert_true(C[0] == 19 && C[1] == 22 && C[2] == 43 && C[3] == 50);
    nnz_sgemm_ref(true, true, 2, 2, 2, 1.0f, A, 2, B, 2, 1.0f, C, 2); /* += A^T B^T = [23 31; 34 46] */
    assert_true(C[0] == 42 && C[1] == 53 && C[2] == 77 && C[3] == 96);
}

/* ------------------------------ im2col / col2im ------------------------------ */

static nnz_conv_window window(int H, int W, int KH, int KW, int stride, int pad) {
    return (nnz_conv_window){H, W, KH, KW, stride, pad, (H + 2 * pad - KH) / stride + 1,
                             (W + 2 * pad - KW) / stride + 1};
}

/* direct convolution of channels [c0,c0+Cg) of img (B,H,W,C) with weight (OC,KH,KW,Cg) */
static void direct_conv(const nnz_conv_window *g, int B, int C, int c0, int Cg, int OC, const float *img,
                        const float *w, float *out) {
    for (int b = 0; b < B; b++)
        for (int oh = 0; oh < g->OH; oh++)
            for (int ow = 0; ow < g->OW; ow++)
                for (int o = 0; o < OC; o++) {
                    double acc = 0;
                    for (int kh = 0; kh < g->KH; kh++)
                        for (int kw = 0; kw < g->KW; kw++) {
                            int ih = oh * g->stride - g->pad + kh, iw = ow * g->stride - g->pad + kw;
                            if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W) continue;
                            for (int c = 0; c < Cg; c++)
                                acc += (double)img[(((size_t)b * g->H + ih) * g->W + iw) * C + c0 + c] *
                                       w[(((size_t)o * g->KH + kh) * g->KW + kw) * Cg + c];
                        }
                    out[(((size_t)b * g->OH + oh) * g->OW + ow) * OC + o] = (float)acc;
                }
}

static void check_im2col(int B, int H, int W, int C, int c0, int Cg, int K, int stride, int pad) {
    const int OC = 5;
    nnz_conv_window g = window(H, W, K, K, stride, pad);
    size_t img_n = (size_t)B * H * W * C, rows = (size_t)B * g.OH * g.OW, kdim = (size_t)K * K * Cg;
    float *img = tu_falloc(img_n), *w = tu_falloc(OC * kdim), *col = tu_falloc(rows * kdim);
    float *out = tu_falloc(rows * OC), *want = tu_falloc(rows * OC);
    tu_fill_uniform(img, (int64_t)img_n, -1, 1, 7);
    tu_fill_uniform(w, (int64_t)(OC * kdim), -1, 1, 8);
    for (size_t i = 0; i < rows * kdim; i++) col[i] = NAN; /* every entry, padding too, must be written */
    nnz_im2col_nhwc(&g, B, C, c0, Cg, img, col);
    nnz_sgemm_ref(false, true, (int)rows, OC, (int)kdim, 1.0f, col, (int)kdim, w, (int)kdim, 0.0f, out, OC);
    direct_conv(&g, B, C, c0, Cg, OC, img, w, want);
    assert_true(tu_max_rel_err(out, want, (int64_t)(rows * OC), 1.0) <= TOL);

    /* col2im is the adjoint of im2col: <im2col(x), y> == <x, col2im(y)>, and it accumulates */
    float *y = tu_falloc(rows * kdim), *x2 = tu_falloc(img_n), *base = tu_falloc(img_n);
    tu_fill_uniform(y, (int64_t)(rows * kdim), -1, 1, 9);
    tu_fill_uniform(base, (int64_t)img_n, -1, 1, 10);
    memcpy(x2, base, img_n * sizeof(float));
    nnz_col2im_nhwc_acc(&g, B, C, c0, Cg, y, x2);
    double lhs = 0, rhs = 0, mag = 0;
    for (size_t i = 0; i < rows * kdim; i++) lhs += (double)col[i] * y[i], mag += fabs((double)col[i] * y[i]);
    for (size_t i = 0; i < img_n; i++) {
        int c = (int)(i % C);
        if (c < c0 || c >= c0 + Cg) assert_true(x2[i] == base[i]); /* other groups' channels untouched */
        rhs += (double)img[i] * ((double)x2[i] - base[i]);
    }
    assert_true(fabs(lhs - rhs) <= TOL * (mag > 1 ? mag : 1));
    free(img), free(w), free(col), free(out), free(want), free(y), free(x2), free(base);
}

static void test_im2col_matches_direct_conv(void **state) {
    (void)state;
    check_im2col(2, 5, 7, 3, 0, 3, 3, 1, 1);
    check_im2col(1, 7, 5, 4, 0, 4, 3, 2, 1);
    check_im2col(3, 6, 6, 6, 2, 3, 2, 2, 0);   /* one group of channels [2,5) */
    check_im2col(2, 5, 3, 5, 4, 1, 5, 1, 2);   /* window wider than the image, padded */
    check_im2col(1, 9, 9, 2, 0, 2, 1, 2, 0);   /* 1x1 strided */
    check_im2col(2, 4, 4, 3, 0, 3, 3, 3, 2);   /* stride > 1 with pad 2 */
}

/* ------------------------------ depthwise ------------------------------ */

typedef struct {
    int N, H, W, C, K, stride, pad;
    bool zero_inputs;
} dw_case;

static void check_depthwise_case(nnz_isa isa, const dw_case *dc) {
    nnz_conv_window g = window(dc->H, dc->W, dc->K, dc->K, dc->stride, dc->pad);
    const int N = dc->N, C = dc->C;
    size_t in_n = (size_t)N * dc->H * dc->W * C, out_n = (size_t)N * g.OH * g.OW * C, w_n = (size_t)dc->K * dc->K * C;
    float *inp = tu_falloc(in_n), *w = tu_falloc(w_n), *bias = tu_falloc(C), *dout = tu_falloc(out_n);
    float *out = tu_falloc(out_n), *out_ref = tu_falloc(out_n);
    float *dinp = tu_falloc(in_n), *dinp_ref = tu_falloc(in_n), *dw = tu_falloc(w_n), *dw_ref = tu_falloc(w_n);
    float *work = tu_falloc(nnz_dwconv_work_floats(&g, N, C));
    tu_fill_uniform(inp, (int64_t)in_n, -1, 1, 11);
    tu_fill_uniform(w, (int64_t)w_n, -1, 1, 12);
    tu_fill_uniform(bias, C, -1, 1, 13);
    tu_fill_uniform(dout, (int64_t)out_n, -1, 1, 14);
    if (dc->zero_inputs) {
        memset(inp, 0, in_n * sizeof(float));
        memset(dout, 0, out_n * sizeof(float));
    }
    /* the gradients accumulate onto what is there */
    tu_fill_uniform(dinp, (int64_t)in_n, -1, 1, 15);
    tu_fill_uniform(dw, (int64_t)w_n, -1, 1, 16);
    memcpy(dinp_ref, dinp, in_n * sizeof(float));
    memcpy(dw_ref, dw, w_n * sizeof(float));

    for (int with_bias = 0; with_bias < 2; with_bias++) {
        const float *b = with_bias ? bias : NULL;
        for (size_t i = 0; i < out_n; i++) out[i] = NAN; /* forward overwrites */
        nnz_dwconv_forward(&g, N, C, inp, w, b, out);
        nnz_dwconv_forward_ref(&g, N, C, inp, w, b, out_ref);
        double e = tu_max_rel_err(out, out_ref, (int64_t)out_n, 1.0);
        if (!(e <= TOL))
            fail_msg("forward isa=%s N=%d H=%d W=%d C=%d k=%d s=%d p=%d bias=%d: err %g", nnz_isa_name(isa), N,
                     dc->H, dc->W, C, dc->K, dc->stride, dc->pad, with_bias, e);
        if (dc->zero_inputs) /* zero input: exactly the bias */
            for (size_t i = 0; i < out_n; i++) assert_true(out[i] == (b ? b[i % C] : 0.0f));
    }
    nnz_dwconv_backward_data(&g, N, C, dout, w, dinp);
    nnz_dwconv_backward_data_ref(&g, N, C, dout, w, dinp_ref);
    double e = tu_max_rel_err(dinp, dinp_ref, (int64_t)in_n, 1.0);
    if (!(e <= TOL))
        fail_msg("backward_data isa=%s H=%d W=%d C=%d k=%d s=%d p=%d: err %g", nnz_isa_name(isa), dc->H, dc->W, C,
                 dc->K, dc->stride, dc->pad, e);
    nnz_dwconv_backward_weight(&g, N, C, inp, dout, dw, work);
    nnz_dwconv_backward_weight_ref(&g, N, C, inp, dout, dw_ref);
    e = tu_max_rel_err(dw, dw_ref, (int64_t)w_n, 1.0);
    if (!(e <= TOL))
        fail_msg("backward_weight isa=%s H=%d W=%d C=%d k=%d s=%d p=%d: err %g", nnz_isa_name(isa), dc->H, dc->W, C,
                 dc->K, dc->stride, dc->pad, e);
    if (dc->zero_inputs) { /* zero gradients leave the accumulators exactly as they were */
        float *dinp0 = tu_falloc(in_n), *dw0 = tu_falloc(w_n);
        tu_fill_uniform(dinp0, (int64_t)in_n, -1, 1, 15);
        tu_fill_uniform(dw0, (int64_t)w_n, -1, 1, 16);
        assert_memory_equal(dinp, dinp0, in_n * sizeof(float));
        assert_memory_equal(dw, dw0, w_n * sizeof(float));
        free(dinp0), free(dw0);
    }
    free(inp), free(w), free(bias), free(dout), free(out), free(out_ref), free(dinp), free(dinp_ref), free(dw),
        free(dw_ref), free(work);
}

static void depthwise_all_cases(nnz_isa isa, void *ctx) {
    (void)ctx;
    const int Cs[] = {1, 3, 17, 35};
    const int Ks[] = {3, 5};
    const int HWs[][2] = {{7, 9}, {5, 5}, {11, 3}};
    for (int ci = 0; ci < 4; ci++)
        for (int ki = 0; ki < 2; ki++)
            for (int stride = 1; stride <= 2; stride++)
                for (int pad = 0; pad <= 2; pad++)
                    for (int hi = 0; hi < 3; hi++) {
                        dw_case dc = {3, HWs[hi][0], HWs[hi][1], Cs[ci], Ks[ki], stride, pad, false};
                        if (dc.H + 2 * pad < dc.K || dc.W + 2 * pad < dc.K) continue;
                        check_depthwise_case(isa, &dc);
                    }
    /* odd corners: 1x1 kernel, a 2x2 image where every pixel is a border pixel, stride 3,
     * a kernel wider than the image, zero inputs, a batch larger than the weight slots */
    const dw_case extra[] = {
        {2, 5, 7, 35, 1, 1, 0, false}, {2, 2, 2, 17, 3, 1, 1, false}, {2, 9, 8, 16, 3, 3, 1, false},
        {1, 3, 3, 3, 5, 1, 2, false},  {2, 7, 7, 35, 3, 2, 1, true},  {40, 3, 5, 19, 3, 1, 1, false},
        {2, 13, 11, 48, 3, 1, 1, false}, {2, 6, 6, 33, 4, 2, 1, false},
        /* wide rows: several 8-pixel stride-1 runs, then the 4-pixel and border tails */
        {2, 4, 30, 19, 3, 1, 1, false}, {2, 5, 21, 17, 3, 1, 0, false},
        /* stride 2: 6-pixel runs that share input columns, then the 4-pixel and border tails */
        {2, 5, 31, 19, 3, 2, 1, false}, {2, 6, 29, 35, 3, 2, 0, false},
        /* a 9x9 window at stride 2: up to 25 taps feed one input pixel, more than one run of the
         * data gradient's tap list */
        {2, 12, 13, 19, 9, 2, 4, false},
    };
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) check_depthwise_case(isa, &extra[i]);
}

static void test_depthwise_every_isa_matches_ref(void **state) {
    (void)state;
    tu_for_each_isa(depthwise_all_cases, NULL);
}

/* The input prologue (a transform applied per image as the kernels read it) against the plain
 * kernels over the transformed batch: bit-identical forward (with an epilogue, over NaN) and
 * weight gradient (accumulating), for odd channels, stride 1 and 2, more images than threads;
 * and the streamed backward (dout made image by image, nnz_dwconv_backward_src) likewise. */
static void affine_clamp(const void *ctx, int64_t rows, const float *x, float *buf) {
    const int C = *(const int *)ctx;
    for (int64_t r = 0; r < rows; r++)
        for (int c = 0; c < C; c++) {
            const float v = x[r * C + c] * (1.0f + 0.25f * (float)c) - 0.5f;
            buf[r * C + c] = v < 0.0f ? 0.0f : (v > 6.0f ? 6.0f : v);
        }
}

/* With the prologue: the forward (with an epilogue, over NaN) and the weight gradient against the
 * plain kernels over the transformed batch. Then both gradients with dout streamed image by image
 * (nnz_dwconv_backward_src, with or without the prologue) against the plain kernels over the made
 * dout, overwriting (over NaN) or accumulating the data gradient. All bit for bit. */
static void dw_fused_case(nnz_isa isa, int N, int H, int W, int C, int K, int stride, int pad, bool with_pro,
                          bool accumulate) {
    const nnz_conv_window g = window(H, W, K, K, stride, pad);
    const size_t in_n = (size_t)N * H * W * C, out_n = (size_t)N * g.OH * g.OW * C, w_n = (size_t)K * K * C;
    float *inp = tu_falloc(in_n), *t = tu_falloc(in_n), *w = tu_falloc(w_n), *dout = tu_falloc(out_n), *d3 = tu_falloc(out_n);
    float *dw1 = tu_falloc(w_n), *dw2 = tu_falloc(w_n), *dx1 = tu_falloc(in_n), *dx2 = tu_falloc(in_n), *mul = tu_falloc(C);
    float *out1 = tu_falloc(out_n), *out2 = tu_falloc(out_n), *work = tu_falloc(nnz_dwconv_work_floats(&g, N, C));
    tu_fill_uniform(inp, (int64_t)in_n, -4, 8, 41);
    tu_fill_uniform(w, (int64_t)w_n, -1, 1, 42);
    tu_fill_uniform(dout, (int64_t)out_n, -1, 1, 43);
    tu_fill_uniform(mul, C, 0.5f, 2, 46);
    const nnz_input_prologue pro = {affine_clamp, &C};
    if (with_pro) affine_clamp(&C, (int64_t)in_n / C, inp, t);
    else memcpy(t, inp, in_n * sizeof(float));
    if (with_pro) {
        const nnz_epilogue ep = {.mul = mul, .lo = 0.0f, .hi = 6.0f};
        for (size_t i = 0; i < out_n; i++) out1[i] = out2[i] = NAN;
        nnz_dwconv_forward_ep(&g, N, C, t, w, NULL, &ep, out1);
        assert_true(nnz_dwconv_forward_pro(&g, N, C, inp, &pro, w, NULL, &ep, out2));
        tu_fill_uniform(dw1, (int64_t)w_n, -1, 1, 44);
        memcpy(dw2, dw1, w_n * sizeof(float));
        nnz_dwconv_backward_weight(&g, N, C, t, dout, dw1, work);
        assert_true(nnz_dwconv_backward_weight_pro(&g, N, C, inp, &pro, dout, dw2, work));
        if (memcmp(out1, out2, out_n * sizeof(float)) != 0 || memcmp(dw1, dw2, w_n * sizeof(float)) != 0)
            fail_msg("depthwise prologue isa=%s N=%d %dx%d C=%d k=%d s=%d p=%d: not the transformed batch's numbers",
                     nnz_isa_name(isa), N, H, W, C, K, stride, pad);
    }
    tu_fill_uniform(dw1, (int64_t)w_n, -1, 1, 44);
    memcpy(dw2, dw1, w_n * sizeof(float));
    if (accumulate) tu_fill_uniform(dx1, (int64_t)in_n, -1, 1, 45);
    else for (size_t i = 0; i < in_n; i++) dx1[i] = NAN;
    memcpy(dx2, dx1, in_n * sizeof(float));
    for (size_t i = 0; i < out_n; i++) d3[i] = 3.0f * dout[i];
    nnz_dwconv_backward_weight(&g, N, C, t, d3, dw1, work);
    nnz_dwconv_backward_data_ex(&g, N, C, d3, w, dx1, accumulate);
    const tu_scaled_rows rt = {dout, C, 3.0f}; /* times 3: the source must be what is used */
    const nnz_row_source src = {tu_scaled_rows_fn, &rt};
    /* overwriting, dx's rows also go to a sink in groups that straddle images and slots */
    tu_row_record rec;
    const int unit = with_pro ? 13 : 64;
    const nnz_row_sink sink = {tu_row_record_fn, &rec};
    if (!accumulate) tu_row_record_init(&rec, (int64_t)N * H * W, C, unit);
    assert_false(nnz_dwconv_backward_src(&g, N, C, &src, inp, NULL, w, dw2, work, dx2, true, &sink, unit));
    assert_true(nnz_dwconv_backward_src(&g, N, C, &src, inp, with_pro ? &pro : NULL, w, dw2, work, dx2, accumulate,
                                        accumulate ? NULL : &sink, unit));
    if (memcmp(dw1, dw2, w_n * sizeof(float)) != 0 || memcmp(dx1, dx2, in_n * sizeof(float)) != 0)
        fail_msg("depthwise streamed backward isa=%s N=%d %dx%d C=%d k=%d s=%d p=%d pro=%d acc=%d: not the plain "
                 "kernels' numbers", nnz_isa_name(isa), N, H, W, C, K, stride, pad, with_pro, accumulate);
    if (!accumulate) tu_row_record_check(&rec, dx2, "depthwise streamed backward's data-gradient sink");
    free(inp), free(t), free(w), free(dout), free(d3), free(dw1), free(dw2), free(dx1), free(dx2), free(mul),
        free(out1), free(out2), free(work);
}

static void dw_prologue_cases(nnz_isa isa, void *ctx) {
    (void)ctx;
    for (int v = 0; v < 4; v++) {
        dw_fused_case(isa, 5, 7, 9, 17, 3, 1, 1, v & 1, v & 2);  /* stride 1: the turned-window rows */
        dw_fused_case(isa, 3, 11, 6, 35, 3, 2, 1, v & 1, v & 2); /* stride 2: the gather */
        dw_fused_case(isa, 1, 5, 5, 1, 5, 1, 2, v & 1, v & 2);
        dw_fused_case(isa, 40, 4, 4, 19, 3, 2, 0, v & 1, v & 2); /* more images than the weight gradient's slots */
    }
}

static void test_depthwise_input_prologue(void **state) {
    (void)state;
    tu_for_each_isa(dw_prologue_cases, NULL);
}

/* The weight gradient must not depend on the thread count (fixed slots, fixed reduction order). */
static void dw_threads_deterministic(nnz_isa isa, void *ctx) {
    (void)ctx;
    nnz_conv_window g = window(9, 9, 3, 3, 1, 1);
    const int N = 37, C = 21;
    size_t in_n = (size_t)N * 81 * C, w_n = 9 * (size_t)C;
    float *inp = tu_falloc(in_n), *dout = tu_falloc(in_n), *dw1 = tu_falloc(w_n), *dw2 = tu_falloc(w_n);
    float *work = tu_falloc(nnz_dwconv_work_floats(&g, N, C));
    tu_fill_uniform(inp, (int64_t)in_n, -1, 1, 21);
    tu_fill_uniform(dout, (int64_t)in_n, -1, 1, 22);
    memset(dw1, 0, w_n * sizeof(float));
    memset(dw2, 0, w_n * sizeof(float));
    int before = omp_get_max_threads();
    omp_set_num_threads(1);
    nnz_dwconv_backward_weight(&g, N, C, inp, dout, dw1, work);
    omp_set_num_threads(3);
    nnz_dwconv_backward_weight(&g, N, C, inp, dout, dw2, work);
    omp_set_num_threads(before);
    if (memcmp(dw1, dw2, w_n * sizeof(float)) != 0) fail_msg("isa %s: 1 vs 3 threads differ", nnz_isa_name(isa));
    free(inp), free(dout), free(dw1), free(dw2), free(work);
}

static void test_depthwise_weight_grad_thread_independent(void **state) {
    (void)state;
    tu_for_each_isa(dw_threads_deterministic, NULL);
}

/* ------------------------------ bias helpers ------------------------------ */

static void test_bias_helpers(void **state) {
    (void)state;
    /* serial (small); row slices over two channel tiles; slices with one channel vector; fewer
     * rows than slices over many tiles */
    const int shapes[][2] = {{301, 131}, {2003, 300}, {5001, 32}, {7, 20000}};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        const int M = shapes[k][0], C = shapes[k][1];
        float *x = tu_falloc((size_t)M * C), *b = tu_falloc(C), *db = tu_falloc(C), *db1 = tu_falloc(C);
        tu_fill_uniform(b, C, -1, 1, 31);
        for (int64_t i = 0; i < (int64_t)M * C; i++) x[i] = NAN;
        nnz_bias_fill_rows(M, C, b, x);
        for (int64_t i = 0; i < (int64_t)M * C; i++) assert_true(x[i] == b[i % C]);
        tu_fill_uniform(x, (int64_t)M * C, -1, 1, 32);
        for (int c = 0; c < C; c++) db[c] = db1[c] = 1.5f;
        nnz_set_threads(3);
        nnz_bias_grad_acc(M, C, x, db);
        nnz_set_threads(1);
        nnz_bias_grad_acc(M, C, x, db1);
        nnz_set_threads(0);
        for (int c = 0; c < C; c++) {
            double s = 1.5;
            for (int i = 0; i < M; i++) s += x[(size_t)i * C + c];
            if (!(fabs(db[c] - s) <= TOL * (fabs(s) > 1 ? fabs(s) : 1)))
                fail_msg("M %d C %d: dbias[%d] = %g, expected %g", M, C, c, db[c], s);
        }
        if (memcmp(db, db1, (size_t)C * sizeof(float)) != 0) fail_msg("M %d C %d: 1 vs 3 threads differ", M, C);
        free(x), free(b), free(db), free(db1);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgemm_ref_known_values),
        cmocka_unit_test(test_sgemm_odd_shapes),
        cmocka_unit_test(test_im2col_matches_direct_conv),
        cmocka_unit_test(test_depthwise_every_isa_matches_ref),
        cmocka_unit_test(test_depthwise_weight_grad_thread_independent),
        cmocka_unit_test(test_depthwise_input_prologue),
        cmocka_unit_test(test_bias_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
