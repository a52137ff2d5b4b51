/* STR (Kusupati et al. 2020) with Gradient Annealing (AutoSparse, Kundu et al. 2023):
 * learnable pruning thresholds as a reparametrization around the model's own forward and
 * backward. The layers read w~ = sign(w)*relu(|w| - sigmoid(s)); the dense w waits in
 * st->master meanwhile, and nnz_str_backward turns dL/dw~ into dL/dw and dL/ds before putting
 * w back, so the optimizer updates w and s. sparse.h has the contract, docs/AUTOSPARSE.md the
 * equations. */
#include "sparse/sparse.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

static bool prunable(const nnz_node *n) {
    int rows, cols;
    return nnz_node_weight_matrix(n, &rows, &cols);
}

int nnz_prune_layers(const nnz_model *m, int *node, int cap) {
    int first = -1, last = -1, k = 0;
    for (int i = 0; i < m->n_nodes; i++)
        if (prunable(&m->nodes[i])) {
            if (first < 0) first = i;
            last = i;
        }
    for (int i = 0; i < m->n_nodes; i++)
        if (i != first && i != last && prunable(&m->nodes[i])) {
            if (k < cap) node[k] = i;
            k++;
        }
    return k;
}

void nnz_str_free(nnz_str *st) {
    if (!st) return;
    nnz_free(st->node);
    nnz_free(st->weight);
    nnz_free(st->threshold);
    nnz_free(st->rows);
    nnz_free(st->cols);
    nnz_free(st->offset);
    nnz_free(st->master);
    memset(st, 0, sizeof *st);
}

nnz_status nnz_str_init(nnz_str *st, nnz_model *m, bool per_channel, float s0, float decay) {
    memset(st, 0, sizeof *st);
    if (!m || !m->finalized) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_str_init: the model is not finalized");
    if (!isfinite(s0) || !(decay >= 0) || !isfinite(decay))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "STR: the threshold init (%g) must be finite and its decay (%g) >= 0",
                        (double)s0, (double)decay);
    const int n = nnz_prune_layers(m, NULL, 0);
    if (n == 0)
        return nnz_fail(NNZ_ERR_INVALID_ARG,
                        "STR: the model has no prunable layer (conv or linear besides the first and the last)");
    st->n = n;
    st->per_channel = per_channel;
    st->decay = decay;
    const size_t ni = (size_t)n * sizeof(int);
    st->node = nnz_alloc(ni, "STR layers");
    st->weight = nnz_alloc(ni, "STR layers");
    st->threshold = nnz_alloc(ni, "STR layers");
    st->rows = nnz_alloc(ni, "STR layers");
    st->cols = nnz_alloc(ni, "STR layers");
    st->offset = nnz_alloc((size_t)n * sizeof(int64_t), "STR layers");
    if (!st->node || !st->weight || !st->threshold || !st->rows || !st->cols || !st->offset) goto nomem;
    nnz_prune_layers(m, st->node, n);
    int64_t total = 0;
    for (int l = 0; l < n; l++) {
        const nnz_node *nd = &m->nodes[st->node[l]];
        st->weight[l] = nd->weight;
        st->rows[l] = nd->out_ch;
        st->cols[l] = (int)(nnz_tensor_numel(&m->params[nd->weight].value) / nd->out_ch);
        st->offset[l] = total;
        total += nnz_tensor_numel(&m->params[nd->weight].value);
        char name[NNZ_NAME_MAX + 16];
        snprintf(name, sizeof name, "%s.threshold", nd->name);
        const int64_t want = per_channel ? nd->out_ch : 1;
        int p = nnz_model_find_param(m, name);
        if (p >= 0) { /* a resumed run: keep the learned values */
            if (nnz_tensor_numel(&m->params[p].value) != want) {
                nnz_str_free(st);
                return nnz_fail(NNZ_ERR_INVALID_ARG, "'%s' holds %lld thresholds, %s granularity needs %lld", name,
                                (long long)nnz_tensor_numel(&m->params[p].value), per_channel ? "channel" : "layer",
                                (long long)want);
            }
        } else {
            const nnz_status added = nnz_model_add_param(m, name, st->node[l], 1, &want, true, true, &p);
            if (added != NNZ_OK) {
                nnz_str_free(st);
                return added;
            }
            float *s = nnz_tensor_f32(&m->params[p].value);
            for (int64_t c = 0; c < want; c++) s[c] = s0;
        }
        st->threshold[l] = p;
    }
    st->master = nnz_alloc((size_t)total * sizeof(float), "the STR master weights");
    if (!st->master) goto nomem;
    return NNZ_OK;
