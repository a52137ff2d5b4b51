/* Masking a model's layers for masked (sparse) training: which layers, which mask. */
#include "nn/nn.h"
#include "sparse/sparse.h"

#include <stdio.h>
#include <stdlib.h>

static nnz_status apply_masks(nnz_model *m, const nnz_mask_spec *spec, uint64_t seed, bool by_magnitude, char *log,
                              size_t len) {
    if (!m || !spec) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_model_apply_masks: model and spec are required");
    if (log && len) log[0] = '\0';
    if (spec->kind == NNZ_MASK_DENSE) return NNZ_OK;
    /* the layers pruning uses too: every conv (groups 1) and linear but the first and last */
    const int count = nnz_prune_layers(m, NULL, 0);
    int *nodes = nnz_alloc(sizeof(int) * (size_t)(count ? count : 1), "the masked layers");
    if (!nodes) return NNZ_ERR_NOMEM;
    nnz_prune_layers(m, nodes, count);
    size_t at = 0;
    nnz_status s = NNZ_OK;
    for (int k = 0; k < count && s == NNZ_OK; k++) {
        const int i = nodes[k];
        const nnz_node *n = &m->nodes[i];
        int rows, cols;
        nnz_node_weight_matrix(n, &rows, &cols);
        uint8_t *mask = nnz_alloc((size_t)rows * cols, "a layer mask");
        if (!mask) {
            s = NNZ_ERR_NOMEM;
            break;
        }
        nnz_mask_info info;
        const float *weight = by_magnitude ? nnz_tensor_f32(&m->params[n->weight].value) : NULL;
        nnz_mask_spec layer_spec = *spec;
        layer_spec.taps = n->op == NNZ_OP_CONV2D ? n->k * n->k : 1; /* a channel-block mask's taps */
        s = nnz_mask_make(&layer_spec, rows, cols, weight, seed + (uint64_t)i, mask, &info);
        if (s == NNZ_OK) s = nnz_model_apply_mask(m, n->name, mask, (int64_t)rows * cols);
        nnz_free(mask);
        if (s != NNZ_OK) break;
        if (log && at < len) {
            int w = snprintf(log + at, len - at, "%-16s %5dx%-6d %s mask, %.1f%% zeros\n", n->name, rows, cols,
                             nnz_mask_kind_name(spec->kind), 100.0 * (1.0 - info.density));
            if (w > 0) at += (size_t)w;
        }
    }
    nnz_free(nodes);
    if (s == NNZ_OK) nnz_model_set_grad_mask(m, true);
    return s;
}

nnz_status nnz_model_apply_masks(nnz_model *m, const nnz_mask_spec *spec, uint64_t seed, char *log, size_t len) {
    return apply_masks(m, spec, seed, false, log, len);
}

nnz_status nnz_model_apply_magnitude_masks(nnz_model *m, const nnz_mask_spec *spec, uint64_t seed, char *log,
                                           size_t len) {
    return apply_masks(m, spec, seed, true, log, len);
}

int nnz_model_weight_layers(const nnz_model *m, nnz_weight_layer *out, int cap) {
    const int np = nnz_prune_layers(m, NULL, 0);
    int *pl = np ? nnz_alloc(sizeof(int) * (size_t)np, "the masked layers") : NULL;
    if (pl) nnz_prune_layers(m, pl, np);
    int count = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        const nnz_node *n = &m->nodes[i];
        int rows, cols;
        if (!nnz_node_weight_matrix(n, &rows, &cols)) continue;
        if (out && count < cap) {
            bool maskable = false;
            for (int k = 0; pl && k < np; k++) maskable |= pl[k] == i;
            out[count] = (nnz_weight_layer){.name = n->name, .op = n->op == NNZ_OP_LINEAR ? "linear" : "conv",
                                            .node = i, .rows = rows, .cols = cols,
                                            .weight = nnz_tensor_f32(&m->params[n->weight].value),
                                            .maskable = maskable};
        }
        count++;
    }
    nnz_free(pl);
    return count;
}
