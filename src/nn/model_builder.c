/* The model graph: building it node by node, checking it, inferring shapes,
 * creating and initialising the parameters (PyTorch's defaults), statistics.
 *
 * This file needs no layer implementation (model_exec.c runs the graph), so
 * the builder, zoo and JSON tests link without them.
 *
 * Graph rules (checked by nnz_model_finalize):
 *  - a node's input and (ADD) skip refer to earlier nodes or -1, the model input;
 *  - ADD operands have equal shapes;
 *  - LINEAR needs a vector input (h = w = 1): put a flatten or global_avgpool
 *    before it. A linear never flattens implicitly, so a forgotten pool is an
 *    error, as in PyTorch, instead of a silently huge layer;
 *  - conv channels (in and out) divisible by groups; pools' pad <= k/2;
 *  - the last node is the output and must be a vector (h = w = 1).
 */
#include "nn/nn.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Limits that keep every size computation far from overflow and reject
 * absurd graphs (hostile JSON) before anything is allocated. */
#define MAX_NODES (1 << 14)   /* name uniqueness is checked pairwise: keep hostile graphs cheap */
#define MAX_SPATIAL (1 << 15)
#define MAX_CHANNELS (1 << 20)
#define MAX_KERNEL 1024
#define MAX_STRIDE 1024
#define MAX_PAD 1024
#define MAX_BLOCK (1 << 20)
#define MAX_NODE_NUMEL ((int64_t)1 << 30) /* floats per image per node */
#define MAX_PARAMS ((int64_t)1 << 27)     /* parameter floats (+ the same again for gradients) */

static const char *const op_names[NNZ_OP_COUNT] = {
    [NNZ_OP_LINEAR] = "linear",       [NNZ_OP_CONV2D] = "conv2d",   [NNZ_OP_BATCHNORM] = "batchnorm",
    [NNZ_OP_RELU] = "relu",           [NNZ_OP_RELU6] = "relu6",     [NNZ_OP_IDENTITY] = "identity",
    [NNZ_OP_MAXPOOL] = "maxpool",     [NNZ_OP_AVGPOOL] = "avgpool", [NNZ_OP_GLOBAL_AVGPOOL] = "global_avgpool",
    [NNZ_OP_FLATTEN] = "flatten",     [NNZ_OP_ADD] = "add",         [NNZ_OP_DROPOUT] = "dropout",
};

const char *nnz_op_name(nnz_op op) {
    return (unsigned)op < NNZ_OP_COUNT ? op_names[op] : "unknown";
}

int nnz_op_from_name(const char *name) {
    if (!name) return -1;
    for (int i = 0; i < NNZ_OP_COUNT; i++)
        if (strcmp(name, op_names[i]) == 0) return i;
    return -1;
}

nnz_status nnz_model_create(int in_h, int in_w, int in_c, nnz_model **out) {
    if (!out) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_model_create: out is NULL");
    *out = NULL;
    if (in_h < 1 || in_w < 1 || in_c < 1 || in_h > MAX_SPATIAL || in_w > MAX_SPATIAL || in_c > MAX_CHANNELS ||
        (int64_t)in_h * in_w * in_c > MAX_NODE_NUMEL)
        return nnz_fail(NNZ_ERR_INVALID_ARG,
                        "model input %dx%dx%d is out of range; height and width must be in 1..%d, channels in 1..%d",
                        in_h, in_w, in_c, MAX_SPATIAL, MAX_CHANNELS);
    nnz_model *m = calloc(1, sizeof *m);
    if (!m) return nnz_fail(NNZ_ERR_NOMEM, "out of memory creating a model");
    m->in_h = in_h;
    m->in_w = in_w;
    m->in_c = in_c;
    m->current_block = -1;
    nnz_arena_init(&m->param_arena, 0);
    nnz_arena_init(&m->act_arena, 0);
    *out = m;
    return NNZ_OK;
}

void nnz_model_free(nnz_model *m) {
    if (!m) return;
    free(m->nodes);
    free(m->params);
    nnz_arena_free(&m->param_arena);
    nnz_arena_free(&m->act_arena);
    nnz_model_sparse_clear(m);
    free(m->profile);
    free(m);
}

