/* FLOP accounting of sparse models and sparse training (docs/AUTOSPARSE.md, "FLOPs"). A conv or
 * linear layer whose weight has density d (fraction of nonzeros) costs d times its dense
 * forward FLOPs f (node.flops); every other node costs its node.flops. Training one image:
 * forward d*f + backward-data d*f + backward-weight (dense_wgrad ? f : d*f) for conv/linear,
 * 3*f for the rest, so a dense model costs 3*F (RigL's convention). */
#include "sparse/sparse.h"

#include <stdio.h>
#include <string.h>

static double density(const nnz_model *m, const nnz_node *n) {
    const nnz_param *p = &m->params[n->weight];
    const float *W = nnz_tensor_f32(&p->value);
    const int64_t count = nnz_tensor_numel(&p->value);
    int64_t nz = 0;
    for (int64_t i = 0; i < count; i++) nz += W[i] != 0.0f;
    return count ? (double)nz / (double)count : 1.0;
}

static bool weighted(const nnz_node *n) {
    return (n->op == NNZ_OP_CONV2D || n->op == NNZ_OP_LINEAR) && n->weight >= 0;
}

double nnz_model_sparse_flops(const nnz_model *m, double *per_node, double *dense) {
    double total = 0, d_total = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        const nnz_node *n = &m->nodes[i];
        const double f = (double)n->flops, s = weighted(n) ? density(m, n) * f : f;
        if (per_node) per_node[i] = s;
        total += s;
        d_total += f;
    }
    if (dense) *dense = d_total;
    return total;
}

double nnz_train_step_flops(const nnz_model *m, bool dense_wgrad, double *dense) {
    double total = 0, d_total = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        const nnz_node *n = &m->nodes[i];
        const double f = (double)n->flops;
        d_total += 3 * f;
        if (!weighted(n)) {
            total += 3 * f;
            continue;
        }
        const double s = density(m, n) * f;
        total += 2 * s + (dense_wgrad ? f : s);
    }
    if (dense) *dense = d_total;
    return total;
}

nnz_status nnz_model_flops_summary(const nnz_model *m, char *buf, size_t len) {
    if (!m || !buf || !len) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_model_flops_summary: NULL argument");
    buf[0] = '\0';
    double *per = nnz_alloc(sizeof(double) * (size_t)(m->n_nodes ? m->n_nodes : 1), "per-layer FLOPs");
    if (!per) return NNZ_ERR_NOMEM;
    double dense = 0;
    const double total = nnz_model_sparse_flops(m, per, &dense);
    size_t k = 0;
    for (int i = 0; i < m->n_nodes && k < len; i++) {
        const nnz_node *n = &m->nodes[i];
        if (!weighted(n) || per[i] == (double)n->flops) continue;
        const int w = snprintf(buf + k, len - k, "%-16s %14.0f of %14.0f FLOPs (%.3fx)\n", n->name, per[i],
                               (double)n->flops, n->flops ? per[i] / (double)n->flops : 1.0);
        if (w < 0) break;
        k += (size_t)w;
    }
    if (k < len)
        snprintf(buf + k, len - k, "%-16s %14.0f of %14.0f FLOPs (%.3fx)\n", "total", total, dense,
                 dense > 0 ? total / dense : 1.0);
    nnz_free(per);
    return NNZ_OK;
}

int nnz_model_layer_sparsity(const nnz_model *m, nnz_layer_sparsity *out, int cap, double *total_flops,
                             double *total_sparse) {
    int pruned[1024];
    const int np = nnz_prune_layers(m, pruned, 1024);
    int k = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        const nnz_node *n = &m->nodes[i];
        if (!weighted(n)) continue;
        if (out && k < cap) {
            nnz_layer_sparsity *l = &out[k];
            memset(l, 0, sizeof *l);
            snprintf(l->name, sizeof l->name, "%s", n->name);
            const nnz_param *p = &m->params[n->weight];
            const float *W = nnz_tensor_f32(&p->value);
            l->weights = nnz_tensor_numel(&p->value);
            for (int64_t j = 0; j < l->weights; j++) l->zeros += W[j] == 0.0f;
            l->flops = n->flops;
            l->sparse_flops = l->weights ? (double)(l->weights - l->zeros) / (double)l->weights * (double)n->flops
                                         : (double)n->flops;
            for (int j = 0; j < np && j < 1024; j++) l->pruned |= pruned[j] == i;
        }
        k++;
    }
    const double sparse = nnz_model_sparse_flops(m, NULL, total_flops);
    if (total_sparse) *total_sparse = sparse;
    return k;
}
