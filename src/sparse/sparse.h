/* sparse: weight masks (RBGP, HBsNN and their baselines), the Ramanujan bipartite graphs RBGP
 * is built from, and the small symmetric eigen solver that checks their spectral gap.
 * Layers: includes base/, io/ and nn/ (the pruning hooks). docs/RBGP.md explains the constructions.
 *
 * A mask is a (rows, cols) row-major array of bytes, 1 = kept, 0 = pruned, for a weight
 * (rows, cols) = (OC, K): a linear layer's (OUT, IN), or a conv weight (OC, KH, KW, IC)
 * flattened to (OC, KH*KW*IC). The public entry points (nnz_mask_make, nnz_mask_info,
 * nnz_mask_write_pgm, ...) are declared in include/nnz.h; their semantics are written here.
 *
 * nnz_mask_make(spec, rows, cols, weight, seed, mask, info): weight (rows, cols) or NULL.
 *   DENSE         every element kept.
 *   UNSTRUCTURED  keep k = round((1-s)*rows*cols) elements (at least 1): the largest |w| when
 *                 weight is given (magnitude pruning), else a uniformly random k-subset.
 *   BLOCK         the same over blocks block_rows x block_cols (default 16x16; edge blocks are
 *                 partial): keep k = round((1-s)*nblocks) blocks (at least 1), by the blocks'
 *                 L1 norm, else at random. Element density is exact when the shape divides.
 *   HBSNN         hierarchical: levels of nested blocks (default block_rows x block_cols, then
 *                 a quarter of it per side; each level's block divides its parent's), see
 *                 nnz_hbsnn_mask below.
 *   RBGP          G_o (x) J_r (x) G_i (x) J_b, see nnz_rbgp_* below. The weight is not used
 *                 (RBGP masks are fixed at initialization).
 * Ties (equal scores) keep the lower row-major block index; random scores are a hash of
 * (seed, level, block index): the same seed gives the same mask on every machine. */
#ifndef NNZ_SPARSE_H
#define NNZ_SPARSE_H

#include "base/base.h"
#include "nn/nn.h" /* the pruning hooks (str.c, gmp.c) work on the model graph */

/* ---- symmetric eigenvalues ----
 * All eigenvalues of the symmetric n x n matrix a (row-major, only read; n >= 0) in
 * ascending order into w[n]: Householder reduction to tridiagonal form, then implicit QL
 * with Wilkinson-style shifts (eigenvalues only, O(n^3)). NNZ_ERR_NUMERIC if a QL sweep
 * does not converge (60 iterations per eigenvalue) or a is not finite. */
nnz_status nnz_sym_eigenvalues(int n, const double *a, double *w);

/* ---- bipartite graphs ----
 * rows left vertices, cols right vertices; the biadjacency matrix B (rows x cols) has
 * B[i][j] = 1 for an edge. Every left vertex has degree dl (row-regular); right degrees are
 * dr_min..dr_max, equal (biregular, rows*dl = cols*dr) whenever cols divides rows*dl,
 * else they differ by one ("near-biregular"). adj[i*dl .. i*dl+dl) are row i's neighbours,
 * ascending. */
typedef struct {
    int rows, cols, dl, dr_min, dr_max;
    int32_t *adj;
} nnz_bigraph;

/* Spectrum of B: sigma1 >= sigma2 its two largest singular values (sigma1 = sqrt(dl*dr) for a
 * biregular graph), bound = sqrt(dl-1) + sqrt(dr_max-1) (the Ramanujan bound), ramanujan =
 * sigma2 <= bound (+1e-9). gap = bound - sigma2 (>= 0 when Ramanujan). */
typedef struct {
    double sigma1, sigma2, bound;
    bool ramanujan;
} nnz_bigraph_spectrum;

/* How a graph was drawn. LIFT: the RBGP paper's construction, random 2-lifts of the complete
 * bipartite graph K(dr, dl) (each edge of the current graph crosses to the other copy with
 * probability 1/2), possible only when rows = dr*2^k and cols = dl*2^k. SWITCH: any shape and
 * degree: a deterministic row-regular start (row i -> columns (i*dl + t) mod cols) randomised
 * by degree-preserving double-edge switches (10 attempts per edge; on the complement when the
 * density is above 1/2), which tends to the uniform random (near-)biregular graph; those are
 * near-Ramanujan with high probability. AUTO: LIFT when the shape allows, else SWITCH. */
typedef enum { NNZ_BIGRAPH_AUTO = 0, NNZ_BIGRAPH_LIFT, NNZ_BIGRAPH_SWITCH } nnz_bigraph_method;
const char *nnz_bigraph_method_name(nnz_bigraph_method m);
/* Is (rows, cols, dl) a shape the 2-lift can make? (rows = dr*2^k, cols = dl*2^k, k >= 0) */
bool nnz_bigraph_liftable(int rows, int cols, int dl);

