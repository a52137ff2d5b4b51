/* Where a checkpoint's layer mask came from: its training configuration's --mask, and the seed
 * the trainer gave nnz_mask_make for the layer (nnz_train: (seed ^ NNZ_MASK_SEED_SALT) + node
 * index, through nnz_model_apply_masks), so nnz mask CKPT --layer can regenerate it. */
#include "train/train.h"

#include <cJSON.h>
#include <stdio.h>
#include <string.h>

nnz_status nnz_checkpoint_mask_origin(const char *path, const nnz_model *m, const char *layer, nnz_mask_origin *out) {
    if (!out || !m || !path || !layer)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_checkpoint_mask_origin: path, model, layer and out are required");
    memset(out, 0, sizeof *out);
    out->spec.kind = NNZ_MASK_DENSE;
    const int n = nnz_model_weight_layers(m, NULL, 0);
    nnz_weight_layer *ls = nnz_alloc(sizeof *ls * (size_t)(n ? n : 1), "the model's layers");
    if (!ls) return NNZ_ERR_NOMEM;
    nnz_model_weight_layers(m, ls, n);
    int at = -1;
    for (int i = 0; i < n && at < 0; i++)
        if (strcmp(ls[i].name, layer) == 0) at = i;
    const nnz_weight_layer l = at >= 0 ? ls[at] : (nnz_weight_layer){0};
    nnz_free(ls);
    if (at < 0) return nnz_fail(NNZ_ERR_INVALID_ARG, "the model has no conv or linear layer named '%s'", layer);

    nnz_checkpoint ck;
    NNZ_TRY(nnz_checkpoint_open(path, &ck));
    nnz_status s = NNZ_OK;
    if (ck.train_config_json) { /* absent: saved without training state (nnz shrink, nnz_checkpoint_save_model) */
        nnz_train_config cfg;
        char model[64];
        nnz_train_config_init(&cfg);
        s = nnz_train_config_from_json(ck.train_config_json, &cfg, model, sizeof model);
        if (s == NNZ_OK && cfg.mask.kind != NNZ_MASK_DENSE) {
            out->recorded = true;
            out->spec = cfg.mask;
            const nnz_node *node = &m->nodes[l.node];
            out->spec.taps = node->op == NNZ_OP_CONV2D ? node->k * node->k : 1; /* as nnz_model_apply_masks */
            out->layer_masked = l.maskable;
            out->seed = (cfg.seed ^ NNZ_MASK_SEED_SALT) + (uint64_t)l.node;
            /* init_from: provenance only, not part of nnz_train_config's JSON reading */
            cJSON *j = cJSON_Parse(ck.train_config_json);
            const cJSON *init = j ? cJSON_GetObjectItemCaseSensitive(j, "init_from") : NULL;
            if (cJSON_IsString(init)) {
                if (strlen(init->valuestring) < sizeof out->init_from)
                    snprintf(out->init_from, sizeof out->init_from, "%s", init->valuestring);
                out->by_magnitude = cfg.mask.kind != NNZ_MASK_RBGP; /* rbgp's graphs come from the seed */
            }
            cJSON_Delete(j);
        }
    }
    nnz_checkpoint_close(&ck);
    return s;
}
