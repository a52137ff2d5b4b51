/* Weight sharing during training: Deep Compression's trained quantization (Han et al.
 * 2016, section 3.2). A weight tensor that holds at most NNZ_SHARE_MAX_VALUES distinct
 * nonzero values (a k-means codebook, as nnz_pack_quantize leaves it) is trained as those
 * values: the gradient of a shared value (a centroid) is the sum of the gradients of the
 * weights that hold it, the assignment of weights to values never changes, and zeros
 * (pruned weights) stay zero and are no shared value.
 *
 * No parameter is added to the model: nnz_share_backward writes a value's summed gradient
 * into the gradient of every weight that holds it, so the optimizer (elementwise: SGD,
 * momentum, AdamW) performs the same update on every copy of the value, and nnz_share_sync
 * then copies the first copy onto the others, so the copies stay bitwise equal whatever
 * the optimizer's arithmetic does. Every other parameter is frozen (its gradient zeroed).
 * sparse.h has the contract. */
#include "sparse/sparse.h"

#include <float.h>
#include <math.h>
#include <string.h>

#define ZERO_SLOT 0xFFFFu

void nnz_share_free(nnz_share *sh) {
    if (!sh) return;
    for (int t = 0; t < sh->n; t++) {
        if (sh->idx) nnz_free(sh->idx[t]);
    }
    nnz_free(sh->idx);
    nnz_free(sh->param);
    nnz_free(sh->k);
    nnz_free(sh->first);
    memset(sh, 0, sizeof *sh);
}

/* The distinct nonzero values of w[0..n) (ascending, at most cap) into v; -1 when there are
 * more than cap or a value is not finite. */
static int distinct_nonzero(const float *w, int64_t n, float *v, int cap) {
    int k = 0;
    for (int64_t i = 0; i < n; i++) {
        const float x = w[i];
        if (x == 0.0f) continue;
        if (!isfinite(x)) return -1;
        int lo = 0, hi = k; /* first slot with v[slot] >= x */
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (v[mid] < x) lo = mid + 1;
            else hi = mid;
        }
        if (lo < k && v[lo] == x) continue;
        if (k == cap) return -1;
        memmove(v + lo + 1, v + lo, (size_t)(k - lo) * sizeof *v);
        v[lo] = x;
        k++;
    }
    return k;
}

