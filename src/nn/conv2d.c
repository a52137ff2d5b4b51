/* conv2d layer: shape checks, scratch sizing, and dispatch to the kernels.
 *
 * Dispatch (see conv_path_of):
 *   groups == 1, 1x1, stride 1, pad 0  -> one GEMM over all N*H*W rows, no im2col (the small GEMM up to
 *                                         512 channels; at bf16 up to 256, over operands rounded as staged)
 *   groups == 1, stride 1, 3x3 or 5x5  -> Winograd (fp32, dense, 8+ channels in and out; all three products)
 *   groups == 1 otherwise              -> the implicit-GEMM kernels (fp32, dense), else im2col of a chunk
 *                                         of images into scratch + one GEMM per chunk
 *   groups == IC == OC                 -> the depthwise kernels (weights transposed to (KH,KW,C) in scratch)
 *   other groups                       -> per chunk, per group: im2col of the group's channels + GEMM
 * Chunks hold as many images as keep the im2col buffer within CONV_SCRATCH_TARGET floats
 * (at least one image), so scratch stays bounded while the GEMMs keep a large M.
 * Chunking depends only on the shape, so results are reproducible for a thread count. */
#include "kernels/kernels.h"
#include "nn/nn.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CONV_SCRATCH_TARGET ((size_t)8 << 20) /* floats: 32 MB */

typedef enum { CONV_GEMM_1X1, CONV_IM2COL, CONV_DEPTHWISE, CONV_GROUPED } conv_path;

static conv_path conv_path_of(const nnz_conv_shape *s) {
    if (s->groups == 1)
        return (s->KH == 1 && s->KW == 1 && s->stride == 1 && s->pad == 0) ? CONV_GEMM_1X1 : CONV_IM2COL;
    if (s->groups == s->IC && s->OC == s->IC) return CONV_DEPTHWISE;
    return CONV_GROUPED;
}

nnz_status nnz_conv_shape_init(nnz_conv_shape *s, int N, int H, int W, int IC, int OC, int KH, int KW, int stride,
                               int pad, int groups) {
    if (N < 1 || H < 1 || W < 1 || IC < 1 || OC < 1 || KH < 1 || KW < 1 || stride < 1 || pad < 0 || groups < 1)
        return nnz_fail(NNZ_ERR_INVALID_ARG,
                        "conv2d: bad shape N=%d H=%d W=%d IC=%d OC=%d k=%dx%d stride=%d pad=%d groups=%d; sizes, "
                        "stride and groups must be >= 1 and pad >= 0", N, H, W, IC, OC, KH, KW, stride, pad, groups);
    if (IC % groups != 0 || OC % groups != 0)
        return nnz_fail(NNZ_ERR_INVALID_ARG,
                        "conv2d: groups=%d must divide both in_channels=%d and out_channels=%d", groups, IC, OC);
    if ((int64_t)H + 2 * (int64_t)pad < KH || (int64_t)W + 2 * (int64_t)pad < KW)
        return nnz_fail(NNZ_ERR_INVALID_ARG,
                        "conv2d: kernel %dx%d is larger than the padded input %dx%d (pad %d); the output would be "
                        "empty: use a smaller kernel or more padding", KH, KW, H + 2 * pad, W + 2 * pad, pad);
    int OH = (int)(((int64_t)H + 2 * pad - KH) / stride + 1), OW = (int)(((int64_t)W + 2 * pad - KW) / stride + 1);
    /* the GEMMs take int dimensions */
    if ((int64_t)N * H * W > INT_MAX || (int64_t)N * OH * OW > INT_MAX || (int64_t)KH * KW * IC > INT_MAX)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "conv2d: shape N=%d H=%d W=%d IC=%d k=%dx%d is too large; use a smaller "
                        "batch", N, H, W, IC, KH, KW);
    *s = (nnz_conv_shape){.N = N, .H = H, .W = W, .IC = IC, .OC = OC, .KH = KH, .KW = KW, .stride = stride,
                          .pad = pad, .groups = groups, .OH = OH, .OW = OW};
    return NNZ_OK;
}

static nnz_conv_window window_of(const nnz_conv_shape *s) {
    return (nnz_conv_window){.H = s->H, .W = s->W, .KH = s->KH, .KW = s->KW, .stride = s->stride, .pad = s->pad,
                             .OH = s->OH, .OW = s->OW};
}

/* Convolutions (groups 1) whose GEMM rows are this short (K = KH*KW*IC: 1x1 convs up to 512
 * channels, stems over 1-3 channels, lenet5's first conv) go to nnz_gemm_small (no packing)
 * instead of OpenBLAS */
#define SMALL_GEMM_MAX_CH 512

/* floats rounded up to 16 (64 bytes): what follows a region in scratch stays aligned */
static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }

/* bf16 1x1 convolutions up to this many channels in and out run the small GEMM too, over
 * operands rounded to bf16 as it stages them (bf16_round_rows): mbv2-tiny's (16-192 channels)
 * spent more on packing for the bf16 GEMM than on its products, and could not take the batch
 * norm deferred into them, so that norm's output was stored (docs/BF16.md) */
#define BF16_SMALL_1X1_MAX_CH 256

static bool use_small_gemm(const nnz_conv_shape *s) {
    if (s->sparse || s->groups != 1 || s->OC > SMALL_GEMM_MAX_CH) return false;
    if (s->compute == NNZ_BF16)
        return conv_path_of(s) == CONV_GEMM_1X1 && s->IC <= BF16_SMALL_1X1_MAX_CH && s->OC <= BF16_SMALL_1X1_MAX_CH;
    return s->compute == NNZ_F32 && (int64_t)s->KH * s->KW * s->IC <= SMALL_GEMM_MAX_CH;
}

/* The small GEMM at bf16 compute: every operand is rounded to bf16 as it is read (the input rows
 * by a prologue, after the caller's own if any; the output gradient's rows by a row source; the
 * weight copied rounded), so its fp32 products are exact and its sums fp32: the bf16 GEMM's
 * numbers, up to the order of the sums. */
typedef struct {
    const nnz_input_prologue *inner; /* applied first, or NULL */
    int K;                           /* floats per row */
} bf16_rows;

static void bf16_round_rows(const void *ctx, int64_t rows, const float *x, float *buf) {
    const bf16_rows *c = ctx;
    if (c->inner) c->inner->fn(c->inner->ctx, rows, x, buf), x = buf;
    nnz_round_to_bf16(rows * c->K, x, buf);
}

typedef struct {
    const nnz_row_source *inner; /* the rows' source, or NULL: read from rows */
    const float *rows;
    int K;
} bf16_source;

static void bf16_source_rows(const void *ctx, int64_t r0, int rows, float *buf) {
    const bf16_source *c = ctx;
    if (c->inner) c->inner->fn(c->inner->ctx, r0, rows, buf);
    nnz_round_to_bf16((int64_t)rows * c->K, c->inner ? buf : c->rows + r0 * c->K, buf);
}

/* Stride-1 3x3 and 5x5 convolutions (groups 1, fp32; dense, or sparse in channel blocks) over at
 * least WINOGRAD_MIN_CH channels in and out run all three products as Winograd convolutions
 * (nnz_conv_winograd, nnz_conv_winograd_blocks: F(4x4, 3x3),
 * F(2x2, 5x5)): 4x and 2.8x fewer multiply-adds than the implicit GEMM, 1.7-2.7x faster on
 * lenet5's and vgg8's layers (docs/perf-notes.md). The data gradient is the turned-window
 * convolution of dout, itself stride 1 with the same window. Below the channel floor the
 * transforms cost more than they save (a first layer's 1-3 channels). */
#define WINOGRAD_MIN_CH 8

static bool winograd_geometry(const nnz_conv_shape *s) {
    const nnz_conv_window g = window_of(s);
    return s->compute == NNZ_F32 && !s->direct && s->groups == 1 && s->IC >= WINOGRAD_MIN_CH &&
           s->OC >= WINOGRAD_MIN_CH && nnz_winograd_applies(&g);
}

