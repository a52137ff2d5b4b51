/* nn: layers (forward + backward), the model graph, its builder, the zoo,
 * optimizers, LR schedules, the loss, checkpoints (a model and its optimizer
 * state in safetensors) and evaluation.
 *
 * Layers are plain functions over arrays (as llm.c); the shape of every
 * pointer is in the comment above it. Activations are NHWC, batch-major.
 *
 * Gradient convention: every backward function ACCUMULATES (+=) into dinp and
 * into the parameter gradients, so a tensor read by two consumers (residuals)
 * gets the sum; callers zero gradients before a backward pass. dinp may be
 * NULL (nothing upstream needs it, e.g. the first layer). Forward outputs are
 * overwritten. */
#ifndef NNZ_NN_H
#define NNZ_NN_H

#include "base/base.h"
#include "io/io.h"           /* safetensors: checkpoints */
#include "kernels/kernels.h" /* nnz_epilogue */

/* The graph's operations (also the fused activation of a batch norm). */
typedef enum {
    NNZ_OP_LINEAR = 0, NNZ_OP_CONV2D, NNZ_OP_BATCHNORM, NNZ_OP_RELU, NNZ_OP_RELU6, NNZ_OP_IDENTITY,
    NNZ_OP_MAXPOOL, NNZ_OP_AVGPOOL, NNZ_OP_GLOBAL_AVGPOOL, NNZ_OP_FLATTEN, NNZ_OP_ADD, NNZ_OP_DROPOUT,
    NNZ_OP_COUNT
} nnz_op;

/* ===================== layers: convolution and linear ===================== */

/* A conv or linear weight run sparse: the kernels' matrix of W (OC, KH*KW*IC) with the
 * structure of W's nonzeros (sparse_layer.c chooses the format), its values refreshed from the
 * dense weight before each forward. The dense weight stays the master copy: zeros are the mask.
 * dval: the SDDMM gradient at the kept blocks (nnz_spmat_val_count floats). */
typedef struct {
    nnz_spmat mat;
    float *dval;
    nnz_spmat_turned turned; /* training, conv layers whose blocks divide the channels: the matrix
                             of the stride-1 data gradient's turned-window convolution (empty else) */
    int32_t *blocks;      /* format "winograd:16x16": the kept 16x16 channel blocks' lists (one allocation),
                             viewed as by_out (the forward and the weight gradient) and by_in (the data
                             gradient's turned convolution); mat is then empty. NULL: mat */
    nnz_channel_blocks by_out, by_in;
    char format[16];      /* "csr", "bsr:16x16", "winograd:16x16" */
    bool bf16_train;      /* compute NNZ_BF16: the forward, backward-data and SDDMM all have SIMD bf16
                             kernels for this block here, and training runs them (sparse_layer.c) */
} nnz_sparse_weight;

typedef struct {
    int N, H, W, IC;      /* input (N,H,W,IC) */
    int OC, KH, KW;       /* weight (OC,KH,KW,IC/groups) */
    int stride, pad, groups;
    int OH, OW;           /* output (N,OH,OW,OC) */
    nnz_dtype compute;    /* GEMM precision (nnz_gemm): NNZ_F32 (init's default) or NNZ_BF16, which rounds
                             the GEMM inputs to bf16 and accumulates in fp32; depthwise stays fp32 */
    nnz_sparse_weight *sparse; /* non-NULL (groups == 1 only): the GEMMs become SpMM (forward), SpMM^T
                             (backward-data) and SDDMM (backward-weight: only W's nonzeros get a
                             gradient), fp32; or, with blocks (winograd:16x16), Winograd products over
                             the kept channel blocks (a gradient for every weight of a kept block, none
                             elsewhere). NULL (init's default): dense */
    bool sparse_bf16_fwd; /* with sparse: the forward runs the bf16 SpMM (nnz_spmm_bf16_f32in: inputs
                             rounded to bf16, fp32 sums) when the matrix has bf16 values (the planner
                             packs them at compute NNZ_BF16, sparse_layer.c) */
    bool sparse_bf16_bwd; /* with sparse: backward-data and SDDMM run the bf16 kernels
                             (nnz_spmm_bwd_data_bf16_f32in, nnz_sddmm_bf16_f32in) when the matrix has
                             bf16 values (bf16 training of a layer with sparse->bf16_train) */
    bool dense_wgrad;     /* with sparse: the weight gradient is the dense GEMM over every weight, zeros
                             included (AutoSparse's Gradient Annealing: pruned weights still get theirs) */
    bool direct;          /* true: no Winograd; every output is the direct sum over its taps, as im2col +
                             GEMM gives it (the tests' oracle). false (init's default): stride-1 3x3 and 5x5
                             convolutions run Winograd's fewer multiplications (nnz_conv_winograd) */
    const float *kernel_weight; /* optional: the weight already in the layout the forward kernel reads
                             (nnz_conv2d_kernel_weight), made once per model forward instead of once per
                             call (eval calls each layer once per chunk of images). NULL: made per call */
} nnz_conv_shape;
/* Fills OH/OW; INVALID_ARG if channels are not divisible by groups or the output would be empty. */
nnz_status nnz_conv_shape_init(nnz_conv_shape *s, int N, int H, int W, int IC, int OC, int KH, int KW,
                               int stride, int pad, int groups);
/* Floats of scratch the conv needs (im2col buffers etc.) for its forward and backward; the caller
 * provides them. The forward alone (eval, nnz run) needs nnz_conv2d_forward_scratch_floats. */
size_t nnz_conv2d_scratch_floats(const nnz_conv_shape *s);
size_t nnz_conv2d_forward_scratch_floats(const nnz_conv_shape *s);
/* The forward's own weight layout: the small GEMM (1x1 convs, short im2col rows) and the implicit
 * conv read (KH*KW*IC,OC), the depthwise kernels (KH,KW,C). The floats it takes (at most the
 * weight's count), or 0 when the forward reads the weight as it is; nnz_conv2d_kernel_weight
 * writes it (for s->kernel_weight). */
size_t nnz_conv2d_kernel_weight_floats(const nnz_conv_shape *s);
/* The shape runs its products as Winograd convolutions when dense, or sparse as channel blocks */
bool nnz_conv2d_winograd_applies(const nnz_conv_shape *s);
void nnz_conv2d_kernel_weight(const nnz_conv_shape *s, const float *weight, float *out);
/* inp (N,H,W,IC), weight (OC,KH,KW,IC/groups), bias (OC) or NULL -> out (N,OH,OW,OC) */
void nnz_conv2d_forward(const nnz_conv_shape *s, const float *inp, const float *weight, const float *bias,
                        float *out, float *scratch);
/* The same, then ep (NULL: none) applied to the output while it is in cache: a following
 * eval-mode batch norm and relu/relu6 fused into the convolution (see nnz_epilogue). */
void nnz_conv2d_forward_ep(const nnz_conv_shape *s, const float *inp, const float *weight, const float *bias,
                           const nnz_epilogue *ep, float *out, float *scratch);
