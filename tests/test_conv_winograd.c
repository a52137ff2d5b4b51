/* The Winograd convolutions (nnz_conv_winograd, F(2x2,5x5) and F(4x4,3x3)) on every ISA path:
 *  - forward and weight gradient against the direct convolution summed in double, over 3x3 and
 *    5x5 windows, every padding 0..K-1, images whose sides are and are not multiples of the
 *    tile (partial tiles at the right and bottom), 1x1 outputs, channels with lane tails,
 *    overwrite (NaN beforehand) and accumulate, with and without the epilogue;
 *  - the data gradient's turned-window convolution through the conv2d layer, against the
 *    layer's direct sums (nnz_conv_shape.direct), which must also differ from Winograd's in
 *    some bit (else the layer did not run it);
 *  - the same bits for 1 and 2 threads, and called from inside a parallel region (eval);
 *  - the channel-block products (nnz_conv_winograd_blocks, _wgrad_blocks, nnz_winograd_weight_blocks)
 *    against the direct sums of the masked weight: random, none, one partial, an empty output block
 *    and all blocks kept; the dropped blocks of U never read (NaN there), the dropped weights' gradient
 *    left untouched bit for bit, the same bits on any thread count.
 * The bound: Winograd's transforms mix a tile's values with weights up to 8 (A^T) and 5 (B^T)
 * before the products, so its rounding error is not bounded per output by that output's own
 * sum of |terms|, as a direct chain's is, but by the sums over the tile's neighbourhood, times
 * the transforms' gains. The test takes S = the largest sum of |terms| over all outputs and
 * asserts |winograd - exact| <= WG_BOUND * u * S, u = 2^-24. The a-priori bound from the
 * matrices' norms (||B^T||^2 ||G||^2 ||A^T||^2, about 10^4) is far looser than what happens:
 * measured at most 19 u S forward and 52 u S in the weight gradient (a 5x5 window with padding 4,
 * where most of a tile is padding); WG_BOUND = 128, 2^-17 S.  * A wrong transform entry errs by a fraction of S itself. */
#include "test_util.h"

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "nn/nn.h"

#define UNIT_ROUNDOFF 5.9604644775390625e-8 /* 2^-24 */
#define WG_BOUND 128.0

static double worst; /* the largest error seen, in u * S (since the last report) */

typedef struct {
    int N, H, W, IC, OC, K, pad;
} wg_case;

static nnz_conv_window window(const wg_case *c) {
    return (nnz_conv_window){.H = c->H, .W = c->W, .KH = c->K, .KW = c->K, .stride = 1, .pad = c->pad,
                             .OH = c->H + 2 * c->pad - c->K + 1, .OW = c->W + 2 * c->pad - c->K + 1};
}

/* sum over taps (in the image) and channels of f(w) * f(x), in double: f = identity or fabs */
static double direct_at(const wg_case *c, const nnz_conv_window *g, const float *inp, const float *w, int64_t n,
                        int oy, int ox, int oc, bool absolute) {
    double acc = 0.0;
    for (int u = 0; u < c->K; u++)
        for (int v = 0; v < c->K; v++) {
            const int iy = oy - c->pad + u, ix = ox - c->pad + v;
            if (iy < 0 || iy >= g->H || ix < 0 || ix >= g->W) continue;
            const float *x = inp + ((n * g->H + iy) * g->W + ix) * c->IC;
            const float *wk = w + (((int64_t)oc * c->K + u) * c->K + v) * c->IC;
            for (int ic = 0; ic < c->IC; ic++)
                acc += absolute ? fabs((double)wk[ic] * x[ic]) : (double)wk[ic] * x[ic];
        }
    return acc;
}