/* Records the first builder error (later ones are consequences) and returns -1. */
__attribute__((format(printf, 3, 4)))
static int build_fail(nnz_model *m, nnz_status code, const char *fmt, ...) {
    if (m->build_error == NNZ_OK) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(m->build_message, sizeof m->build_message, fmt, ap);
        va_end(ap);
        m->build_error = code;
    }
    nnz_fail(m->build_error, "%s", m->build_message);
    return -1;
}

static bool valid_name(const char *name) {
    size_t n = 0;
    for (; name[n]; n++) {
        char c = name[n];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                  c == '.' || c == '-';
        if (!ok || n >= NNZ_NAME_MAX - 1) return false;
    }
    return n > 0;
}

static bool in_range(int v, int lo, int hi) { return v >= lo && v <= hi; }

/* Checks the hyper-parameters of spec's op and resets the fields that do not
 * apply to it, so equal graphs have equal nodes whatever the caller left there. */
static int check_hyper(nnz_model *m, nnz_node *n) {
    bool conv = n->op == NNZ_OP_CONV2D, pool = n->op == NNZ_OP_MAXPOOL || n->op == NNZ_OP_AVGPOOL;
    if (conv || n->op == NNZ_OP_LINEAR) {
        if (!in_range(n->out_ch, 1, MAX_CHANNELS))
            return build_fail(m, NNZ_ERR_INVALID_ARG, "%s '%s': %d output channels/features; use 1..%d",
                              nnz_op_name(n->op), n->name, n->out_ch, MAX_CHANNELS);
    } else {
        n->out_ch = 0;
        n->has_bias = false;
    }
    if (conv || pool) {
        if (!in_range(n->k, 1, MAX_KERNEL) || !in_range(n->stride, 1, MAX_STRIDE) || !in_range(n->pad, 0, MAX_PAD))
            return build_fail(m, NNZ_ERR_INVALID_ARG,
                              "%s '%s': kernel %d, stride %d, pad %d; use kernel 1..%d, stride 1..%d, pad 0..%d",
                              nnz_op_name(n->op), n->name, n->k, n->stride, n->pad, MAX_KERNEL, MAX_STRIDE, MAX_PAD);
        if (pool && n->pad > n->k / 2)
            return build_fail(m, NNZ_ERR_INVALID_ARG, "%s '%s': pad %d is more than half the kernel %d",
                              nnz_op_name(n->op), n->name, n->pad, n->k);
    } else {
        n->k = n->stride = n->pad = 0;
    }
    if (conv) {
        if (!in_range(n->groups, 1, MAX_CHANNELS))
            return build_fail(m, NNZ_ERR_INVALID_ARG, "conv2d '%s': groups %d; use 1..%d", n->name, n->groups,
                              MAX_CHANNELS);
    } else {
        n->groups = 0;
    }
    if (n->op == NNZ_OP_BATCHNORM) {
        if (!(n->eps > 0 && n->eps <= 1) || !(n->momentum >= 0 && n->momentum <= 1))
            return build_fail(m, NNZ_ERR_INVALID_ARG, "batchnorm '%s': eps %g must be in (0,1], momentum %g in [0,1]",
                              n->name, (double)n->eps, (double)n->momentum);
    } else {
        n->eps = n->momentum = 0;
    }
    if (n->op == NNZ_OP_DROPOUT) {
        if (!(n->p >= 0 && n->p < 1))
            return build_fail(m, NNZ_ERR_INVALID_ARG, "dropout '%s': p %g must be in [0,1)", n->name, (double)n->p);
    } else {
        n->p = 0;
    }
    if (n->op != NNZ_OP_ADD) n->skip = -1;
    return 0;
}