/* A conv of pro(inp) instead of inp (nnz_input_prologue: in training, the batch norm before it,
 * deferred), forward and backward as the two above (pro reaches only the weight gradient: the
 * data gradient does not read the input): depthwise convs, and in the forward also the bias-free
 * 1x1 convs the small GEMM runs. false, with nothing written but scratch, for any other conv or
 * when the prologue's buffers could not be allocated: the caller then makes pro(inp) itself and
 * calls the plain functions. */
bool nnz_conv2d_forward_pro(const nnz_conv_shape *s, const float *inp, const nnz_input_prologue *pro,
                            const float *weight, const float *bias, const nnz_epilogue *ep, float *out, float *scratch);
/* The forward of pro(inp) (pro may be NULL) with sink's fn (may be NULL) on each block of output
 * rows while it is in cache (nnz_gemm_small_sink: blocks in multiples of `unit` rows): for the 1x1
 * convs without a bias the small GEMM runs; false, with nothing written, otherwise (training: the
 * batch norm after it takes its moments there). */
bool nnz_conv2d_forward_sink(const nnz_conv_shape *s, const float *inp, const nnz_input_prologue *pro,
                             const float *weight, const float *bias, const nnz_epilogue *ep, float *out,
                             const nnz_row_sink *sink, int unit);
bool nnz_conv2d_backward_pro(const nnz_conv_shape *s, const float *inp, const nnz_input_prologue *pro,
                             const float *weight, const float *dout, float *dinp, bool accumulate, float *dweight,
                             float *dbias, float *scratch);
/* The backward of a conv without a bias whose dout is made block by block by dout_src (training:
 * the batch norm after it), never stored, and of pro(inp) when pro is given: for the 1x1 convs the
 * small GEMM runs and the depthwise convs (nnz_conv2d_backward_src_applies), with dinp; scratch as
 * nnz_conv2d_backward_ex's. The same numbers as nnz_conv2d_backward_ex over the made dout (and
 * pro(inp)). dsink (NULL: none; only with accumulate false; unit NNZ_BN_GROUP_ROWS) gets dinp's rows
 * while in cache, as nnz_dwconv_backward_src's (training: the batch norm before the conv takes its
 * sums). false, with nothing written but scratch, when it does not apply or is out of memory. */
bool nnz_conv2d_backward_src_applies(const nnz_conv_shape *s);
bool nnz_conv2d_backward_src(const nnz_conv_shape *s, const nnz_row_source *dout_src, const float *inp,
                             const nnz_input_prologue *pro, const float *weight, float *dinp, bool accumulate,
                             float *dweight, float *scratch, const nnz_row_sink *dsink, int unit);
/* The same for a depthwise conv whose data gradient is never stored: made image by image and
 * handed to isink (nnz_dwconv_backward_src_images). false, with nothing written but scratch, for any
 * other conv or when out of memory. */
bool nnz_conv2d_backward_src_images(const nnz_conv_shape *s, const nnz_row_source *dout_src, const float *inp,
                                    const nnz_input_prologue *pro, const float *weight, float *dweight, float *scratch,
                                    const nnz_image_sink *isink);
/* dout (N,OH,OW,OC) -> dinp (N,H,W,IC) or NULL, dweight (OC,KH,KW,IC/groups), dbias (OC) or NULL */
void nnz_conv2d_backward(const nnz_conv_shape *s, const float *inp, const float *weight, const float *dout,
                         float *dinp, float *dweight, float *dbias, float *scratch);

/* The same with accumulate false: dinp is overwritten (the caller need not zero it);
 * the parameter gradients still accumulate. */
void nnz_conv2d_backward_ex(const nnz_conv_shape *s, const float *inp, const float *weight, const float *dout,
                            float *dinp, bool accumulate, float *dweight, float *dbias, float *scratch);

/* inp (N,IN), weight (OUT,IN) (PyTorch's layout), bias (OUT) or NULL -> out (N,OUT).
 * compute: the GEMM precision, as nnz_conv_shape.compute. */
void nnz_linear_forward(nnz_dtype compute, int N, int IN, int OUT, const float *inp, const float *weight, const float *bias, float *out);
/* dout (N,OUT) -> dinp (N,IN) or NULL, dweight (OUT,IN), dbias (OUT) or NULL */
void nnz_linear_backward(int N, int IN, int OUT, const float *inp, const float *weight, const float *dout,
                         float *dinp, float *dweight, float *dbias);
/* accumulate false: dinp overwritten (parameter gradients still accumulate) */
void nnz_linear_backward_ex(nnz_dtype compute, int N, int IN, int OUT, const float *inp, const float *weight, const float *dout,
                            float *dinp, bool accumulate, float *dweight, float *dbias);

/* ===================== layers: normalization, activations, pooling ===================== */

/* Batch norm over the channel axis of (M,C), M = N*H*W. Matches PyTorch:
 * normalizes with the biased batch variance; running_var is updated with the
 * unbiased one; running = (1-momentum)*running + momentum*batch.
 * save_mean, save_invstd (C) are written for the backward pass. running_mean/var
 * may be NULL (no update); M == 1 updates running_var with the biased variance
 * (PyTorch refuses to train there). The statistics are the same numbers for any
 * thread count. */
void nnz_batchnorm_forward_train(int M, int C, const float *inp, const float *gamma, const float *beta,
                                 float *running_mean, float *running_var, float momentum, float eps,
                                 float *out, float *save_mean, float *save_invstd);
void nnz_batchnorm_forward_eval(int M, int C, const float *inp, const float *gamma, const float *beta,
                                const float *running_mean, const float *running_var, float eps, float *out);
/* dout (M,C) -> dinp (M,C), dgamma (C), dbeta (C); each of the three may be NULL */
void nnz_batchnorm_backward(int M, int C, const float *inp, const float *gamma, const float *save_mean,
                            const float *save_invstd, const float *dout, float *dinp, float *dgamma, float *dbeta);

/* Batch norm fused with the activation after it, act = NNZ_OP_RELU, NNZ_OP_RELU6 or
 * NNZ_OP_IDENTITY (none): out = act(bn(inp)), the same arithmetic as the two layers in
 * turn, in one pass. The backward takes dout, the gradient of the activation's output, and
 * applies the activation's mask (relu passes where its output > 0, relu6 where 0 < out < 6)
 * from the pre-activation it recomputes from inp, save_mean, save_invstd, gamma and beta
 * exactly as the forward computed it (beta unused, and may be NULL, for IDENTITY): it does
 * not read the forward's output. accumulate: dinp += (the layer convention), or dinp =
 * (overwritten: the caller need not zero it); dgamma, dbeta always accumulate. */
void nnz_batchnorm_forward_train_act(int M, int C, const float *inp, const float *gamma, const float *beta,
                                     float *running_mean, float *running_var, float momentum, float eps, nnz_op act,
                                     float *out, float *save_mean, float *save_invstd);
void nnz_batchnorm_forward_eval_act(int M, int C, const float *inp, const float *gamma, const float *beta,
                                    const float *running_mean, const float *running_var, float eps, nnz_op act,
                                    float *out);