/* dense, or sparse as kept 16x16 channel blocks (the planner's "winograd:16x16"): the same three
 * products over the kept blocks only (nnz_conv_winograd_blocks) */
static bool use_winograd(const nnz_conv_shape *s) {
    return (!s->sparse || s->sparse->blocks) && winograd_geometry(s);
}

bool nnz_conv2d_winograd_applies(const nnz_conv_shape *s) { return winograd_geometry(s); }

/* A channel-block layer on a shape that does not run Winograd (told direct): it has no sparse
 * matrix, so it runs dense, the zeros multiplied */
static bool blocks_without_winograd(const nnz_conv_shape *s) {
    return s->sparse && s->sparse->blocks && !use_winograd(s);
}

/* the kept blocks of a sparse Winograd layer (NULL: dense); turned: the data gradient's view */
static const nnz_channel_blocks *winograd_kept(const nnz_conv_shape *s, bool turned) {
    return s->sparse ? (turned ? &s->sparse->by_in : &s->sparse->by_out) : NULL;
}

/* k x k convolutions (groups 1, fp32, dense) run the implicit-GEMM kernel, whatever their K: no
 * im2col buffer, and its tiles beat im2col + OpenBLAS (1.0-2x, docs/perf-notes.md). Over fewer
 * than IMPLICIT_MIN_IC channels per tap, its walk around the image's edges costs more than the
 * convolution: those (stems over 1-3 channels) copy the input zero-padded first (small at these
 * channel counts), 1.5-1.8x faster than im2col + the small GEMM on lenet5's first conv. */
#define IMPLICIT_MIN_IC 4

static bool use_implicit_conv(const nnz_conv_shape *s) {
    return s->compute == NNZ_F32 && !s->sparse && conv_path_of(s) == CONV_IM2COL && s->OC <= SMALL_GEMM_MAX_CH &&
           !use_winograd(s);
}

/* floats of the zero-padded input copy the implicit forward makes (0: it reads the input) */
static size_t implicit_prepad_floats(const nnz_conv_shape *s) {
    if (s->IC >= IMPLICIT_MIN_IC || s->pad == 0) return 0;
    const nnz_conv_window g = window_of(s);
    return (size_t)s->N * nnz_conv_implicit_padded_floats(&g, s->IC);
}

/* the implicit forward's scratch: its (K,OC) weight, when the caller has no kernel-layout copy,
 * then the padded input */
static size_t implicit_forward_floats(const nnz_conv_shape *s) {
    return nnz_conv2d_kernel_weight_floats(s) + implicit_prepad_floats(s);
}

/* A bf16 convolution over fewer than IMPLICIT_MIN_IC channels (a first layer, over the image)
 * runs its forward on the fp32 implicit kernel over operands rounded to bf16 values: the same
 * products (exact in fp32) and fp32 sums as the bf16 GEMM, without staging KH*KW columns of 1-3
 * values per output pixel, which costs more than the GEMM (lenet5's conv1: 25 columns of 1). */
static bool bf16_small_input(const nnz_conv_shape *s) {
    return s->compute == NNZ_BF16 && !s->sparse && s->groups == 1 && s->IC < IMPLICIT_MIN_IC &&
           s->OC <= SMALL_GEMM_MAX_CH && (s->KH > 1 || s->KW > 1);
}

/* the same layer at fp32 compute, run over the rounded operands */
static nnz_conv_shape bf16_small_input_f32(const nnz_conv_shape *s) {
    nnz_conv_shape f = *s;
    f.compute = NNZ_F32;
    f.kernel_weight = NULL; /* a kernel-layout copy would hold the unrounded weight */
    return f;
}

/* its scratch: the rounded input and weight, then the fp32 implicit forward's */
static size_t bf16_small_input_floats(const nnz_conv_shape *s) {
    const nnz_conv_shape f = bf16_small_input_f32(s);
    return round16((size_t)s->N * s->H * s->W * s->IC) + round16((size_t)s->OC * s->KH * s->KW * s->IC) +
           implicit_forward_floats(&f);
}

/* x rounded to bf16 values into y, n floats, on the threads when large */
static void round_to_bf16_parallel(size_t n, const float *x, float *y) {
    const int64_t piece = 16384; /* floats per thread's call */
#pragma omp parallel for schedule(static) if (n >= 65536)
    for (int64_t a = 0; a < (int64_t)n; a += piece)
        nnz_round_to_bf16((int64_t)n - a < piece ? (int64_t)n - a : piece, x + a, y + a);
}

/* A stride-1 convolution's data gradient is itself a convolution: of dout, with the window turned
 * 180 degrees, input and output channels swapped and padding K-1-pad:
 *   dinp[ih,iw,ic] = sum dout[ih - pad' + u, iw - pad' + v, oc] * W[oc, KH-1-u, KW-1-v, ic],
 * pad' = K-1-pad. So it runs on the implicit-GEMM kernel, with no dcol buffer and no col2im. */
static bool turned_dgrad_geometry(const nnz_conv_shape *s) {
    return s->groups == 1 && s->stride == 1 && s->KH == s->KW && s->pad < s->KH;
}

/* that convolution's window: over dout (OH,OW), padding K-1-pad, giving (H,W) */
static nnz_conv_window turned_window(const nnz_conv_shape *s) {
    return (nnz_conv_window){.H = s->OH, .W = s->OW, .KH = s->KH, .KW = s->KW, .stride = 1,
                             .pad = s->KH - 1 - s->pad, .OH = s->H, .OW = s->W};
}

static bool use_implicit_dgrad(const nnz_conv_shape *s) {
    return s->compute == NNZ_F32 && !s->sparse && conv_path_of(s) == CONV_IM2COL && turned_dgrad_geometry(s) &&
           s->OC >= IMPLICIT_MIN_IC && s->IC <= SMALL_GEMM_MAX_CH && !use_winograd(s);
}

/* The weight gradient of every k x k convolution (groups 1, fp32, dense) runs on
 * nnz_conv_implicit_wgrad (1.0-1.55x im2col + OpenBLAS, none slower), in chunks of images whose
 * zero-padded copy stays within CONV_SCRATCH_TARGET floats. */
static bool use_implicit_wgrad(const nnz_conv_shape *s) {
    return s->compute == NNZ_F32 && !s->sparse && conv_path_of(s) == CONV_IM2COL && s->OC <= SMALL_GEMM_MAX_CH &&
           !use_winograd(s);
}

static int wgrad_images_per_chunk(const nnz_conv_shape *s) {
    const nnz_conv_window g = window_of(s);
    const size_t per = nnz_conv_implicit_padded_floats(&g, s->IC);
    const size_t b = per ? CONV_SCRATCH_TARGET / per : (size_t)s->N;
    return b < 1 ? 1 : b > (size_t)s->N ? s->N : (int)b;
}

/* its forward's and data gradient's scratch: the transformed weight, then the first thread's block */
static size_t winograd_forward_floats(const nnz_conv_shape *s) {
    return use_winograd(s) ? round16(nnz_winograd_weight_floats(s->IC, s->OC)) + nnz_conv_winograd_work_floats(s->IC, s->OC)
                           : 0;
}

/* and the weight gradient's (used one after the other) */
static size_t winograd_scratch_floats(const nnz_conv_shape *s) {
    if (!use_winograd(s)) return 0;
    const size_t f = winograd_forward_floats(s), w = nnz_conv_winograd_wgrad_scratch_floats(s->IC, s->OC);
    return f > w ? f : w;
}

/* The implicit gradients' scratch: the turned weight (data gradient) or the (K,OC) weight gradient,
 * then the wgrad kernel's padded images and partials for one chunk. 0 when neither applies. */
