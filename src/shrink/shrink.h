/* shrink: DepthShrinker (Fu et al., ICML 2022). Learn which inverted-residual
 * blocks can lose their activations, remove them, finetune, and merge each
 * now-linear block (pw 1x1 -> dw kxk -> pw 1x1, batch norms folded, residual
 * absorbed) into one dense kxk convolution. docs/DEPTHSHRINKER.md explains the
 * method, the merge algebra and how the padding is kept exact.
 *
 * The public entry points (nnz_shrink, nnz_shrink_describe) are in nnz.h; this
 * header holds the pieces the pipeline and the tests share. */
#ifndef NNZ_SHRINK_H
#define NNZ_SHRINK_H

#include "nn/nn.h"

/* ===================== blocks ===================== */

/* An inverted-residual block, found in a graph by its pattern (each node the only
 * consumer of the one before, all with the same block id):
 *   pw1 (1x1 conv, groups 1) -> bn1 -> act1 (relu/relu6/identity) -> dw (kxk conv, groups =
 *   channels) -> bn2 -> act2 -> pw2 (1x1 conv, groups 1) -> bn3 [-> add, skip = the block input]
 * The zoo's mbv2_block builds exactly this. */
typedef struct {
    int id;                  /* the nodes' block id */
    char name[NNZ_NAME_MAX]; /* pw1's name without its last component: "blocks.3" */
    int input;               /* the node feeding pw1 (-1 = the model input) */
    int pw1, bn1, act1, dw, bn2, act2, pw2, bn3, add; /* node indices; add = -1 without a residual */
    int last;                /* the block's output node: add, or bn3 */
    bool removed;            /* both activations are identity ops */
    bool mergeable;          /* removed, and in the pad-the-input form: pw1 pads, dw does not */
} nnz_ir_block;

/* The blocks of m in graph order: *out is malloc'ed (free() it; NULL when none), *n their count. */
nnz_status nnz_shrink_find_blocks(const nnz_model *m, nnz_ir_block **out, int *n);

/* Whether merging block b of m saves compute: the dense kxk conv it becomes (2*k*k*IC*OC FLOPs
 * per output pixel, nnz's count) takes fewer forward FLOPs than the block's nodes together. An
 * expansion-1 block (16 -> 16 -> 16 channels) does not: 9*16*16 against 16*16 + 9*16 + 16*16. */
bool nnz_shrink_merge_pays(const nnz_model *m, const nnz_ir_block *b);

/* Blocks that keep their activations for a keep ratio in [0,1]: round(keep * n), halves up. */
int nnz_shrink_keep_count(float keep, int n);

/* ===================== gates (the search) =====================
 *
 * One learnable score per gate (per block), stored as the parameter "<block>.gate"
 * (shape (1), zero-initialised, no weight decay) so the optimizer updates it with the
 * weights. Each step the k gates with the highest scores (plus optional Gumbel noise)
 * keep their activations; the others compute the identity exactly (m->act_identity).
 * Straight-through gradient of a score: the activations of a gate compute
 * out = x + g * (act(x) - x) with the hard g in {0,1} and dg/dscore taken as 1, so
 *   d loss / d score = sum over its activations of dout * (act(x) - x).
 * A positive gradient means the activation lowers the loss, so descent raises the score.
 * The gradient needs each activation's input, so the model must be reserved with
 * keep_activations = true (no in-place activations). */
typedef struct {
    int n;                 /* gates */
    int k;                 /* gates kept per step */
    int *acts;             /* (n, 2): the activation nodes of each gate; -1 = none */
    int *param;            /* (n): the score's parameter index */
    bool *keep;            /* (n): the current choice */
    uint8_t *act_identity; /* (nodes): installed as m->act_identity */
} nnz_gates;

/* names[i] names gate i ("<names[i]>.gate"); acts as above. Installs act_identity on m
 * with every gate kept. */
nnz_status nnz_gates_init(nnz_gates *g, nnz_model *m, int n, const int *acts, const char *const *names, int k);
/* Uninstalls act_identity from m (when m is given) and frees g. */
void nnz_gates_free(nnz_gates *g, nnz_model *m);
/* Keeps the k gates of highest score + gumbel_scale * Gumbel(0,1) noise drawn from rng (no
 * noise, and rng unused, when gumbel_scale is 0); ties go to the lower index. */
