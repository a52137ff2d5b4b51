/* SGD and AdamW with exactly the update rules of torch.optim.SGD and
 * torch.optim.AdamW (PyTorch 2.x, single-tensor path), so a run can be
 * compared step by step with a PyTorch reference.
 *
 * SGD (dampening 0):   g += wd*w                         (L2 added to the gradient)
 *                      buf = g on the first step, else buf = momentum*buf + g
 *                      g = g + momentum*buf (Nesterov) or buf
 *                      w -= lr*g
 * AdamW:               w *= 1 - lr*wd                     (decoupled decay)
 *                      m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2
 *                      w -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
 * Weight decay skips no_decay parameters (biases, BN gamma/beta) unless
 * decay_bn_and_bias; buffers (BN running statistics) are never touched.
 */
#include "nn/nn.h"

#include <math.h>
#include <string.h>

const char *nnz_optimizer_kind_name(nnz_optimizer_kind k) {
    switch (k) {
    case NNZ_OPT_SGD: return "sgd";
    case NNZ_OPT_ADAMW: return "adamw";
    }
    return "?";
}

nnz_status nnz_optimizer_init(nnz_optimizer *o, const nnz_model *m, nnz_optimizer_kind kind, float momentum,
                              bool nesterov, float weight_decay, bool decay_bn_and_bias) {
    if (!o) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_optimizer_init: optimizer is NULL");
    memset(o, 0, sizeof *o);
    if (!m || !m->finalized) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_optimizer_init: the model is not finalized");
    if (kind != NNZ_OPT_SGD && kind != NNZ_OPT_ADAMW)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "unknown optimizer %d; use sgd or adamw", (int)kind);
    if (!(weight_decay >= 0 && weight_decay < 1e3f))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "weight decay %g must be a non-negative number", (double)weight_decay);
    if (kind == NNZ_OPT_SGD) {
        if (!(momentum >= 0 && momentum < 1))
            return nnz_fail(NNZ_ERR_INVALID_ARG, "SGD momentum %g must be in [0,1)", (double)momentum);
        if (nesterov && momentum == 0)
            return nnz_fail(NNZ_ERR_INVALID_ARG, "Nesterov momentum needs a momentum > 0 (as in PyTorch)");
    }
    o->kind = kind;
    o->momentum = kind == NNZ_OPT_SGD ? momentum : 0;
    o->nesterov = kind == NNZ_OPT_SGD && nesterov;
    o->beta1 = 0.9f;
    o->beta2 = 0.999f;
    o->eps = 1e-8f;
    o->weight_decay = weight_decay;
    o->decay_bn_and_bias = decay_bn_and_bias;
    o->n = m->n_params;
    o->t = 0;
    bool need1 = kind == NNZ_OPT_ADAMW || o->momentum != 0, need2 = kind == NNZ_OPT_ADAMW;
    o->state1 = nnz_calloc((size_t)(o->n ? o->n : 1) * sizeof(float *), "optimizer state table");
    o->state2 = nnz_calloc((size_t)(o->n ? o->n : 1) * sizeof(float *), "optimizer state table");
    if (!o->state1 || !o->state2) {
        nnz_optimizer_free(o);
        return NNZ_ERR_NOMEM;
    }
    for (int i = 0; i < o->n; i++) {
        const nnz_param *p = &m->params[i];
        if (!p->trainable) continue;
        size_t bytes = (size_t)nnz_tensor_numel(&p->value) * sizeof(float);
        if (need1 && !(o->state1[i] = nnz_calloc(bytes, p->name))) {
            nnz_optimizer_free(o);
            return NNZ_ERR_NOMEM;
        }
        if (need2 && !(o->state2[i] = nnz_calloc(bytes, p->name))) {
            nnz_optimizer_free(o);
            return NNZ_ERR_NOMEM;
        }
    }
    return NNZ_OK;
}

void nnz_optimizer_free(nnz_optimizer *o) {
    if (!o) return;
    for (int i = 0; i < o->n; i++) {
        if (o->state1) nnz_free(o->state1[i]);
        if (o->state2) nnz_free(o->state2[i]);
    }
    nnz_free(o->state1);
    nnz_free(o->state2);
    o->state1 = o->state2 = NULL;
    o->n = 0;
}

#define OPT_PARALLEL_MIN 32768 /* elements; below this one thread is faster */

static void sgd_param(const nnz_optimizer *o, float *w, const float *grad, float *buf, int64_t n, float lr, float wd,
                      bool first) {
    const float mom = o->momentum;
    const bool nesterov = o->nesterov;
    /* elementwise, so the same numbers for any thread count; the tests inside are loop-invariant */
#pragma omp parallel for schedule(static) if (n >= OPT_PARALLEL_MIN)
    for (int64_t e = 0; e < n; e++) {
        float g = grad[e];
        if (wd != 0) g += wd * w[e];
        if (buf) {
            buf[e] = first ? g : mom * buf[e] + g;
            g = nesterov ? g + mom * buf[e] : buf[e];
        }
        w[e] -= lr * g;
    }
}

static void adamw_param(const nnz_optimizer *o, float *w, const float *grad, float *m1, float *m2, int64_t n,
                        float lr, float wd) {
    /* scalars in double, as PyTorch computes them in Python floats */
    double t = (double)o->t;
    double bc1 = 1.0 - pow((double)o->beta1, t), bc2_sqrt = sqrt(1.0 - pow((double)o->beta2, t));
    const float step_size = (float)(lr / bc1), inv_bc2_sqrt = (float)(1.0 / bc2_sqrt);
    const float decay = 1.0f - lr * wd;
    const float b1 = o->beta1, b2 = o->beta2, eps = o->eps;
#pragma omp parallel for schedule(static) if (n >= OPT_PARALLEL_MIN)
    for (int64_t e = 0; e < n; e++) {
        float g = grad[e];
        if (wd != 0) w[e] *= decay;
        m1[e] += (1.0f - b1) * (g - m1[e]); /* PyTorch's lerp_: m + (1-b1)*(g-m) */
        m2[e] = b2 * m2[e] + (1.0f - b2) * g * g;
        float denom = sqrtf(m2[e]) * inv_bc2_sqrt + eps;
        w[e] -= step_size * (m1[e] / denom);
    }
}

void nnz_optimizer_step(nnz_optimizer *o, nnz_model *m, float lr) {
    if (!o || !m || o->n != m->n_params) return;
    bool first = o->t == 0;
    o->t++;
    for (int i = 0; i < o->n; i++) {
        nnz_param *p = &m->params[i];
        if (!p->trainable || !p->grad) continue;
        float wd = (p->no_decay && !o->decay_bn_and_bias) ? 0.0f : o->weight_decay;
        int64_t n = nnz_tensor_numel(&p->value);
        float *w = nnz_tensor_f32(&p->value);
        if (o->kind == NNZ_OPT_SGD) sgd_param(o, w, p->grad, o->state1[i], n, lr, wd, first);
        else adamw_param(o, w, p->grad, o->state1[i], o->state2[i], n, lr, wd);
    }
}