void nnz_batchnorm_backward_act(int M, int C, const float *inp, nnz_op act, const float *gamma, const float *beta,
                                const float *save_mean, const float *save_invstd, const float *dout, float *dinp,
                                bool accumulate, float *dgamma, float *dbeta);
/* A training batch norm whose moments are made by its input's producer while each block of
 * rows is in cache (nnz_row_sink): _begin (false: more than 256 channels, or out of memory;
 * nothing to free), _rows on every block (blocks start at multiples of NNZ_BN_GROUP_ROWS rows and
 * hold a multiple of it, the last one the rest), then _forward_train_moments instead of
 * nnz_batchnorm_forward_train_act (the same arguments, the same numbers; it frees mo). */
#define NNZ_BN_GROUP_ROWS 256
typedef struct {
    int M, C;
    double *part; /* per group of NNZ_BN_GROUP_ROWS rows: mean (C), m2 (C) */
} nnz_bn_moments;
bool nnz_batchnorm_moments_begin(int M, int C, nnz_bn_moments *mo);
void nnz_batchnorm_moments_rows(const void *ctx, int64_t r0, int rows, const float *x);
void nnz_batchnorm_forward_train_moments(nnz_bn_moments *mo, const float *inp, const float *gamma,
                                         const float *beta, float *running_mean, float *running_var, float momentum,
                                         float eps, nnz_op act, float *out, float *save_mean, float *save_invstd);
/* A training batch norm whose output is never stored: nnz_batchnorm_forward_train_act with out
 * NULL computes the statistics (save_mean, save_invstd, the running ones) and no output; a
 * conv after it (depthwise or 1x1) then reads act(bn(x)) through nnz_batchnorm_apply_rows as its input
 * prologue (nnz_input_prologue), the same numbers as the forward's own output. */
typedef struct {
    int C;
    const float *mean, *invstd, *gamma, *shift; /* (C): save_mean, save_invstd, gamma, beta */
    nnz_op act;                                 /* NNZ_OP_RELU, NNZ_OP_RELU6 or NNZ_OP_IDENTITY */
} nnz_bn_apply;
/* out (rows,C) = act((x - mean)*scale + shift), scale = invstd*gamma, for ctx, an nnz_bn_apply: single-threaded (an
 * nnz_input_prologue's fn), and the same arithmetic as the forward's output pass */
void nnz_batchnorm_apply_rows(const void *ctx, int64_t rows, const float *x, float *out);
/* the same over (M,C), threaded: the output the forward did not store, when it is needed after all */
void nnz_batchnorm_apply(int M, const nnz_bn_apply *a, const float *x, float *out);
/* The backward in two steps, for a consumer that takes the data gradient block by block
 * (nnz_row_source) instead of stored: _begin runs the sums (dgamma, dbeta accumulate, as
 * nnz_batchnorm_backward_act's) and keeps the coefficients in g; _rows writes rows [r0, r0+rows)
 * of the data gradient (overwriting, densely, C wide) into out, the same numbers as
 * nnz_batchnorm_backward_act's; _end frees g. _begin returns false (nothing written) when out of
 * memory. inp and dout must stay until _end. */
typedef struct {
    int C;
    const float *inp, *dout, *mean;
    float hmax;
    bool masked;
    float *coef; /* 5*C: per channel tile at 2*c0 its scale and shift, then mean_dy, k, a (C each) */
} nnz_bn_grad;
/* The backward's sums (dout's and dout·x̂'s, per channel) made by the layer that writes dout, from
 * each block of its rows while in cache (nnz_row_sink): _begin (false: more than 256 channels, or
 * out of memory; nothing to free; gamma, beta, the saved statistics as _begin's below; groups:
 * room for the per-group sums _rows makes, false for a consumer of nnz_batchnorm_grad_block only),
 * _rows on every block (blocks as nnz_batchnorm_moments_rows's), then
 * nnz_batchnorm_backward_begin with sums instead of its own pass over dout (the same numbers), and
 * _free. */
typedef struct {
    int M, C;
    const float *inp, *mean;
    float hmax;
    float *affine;  /* masked: the activation's scale and shift (C each), as the backward makes them; else NULL */
    double *part;   /* per group of NNZ_BN_GROUP_ROWS rows: sum dout (C), sum dout*(x - mean) (C); or NULL */
} nnz_bn_grad_sums;
bool nnz_batchnorm_grad_sums_begin(int M, int C, const float *inp, nnz_op act, const float *gamma, const float *beta,
                                   const float *save_mean, const float *save_invstd, bool groups, nnz_bn_grad_sums *gs);
void nnz_batchnorm_grad_sums_rows(const void *ctx, int64_t r0, int rows, const float *dout);
void nnz_batchnorm_grad_sums_free(nnz_bn_grad_sums *gs);
/* The backward taken apart, for a consumer that does the rest itself (expansion_grad.c), with gs
 * from _begin without groups: over rows [r0, r0+rows) of the input with their dout rows dy
 * (dense, C wide), the sums' partial s1 = Σ g, s2 = Σ g·(x - mean) (C doubles each; g = dy masked
 * by the activation) and out = g·a (a: C floats, invstd·gamma as nnz_batchnorm_grad_coefs makes it);
 * then, from the batch's sums (M rows), dgamma and dbeta (accumulate; may be NULL) and the data
 * gradient's coefficients: dinp = (g - mean_dy - (x - mean)·k)·a, as nnz_batchnorm_backward_act's. */
void nnz_batchnorm_grad_block(const nnz_bn_grad_sums *gs, const float *a, int64_t r0, int rows, const float *dy,
                              double *s1, double *s2, float *out);
void nnz_batchnorm_grad_coefs(int M, int C, const double *sdy, const double *sdyx, const float *gamma,
                              const float *save_invstd, float *dgamma, float *dbeta, float *mean_dy, float *k,
                              float *a);
/* sums: NULL, or made (as above) over this dout with the same act, gamma, beta and statistics */
bool nnz_batchnorm_backward_begin(int M, int C, const float *inp, nnz_op act, const float *gamma, const float *beta,
                                  const float *save_mean, const float *save_invstd, const float *dout, float *dgamma,
                                  float *dbeta, const nnz_bn_grad_sums *sums, nnz_bn_grad *g);
void nnz_batchnorm_backward_rows(const void *ctx, int64_t r0, int rows, float *out);
void nnz_batchnorm_backward_end(nnz_bn_grad *g);
/* The backward of an expansion: a bias-free 1x1 conv (x -> z), a training batch norm with its fused
 * activation act (z -> y), and a depthwise conv, y's only reader, whose data gradient dy comes image
 * by image (nnz_conv2d_backward_src_images with nnz_expansion_grad_image as the image sink): the
 * batch norm's and the 1x1 conv's gradients without storing dy or dz (expansion_grad.c says how).
 * _begin (NULL: out of memory, nothing to free), the images (each once, P pixels, in `slots` slots
 * as the depthwise conv hands them), then _end (frees) or, to give up, _free. dw1, dgamma, dbeta
 * accumulate; dx (may be NULL) is overwritten or accumulated into (accumulate). The same gradients
 * as the layers in turn up to rounding. */
