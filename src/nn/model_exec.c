/* Running the model graph: buffers, forward (train / eval), backward, predict.
 *
 * Buffers (nnz_model_reserve for training, nnz_model_reserve_inference for eval forwards only:
 * then no dact, pool indices, dropout masks, input gradient or gradient scratch), per node, for
 * up to batch_cap images:
 *  - identity and flatten are ALIASES: act[i] and dact[i] are their input's
 *    buffers (flatten of NHWC keeps the (h,w,c) order, so it is free); when fed
 *    by the model input they copy it into a buffer of their own instead, as the
 *    caller's x is read-only;
 *  - relu/relu6 run IN PLACE over their input's buffer when they are the only
 *    consumer of an op whose backward does not read its own output (conv,
 *    linear, batchnorm, add, pools, dropout) and the model does not ask to
 *    keep_activations. Their backward reads the forward output,
 *    which the shared buffer then holds. dact is never shared with the input:
 *    backward functions accumulate into dinp.
 *  - every other node owns act and dact, but a batch norm that computes the activation after it
 *    (the fusions below) has no dact: its backward reads the activation's.
 *  - in a training reservation the dact buffers share one pool, each present only over the
 *    backward turns that touch it; with bf16_activations the act buffers too, stored in bf16
 *    between the forward and the backward (act_store.c: the lives, the layout, the checks).
 *
 * Fusions (the plan in m->exec, made here; none when keep_activations, which asks for
 * every node's own output):
 *  - a batch norm computes the in-place relu/relu6 after it (one pass instead of two);
 *    in backward it reads that output as the mask and the activation's gradient as its
 *    dout, so the activation node does nothing in either direction;
 *  - a conv computes the in-place relu/relu6 after it in its epilogue (forward only:
 *    the activation's backward runs as usual);
 *  - eval mode: a conv whose only consumer is a batch norm applies that batch norm
 *    (and its fused activation) as its epilogue and writes straight into the batch
 *    norm's buffer; the batch norm and activation nodes are skipped;
 *  - backward: a node whose only consumer is a conv, linear, batch norm, relu, relu6,
 *    (as the first operand) add or a max pool with windows that do not overlap has its
 *    gradient overwritten by that consumer instead of zeroed and accumulated into
 *    (grad_written);
 *  - backward: such a max pool after a relu of its own (one no batch norm computes) also
 *    computes that relu's backward, masked by its own output (the relu's output at the
 *    selected input), and writes the relu's input gradient (pool_relu).
 *  - training forward: a batch norm (and its fused activation) whose output only a depthwise
 *    or bias-free 1x1 conv reads is deferred into that conv (deferred_to / input_bn): the norm
 *    computes its statistics only, and the conv applies it to its input as it reads it, in
 *    the forward and in its weight gradient (nnz_conv2d_forward_pro, the _src backward);
 *  - training forward: a bias-free 1x1 conv whose only reader is a batch norm hands the norm
 *    its moments, taken from each block of its output while in cache (take_bn_moments);
 *  - backward: a batch norm whose input is such a conv's output (1x1 or depthwise) hands its
 *    data gradient to that conv block by block, never stored (stream_bn_grad, dout_streamed);
 *  - backward: the batch norm before such a conv (its output read by that conv alone, its own
 *    backward streaming too) takes its sums from the conv's data gradient as the conv writes it
 *    (bn_taking_sums, exec.grad_sums), not from a pass of its own over dout and its input;
 *  - backward: an expansion (1x1 conv, batch norm + activation, depthwise conv) with wider
 *    expanded channels and images of 14x14 or more: the batch norm's and the 1x1 conv's
 *    gradients are taken from the depthwise conv's data gradient image by image and the expanded
 *    gradients are never stored (expansion_grad.c, exec.grad_taken).
 * Each fusion is the same arithmetic as the unfused layers, up to the GEMM's blocking (the
 * training ones bit for bit: tests/test_fusion.c), but the expansion's, which sums in another
 * order (within 1e-4 of each gradient's largest element; m->exact_grad turns it off).
 *
 * m->act_identity (optional) turns single relu/relu6 nodes into the identity at run
 * time; every path that computes an activation (the node itself, a batch norm or conv
 * it is fused into) asks act_op(), so the plan above stays valid as the gates change.
 */
#include "nn/nn.h"

#include <math.h>
#include <omp.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int64_t input_numel(const nnz_model *m) { return (int64_t)m->in_h * m->in_w * m->in_c; }


/* Ops whose backward reads neither their output nor another node's output
 * that an in-place activation could overwrite. */
static bool output_overwritable(nnz_op op) {
    switch (op) {
    case NNZ_OP_CONV2D: case NNZ_OP_LINEAR: case NNZ_OP_BATCHNORM: case NNZ_OP_ADD:
    case NNZ_OP_MAXPOOL: case NNZ_OP_AVGPOOL: case NNZ_OP_GLOBAL_AVGPOOL: case NNZ_OP_DROPOUT:
        return true;
    default: return false;
    }
}

/* Which passes of a sparse layer run the bf16 kernels: eval forwards wherever the planner packed
 * bf16 values; training (forward, backward-data and SDDMM) where it marked all three bf16_train */
static void sparse_bf16_flags(const nnz_model *m, nnz_conv_shape *s) {
    const nnz_sparse_weight *sw = s->sparse;
    const bool on = sw && m->run_sparse_bf16 && sw->mat.fwd.val_bf16 && (!m->run_sparse_train || sw->bf16_train);
    s->sparse_bf16_fwd = on;
    s->sparse_bf16_bwd = on && m->run_sparse_train;
}

static void fill_conv_shape(const nnz_model *m, const nnz_node *n, int N, nnz_conv_shape *s) {
    memset(s, 0, sizeof *s);
    s->compute = m->compute;
    s->sparse = m->run_sparse && m->sparse ? m->sparse[n - m->nodes] : NULL;
    sparse_bf16_flags(m, s);
    s->dense_wgrad = m->dense_wgrad;
    s->direct = m->conv_direct;
    s->N = N, s->H = n->in_h, s->W = n->in_w, s->IC = n->in_c;
    s->OC = n->out_ch, s->KH = n->k, s->KW = n->k;
    s->stride = n->stride, s->pad = n->pad, s->groups = n->groups;
    s->OH = n->h, s->OW = n->w;
    const nnz_node_exec *ex = m->exec ? &m->exec[n - m->nodes] : NULL;
    s->kernel_weight = ex ? ex->kernel_weight : NULL; /* read only where prepare_kernel_weights made it */
}

/* a conv node's weight values: (OC,K,K,IC/groups) */
static int64_t conv_weight_numel(const nnz_node *n) {
    return (int64_t)n->out_ch * n->k * n->k * (n->in_c / n->groups);
}

/* A linear node run sparse goes through the conv's 1x1 path: the same (OUT,IN) weight. */
static void linear_as_conv(const nnz_model *m, int i, int N, nnz_conv_shape *s) {
    const nnz_node *n = &m->nodes[i];
    *s = (nnz_conv_shape){.N = N, .H = 1, .W = 1, .IC = n->in_c, .OC = n->out_ch, .KH = 1, .KW = 1, .stride = 1,
                          .groups = 1, .OH = 1, .OW = 1, .compute = m->compute, .sparse = m->sparse[i],
                          .dense_wgrad = m->dense_wgrad};
    sparse_bf16_flags(m, s);
}
static bool linear_sparse(const nnz_model *m, int i) { return m->run_sparse && m->sparse && m->sparse[i]; }

/* Before a forward: sparse layers run when their zeros are fixed (eval, or masked training) or
 * when the caller replans them each step (train_sparse); dense training may move zeros, so the
 * plan is redone at the next forward that needs it. At compute NNZ_BF16 the sparse layers run
 * the bf16 kernels the planner chose (sparse_layer.c, plan_bf16): eval forwards wherever it
 * packed bf16 values, training wherever all three products have them. A plan made by a training
 * forward packed only the training ones: a bf16 eval forward replans (once; an eval plan serves
 * training as well). */
static nnz_status prepare_sparse(nnz_model *m, bool train) {
    m->run_sparse = false;
    m->run_sparse_bf16 = m->compute == NNZ_BF16;
    m->run_sparse_train = train;
    if (train && !m->grad_mask && !m->train_sparse) {
        m->sparse_planned = false;
        return NNZ_OK;
    }
    if (!train && m->sparse_planned && m->sparse_planned_train && m->compute == NNZ_BF16) m->sparse_planned = false;
    if (!m->sparse_planned) NNZ_TRY(nnz_model_sparse_plan(m, train)); /* built from the weights: values current */
    else nnz_model_sparse_refresh(m);
    m->run_sparse = true;
    return NNZ_OK;
}