void nnz_gates_select(nnz_gates *g, const nnz_model *m, nnz_rng *rng, float gumbel_scale);
/* After nnz_model_backward of n images: accumulates each score's straight-through gradient. */
void nnz_gates_backward(const nnz_gates *g, nnz_model *m, int n);
float nnz_gates_score(const nnz_gates *g, const nnz_model *m, int i);
/* The number of gates kept at a step of a search with progressive removal: all n for the first
 * warm_steps, then falling linearly to k over ramp_steps (n - floor((n-k)·(step-warm+1)/ramp)),
 * then k. warm_steps = ramp_steps = 0 gives k throughout. */
int nnz_gates_scheduled_k(int n, int k, int64_t warm_steps, int64_t ramp_steps, int64_t step);

/* ===================== remove and merge ===================== */

/* A copy of m (parameters and buffers copied by name) in which the blocks with
 * remove[i] set lose both activations (identity ops) and take the pad-the-input form:
 * the depthwise conv's zero padding moves to pw1, so the block computes
 * bn3(pw2(bn2(dw_pad0(bn1(pw1_padP(x)))))) where the padded ring of pw1's output is
 * bn1(0) instead of the dw's 0. That is exactly a kxk conv with pad P of x, hence an exact
 * merge (docs/DEPTHSHRINKER.md). blocks/n as from nnz_shrink_find_blocks on m. */
nnz_status nnz_shrink_remove(const nnz_model *m, const nnz_ir_block *blocks, int n, const bool *remove,
                             nnz_model **out);

/* A finalized model of the nodes specs[0..n) (their input/skip index specs), with m's input
 * shape, precision and dropout stream; each parameter and buffer is copied from m by name
 * (a name with another shape there is an error), the rest keep their initial values. */
nnz_status nnz_shrink_rebuild(const nnz_model *m, const nnz_node *specs, int n, nnz_model **out);

/* The dense conv equal (in eval mode) to a mergeable block: weight (OC,k,k,IC), bias (OC),
 * OC = pw2's outputs, IC = the block's input channels, computed in double. */
nnz_status nnz_shrink_merge_block(const nnz_model *m, const nnz_ir_block *b, float *weight, float *bias);

/* A copy of m in which every mergeable block is replaced by one conv node "<block>.conv"
 * (k, stride and pad of the block, bias) holding nnz_shrink_merge_block's weights; the
 * other nodes and their parameters are copied. *merged: how many blocks (may be NULL). */
nnz_status nnz_shrink_merge(const nnz_model *m, nnz_model **out, int *merged);

/* ===================== expand a target (Expand-then-Shrink) ===================== */

/* Whether node i of target t is expanded: a dense conv (groups 1) with a kxk window, k >= 2, not
 * reading the model input (the first layer stays), alone in its block, with a name that leaves
 * room for ".act1", and either with a bias or read only by a batch norm (which absorbs the merged
 * conv's bias). */
bool nnz_shrink_expandable(const nnz_model *t, int i);

/* The expanded network of target t, freshly initialised from seed: every expandable conv T
 * (IC -> OC, kxk, stride s, pad p) becomes the inverted-residual block "T.pw1" (1x1, IC ->
 * expansion*IC) -> "T.bn1" -> "T.act1" (relu6) -> "T.dw" (depthwise kxk, stride s, pad p) ->
 * "T.bn2" -> "T.act2" -> "T.pw2" (1x1, -> OC) -> "T.bn3" [-> "T.add", + the block input, when
 * s = 1 and IC = OC], a block of its own named T; everything else is copied. *expanded: how
 * many convs (may be NULL). Merged, the block is the conv "T.conv" of T's shape. */
nnz_status nnz_shrink_expand(const nnz_model *t, int expansion, uint64_t seed, nnz_model **out, int *expanded);

/* The target's own graph (t's nodes, names and shapes) with merged's parameters: an expanded
 * conv T takes "T.conv"'s, and where T has no bias the merged bias moves into the batch norm
 * reading T (its running mean), so in eval mode *out computes what merged does. */
nnz_status nnz_shrink_to_target(const nnz_model *merged, const nnz_model *t, nnz_model **out);

/* ===================== the record in the checkpoint ===================== */

/* The metadata key under which nnz shrink records what it did (JSON, docs/FORMAT.md). */
#define NNZ_SHRINK_META "shrink"

/* Saves the merged model at path (atomically) with the record: the settings (source: the
 * checkpoint, or with from_scratch the model spec trained from random weights), each block's
 * name, score and fate, FLOPs, parameters and accuracies; to_target: source is the target and
 * the record says so, with the expansion. */
nnz_status nnz_shrink_save(const char *path, const nnz_model *merged, const nnz_shrink_config *cfg,
                           const char *source, bool from_scratch, bool to_target, const nnz_ir_block *blocks, int n,
                           const float *scores,
                           const bool *keep, const nnz_shrink_result *res);

#endif