/* Largest graph side nnz generates and checks (the spectral check is O(min side^3)). */
#define NNZ_BIGRAPH_MAX_SIDE 4096

/* One random graph (no spectral check) from rng. 1 <= dl <= cols; sides in
 * 1..NNZ_BIGRAPH_MAX_SIDE; LIFT on a shape it cannot make is INVALID_ARG. */
nnz_status nnz_bigraph_random(int rows, int cols, int dl, nnz_bigraph_method method, nnz_rng *rng, nnz_bigraph *out);
/* sigma1, sigma2 from the eigenvalues of B B^T (or B^T B, the smaller). */
nnz_status nnz_bigraph_spectrum_of(const nnz_bigraph *g, nnz_bigraph_spectrum *out);
/* Draws graphs from streams 0, 1, ... of seed until one meets the Ramanujan bound or
 * max_tries (>= 1) were drawn; keeps the first that meets it, else the one with the smallest
 * sigma2 - bound. *tries = graphs drawn. Not meeting the bound is not an error (small or
 * disconnected shapes cannot: dl = 1 or dr = 1); sp->ramanujan says. */
nnz_status nnz_ramanujan_make(int rows, int cols, int dl, nnz_bigraph_method method, uint64_t seed, int max_tries,
                              nnz_bigraph *out, nnz_bigraph_spectrum *sp, int *tries);
bool nnz_bigraph_has(const nnz_bigraph *g, int i, int j); /* binary search, O(log dl) */
void nnz_bigraph_to_dense(const nnz_bigraph *g, uint8_t *b); /* rows x cols bytes */
void nnz_bigraph_free(nnz_bigraph *g);

/* ---- RBGP: mask = G_o (x) J_r (x) G_i (x) J_b ----
 * Padded shape: (mo*rr*mi*br) x (no*rc*ni*bc) where
 *   J_b  br x bc all-ones: the dense micro-block (register tile);
 *   G_i  mi x ni Ramanujan graph over the micro-blocks of a core block (core = mi*br x ni*bc);
 *   J_r  rr x rc all-ones: the core block's pattern repeated over the outer tile
 *        (outer tile = rr*mi*br x rc*ni*bc);
 *   G_o  mo x no Ramanujan graph over the outer tiles.
 * Element (r, c) is kept iff G_o has edge (r / (rr*mi*br), c / (rc*ni*bc)) and G_i has edge
 * ((r / br) mod mi, (c / bc) mod ni). Density of the padded mask = (dlo/no) * (dli/ni).
 * The padded shape is ceil(rows/br)*br x ceil(cols/bc)*bc: the mask is that one cropped, so
 * only shapes not divisible by the micro-block lose exact regularity. */
typedef struct {
    int rows, cols;         /* the weight */
    int pad_rows, pad_cols; /* rows, cols rounded up to the micro-block */
    int br, bc;             /* J_b */
    int mi, ni, dli;        /* G_i and its left degree */
    int rr, rc;             /* J_r */
    int mo, no, dlo;        /* G_o and its left degree */
    double density;         /* of the padded mask: (dlo/no)*(dli/ni) */
    double target;          /* the density asked for */
} nnz_rbgp_plan;

/* Chooses the factors for a (rows, cols) weight at density 1 - sparsity. The micro-block is
 * spec->block_rows x block_cols (default 4x4, clipped to the shape); spec->core_rows/cols,
 * repeat_rows/cols and inner_sparsity fix those choices when non-zero. Among every
 * factorisation ceil(rows/br) = mo*rr*mi, ceil(cols/bc) = no*rc*ni (graph sides <=
 * NNZ_BIGRAPH_MAX_SIDE) and every degree, it minimises
 *   10*|ln(density/target)|                     the density asked for first,
 * + |ln(dens_i/target_i)|                       inner density near inner target (default
 *                                               sqrt(target): sparsity split evenly),
 * + 0.5 per factor graph that is not biregular,
 * + 0.3 per factor graph that cannot be connected (dl = 1 or dr = 1 with both sides > 1),
 * + 0.3*(|ln(mi/8)| + |ln(ni/8)|)               core block of about 8x8 micro-blocks,
 * + 0.1*(ln rr + ln rc)                         no repetition unless it is asked for,
 * ties to the first in enumeration order. So a shape that does not factor nicely gets the
 * closest achievable density (plan.density says which); nothing is padded beyond the
 * micro-block. INVALID_ARG for sizes < 1, a sparsity outside [0, 1), a fixed factor that
 * does not divide, or a shape needing a graph side > NNZ_BIGRAPH_MAX_SIDE. */