static void fill_pool_shape(const nnz_node *n, int N, nnz_pool_shape *s) {
    memset(s, 0, sizeof *s);
    s->N = N, s->H = n->in_h, s->W = n->in_w, s->C = n->in_c;
    s->K = n->k, s->stride = n->stride, s->pad = n->pad;
    s->OH = n->h, s->OW = n->w;
}

static void *act_alloc(nnz_model *m, int64_t count, size_t elem, const char *what) {
    size_t bytes;
    if (count < 0 || !nnz_mul_size((size_t)count, elem, &bytes)) {
        nnz_fail(NNZ_ERR_NOMEM, "buffer size overflow for %s; use a smaller batch", what);
        return NULL;
    }
    return nnz_arena_alloc(&m->act_arena, bytes ? bytes : 1, what);
}

static bool is_relu(nnz_op op) { return op == NNZ_OP_RELU || op == NNZ_OP_RELU6; }

/* What relu/relu6 node i computes now: its op, or the identity when m->act_identity turns it off. */
static nnz_op act_op(const nnz_model *m, int i) {
    return m->act_identity && m->act_identity[i] ? NNZ_OP_IDENTITY : m->nodes[i].op;
}

/* The fusion plan (see the top of the file); consumers[i] = readers of node i's output. */
static nnz_status plan_fusions(nnz_model *m, const int *consumers) {
    const int nn = m->n_nodes;
    nnz_node_exec *ex = m->exec;
    for (int i = 0; i < nn; i++)
        ex[i] = (nnz_node_exec){.fused_act = -1, .fused_into = -1, .eval_bn = -1, .pool_relu = -1, .deferred_to = -1,
                                .input_bn = -1, .act_owner = ex[i].act_owner}; /* reserve_buffers' */
    if (m->keep_activations) return NNZ_OK;
    int *consumer = act_alloc(m, nn, sizeof(int), "consumer table"); /* the last consumer of each node */
    if (!consumer) return NNZ_ERR_NOMEM;
    for (int i = 0; i < nn; i++) consumer[i] = -1;
    for (int i = 0; i < nn; i++) {
        const nnz_node *n = &m->nodes[i];
        if (n->input >= 0) consumer[n->input] = i;
        if (n->op == NNZ_OP_ADD && n->skip >= 0) consumer[n->skip] = i;
    }
    for (int i = 0; i < nn; i++) {
        const nnz_node *n = &m->nodes[i];
        const int c = consumer[i];
        if (consumers[i] != 1 || c < 0) continue;
        const nnz_node *cn = &m->nodes[c];
        /* an in-place relu/relu6 (reserve_buffers' rule) after a batch norm or conv */
        if (is_relu(cn->op) && (n->op == NNZ_OP_BATCHNORM || n->op == NNZ_OP_CONV2D)) {
            ex[i].fused_act = c;
            ex[c].fused_into = i;
        }
        if (n->op == NNZ_OP_CONV2D && cn->op == NNZ_OP_BATCHNORM) {
            ex[i].eval_bn = c;
            ex[c].eval_folded = true;
            ex[i].eval_scale = act_alloc(m, n->out_ch, sizeof(float), "folded batch-norm scale");
            if (!ex[i].eval_scale) return NNZ_ERR_NOMEM;
        }
    }
    /* a training batch norm (with its fused activation) whose output only a depthwise or bias-free
     * 1x1 conv reads: the conv applies it to its input as it reads it, so that output is never stored */
    for (int i = 0; i < nn; i++) {
        const int o = ex[i].fused_act >= 0 ? ex[i].fused_act : i, d = consumer[o];
        if (m->nodes[i].op != NNZ_OP_BATCHNORM || consumers[o] != 1 || d < 0) continue;
        const nnz_node *dn = &m->nodes[d];
        const bool depthwise = dn->groups == dn->in_c && dn->out_ch == dn->in_c;
        const bool pointwise = dn->groups == 1 && dn->k == 1 && dn->stride == 1 && dn->pad == 0 &&
                               dn->bias < 0; /* run by the small GEMM when the run allows it, else made */
        if (dn->op != NNZ_OP_CONV2D || dn->input != o || !(depthwise || pointwise)) continue;
        ex[i].deferred_to = d;
        ex[d].input_bn = i;
    }
    for (int i = 0; i < nn; i++) {
        const int c = consumer[i];
        /* an alias shares its input's gradient, which other consumers may also feed */
        if (consumers[i] != 1 || c < 0 || nnz_node_is_alias(&m->nodes[c]) || nnz_node_is_alias(&m->nodes[i])) continue;
        const nnz_node *cn = &m->nodes[c];
        switch (cn->op) {
        case NNZ_OP_CONV2D: case NNZ_OP_LINEAR: case NNZ_OP_BATCHNORM: ex[i].grad_written = true; break;
        case NNZ_OP_RELU: case NNZ_OP_RELU6:
            /* the relu overwrites; or, fused into a batch norm, this gradient is never read */
            ex[i].grad_written = true;
            break;
        case NNZ_OP_ADD: ex[i].grad_written = cn->input == i && cn->skip != i; break;
        default: break;
        }
    }
    /* a max pool whose windows do not overlap writes each input gradient once: it overwrites its
     * input's gradient, or, after a relu of its own (not one a batch norm computes), that relu's
     * input gradient with the relu's mask, so the relu's backward pass and zeroing go */
    for (int p = 0; p < nn; p++) {
        const nnz_node *pn = &m->nodes[p];
        const int r = pn->input;
        if (pn->op != NNZ_OP_MAXPOOL || pn->stride != pn->k || pn->pad != 0 || r < 0 || consumers[r] != 1 ||
            nnz_node_is_alias(&m->nodes[r]))
            continue;
        ex[r].grad_written = true;
        const int f = ex[r].fused_into;
        if (m->nodes[r].op == NNZ_OP_RELU && !(f >= 0 && m->nodes[f].op == NNZ_OP_BATCHNORM)) {
            ex[p].pool_relu = r;
            ex[r].pool_fused = true;
        }
    }
    return NNZ_OK;
}

/* The largest eval chunk whose frame (frame_per_image floats an image; 0: no frames, then its
 * biggest layer's input plus output) fits in about NNZ_EVAL_CHUNK_BYTES, a share of a core's
 * L2: the depth-first eval keeps a chunk's activations in cache from one layer to the next.
 * (A larger chunk also reads each layer's weights for more images.) */
static int eval_chunk_limit(const nnz_model *m, int batch, size_t frame_per_image) {
    int64_t worst = input_numel(m);
    if (frame_per_image > (size_t)worst) worst = (int64_t)frame_per_image;
    for (int i = 0; i < m->n_nodes && !frame_per_image; i++) {
        const nnz_node *n = &m->nodes[i];
        int64_t in = n->input < 0 ? input_numel(m) : nnz_node_numel(&m->nodes[n->input]);
        if (in + nnz_node_numel(n) > worst) worst = in + nnz_node_numel(n);
    }
    int64_t chunk = NNZ_EVAL_CHUNK_BYTES / (worst * (int64_t)sizeof(float));
    if (chunk < 1) chunk = 1;
    return chunk < batch ? (int)chunk : batch;
}

/* The conv scratch a batch of `chunk` images needs (the most over the convs, at either precision
 * and run sparse or dense: nnz_model_set_precision and the sparse plan may switch them without a
 * new reserve, and fp32's implicit-GEMM gradients and bf16's converted operands each may need the
 * most): the shared training scratch at the batch, or one eval chunk's. */
static size_t scratch_floats(const nnz_model *m, int chunk, bool backward) {
    size_t most = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        if (m->nodes[i].op != NNZ_OP_CONV2D) continue;
        nnz_conv_shape s;
        fill_conv_shape(m, &m->nodes[i], chunk, &s);
        nnz_sparse_weight *const sparse = s.sparse;
        for (int p = 0; p < 4; p++) { /* and run sparse or dense: the plan may change too */
            s.compute = p & 1 ? NNZ_BF16 : NNZ_F32;
            s.sparse = p & 2 ? NULL : sparse;
            const size_t f = backward ? nnz_conv2d_scratch_floats(&s) : nnz_conv2d_forward_scratch_floats(&s);
            if (f > most) most = f;
        }
    }
    return most;
}

/* Eval chunks run in per-thread frames: a chunk's activations live in one buffer per thread that
 * the next chunk reuses, so they stay in the core's cache instead of streaming through the
 * batch's buffers in memory (and an inference-only reservation needs no batch buffers but the
 * output's). Not with keep_activations (the caller reads every node's batch buffer), when asked
 * (eval_batch_buffers) or when eval cannot run chunks on threads. */
bool nnz_eval_uses_frames(const nnz_model *m) {
    return !m->keep_activations && !m->eval_batch_buffers && nnz_sgemm_nestable();
}