int nnz_add_node(nnz_model *m, const nnz_node *spec) {
    if (!m) return -1;
    if (m->build_error != NNZ_OK) return build_fail(m, m->build_error, "%s", m->build_message);
    if (!spec) return build_fail(m, NNZ_ERR_INVALID_ARG, "nnz_add_node: spec is NULL");
    if (m->finalized)
        return build_fail(m, NNZ_ERR_INVALID_ARG, "cannot add node '%.*s': the model is already finalized",
                          NNZ_NAME_MAX, spec->name);
    if ((unsigned)spec->op >= NNZ_OP_COUNT)
        return build_fail(m, NNZ_ERR_INVALID_ARG, "node %d: unknown op %d", m->n_nodes, (int)spec->op);
    if (!memchr(spec->name, '\0', NNZ_NAME_MAX) || !valid_name(spec->name))
        return build_fail(m, NNZ_ERR_INVALID_ARG,
                          "node %d: bad name '%.*s'; use 1..%d characters of [A-Za-z0-9_.-]", m->n_nodes,
                          NNZ_NAME_MAX - 1, spec->name, NNZ_NAME_MAX - 1);
    for (int i = 0; i < m->n_nodes; i++)
        if (strcmp(m->nodes[i].name, spec->name) == 0)
            return build_fail(m, NNZ_ERR_INVALID_ARG, "node name '%s' is used twice (nodes %d and %d); names must be unique",
                              spec->name, i, m->n_nodes);
    if (m->n_nodes >= MAX_NODES)
        return build_fail(m, NNZ_ERR_INVALID_ARG, "more than %d nodes", MAX_NODES);
    if (!in_range(spec->input, -1, m->n_nodes - 1))
        return build_fail(m, NNZ_ERR_INVALID_ARG,
                          "node %d '%s': input %d must be an earlier node (0..%d) or -1 for the model input",
                          m->n_nodes, spec->name, spec->input, m->n_nodes - 1);
    if (spec->op == NNZ_OP_ADD && !in_range(spec->skip, -1, m->n_nodes - 1))
        return build_fail(m, NNZ_ERR_INVALID_ARG,
                          "add '%s': skip %d must be an earlier node (0..%d) or -1 for the model input", spec->name,
                          spec->skip, m->n_nodes - 1);
    if (!in_range(spec->block, -1, MAX_BLOCK))
        return build_fail(m, NNZ_ERR_INVALID_ARG, "node '%s': block %d must be in -1..%d", spec->name, spec->block,
                          MAX_BLOCK);

    nnz_node n = *spec;
    if (check_hyper(m, &n) < 0) return -1;
    /* derived by finalize */
    n.in_h = n.in_w = n.in_c = n.h = n.w = n.c = 0;
    n.weight = n.bias = n.running_mean = n.running_var = -1;
    n.flops = 0;

    if (m->n_nodes == m->cap_nodes) {
        int cap = m->cap_nodes ? 2 * m->cap_nodes : 16;
        nnz_node *grown = realloc(m->nodes, (size_t)cap * sizeof *grown);
        if (!grown) return build_fail(m, NNZ_ERR_NOMEM, "out of memory adding node '%s'", n.name);
        m->nodes = grown;
        m->cap_nodes = cap;
    }
    m->nodes[m->n_nodes] = n;
    return m->n_nodes++;
}

/* A spec fed by the previous node, in the current block. */
static nnz_node chain_spec(const nnz_model *m, const char *name, nnz_op op) {
    nnz_node n;
    memset(&n, 0, sizeof n);
    n.op = op;
    if (name) {
        size_t len = strnlen(name, NNZ_NAME_MAX);
        /* too long: keep it unterminated-looking so add_node reports it */
        memcpy(n.name, name, len < NNZ_NAME_MAX ? len + 1 : NNZ_NAME_MAX);
    }
    n.input = m->n_nodes - 1;
    n.skip = -1;
    n.block = m->current_block;
    return n;
}

int nnz_add_conv2d(nnz_model *m, const char *name, int out_ch, int k, int stride, int pad, int groups, bool bias) {
    if (!m) return -1;
    nnz_node n = chain_spec(m, name, NNZ_OP_CONV2D);
    n.out_ch = out_ch;
    n.k = k;
    n.stride = stride;
    n.pad = pad;
    n.groups = groups;
    n.has_bias = bias;
    return nnz_add_node(m, &n);
}

int nnz_add_linear(nnz_model *m, const char *name, int out_features, bool bias) {
    if (!m) return -1;
    nnz_node n = chain_spec(m, name, NNZ_OP_LINEAR);
    n.out_ch = out_features;
    n.has_bias = bias;
    return nnz_add_node(m, &n);
}

int nnz_add_batchnorm(nnz_model *m, const char *name) {
    if (!m) return -1;
    nnz_node n = chain_spec(m, name, NNZ_OP_BATCHNORM);
    n.eps = 1e-5f;
    n.momentum = 0.1f;
    return nnz_add_node(m, &n);
}