static void check(const char *what, const wg_case *c, const float *got, const double *want, size_t n, double S) {
    const double tol = WG_BOUND * UNIT_ROUNDOFF * S + 1e-30;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)got[i] - want[i]);
        if (d / (UNIT_ROUNDOFF * S) > worst) worst = d / (UNIT_ROUNDOFF * S);
        if (!(d <= tol))
            fail_msg("%s isa=%s N=%d %dx%dx%d->%d k=%d pad=%d: [%zu] = %.9g, exact %.9g (tol %g)", what,
                     nnz_isa_name(nnz_isa_active()), c->N, c->H, c->W, c->IC, c->OC, c->K, c->pad, i, got[i], want[i],
                     tol);
    }
}

/* ---- channel blocks (nnz_conv_winograd_blocks): which 16x16 (output, input) channel blocks keep ---- */
typedef enum { KEEP_ALL, KEEP_RANDOM, KEEP_NONE, KEEP_ONE, KEEP_EMPTY_OUT } keep_kind;
#define MAX_BLOCKS 16
typedef struct {
    keep_kind kind;
    bool turned; /* the lists are nnz_channel_blocks_turned of the layer whose data gradient this is */
    int32_t ptr[MAX_BLOCKS + 1], idx[MAX_BLOCKS * MAX_BLOCKS], tptr[MAX_BLOCKS + 1], tidx[MAX_BLOCKS * MAX_BLOCKS];
    nnz_channel_blocks lists; /* what the convolution under test takes */
} keep_set;

static bool kept_block(keep_kind k, int ob, int ib, int nob, int nib) {
    switch (k) {
    case KEEP_ALL: return true;
    case KEEP_NONE: return false;
    case KEEP_ONE: return ob == nob - 1 && ib == nib - 1; /* the tail blocks, partial where the channels are */
    case KEEP_EMPTY_OUT: return ob != 0 && (ob + ib) % 2 == 0;
    default: return (ob * 7 + ib * 3) % 5 < 2; /* 40%, every output block a different set */
    }
}

/* block (ob, ib) of a convolution IC -> OC under test: kept_block in the layer's own orientation,
 * or, turned, in that of the layer OC -> IC whose data gradient it is */
static bool kept_pair(keep_kind k, bool turned, int ob, int ib, int IC, int OC) {
    const int nob = (OC + 15) / 16, nib = (IC + 15) / 16;
    return turned ? kept_block(k, ib, ob, nib, nob) : kept_block(k, ob, ib, nob, nib);
}

/* lists by output block (ptr) and by input block (tptr) for a convolution IC -> OC; turned: built for
 * the layer OC -> IC and handed over as nnz_channel_blocks_turned, as conv2d does for the data
 * gradient */
static const keep_set *keep_make_as(keep_kind k, int IC, int OC, bool turned) {
    static keep_set ks;
    const int lIC = turned ? OC : IC, lOC = turned ? IC : OC; /* the layer's */
    const int nob = (lOC + 15) / 16, nib = (lIC + 15) / 16;
    assert_true(nob <= MAX_BLOCKS && nib <= MAX_BLOCKS);
    ks.kind = k, ks.turned = turned;
    ks.ptr[0] = ks.tptr[0] = 0;
    for (int ob = 0; ob < nob; ob++) {
        ks.ptr[ob + 1] = ks.ptr[ob];
        for (int ib = 0; ib < nib; ib++)
            if (kept_block(k, ob, ib, nob, nib)) ks.idx[ks.ptr[ob + 1]++] = ib;
    }
    for (int ib = 0; ib < nib; ib++) {
        ks.tptr[ib + 1] = ks.tptr[ib];
        for (int ob = 0; ob < nob; ob++)
            if (kept_block(k, ob, ib, nob, nib)) ks.tidx[ks.tptr[ib + 1]++] = ob;
    }
    const nnz_channel_blocks layer = {ks.ptr, ks.idx, ks.tptr, ks.tidx};
    ks.lists = turned ? nnz_channel_blocks_turned(&layer) : layer;
    return &ks;
}

static const keep_set *keep_make(keep_kind k, int IC, int OC) { return keep_make_as(k, IC, OC, false); }