/* A node's output buffer in a frame, in floats per image: its size rounded to 64 bytes */
static size_t frame_floats(const nnz_model *m, int node) {
    return ((size_t)nnz_node_numel(&m->nodes[node]) + 15) & ~(size_t)15;
}

/* Extends the life [first, last] of the buffer that holds node's output to node index `at` */
static void touch(const nnz_model *m, int node, int at, int *first, int *last) {
    const int o = m->exec[node].act_owner;
    if (at < first[o]) first[o] = at;
    if (at > last[o]) last[o] = at;
}

/* The nodes an eval forward runs write their output (a conv folding a batch norm: into the batch
 * norm's) and read their input and skip. Each owner's buffer lives from the first node that touches
 * it to the last; buffers whose lives do not overlap share frame space (first fit). The output's
 * owner stays in the batch's buffer. Sets every frame_offset (SIZE_MAX: not in the frame) and
 * *per_image, the frame's floats per image. */
static nnz_status plan_eval_frames(nnz_model *m, size_t *per_image) {
    const int nn = m->n_nodes, out = m->exec[nn - 1].act_owner;
    int *first = act_alloc(m, 2 * (int64_t)nn, sizeof(int), "frame plan"), *last = first ? first + nn : NULL;
    if (!first) return NNZ_ERR_NOMEM;
    for (int i = 0; i < nn; i++) first[i] = INT32_MAX, last[i] = -1, m->exec[i].frame_offset = SIZE_MAX;
    for (int i = 0; i < nn; i++) {
        const nnz_node *nd = &m->nodes[i];
        const nnz_node_exec *ex = &m->exec[i];
        if (ex->fused_into >= 0 || ex->eval_folded) continue; /* not run in eval */
        touch(m, nd->op == NNZ_OP_CONV2D && ex->eval_bn >= 0 ? ex->eval_bn : i, i, first, last);
        if (nd->input >= 0) touch(m, nd->input, i, first, last);
        if (nd->op == NNZ_OP_ADD && nd->skip >= 0) touch(m, nd->skip, i, first, last);
    }
    size_t peak = 0;
    for (int o = 0; o < nn; o++) { /* owners in the order their lives begin: node order */
        if (o == out || last[o] < 0) continue;
        const size_t size = frame_floats(m, o);
        size_t at = 0;
        for (bool moved = true; moved;) { /* the lowest offset clear of every placed buffer it overlaps in time */
            moved = false;
            for (int q = 0; q < o; q++) {
                const size_t qo = m->exec[q].frame_offset; /* SIZE_MAX: not placed */
                if (qo == SIZE_MAX || last[q] < first[o] || first[q] > last[o]) continue;
                if (at < qo + frame_floats(m, q) && qo < at + size) at = qo + frame_floats(m, q), moved = true;
            }
        }
        m->exec[o].frame_offset = at;
        if (at + size > peak) peak = at + size;
    }
    for (int i = 0; i < nn; i++) m->exec[i].frame_offset = m->exec[m->exec[i].act_owner].frame_offset;
    *per_image = peak;
    return NNZ_OK;
}

/* The whole-batch conv scratch: training's (forwards and backwards), or, for inference only, a
 * forward's, needed only when eval cannot run chunks on threads (a pthreads OpenBLAS). */
static size_t batch_scratch_floats(const nnz_model *m, int batch, bool training) {
    if (training) return scratch_floats(m, batch, true);
    return nnz_sgemm_nestable() ? 0 : scratch_floats(m, batch, false);
}

/* The arena bytes of the scratch reserve_buffers allocates for `batch`: the whole-batch conv
 * scratch, and per thread the eval scratch and frame (frame_per_image 0: none) for chunks of
 * `chunk` images (none of them is linear in the batch). */
static size_t scratch_bytes(const nnz_model *m, int batch, bool training, size_t frame_per_image, int chunk) {
    size_t train = batch_scratch_floats(m, batch, training) * sizeof(float);
    size_t f = (scratch_floats(m, chunk, false) + 15) & ~(size_t)15;
    size_t eval = f * (size_t)nnz_threads() * sizeof(float);
    size_t frames = frame_per_image * (size_t)chunk * (size_t)nnz_threads() * sizeof(float);
    return ((train + 63) & ~(size_t)63) + ((eval + 63) & ~(size_t)63) + ((frames + 63) & ~(size_t)63);
}

/* training: also the backward's buffers (activation gradients, pool indices, dropout masks, the
 * gradient's conv scratch); false: what an eval forward touches (with frames, of the batch's
 * buffers only the output's). */
static nnz_status reserve_buffers(nnz_model *m, int batch, bool training) {
    int nn = m->n_nodes;
    m->act = act_alloc(m, nn, sizeof(float *), "activation table");
    m->dact = act_alloc(m, nn, sizeof(float *), "gradient table");
    m->aux = act_alloc(m, nn, sizeof(void *), "aux table");
    int *consumers = act_alloc(m, nn, sizeof(int), "consumer counts");
    m->exec = act_alloc(m, nn, sizeof(nnz_node_exec), "execution plan");
    if (!m->act || !m->dact || !m->aux || !consumers || !m->exec) return NNZ_ERR_NOMEM;
    memset(m->exec, 0, (size_t)nn * sizeof(nnz_node_exec)); /* fill_conv_shape reads it before plan_fusions */
    for (int i = 0; i < nn; i++) {
        const nnz_node *n = &m->nodes[i];
        if (n->input >= 0) consumers[n->input]++;
        if (n->op == NNZ_OP_ADD && n->skip >= 0) consumers[n->skip]++;
    }
    const size_t scratch = batch_scratch_floats(m, batch, training);
    for (int i = 0; i < nn; i++) {
        const nnz_node *n = &m->nodes[i];
        bool inplace = (n->op == NNZ_OP_RELU || n->op == NNZ_OP_RELU6) && n->input >= 0 && !m->keep_activations &&
                       consumers[n->input] == 1 && output_overwritable(m->nodes[n->input].op);
        m->exec[i].act_owner = nnz_node_is_alias(n) || inplace ? m->exec[n->input].act_owner : i;
    }
    /* the plan first: which buffers a training step never touches depends on it */
    NNZ_TRY(plan_fusions(m, consumers));
    nnz_act_store_plan(m, training); /* the gradients (and bf16-stored activations) of the shared pool: laid out below */
    /* inference in frames needs the batch's buffer for the output only */
    const bool frames = nnz_eval_uses_frames(m);
    const int out_owner = m->exec[nn - 1].act_owner;
    for (int i = 0; i < nn; i++) {
        const nnz_node *n = &m->nodes[i];
        int64_t numel = (int64_t)batch * nnz_node_numel(n);
        if (numel > INT32_MAX)
            return nnz_fail(NNZ_ERR_INVALID_ARG, "a batch of %d images is too large for layer '%s' (%lld values); "
                            "use a smaller --batch", batch, n->name, (long long)numel);
        char what[NNZ_NAME_MAX + 32];
        snprintf(what, sizeof what, "activations of '%s'", n->name);
        const int owner = m->exec[i].act_owner;
        const bool batch_buffer = training || !frames || owner == out_owner;
        /* a batch norm computing its activation reads that activation's gradient: its own is never
         * written or read (plan_fusions; none while keep_activations, which gates need) */
        const bool grad = training && !(n->op == NNZ_OP_BATCHNORM && m->exec[i].fused_act >= 0);
        if (owner != i) {
            m->act[i] = m->act[owner];
            m->dact[i] = nnz_node_is_alias(n)                        ? m->dact[n->input]
                         : grad && !m->exec[i].grad_pooled ? act_alloc(m, numel, sizeof(float), what)
                                                            : NULL;
        } else {
            m->act[i] = batch_buffer && !m->exec[i].stored ? act_alloc(m, numel, sizeof(float), what) : NULL;
            m->dact[i] = grad && !m->exec[i].grad_pooled ? act_alloc(m, numel, sizeof(float), what) : NULL;
        }
        /* stored and pooled buffers are laid out after the loop (act_store.c) */
        if ((batch_buffer && !m->act[i] && !m->exec[owner].stored) || (grad && !m->dact[i] && !m->exec[nnz_act_grad_owner(m, i)].grad_pooled))
            return NNZ_ERR_NOMEM;
        /* batch norm's saved moments are written by training forwards only, but are 2 x C floats */
        if (n->op == NNZ_OP_BATCHNORM) m->aux[i] = act_alloc(m, 2 * (int64_t)n->c, sizeof(float), what);
        else if (n->op == NNZ_OP_MAXPOOL && training) m->aux[i] = act_alloc(m, numel, sizeof(int32_t), what);
        else if (n->op == NNZ_OP_DROPOUT && training) m->aux[i] = act_alloc(m, numel, 1, what);
        else m->aux[i] = NULL;
        if ((n->op == NNZ_OP_BATCHNORM || (training && (n->op == NNZ_OP_MAXPOOL || n->op == NNZ_OP_DROPOUT))) &&
            !m->aux[i])
            return NNZ_ERR_NOMEM;
    }
    NNZ_TRY(nnz_act_store_layout(m, batch));
    if (scratch) {
        m->scratch = act_alloc(m, (int64_t)scratch, sizeof(float), "convolution scratch");
        if (!m->scratch) return NNZ_ERR_NOMEM;
    }
    /* planned even when eval runs over the batch's buffers: the chunks are cut the same way */
    size_t frame_per_image;
    NNZ_TRY(plan_eval_frames(m, &frame_per_image));
    m->eval_frame_per_image = frame_per_image;
    /* Eval runs chunks of at most eval_chunk_max images on each thread, each with its own scratch
     * (and frame). */
    m->eval_chunk_max = eval_chunk_limit(m, batch, frame_per_image);
    size_t chunk_scratch = scratch_floats(m, m->eval_chunk_max, false); /* eval runs forwards only */
    m->eval_scratch_slots = nnz_threads();
    m->eval_scratch_floats = (chunk_scratch + 15) & ~(size_t)15;
    if (chunk_scratch) {
        m->eval_scratch = act_alloc(m, (int64_t)(m->eval_scratch_floats * (size_t)m->eval_scratch_slots), sizeof(float),
                                    "per-thread convolution scratch");
        if (!m->eval_scratch) return NNZ_ERR_NOMEM;
    }
    if (frames) {
        const size_t per_image = m->eval_frame_per_image;
        m->eval_frames = act_alloc(m, (int64_t)(per_image * (size_t)m->eval_chunk_max * (size_t)m->eval_scratch_slots),
                                   sizeof(float), "per-thread activation frames");
        m->eval_frame_tables = act_alloc(m, (int64_t)nn * m->eval_scratch_slots, sizeof(float *), "frame tables");
        if ((per_image && !m->eval_frames) || !m->eval_frame_tables) return NNZ_ERR_NOMEM;
    }
    for (int i = 0; i < nn; i++) {
        if (m->nodes[i].op != NNZ_OP_CONV2D) continue;
        /* room when the conv's forward may read its own layout: fp32, dense or sparse Winograd (bf16 and the
         * other sparse layers never do) */
        nnz_conv_shape s;
        fill_conv_shape(m, &m->nodes[i], 1, &s);
        s.compute = NNZ_F32, s.sparse = NULL;
        const size_t need = nnz_conv2d_kernel_weight_floats(&s);
        if (!need) continue;
        m->exec[i].kernel_weight = act_alloc(m, (int64_t)need, sizeof(float), "conv weight in the kernel's layout");
        m->exec[i].kernel_weight_of = act_alloc(m, (int64_t)conv_weight_numel(&m->nodes[i]), sizeof(float),
                                                "conv weight in the kernel's layout");
        if (!m->exec[i].kernel_weight || !m->exec[i].kernel_weight_of) return NNZ_ERR_NOMEM;
    }
    if (m->input_grad && training) {
        m->dinput = act_alloc(m, (int64_t)batch * input_numel(m), sizeof(float), "input gradient");
        if (!m->dinput) return NNZ_ERR_NOMEM;
    }
    m->reserved_training = training;
    return NNZ_OK;
}

