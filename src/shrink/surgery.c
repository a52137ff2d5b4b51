/* Graph surgery: rebuilding a model from edited nodes, and removing blocks'
 * activations in the pad-the-input form (shrink.h). */
#include "shrink/shrink.h"

#include <stdlib.h>
#include <string.h>

nnz_status nnz_shrink_rebuild(const nnz_model *m, const nnz_node *specs, int n, nnz_model **out) {
    *out = NULL;
    nnz_model *r = NULL;
    NNZ_TRY(nnz_model_create(m->in_h, m->in_w, m->in_c, &r));
    for (int i = 0; i < n; i++) nnz_add_node(r, &specs[i]);
    nnz_status s = nnz_model_finalize(r, 0);
    for (int i = 0; s == NNZ_OK && i < r->n_params; i++) {
        nnz_param *p = &r->params[i];
        int j = nnz_model_find_param(m, p->name);
        if (j < 0) continue;
        const nnz_tensor *src = &m->params[j].value;
        if (nnz_tensor_numel(src) != nnz_tensor_numel(&p->value) || src->ndim != p->value.ndim)
            s = nnz_fail(NNZ_ERR_INVALID_ARG, "rebuilding the graph: parameter '%s' changed its shape", p->name);
        else
            memcpy(p->value.data, src->data, nnz_tensor_bytes(&p->value));
    }
    if (s != NNZ_OK) {
        nnz_model_free(r);
        return s;
    }
    r->compute = m->compute;
    r->dropout_rng = m->dropout_rng;
    *out = r;
    return NNZ_OK;
}

nnz_status nnz_shrink_remove(const nnz_model *m, const nnz_ir_block *blocks, int n, const bool *remove,
                             nnz_model **out) {
    *out = NULL;
    nnz_node *specs = malloc(sizeof *specs * (size_t)m->n_nodes);
    if (!specs) return nnz_fail(NNZ_ERR_NOMEM, "out of memory copying the graph");
    memcpy(specs, m->nodes, sizeof *specs * (size_t)m->n_nodes);
    for (int i = 0; i < n; i++) {
        if (!remove[i]) continue;
        const nnz_ir_block *b = &blocks[i];
        specs[b->act1].op = NNZ_OP_IDENTITY;
        specs[b->act2].op = NNZ_OP_IDENTITY;
        /* pad the block input instead of the intermediate: pw1's padded ring becomes bn1(0) */
        specs[b->pw1].pad += specs[b->dw].pad;
        specs[b->dw].pad = 0;
    }
    nnz_status s = nnz_shrink_rebuild(m, specs, m->n_nodes, out);
    free(specs);
    return s;
}