int nnz_add_activation(nnz_model *m, const char *name, nnz_op op) {
    if (!m) return -1;
    if (op != NNZ_OP_RELU && op != NNZ_OP_RELU6 && op != NNZ_OP_IDENTITY)
        return build_fail(m, NNZ_ERR_INVALID_ARG, "nnz_add_activation '%s': op %s is not relu, relu6 or identity",
                          name ? name : "?", nnz_op_name(op));
    nnz_node n = chain_spec(m, name, op);
    return nnz_add_node(m, &n);
}

int nnz_add_pool(nnz_model *m, const char *name, nnz_op op, int k, int stride, int pad) {
    if (!m) return -1;
    if (op != NNZ_OP_MAXPOOL && op != NNZ_OP_AVGPOOL)
        return build_fail(m, NNZ_ERR_INVALID_ARG, "nnz_add_pool '%s': op %s is not maxpool or avgpool",
                          name ? name : "?", nnz_op_name(op));
    nnz_node n = chain_spec(m, name, op);
    n.k = k;
    n.stride = stride;
    n.pad = pad;
    return nnz_add_node(m, &n);
}

int nnz_add_global_avgpool(nnz_model *m, const char *name) {
    if (!m) return -1;
    nnz_node n = chain_spec(m, name, NNZ_OP_GLOBAL_AVGPOOL);
    return nnz_add_node(m, &n);
}

int nnz_add_flatten(nnz_model *m, const char *name) {
    if (!m) return -1;
    nnz_node n = chain_spec(m, name, NNZ_OP_FLATTEN);
    return nnz_add_node(m, &n);
}

int nnz_add_dropout(nnz_model *m, const char *name, float p) {
    if (!m) return -1;
    nnz_node n = chain_spec(m, name, NNZ_OP_DROPOUT);
    n.p = p;
    return nnz_add_node(m, &n);
}

int nnz_add_residual(nnz_model *m, const char *name, int skip_node) {
    if (!m) return -1;
    nnz_node n = chain_spec(m, name, NNZ_OP_ADD);
    n.skip = skip_node;
    return nnz_add_node(m, &n);
}

void nnz_block_begin(nnz_model *m) {
    if (!m) return;
    if (m->current_block != -1) {
        build_fail(m, NNZ_ERR_INVALID_ARG, "nnz_block_begin inside block %d: blocks do not nest", m->current_block);
        return;
    }
    int next = 0;
    for (int i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].block >= next) next = m->nodes[i].block + 1;
    m->current_block = next;
}

void nnz_block_end(nnz_model *m) {
    if (!m) return;
    if (m->current_block == -1) {
        build_fail(m, NNZ_ERR_INVALID_ARG, "nnz_block_end without nnz_block_begin");
        return;
    }
    m->current_block = -1;
}

/* ---- finalize ---- */

static bool mul_i64(int64_t a, int64_t b, int64_t *out) { return !__builtin_mul_overflow(a, b, out); }

/* Output shape of a conv/pool window: floor((H + 2p - k) / s) + 1, or 0 if empty. */
static int window_out(int size, int k, int stride, int pad) {
    int64_t span = (int64_t)size + 2 * (int64_t)pad - k;
    return span < 0 ? 0 : (int)(span / stride + 1);
}