static size_t implicit_grad_scratch_floats(const nnz_conv_shape *s) {
    const size_t kq = round16((size_t)s->KH * s->KW * s->IC * s->OC);
    if (!use_implicit_wgrad(s)) return use_implicit_dgrad(s) ? kq : 0;
    const nnz_conv_window g = window_of(s);
    return kq + nnz_conv_implicit_wgrad_scratch_floats(&g, wgrad_images_per_chunk(s), s->IC, s->OC);
}

/* A bf16 convolution over few input channels (bf16_small_input) runs its weight gradient, and
 * its data gradient when asked, on the fp32 implicit kernels over operands rounded to bf16
 * values, as its forward does: the bf16 GEMM's im2col source would stage KH*KW columns of 1-3
 * values per pixel (lenet5's conv1 backward: 1.5-3.5x the fp32 step's). */
static bool bf16_small_input_backward(const nnz_conv_shape *s, bool with_dinp) {
    if (!bf16_small_input(s)) return false;
    const nnz_conv_shape f = bf16_small_input_f32(s);
    return use_implicit_wgrad(&f) && (!with_dinp || use_implicit_dgrad(&f));
}

/* It runs in chunks of images whose rounded output gradient stays within this many floats (4 MB):
 * the whole batch's would be a first layer's largest buffer again (lenet5: 12.8 MB). */
#define SMALL_INPUT_GRAD_FLOATS ((size_t)1 << 20)
static int bf16_small_input_grad_images(const nnz_conv_shape *s) {
    const size_t per = (size_t)s->OH * s->OW * s->OC, b = per ? SMALL_INPUT_GRAD_FLOATS / per : (size_t)s->N;
    return b < 1 ? 1 : b > (size_t)s->N ? s->N : (int)b;
}

/* a chunk's rounded input and output gradient, the rounded weight, then the implicit gradients' */
static size_t bf16_small_input_grad_floats(const nnz_conv_shape *s) {
    if (!bf16_small_input_backward(s, false)) return 0;
    nnz_conv_shape f = bf16_small_input_f32(s);
    f.N = bf16_small_input_grad_images(s);
    return round16((size_t)f.N * s->H * s->W * s->IC) + round16((size_t)f.N * s->OH * s->OW * s->OC) +
           round16((size_t)s->OC * s->KH * s->KW * s->IC) + implicit_grad_scratch_floats(&f);
}

/* floats of one image's im2col rows for one group */
static size_t col_floats_per_image(const nnz_conv_shape *s) {
    return (size_t)s->OH * s->OW * s->KH * s->KW * (s->IC / s->groups);
}

static int images_per_chunk(const nnz_conv_shape *s) {
    size_t per = col_floats_per_image(s);
    size_t b = per ? CONV_SCRATCH_TARGET / per : (size_t)s->N;
    if (b < 1) b = 1;
    return b > (size_t)s->N ? s->N : (int)b;
}

/* floats of the im2col buffer (a chunk of images), rounded up to 16 so what follows is aligned */
static size_t col_region_floats(const nnz_conv_shape *s) {
    return round16((size_t)images_per_chunk(s) * col_floats_per_image(s));
}

/* bf16 im2col convolutions (groups 1): the col buffer holds bf16, and after it come the weights
 * (OC,K) and a chunk's output gradient (rows,OC) in bf16, so every GEMM reads bf16 operands. */
static bool bf16_im2col(const nnz_conv_shape *s) { return s->compute == NNZ_BF16 && s->groups == 1 && !s->sparse; }
static size_t bf16_weights_floats(const nnz_conv_shape *s) {
    return round16(((size_t)s->OC * s->KH * s->KW * s->IC + 1) / 2);
}
/* a chunk's output gradient (rows, OC) in bf16, in floats, rounded up to 16 */
static size_t bf16_dout_floats(const nnz_conv_shape *s) {
    const size_t rows = (size_t)images_per_chunk(s) * s->OH * s->OW;
    return round16((rows * s->OC + 1) / 2);
}
static size_t bf16_extra_floats(const nnz_conv_shape *s) {
    if (s->compute != NNZ_BF16 || s->groups != 1) return 0;
    return bf16_weights_floats(s) + 2 * bf16_dout_floats(s); /* dout, and dout transposed */
}
static nnz_bf16 *bf16_weights_at(const nnz_conv_shape *s, float *scratch) {
    return (nnz_bf16 *)(scratch + col_region_floats(s));
}
static nnz_bf16 *bf16_dout_at(const nnz_conv_shape *s, float *scratch) {
    return (nnz_bf16 *)(scratch + col_region_floats(s) + bf16_weights_floats(s));
}
/* the same chunk of dout transposed, (OC, rows), after it */
static nnz_bf16 *bf16_dout_t_at(const nnz_conv_shape *s, float *scratch) {
    return (nnz_bf16 *)(scratch + col_region_floats(s) + bf16_weights_floats(s) + bf16_dout_floats(s));
}

/* The im2col source of a native bf16 GEMM over x (n values, NHWC, C channels, window g): x
 * rounded once into the im2col region (room floats) when a native path runs and it fits (each
 * value is read KH*KW times), else x itself, rounded as it is packed. */
static nnz_bf16_src bf16_im2col_source(const nnz_conv_window *g, const float *x, int C, int64_t n, nnz_bf16 *region,
                                       size_t room) {
    if (nnz_gemm_bf16_has_native() && n <= 2 * (int64_t)room) {
        nnz_cvt_f32_to_bf16(n, x, region);
        return (nnz_bf16_src){.p = region, .win = g, .C = C};
    }
    return (nnz_bf16_src){.p = x, .f32 = true, .win = g, .C = C};
}

static nnz_conv_shape without_sparse(const nnz_conv_shape *s) {
    nnz_conv_shape d = *s;
    d.sparse = NULL;
    return d;
}

size_t nnz_conv2d_scratch_floats(const nnz_conv_shape *s) {
    if (blocks_without_winograd(s)) {
        const nnz_conv_shape d = without_sparse(s);
        return nnz_conv2d_scratch_floats(&d);
    }
    switch (conv_path_of(s)) {
    case CONV_GEMM_1X1: return 0;
    case CONV_DEPTHWISE: {
        nnz_conv_window g = window_of(s);
        return 2 * (size_t)s->KH * s->KW * s->IC + nnz_dwconv_work_floats(&g, s->N, s->IC);
    }
    case CONV_IM2COL:
    case CONV_GROUPED: break;
    }
    const size_t col = col_region_floats(s) + bf16_extra_floats(s), implicit = implicit_grad_scratch_floats(s);
    const size_t fwd = use_implicit_conv(s) ? implicit_forward_floats(s) : bf16_small_input(s) ? bf16_small_input_floats(s) : 0;
    size_t most = col > implicit ? col : implicit; /* used one after the other */
    if (bf16_small_input_grad_floats(s) > most) most = bf16_small_input_grad_floats(s);
    if (winograd_scratch_floats(s) > most) most = winograd_scratch_floats(s); /* or instead of them */
    return most > fwd ? most : fwd;
}

size_t nnz_conv2d_forward_scratch_floats(const nnz_conv_shape *s) {
    if (blocks_without_winograd(s)) {
        const nnz_conv_shape d = without_sparse(s);
        return nnz_conv2d_forward_scratch_floats(&d);
    }
    /* the implicit forward needs no im2col buffer, only room for its (K,OC) weight when the
     * caller has no kernel-layout copy */
    if (use_winograd(s)) return winograd_forward_floats(s);
    if (use_implicit_conv(s)) return implicit_forward_floats(s);
    if (conv_path_of(s) == CONV_DEPTHWISE) return (size_t)s->KH * s->KW * s->IC;
    return nnz_conv2d_scratch_floats(s);
}

/* ---- the three products of a groups == 1 convolution, dense (nnz_gemm) or sparse ----
 * weight (OC,K) row-major, K = KH*KW*IC. A sparse kernel that cannot get its scratch falls back
 * to the dense GEMM, which gives the same products: the dense weight holds the zeros. */