typedef struct {
    int N, P, C, IC, slots;
    const float *x, *z, *w1; /* x (N,P,IC), z (N,P,C), w1 (C,IC) */
    float *dw1, *dx;
    bool accumulate;
    nnz_op act;
    const float *gamma, *beta, *save_mean, *save_invstd;
    float *dgamma, *dbeta;
} nnz_expansion_grad_args;
typedef struct nnz_expansion_grad nnz_expansion_grad;
nnz_expansion_grad *nnz_expansion_grad_begin(const nnz_expansion_grad_args *args);
void nnz_expansion_grad_image(const void *ctx, int slot, int n, const float *dy);
void nnz_expansion_grad_end(nnz_expansion_grad *e);
void nnz_expansion_grad_free(nnz_expansion_grad *e);
/* scale (C) = gamma / sqrt(running_var + eps), the eval-mode multiplier, computed as the eval forward does */
void nnz_batchnorm_eval_coeffs(int C, const float *gamma, const float *running_var, float eps, float *scale);

/* Elementwise over n floats. The backward of relu/relu6 reads the forward OUTPUT
 * (so in-place forward is allowed): relu passes where out > 0, relu6 where 0 < out < 6. */
void nnz_relu_forward(int64_t n, const float *inp, float *out);
void nnz_relu_backward(int64_t n, const float *out, const float *dout, float *dinp);
void nnz_relu6_forward(int64_t n, const float *inp, float *out);
void nnz_relu6_backward(int64_t n, const float *out, const float *dout, float *dinp);
/* accumulate false: dinp = the masked dout (overwritten) */
void nnz_relu_backward_ex(int64_t n, const float *out, const float *dout, float *dinp, bool accumulate);
void nnz_relu6_backward_ex(int64_t n, const float *out, const float *dout, float *dinp, bool accumulate);
/* out = a + b; backward, one pass over dout: da (+)= dout (overwritten when !da_accumulate),
 * db += dout (each may be NULL) */
void nnz_add_forward(int64_t n, const float *a, const float *b, float *out);
void nnz_add_backward_ex(int64_t n, const float *dout, float *da, bool da_accumulate, float *db);
/* p = 0 and dst = src over n floats, across the threads when n is large (the gradients' resets) */
void nnz_zero_floats(int64_t n, float *p);
void nnz_copy_floats(int64_t n, const float *src, float *dst);
/* dinp += dout (identity, flatten) */
void nnz_accumulate(int64_t n, const float *dout, float *dinp);

typedef struct {
    int N, H, W, C;      /* input (N,H,W,C) */
    int K, stride, pad;  /* square window */
    int OH, OW;          /* output (N,OH,OW,C) */
} nnz_pool_shape;
/* floor mode, as PyTorch's default; INVALID_ARG if the output would be empty or pad > K/2 */
nnz_status nnz_pool_shape_init(nnz_pool_shape *s, int N, int H, int W, int C, int K, int stride, int pad);
/* argmax (N,OH,OW,C): flat index into (H,W) of the winning input, for the backward; NULL: not
 * wanted (inference). */
void nnz_maxpool_forward(const nnz_pool_shape *s, const float *inp, float *out, int32_t *argmax);
void nnz_maxpool_backward(const nnz_pool_shape *s, const int32_t *argmax, const float *dout, float *dinp);
/* dinp (+)= the max pool's gradient; accumulate false overwrites all of dinp (NaNs there do not
 * propagate). relu_out (N,OH,OW,C) or NULL: the pool's output when it pools a relu's output, to
 * fuse that relu's backward: the gradient passes only where the pooled value is > 0, exactly
 * relu's mask at the selected input (dinp is then the relu's input gradient). The same result
 * as the scatter above (+ the relu backward) when windows do not overlap (stride == K, pad 0),
 * where each input is written once in order; else a scatter after zeroing. */
void nnz_maxpool_backward_ex(const nnz_pool_shape *s, const int32_t *argmax, const float *dout, const float *relu_out,
                             float *dinp, bool accumulate);
/* average over the window with padding counted (PyTorch's count_include_pad=True) */
void nnz_avgpool_forward(const nnz_pool_shape *s, const float *inp, float *out);
void nnz_avgpool_backward(const nnz_pool_shape *s, const float *dout, float *dinp);
/* inp (N,HW,C) -> out (N,C) */
void nnz_global_avgpool_forward(int N, int HW, int C, const float *inp, float *out);
void nnz_global_avgpool_backward(int N, int HW, int C, const float *dout, float *dinp);

/* Inverted dropout: keep with probability 1-p, scale kept by 1/(1-p). The mask
 * (n bytes, 1 = kept) is drawn from the counter-based rng, so a step is reproducible:
 * element i uses draw rng->counter + i, and the counter advances by n. p in [0,1]. */
void nnz_dropout_forward(int64_t n, float p, nnz_rng *rng, const float *inp, float *out, uint8_t *mask);
void nnz_dropout_backward(int64_t n, float p, const uint8_t *mask, const float *dout, float *dinp);

/* Softmax cross-entropy with label smoothing (PyTorch's definition: target =
 * (1-s)*onehot + s/C). logits (N,C), labels (N). Returns the mean loss;
 * writes dlogits (N,C) = d(mean loss)/d(logits) (overwritten) when non-NULL, and
 * the number of argmax-correct rows (first maximum wins) into *correct when non-NULL.
 * A label >= C is the caller's bug: NaN is returned. */
float nnz_softmax_xent(int N, int C, const float *logits, const uint8_t *labels, float smoothing,
                       float *dlogits, int *correct);

/* ===================== the model graph ===================== */

const char *nnz_op_name(nnz_op op);            /* "conv2d", ... (the JSON names) */
int nnz_op_from_name(const char *name);        /* -1 if unknown */

#define NNZ_NAME_MAX 64
typedef struct {
    nnz_op op;
    char name[NNZ_NAME_MAX];  /* unique; parameters are "<name>.weight" etc. */
    int input;        /* node feeding this one; -1 = the model input */
    int skip;         /* ADD only: the other operand's node (-1 = the model input) */
    int block;        /* the block (e.g. inverted residual) it belongs to; -1 = none */
    /* hyper-parameters, those that apply to op */
    int out_ch;                 /* conv: OC; linear: OUT */
    int k, stride, pad, groups; /* conv (square kernel) and pools */
    bool has_bias;              /* conv, linear */
    float eps, momentum;        /* batchnorm (defaults 1e-5, 0.1) */
    float p;                    /* dropout */
    /* derived by nnz_model_finalize */
    int in_h, in_w, in_c;       /* per-image input shape */
    int h, w, c;                /* per-image output shape (linear/flatten: 1,1,features) */
    int weight, bias;           /* parameter indices or -1 (batchnorm: gamma, beta) */
    int running_mean, running_var; /* batchnorm buffers or -1 */
    int64_t flops;              /* forward FLOPs per image: conv/linear 2 per multiply-add (bias not
                                   counted), batchnorm 2 per element, add 1 per element, avgpool k*k
                                   and global_avgpool h*w per output; relu/maxpool/copies 0 */
} nnz_node;