static bool kept_weight(const keep_set *ks, const wg_case *c, int oc, int ic) {
    return !ks || kept_pair(ks->kind, ks->turned, oc / 16, ic / 16, c->IC, c->OC);
}

/* w (OC,K,K,IC) with the dropped blocks' weights zeroed at every tap */
static void zero_dropped(const keep_set *ks, const wg_case *c, float *w) {
    for (int oc = 0; oc < c->OC; oc++)
        for (int t = 0; t < c->K * c->K; t++)
            for (int ic = 0; ic < c->IC; ic++)
                if (!kept_weight(ks, c, oc, ic)) w[((size_t)oc * c->K * c->K + t) * c->IC + ic] = 0.0f;
}

/* ks NULL: nnz_conv_winograd; else nnz_conv_winograd_blocks, U made at the kept blocks only
 * (nnz_winograd_weight_blocks, NaN elsewhere: must not be read) from the unmasked weight (whose
 * dropped blocks must not count), and the result compared with the masked weight's */
static void forward_case_kept(const wg_case *c, bool accumulate, bool with_ep, const keep_set *ks) {
    const nnz_conv_window g = window(c);
    assert_true(nnz_winograd_applies(&g));
    const size_t ni = (size_t)c->N * c->H * c->W * c->IC, no = (size_t)c->N * g.OH * g.OW * c->OC,
                 nw = (size_t)c->OC * c->K * c->K * c->IC;
    float *inp = tu_falloc(ni), *w = tu_falloc(nw), *out = tu_falloc(no), *before = tu_falloc(no);
    float *U = tu_falloc(nnz_winograd_weight_floats(c->IC, c->OC)), *work = tu_falloc(nnz_conv_winograd_work_floats(c->IC, c->OC));
    float *mul = tu_falloc(c->OC), *add = tu_falloc(c->OC);
    tu_fill_uniform(inp, (int64_t)ni, -1, 1, 21);
    tu_fill_uniform(w, (int64_t)nw, -1, 1, 22);
    tu_fill_uniform(mul, c->OC, 0.5f, 2.0f, 23);
    tu_fill_uniform(add, c->OC, -1, 1, 24);
    if (accumulate) tu_fill_uniform(before, (int64_t)no, -1, 1, 25);
    else for (size_t i = 0; i < no; i++) before[i] = NAN;
    memcpy(out, before, no * sizeof(float));
    const nnz_epilogue ep = {.mul = mul, .add = add, .lo = -INFINITY, .hi = INFINITY};
    if (ks) { /* the kept blocks' U only: the rest stays NaN, and must not be read */
        for (size_t i = 0; i < nnz_winograd_weight_floats(c->IC, c->OC); i++) U[i] = NAN;
        nnz_winograd_weight_blocks(c->K, c->IC, c->OC, w, false, &ks->lists, U);
    } else
        nnz_winograd_weight(c->K, c->IC, c->OC, w, false, U);
    if (ks) {
        nnz_conv_winograd_blocks(&g, c->N, c->IC, c->OC, inp, U, &ks->lists, accumulate, with_ep ? &ep : NULL, out,
                                 work);
        zero_dropped(ks, c, w);
    } else
        nnz_conv_winograd(&g, c->N, c->IC, c->OC, inp, U, accumulate, with_ep ? &ep : NULL, out, work);

    double *want = malloc(no * sizeof(double)), S = 0.0;
    assert_non_null(want);
    size_t i = 0;
    for (int64_t n = 0; n < c->N; n++)
        for (int oy = 0; oy < g.OH; oy++)
            for (int ox = 0; ox < g.OW; ox++)
                for (int oc = 0; oc < c->OC; oc++, i++) {
                    double v = direct_at(c, &g, inp, w, n, oy, ox, oc, false);
                    double s = direct_at(c, &g, inp, w, n, oy, ox, oc, true);
                    if (accumulate) v += before[i], s += fabs(before[i]);
                    if (with_ep) v = v * mul[oc] + add[oc], s *= mul[oc];
                    want[i] = v;
                    if (s > S) S = s;
                }
    check(ks ? "winograd forward, channel blocks" : accumulate ? "winograd forward, accumulate" : "winograd forward", c,
          out, want, no, S);
    free(want), free(inp), free(w), free(out), free(before), free(U), free(work), free(mul), free(add);
}