nomem:
    nnz_str_free(st);
    return NNZ_ERR_NOMEM;
}

/* threshold of row r of layer l */
static float tau(const nnz_str *st, const nnz_model *m, int l, int r) {
    const float *s = nnz_tensor_f32(&m->params[st->threshold[l]].value);
    return (float)sigmoid(st->per_channel ? s[r] : s[0]);
}

static float shrink(float w, float t) {
    float a = fabsf(w) - t;
    return a > 0 ? copysignf(a, w) : 0.0f;
}

void nnz_str_apply(nnz_str *st, nnz_model *m) {
    if (st->applied) return;
    for (int l = 0; l < st->n; l++) {
        float *W = nnz_tensor_f32(&m->params[st->weight[l]].value);
        float *M = st->master + st->offset[l];
        const int K = st->cols[l];
        for (int r = 0; r < st->rows[l]; r++) {
            const float t = tau(st, m, l, r);
            for (int k = 0; k < K; k++) {
                const size_t i = (size_t)r * K + k;
                M[i] = W[i];
                W[i] = shrink(W[i], t);
            }
        }
    }
    st->applied = true;
    m->sparse_planned = false; /* the zeros moved */
}

void nnz_str_restore(nnz_str *st, nnz_model *m) {
    if (!st->applied) return;
    for (int l = 0; l < st->n; l++)
        memcpy(nnz_tensor_f32(&m->params[st->weight[l]].value), st->master + st->offset[l],
               sizeof(float) * (size_t)st->rows[l] * st->cols[l]);
    st->applied = false;
    m->sparse_planned = false;
}

void nnz_str_backward(nnz_str *st, nnz_model *m, float alpha) {
    if (!st->applied) return;
    for (int l = 0; l < st->n; l++) {
        float *G = m->params[st->weight[l]].grad;
        const float *M = st->master + st->offset[l];
        nnz_param *tp = &m->params[st->threshold[l]];
        const float *s = nnz_tensor_f32(&tp->value);
        const int K = st->cols[l];
        double layer_sum = 0;
        for (int r = 0; r < st->rows[l]; r++) {
            const float t = tau(st, m, l, r);
            double sum = 0; /* sum dL/dw~ * sign(w) over the kept weights */
            for (int k = 0; k < K; k++) {
                const size_t i = (size_t)r * K + k;
                if (fabsf(M[i]) > t) {
                    sum += M[i] > 0 ? G[i] : -G[i];
                } else {
                    G[i] *= alpha;
                }
            }
            if (st->per_channel) {
                const double sg = sigmoid(s[r]);
                tp->grad[r] += (float)(-sg * (1.0 - sg) * sum + st->decay * s[r]);
            } else {
                layer_sum += sum;
            }
        }
        if (!st->per_channel) {
            const double sg = sigmoid(s[0]);
            tp->grad[0] += (float)(-sg * (1.0 - sg) * layer_sum + st->decay * s[0]);
        }
    }
    nnz_str_restore(st, m);
}

void nnz_str_bake(nnz_str *st, nnz_model *m) {
    nnz_str_restore(st, m);
    nnz_str_apply(st, m);
    st->applied = false; /* w~ is now the weight */
}

double nnz_str_sparsity(const nnz_str *st, const nnz_model *m) {
    int64_t zeros = 0, total = 0;
    for (int l = 0; l < st->n; l++) {
        const float *W = st->applied ? st->master + st->offset[l] : nnz_tensor_f32(&m->params[st->weight[l]].value);
        const int K = st->cols[l];
        for (int r = 0; r < st->rows[l]; r++) {
            const float t = tau(st, m, l, r);
            for (int k = 0; k < K; k++) zeros += fabsf(W[(size_t)r * K + k]) <= t;
        }
        total += (int64_t)st->rows[l] * K;
    }
    return total ? (double)zeros / (double)total : 0.0;
}