nnz_status nnz_rbgp_plan_make(int rows, int cols, const nnz_mask_spec *spec, nnz_rbgp_plan *out);

typedef struct {
    nnz_rbgp_plan plan;
    nnz_bigraph go, gi;
    nnz_bigraph_spectrum so, si;
    int tries_o, tries_i;
    nnz_bigraph_method method_o, method_i; /* what AUTO chose */
} nnz_rbgp;
/* Draws G_o (seed, stream 1) and G_i (stream 2) with nnz_ramanujan_make, max_tries each. */
nnz_status nnz_rbgp_make(const nnz_rbgp_plan *plan, uint64_t seed, int max_tries, nnz_rbgp *out);
bool nnz_rbgp_get(const nnz_rbgp *m, int r, int c);  /* the succinct form queried per element */
void nnz_rbgp_expand(const nnz_rbgp *m, uint8_t *mask); /* (rows, cols) */
/* Bytes of the succinct form: 12 int32 sizes and degrees (48 bytes) + each factor graph's
 * adjacency lists (mo*dlo + mi*dli indices of 1 byte when the side is <= 256, else 2). */
int64_t nnz_rbgp_succinct_bytes(const nnz_rbgp *m);
void nnz_rbgp_free(nnz_rbgp *m);

/* ---- HBsNN and the block / unstructured baselines ----
 * Level l (0-based, levels >= 1) tiles the matrix into lr[l] x lc[l] blocks (edge blocks
 * partial); lr[l+1] divides lr[l] and lc[l+1] divides lc[l], so each block lies inside one
 * block of the level above. Level 0's candidates are all its blocks; level l's are the blocks
 * inside the blocks level l-1 kept. Level l keeps k_l = max(1, round(density[l] * N_l))
 * candidates (N_l = all level-l blocks of the matrix, clamped to the candidate count), those
 * with the largest L1 norm of weight when weight is given, else those with the largest
 * random key; the other candidates are pruned. density[] must be in (0, 1] and
 * non-increasing: density[l] is the fraction of the whole matrix kept after level l, so with a
 * last level of 1x1 (or any last level dividing the shape) the final density is exactly
 * round(density[L-1]*N)/N. NaN/Inf weights are NNZ_ERR_NUMERIC. */
nnz_status nnz_hbsnn_mask(int rows, int cols, int levels, const int *lr, const int *lc, const double *density,
                          const float *weight, uint64_t seed, uint8_t *mask);

/* ---- index sizes (bytes of the index only, int32 entries, no values) ----
 * CSR: (rows+1) row pointers + nnz column indices. BSR with r x c blocks: (ceil(rows/r)+1)
 * pointers + one index per block holding any kept element (*nblocks). */
int64_t nnz_mask_count(const uint8_t *mask, int64_t n);
int64_t nnz_mask_csr_bytes(const uint8_t *mask, int rows, int cols);
int64_t nnz_mask_bsr_bytes(const uint8_t *mask, int rows, int cols, int r, int c, int64_t *nblocks);


/* ---- pruning during training: STR / AutoSparse (str.c) and GMP (gmp.c) ----
 * The layers: conv (groups 1) and linear except the first and the last (nnz_prune_layers). */
/* Fills node[] (capacity cap) with the prunable nodes' indices, returns how many. */
int nnz_prune_layers(const nnz_model *m, int *node, int cap);

/* STR: for each layer, a threshold parameter "<layer>.threshold" of shape (1) or (OC) (per
 * output channel), no_decay in the optimizer (its own L2 decay is added by nnz_str_backward).
 * Effective weight w~ = sign(w)*relu(|w| - sigmoid(s)).
 * The trainer calls, every step:
 *   nnz_str_apply      before the forward: master <- w, w <- w~ (the layers read w~);
 *   nnz_str_backward   after the backward (which left dL/dw~ in the weight gradients):
 *                      dL/dw = dL/dw~ * (|w| > sigmoid(s) ? 1 : alpha)       (Gradient Annealing)
 *                      dL/ds += -sigmoid'(s) * sum dL/dw~ * sign(w) * [|w| > sigmoid(s)] + decay*s
 *                      (the sum over the layer, or over the channel), then w <- master;
 *   nnz_str_restore    w <- master without touching gradients (after an eval forward).
 * So the optimizer always updates the dense master w and s. nnz_str_bake makes w~ permanent. */
typedef struct {
    int n;              /* layers */
    int *node, *weight, *threshold; /* node and parameter indices */
    int *rows, *cols;   /* weight as (OC, K) */
    int64_t *offset;    /* into master */
    float *master;      /* the dense weights while w~ is in the model */
    bool per_channel, applied;
    float decay;
} nnz_str;
/* Adds the threshold parameters (s0 each) unless the model has them already (then keeps their
 * values). Call before nnz_optimizer_init. */
