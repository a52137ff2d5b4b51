/* Batch-norm folding for packing: every conv whose only consumer is a batch norm absorbs it,
 * unless that would make some channel's weights outliers (fold_is_safe below).
 * In eval mode the batch norm is an affine map per channel o,
 *   y = s[o] * conv(x)[o] + c[o],  s = gamma / sqrt(var + eps),  c = beta - s * mean,
 * and conv(x)[o] = sum W[o,..] x + b[o] (b = 0 without a bias), so the pair equals one conv
 * with weights s[o] * W[o,..] and bias s[o] * b[o] + c[o] (docs/FORMAT.md, ".nnz compressed
 * models": what nnz pack stores). Computed in double, stored as float. */
#include "nn/nn.h"
#include "pack/pack.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The batch norm conv node i feeds, when it is i's only consumer; else -1. */
static int sole_bn_consumer(const nnz_model *m, int i) {
    int bn = -1, uses = 0;
    for (int j = 0; j < m->n_nodes; j++) {
        const nnz_node *n = &m->nodes[j];
        if (n->input == i) uses++, bn = j;
        if (n->op == NNZ_OP_ADD && n->skip == i) uses++;
    }
    if (uses != 1 || m->nodes[bn].op != NNZ_OP_BATCHNORM) return -1;
    return bn;
}

/* Folding multiplies channel o's weights by s[o]. A batch norm with a near-zero running variance
 * (a channel that pruning left nearly dead, seen in AutoSparse-trained mbv2-tiny) makes s[o]
 * huge, so that channel's folded weights become outliers of the tensor: its shared codebook then
 * represents them coarsely, and the large output that the bias cancels keeps the error (a folded
 * 92%-sparse mbv2-tiny packed to 10% accuracy). So a conv is folded only when the spread of its
 * per-channel weight magnitudes, max over median, grows by at most FOLD_MAX_SPREAD_GROWTH. */
#define FOLD_MAX_SPREAD_GROWTH 8.0

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* max over median of v[0..n) (entries 0 left out); 1 when none is nonzero */
static double spread(double *v, int n) {
    int k = 0;
    for (int i = 0; i < n; i++)
        if (v[i] > 0) v[k++] = v[i];
    if (!k) return 1.0;
    qsort(v, (size_t)k, sizeof *v, cmp_double);
    return v[k - 1] / v[k / 2];
}

/* Whether folding batch norm node bn into conv node conv keeps the weights' spread in bounds. */
static bool fold_is_safe(const nnz_model *m, const nnz_node *conv, const nnz_node *bn) {
    const float *gamma = nnz_tensor_f32(&m->params[bn->weight].value);
    const float *var = nnz_tensor_f32(&m->params[bn->running_var].value);
    const float *w = nnz_tensor_f32(&m->params[conv->weight].value);
    const int oc = conv->out_ch;
    const int64_t per = nnz_tensor_numel(&m->params[conv->weight].value) / oc;
    double *raw = malloc(sizeof *raw * (size_t)oc), *folded = malloc(sizeof *folded * (size_t)oc);
    bool safe = false;
    if (raw && folded) {
        for (int o = 0; o < oc; o++) {
            double r = 0;
            for (int64_t e = 0; e < per; e++) r = fmax(r, fabs((double)w[o * per + e]));
            raw[o] = r;
            folded[o] = r * fabs((double)gamma[o]) / sqrt((double)var[o] + (double)bn->eps);
        }
        const double before = spread(raw, oc), after = spread(folded, oc);
        safe = isfinite(after) && after <= FOLD_MAX_SPREAD_GROWTH * fmax(before, 1.0);
    }
    free(raw), free(folded);
    return safe;
}