typedef struct {
    char name[NNZ_NAME_MAX + 16]; /* "<node>.weight", "<node>.running_mean", ... */
    nnz_tensor value;             /* f32, in the layouts documented above */
    float *grad;                  /* same size; NULL for buffers */
    bool trainable;               /* false for batch-norm running statistics */
    bool no_decay;                /* biases and batch-norm gamma/beta */
    int node;
} nnz_param;

/* How nnz_model_reserve runs a node (model_exec.c explains the fusions). */
typedef struct nnz_node_exec {
    int fused_act;      /* batchnorm or conv: the in-place relu/relu6 after it that it computes itself, or -1 */
    int fused_into;     /* relu/relu6: the node that computes it (its forward is skipped), or -1 */
    int eval_bn;        /* conv: the batchnorm applied as its eval-mode epilogue (written into that
                           node's buffer), or -1 */
    bool eval_folded;   /* batchnorm: computed by its conv in eval mode */
    bool grad_written;  /* backward overwrites (or never reads) this node's gradient: no zeroing */
    int pool_relu;      /* maxpool (windows not overlapping): the relu before it whose backward it
                           computes, writing that relu's input gradient, or -1 */
    bool pool_fused;    /* relu: its backward is computed by the max pool after it (pool_relu) */
    int act_owner;      /* the node whose buffer holds this node's output: itself, or for an alias or
                           an in-place activation its input's owner */
    size_t frame_offset; /* eval chunks: where the owner's output sits in a thread's frame, in floats
                            per image of the chunk; SIZE_MAX: in the batch's buffer (the output's) */
    int deferred_to;    /* batchnorm: in a training forward it stores no output; the conv deferred_to
                           (depthwise, or a bias-free 1x1), its output's only reader, applies it (and its
                           fused activation) to the batch norm's input as it reads it
                           (nnz_conv2d_forward_pro, nnz_conv2d_backward_src). -1: none */
    int input_bn;       /* conv: the batch norm deferred into it, or -1 */
    bool deferred_made; /* batchnorm with deferred_to, in a training step: its output was made after all
                           (the conv could not apply it), so the conv's backward reads it as stored */
    nnz_bn_moments moments; /* batchnorm, during a training forward: its moments, made by the 1x1 conv
                           before it block by block (moments.part non-NULL: ready), or none */
    bool dout_streamed; /* conv, during a backward: the batch norm after it ran this conv's backward on
                           its data gradient block by block (never stored), so the conv's turn is skipped */
    nnz_bn_grad_sums grad_sums; /* batchnorm, during a backward: its sums, made by the conv after it from
                           each block of its data gradient (grad_sums.part non-NULL: ready), or none */
    bool grad_sums_given; /* batchnorm: the last backward used grad_sums (what the tests observe) */
    bool grad_taken;    /* batchnorm, during a backward: its backward and its 1x1 conv's were done with the
                           depthwise conv's after it (an expansion, expansion_grad.c): its turn is skipped */
    float *eval_scale;  /* conv with eval_bn: out_ch floats for the folded multiplier */
    float *kernel_weight; /* conv that may read its weight in its forward kernel's layout: room for it,
                             made at a forward (nnz_conv2d_kernel_weight), or NULL */
    float *kernel_weight_of; /* the weight it was made from (kernel_weight_made): a forward whose weight
                             equals it bit for bit keeps it (eval calls forward per batch; Winograd's
                             transform costs as much as a one-image forward of the layer) */
    bool kernel_weight_made;
    nnz_dtype kernel_weight_compute; /* ... at this precision */
    /* owner of an activation buffer, with m->act_layout_stored (act_store.c): */
    bool stored;         /* ... its buffer is stored in bf16 between the forward's and backward's reads */
    int last_fwd_reader; /* ... the last node whose training forward reads it */
    int widen_by;        /* ... the latest backward turn that may read it */
    uint8_t act_state;   /* ... during a step: fp32 (forward), bf16, or widened again */
    float *fwd_buf, *bwd_buf; /* ... its fp32 regions in the forward and in the backward, in the shared pool */
    nnz_bf16 *bf16_buf;  /* ... its bf16 copy */
    bool grad_pooled;    /* its gradient buffer is in the shared pool too, live over backward turns */
    int grad_first, grad_last; /* ... from grad_first (zeroed then unless grad_written) down to grad_last */
    int64_t sparse_forwards, sparse_backwards; /* conv/linear: passes run on the sparse kernels since
                                                  nnz_model_reserve (what the tests observe) */
    int64_t sparse_bf16_forwards, sparse_bf16_backwards; /* ... of them in training, on the bf16 kernels
                                                  (forward; backward-data and SDDMM) */
} nnz_node_exec;

/* ---- sparse layers (sparse_layer.c) ----
 * How conv (groups == 1) and linear layers whose weights hold zeros run. */
typedef enum { NNZ_SPARSE_AUTO = 0, NNZ_SPARSE_DENSE, NNZ_SPARSE_FORCED } nnz_sparse_kind;
typedef struct {
    nnz_sparse_kind kind;
    int r, c;             /* FORCED: the block (1x1 = CSR) */
    bool winograd;        /* FORCED "winograd:16x16": Winograd convolutions over the kept 16x16 channel blocks
                             where a layer runs Winograd and its zeros are whole blocks at every tap;
                             bsr:16x16 elsewhere */
} nnz_sparse_format;
/* "auto", "dense", "csr", "bsr:RxC", "winograd:16x16"; INVALID_ARG with the list otherwise */
nnz_status nnz_sparse_format_parse(const char *text, nnz_sparse_format *out);
void nnz_sparse_format_name(const nnz_sparse_format *f, char *buf, size_t len);
/* A layer's decision, for logs and nnz info. r = c = 0: dense. */
typedef struct {
    double density, block_fill, speedup; /* speedup: the estimate behind an auto choice */
    int r, c;
    bool winograd;                       /* r x c (16x16) channel blocks on the Winograd products */
    char why[160];
} nnz_sparse_plan;
/* A plan's format by name: "dense", "csr", "bsr:RxC", "winograd:16x16" */
void nnz_sparse_plan_format_name(const nnz_sparse_plan *p, char *buf, size_t len);
/* conv (groups 1) and linear: the layers the sparse kernels, masks and pruning apply to. Gives
 * the weight as (rows, cols) = (OC, KH*KW*IC) or (OUT, IN); false for every other node. */
bool nnz_node_weight_matrix(const nnz_node *n, int *rows, int *cols);
/* Measures every layer, decides, builds the sparse matrices (m->sparse, m->sparse_plan). train:
 * for a training forward (at compute NNZ_BF16, bf16 values only for the layers training runs
 * in bf16); else for inference. */
