/* Running the model graph: buffers, forward (train / eval), backward, predict.
 *
 * Buffers (nnz_model_reserve), per node, for up to batch_cap images:
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
 *  - every other node owns act and dact.
 */
#include "nn/nn.h"

#include <string.h>

static int64_t node_numel(const nnz_node *n) { return (int64_t)n->h * n->w * n->c; }
static int64_t input_numel(const nnz_model *m) { return (int64_t)m->in_h * m->in_w * m->in_c; }

/* Alias nodes share their input's storage (when that input is a node). */
static bool is_alias(const nnz_node *n) {
    return (n->op == NNZ_OP_IDENTITY || n->op == NNZ_OP_FLATTEN) && n->input >= 0;
}

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

static void fill_conv_shape(const nnz_node *n, int N, nnz_conv_shape *s) {
    memset(s, 0, sizeof *s);
    s->N = N, s->H = n->in_h, s->W = n->in_w, s->IC = n->in_c;
    s->OC = n->out_ch, s->KH = n->k, s->KW = n->k;
    s->stride = n->stride, s->pad = n->pad, s->groups = n->groups;
    s->OH = n->h, s->OW = n->w;
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

static nnz_status reserve_buffers(nnz_model *m, int batch) {
    int nn = m->n_nodes;
    m->act = act_alloc(m, nn, sizeof(float *), "activation table");
    m->dact = act_alloc(m, nn, sizeof(float *), "gradient table");
    m->aux = act_alloc(m, nn, sizeof(void *), "aux table");
    int *consumers = act_alloc(m, nn, sizeof(int), "consumer counts");
    if (!m->act || !m->dact || !m->aux || !consumers) return NNZ_ERR_NOMEM;
    for (int i = 0; i < nn; i++) {
        const nnz_node *n = &m->nodes[i];
        if (n->input >= 0) consumers[n->input]++;
        if (n->op == NNZ_OP_ADD && n->skip >= 0) consumers[n->skip]++;
    }
    size_t scratch = 0;
    for (int i = 0; i < nn; i++) {
        const nnz_node *n = &m->nodes[i];
        int64_t numel = (int64_t)batch * node_numel(n);
        char what[NNZ_NAME_MAX + 32];
        snprintf(what, sizeof what, "activations of '%s'", n->name);
        bool inplace = (n->op == NNZ_OP_RELU || n->op == NNZ_OP_RELU6) && n->input >= 0 && !m->keep_activations &&
                       consumers[n->input] == 1 && output_overwritable(m->nodes[n->input].op);
        if (is_alias(n)) {
            m->act[i] = m->act[n->input];
            m->dact[i] = m->dact[n->input];
        } else {
            m->act[i] = inplace ? m->act[n->input] : act_alloc(m, numel, sizeof(float), what);
            m->dact[i] = act_alloc(m, numel, sizeof(float), what);
            if (!m->act[i] || !m->dact[i]) return NNZ_ERR_NOMEM;
        }
        if (n->op == NNZ_OP_BATCHNORM) m->aux[i] = act_alloc(m, 2 * (int64_t)n->c, sizeof(float), what);
        else if (n->op == NNZ_OP_MAXPOOL) m->aux[i] = act_alloc(m, numel, sizeof(int32_t), what);
        else if (n->op == NNZ_OP_DROPOUT) m->aux[i] = act_alloc(m, numel, 1, what);
        if ((n->op == NNZ_OP_BATCHNORM || n->op == NNZ_OP_MAXPOOL || n->op == NNZ_OP_DROPOUT) && !m->aux[i])
            return NNZ_ERR_NOMEM;
        if (n->op == NNZ_OP_CONV2D) {
            nnz_conv_shape s;
            fill_conv_shape(n, batch, &s);
            size_t f = nnz_conv2d_scratch_floats(&s);
            if (f > scratch) scratch = f;
        }
    }
    if (scratch) {
        m->scratch = act_alloc(m, (int64_t)scratch, sizeof(float), "convolution scratch");
        if (!m->scratch) return NNZ_ERR_NOMEM;
    }
    if (m->input_grad) {
        m->dinput = act_alloc(m, (int64_t)batch * input_numel(m), sizeof(float), "input gradient");
        if (!m->dinput) return NNZ_ERR_NOMEM;
    }
    return NNZ_OK;
}

nnz_status nnz_model_reserve(nnz_model *m, int batch) {
    if (!m || !m->finalized) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_model_reserve: the model is not finalized");
    if (batch < 1) return nnz_fail(NNZ_ERR_INVALID_ARG, "batch size %d must be at least 1", batch);
    if (batch <= m->batch_cap && (!m->input_grad || m->dinput)) return NNZ_OK;
    if (batch < m->batch_cap) batch = m->batch_cap; /* reallocating for dinput: keep the capacity */
    nnz_arena_free(&m->act_arena);
    m->act = m->dact = NULL;
    m->aux = NULL;
    m->scratch = m->dinput = NULL;
    m->batch_cap = 0;
    nnz_status s = reserve_buffers(m, batch);
    if (s != NNZ_OK) {
        nnz_arena_free(&m->act_arena);
        m->act = m->dact = NULL;
        m->aux = NULL;
        m->scratch = m->dinput = NULL;
        return s;
    }
    m->batch_cap = batch;
    return NNZ_OK;
}

static const float *node_input(const nnz_model *m, int idx, const float *x) { return idx < 0 ? x : m->act[idx]; }

static float *param_value(const nnz_model *m, int idx) {
    return idx < 0 ? NULL : nnz_tensor_f32(&m->params[idx].value);
}

static float *param_grad(const nnz_model *m, int idx) { return idx < 0 ? NULL : m->params[idx].grad; }

nnz_status nnz_model_forward(nnz_model *m, const float *x, int n, bool train) {
    if (!m || !m->finalized) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_model_forward: the model is not finalized");
    if (!x || n < 1) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_model_forward: need an input of at least one image");
    NNZ_TRY(nnz_model_reserve(m, n));
    for (int i = 0; i < m->n_nodes; i++) {
        const nnz_node *nd = &m->nodes[i];
        const float *in = node_input(m, nd->input, x);
        float *out = m->act[i];
        int64_t numel = (int64_t)n * node_numel(nd);
        switch (nd->op) {
        case NNZ_OP_CONV2D: {
            nnz_conv_shape s;
            fill_conv_shape(nd, n, &s);
            nnz_conv2d_forward(&s, in, param_value(m, nd->weight), param_value(m, nd->bias), out, m->scratch);
            break;
        }
        case NNZ_OP_LINEAR:
            nnz_linear_forward(n, nd->in_c, nd->out_ch, in, param_value(m, nd->weight), param_value(m, nd->bias), out);
            break;
        case NNZ_OP_BATCHNORM: {
            int M = n * nd->h * nd->w;
            if (train) {
                float *save = m->aux[i];
                nnz_batchnorm_forward_train(M, nd->c, in, param_value(m, nd->weight), param_value(m, nd->bias),
                                            param_value(m, nd->running_mean), param_value(m, nd->running_var),
                                            nd->momentum, nd->eps, out, save, save + nd->c);
            } else {
                nnz_batchnorm_forward_eval(M, nd->c, in, param_value(m, nd->weight), param_value(m, nd->bias),
                                           param_value(m, nd->running_mean), param_value(m, nd->running_var), nd->eps,
                                           out);
            }
            break;
        }
        case NNZ_OP_RELU: nnz_relu_forward(numel, in, out); break;
        case NNZ_OP_RELU6: nnz_relu6_forward(numel, in, out); break;
        case NNZ_OP_IDENTITY:
        case NNZ_OP_FLATTEN:
            if (!is_alias(nd)) memcpy(out, in, (size_t)numel * sizeof(float));
            break;
        case NNZ_OP_MAXPOOL: {
            nnz_pool_shape s;
            fill_pool_shape(nd, n, &s);
            nnz_maxpool_forward(&s, in, out, m->aux[i]);
            break;
        }
        case NNZ_OP_AVGPOOL: {
            nnz_pool_shape s;
            fill_pool_shape(nd, n, &s);
            nnz_avgpool_forward(&s, in, out);
            break;
        }
        case NNZ_OP_GLOBAL_AVGPOOL: nnz_global_avgpool_forward(n, nd->in_h * nd->in_w, nd->c, in, out); break;
        case NNZ_OP_ADD: nnz_add_forward(numel, in, node_input(m, nd->skip, x), out); break;
        case NNZ_OP_DROPOUT:
            if (train && nd->p > 0) nnz_dropout_forward(numel, nd->p, &m->dropout_rng, in, out, m->aux[i]);
            else memcpy(out, in, (size_t)numel * sizeof(float));
            break;
        case NNZ_OP_COUNT: break;
        }
    }
    return NNZ_OK;
}

const float *nnz_model_output(const nnz_model *m) {
    return m && m->act && m->n_nodes > 0 ? m->act[m->n_nodes - 1] : NULL;
}

/* The gradient buffer of node idx's output, or of the model input (NULL unless input_grad). */
static float *node_grad(const nnz_model *m, int idx) { return idx < 0 ? m->dinput : m->dact[idx]; }

nnz_status nnz_model_backward(nnz_model *m, const float *x, int n, const float *dlogits) {
    if (!m || !m->finalized) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_model_backward: the model is not finalized");
    if (!x || !dlogits || n < 1 || n > m->batch_cap)
        return nnz_fail(NNZ_ERR_INVALID_ARG,
                        "nnz_model_backward: need x and dlogits of %d images, at most the %d of the last forward", n,
                        m->batch_cap);
    for (int i = 0; i < m->n_nodes; i++)
        if (!is_alias(&m->nodes[i]))
            memset(m->dact[i], 0, (size_t)((int64_t)n * node_numel(&m->nodes[i])) * sizeof(float));
    if (m->dinput) memset(m->dinput, 0, (size_t)((int64_t)n * input_numel(m)) * sizeof(float));
    int last = m->n_nodes - 1;
    int64_t out_numel = (int64_t)n * node_numel(&m->nodes[last]);
    float *dlast = m->dact[last];
    for (int64_t e = 0; e < out_numel; e++) dlast[e] += dlogits[e];

    for (int i = last; i >= 0; i--) {
        const nnz_node *nd = &m->nodes[i];
        if (is_alias(nd)) continue; /* its gradient already sits in its input's buffer */
        const float *in = node_input(m, nd->input, x);
        const float *dout = m->dact[i];
        float *dinp = node_grad(m, nd->input);
        int64_t numel = (int64_t)n * node_numel(nd);
        switch (nd->op) {
        case NNZ_OP_CONV2D: {
            nnz_conv_shape s;
            fill_conv_shape(nd, n, &s);
            nnz_conv2d_backward(&s, in, param_value(m, nd->weight), dout, dinp, param_grad(m, nd->weight),
                                param_grad(m, nd->bias), m->scratch);
            break;
        }
        case NNZ_OP_LINEAR:
            nnz_linear_backward(n, nd->in_c, nd->out_ch, in, param_value(m, nd->weight), dout, dinp,
                                param_grad(m, nd->weight), param_grad(m, nd->bias));
            break;
        case NNZ_OP_BATCHNORM: {
            const float *save = m->aux[i];
            nnz_batchnorm_backward(n * nd->h * nd->w, nd->c, in, param_value(m, nd->weight), save, save + nd->c, dout,
                                   dinp, param_grad(m, nd->weight), param_grad(m, nd->bias));
            break;
        }
        case NNZ_OP_RELU:
            if (dinp) nnz_relu_backward(numel, m->act[i], dout, dinp);
            break;
        case NNZ_OP_RELU6:
            if (dinp) nnz_relu6_backward(numel, m->act[i], dout, dinp);
            break;
        case NNZ_OP_IDENTITY:
        case NNZ_OP_FLATTEN: /* a copy of the model input */
            if (dinp) nnz_accumulate(numel, dout, dinp);
            break;
        case NNZ_OP_MAXPOOL: {
            if (!dinp) break;
            nnz_pool_shape s;
            fill_pool_shape(nd, n, &s);
            nnz_maxpool_backward(&s, m->aux[i], dout, dinp);
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
        case NNZ_OP_ADD: nnz_add_backward(numel, dout, dinp, node_grad(m, nd->skip)); break;
        case NNZ_OP_DROPOUT:
            if (!dinp) break;
            if (nd->p > 0) nnz_dropout_backward(numel, nd->p, m->aux[i], dout, dinp);
            else nnz_accumulate(numel, dout, dinp);
            break;
        case NNZ_OP_COUNT: break;
        }
    }
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