nnz_status nnz_model_set_precision(nnz_model *m, nnz_dtype precision) {
    if (!m || (precision != NNZ_F32 && precision != NNZ_BF16))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "model precision must be fp32 or bf16");
    if (m->compute != precision) m->sparse_planned = false; /* the bf16 sparse forward is planned per precision */
    m->compute = precision;
    return NNZ_OK;
}

nnz_dtype nnz_model_precision(const nnz_model *m) { return m->compute; }

nnz_status nnz_model_set_bf16_activations(nnz_model *m, bool on) {
    if (!m) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_model_set_bf16_activations: no model");
    m->bf16_activations = on; /* the next training reserve lays the buffers out for it */
    return NNZ_OK;
}

/* Frees the activation buffers; the arena keeps its limit. */
static void release_buffers(nnz_model *m) {
    const size_t limit = m->act_arena.limit;
    nnz_arena_free(&m->act_arena);
    m->act_arena.limit = limit;
    m->act = m->dact = NULL;
    m->aux = NULL;
    m->scratch = m->dinput = m->eval_scratch = m->eval_frames = NULL;
    m->eval_frame_tables = NULL;
    m->eval_frame_per_image = 0;
    m->exec = NULL;
    m->batch_cap = 0;
    m->eval_scratch_slots = 0;
    m->reserved_training = false;
}

/* Reserves for `batch` images: training's buffers when `training`, else an eval forward's. A
 * reservation that already holds training's buffers serves eval too and is kept (a model that
 * trains and evaluates in turn does not reallocate). */
static nnz_status reserve(nnz_model *m, int batch, bool training) {
    if (!m || !m->finalized) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_model_reserve: the model is not finalized");
    if (batch < 1) return nnz_fail(NNZ_ERR_INVALID_ARG, "batch size %d must be at least 1", batch);
    (void)nnz_isa_active(); /* choose the kernels' ISA here, never first inside a parallel region */
    training = training || m->reserved_training; /* training's buffers, once there, stay */
    if (batch <= m->batch_cap && m->reserved_training == training && (!training || !m->input_grad || m->dinput) &&
        nnz_threads() <= m->eval_scratch_slots && m->act_layout_wanted == (training && nnz_act_store_wanted(m)) &&
        m->grad_layout_wanted == (training && nnz_grads_pool_wanted(m)))
        return NNZ_OK;
    if (batch < m->batch_cap) batch = m->batch_cap; /* reallocating for dinput or the gradients: keep the capacity */
    release_buffers(m);
    nnz_status s = reserve_buffers(m, batch, training);
    if (s != NNZ_OK) {
        release_buffers(m);
        return s;
    }
    m->batch_cap = batch;
    return NNZ_OK;
}

nnz_status nnz_model_reserve(nnz_model *m, int batch) { return reserve(m, batch, true); }

nnz_status nnz_model_reserve_inference(nnz_model *m, int batch) { return reserve(m, batch, false); }

nnz_status nnz_model_activation_bytes(nnz_model *m, int batch, bool training, size_t *bytes) {
    *bytes = 0;
    if (!m || !m->finalized) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_model_activation_bytes: no finalized model");
    if (batch < 1) return nnz_fail(NNZ_ERR_INVALID_ARG, "batch size %d must be at least 1", batch);
    (void)nnz_isa_active();
    /* every buffer is a constant or a multiple of the batch, except the conv scratch (computed
     * exactly): reserve for 1 and 2 images, measure, and extrapolate the rest */
    const size_t limit = m->act_arena.limit;
    size_t used[2], frame_per_image = 0;
    bool frames = false;
    for (int k = 0; k < 2; k++) {
        release_buffers(m);
        m->act_arena.limit = 0;
        nnz_status s = reserve_buffers(m, k + 1, training);
        frame_per_image = m->eval_frame_per_image, frames = m->eval_frame_tables != NULL;
        used[k] = m->act_arena.used - scratch_bytes(m, k + 1, training, frames ? frame_per_image : 0, m->eval_chunk_max);
        release_buffers(m);
        m->act_arena.limit = limit;
        if (s != NNZ_OK) return s;
    }
#ifdef __GLIBC__
    malloc_trim(0); /* give the probes' memory back rather than keep it resident */
#endif
    const size_t per_image = used[1] > used[0] ? used[1] - used[0] : 0;
    /* each allocation rounds up to 64 bytes: the slope measured at 1 -> 2 images may be up to
     * 63 bytes short per allocation (at most 4 per node, and a few tables) */
    const size_t rounding = 64 * (4 * (size_t)m->n_nodes + 8);
    size_t lin;
    if (!nnz_mul_size(per_image + rounding, (size_t)batch, &lin) || lin > SIZE_MAX / 2)
        return nnz_fail(NNZ_ERR_NOMEM, "a batch of %d images needs more memory than the address space holds", batch);
    *bytes = used[0] + lin +
             scratch_bytes(m, batch, training, frames ? frame_per_image : 0, eval_chunk_limit(m, batch, frame_per_image));
    return NNZ_OK;
}

void nnz_model_set_activation_limit(nnz_model *m, size_t bytes) { m->act_arena.limit = bytes; }

size_t nnz_model_conv_scratch_bytes(const nnz_model *m, int batch) {
    return scratch_floats(m, batch, true) * sizeof(float);
}