static void forward_case(const wg_case *c, bool accumulate, bool with_ep) { forward_case_kept(c, accumulate, with_ep, NULL); }

/* ks: nnz_conv_winograd_wgrad_blocks, the dropped blocks' weights left exactly as they were */
static void wgrad_case_kept(const wg_case *c, const keep_set *ks) {
    const nnz_conv_window g = window(c);
    const size_t ni = (size_t)c->N * c->H * c->W * c->IC, no = (size_t)c->N * g.OH * g.OW * c->OC,
                 nw = (size_t)c->OC * c->K * c->K * c->IC;
    float *inp = tu_falloc(ni), *dout = tu_falloc(no), *dw = tu_falloc(nw), *before = tu_falloc(nw);
    float *scratch = tu_falloc(nnz_conv_winograd_wgrad_scratch_floats(c->IC, c->OC));
    tu_fill_uniform(inp, (int64_t)ni, -1, 1, 31);
    tu_fill_uniform(dout, (int64_t)no, -1, 1, 32);
    tu_fill_uniform(before, (int64_t)nw, -1, 1, 33);
    memcpy(dw, before, nw * sizeof(float));
    if (ks) nnz_conv_winograd_wgrad_blocks(&g, c->N, c->IC, c->OC, inp, dout, &ks->lists, dw, scratch);
    else nnz_conv_winograd_wgrad(&g, c->N, c->IC, c->OC, inp, dout, dw, scratch);
    double *want = malloc(nw * sizeof(double)), S = 0.0;
    assert_non_null(want);
    for (int oc = 0; oc < c->OC; oc++)
        for (int u = 0; u < c->K; u++)
            for (int v = 0; v < c->K; v++)
                for (int ic = 0; ic < c->IC; ic++) {
                    double acc = 0.0, s = 0.0;
                    for (int64_t n = 0; n < c->N; n++)
                        for (int oy = 0; oy < g.OH; oy++)
                            for (int ox = 0; ox < g.OW; ox++) {
                                const int iy = oy - c->pad + u, ix = ox - c->pad + v;
                                if (iy < 0 || iy >= c->H || ix < 0 || ix >= c->W) continue;
                                const double t = (double)inp[((n * c->H + iy) * c->W + ix) * c->IC + ic] *
                                                 dout[((n * g.OH + oy) * g.OW + ox) * c->OC + oc];
                                acc += t, s += fabs(t);
                            }
                    const size_t at = (((size_t)oc * c->K + u) * c->K + v) * c->IC + ic;
                    if (!kept_weight(ks, c, oc, ic)) { /* untouched, bit for bit */
                        if (memcmp(&dw[at], &before[at], sizeof(float)) != 0)
                            fail_msg("winograd weight gradient, channel blocks: dropped weight [%zu] changed %.9g -> %.9g",
                                     at, before[at], dw[at]);
                        acc = 0.0, s = 0.0;
                    }
                    want[at] = before[at] + acc;
                    if (s + fabs(before[at]) > S) S = s + fabs(before[at]);
                }
    check(ks ? "winograd weight gradient, channel blocks" : "winograd weight gradient", c, dw, want, nw, S);
    free(want), free(inp), free(dout), free(dw), free(before), free(scratch);
}

static void wgrad_case(const wg_case *c) { wgrad_case_kept(c, NULL); }