/* Fills the derived shape and FLOPs of node i from its input(s). */
static nnz_status infer_node(nnz_model *m, int i) {
    nnz_node *n = &m->nodes[i];
    if (n->input >= i || n->input < -1 || (n->op == NNZ_OP_ADD && (n->skip >= i || n->skip < -1)))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "node %d '%s': inputs must be earlier nodes", i, n->name);
    if (n->input < 0) {
        n->in_h = m->in_h, n->in_w = m->in_w, n->in_c = m->in_c;
    } else {
        const nnz_node *p = &m->nodes[n->input];
        n->in_h = p->h, n->in_w = p->w, n->in_c = p->c;
    }
    int64_t in_numel = (int64_t)n->in_h * n->in_w * n->in_c;
    n->h = n->in_h, n->w = n->in_w, n->c = n->in_c; /* shape-preserving ops */
    int64_t flops = 0, out_numel = in_numel;
    bool ok = true;
    switch (n->op) {
    case NNZ_OP_CONV2D: {
        if (n->in_c % n->groups || n->out_ch % n->groups)
            return nnz_fail(NNZ_ERR_INVALID_ARG,
                            "conv2d '%s': %d input and %d output channels must both be divisible by groups %d", n->name,
                            n->in_c, n->out_ch, n->groups);
        n->h = window_out(n->in_h, n->k, n->stride, n->pad);
        n->w = window_out(n->in_w, n->k, n->stride, n->pad);
        n->c = n->out_ch;
        if (n->h < 1 || n->w < 1)
            return nnz_fail(NNZ_ERR_INVALID_ARG, "conv2d '%s': kernel %d with pad %d does not fit its %dx%d input",
                            n->name, n->k, n->pad, n->in_h, n->in_w);
        out_numel = (int64_t)n->h * n->w * n->c;
        ok = mul_i64(out_numel, 2 * (int64_t)(n->in_c / n->groups) * n->k * n->k, &flops);
        break;
    }
    case NNZ_OP_LINEAR:
        if (n->in_h != 1 || n->in_w != 1)
            return nnz_fail(NNZ_ERR_INVALID_ARG,
                            "linear '%s' is fed a spatial %dx%dx%d tensor; add a flatten or global_avgpool before it",
                            n->name, n->in_h, n->in_w, n->in_c);
        n->c = n->out_ch;
        out_numel = n->c;
        ok = mul_i64(2 * (int64_t)n->in_c, n->out_ch, &flops);
        break;
    case NNZ_OP_BATCHNORM: flops = 2 * in_numel; break;
    case NNZ_OP_MAXPOOL:
    case NNZ_OP_AVGPOOL:
        n->h = window_out(n->in_h, n->k, n->stride, n->pad);
        n->w = window_out(n->in_w, n->k, n->stride, n->pad);
        if (n->h < 1 || n->w < 1)
            return nnz_fail(NNZ_ERR_INVALID_ARG, "%s '%s': window %d with pad %d does not fit its %dx%d input",
                            nnz_op_name(n->op), n->name, n->k, n->pad, n->in_h, n->in_w);
        out_numel = (int64_t)n->h * n->w * n->c;
        if (n->op == NNZ_OP_AVGPOOL) flops = out_numel * n->k * n->k;
        break;
    case NNZ_OP_GLOBAL_AVGPOOL:
        n->h = n->w = 1;
        out_numel = n->c;
        flops = in_numel;
        break;
    case NNZ_OP_FLATTEN:
        n->h = n->w = 1;
        n->c = (int)in_numel; /* <= MAX_NODE_NUMEL */
        break;
    case NNZ_OP_ADD: {
        int sh = m->in_h, sw = m->in_w, sc = m->in_c;
        if (n->skip >= 0) sh = m->nodes[n->skip].h, sw = m->nodes[n->skip].w, sc = m->nodes[n->skip].c;
        if (sh != n->in_h || sw != n->in_w || sc != n->in_c)
            return nnz_fail(NNZ_ERR_INVALID_ARG,
                            "add '%s': operands differ in shape: input %dx%dx%d, skip '%s' %dx%dx%d", n->name, n->in_h,
                            n->in_w, n->in_c, n->skip >= 0 ? m->nodes[n->skip].name : "(model input)", sh, sw, sc);
        flops = in_numel;
        break;
    }
    case NNZ_OP_RELU:
    case NNZ_OP_RELU6:
    case NNZ_OP_IDENTITY:
    case NNZ_OP_DROPOUT: break;
    case NNZ_OP_COUNT: return nnz_fail(NNZ_ERR_INVALID_ARG, "node '%s': unknown op", n->name);
    }
    if (!ok || out_numel > MAX_NODE_NUMEL)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "%s '%s': output %dx%dx%d is too large (at most %lld floats per image)",
                        nnz_op_name(n->op), n->name, n->h, n->w, n->c, (long long)MAX_NODE_NUMEL);
    n->flops = flops;
    return NNZ_OK;
}

typedef struct {
    const char *suffix;
    int ndim;
    int64_t shape[NNZ_MAX_DIMS];
    bool trainable, no_decay;
    int *slot; /* where the node keeps the index */
    enum { INIT_UNIFORM, INIT_ONE, INIT_ZERO } init;
} param_spec;