/* A backward's read of node idx's output (widened from bf16 if stored: act_store.c), or the model input */
static const float *node_input(nnz_model *m, int idx, const float *x) { return idx < 0 ? x : nnz_act_ready(m, idx); }

static float *param_value(const nnz_model *m, int idx) {
    return idx < 0 ? NULL : nnz_tensor_f32(&m->params[idx].value);
}

static float *param_grad(const nnz_model *m, int idx) { return idx < 0 ? NULL : m->params[idx].grad; }

/* Where a forward over images [n0, n0+n) finds each node's output (activations are batch-major):
 * the batch's buffers at image n0 (act = m->act, act_n0 = n0), or a thread's frame (a table of
 * the chunk's buffers, act_n0 = 0). The model input is always the caller's x at image n0. */
typedef struct {
    float *const *act;
    int act_n0;
} act_view;
static float *view_at(const nnz_model *m, const act_view *v, int idx) {
    float *const base = v->act[idx]; /* NULL: a buffer no node of this forward touches */
    return base ? base + (int64_t)v->act_n0 * nnz_node_numel(&m->nodes[idx]) : NULL;
}
static const float *view_input(const nnz_model *m, const act_view *v, int idx, const float *x, int n0) {
    return idx < 0 ? x + (int64_t)n0 * input_numel(m) : view_at(m, v, idx);
}

/* Training forward of conv i whose only reader is a batch norm: when it is a bias-free 1x1 conv the
 * small GEMM runs, the batch norm's moments are taken from each block of its output while the
 * block is in cache (the batch norm then skips its own pass over the output). false: not done. */
static bool take_bn_moments(nnz_model *m, int i, const nnz_conv_shape *s, const float *in,
                            const nnz_input_prologue *pro, float *out) {
    const nnz_node *nd = &m->nodes[i];
    nnz_bn_moments *mo = &m->exec[m->exec[i].eval_bn].moments;
    if (!nnz_batchnorm_moments_begin(s->N * s->OH * s->OW, s->OC, mo)) return false;
    const nnz_row_sink sink = {nnz_batchnorm_moments_rows, mo};
    if (nnz_conv2d_forward_sink(s, in, pro, param_value(m, nd->weight), param_value(m, nd->bias), NULL, out, &sink,
                                NNZ_BN_GROUP_ROWS))
        return true;
    free(mo->part);
    mo->part = NULL;
    return false;
}

/* The activation batch norm bn computes with itself (act_op: identity where gated off), or identity */
static nnz_op bn_act(const nnz_model *m, int bn) {
    return m->exec[bn].fused_act >= 0 ? act_op(m, m->exec[bn].fused_act) : NNZ_OP_IDENTITY;
}

/* A deferred batch norm's map, from its last training forward's statistics */
static nnz_bn_apply deferred_bn(const nnz_model *m, int bn) {
    const nnz_node *nd = &m->nodes[bn];
    const float *save = m->aux[bn]; /* save_mean, then save_invstd */
    return (nnz_bn_apply){.C = nd->c, .mean = save, .invstd = save + nd->c,
                          .gamma = param_value(m, nd->weight), .shift = param_value(m, nd->bias), .act = bn_act(m, bn)};
}

/* Runs every node over images [n0, n0+n). Train mode needs the whole batch (n0 = 0):
 * batch norm's statistics couple the images. */
static void forward_nodes(nnz_model *m, const float *x, int n0, int n, bool train, float *scratch,
                          const act_view *v) {
    /* profiling: each node's time, from its turn to the next node's (training forwards only) */
    double *prof = train && m->profiling ? m->profile : NULL, t_prev = prof ? omp_get_wtime() : 0.0;
    const bool store = train && m->act_layout_stored; /* activations stored in bf16 once read (act_store.c) */
    if (store) nnz_act_store_begin(m, n);
    for (int i = 0; i < m->n_nodes; i++) {
        if (store) nnz_act_store_after_forward(m, i - 1);
        if (prof && i > 0) {
            const double t = omp_get_wtime();
            prof[2 * (i - 1)] += t - t_prev;
            t_prev = t;
        }
        const nnz_node *nd = &m->nodes[i];
        const nnz_node_exec *ex = &m->exec[i];
        if (ex->fused_into >= 0 || (!train && ex->eval_folded)) continue; /* computed by another node */
        const float *in = view_input(m, v, nd->input, x, n0);
        float *out = view_at(m, v, i);
        int64_t numel = (int64_t)n * nnz_node_numel(nd);
        switch (nd->op) {
        case NNZ_OP_CONV2D: {
            nnz_conv_shape s;
            fill_conv_shape(m, nd, n, &s);
            nnz_epilogue ep = {.lo = -INFINITY, .hi = INFINITY}, *epp = NULL;
            int act = ex->fused_act;
            if (!train && ex->eval_bn >= 0) {
                const nnz_node *bn = &m->nodes[ex->eval_bn];
                ep.sub = param_value(m, bn->running_mean), ep.mul = ex->eval_scale, ep.add = param_value(m, bn->bias);
                out = view_at(m, v, ex->eval_bn);
                act = m->exec[ex->eval_bn].fused_act;
                epp = &ep;
            }
            if (act >= 0 && act_op(m, act) != NNZ_OP_IDENTITY) {
                ep.lo = 0.0f, ep.hi = m->nodes[act].op == NNZ_OP_RELU6 ? 6.0f : INFINITY;
                epp = &ep;
            }
            /* in training, the batch norm before it may be deferred into it (applied as its input is
             * read: pro) and the one after it may take its moments from its output blocks */
            nnz_bn_apply a;
            nnz_input_prologue pro = {nnz_batchnorm_apply_rows, &a};
            const bool deferred = train && ex->input_bn >= 0;
            const float *z = deferred ? view_input(m, v, m->nodes[ex->input_bn].input, x, n0) : in;
            if (deferred) a = deferred_bn(m, ex->input_bn);
            if (train && ex->eval_bn >= 0 && take_bn_moments(m, i, &s, z, deferred ? &pro : NULL, out)) break;
            if (deferred) {
                if (nnz_conv2d_forward_pro(&s, z, &pro, param_value(m, nd->weight), param_value(m, nd->bias), epp, out,
                                           scratch))
                    break;
                nnz_batchnorm_apply(n * nd->in_h * nd->in_w, &a, z, (float *)in); /* the prologue did not run */
                m->exec[ex->input_bn].deferred_made = true;
            }
            nnz_conv2d_forward_ep(&s, in, param_value(m, nd->weight), param_value(m, nd->bias), epp, out, scratch);
            if (train && s.sparse) m->exec[i].sparse_forwards++; /* train: one call per batch, no chunks */
            if (train && s.sparse_bf16_fwd) m->exec[i].sparse_bf16_forwards++;
            break;
        }
        case NNZ_OP_LINEAR:
            if (linear_sparse(m, i)) {
                nnz_conv_shape s;
                linear_as_conv(m, i, n, &s);
                nnz_conv2d_forward(&s, in, param_value(m, nd->weight), param_value(m, nd->bias), out, NULL);
                if (train) m->exec[i].sparse_forwards++;
                if (train && s.sparse_bf16_fwd) m->exec[i].sparse_bf16_forwards++;
                break;
            }
            nnz_linear_forward(m->compute, n, nd->in_c, nd->out_ch, in, param_value(m, nd->weight), param_value(m, nd->bias), out);
            break;
        case NNZ_OP_BATCHNORM: {
            int M = n * nd->h * nd->w;
            const nnz_op act = bn_act(m, i);
            if (train) {
                float *save = m->aux[i], *bn_out = ex->deferred_to >= 0 ? NULL : out;
                m->exec[i].deferred_made = false;
                /* deferred: the statistics only; the conv after it applies it */
                if (ex->moments.part) /* made by the conv before it */
                    nnz_batchnorm_forward_train_moments(&m->exec[i].moments, in, param_value(m, nd->weight),
                                                        param_value(m, nd->bias), param_value(m, nd->running_mean),
                                                        param_value(m, nd->running_var), nd->momentum, nd->eps, act,
                                                        bn_out, save, save + nd->c);
                else
                    nnz_batchnorm_forward_train_act(M, nd->c, in, param_value(m, nd->weight), param_value(m, nd->bias),
                                                    param_value(m, nd->running_mean), param_value(m, nd->running_var),
                                                    nd->momentum, nd->eps, act, bn_out, save, save + nd->c);
            } else {
                nnz_batchnorm_forward_eval_act(M, nd->c, in, param_value(m, nd->weight), param_value(m, nd->bias),
                                               param_value(m, nd->running_mean), param_value(m, nd->running_var),
                                               nd->eps, act, out);
            }
            break;
        }
        case NNZ_OP_RELU:
        case NNZ_OP_RELU6:
            if (act_op(m, i) == NNZ_OP_IDENTITY) {
                if (out != in) memcpy(out, in, (size_t)numel * sizeof(float)); /* in place: nothing to do */
            } else if (nd->op == NNZ_OP_RELU) {
                nnz_relu_forward(numel, in, out);
            } else {
                nnz_relu6_forward(numel, in, out);
            }
            break;
        case NNZ_OP_IDENTITY:
        case NNZ_OP_FLATTEN:
            if (!nnz_node_is_alias(nd)) memcpy(out, in, (size_t)numel * sizeof(float));
            break;
        case NNZ_OP_MAXPOOL: {
            nnz_pool_shape s;
            fill_pool_shape(nd, n, &s);
            int32_t *argmax = train ? (int32_t *)m->aux[i] : NULL; /* the backward's: eval needs none */
            nnz_maxpool_forward(&s, in, out, argmax);
            break;
        }
        case NNZ_OP_AVGPOOL: {
            nnz_pool_shape s;
            fill_pool_shape(nd, n, &s);
            nnz_avgpool_forward(&s, in, out);
            break;
        }
        case NNZ_OP_GLOBAL_AVGPOOL: nnz_global_avgpool_forward(n, nd->in_h * nd->in_w, nd->c, in, out); break;
        case NNZ_OP_ADD: nnz_add_forward(numel, in, view_input(m, v, nd->skip, x, n0), out); break;
        case NNZ_OP_DROPOUT:
            if (train && nd->p > 0) nnz_dropout_forward(numel, nd->p, &m->dropout_rng, in, out, m->aux[i]);
            else memcpy(out, in, (size_t)numel * sizeof(float));
            break;
        case NNZ_OP_COUNT: break;
        }
    }
    if (prof) prof[2 * (m->n_nodes - 1)] += omp_get_wtime() - t_prev;
    if (store) nnz_act_store_after_forward(m, m->n_nodes - 1);
}