nnz_status nnz_model_sparse_plan(nnz_model *m, bool train);
void nnz_model_sparse_clear(nnz_model *m);
/* Copies the dense weights' current values into the sparse matrices (before a forward). */
void nnz_model_sparse_refresh(nnz_model *m);
/* Zeroes the gradient of every conv/linear weight that is zero (m->grad_mask training). */
void nnz_model_mask_grads(nnz_model *m);

/* ---- the shared pool of a training reservation (act_store.c) ----
 * Every training reservation keeps the activation gradients in one pool, each present only over
 * the backward turns that touch it. With m->bf16_activations at bf16 compute the activations join
 * it: fp32 while the forward reads them, bf16 until the backward reads them, then fp32 again.
 * Buffers whose lives do not overlap share memory. */
/* a node's output per image, in floats */
static inline int64_t nnz_node_numel(const nnz_node *n) { return (int64_t)n->h * n->w * n->c; }
/* alias nodes (identity, flatten) share their input's storage, when that input is a node */
static inline bool nnz_node_is_alias(const nnz_node *n) {
    return (n->op == NNZ_OP_IDENTITY || n->op == NNZ_OP_FLATTEN) && n->input >= 0;
}
/* eval forwards run chunks in per-thread frames (model_exec.c), never over the batch's buffers */
bool nnz_eval_uses_frames(const nnz_model *m);
bool nnz_act_store_wanted(const nnz_model *m);             /* its options ask for it */
bool nnz_grads_pool_wanted(const nnz_model *m);            /* training pools the activation gradients */
void nnz_act_store_plan(nnz_model *m, bool training);       /* after the fusion plan: which buffers, their lives */
int nnz_act_grad_owner(const nnz_model *m, int x);          /* whose gradient buffer node x's is (aliases share) */
nnz_status nnz_act_store_layout(nnz_model *m, int batch);   /* after the other buffers: the pool, the pointers */
void nnz_act_store_begin(nnz_model *m, int n);              /* a training forward of n images starts */
void nnz_act_store_after_forward(nnz_model *m, int t);      /* node t's forward is done */
void nnz_act_store_turn(nnz_model *m, int t, int n);        /* the backward turn of node t (n images) starts */
float *nnz_act_ready(nnz_model *m, int idx);                /* node idx's output, fp32, for a backward read */

/* Eval-mode forward runs the network depth-first over chunks of images whose largest
 * layer (input + output) takes at most about this many bytes (model_exec.c). */
#ifndef NNZ_EVAL_CHUNK_BYTES
#define NNZ_EVAL_CHUNK_BYTES (2 << 20)
#endif

struct nnz_model {
    int in_h, in_w, in_c, num_classes;
    int n_nodes, cap_nodes;
    nnz_node *nodes;
    int n_params;
    nnz_param *params;
    int current_block;            /* builder state */
    nnz_status build_error;       /* first builder error, reported by finalize */
    char build_message[256];      /* ... and its message (nnz_last_error may be overwritten meanwhile) */
    bool finalized;
    /* execution options, read by nnz_model_reserve */
    bool input_grad;              /* backward also fills dinput (gradient checks, saliency) */
    bool exact_grad;              /* backward: only the fusions that keep every bit of the layers' own
                                     arithmetic (not the expansion's, expansion_grad.c): the tests
                                     compare the fused and unfused plans bit for bit with it */
    nnz_dtype compute;            /* conv/linear GEMM precision (nnz_conv_shape.compute); NNZ_F32 by default */
    nnz_sparse_format sparse_format; /* how layers with zero weights run (sparse_layer.c); auto by default */
    bool grad_mask;               /* training keeps zero weights at zero (masked/pruned training) */
    bool sparse_planned;          /* m->sparse matches the weights' zero pattern */
    nnz_sparse_weight **sparse;   /* per node: its sparse matrix, or NULL (dense) */
    nnz_sparse_plan *sparse_plan; /* per node: the decision (conv/linear nodes) */
    bool run_sparse;              /* this forward (and its backward) use m->sparse */
    bool sparse_planned_train;    /* ... by a training forward (its bf16 values: the training ones only) */
    bool run_sparse_bf16;         /* ... and sparse layers run the bf16 kernels (compute NNZ_BF16): every pass of
                                     an eval forward that has bf16 values; in training the layers with bf16_train */
    bool run_sparse_train;        /* ... for a training forward and its backward */
    bool train_sparse;            /* training runs sparse layers even without grad_mask: the caller moves the
                                     zeros between steps and sets sparse_planned = false (AutoSparse's w~),
                                     so each training forward replans from the weights' current zeros */
    bool dense_wgrad;             /* sparse layers compute their weight gradient densely (nnz_conv_shape) */
    bool conv_direct;             /* convolutions sum their taps directly, no Winograd (nnz_conv_shape.direct):
                                     false by default; tests that compare two models' sums set it */
    bool bf16_activations;        /* bf16 training stores the activations between layers in bf16 (act_store.c):
                                     less memory (vgg8's step 346 -> 324 MiB), two conversion passes; false by default */
    bool act_grads_apart;         /* training keeps each activation gradient in its own buffer rather than in the
                                     shared pool (act_store.c); false by default (the tests compare the two) */
    bool grad_layout_wanted;      /* the reservation pools the gradients (nnz_grads_pool_wanted then) */
    bool act_layout_wanted;       /* the reservation was made for it (nnz_act_store_wanted then) */
    bool act_layout_stored;       /* ... and its buffers are laid out for it (not when nothing was to gain) */
    int act_stored_n;             /* images of the training forward whose activations are stored (0: none) */
    int act_turn;                 /* the backward turn running (act_store.c checks its reads against it) */
    bool keep_activations;        /* false (default): relu/relu6 run in place over a sole-consumer conv/linear/
                                     batchnorm/add output, which then holds the activation's output */
    bool eval_batch_buffers;      /* eval forwards run over the batch's buffers, not per-thread frames
                                     (plan_eval_frames); false by default (the tests compare the two) */
    nnz_arena param_arena;        /* parameters, gradients */
    bool graph_only;              /* built by nnz_model_graph_from_json: parameters have shapes, no storage */
    /* activations: allocated by nnz_model_reserve for up to batch_cap images */
    int batch_cap;
    bool reserved_training;       /* ... with the backward's buffers (dact, pool indices, ...); false: eval's only */
    nnz_arena act_arena;
    float **act;                  /* per node: output (batch_cap, h, w, c); identity/flatten alias their
                                     input's buffer (a copy when fed by the model input) */
    float **dact;                 /* per node: gradient of the output (aliased for identity/flatten) */
    void **aux;                   /* per node: bn save mean/invstd, maxpool argmax, dropout mask */
    float *scratch;               /* shared by convs (max over nodes) */
    struct nnz_node_exec *exec;   /* per node: the fusion plan made by nnz_model_reserve (model_exec.c) */
    float *dinput;                /* gradient w.r.t. the model input (unused by training) */
    float *eval_scratch;          /* eval: one conv scratch per thread slot, for a chunk of images */
    size_t eval_scratch_floats;   /* ... floats per slot */
    int eval_scratch_slots;       /* ... slots (the thread count at reserve time) */
    int eval_chunk_max;           /* ... images per chunk at most */
    float *eval_frames;           /* eval: per thread slot, the frame holding a chunk's activations (but the
                                     output's), buffers reused once their last reader ran; NULL: eval runs
                                     over the batch's buffers */
    size_t eval_frame_per_image;  /* ... floats per image of the chunk (a slot: eval_chunk_max times this); planned
                                     (and the chunks cut by it) even when eval_frames is NULL */
    float **eval_frame_tables;    /* ... per slot, n_nodes pointers: the chunk's buffer of each node */
    nnz_rng dropout_rng;          /* its counter is part of the checkpoint */
    double *profile;              /* NULL, or per node {forward, backward} seconds of training steps while
                                     profiling (nnz_model_profile); heap, freed with the model */
    int profile_steps;            /* ... training backwards counted */
    bool profiling;
    const uint8_t *act_identity;  /* NULL, or one byte per node owned by the caller: a relu/relu6 node whose byte
                                     is nonzero computes the identity instead, forward and backward, in every
                                     fusion; may change between steps without a new reserve (DepthShrinker's
                                     gates, src/shrink) */
};