/* out (M,OC) = X (M,K) * weight^T + (beta ? out : 0) */
static void weight_forward(const nnz_conv_shape *s, int64_t M, int K, const float *X, const float *weight, float beta,
                           float *out) {
    if (s->sparse && s->sparse_bf16_fwd && s->sparse->mat.fwd.val_bf16 &&
        nnz_spmm_bf16_f32in(&s->sparse->mat, M, X, K, NULL, beta != 0.0f, out, s->OC) == NNZ_OK)
        return;
    if (s->sparse && nnz_spmm_f32(&s->sparse->mat, M, X, K, NULL, beta != 0.0f, out, s->OC) == NNZ_OK) return;
    nnz_gemm(s->compute, false, true, (int)M, s->OC, K, 1.0f, X, K, weight, K, beta, out, s->OC);
}

/* weight gradient += dout (M,OC)^T * X (M,K); sparse: into s->sparse->dval, scattered at the end */
static void weight_grad(const nnz_conv_shape *s, int64_t M, int K, const float *dout, const float *X, float *dweight) {
    if (s->sparse && !s->dense_wgrad && s->sparse_bf16_bwd &&
        nnz_sddmm_bf16_f32in(&s->sparse->mat, M, dout, s->OC, X, K, s->sparse->dval) == NNZ_OK)
        return;
    if (s->sparse && !s->dense_wgrad && nnz_sddmm_f32(&s->sparse->mat, M, dout, s->OC, X, K, s->sparse->dval) == NNZ_OK) return;
    nnz_gemm(s->compute, true, false, s->OC, K, (int)M, 1.0f, dout, s->OC, X, K, 1.0f, dweight, K);
}

/* dX (M,K) = dout (M,OC) * weight + (beta ? dX : 0) */
static void input_grad(const nnz_conv_shape *s, int64_t M, int K, const float *dout, const float *weight, float beta,
                       float *dX) {
    if (s->sparse && s->sparse_bf16_bwd && s->sparse->mat.tr.val_bf16 &&
        nnz_spmm_bwd_data_bf16_f32in(&s->sparse->mat, M, dout, s->OC, beta != 0.0f, dX, K) == NNZ_OK)
        return;
    if (s->sparse && nnz_spmm_bwd_data_f32(&s->sparse->mat, M, dout, s->OC, beta != 0.0f, dX, K) == NNZ_OK) return;
    nnz_gemm(s->compute, false, false, (int)M, K, s->OC, 1.0f, dout, s->OC, weight, K, beta, dX, K);
}

/* dweight += the SDDMM gradient, at the weight's nonzeros only (its zeros are the mask) */
static void scatter_sparse_grad(const nnz_sparse_weight *sp, const float *weight, float *dweight, int K) {
    const nnz_bsr *A = &sp->mat.fwd;
    for (int br = 0; br < A->brows; br++)
        for (int32_t j = A->ptr[br]; j < A->ptr[br + 1]; j++)
            for (int kk = 0; kk < A->c; kk++) {
                const int col = A->idx[j] * A->c + kk;
                if (col >= K) break;
                for (int i = 0; i < A->r; i++) {
                    const int row = br * A->r + i;
                    if (row >= A->rows) break;
                    const size_t at = (size_t)row * K + col;
                    if (weight[at] != 0.0f) dweight[at] += sp->dval[(size_t)j * A->r * A->c + (size_t)kk * A->r + i];
                }
            }
}

/* (C,KH*KW) <-> (KH*KW,C) for depthwise weights */
static void transpose_taps(int C, int taps, const float *src, float *dst) {
    for (int c = 0; c < C; c++)
        for (int t = 0; t < taps; t++) dst[(size_t)t * C + c] = src[(size_t)c * taps + t];
}

/* Output rows per task of the fused 1x1 path: the GEMM's block of output stays in L2
 * for the epilogue. Depends only on OC (results do not depend on the thread count). */
#define CONV_EP_BLOCK_FLOATS 32768

static void epilogue_rows_parallel(int64_t M, int C, const nnz_epilogue *ep, float *out) {
    const int64_t rows = CONV_EP_BLOCK_FLOATS / C > 0 ? CONV_EP_BLOCK_FLOATS / C : 1;
    const int64_t blocks = (M + rows - 1) / rows;
#pragma omp parallel for schedule(static) if (M * C >= 65536)
    for (int64_t b = 0; b < blocks; b++) {
        const int64_t r0 = b * rows, m = M - r0 < rows ? M - r0 : rows;
        nnz_epilogue_apply(m, C, ep, out + r0 * C);
    }
}

/* The 1x1 GEMM with the epilogue: OpenMP over blocks of rows, one single-threaded GEMM
 * per block (OpenBLAS's OpenMP build runs single-threaded inside a parallel region),
 * the epilogue while the block is in cache. A pthreads OpenBLAS would oversubscribe
 * there: then one threaded GEMM and a separate epilogue pass. */
static void gemm_1x1_ep(const nnz_conv_shape *s, int64_t M, const float *inp, const float *weight, const float *bias,
                        const nnz_epilogue *ep, float *out) {
    const int IC = s->IC, OC = s->OC;
    if (!nnz_sgemm_nestable() || s->sparse) { /* the sparse kernels thread themselves */
        if (bias) nnz_bias_fill_rows(M, OC, bias, out);
        weight_forward(s, M, IC, inp, weight, bias ? 1.0f : 0.0f, out);
        epilogue_rows_parallel(M, OC, ep, out);
        return;
    }
    const int64_t rows = CONV_EP_BLOCK_FLOATS / OC > 8 ? CONV_EP_BLOCK_FLOATS / OC : 8;
    const int64_t blocks = (M + rows - 1) / rows;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        const int64_t r0 = b * rows, m = M - r0 < rows ? M - r0 : rows;
        float *o = out + r0 * OC;
        if (bias) nnz_bias_fill_rows(m, OC, bias, o);
        nnz_gemm(s->compute, false, true, (int)m, OC, IC, 1.0f, inp + r0 * IC, IC, weight, IC, bias ? 1.0f : 0.0f, o, OC);
        nnz_epilogue_apply(m, OC, ep, o);
    }
}

size_t nnz_conv2d_kernel_weight_floats(const nnz_conv_shape *s) {
    if (conv_path_of(s) == CONV_DEPTHWISE) return (size_t)s->KH * s->KW * s->IC;
    if (use_winograd(s)) return nnz_winograd_weight_floats(s->IC, s->OC);
    return use_small_gemm(s) || use_implicit_conv(s) ? (size_t)s->KH * s->KW * s->IC * s->OC : 0;
}

void nnz_conv2d_kernel_weight(const nnz_conv_shape *s, const float *weight, float *out) {
    if (conv_path_of(s) == CONV_DEPTHWISE) transpose_taps(s->IC, s->KH * s->KW, weight, out);
    else if (use_winograd(s)) nnz_winograd_weight(s->KH, s->IC, s->OC, weight, false, out);
    else transpose_taps(s->OC, s->KH * s->KW * s->IC, weight, out); /* (OC,K) -> (K,OC) */
    if (s->compute == NNZ_BF16 && use_small_gemm(s)) /* the small GEMM reads it as bf16 values */
        nnz_round_to_bf16((int64_t)s->IC * s->OC, out, out);
}

/* The small GEMM's and the implicit conv's (K,OC) weight: the caller's s->kernel_weight, or made
 * into *made (free() it). NULL if it could not be allocated: the caller falls back to OpenBLAS. */
static const float *small_gemm_weight(const nnz_conv_shape *s, const float *weight, float **made) {
    *made = NULL;
    if (s->kernel_weight) return s->kernel_weight;
    if (!(*made = malloc(nnz_conv2d_kernel_weight_floats(s) * sizeof(float)))) return NULL;
    nnz_conv2d_kernel_weight(s, weight, *made);
    return *made;
}

/* out (M,OC) = inp (M,IC) * weight^T + bias, then ep; false if the transposed weight
 * could not be allocated (the caller falls back to OpenBLAS). */