/* Each conv's weight in its forward kernel's layout, made once per forward: eval calls a layer
 * once per chunk of images. The weights do not change during a forward. A conv reads its copy
 * exactly when nnz_conv2d_kernel_weight_floats is nonzero for it now (fp32, dense or sparse
 * Winograd, which reads the same whole copy), the same test as here, so a copy left from another
 * precision or sparsity is never read. */
static void prepare_kernel_weights(nnz_model *m) {
    for (int i = 0; i < m->n_nodes; i++) {
        nnz_node_exec *ex = &m->exec[i];
        if (!ex->kernel_weight) continue;
        nnz_conv_shape s;
        fill_conv_shape(m, &m->nodes[i], 1, &s);
        const float *w = param_value(m, m->nodes[i].weight);
        const size_t bytes = (size_t)conv_weight_numel(&m->nodes[i]) * sizeof(float);
        if (nnz_conv2d_kernel_weight_floats(&s) == 0 ||
            (ex->kernel_weight_made && ex->kernel_weight_compute == s.compute && !memcmp(ex->kernel_weight_of, w, bytes)))
            continue;
        nnz_conv2d_kernel_weight(&s, w, ex->kernel_weight);
        memcpy(ex->kernel_weight_of, w, bytes);
        ex->kernel_weight_made = true;
        ex->kernel_weight_compute = s.compute; /* bf16 1x1 convs hold it rounded */
    }
}

/* Eval-mode batch norm folded into a conv: its multiplier, computed once per forward. */
static void prepare_eval_epilogues(nnz_model *m) {
    for (int i = 0; i < m->n_nodes; i++) {
        const nnz_node_exec *ex = &m->exec[i];
        if (m->nodes[i].op != NNZ_OP_CONV2D || ex->eval_bn < 0) continue;
        const nnz_node *bn = &m->nodes[ex->eval_bn];
        nnz_batchnorm_eval_coeffs(bn->c, param_value(m, bn->weight), param_value(m, bn->running_var), bn->eps,
                                  ex->eval_scale);
    }
}

nnz_status nnz_model_forward(nnz_model *m, const float *x, int n, bool train) {
    if (!m || !m->finalized) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_model_forward: the model is not finalized");
    if (!x || n < 1) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_model_forward: need an input of at least one image");
    NNZ_TRY(reserve(m, n, train));
    NNZ_TRY(prepare_sparse(m, train));
    prepare_kernel_weights(m);
    const act_view whole = {m->act, 0};
    if (train) {
        forward_nodes(m, x, 0, n, true, m->scratch, &whole);
        return NNZ_OK;
    }
    /* Eval: images are independent, so run the whole network depth-first over small
     * chunks, one chunk per thread, in the thread's frame (plan_eval_frames): a chunk's
     * activations stay in the core's L2 instead of streaming every layer's batch through
     * memory, and threads never wait on each other between layers. The layers' own parallel regions run single-threaded inside
     * (nested parallelism is off). The chunking depends on n and the thread count. */
    prepare_eval_epilogues(m);
    if (!nnz_sgemm_nestable()) { /* a pthreads OpenBLAS must not be called from several threads */
        forward_nodes(m, x, 0, n, false, m->scratch, &whole);
        return NNZ_OK;
    }
    int threads = m->eval_scratch_slots < nnz_threads() ? m->eval_scratch_slots : nnz_threads();
    int chunk = m->eval_chunk_max, per_thread = (n + threads - 1) / threads;
    if (chunk > per_thread) chunk = per_thread; /* every thread gets work */
    int chunks = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int c = 0; c < chunks; c++) {
        int n0 = c * chunk, cnt = n - n0 < chunk ? n - n0 : chunk;
        const int slot = omp_get_thread_num();
        float *scratch = m->eval_scratch ? m->eval_scratch + (size_t)slot * m->eval_scratch_floats : NULL;
        if (!m->eval_frame_tables) {
            const act_view batch = {m->act, n0};
            forward_nodes(m, x, n0, cnt, false, scratch, &batch);
            continue;
        }
        /* the frame holds buffers for `chunk` images; the output's stays the batch's */
        float **table = m->eval_frame_tables + (size_t)slot * m->n_nodes;
        float *frame = m->eval_frames + (size_t)slot * m->eval_frame_per_image * m->eval_chunk_max;
        for (int i = 0; i < m->n_nodes; i++) {
            const size_t off = m->exec[i].frame_offset;
            table[i] = off != SIZE_MAX ? frame + off * (size_t)chunk
                       : m->act[i]     ? m->act[i] + (int64_t)n0 * nnz_node_numel(&m->nodes[i])
                                       : NULL; /* run by no eval node */
        }
        const act_view framed = {table, 0};
        forward_nodes(m, x, n0, cnt, false, scratch, &framed);
    }
    return NNZ_OK;
}

const float *nnz_model_output(const nnz_model *m) {
    return m && m->act && m->n_nodes > 0 ? m->act[m->n_nodes - 1] : NULL;
}

/* The gradient buffer of node idx's output, or of the model input (NULL unless input_grad). */
static float *node_grad(const nnz_model *m, int idx) { return idx < 0 ? m->dinput : m->dact[idx]; }

/* Conv i's input is a batch norm deferred into it that the last training forward did not store
 * (deferred_made: a conv that could not apply it made it after all, and then reads it as stored) */
static bool input_still_deferred(const nnz_model *m, int i) {
    const int bn = m->exec[i].input_bn;
    return bn >= 0 && !m->exec[bn].deferred_made;
}

/* Batch norm i's input is a bias-free conv's output that only it reads (it overwrites that gradient),
 * and the conv takes its dout block by block (a 1x1 conv the small GEMM runs, or a depthwise conv):
 * then its backward streams (stream_bn_grad). s: the conv's shape. */
static bool bn_grad_streams(const nnz_model *m, int i, int n, nnz_conv_shape *s) {
    const int p = m->nodes[i].input;
    if (p < 0 || !m->exec[p].grad_written || m->nodes[p].op != NNZ_OP_CONV2D || m->nodes[p].bias >= 0) return false;
    fill_conv_shape(m, &m->nodes[p], n, s);
    return node_grad(m, m->nodes[p].input) && nnz_conv2d_backward_src_applies(s);
}

/* The batch norm whose backward reads the gradient conv p overwrites (p's input, or the activation
 * fused into that batch norm), when that backward streams too: p's data gradient then hands it its
 * sums as it is written. -1: none. */
static int bn_taking_sums(const nnz_model *m, int p, int n) {
    const int q = m->nodes[p].input;
    if (q < 0 || !m->exec[q].grad_written) return -1;
    int b = -1;
    if (m->nodes[q].op == NNZ_OP_BATCHNORM && m->exec[q].fused_act < 0) b = q;
    else if (m->exec[q].fused_into >= 0 && m->nodes[m->exec[q].fused_into].op == NNZ_OP_BATCHNORM) b = m->exec[q].fused_into;
    nnz_conv_shape s;
    return b >= 0 && bn_grad_streams(m, b, n, &s) ? b : -1;
}