/* The parameters node n owns (at most 4); returns how many. */
static int node_params(nnz_node *n, param_spec out[4]) {
    int k = 0;
    switch (n->op) {
    case NNZ_OP_CONV2D:
        out[k++] = (param_spec){".weight", 4, {n->out_ch, n->k, n->k, n->in_c / n->groups}, true, false,
                                &n->weight, INIT_UNIFORM};
        if (n->has_bias) out[k++] = (param_spec){".bias", 1, {n->out_ch}, true, true, &n->bias, INIT_UNIFORM};
        break;
    case NNZ_OP_LINEAR:
        out[k++] = (param_spec){".weight", 2, {n->out_ch, n->in_c}, true, false, &n->weight, INIT_UNIFORM};
        if (n->has_bias) out[k++] = (param_spec){".bias", 1, {n->out_ch}, true, true, &n->bias, INIT_UNIFORM};
        break;
    case NNZ_OP_BATCHNORM:
        out[k++] = (param_spec){".weight", 1, {n->c}, true, true, &n->weight, INIT_ONE};
        out[k++] = (param_spec){".bias", 1, {n->c}, true, true, &n->bias, INIT_ZERO};
        out[k++] = (param_spec){".running_mean", 1, {n->c}, false, false, &n->running_mean, INIT_ZERO};
        out[k++] = (param_spec){".running_var", 1, {n->c}, false, false, &n->running_var, INIT_ONE};
        break;
    default: break;
    }
    return k;
}

/* FNV-1a: the rng stream of a parameter is its name, so a parameter's initial
 * values do not depend on what else is in the graph. */
