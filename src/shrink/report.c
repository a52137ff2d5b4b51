/* The record nnz shrink leaves in its checkpoint's metadata ("shrink", JSON; the
 * fields are listed in docs/FORMAT.md), and its human-readable form for nnz info. */
#include "shrink/shrink.h"

#include <cJSON.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

nnz_status nnz_shrink_save(const char *path, const nnz_model *merged, const nnz_shrink_config *cfg,
                           const char *source, bool from_scratch, bool to_target, const nnz_ir_block *blocks, int n,
                           const float *scores,
                           const bool *keep, const nnz_shrink_result *res) {
    cJSON *j = cJSON_CreateObject(), *arr = cJSON_CreateArray();
    if (!j || !arr) {
        cJSON_Delete(j);
        cJSON_Delete(arr);
        return nnz_fail(NNZ_ERR_NOMEM, "out of memory writing the shrink record");
    }
    char seed[32];
    snprintf(seed, sizeof seed, "%" PRIu64, cfg->seed);
    cJSON_AddNumberToObject(j, "version", 1);
    cJSON_AddStringToObject(j, "source", source);
    cJSON_AddBoolToObject(j, "from_scratch", from_scratch);
    if (to_target) { /* source is the target; the trained network was its expansion */
        cJSON_AddBoolToObject(j, "to_target", true);
        cJSON_AddNumberToObject(j, "expansion", cfg->expansion);
    }
    cJSON_AddNumberToObject(j, "warmup", nnz_shortest_double(cfg->warmup));
    cJSON_AddNumberToObject(j, "ramp", nnz_shortest_double(cfg->ramp));
    cJSON_AddNumberToObject(j, "keep", nnz_shortest_double(cfg->keep));
    cJSON_AddNumberToObject(j, "search_epochs", cfg->search_epochs);
    cJSON_AddNumberToObject(j, "finetune_epochs", cfg->finetune_epochs);
    cJSON_AddNumberToObject(j, "lr", nnz_shortest_double(cfg->lr));
    cJSON_AddNumberToObject(j, "gate_lr", nnz_shortest_double(cfg->gate_lr));
    cJSON_AddNumberToObject(j, "gumbel", nnz_shortest_double(cfg->gumbel));
    cJSON_AddBoolToObject(j, "distill", cfg->distill);
    cJSON_AddBoolToObject(j, "cost_aware", cfg->cost_aware);
    cJSON_AddStringToObject(j, "seed", seed);
    cJSON_AddNumberToObject(j, "train_limit", cfg->train_limit);
    cJSON_AddItemToObject(j, "blocks", arr);
    for (int i = 0; i < n; i++) {
        cJSON *b = cJSON_CreateObject();
        if (!b) break;
        cJSON_AddStringToObject(b, "name", blocks[i].name);
        cJSON_AddNumberToObject(b, "score", nnz_shortest_double(scores[i]));
        cJSON_AddBoolToObject(b, "kept", keep[i]);
        cJSON_AddBoolToObject(b, "merged", !keep[i]);
        cJSON_AddItemToArray(arr, b);
    }
    cJSON_AddNumberToObject(j, "flops_before", (double)res->flops_before);
    cJSON_AddNumberToObject(j, "flops_after", (double)res->flops_after);
    cJSON_AddNumberToObject(j, "params_before", (double)res->params_before);
    cJSON_AddNumberToObject(j, "params_after", (double)res->params_after);
    cJSON_AddNumberToObject(j, "acc_original", nnz_shortest_double(res->acc_original));
    cJSON_AddNumberToObject(j, "acc_searched", nnz_shortest_double(res->acc_searched));
    cJSON_AddNumberToObject(j, "acc_finetuned", nnz_shortest_double(res->acc_finetuned));
    cJSON_AddNumberToObject(j, "acc_merged", nnz_shortest_double(res->acc_merged));
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!text) return nnz_fail(NNZ_ERR_NOMEM, "out of memory writing the shrink record");
    const char *keys[1] = {NNZ_SHRINK_META}, *values[1] = {text};
    nnz_ckpt_state st = {.seed = cfg->seed};
    nnz_status s = nnz_checkpoint_save_ex(path, merged, NULL, &st, NULL, 1, keys, values);
    free(text);
    return s;
}

