/* Masking a model's layers for masked (sparse) training: which layers, which mask. */
#include "nn/nn.h"
#include "sparse/sparse.h"

#include <stdio.h>
#include <stdlib.h>

/* conv (groups 1) and linear: the layers the sparse kernels run; the weight as (rows, cols) */
static bool maskable(const nnz_node *n, int *rows, int *cols) {
    if (n->op == NNZ_OP_LINEAR) *rows = n->out_ch, *cols = n->in_c;
    else if (n->op == NNZ_OP_CONV2D && n->groups == 1) *rows = n->out_ch, *cols = n->k * n->k * n->in_c;
    else return false;
    return true;
}

nnz_status nnz_model_apply_masks(nnz_model *m, const nnz_mask_spec *spec, uint64_t seed, char *log, size_t len) {
    if (!m || !spec) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_model_apply_masks: model and spec are required");
    if (log && len) log[0] = '\0';
    if (spec->kind == NNZ_MASK_DENSE) return NNZ_OK;
    int first = -1, last = -1, rows, cols;
    for (int i = 0; i < m->n_nodes; i++)
        if (maskable(&m->nodes[i], &rows, &cols)) {
            if (first < 0) first = i;
            last = i;
        }
    size_t at = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        const nnz_node *n = &m->nodes[i];
        if (i == first || i == last || !maskable(n, &rows, &cols)) continue; /* first and last stay dense */
        uint8_t *mask = nnz_alloc((size_t)rows * cols, "a layer mask");
        if (!mask) return NNZ_ERR_NOMEM;
        nnz_mask_info info;
        nnz_status s = nnz_mask_make(spec, rows, cols, NULL, seed + (uint64_t)i, mask, &info);
        if (s == NNZ_OK) s = nnz_model_apply_mask(m, n->name, mask, (int64_t)rows * cols);
        nnz_free(mask);
        if (s != NNZ_OK) return s;
        if (log && at < len) {
            int w = snprintf(log + at, len - at, "%-16s %5dx%-6d %s mask, %.1f%% zeros\n", n->name, rows, cols,
                             nnz_mask_kind_name(spec->kind), 100.0 * (1.0 - info.density));
            if (w > 0) at += (size_t)w;
        }
    }
    nnz_model_set_grad_mask(m, true);
    return NNZ_OK;
}