/* Builder. Each nnz_add_* appends a node fed by the previous one (the first by
 * the model input) and returns its index; errors are remembered and reported
 * by nnz_model_finalize. */
nnz_status nnz_model_create(int in_h, int in_w, int in_c, nnz_model **out);
int nnz_add_conv2d(nnz_model *m, const char *name, int out_ch, int k, int stride, int pad, int groups, bool bias);
int nnz_add_linear(nnz_model *m, const char *name, int out_features, bool bias); /* needs a vector input: add a
                                                                   flatten or global_avgpool after a spatial node */
int nnz_add_batchnorm(nnz_model *m, const char *name);
int nnz_add_activation(nnz_model *m, const char *name, nnz_op op); /* RELU, RELU6, IDENTITY */
int nnz_add_pool(nnz_model *m, const char *name, nnz_op op, int k, int stride, int pad); /* MAXPOOL, AVGPOOL */
int nnz_add_global_avgpool(nnz_model *m, const char *name);
int nnz_add_flatten(nnz_model *m, const char *name);
int nnz_add_dropout(nnz_model *m, const char *name, float p);
int nnz_add_residual(nnz_model *m, const char *name, int skip_node); /* prev + output of skip_node */
int nnz_add_node(nnz_model *m, const nnz_node *spec); /* the general form: spec->input is honoured */
void nnz_block_begin(nnz_model *m);   /* nodes added until nnz_block_end share a new block id */
void nnz_block_end(nnz_model *m);
/* Infers shapes, checks the graph, allocates and initialises parameters
 * (PyTorch's defaults: kaiming-uniform(a=sqrt(5)) weights, uniform(±1/sqrt(fan_in))
 * biases, BN gamma=1 beta=0 mean=0 var=1) from seed. num_classes = last node's features. */
nnz_status nnz_model_finalize(nnz_model *m, uint64_t seed);
/* The double with the fewest digits that reads back as f (0.4f -> 0.4, 1e-5f -> 1e-05), for JSON. */
double nnz_shortest_double(float f);

int nnz_model_find_param(const nnz_model *m, const char *name); /* -1 if none */
int nnz_model_find_node(const nnz_model *m, const char *name);  /* -1 if none */
/* Appends a zero-initialised fp32 parameter (with a gradient when trainable) to a finalized
 * model, owned by node; for state that is not a layer's, such as a gate score. *index gets its
 * index. INVALID_ARG: a duplicate or too long name, a bad node or shape; NOMEM: no memory. */
nnz_status nnz_model_add_param(nnz_model *m, const char *name, int node, int ndim, const int64_t *shape,
                               bool trainable, bool no_decay, int *index);
/* Buffers for batches of up to `batch` images: nnz_model_reserve for training (forward and
 * backward), nnz_model_reserve_inference for eval forwards only (no activation gradients, pool
 * indices, dropout masks or gradient scratch, and with eval frames no batch buffer but the
 * output's). A training forward reserves for training, an eval forward for inference unless
 * training's buffers are already there. */
nnz_status nnz_model_reserve(nnz_model *m, int batch);
nnz_status nnz_model_reserve_inference(nnz_model *m, int batch);
/* The bytes nnz_model_reserve(m, batch) (training) or nnz_model_reserve_inference(m, batch)
 * takes from the activation arena at the current thread count (an upper bound: exact but for
 * up to 64 bytes of rounding per buffer). Leaves no buffers reserved. */
nnz_status nnz_model_activation_bytes(nnz_model *m, int batch, bool training, size_t *bytes);
/* Caps the activation arena (0 = no cap): a reserve past it fails with NNZ_ERR_NOMEM. */
void nnz_model_set_activation_limit(nnz_model *m, size_t bytes);
/* The shared conv scratch (im2col columns of a chunk of images) at `batch`, in bytes. */
size_t nnz_model_conv_scratch_bytes(const nnz_model *m, int batch);
/* nnz_model_from_json without parameter storage (every value.data and grad NULL): the graph and
 * the parameters' names and shapes, for a runner that decodes the weights itself (nnz run), so
 * opening a model never holds its weights. Not for nnz_model_forward. */
nnz_status nnz_model_graph_from_json(const char *json, nnz_model **out);

/* ---- memory budgets (budget.c): the estimate's parts shared by train, eval and run ---- */
/* An estimated peak: resident (measured before the batch's buffers), activations (the batch's
 * activations and scratch; nnz run: its decoded weights too), buffers (batches, labels, orders),
 * runtime (nnz_budget_runtime_bytes), total (their sum). */
typedef struct { size_t resident, activations, buffers, runtime, total; } nnz_mem_need;
/* The runtime's share per thread (OpenMP stacks, OpenBLAS buffers; nnz run's decoding thread) */
#define NNZ_BUDGET_THREAD_BYTES ((size_t)4 << 20)
/* What the libraries touch while m runs a batch at the current thread count (budget.c lists the
 * terms): sparse = layers hold zeros (the sparse formats), pruning = GMP makes magnitude masks. */
size_t nnz_budget_runtime_bytes(const nnz_model *m, int batch, bool sparse, bool pruning);
/* The same for an fp32 dense run of nodes [first, last] only at batch (nnz run's per-layer plans:
 * the base and per-thread shares, and with threads threaded OpenBLAS's copy of those nodes' largest
 * left GEMM operand: a conv's im2col scratch for one image, as nnz run convolves image by image,
 * or a linear layer's input at batch). */