static uint64_t name_hash(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

static int64_t fan_in(const nnz_node *n) {
    return n->op == NNZ_OP_CONV2D ? (int64_t)(n->in_c / n->groups) * n->k * n->k : n->in_c;
}

static nnz_status create_params(nnz_model *m, uint64_t seed) {
    int count = 0;
    int64_t total = 0;
    param_spec specs[4];
    for (int i = 0; i < m->n_nodes; i++) {
        int k = node_params(&m->nodes[i], specs);
        count += k;
        for (int j = 0; j < k; j++) {
            int64_t numel = 1;
            for (int d = 0; d < specs[j].ndim; d++) numel *= specs[j].shape[d]; /* each factor <= 2^20, <= 2 dims > 1024 */
            total += numel;
            if (total > MAX_PARAMS)
                return nnz_fail(NNZ_ERR_INVALID_ARG,
                                "the model has more than %lld parameters (at node '%s'); it is too large for nnz",
                                (long long)MAX_PARAMS, m->nodes[i].name);
        }
    }
    m->params = count ? calloc((size_t)count, sizeof *m->params) : NULL;
    if (count && !m->params) return nnz_fail(NNZ_ERR_NOMEM, "out of memory for %d parameter descriptors", count);
    m->n_params = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        nnz_node *n = &m->nodes[i];
        int k = node_params(n, specs);
        for (int j = 0; j < k; j++) {
            param_spec *s = &specs[j];
            nnz_param *p = &m->params[m->n_params];
            snprintf(p->name, sizeof p->name, "%s%s", n->name, s->suffix);
            p->value.dtype = NNZ_F32;
            p->value.ndim = s->ndim;
            for (int d = 0; d < s->ndim; d++) p->value.shape[d] = s->shape[d];
            p->trainable = s->trainable;
            p->no_decay = s->no_decay;
            p->node = i;
            int64_t numel = nnz_tensor_numel(&p->value);
            if (m->graph_only) { /* names and shapes only */
                *s->slot = m->n_params++;
                continue;
            }
            float *v = nnz_arena_alloc(&m->param_arena, (size_t)numel * sizeof(float), p->name);
            if (!v) return NNZ_ERR_NOMEM;
            p->value.data = v;
            if (s->trainable) {
                p->grad = nnz_arena_alloc(&m->param_arena, (size_t)numel * sizeof(float), p->name);
                if (!p->grad) return NNZ_ERR_NOMEM;
            }
            if (s->init == INIT_ONE) {
                for (int64_t e = 0; e < numel; e++) v[e] = 1.0f;
            } else if (s->init == INIT_UNIFORM) {
                /* kaiming_uniform(a=sqrt(5)) and the bias rule both reduce to U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
                double bound = 1.0 / sqrt((double)fan_in(n));
                nnz_rng r = nnz_rng_make(seed, name_hash(p->name));
                for (int64_t e = 0; e < numel; e++) v[e] = (float)(bound * (2.0 * nnz_rng_uniform(&r) - 1.0));
            } /* INIT_ZERO: the arena zero-fills */
            *s->slot = m->n_params++;
        }
    }
    return NNZ_OK;
}

/* The size policy (nnz_size_limit): an architecture read from a file must not make
 * nnz allocate more than the limit for one image's activations or for the weights. */
static nnz_status check_size_limit(const nnz_model *m) {
    const size_t limit = nnz_size_limit();
    double act = 0, params = 0;
    param_spec specs[4];
    for (int i = 0; i < m->n_nodes; i++) {
        const nnz_node *n = &m->nodes[i];
        act += 4.0 * n->h * n->w * n->c;
        int k = node_params((nnz_node *)n, specs);
        for (int j = 0; j < k; j++) {
            double numel = 1;
            for (int d = 0; d < specs[j].ndim; d++) numel *= (double)specs[j].shape[d];
            params += 4.0 * numel;
        }
    }
    if (act > (double)limit || params > (double)limit)
        return nnz_fail(NNZ_ERR_INVALID_ARG,
                        "the model is too large for the size limit of %zu bytes: it needs %.0f bytes of weights and "
                        "%.0f bytes of activations per image; if it is genuine, raise NNZ_SIZE_LIMIT", limit, params,
                        act);
    return NNZ_OK;
}

nnz_status nnz_model_finalize(nnz_model *m, uint64_t seed) {
    if (!m) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_model_finalize: model is NULL");
    if (m->build_error != NNZ_OK) return nnz_fail(m->build_error, "%s", m->build_message);
    if (m->finalized) return nnz_fail(NNZ_ERR_INVALID_ARG, "the model is already finalized");
    if (m->current_block != -1)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "block %d was begun but not ended; call nnz_block_end", m->current_block);
    if (m->n_nodes == 0) return nnz_fail(NNZ_ERR_INVALID_ARG, "the model has no nodes; add layers before finalizing");
    int64_t flops = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        NNZ_TRY(infer_node(m, i));
        if (__builtin_add_overflow(flops, m->nodes[i].flops, &flops))
            return nnz_fail(NNZ_ERR_INVALID_ARG, "the model's FLOP count overflows at node '%s'; it is too large",
                            m->nodes[i].name);
    }
    const nnz_node *last = &m->nodes[m->n_nodes - 1];
    if (last->h != 1 || last->w != 1)
        return nnz_fail(NNZ_ERR_INVALID_ARG,
                        "the last node '%s' outputs a spatial %dx%dx%d tensor; end the model with a flatten, "
                        "global_avgpool or linear", last->name, last->h, last->w, last->c);
    m->num_classes = last->c;
    NNZ_TRY(check_size_limit(m));
    nnz_status s = create_params(m, seed);
    if (s != NNZ_OK) {
        /* leave the model as it was: no half-created parameters */
        free(m->params);
        m->params = NULL;
        m->n_params = 0;
        nnz_arena_free(&m->param_arena);
        for (int i = 0; i < m->n_nodes; i++) {
            nnz_node *n = &m->nodes[i];
            n->weight = n->bias = n->running_mean = n->running_var = -1;
        }
        return s;
    }
    m->dropout_rng = nnz_rng_make(seed, name_hash("dropout"));
    m->finalized = true;
    return NNZ_OK;
}

int nnz_model_find_node(const nnz_model *m, const char *name) {
    if (!m || !name) return -1;
    for (int i = 0; i < m->n_nodes; i++)
        if (strcmp(m->nodes[i].name, name) == 0) return i;
    return -1;
}

int nnz_model_find_param(const nnz_model *m, const char *name) {
    if (!m || !name) return -1;
    for (int i = 0; i < m->n_params; i++)
        if (strcmp(m->params[i].name, name) == 0) return i;
    return -1;
}