static bool small_gemm_1x1_forward(const nnz_conv_shape *s, int64_t M, const float *inp, const float *weight,
                                   const float *bias, const nnz_epilogue *ep, float *out) {
    float *made;
    const float *wt = small_gemm_weight(s, weight, &made);
    if (!wt) return false;
    if (bias) nnz_bias_fill_rows(M, s->OC, bias, out);
    const bf16_rows round = {NULL, s->IC};
    const nnz_input_prologue pro = {bf16_round_rows, &round};
    const bool ok = nnz_gemm_small_sink(M, s->OC, s->IC, inp, s->IC, s->compute == NNZ_BF16 ? &pro : NULL, wt,
                                        bias != NULL, ep, out, NULL, 4);
    free(made);
    return ok;
}

bool nnz_conv2d_forward_sink(const nnz_conv_shape *s, const float *inp, const nnz_input_prologue *pro,
                             const float *weight, const float *bias, const nnz_epilogue *ep, float *out,
                             const nnz_row_sink *sink, int unit) {
    if (conv_path_of(s) != CONV_GEMM_1X1 || !use_small_gemm(s) || bias) return false;
    float *made;
    const float *wt = small_gemm_weight(s, weight, &made);
    if (!wt) return false;
    const bf16_rows round = {pro, s->IC};
    const nnz_input_prologue rounded = {bf16_round_rows, &round};
    if (s->compute == NNZ_BF16) pro = &rounded;
    const bool ok = nnz_gemm_small_sink((int64_t)s->N * s->OH * s->OW, s->OC, s->IC, inp, s->IC, pro, wt, false, ep,
                                        out, sink, unit);
    free(made);
    return ok;
}

bool nnz_conv2d_forward_pro(const nnz_conv_shape *s, const float *inp, const nnz_input_prologue *pro,
                            const float *weight, const float *bias, const nnz_epilogue *ep, float *out, float *scratch) {
    if (conv_path_of(s) == CONV_GEMM_1X1) return nnz_conv2d_forward_sink(s, inp, pro, weight, bias, ep, out, NULL, 1);
    if (conv_path_of(s) != CONV_DEPTHWISE) return false;
    const nnz_conv_window g = window_of(s);
    const float *weight_t = s->kernel_weight;
    if (!weight_t) {
        transpose_taps(s->IC, s->KH * s->KW, weight, scratch);
        weight_t = scratch;
    }
    return nnz_dwconv_forward_pro(&g, s->N, s->IC, inp, pro, weight_t, bias, ep, out);
}

void nnz_conv2d_forward_ep(const nnz_conv_shape *s, const float *inp, const float *weight, const float *bias,
                           const nnz_epilogue *ep, float *out, float *scratch) {
    if (blocks_without_winograd(s)) {
        const nnz_conv_shape dense = without_sparse(s);
        nnz_conv2d_forward_ep(&dense, inp, weight, bias, ep, out, scratch);
        return;
    }
    const nnz_conv_window g = window_of(s);
    const int64_t out_rows = (int64_t)s->N * s->OH * s->OW;
    const conv_path path = conv_path_of(s);
    if (path == CONV_DEPTHWISE) {
        const float *weight_t = s->kernel_weight;
        if (!weight_t) {
            transpose_taps(s->IC, s->KH * s->KW, weight, scratch);
            weight_t = scratch;
        }
        nnz_dwconv_forward_ep(&g, s->N, s->IC, inp, weight_t, bias, ep, out);
        return;
    }
    if (bf16_small_input(s)) {
        const nnz_conv_shape f = bf16_small_input_f32(s);
        const size_t nx = (size_t)s->N * s->H * s->W * s->IC, nw = (size_t)s->OC * s->KH * s->KW * s->IC;
        float *xr = scratch, *wr = scratch + round16(nx);
        round_to_bf16_parallel(nx, inp, xr);
        nnz_round_to_bf16((int64_t)nw, weight, wr);
        nnz_conv2d_forward_ep(&f, xr, wr, bias, ep, out, wr + round16(nw));
        return;
    }
    /* A bias the epilogue can add (it has no affine part of its own): the small GEMM then starts
     * its chains from zero, with no pass that fills the output with the bias and no load of it
     * back into the tiles. */
    nnz_epilogue with_bias;
    if (bias && (use_small_gemm(s) || use_implicit_conv(s) || use_winograd(s)) && (!ep || !(ep->sub || ep->mul || ep->add))) {
        with_bias = ep ? *ep : (nnz_epilogue){.lo = -INFINITY, .hi = INFINITY};
        with_bias.add = bias;
        ep = &with_bias;
        bias = NULL;
    }
    if (path == CONV_GEMM_1X1 && use_small_gemm(s) && small_gemm_1x1_forward(s, out_rows, inp, weight, bias, ep, out))
        return;
    if (path == CONV_GEMM_1X1 && ep) {
        gemm_1x1_ep(s, out_rows, inp, weight, bias, ep, out);
        return;
    }
    /* bias first, then GEMMs accumulate onto it (beta = 1) */
    float beta = 0.0f;
    if (bias) {
        nnz_bias_fill_rows(out_rows, s->OC, bias, out);
        beta = 1.0f;
    }
    if (path == CONV_GEMM_1X1) {
        weight_forward(s, out_rows, s->IC, inp, weight, beta, out);
        return;
    }
    if (use_winograd(s)) { /* the epilogue fused into its output transform; scratch: the weight, a block */
        const float *u = s->kernel_weight;
        if (!u) { /* sparse: the kept blocks only (the model's cached copy is whole: a dense run may read it) */
            nnz_winograd_weight_blocks(s->KH, s->IC, s->OC, weight, false, winograd_kept(s, false), scratch);
            u = scratch;
        }
        nnz_conv_winograd_blocks(&g, s->N, s->IC, s->OC, inp, u, winograd_kept(s, false), beta != 0.0f, ep, out,
                                 scratch + round16(nnz_winograd_weight_floats(s->IC, s->OC)));
        return;
    }
    if (use_implicit_conv(s)) { /* the epilogue fused into its tiles; no im2col, so scratch holds the weight */
        const float *wt = s->kernel_weight;
        if (!wt) {
            nnz_conv2d_kernel_weight(s, weight, scratch);
            wt = scratch;
        }
        if (implicit_prepad_floats(s))
            nnz_conv_implicit_prepadded(&g, s->N, s->IC, s->OC, inp, wt, beta != 0.0f, ep, out,
                                        scratch + nnz_conv2d_kernel_weight_floats(s));
        else
            nnz_conv_implicit(&g, s->N, s->IC, s->OC, inp, wt, beta != 0.0f, ep, out);
        return;
    }
    const int G = s->groups, ICg = s->IC / G, OCg = s->OC / G, Kg = s->KH * s->KW * ICg;
    const size_t in_img = (size_t)s->H * s->W * s->IC, out_img = (size_t)s->OH * s->OW * s->OC;
    const int chunk = images_per_chunk(s);
    if (bf16_im2col(s)) {
        nnz_bf16 *wh = bf16_weights_at(s, scratch), *colh = (nnz_bf16 *)scratch;
        nnz_cvt_f32_to_bf16((int64_t)s->OC * Kg, weight, wh);
        /* a native bf16 path packs the im2col rows straight from the input: the whole batch in
         * one GEMM, no im2col buffer (the input rounded once into its region, when it fits) */
        const nnz_bf16_src cols = bf16_im2col_source(&g, inp, s->IC, (int64_t)s->N * in_img, colh, col_region_floats(s));
        const nnz_bf16_src wt = {.p = wh, .ld = Kg, .trans = true};
        if (nnz_gemm_bf16_src((int)out_rows, s->OC, Kg, 1.0f, &cols, &wt, beta, out, s->OC)) {
            if (ep) epilogue_rows_parallel(out_rows, s->OC, ep, out);
            return;
        }
        for (int n0 = 0; n0 < s->N; n0 += chunk) {
            const int B = s->N - n0 < chunk ? s->N - n0 : chunk, M = B * s->OH * s->OW;
            nnz_im2col_nhwc_bf16(&g, B, s->IC, 0, s->IC, inp + n0 * in_img, colh);
            nnz_gemm_bf16(false, true, M, s->OC, Kg, 1.0f, colh, Kg, wh, Kg, beta, out + n0 * out_img, s->OC);
            if (ep) epilogue_rows_parallel(M, s->OC, ep, out + n0 * out_img);
        }
        return;
    }
    /* sparse (fp32 kernels): each item's im2col rows made in the SpMM's own scratch, no buffer */
    if (s->sparse && G == 1 && !(s->sparse_bf16_fwd && s->sparse->mat.fwd.val_bf16) &&
        nnz_spmm_conv_f32(&s->sparse->mat, &g, s->N, s->IC, inp, NULL, beta != 0.0f, out, s->OC) == NNZ_OK) {
        if (ep) epilogue_rows_parallel(out_rows, s->OC, ep, out);
        return;
    }
    /* short im2col rows: the small GEMM with the (Kg,OC) weight, its row blocks built in cache */
    float *made = NULL;
    const float *wt = use_small_gemm(s) ? small_gemm_weight(s, weight, &made) : NULL;
    if (wt && G == 1 && nnz_gemm_small_im2col(&g, s->N, s->IC, inp, s->OC, wt, beta != 0.0f, ep, out)) {
        free(made);
        return;
    }
    for (int n0 = 0; n0 < s->N; n0 += chunk) {
        const int B = s->N - n0 < chunk ? s->N - n0 : chunk, M = B * s->OH * s->OW;
        if (wt) { /* the epilogue fused into the small GEMM's tiles */
            nnz_im2col_nhwc(&g, B, s->IC, 0, s->IC, inp + n0 * in_img, scratch);
            nnz_gemm_small(M, s->OC, Kg, scratch, Kg, wt, beta != 0.0f, ep, out + n0 * out_img);
            continue;
        }
        for (int gi = 0; gi < G; gi++) {
            nnz_im2col_nhwc(&g, B, s->IC, gi * ICg, ICg, inp + n0 * in_img, scratch);
            if (G == 1) weight_forward(s, M, Kg, scratch, weight, beta, out + n0 * out_img);
            else nnz_gemm(s->compute, false, true, M, OCg, Kg, 1.0f, scratch, Kg, weight + (size_t)gi * OCg * Kg, Kg,
                          beta, out + n0 * out_img + (size_t)gi * OCg, s->OC);
        }
        if (ep) epilogue_rows_parallel(M, s->OC, ep, out + n0 * out_img);
    }
    free(made);
}