static const wg_case cases[] = {
    {2, 14, 14, 32, 64, 5, 2}, /* lenet5's conv2: whole tiles */
    {1, 13, 11, 8, 17, 5, 2},  /* partial tiles, an output lane tail */
    {3, 7, 9, 13, 8, 5, 0},    {1, 6, 5, 9, 24, 5, 4},  {1, 1, 1, 16, 16, 5, 2}, /* a 1x1 output */
    {1, 5, 6, 8, 8, 5, 1},     {2, 5, 5, 8, 40, 5, 3},
    {2, 28, 28, 16, 16, 3, 1}, /* vgg8's first layers: whole 4x4 tiles */
    {1, 7, 7, 20, 33, 3, 1},   /* 7 = one whole tile and a partial one */
    {2, 3, 3, 8, 8, 3, 1},     {1, 9, 6, 17, 9, 3, 0}, {1, 5, 7, 8, 12, 3, 2}, {1, 2, 2, 8, 8, 3, 1},
};

static void forward_isa(nnz_isa isa, void *ctx) {
    (void)isa, (void)ctx;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        forward_case(&cases[i], false, false);
        forward_case(&cases[i], true, i % 2 == 0);
        forward_case(&cases[i], false, true);
    }
}

static void test_winograd_forward_all_isas(void **state) {
    (void)state;
    tu_for_each_isa(forward_isa, NULL);
    print_message("winograd forward: worst error %.2f u S (bound %g)\n", worst, WG_BOUND);
    worst = 0;
}

static void wgrad_isa(nnz_isa isa, void *ctx) {
    (void)isa, (void)ctx;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) wgrad_case(&cases[i]);
}

static void test_winograd_wgrad_all_isas(void **state) {
    (void)state;
    tu_for_each_isa(wgrad_isa, NULL);
    print_message("winograd weight gradient: worst error %.2f u S (bound %g)\n", worst, WG_BOUND);
    worst = 0;
}

/* Channel-block sparse products on every ISA path: the cases above (one block where the channels
 * are under 16) and several blocks with tails, each pattern: random, none kept, only the partial
 * tail block, an output block that keeps none, and all kept */
static const wg_case block_cases[] = {
    {1, 9, 7, 40, 33, 3, 1}, {2, 14, 14, 32, 48, 5, 2}, {1, 13, 11, 17, 20, 5, 2}, {2, 8, 8, 64, 64, 3, 1},
    {1, 7, 7, 48, 16, 3, 0},
};

static void blocks_isa(nnz_isa isa, void *ctx) {
    (void)isa, (void)ctx;
    static const keep_kind kinds[] = {KEEP_RANDOM, KEEP_NONE, KEEP_ONE, KEEP_EMPTY_OUT, KEEP_ALL};
    for (size_t i = 0; i < sizeof block_cases / sizeof block_cases[0]; i++)
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
            const wg_case *c = &block_cases[i];
            forward_case_kept(c, k % 2 == 1, k % 3 == 0, keep_make(kinds[k], c->IC, c->OC));
            wgrad_case_kept(c, keep_make(kinds[k], c->IC, c->OC));
            /* the data gradient's turned convolution: the lists of the layer OC -> IC, turned */
            forward_case_kept(c, k % 2 == 0, false, keep_make_as(kinds[k], c->IC, c->OC, true));
        }
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i += 2) {
        forward_case_kept(&cases[i], false, true, keep_make(KEEP_RANDOM, cases[i].IC, cases[i].OC));
        wgrad_case_kept(&cases[i], keep_make(KEEP_NONE, cases[i].IC, cases[i].OC));
    }
}

static void test_winograd_blocks_all_isas(void **state) {
    (void)state;
    tu_for_each_isa(blocks_isa, NULL);
    print_message("winograd channel blocks: worst error %.2f u S (bound %g)\n", worst, WG_BOUND);
    worst = 0;
}

/* The conv2d layer runs Winograd unless told direct: forward, data and weight gradients within the
 * bound of the direct layer's, and different from it in some bit (else it did not run Winograd);
 * the weight gradient also against sums made here. */
