/* Gradual magnitude pruning (Zhu & Gupta 2017): every layer nnz_prune_layers selects is pruned
 * to the same sparsity, by magnitude, at regular steps along a cubic schedule. */
#include "sparse/sparse.h"

#include <math.h>
#include <string.h>

nnz_status nnz_gmp_init(nnz_gmp *g, float target, float begin_frac, float end_frac, int every, int64_t total_steps) {
    memset(g, 0, sizeof *g);
    if (!(target > 0 && target < 1))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "GMP needs a target sparsity in (0, 1) (got %g); pass --target-sparsity",
                        (double)target);
    if (!(begin_frac >= 0 && begin_frac <= end_frac && end_frac <= 1))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "GMP's window %g..%g must satisfy 0 <= begin <= end <= 1",
                        (double)begin_frac, (double)end_frac);
    if (every < 0 || total_steps < 1) return nnz_fail(NNZ_ERR_INVALID_ARG, "GMP: bad step counts");
    g->target = target;
    g->begin = (int64_t)llround((double)begin_frac * (double)total_steps);
    g->end = (int64_t)llround((double)end_frac * (double)total_steps);
    if (g->end > total_steps - 1) g->end = total_steps - 1; /* the last step that runs */
    if (g->begin > g->end) g->begin = g->end;
    g->every = every ? every : (g->end - g->begin) / 16;
    if (g->every < 1) g->every = 1;
    return NNZ_OK;
}

nnz_status nnz_gmp_prune(nnz_model *m, nnz_optimizer *opt, double sparsity) {
    int node[1024];
    const int n = nnz_prune_layers(m, node, 1024);
    if (n > 1024) return nnz_fail(NNZ_ERR_INVALID_ARG, "GMP: more than 1024 prunable layers");
    nnz_mask_spec spec = {.kind = NNZ_MASK_UNSTRUCTURED, .sparsity = (float)sparsity};
    for (int l = 0; l < n; l++) {
        const nnz_node *nd = &m->nodes[node[l]];
        nnz_param *p = &m->params[nd->weight];
        const int64_t numel = nnz_tensor_numel(&p->value);
        const int rows = nd->out_ch, cols = (int)(numel / rows);
        uint8_t *mask = nnz_alloc((size_t)numel, "a GMP mask");
        if (!mask) return NNZ_ERR_NOMEM;
        nnz_status s = nnz_mask_make(&spec, rows, cols, nnz_tensor_f32(&p->value), 0, mask, NULL);
        if (s == NNZ_OK) s = nnz_model_apply_mask(m, nd->name, mask, numel);
        /* a pruned weight's momentum / Adam moments would move it again: clear them */
        if (s == NNZ_OK && opt && nd->weight < opt->n) {
            float *states[2] = {opt->state1 ? opt->state1[nd->weight] : NULL,
                                opt->state2 ? opt->state2[nd->weight] : NULL};
            for (int k = 0; k < 2; k++)
                if (states[k])
                    for (int64_t i = 0; i < numel; i++)
                        if (!mask[i]) states[k][i] = 0.0f;
        }
        nnz_free(mask);
        if (s != NNZ_OK) return s;
    }
    nnz_model_set_grad_mask(m, true);
    return NNZ_OK;
}

nnz_status nnz_gmp_step(nnz_gmp *g, nnz_model *m, nnz_optimizer *opt, int64_t step) {
    if (step < g->begin || step > g->end) return NNZ_OK;
    if ((step - g->begin) % g->every != 0 && step != g->end) return NNZ_OK;
    const double s = nnz_gmp_sparsity(g->target, g->begin, g->end, step);
    if (s <= g->applied) return NNZ_OK;
    NNZ_TRY(nnz_gmp_prune(m, opt, s));
    g->applied = s;
    return NNZ_OK;
}