/* dinp (N,H,W,IC) = (accumulate ? dinp : 0) + that convolution; the turned weight in scratch */
static void implicit_input_grad(const nnz_conv_shape *s, const float *weight, const float *dout, bool accumulate,
                                float *dinp, float *scratch) {
    const int K = s->KH, IC = s->IC, OC = s->OC;
    float *turned = scratch; /* (K,K,OC) x IC */
    for (int oc = 0; oc < OC; oc++)
        for (int u = 0; u < K; u++)
            for (int v = 0; v < K; v++)
                memcpy(turned + (((size_t)(K - 1 - u) * K + (K - 1 - v)) * OC + oc) * IC,
                       weight + (((size_t)oc * K + u) * K + v) * IC, (size_t)IC * sizeof(float));
    const nnz_conv_window t = turned_window(s);
    nnz_conv_implicit(&t, s->N, OC, IC, dout, turned, accumulate, NULL, dinp);
}

/* The same turned-window convolution for a sparse weight: the sparse forward of dout over the
 * turned matrix (the planner built it when the blocks divide the channels). false: not here. */
static bool sparse_turned_input_grad(const nnz_conv_shape *s, const float *dout, bool accumulate, float *dinp) {
    nnz_sparse_weight *sp = s->sparse;
    if (!sp || !sp->turned.mat.fwd.ptr || s->compute != NNZ_F32 || s->sparse_bf16_bwd || !turned_dgrad_geometry(s))
        return false;
    nnz_spmat_turned_load(&sp->mat, &sp->turned);
    const nnz_conv_window t = turned_window(s);
    return nnz_spmm_conv_f32(&sp->turned.mat, &t, s->N, s->OC, dout, NULL, accumulate, dinp, s->IC) == NNZ_OK;
}

/* The same turned-window convolution in bf16, on a native bf16 path (the GEMM packs dout's
 * im2col rows straight from dout; the turned weight is made in bf16 in wt, OC*KH*KW*IC values).
 * false: not here (no native path, another geometry, or no memory for the packing). */
static bool bf16_turned_input_grad(const nnz_conv_shape *s, const float *weight, const float *dout, bool accumulate,
                                   float *dinp, nnz_bf16 *wt, nnz_bf16 *region, size_t room) {
    if (!turned_dgrad_geometry(s) || !nnz_gemm_bf16_has_native()) return false;
    const int K = s->KH, IC = s->IC, OC = s->OC;
    for (int oc = 0; oc < OC; oc++)
        for (int u = 0; u < K; u++)
            for (int v = 0; v < K; v++)
                nnz_cvt_f32_to_bf16(IC, weight + (((size_t)oc * K + u) * K + v) * IC,
                                    wt + (((size_t)(K - 1 - u) * K + (K - 1 - v)) * OC + oc) * IC);
    const nnz_conv_window t = turned_window(s);
    const nnz_bf16_src cols = bf16_im2col_source(&t, dout, OC, (int64_t)s->N * s->OH * s->OW * OC, region, room);
    const nnz_bf16_src w = {.p = wt, .ld = IC};
    return nnz_gemm_bf16_src(s->N * s->H * s->W, IC, K * K * OC, 1.0f, &cols, &w, accumulate ? 1.0f : 0.0f, dinp,
                             IC);
}

/* dweight (OC,K) += the implicit kernel's (K,OC) weight gradient, transposed; all in scratch */
static void implicit_weight_grad(const nnz_conv_shape *s, const float *inp, const float *dout, float *dweight,
                                 float *scratch) {
    const int K = s->KH * s->KW * s->IC, OC = s->OC, chunk = wgrad_images_per_chunk(s);
    const nnz_conv_window g = window_of(s);
    const size_t in_img = (size_t)s->H * s->W * s->IC, out_img = (size_t)s->OH * s->OW * OC;
    float *dw_t = scratch, *work = scratch + round16((size_t)K * OC);
    memset(dw_t, 0, (size_t)K * OC * sizeof(float));
    for (int n0 = 0; n0 < s->N; n0 += chunk) {
        const int B = s->N - n0 < chunk ? s->N - n0 : chunk;
        nnz_conv_implicit_wgrad(&g, B, s->IC, OC, inp + n0 * in_img, dout + n0 * out_img, dw_t, work);
    }
    for (int o = 0; o < OC; o++)
        for (int k = 0; k < K; k++) dweight[(size_t)o * K + k] += dw_t[(size_t)k * OC + o];
}

void nnz_conv2d_forward(const nnz_conv_shape *s, const float *inp, const float *weight, const float *bias,
                        float *out, float *scratch) {
    nnz_conv2d_forward_ep(s, inp, weight, bias, NULL, out, scratch);
}

/* The depthwise backward of pro(inp) (pro NULL: inp), from dout or (src non-NULL, with dinp) from
 * dout made image by image; false (nothing written but scratch) when the buffers for pro or src
 * could not be allocated. scratch: the weight and its gradient in the kernels' (KH,KW,C), then
 * the weight gradient's slots. */