nnz_status nnz_pack_fold_batchnorm(const nnz_model *m, nnz_model **out, int *folded) {
    *out = NULL;
    if (folded) *folded = 0;
    if (!m || !m->finalized) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_pack_fold_batchnorm: a finalized model is needed");
    const int N = m->n_nodes;
    int *bn_of = malloc(sizeof *bn_of * (size_t)(N + 1)), *map = malloc(sizeof *map * (size_t)(N + 1));
    bool *gone = calloc((size_t)N + 1, sizeof *gone);
    nnz_node *specs = malloc(sizeof *specs * (size_t)(N + 1));
    nnz_model *r = NULL;
    nnz_status s = NNZ_OK;
    if (!bn_of || !map || !gone || !specs) {
        s = nnz_fail(NNZ_ERR_NOMEM, "out of memory folding the batch norms");
        goto done;
    }
    int count = 0;
    for (int i = 0; i < N; i++) {
        bn_of[i] = m->nodes[i].op == NNZ_OP_CONV2D ? sole_bn_consumer(m, i) : -1;
        if (bn_of[i] >= 0 && !fold_is_safe(m, &m->nodes[i], &m->nodes[bn_of[i]])) bn_of[i] = -1;
        if (bn_of[i] >= 0) gone[bn_of[i]] = true, count++;
    }
    int n = 0;
    for (int i = 0; i < N; i++) {
        const nnz_node *nd = &m->nodes[i];
        if (gone[i]) { /* the batch norm: its consumers now read the conv */
            map[i] = map[nd->input];
            continue;
        }
        specs[n] = *nd;
        if (nd->input >= 0) specs[n].input = map[nd->input];
        if (nd->op == NNZ_OP_ADD && nd->skip >= 0) specs[n].skip = map[nd->skip];
        if (bn_of[i] >= 0) specs[n].has_bias = true;
        map[i] = n++;
    }
    if ((s = nnz_model_create(m->in_h, m->in_w, m->in_c, &r))) goto done;
    for (int i = 0; i < n; i++) nnz_add_node(r, &specs[i]);
    if ((s = nnz_model_finalize(r, 0))) goto done;
    for (int i = 0; i < r->n_params; i++) { /* every parameter that survives, by name */
        nnz_param *p = &r->params[i];
        int j = nnz_model_find_param(m, p->name);
        if (j < 0) continue;
        if (nnz_tensor_numel(&m->params[j].value) != nnz_tensor_numel(&p->value)) {
            s = nnz_fail(NNZ_ERR_INVALID_ARG, "folding batch norms: parameter '%s' changed its shape", p->name);
            goto done;
        }
        memcpy(p->value.data, m->params[j].value.data, nnz_tensor_bytes(&p->value));
    }
    for (int i = 0; i < N; i++) {
        if (bn_of[i] < 0) continue;
        const nnz_node *c = &m->nodes[i], *b = &m->nodes[bn_of[i]], *rc = &r->nodes[map[i]];
        const float *gamma = nnz_tensor_f32(&m->params[b->weight].value), *beta = nnz_tensor_f32(&m->params[b->bias].value);
        const float *mean = nnz_tensor_f32(&m->params[b->running_mean].value);
        const float *var = nnz_tensor_f32(&m->params[b->running_var].value);
        const float *bias = c->bias >= 0 ? nnz_tensor_f32(&m->params[c->bias].value) : NULL;
        const float *w = nnz_tensor_f32(&m->params[c->weight].value);
        float *w2 = nnz_tensor_f32(&r->params[rc->weight].value), *b2 = nnz_tensor_f32(&r->params[rc->bias].value);
        const int64_t per = nnz_tensor_numel(&m->params[c->weight].value) / c->out_ch; /* (OC, KH, KW, IC/groups) */
        for (int o = 0; o < c->out_ch; o++) {
            const double sc = (double)gamma[o] / sqrt((double)var[o] + (double)b->eps);
            for (int64_t e = 0; e < per; e++) w2[o * per + e] = (float)(sc * (double)w[o * per + e]);
            b2[o] = (float)((double)beta[o] - sc * (double)mean[o] + (bias ? sc * (double)bias[o] : 0.0));
        }
    }
    r->compute = m->compute;
    if (folded) *folded = count;
    *out = r;
    r = NULL;
done:
    nnz_model_free(r);
    free(bn_of), free(map), free(gone), free(specs);
    return s;
}