#define EXPANSION_MIN_PIXELS 196 /* 14x14 */

/* The expansion before depthwise conv p (expansion_grad.c): batch norm b (bn_taking_sums) after a
 * 1x1 conv whose input is stored. Its backward and the 1x1 conv's are then taken from p's data
 * gradient image by image; NULL: not this shape, exact_grad, or out of memory. */
static nnz_expansion_grad *expansion_begin(nnz_model *m, int b, int n, const float *x) {
    const nnz_node *bn = &m->nodes[b];
    const int pw = bn->input;
    const nnz_node *pn = &m->nodes[pw];
    /* fp32 only: its products read x, W1 and the gradients unrounded */
    if (m->exact_grad || m->compute != NNZ_F32 || pn->k != 1 || pn->groups != 1 || input_still_deferred(m, pw))
        return NULL;
    /* worth it where the expanded gradients are wide and the images big: measured on mbv2-tiny at batch
     * 128, the per-image products cost more than the passes they save in the 16-to-16 block and on
     * 7x7 images (docs/perf-notes.md) */
    if (bn->c <= pn->in_c || bn->h * bn->w < EXPANSION_MIN_PIXELS) return NULL;
    const float *save = m->aux[b];
    const nnz_expansion_grad_args args = {
        .N = n, .P = bn->h * bn->w, .C = bn->c, .IC = pn->in_c, .slots = nnz_dwconv_slots(n),
        .x = node_input(m, pn->input, x), .z = nnz_act_ready(m, pw), .w1 = param_value(m, pn->weight),
        .dw1 = param_grad(m, pn->weight), .dx = node_grad(m, pn->input),
        .accumulate = pn->input < 0 || !m->exec[pn->input].grad_written, .act = bn_act(m, b),
        .gamma = param_value(m, bn->weight), .beta = param_value(m, bn->bias), .save_mean = save,
        .save_invstd = save + bn->c, .dgamma = param_grad(m, bn->weight), .dbeta = param_grad(m, bn->bias)};
    return nnz_expansion_grad_begin(&args);
}

/* Backward of batch norm i when bn_grad_streams: its data gradient goes to the conv's backward
 * block by block (nnz_conv2d_backward_src) and is never stored, and the conv's own turn is skipped;
 * the batch norm before the conv, if bn_taking_sums, gets its sums from the conv's data gradient.
 * false: not applicable, nothing done. */
static bool stream_bn_grad(nnz_model *m, int i, int n, const float *x, const float *dout) {
    const nnz_node *nd = &m->nodes[i];
    const int p = nd->input;
    nnz_conv_shape s;
    if (!bn_grad_streams(m, i, n, &s)) return false;
    const nnz_node *pn = &m->nodes[p];
    float *dinp = node_grad(m, pn->input);
    const int M = n * nd->h * nd->w;
    const float *in = nnz_act_ready(m, p), *save = m->aux[i];
    nnz_bn_grad_sums *given = &m->exec[i].grad_sums;
    nnz_bn_grad g;
    if (!nnz_batchnorm_backward_begin(M, nd->c, in, bn_act(m, i), param_value(m, nd->weight), param_value(m, nd->bias),
                                      save, save + nd->c, dout, param_grad(m, nd->weight), param_grad(m, nd->bias),
                                      given->part ? given : NULL, &g))
        return false;
    m->exec[i].grad_sums_given = given->part != NULL;
    nnz_batchnorm_grad_sums_free(given);
    const nnz_row_source src = {nnz_batchnorm_backward_rows, &g};
    const bool acc = pn->input < 0 || !m->exec[pn->input].grad_written;
    /* the conv's input may be a batch norm deferred into it: made again as it is read */
    const int dbn = input_still_deferred(m, p) ? m->exec[p].input_bn : -1;
    nnz_bn_apply a;
    const nnz_input_prologue pro = {nnz_batchnorm_apply_rows, &a};
    if (dbn >= 0) a = deferred_bn(m, dbn);
    const float *pin = dbn >= 0 ? node_input(m, m->nodes[dbn].input, x) : node_input(m, pn->input, x);
    const int b = bn_taking_sums(m, p, n);
    /* an expansion before the conv: its gradients from the conv's data gradient, never stored */
    nnz_expansion_grad *eg = b >= 0 ? expansion_begin(m, b, n, x) : NULL;
    const nnz_image_sink isink = {nnz_expansion_grad_image, eg};
    if (eg && nnz_conv2d_backward_src_images(&s, &src, pin, dbn >= 0 ? &pro : NULL, param_value(m, pn->weight),
                                             param_grad(m, pn->weight), m->scratch, &isink)) {
        nnz_expansion_grad_end(eg);
        m->exec[p].dout_streamed = m->exec[m->nodes[b].input].dout_streamed = m->exec[b].grad_taken = true;
        nnz_batchnorm_backward_end(&g);
        return true;
    }
    nnz_expansion_grad_free(eg);
    /* else the batch norm before the conv takes its sums from the conv's data gradient */
    nnz_bn_grad_sums *sums = b >= 0 ? &m->exec[b].grad_sums : NULL;
    if (sums) {
        const nnz_node *bn = &m->nodes[b];
        const float *bsave = m->aux[b];
        if (!nnz_batchnorm_grad_sums_begin(n * bn->h * bn->w, bn->c, nnz_act_ready(m, bn->input), bn_act(m, b),
                                           param_value(m, bn->weight), param_value(m, bn->bias), bsave,
                                           bsave + bn->c, true, sums))
            sums = NULL;
    }
    const nnz_row_sink sink = {nnz_batchnorm_grad_sums_rows, sums};
    if (nnz_conv2d_backward_src(&s, &src, pin, dbn >= 0 ? &pro : NULL, param_value(m, pn->weight), dinp, acc,
                                param_grad(m, pn->weight), m->scratch, sums ? &sink : NULL, NNZ_BN_GROUP_ROWS)) {
        m->exec[p].dout_streamed = true;
    } else { /* no memory for the blocks: the gradient stored after all, and the conv's turn as usual */
        if (sums) nnz_batchnorm_grad_sums_free(sums);
#pragma omp parallel for schedule(static)
        for (int r0 = 0; r0 < M; r0 += 256) nnz_batchnorm_backward_rows(&g, r0, M - r0 < 256 ? M - r0 : 256, m->dact[p] + (int64_t)r0 * nd->c);
    }
    nnz_batchnorm_backward_end(&g);
    return true;
}