static void layer_case(int N, int H, int IC, int OC, int K, int pad) {
    nnz_conv_shape s;
    assert_int_equal(nnz_conv_shape_init(&s, N, H, H, IC, OC, K, K, 1, pad, 1), NNZ_OK);
    nnz_conv_shape d = s;
    d.direct = true;
    const size_t ni = (size_t)N * H * H * IC, no = (size_t)N * s.OH * s.OW * OC, nw = (size_t)OC * K * K * IC;
    float *inp = tu_falloc(ni), *w = tu_falloc(nw), *dout = tu_falloc(no), *bias = tu_falloc(OC);
    tu_fill_uniform(inp, (int64_t)ni, -1, 1, 41);
    tu_fill_uniform(w, (int64_t)nw, -1, 1, 42);
    tu_fill_uniform(dout, (int64_t)no, -1, 1, 43);
    tu_fill_uniform(bias, OC, -1, 1, 44);
    const size_t sf = nnz_conv2d_scratch_floats(&s) > nnz_conv2d_scratch_floats(&d) ? nnz_conv2d_scratch_floats(&s)
                                                                                      : nnz_conv2d_scratch_floats(&d);
    float *scratch = tu_falloc(sf);
    float *o[2], *di[2], *dwt[2];
    const nnz_conv_shape *sh[2] = {&s, &d};
    for (int k = 0; k < 2; k++) {
        o[k] = tu_falloc(no), di[k] = tu_falloc(ni), dwt[k] = calloc(nw, sizeof(float));
        assert_non_null(dwt[k]);
        nnz_conv2d_forward(sh[k], inp, w, bias, o[k], scratch);
        nnz_conv2d_backward_ex(sh[k], inp, w, dout, di[k], false, dwt[k], NULL, scratch);
    }
    /* S of each product: the largest sum of |terms| over its outputs */
    double So = 0, Si = 0, Sw = 0;
    const wg_case c = {N, H, H, IC, OC, K, pad};
    const nnz_conv_window g = window(&c);
    for (int64_t n = 0; n < N; n++)
        for (int oy = 0; oy < s.OH; oy++)
            for (int ox = 0; ox < s.OW; ox++)
                for (int oc = 0; oc < OC; oc++) {
                    const double t = direct_at(&c, &g, inp, w, n, oy, ox, oc, true);
                    So = t > So ? t : So;
                }
    float *Si_img = calloc(ni, sizeof(float)), *Sw_w = calloc(nw, sizeof(float));
    double *dw_exact = calloc(nw, sizeof(double)); /* the weight gradient summed here, in double */
    assert_non_null(Si_img);
    assert_non_null(Sw_w);
    assert_non_null(dw_exact);
    for (int64_t n = 0; n < N; n++) /* every term scattered to the input pixel and the weight it touches */
        for (int oy = 0; oy < s.OH; oy++)
            for (int ox = 0; ox < s.OW; ox++)
                for (int u = 0; u < K; u++)
                    for (int v = 0; v < K; v++) {
                        const int iy = oy - pad + u, ix = ox - pad + v;
                        if (iy < 0 || iy >= H || ix < 0 || ix >= H) continue;
                        for (int oc = 0; oc < OC; oc++) {
                            const float g1 = fabsf(dout[((n * s.OH + oy) * s.OW + ox) * OC + oc]);
                            for (int ic = 0; ic < IC; ic++) {
                                const size_t wi = (((size_t)oc * K + u) * K + v) * IC + ic;
                                const size_t xi = ((n * H + iy) * H + ix) * IC + ic;
                                Si_img[xi] += g1 * fabsf(w[wi]);
                                Sw_w[wi] += g1 * fabsf(inp[xi]);
                                dw_exact[wi] += (double)dout[((n * s.OH + oy) * s.OW + ox) * OC + oc] * inp[xi];
                            }
                        }
                    }
    for (size_t i = 0; i < ni; i++) Si = Si_img[i] > Si ? Si_img[i] : Si;
    for (size_t i = 0; i < nw; i++) Sw = Sw_w[i] > Sw ? Sw_w[i] : Sw;
    /* the layer's weight gradient against the sums made here (the direct layer's could share its kernel) */
    for (size_t i = 0; i < nw; i++)
        if (!(fabs(dwt[0][i] - dw_exact[i]) <= (WG_BOUND + (double)N * s.OH * s.OW + 1) * UNIT_ROUNDOFF * Sw))
            fail_msg("layer weight gradient %dx%dx%d->%d k=%d: [%zu] %.9g, exact %.9g", H, H, IC, OC, K, i, dwt[0][i],
                     dw_exact[i]);
    free(Si_img), free(Sw_w), free(dw_exact);
    const struct { const char *what; float *a, *b; size_t n; double S; } parts[] = {
        {"layer forward", o[0], o[1], no, So + 1.0 /* the bias */},
        {"layer data gradient", di[0], di[1], ni, Si},
        {"layer weight gradient", dwt[0], dwt[1], nw, Sw},
    };
    for (int p = 0; p < 3; p++) {
        /* both sides err: Winograd by its bound, the direct chain by at most (terms + 1) u S */
        const double terms = p == 0 ? (double)K * K * IC : p == 1 ? (double)K * K * OC : (double)N * s.OH * s.OW;
        const double tol = (WG_BOUND + terms + 1) * UNIT_ROUNDOFF * parts[p].S;
        bool differs = false;
        for (size_t i = 0; i < parts[p].n; i++) {
            const double e = fabs((double)parts[p].a[i] - parts[p].b[i]);
            if (!(e <= tol))
                fail_msg("%s %dx%dx%d->%d k=%d pad=%d: [%zu] winograd %.9g, direct %.9g (tol %g)", parts[p].what, H, H,
                         IC, OC, K, pad, i, parts[p].a[i], parts[p].b[i], tol);
            differs |= parts[p].a[i] != parts[p].b[i];
        }
        if (!differs) fail_msg("%s %dx%dx%d->%d k=%d: bit-identical to the direct sums: no Winograd", parts[p].what, H,
                               H, IC, OC, K);
    }
    for (int k = 0; k < 2; k++) free(o[k]), free(di[k]), free(dwt[k]);
    free(inp), free(w), free(dout), free(bias), free(scratch);
}