nnz_status nnz_model_add_param(nnz_model *m, const char *name, int node, int ndim, const int64_t *shape,
                               bool trainable, bool no_decay, int *index) {
    if (!m || !m->finalized || !name || !shape || ndim < 1 || ndim > NNZ_MAX_DIMS || node < 0 || node >= m->n_nodes)
        return nnz_fail(NNZ_ERR_INVALID_ARG,
                        "nnz_model_add_param: needs a finalized model, a name, a node and 1..%d dims", NNZ_MAX_DIMS);
    if (strlen(name) >= sizeof m->params[0].name || nnz_model_find_param(m, name) >= 0)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_model_add_param: parameter name '%s' is too long or already used",
                        name);
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++)
        if (shape[d] < 1 || shape[d] > MAX_PARAMS || (numel *= shape[d]) > MAX_PARAMS)
            return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_model_add_param '%s': bad shape", name);
    nnz_param *grown = realloc(m->params, (size_t)(m->n_params + 1) * sizeof *grown);
    if (!grown) return nnz_fail(NNZ_ERR_NOMEM, "out of memory adding the parameter '%s'", name);
    m->params = grown;
    nnz_param *p = &m->params[m->n_params];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->value.dtype = NNZ_F32;
    p->value.ndim = ndim;
    for (int d = 0; d < ndim; d++) p->value.shape[d] = shape[d];
    p->trainable = trainable;
    p->no_decay = no_decay;
    p->node = node;
    p->value.data = nnz_arena_alloc(&m->param_arena, (size_t)numel * sizeof(float), p->name); /* zero-filled */
    if (trainable) p->grad = nnz_arena_alloc(&m->param_arena, (size_t)numel * sizeof(float), p->name);
    if (!p->value.data || (trainable && !p->grad)) return NNZ_ERR_NOMEM; /* the arena said why */
    *index = m->n_params++;
    return NNZ_OK;
}

/* Here, not in model_exec.c: it touches only parameters, and optimizer tests
 * link without the layers. */
void nnz_model_zero_grad(nnz_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].grad)
            memset(m->params[i].grad, 0, (size_t)nnz_tensor_numel(&m->params[i].value) * sizeof(float));
}

void nnz_model_get_stats(const nnz_model *m, nnz_model_stats *out) {
    if (!out) return;
    memset(out, 0, sizeof *out);
    if (!m) return;
    for (int i = 0; i < m->n_params; i++) {
        int64_t numel = nnz_tensor_numel(&m->params[i].value);
        if (m->params[i].trainable) out->params += numel;
        else out->buffers += numel;
    }
    for (int i = 0; i < m->n_nodes; i++) out->flops += m->nodes[i].flops;
    out->layers = m->n_nodes;
    out->in_h = m->in_h;
    out->in_w = m->in_w;
    out->in_c = m->in_c;
    out->num_classes = m->num_classes;
}

/* snprintf that appends at *off and never overruns (output is cut at len). */
__attribute__((format(printf, 4, 5)))
static void append(char *buf, size_t len, size_t *off, const char *fmt, ...) {
    if (*off >= len) return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(buf + *off, len - *off, fmt, ap);
    va_end(ap);
    if (w > 0) *off += (size_t)w;
}

void nnz_model_summary(const nnz_model *m, char *buf, size_t len) {
    if (!buf || len == 0) return;
    buf[0] = '\0';
    if (!m) return;
    size_t off = 0;
    append(buf, len, &off, "%-4s %-24s %-15s %-16s %12s %14s\n", "#", "name", "op", "output (h,w,c)", "params",
           "FLOPs");
    for (int i = 0; i < m->n_nodes; i++) {
        const nnz_node *n = &m->nodes[i];
        int64_t params = 0;
        for (int j = 0; j < m->n_params; j++)
            if (m->params[j].node == i && m->params[j].trainable) params += nnz_tensor_numel(&m->params[j].value);
        char shape[48];
        if (m->finalized) snprintf(shape, sizeof shape, "(%d,%d,%d)", n->h, n->w, n->c);
        else snprintf(shape, sizeof shape, "?");
        append(buf, len, &off, "%-4d %-24s %-15s %-16s %12lld %14lld\n", i, n->name, nnz_op_name(n->op), shape,
               (long long)params, (long long)n->flops);
    }
    nnz_model_stats st;
    nnz_model_get_stats(m, &st);
    append(buf, len, &off, "input (%d,%d,%d), %d classes, %d nodes: %lld parameters, %lld buffers, %.3f MFLOPs/image%s\n",
           m->in_h, m->in_w, m->in_c, m->num_classes, m->n_nodes, (long long)st.params, (long long)st.buffers,
           (double)st.flops / 1e6, m->finalized ? "" : " (not finalized)");
}