nnz_status nnz_str_init(nnz_str *st, nnz_model *m, bool per_channel, float s0, float decay);
void nnz_str_apply(nnz_str *st, nnz_model *m);
void nnz_str_backward(nnz_str *st, nnz_model *m, float alpha);
void nnz_str_restore(nnz_str *st, nnz_model *m);
void nnz_str_bake(nnz_str *st, nnz_model *m);
/* Fraction of zeros of w~ over the STR layers (computed from the master weights). */
double nnz_str_sparsity(const nnz_str *st, const nnz_model *m);
void nnz_str_free(nnz_str *st);

/* GMP: per layer, magnitude pruning (nnz_mask_make UNSTRUCTURED with the weights) to
 * nnz_gmp_sparsity(target, begin, end, step) at steps begin, begin + every, ... and end.
 * Pruned weights are zeroed (nnz_model_apply_mask) with their optimizer state (momentum, Adam
 * moments), and the model's gradient mask is on, so they stay zero. */
typedef struct {
    float target;
    int64_t begin, end, every;
    double applied; /* the sparsity last applied */
} nnz_gmp;
/* begin_frac/end_frac of total_steps; every 0 = auto ((end - begin) / 16, at least 1). */
nnz_status nnz_gmp_init(nnz_gmp *g, float target, float begin_frac, float end_frac, int every, int64_t total_steps);
/* Before the forward of step (0-based); prunes when step is a pruning step. opt may be NULL. */
nnz_status nnz_gmp_step(nnz_gmp *g, nnz_model *m, nnz_optimizer *opt, int64_t step);
/* Prunes every layer to sparsity now. */
nnz_status nnz_gmp_prune(nnz_model *m, nnz_optimizer *opt, double sparsity);


/* ---- weight sharing during training (share.c): Deep Compression's trained quantization ----
 * Every conv/linear weight tensor holding at most NNZ_SHARE_MAX_VALUES distinct nonzero values
 * (a codebook: nnz_pack_quantize leaves every quantized tensor so) trains as those shared
 * values. The assignment of weights to values is fixed at init; zeros (pruned weights) stay
 * zero and are no shared value. The trainer (codebook training, nnz_train_model) calls:
 *   nnz_share_backward  after the backward: the gradient of shared value j of a tensor is
 *                       dL/dc_j = sum of dL/dw_i over the weights i holding it (summed in
 *                       double, in index order); it is written into every such weight's
 *                       gradient, zero weights get 0, and every other parameter's gradient is
 *                       zeroed (frozen: the trainer runs this mode without weight decay);
 *   nnz_share_sync      after the optimizer step: copies each value's first weight onto the
 *                       others (the elementwise optimizer gave them the same update; this keeps
 *                       them bitwise equal). A value that became exactly 0 is set to FLT_MIN,
 *                       so zeros stay exactly the pruned weights.
 * So a tensor never holds more distinct values, nor other zeros, than it started with. */
#define NNZ_SHARE_MAX_VALUES 256
typedef struct {
    int n;          /* shared tensors */
    int *param;     /* their parameter indices */
    int *k;         /* shared values per tensor */
    int64_t *first; /* (n, NNZ_SHARE_MAX_VALUES): the first weight holding each value */
    uint16_t **idx; /* per tensor: each weight's value (ascending order of the initial values), 0xFFFF = zero */
} nnz_share;
/* INVALID_ARG when no conv/linear weight qualifies (nothing would train). */
nnz_status nnz_share_init(nnz_share *sh, const nnz_model *m);
void nnz_share_backward(const nnz_share *sh, nnz_model *m);
void nnz_share_sync(const nnz_share *sh, nnz_model *m);
/* The current values of shared tensor t (its k, in the initial order) into values; returns k. */
int nnz_share_values(const nnz_share *sh, const nnz_model *m, int t, float *values);
void nnz_share_free(nnz_share *sh);

/* ---- FLOP accounting (flops.c), per image ----
 * Inference: conv/linear nodes cost (nonzeros / weights) * node.flops, the rest node.flops;
 * per_node[n_nodes] (may be NULL) gets each node's share, *dense (may be NULL) the dense total.
 * Training step: forward + backward-data at the weights' density, backward-weight dense when
 * dense_wgrad (masked weights still get gradients: Gradient Annealing with alpha > 0) else at
 * the density; non-weighted nodes 3x their forward; *dense = 3 * the dense forward. */
double nnz_model_sparse_flops(const nnz_model *m, double *per_node, double *dense);
double nnz_train_step_flops(const nnz_model *m, bool dense_wgrad, double *dense);

#endif