/* snprintf that appends at *off and never overruns */
__attribute__((format(printf, 4, 5)))
static void append(char *buf, size_t len, size_t *off, const char *fmt, ...) {
    if (*off >= len) return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(buf + *off, len - *off, fmt, ap);
    va_end(ap);
    if (w > 0) *off += (size_t)w;
}

static double num(const cJSON *j, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

nnz_status nnz_shrink_describe(const char *checkpoint, char *buf, size_t len) {
    if (!buf || len == 0) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_shrink_describe: no buffer");
    buf[0] = '\0';
    nnz_checkpoint ck;
    NNZ_TRY(nnz_checkpoint_open(checkpoint, &ck));
    const char *meta = nnz_st_meta(&ck.file, NNZ_SHRINK_META);
    cJSON *j = meta ? cJSON_Parse(meta) : NULL;
    nnz_checkpoint_close(&ck);
    if (!meta) return NNZ_OK;
    const cJSON *blocks = cJSON_GetObjectItemCaseSensitive(j, "blocks");
    const cJSON *source = cJSON_GetObjectItemCaseSensitive(j, "source");
    if (!cJSON_IsObject(j) || !cJSON_IsArray(blocks)) {
        cJSON_Delete(j);
        return nnz_fail(NNZ_ERR_FORMAT, "'%s': the shrink record in its metadata is not valid JSON", checkpoint);
    }
    size_t off = 0;
    const int n = cJSON_GetArraySize(blocks);
    const bool scratch = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "from_scratch"));
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "to_target")))
        append(buf, len, &off,
               "DepthShrinker (Expand-then-Shrink to the target '%s'): %d dense convs trained as inverted-residual "
               "blocks (expansion %g) from scratch, training with gates %g epochs, finetune %g epochs\n",
               cJSON_IsString(source) ? source->valuestring : "?", n, num(j, "expansion"), num(j, "search_epochs"),
               num(j, "finetune_epochs"));
    else
        append(buf, len, &off,
               "DepthShrinker%s: keep %g of %d%s inverted-residual blocks (%s '%s', %s %g, finetune %g epochs)\n",
               scratch ? " (Expand-then-Shrink)" : "", num(j, "keep"), n,
               cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "cost_aware")) ? " cost-aware" : "",
               scratch ? "trained from scratch as" : "from",
               cJSON_IsString(source) ? source->valuestring : "?", scratch ? "training with gates" : "search",
               num(j, "search_epochs"), num(j, "finetune_epochs"));
    for (int pass = 0; pass < 2; pass++) {
        append(buf, len, &off, pass == 0 ? "  merged, one dense conv each:" : "  kept, with their activations:");
        int shown = 0;
        for (int i = 0; i < n; i++) {
            const cJSON *b = cJSON_GetArrayItem(blocks, i);
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(b, "name");
            const bool merged = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(b, "merged"));
            if (merged != (pass == 0)) continue;
            append(buf, len, &off, "%s %s (score %+.3g)", shown++ ? "," : "",
                   cJSON_IsString(name) ? name->valuestring : "?", num(b, "score"));
        }
        append(buf, len, &off, "%s\n", shown ? "" : " none");
    }
    const double fb = num(j, "flops_before"), fa = num(j, "flops_after");
    append(buf, len, &off, "  FLOPs per image: %.0f before, %.0f after (%.2fx); parameters: %.0f before, %.0f after\n",
           fb, fa, fa > 0 ? fb / fa : 0.0, num(j, "params_before"), num(j, "params_after"));
    append(buf, len, &off,
           scratch ? "  test accuracy: random init %.2f%%, trained with gates %.2f%%, finetuned %.2f%%, merged %.2f%%\n"
                   : "  test accuracy: original %.2f%%, activations removed %.2f%%, finetuned %.2f%%, merged %.2f%%\n",
           100 * num(j, "acc_original"), 100 * num(j, "acc_searched"), 100 * num(j, "acc_finetuned"),
           100 * num(j, "acc_merged"));
    cJSON_Delete(j);
    return NNZ_OK;
}