static void test_winograd_layer(void **state) {
    (void)state;
    layer_case(2, 14, 32, 64, 5, 2);
    layer_case(1, 9, 8, 12, 5, 1);
    layer_case(2, 10, 16, 24, 3, 1);
    layer_case(1, 6, 9, 8, 3, 0);
    layer_case(1, 6, 192, 200, 3, 1); /* wide: the weight gradient's blocks of tiles (wgrad_tiles) */
}

/* the same bits for 1 and 2 threads, and from inside a parallel region (eval's chunks); kept: the
 * channel-block products */
static void thread_independent_case(const keep_set *kept) {
    const wg_case c = {4, 14, 14, 32, 64, 5, 2};
    const nnz_conv_window g = window(&c);
    const size_t ni = (size_t)c.N * c.H * c.W * c.IC, no = (size_t)c.N * g.OH * g.OW * c.OC,
                 nw = (size_t)c.OC * c.K * c.K * c.IC;
    float *inp = tu_falloc(ni), *w = tu_falloc(nw), *U = tu_falloc(nnz_winograd_weight_floats(c.IC, c.OC));
    float *work = tu_falloc(nnz_conv_winograd_work_floats(c.IC, c.OC));
    float *scratch = tu_falloc(nnz_conv_winograd_wgrad_scratch_floats(c.IC, c.OC));
    float *o[3], *d[3];
    tu_fill_uniform(inp, (int64_t)ni, -1, 1, 51);
    tu_fill_uniform(w, (int64_t)nw, -1, 1, 52);
    nnz_winograd_weight(c.K, c.IC, c.OC, w, false, U);
    const int saved = nnz_threads();
    for (int k = 0; k < 3; k++) {
        o[k] = tu_falloc(no), d[k] = calloc(nw, sizeof(float));
        assert_non_null(d[k]);
        nnz_set_threads(k == 0 ? 1 : 2);
        const nnz_channel_blocks *kb = kept ? &kept->lists : NULL;
        if (k < 2) {
            nnz_conv_winograd_blocks(&g, c.N, c.IC, c.OC, inp, U, kb, false, NULL, o[k], work);
            nnz_conv_winograd_wgrad_blocks(&g, c.N, c.IC, c.OC, inp, o[0], kb, d[k], scratch);
            continue;
        }
#pragma omp parallel num_threads(2)
        {
#pragma omp single
            {
                nnz_conv_winograd_blocks(&g, c.N, c.IC, c.OC, inp, U, kb, false, NULL, o[k], work);
                nnz_conv_winograd_wgrad_blocks(&g, c.N, c.IC, c.OC, inp, o[0], kb, d[k], scratch);
            }
        }
    }
    nnz_set_threads(saved);
    for (int k = 1; k < 3; k++) {
        assert_memory_equal(o[0], o[k], no * sizeof(float));
        assert_memory_equal(d[0], d[k], nw * sizeof(float));
    }
    for (int k = 0; k < 3; k++) free(o[k]), free(d[k]);
    free(inp), free(w), free(U), free(work), free(scratch);
}