nnz_status nnz_model_backward(nnz_model *m, const float *x, int n, const float *dlogits) {
    if (!m || !m->finalized) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_model_backward: the model is not finalized");
    if (!x || !dlogits || n < 1 || n > m->batch_cap)
        return nnz_fail(NNZ_ERR_INVALID_ARG,
                        "nnz_model_backward: need x and dlogits of %d images, at most the %d of the last forward", n,
                        m->batch_cap);
    if (!m->reserved_training)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_model_backward: the model's buffers were reserved for inference "
                                             "only; run a training forward (or nnz_model_reserve) first");
    const bool store = m->act_layout_stored;
    if (store && m->act_stored_n == 0)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_model_backward: bf16 training stores the activations in bf16 and "
                                             "releases them in the backward: run a training forward before each one");
    if (store && n > m->act_stored_n)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_model_backward: %d images, but the training forward ran %d", n,
                        m->act_stored_n);
    int last = m->n_nodes - 1;
    for (int i = 0; i < last; i++) /* (a pooled one is zeroed on its first turn: nnz_act_store_turn) */
        if (!nnz_node_is_alias(&m->nodes[i]) && !m->exec[i].grad_written && !m->exec[i].grad_pooled)
            nnz_zero_floats((int64_t)n * nnz_node_numel(&m->nodes[i]), m->dact[i]);
    if (m->dinput) nnz_zero_floats((int64_t)n * input_numel(m), m->dinput);
    int64_t out_numel = (int64_t)n * nnz_node_numel(&m->nodes[last]);
    memcpy(m->dact[last], dlogits, (size_t)out_numel * sizeof(float)); /* the last node has no consumer */
    for (int i = 0; i <= last; i++) m->exec[i].dout_streamed = m->exec[i].grad_sums_given = m->exec[i].grad_taken = false;

    /* profiling: each node's time, from its turn to the next one's (the nodes run last to first) */
    double *prof = m->profiling ? m->profile : NULL, t_prev = prof ? omp_get_wtime() : 0.0;
    for (int i = last; i >= 0; i--) {
        nnz_act_store_turn(m, i, n);
        if (prof && i < last) {
            const double t = omp_get_wtime();
            prof[2 * (i + 1) + 1] += t - t_prev;
            t_prev = t;
        }
        const nnz_node *nd = &m->nodes[i];
        if (nnz_node_is_alias(nd)) continue; /* its gradient already sits in its input's buffer */
        const nnz_node_exec *ex = &m->exec[i];
        if (ex->fused_into >= 0 && m->nodes[ex->fused_into].op == NNZ_OP_BATCHNORM) continue; /* done by the bn */
        if (ex->dout_streamed || ex->grad_taken) continue; /* done by the batch norm or conv after it (stream_bn_grad) */
        const float *in = node_input(m, nd->input, x);
        const float *dout = m->dact[i];
        float *dinp = node_grad(m, nd->input);
        /* false: dinp is this node's to overwrite (it is the input's only consumer) */
        const bool acc = nd->input < 0 || !m->exec[nd->input].grad_written;
        int64_t numel = (int64_t)n * nnz_node_numel(nd);
        switch (nd->op) {
        case NNZ_OP_CONV2D: {
            nnz_conv_shape s;
            fill_conv_shape(m, nd, n, &s);
            if (input_still_deferred(m, i)) { /* its input was never stored: made from the batch norm's as it is read */
                const nnz_bn_apply a = deferred_bn(m, ex->input_bn);
                const nnz_input_prologue pro = {nnz_batchnorm_apply_rows, &a};
                const float *z = node_input(m, m->nodes[ex->input_bn].input, x);
                if (nnz_conv2d_backward_pro(&s, z, &pro, param_value(m, nd->weight), dout, dinp, acc,
                                            param_grad(m, nd->weight), param_grad(m, nd->bias), m->scratch))
                    break;
                nnz_batchnorm_apply(n * nd->in_h * nd->in_w, &a, z, (float *)in); /* no memory for the prologue */
                m->exec[ex->input_bn].deferred_made = true;
            }
            nnz_conv2d_backward_ex(&s, in, param_value(m, nd->weight), dout, dinp, acc, param_grad(m, nd->weight),
                                   param_grad(m, nd->bias), m->scratch);
            if (s.sparse) m->exec[i].sparse_backwards++;
            if (s.sparse_bf16_bwd) m->exec[i].sparse_bf16_backwards++;
            break;
        }
        case NNZ_OP_LINEAR:
            if (linear_sparse(m, i)) {
                nnz_conv_shape s;
                linear_as_conv(m, i, n, &s);
                nnz_conv2d_backward_ex(&s, in, param_value(m, nd->weight), dout, dinp, acc, param_grad(m, nd->weight),
                                       param_grad(m, nd->bias), NULL);
                m->exec[i].sparse_backwards++;
                if (s.sparse_bf16_bwd) m->exec[i].sparse_bf16_backwards++;
                break;
            }
            nnz_linear_backward_ex(m->compute, n, nd->in_c, nd->out_ch, in, param_value(m, nd->weight), dout, dinp, acc,
                                   param_grad(m, nd->weight), param_grad(m, nd->bias));
            break;
        case NNZ_OP_BATCHNORM: {
            const float *save = m->aux[i];
            /* fused: the activation's gradient is the dout, its mask recomputed from the input */
            const float *bn_dout = ex->fused_act >= 0 ? m->dact[ex->fused_act] : dout;
            if (stream_bn_grad(m, i, n, x, bn_dout)) break;
            nnz_batchnorm_grad_sums_free(&m->exec[i].grad_sums); /* made for a stream that could not run */
            nnz_batchnorm_backward_act(n * nd->h * nd->w, nd->c, in, bn_act(m, i), param_value(m, nd->weight),
                                       param_value(m, nd->bias), save, save + nd->c, bn_dout, dinp, acc,
                                       param_grad(m, nd->weight), param_grad(m, nd->bias));
            break;
        }
        case NNZ_OP_RELU:
        case NNZ_OP_RELU6:
            if (!dinp || ex->pool_fused) break; /* pool_fused: done by the max pool */
            if (act_op(m, i) == NNZ_OP_IDENTITY) {
                if (acc) nnz_accumulate(numel, dout, dinp);
                else nnz_copy_floats(numel, dout, dinp);
            } else if (nd->op == NNZ_OP_RELU) {
                nnz_relu_backward_ex(numel, nnz_act_ready(m, i), dout, dinp, acc);
            } else {
                nnz_relu6_backward_ex(numel, nnz_act_ready(m, i), dout, dinp, acc);
            }
            break;
        case NNZ_OP_IDENTITY:
        case NNZ_OP_FLATTEN: /* a copy of the model input */
            if (dinp) nnz_accumulate(numel, dout, dinp);
            break;
        case NNZ_OP_MAXPOOL: {
            nnz_pool_shape s;
            fill_pool_shape(nd, n, &s);
            const int r = ex->pool_relu;
            if (r < 0) {
                nnz_maxpool_backward_ex(&s, m->aux[i], dout, NULL, dinp, acc);
                break;
            }
            /* the relu's backward too: into the relu's input gradient, masked where the pooled relu output is 0 */
            const int c = m->nodes[r].input;
            nnz_maxpool_backward_ex(&s, m->aux[i], dout, act_op(m, r) == NNZ_OP_RELU ? nnz_act_ready(m, i) : NULL,
                                    node_grad(m, c), c < 0 || !m->exec[c].grad_written);
            break;
        }
        case NNZ_OP_AVGPOOL: {
            if (!dinp) break;
            nnz_pool_shape s;
            fill_pool_shape(nd, n, &s);
            nnz_avgpool_backward(&s, dout, dinp);
            break;
        }
        case NNZ_OP_GLOBAL_AVGPOOL:
            if (dinp) nnz_global_avgpool_backward(n, nd->in_h * nd->in_w, nd->c, dout, dinp);
            break;
        case NNZ_OP_ADD:
            nnz_add_backward_ex(numel, dout, dinp, acc, node_grad(m, nd->skip));
            break;
        case NNZ_OP_DROPOUT:
            if (!dinp) break;
            if (nd->p > 0) nnz_dropout_backward(numel, nd->p, m->aux[i], dout, dinp);
            else nnz_accumulate(numel, dout, dinp);
            break;
        case NNZ_OP_COUNT: break;
        }
    }
    if (store) m->act_stored_n = 0; /* its regions are other buffers' in the next step: a forward first */
    if (prof) {
        prof[1] += omp_get_wtime() - t_prev;
        m->profile_steps++;
    }
    if (m->grad_mask) nnz_model_mask_grads(m);
    return NNZ_OK;
}

nnz_status nnz_model_profile(nnz_model *m, bool on) {
    if (!m || !m->finalized) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_model_profile: the model is not finalized");
    if (on) {
        if (!m->profile) m->profile = calloc((size_t)m->n_nodes * 2, sizeof(double));
        if (!m->profile) return nnz_fail(NNZ_ERR_NOMEM, "out of memory for the per-layer profile");
        memset(m->profile, 0, (size_t)m->n_nodes * 2 * sizeof(double));
        m->profile_steps = 0;
    }
    m->profiling = on;
    return NNZ_OK;
}

int nnz_model_node_count(const nnz_model *m) { return m ? m->n_nodes : 0; }

nnz_status nnz_model_profile_node(const nnz_model *m, int i, nnz_node_profile *out) {
    if (!m || !out || i < 0 || i >= m->n_nodes)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_model_profile_node: node %d is not one of the model's %d", i,
                        m ? m->n_nodes : 0);
    *out = (nnz_node_profile){.name = m->nodes[i].name, .op = nnz_op_name(m->nodes[i].op), .steps = m->profile_steps,
                              .forward_sec = m->profile ? m->profile[2 * i] : 0.0,
                              .backward_sec = m->profile ? m->profile[2 * i + 1] : 0.0};
    return NNZ_OK;
}

nnz_status nnz_model_predict(nnz_model *m, const float *x, int n, float *logits) {
    if (!m || !m->finalized) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_model_predict: the model is not finalized");
    if (!x || !logits || n < 1)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_model_predict: need inputs and an output for at least one image");
    /* In chunks of the reserved batch (or up to 256 images), so memory stays bounded. */
    int chunk = m->batch_cap > 0 ? m->batch_cap : (n < 256 ? n : 256);
    int64_t in_numel = input_numel(m);
    for (int start = 0; start < n; start += chunk) {
        int cnt = n - start < chunk ? n - start : chunk;
        NNZ_TRY(nnz_model_forward(m, x + (int64_t)start * in_numel, cnt, false));
        memcpy(logits + (int64_t)start * m->num_classes, nnz_model_output(m),
               (size_t)cnt * (size_t)m->num_classes * sizeof(float));
    }
    return NNZ_OK;
}