static int slot_of(const float *v, int k, float x) {
    int lo = 0, hi = k;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (v[mid] < x) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

nnz_status nnz_share_init(nnz_share *sh, const nnz_model *m) {
    memset(sh, 0, sizeof *sh);
    if (!m || !m->finalized) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_share_init: the model is not finalized");
    int count = 0;
    float v[NNZ_SHARE_MAX_VALUES];
    for (int i = 0; i < m->n_nodes; i++) {
        const nnz_node *nd = &m->nodes[i];
        if ((nd->op != NNZ_OP_CONV2D && nd->op != NNZ_OP_LINEAR) || nd->weight < 0) continue;
        const nnz_param *p = &m->params[nd->weight];
        if (distinct_nonzero(nnz_tensor_f32(&p->value), nnz_tensor_numel(&p->value), v, NNZ_SHARE_MAX_VALUES) > 0)
            count++;
    }
    if (count == 0)
        return nnz_fail(NNZ_ERR_INVALID_ARG,
                        "codebook training: no convolution or linear weight holds at most %d distinct nonzero "
                        "values; quantize the model first (nnz_pack_quantize, as nnz pack does)",
                        NNZ_SHARE_MAX_VALUES);
    sh->param = nnz_calloc((size_t)count * sizeof *sh->param, "shared tensors");
    sh->k = nnz_calloc((size_t)count * sizeof *sh->k, "shared tensors");
    sh->first = nnz_calloc((size_t)count * NNZ_SHARE_MAX_VALUES * sizeof *sh->first, "shared values");
    sh->idx = nnz_calloc((size_t)count * sizeof *sh->idx, "shared tensors");
    if (!sh->param || !sh->k || !sh->first || !sh->idx) goto nomem;
    for (int i = 0; i < m->n_nodes; i++) {
        const nnz_node *nd = &m->nodes[i];
        if ((nd->op != NNZ_OP_CONV2D && nd->op != NNZ_OP_LINEAR) || nd->weight < 0) continue;
        const nnz_param *p = &m->params[nd->weight];
        const float *W = nnz_tensor_f32(&p->value);
        const int64_t n = nnz_tensor_numel(&p->value);
        const int k = distinct_nonzero(W, n, v, NNZ_SHARE_MAX_VALUES);
        if (k <= 0) continue;
        const int t = sh->n;
        uint16_t *idx = nnz_alloc((size_t)n * sizeof *idx, "shared-value assignment");
        if (!idx) goto nomem;
        sh->idx[t] = idx;
        sh->param[t] = nd->weight;
        sh->k[t] = k;
        int64_t *first = sh->first + (size_t)t * NNZ_SHARE_MAX_VALUES;
        for (int j = 0; j < k; j++) first[j] = -1;
        for (int64_t e = 0; e < n; e++) {
            if (W[e] == 0.0f) {
                idx[e] = ZERO_SLOT;
                continue;
            }
            const int s = slot_of(v, k, W[e]);
            idx[e] = (uint16_t)s;
            if (first[s] < 0) first[s] = e;
        }
        sh->n++;
    }
    return NNZ_OK;
nomem:
    nnz_share_free(sh);
    return NNZ_ERR_NOMEM;
}

void nnz_share_sync(const nnz_share *sh, nnz_model *m) {
    for (int t = 0; t < sh->n; t++) {
        float *W = nnz_tensor_f32(&m->params[sh->param[t]].value);
        const int64_t n = nnz_tensor_numel(&m->params[sh->param[t]].value);
        const int64_t *first = sh->first + (size_t)t * NNZ_SHARE_MAX_VALUES;
        float val[NNZ_SHARE_MAX_VALUES];
        for (int j = 0; j < sh->k[t]; j++) {
            float x = W[first[j]];
            /* a shared value that lands exactly on zero would turn its weights into pruned ones */
            if (x == 0.0f) x = FLT_MIN;
            val[j] = x;
        }
        const uint16_t *idx = sh->idx[t];
        for (int64_t e = 0; e < n; e++) W[e] = idx[e] == ZERO_SLOT ? 0.0f : val[idx[e]];
    }
}

void nnz_share_backward(const nnz_share *sh, nnz_model *m) {
    /* every parameter that is not a shared weight is frozen */
    for (int i = 0; i < m->n_params; i++) {
        nnz_param *p = &m->params[i];
        if (!p->grad) continue;
        bool shared = false;
        for (int t = 0; t < sh->n && !shared; t++) shared = sh->param[t] == i;
        if (!shared) memset(p->grad, 0, (size_t)nnz_tensor_numel(&p->value) * sizeof *p->grad);
    }
    for (int t = 0; t < sh->n; t++) {
        nnz_param *p = &m->params[sh->param[t]];
        float *G = p->grad;
        const int64_t n = nnz_tensor_numel(&p->value);
        const uint16_t *idx = sh->idx[t];
        double sum[NNZ_SHARE_MAX_VALUES] = {0};
        for (int64_t e = 0; e < n; e++)
            if (idx[e] != ZERO_SLOT) sum[idx[e]] += G[e];
        float g[NNZ_SHARE_MAX_VALUES];
        for (int j = 0; j < sh->k[t]; j++) g[j] = (float)sum[j];
        for (int64_t e = 0; e < n; e++) G[e] = idx[e] == ZERO_SLOT ? 0.0f : g[idx[e]];
    }
}

int nnz_share_values(const nnz_share *sh, const nnz_model *m, int t, float *values) {
    if (t < 0 || t >= sh->n) return 0;
    const float *W = nnz_tensor_f32(&m->params[sh->param[t]].value);
    const int64_t *first = sh->first + (size_t)t * NNZ_SHARE_MAX_VALUES;
    for (int j = 0; j < sh->k[t]; j++) values[j] = W[first[j]];
    return sh->k[t];
}