static void test_winograd_thread_independent(void **state) {
    (void)state;
    thread_independent_case(NULL);
    thread_independent_case(keep_make(KEEP_RANDOM, 32, 64));
}

/* A call too small for threads runs its region on one; the next parallel region must still get
 * every thread (with clang's libomp a num_threads(1) if (false) clause leaked into it, and a
 * threaded OpenBLAS sgemm there waited forever for its second thread) */
static void test_winograd_leaves_threads(void **state) {
    (void)state;
    const int saved = nnz_threads();
    nnz_set_threads(2);
    const wg_case c = {1, 3, 3, 8, 8, 3, 1};
    const nnz_conv_window g = window(&c);
    float *inp = tu_falloc(72), *w = tu_falloc(576), *out = tu_falloc(72), *dw = calloc(576, sizeof(float));
    float *U = tu_falloc(nnz_winograd_weight_floats(8, 8)), *work = tu_falloc(nnz_conv_winograd_work_floats(8, 8));
    float *scratch = tu_falloc(nnz_conv_winograd_wgrad_scratch_floats(8, 8));
    assert_non_null(dw);
    tu_fill_uniform(inp, 72, -1, 1, 61);
    tu_fill_uniform(w, 576, -1, 1, 62);
    nnz_winograd_weight(3, 8, 8, w, false, U);
    for (int k = 0; k < 2; k++) {
        if (k == 0) nnz_conv_winograd(&g, 1, 8, 8, inp, U, false, NULL, out, work);
        else nnz_conv_winograd_wgrad(&g, 1, 8, 8, inp, out, dw, scratch);
        int team = 0;
#pragma omp parallel
        {
#pragma omp single
            team = omp_get_num_threads();
        }
        if (team != 2) fail_msg("after a one-thread %s the next parallel region ran on %d threads, not 2",
                                k ? "weight gradient" : "forward", team);
    }
    nnz_set_threads(saved);
    free(inp), free(w), free(out), free(dw), free(U), free(work), free(scratch);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_winograd_forward_all_isas),
        cmocka_unit_test(test_winograd_wgrad_all_isas),
        cmocka_unit_test(test_winograd_blocks_all_isas),
        cmocka_unit_test(test_winograd_layer),
        cmocka_unit_test(test_winograd_thread_independent),
        cmocka_unit_test(test_winograd_leaves_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