size_t nnz_budget_runtime_range_bytes(const nnz_model *m, int first, int last, int batch);
/* *total = the estimated peak resident bytes at batch (>= 1) */
typedef nnz_status (*nnz_budget_need_fn)(void *ctx, int batch, size_t *total);
/* The largest batch <= most whose need fits budget (0: not even 1); need grows with the batch. */
nnz_status nnz_budget_largest(int most, size_t budget, nnz_budget_need_fn need, void *ctx, int *batch);
/* What a training or evaluation run holds besides the model (nnz_budget_need). */
typedef struct {
    int train_n;      /* training images (their order array); 0 for evaluation only */
    int eval_n;       /* evaluated images */
    bool train;       /* training buffers (batch, labels, logit gradients) besides evaluation's */
    bool sparse;      /* layers hold zeros: the sparse formats' memory */
    bool pruning;     /* magnitude masks are made while training (GMP) */
} nnz_budget_shape;
/* The estimated peak resident bytes of training or evaluation at `batch` (budget.c explains the terms). */
nnz_status nnz_budget_need(nnz_model *m, int batch, const nnz_budget_shape *sh, nnz_mem_need *out);
/* What a batch named in an error for the next run leaves free of the budget: two processes
 * measure their resident memory a few kilobytes apart (the estimate's first term). */
#define NNZ_BUDGET_NAMED_SLACK ((size_t)1 << 20)
/* The largest batch <= most whose need fits budget (0: not even 1). */
nnz_status nnz_budget_largest_batch(nnz_model *m, int most, size_t budget, const nnz_budget_shape *sh, int *batch);
/* "N bytes: R resident before the batch (...), A for activations ..." */
void nnz_budget_describe(const nnz_mem_need *n, char *buf, size_t len);

/* x (n,in_h,in_w,in_c) -> logits (n,num_classes) at nnz_model_output(m). */
nnz_status nnz_model_forward(nnz_model *m, const float *x, int n, bool train);
const float *nnz_model_output(const nnz_model *m);
/* After a train-mode forward of the same x: accumulates parameter gradients from dlogits (n,num_classes). */
nnz_status nnz_model_backward(nnz_model *m, const float *x, int n, const float *dlogits);
void nnz_model_zero_grad(nnz_model *m);

/* The zoo: builds (not finalized) a model by name; NNZ_ERR_INVALID_ARG names the choices. */
nnz_status nnz_zoo_build(const char *name, int in_h, int in_w, int in_c, int num_classes, nnz_model **out);

/* ===================== optimizers and schedules ===================== */

typedef struct {
    nnz_optimizer_kind kind;
    float momentum;       /* SGD */
    bool nesterov;        /* SGD */
    float beta1, beta2, eps; /* AdamW (0.9, 0.999, 1e-8) */
    float weight_decay;
    bool decay_bn_and_bias;
    int n;                /* = model->n_params */
    float **state1;       /* SGD momentum buffer / Adam m; NULL for buffers */
    float **state2;       /* Adam v */
    int64_t t;            /* steps taken */
} nnz_optimizer;
/* Same update rules as torch.optim.SGD and torch.optim.AdamW. */
nnz_status nnz_optimizer_init(nnz_optimizer *o, const nnz_model *m, nnz_optimizer_kind kind, float momentum,
                              bool nesterov, float weight_decay, bool decay_bn_and_bias);
void nnz_optimizer_step(nnz_optimizer *o, nnz_model *m, float lr);
void nnz_optimizer_free(nnz_optimizer *o);

typedef struct {
    nnz_schedule_kind kind;
    float base_lr;
    int64_t total_steps, warmup_steps;  /* warm-up: linear from 0 (cosine) */
    int64_t step_size;                  /* step: multiply by gamma every step_size steps */
    float gamma;
    float min_lr;                       /* cosine floor, default 0 */
} nnz_schedule;
float nnz_schedule_lr(const nnz_schedule *s, int64_t step);
const char *nnz_optimizer_kind_name(nnz_optimizer_kind k); /* "sgd", "adamw" */
const char *nnz_schedule_kind_name(nnz_schedule_kind k);   /* "cosine", "step", "onecycle", "constant" */

/* ===================== checkpoints (checkpoint.c) =====================
 * A safetensors file (docs/FORMAT.md, "Checkpoints"): every parameter and batch-norm
 * buffer under its name (F32), the optimizer state as
 * "optimizer.state1.<param>" / "optimizer.state2.<param>", and string metadata
 * format, version, arch, step, epoch, seed, dropout_rng_counter,
 * dropout_rng_key, optimizer, train_config. Written atomically. */
#define NNZ_CKPT_FORMAT "nnz-checkpoint"
#define NNZ_CKPT_VERSION "1"

typedef struct {
    int64_t step;                 /* optimizer steps done */
    int epoch;                    /* epochs fully done */
    uint64_t seed;
    uint64_t dropout_rng_counter;
} nnz_ckpt_state;

/* opt may be NULL (no optimizer state); train_config_json may be NULL. */
nnz_status nnz_checkpoint_save(const char *path, const nnz_model *m, const nnz_optimizer *opt,
                               const nnz_ckpt_state *st, const char *train_config_json);
/* The same, plus n_extra string metadata keys[i] = values[i] (e.g. "shrink", written by
 * nnz shrink); INVALID_ARG for a key of the list above. */
nnz_status nnz_checkpoint_save_ex(const char *path, const nnz_model *m, const nnz_optimizer *opt,
                                  const nnz_ckpt_state *st, const char *train_config_json, int n_extra,
                                  const char *const *keys, const char *const *values);

typedef struct {
    nnz_st_file file;
    nnz_ckpt_state state;
    const char *arch_json;         /* point into file's metadata */
    const char *optimizer_json;    /* NULL when absent */
    const char *train_config_json; /* NULL when absent */
    bool has_dropout_key;
    uint64_t dropout_rng_key;
} nnz_checkpoint;
/* Copies the checkpoint's tensors into parameters first .. n_params-1 of m by name (the ones a
 * run adds to its model, such as STR thresholds; nnz_checkpoint_build_model skips
 * "*.threshold" tensors). FORMAT when one is missing or has another shape. */
nnz_status nnz_checkpoint_load_params(const nnz_checkpoint *ck, nnz_model *m, int first);
/* Reads and checks the container and metadata (format, version, numbers). */
nnz_status nnz_checkpoint_open(const char *path, nnz_checkpoint *ck);
void nnz_checkpoint_close(nnz_checkpoint *ck);
/* Builds the model of the checkpoint's architecture and loads every parameter
 * and buffer, checking presence, dtype and shape; unknown tensors are an error. */
nnz_status nnz_checkpoint_build_model(const nnz_checkpoint *ck, nnz_model **out);
/* Fills an initialised optimizer's state (and t) from the checkpoint; every
 * state array the optimizer has must be present with its parameter's shape. */
nnz_status nnz_checkpoint_load_optimizer(const nnz_checkpoint *ck, const nnz_model *m, nnz_optimizer *opt);

/* nnz_check_output_path is public (nnz.h). */

/* ===================== evaluation (eval.c) =====================
 * nnz_evaluate and nnz_evaluate_fit are public (nnz.h), as are nnz_checkpoint_load_model and
 * nnz_checkpoint_save_model (checkpoint.c). */

#endif
