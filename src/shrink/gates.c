/* The search's gates: a score per block, hard top-k activations, straight-through
 * gradients (shrink.h has the contract). */
#include "shrink/shrink.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void nnz_gates_free(nnz_gates *g, nnz_model *m) {
    if (m && m->act_identity == g->act_identity) m->act_identity = NULL;
    free(g->acts);
    free(g->param);
    free(g->keep);
    free(g->act_identity);
    memset(g, 0, sizeof *g);
}

nnz_status nnz_gates_init(nnz_gates *g, nnz_model *m, int n, const int *acts, const char *const *names, int k) {
    memset(g, 0, sizeof *g);
    if (!m || !m->finalized || n < 1 || k < 0 || k > n)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_gates_init: needs a finalized model and 0 <= k <= n, n >= 1");
    if (m->batch_cap > 0 && !m->keep_activations)
        return nnz_fail(NNZ_ERR_INVALID_ARG,
                        "nnz_gates_init: the model was reserved with in-place activations; add the gates first");
    g->n = n;
    g->k = k;
    g->acts = malloc(sizeof *g->acts * 2 * (size_t)n);
    g->param = malloc(sizeof *g->param * (size_t)n);
    g->keep = malloc(sizeof *g->keep * (size_t)n);
    g->act_identity = calloc((size_t)m->n_nodes, 1);
    if (!g->acts || !g->param || !g->keep || !g->act_identity) {
        nnz_gates_free(g, NULL);
        return nnz_fail(NNZ_ERR_NOMEM, "out of memory for %d gates", n);
    }
    for (int i = 0; i < n; i++) { /* check everything before the model changes */
        for (int j = 0; j < 2; j++) {
            int a = acts[2 * i + j];
            if (a >= m->n_nodes || (a >= 0 && m->nodes[a].op != NNZ_OP_RELU && m->nodes[a].op != NNZ_OP_RELU6)) {
                nnz_gates_free(g, NULL);
                return nnz_fail(NNZ_ERR_INVALID_ARG, "gate %d: node %d is not a relu/relu6 activation", i, a);
            }
            g->acts[2 * i + j] = a < 0 ? -1 : a;
        }
        if (g->acts[2 * i] < 0 && g->acts[2 * i + 1] < 0) {
            nnz_gates_free(g, NULL);
            return nnz_fail(NNZ_ERR_INVALID_ARG, "gate '%s' has no activation", names[i]);
        }
    }
    for (int i = 0; i < n; i++) {
        char name[NNZ_NAME_MAX + 16];
        snprintf(name, sizeof name, "%s.gate", names[i]);
        const int64_t shape[1] = {1};
        int owner = g->acts[2 * i] >= 0 ? g->acts[2 * i] : g->acts[2 * i + 1];
        const nnz_status s = nnz_model_add_param(m, name, owner, 1, shape, true, true, &g->param[i]);
        if (s != NNZ_OK) { /* a name clash or no memory: earlier scores stay, unused */
            nnz_gates_free(g, NULL);
            return s;
        }
        g->keep[i] = true;
    }
    m->act_identity = g->act_identity;
    m->keep_activations = true; /* the gradient reads every activation's input */
    return NNZ_OK;
}

float nnz_gates_score(const nnz_gates *g, const nnz_model *m, int i) {
    return nnz_tensor_f32(&m->params[g->param[i]].value)[0];
}

void nnz_gates_select(nnz_gates *g, const nnz_model *m, nnz_rng *rng, float gumbel_scale) {
    double *key = malloc(sizeof *key * (size_t)g->n);
    if (!key) { /* cannot happen for a handful of gates; keep the previous choice */
        return;
    }
    for (int i = 0; i < g->n; i++) {
        key[i] = nnz_gates_score(g, m, i);
        if (gumbel_scale > 0.0f) {
            double u = nnz_rng_uniform(rng);
            key[i] += gumbel_scale * -log(-log(u + 1e-20) + 1e-20);
        }
    }
    /* rank = how many gates beat gate i (higher key, or equal key and lower index) */
    for (int i = 0; i < g->n; i++) {
        int rank = 0;
        for (int j = 0; j < g->n; j++)
            if (key[j] > key[i] || (key[j] == key[i] && j < i)) rank++;
        g->keep[i] = rank < g->k;
        for (int j = 0; j < 2; j++)
            if (g->acts[2 * i + j] >= 0) g->act_identity[g->acts[2 * i + j]] = !g->keep[i];
    }
    free(key);
}

void nnz_gates_backward(const nnz_gates *g, nnz_model *m, int n) {
    for (int i = 0; i < g->n; i++) {
        double sum = 0;
        for (int j = 0; j < 2; j++) {
            int a = g->acts[2 * i + j];
            if (a < 0) continue;
            const nnz_node *nd = &m->nodes[a];
            const float hi = nd->op == NNZ_OP_RELU6 ? 6.0f : INFINITY;
            const float *x = m->act[nd->input], *dout = m->dact[a];
            const int64_t numel = (int64_t)n * nd->h * nd->w * nd->c;
            /* fixed chunks summed in order: the same bits for any thread count */
            enum { CHUNKS = 64 };
            double part[CHUNKS];
#pragma omp parallel for schedule(static)
            for (int c = 0; c < CHUNKS; c++) {
                double s = 0;
                for (int64_t e = numel * c / CHUNKS; e < numel * (c + 1) / CHUNKS; e++) {
                    float v = x[e], act = v < 0.0f ? 0.0f : (v > hi ? hi : v);
                    s += (double)dout[e] * (double)(act - v);
                }
                part[c] = s;
            }
            for (int c = 0; c < CHUNKS; c++) sum += part[c];
        }
        m->params[g->param[i]].grad[0] += (float)sum;
    }
}

int nnz_gates_scheduled_k(int n, int k, int64_t warm_steps, int64_t ramp_steps, int64_t step) {
    if (step < warm_steps) return n;
    if (step < warm_steps + ramp_steps) return n - (int)((int64_t)(n - k) * (step - warm_steps + 1) / ramp_steps);
    return k;
}