static bool depthwise_backward(const nnz_conv_shape *s, const float *inp, const nnz_input_prologue *pro,
                               const nnz_row_source *src, const nnz_row_sink *dsink, int unit,
                               const nnz_image_sink *isink, const float *weight, const float *dout, float *dinp,
                               bool accumulate, float *dweight, float *scratch) {
    const nnz_conv_window g = window_of(s);
    const int C = s->IC, taps = s->KH * s->KW;
    float *weight_t = scratch, *dweight_t = scratch + (size_t)taps * C, *work = dweight_t + (size_t)taps * C;
    transpose_taps(C, taps, weight, weight_t);
    memset(dweight_t, 0, (size_t)taps * C * sizeof(float));
    if (isink) {
        if (!nnz_dwconv_backward_src_images(&g, s->N, C, src, inp, pro, weight_t, dweight_t, work, isink)) return false;
    } else if (src) {
        if (!nnz_dwconv_backward_src(&g, s->N, C, src, inp, pro, weight_t, dweight_t, work, dinp, accumulate, dsink,
                                     unit))
            return false;
    } else {
        if (!nnz_dwconv_backward_weight_pro(&g, s->N, C, inp, pro, dout, dweight_t, work)) return false;
        if (dinp) nnz_dwconv_backward_data_ex(&g, s->N, C, dout, weight_t, dinp, accumulate);
    }
    for (int c = 0; c < C; c++)
        for (int t = 0; t < taps; t++) dweight[(size_t)c * taps + t] += dweight_t[(size_t)t * C + c];
    return true;
}

bool nnz_conv2d_backward_pro(const nnz_conv_shape *s, const float *inp, const nnz_input_prologue *pro,
                             const float *weight, const float *dout, float *dinp, bool accumulate, float *dweight,
                             float *dbias, float *scratch) {
    if (conv_path_of(s) != CONV_DEPTHWISE ||
        !depthwise_backward(s, inp, pro, NULL, NULL, 0, NULL, weight, dout, dinp, accumulate, dweight, scratch))
        return false;
    if (dbias) nnz_bias_grad_acc((int64_t)s->N * s->OH * s->OW, s->OC, dout, dbias);
    return true;
}

/* Both products of a 1x1 conv's backward on the small GEMM, in one pass over dout: from its
 * rows' source src, else from dout; the input through pro (NULL: as stored). At bf16 compute every
 * operand is rounded as it is read (bf16_rows). false: no memory for its buffers. */
static bool small_gemm_1x1_backward(const nnz_conv_shape *s, const nnz_row_source *src, const float *dout,
                                    const float *inp, const nnz_input_prologue *pro, const float *weight,
                                    float *dweight, bool accumulate, float *dinp, const nnz_row_sink *dsink, int unit) {
    const int64_t M = (int64_t)s->N * s->OH * s->OW;
    if (s->compute == NNZ_BF16 && !dinp) return false; /* the rounded path makes both products */
    if (s->compute != NNZ_BF16) {
        if (src) return nnz_gemm_small_backward_src(M, s->IC, s->OC, src, inp, pro, weight, dweight, accumulate, dinp,
                                                    dsink, unit);
        return nnz_gemm_small_backward(M, s->IC, s->OC, dout, inp, weight, dweight, accumulate, dinp);
    }
    const size_t nw = (size_t)s->OC * s->IC;
    float *wr = malloc((nw ? nw : 1) * sizeof(float));
    if (!wr) return false;
    nnz_round_to_bf16((int64_t)nw, weight, wr);
    const bf16_source rs = {src, dout, s->OC};
    const nnz_row_source rsrc = {bf16_source_rows, &rs};
    const bf16_rows ri = {pro, s->IC};
    const nnz_input_prologue rpro = {bf16_round_rows, &ri};
    const bool ok =
        nnz_gemm_small_backward_src(M, s->IC, s->OC, &rsrc, inp, &rpro, wr, dweight, accumulate, dinp, dsink, unit);
    free(wr);
    return ok;
}

bool nnz_conv2d_backward_src_applies(const nnz_conv_shape *s) {
    return conv_path_of(s) == CONV_DEPTHWISE || (conv_path_of(s) == CONV_GEMM_1X1 && use_small_gemm(s));
}

bool nnz_conv2d_backward_src(const nnz_conv_shape *s, const nnz_row_source *dout_src, const float *inp,
                             const nnz_input_prologue *pro, const float *weight, float *dinp, bool accumulate,
                             float *dweight, float *scratch, const nnz_row_sink *dsink, int unit) {
    if (!nnz_conv2d_backward_src_applies(s) || !dinp) return false;
    if (conv_path_of(s) == CONV_GEMM_1X1)
        return small_gemm_1x1_backward(s, dout_src, NULL, inp, pro, weight, dweight, accumulate, dinp, dsink, unit);
    return depthwise_backward(s, inp, pro, dout_src, dsink, unit, NULL, weight, NULL, dinp, accumulate, dweight,
                              scratch);
}

bool nnz_conv2d_backward_src_images(const nnz_conv_shape *s, const nnz_row_source *dout_src, const float *inp,
                                    const nnz_input_prologue *pro, const float *weight, float *dweight, float *scratch,
                                    const nnz_image_sink *isink) {
    if (conv_path_of(s) != CONV_DEPTHWISE) return false;
    return depthwise_backward(s, inp, pro, dout_src, NULL, 1, isink, weight, NULL, NULL, false, dweight, scratch);
}

void nnz_conv2d_backward_ex(const nnz_conv_shape *s, const float *inp, const float *weight, const float *dout,
                            float *dinp, bool accumulate, float *dweight, float *dbias, float *scratch) {
    if (blocks_without_winograd(s)) { /* dense: the gradient of zero weights is dropped by the grad mask */
        const nnz_conv_shape dense = without_sparse(s);
        nnz_conv2d_backward_ex(&dense, inp, weight, dout, dinp, accumulate, dweight, dbias, scratch);
        return;
    }
    const nnz_conv_window g = window_of(s);
    const int64_t out_rows = (int64_t)s->N * s->OH * s->OW;
    if (dbias) nnz_bias_grad_acc(out_rows, s->OC, dout, dbias);
    if (bf16_small_input_backward(s, dinp != NULL)) { /* dweight accumulates over the chunks */
        nnz_conv_shape f = bf16_small_input_f32(s);
        const int chunk = bf16_small_input_grad_images(s);
        const size_t in_img = (size_t)s->H * s->W * s->IC, out_img = (size_t)s->OH * s->OW * s->OC,
                     nw = (size_t)s->OC * s->KH * s->KW * s->IC;
        float *xr = scratch, *dr = xr + round16(chunk * in_img), *wr = dr + round16(chunk * out_img);
        if (dinp) nnz_round_to_bf16((int64_t)nw, weight, wr);
        for (int n0 = 0; n0 < s->N; n0 += chunk) {
            f.N = s->N - n0 < chunk ? s->N - n0 : chunk;
            round_to_bf16_parallel(f.N * in_img, inp + n0 * in_img, xr);
            round_to_bf16_parallel(f.N * out_img, dout + n0 * out_img, dr);
            nnz_conv2d_backward_ex(&f, xr, dinp ? wr : weight, dr, dinp ? dinp + n0 * in_img : NULL, accumulate,
                                   dweight, NULL, wr + round16(nw));
        }
        return;
    }
    const conv_path path = conv_path_of(s);
    if (path == CONV_DEPTHWISE) {
        depthwise_backward(s, inp, NULL, NULL, NULL, 0, NULL, weight, dout, dinp, accumulate, dweight, scratch); /* no buffers */
        return;
    }
    /* the SDDMM's gradient, scattered at the end (sparse Winograd makes its gradient in place) */
    nnz_sparse_weight *sp = s->dense_wgrad || use_winograd(s) ? NULL : s->sparse;
    if (sp) memset(sp->dval, 0, (size_t)nnz_spmat_val_count(&sp->mat) * sizeof(float));
    if (path == CONV_GEMM_1X1) {
        const int M = (int)out_rows;
        /* dweight (OC,IC) += dout^T (OC,M) * inp (M,IC);  dinp (M,IC) += dout (M,OC) * weight (OC,IC):
         * both in one pass over dout when the small GEMM runs them */
        if (!use_small_gemm(s) ||
            !small_gemm_1x1_backward(s, NULL, dout, inp, NULL, weight, dweight, accumulate, dinp, NULL, 1)) {
            weight_grad(s, M, s->IC, dout, inp, dweight);
            if (dinp) input_grad(s, M, s->IC, dout, weight, accumulate ? 1.0f : 0.0f, dinp);
        }
        if (sp) scatter_sparse_grad(sp, weight, dweight, s->IC);
        return;
    }
    const int G = s->groups, ICg = s->IC / G, OCg = s->OC / G, Kg = s->KH * s->KW * ICg;
    const size_t in_img = (size_t)s->H * s->W * s->IC, out_img = (size_t)s->OH * s->OW * s->OC;
    if (dinp && use_winograd(s)) { /* the turned-window convolution of dout, the turned weight in scratch */
        const nnz_conv_window t = turned_window(s);
        nnz_winograd_weight_blocks(s->KH, s->IC, s->OC, weight, true, winograd_kept(s, false), scratch);
        nnz_conv_winograd_blocks(&t, s->N, s->OC, s->IC, dout, scratch, winograd_kept(s, true), accumulate, NULL, dinp,
                                 scratch + round16(nnz_winograd_weight_floats(s->IC, s->OC)));
        dinp = NULL;
    }
    if (dinp && use_implicit_dgrad(s)) {
        implicit_input_grad(s, weight, dout, accumulate, dinp, scratch);
        dinp = NULL; /* done: the chunks below make the weight gradient only */
    } else if (dinp && sparse_turned_input_grad(s, dout, accumulate, dinp))
        dinp = NULL;
    bool wgrad_done = use_winograd(s) || use_implicit_wgrad(s);
    if (use_winograd(s)) /* AutoSparse's dense gradient: every block */
        nnz_conv_winograd_wgrad_blocks(&g, s->N, s->IC, s->OC, inp, dout, s->dense_wgrad ? NULL : winograd_kept(s, false),
                                       dweight, scratch);
    else if (use_implicit_wgrad(s)) implicit_weight_grad(s, inp, dout, dweight, scratch);
    else if (sp && G == 1 && !s->sparse_bf16_bwd && s->compute == NNZ_F32)
        wgrad_done = nnz_sddmm_conv_f32(&sp->mat, &g, s->N, s->IC, inp, dout, s->OC, sp->dval) == NNZ_OK;
    if (wgrad_done && !dinp) {
        if (sp) scatter_sparse_grad(sp, weight, dweight, Kg);
        return;
    }
    if (dinp && bf16_im2col(s) &&
        bf16_turned_input_grad(s, weight, dout, accumulate, dinp, bf16_weights_at(s, scratch), (nnz_bf16 *)scratch,
                               col_region_floats(s)))
        dinp = NULL; /* done: the chunks below make the weight gradient only */
    if (dinp && !accumulate) memset(dinp, 0, (size_t)s->N * in_img * sizeof(float)); /* col2im accumulates */
    const int chunk = images_per_chunk(s);
    if (bf16_im2col(s)) {
        nnz_bf16 *wh = bf16_weights_at(s, scratch), *douth = bf16_dout_at(s, scratch), *colh = (nnz_bf16 *)scratch;
        nnz_bf16 *douth_t = bf16_dout_t_at(s, scratch);
        if (dinp) nnz_cvt_f32_to_bf16((int64_t)s->OC * Kg, weight, wh);
        /* the input rounded once into the im2col region, unless the data gradient below needs it */
        nnz_bf16_src cols = dinp ? (nnz_bf16_src){.p = inp, .f32 = true, .win = &g, .C = s->IC}
                                 : bf16_im2col_source(&g, inp, s->IC, (int64_t)s->N * in_img, colh,
                                                      col_region_floats(s));
        const void *cols_base = cols.p;
        for (int n0 = 0; n0 < s->N; n0 += chunk) {
            const int B = s->N - n0 < chunk ? s->N - n0 : chunk, M = B * s->OH * s->OW;
            /* dweight (OC,Kg) += dout^T (OC,M) * col (M,Kg), dout^T stored transposed so the GEMM
             * packs it by rows instead of gathering pairs across rows; col packed straight from
             * the input on a native path, else made */
            nnz_cvt_f32_to_bf16_transposed(M, s->OC, dout + n0 * out_img, s->OC, douth_t, M);
            const nnz_bf16_src dt = {.p = douth_t, .ld = M};
            cols.p = cols.f32 ? (const void *)((const float *)cols_base + n0 * in_img)
                              : (const void *)((const nnz_bf16 *)cols_base + n0 * in_img);
            if (!nnz_gemm_bf16_src(s->OC, Kg, M, 1.0f, &dt, &cols, 1.0f, dweight, Kg)) {
                /* its im2col overwrites the rounded input: the later chunks read the fp32 one */
                cols.f32 = true;
                cols_base = inp;
                nnz_im2col_nhwc_bf16(&g, B, s->IC, 0, s->IC, inp + n0 * in_img, colh);
                nnz_gemm_bf16(false, false, s->OC, Kg, M, 1.0f, douth_t, M, colh, Kg, 1.0f, dweight, Kg);
            }
            if (!dinp) continue;
            /* dcol (M,Kg) = dout (M,OC) * weight (OC,Kg) in fp32 over the col buffer; dinp += col2im(dcol) */
            nnz_cvt_f32_to_bf16((int64_t)M * s->OC, dout + n0 * out_img, douth);
            nnz_gemm_bf16(false, false, M, Kg, s->OC, 1.0f, douth, s->OC, wh, Kg, 0.0f, scratch, Kg);
            nnz_col2im_nhwc_acc(&g, B, s->IC, 0, s->IC, scratch, dinp + n0 * in_img);
        }
        return;
    }
    for (int n0 = 0; n0 < s->N; n0 += chunk) {
        const int B = s->N - n0 < chunk ? s->N - n0 : chunk, M = B * s->OH * s->OW;
        const float *dout_c = dout + n0 * out_img;
        for (int gi = 0; gi < G; gi++) {
            const float *w_g = weight + (size_t)gi * OCg * Kg;
            float *dw_g = dweight + (size_t)gi * OCg * Kg;
            /* dweight_g (OCg,Kg) += dout_g^T (OCg,M) * col (M,Kg), unless the implicit kernel made it
             * (the data gradient below does not read col: it writes dcol over it) */
            if (!wgrad_done) {
                nnz_im2col_nhwc(&g, B, s->IC, gi * ICg, ICg, inp + n0 * in_img, scratch);
                if (G == 1) weight_grad(s, M, Kg, dout_c, scratch, dw_g);
                else nnz_gemm(s->compute, true, false, OCg, Kg, M, 1.0f, dout_c + (size_t)gi * OCg, s->OC, scratch, Kg,
                              1.0f, dw_g, Kg);
            }
            if (!dinp) continue;
            /* dcol (M,Kg) = dout_g (M,OCg) * weight_g (OCg,Kg), reusing the col buffer; dinp += col2im(dcol) */
            if (G == 1) input_grad(s, M, Kg, dout_c, w_g, 0.0f, scratch);
            else nnz_gemm(s->compute, false, false, M, Kg, OCg, 1.0f, dout_c + (size_t)gi * OCg, s->OC, w_g, Kg, 0.0f,
                          scratch, Kg);
            nnz_col2im_nhwc_acc(&g, B, s->IC, gi * ICg, ICg, scratch, dinp + n0 * in_img);
        }
    }
    if (sp) scatter_sparse_grad(sp, weight, dweight, Kg);
}

void nnz_conv2d_backward(const nnz_conv_shape *s, const float *inp, const float *weight, const float *dout,
                         float *dinp, float *dweight, float *dbias, float *scratch) {
    nnz_conv2d_backward_ex(s, inp, weight, dout, dinp, true, dweight, dbias, scratch);
}
