/* The training configuration: defaults, and its JSON form (stored in every
 * checkpoint so that --resume continues the same run). */
#include "train/train.h"

#include <cJSON.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

void nnz_train_config_init(nnz_train_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->model = "mbv2-tiny";
    cfg->data_dir = NNZ_DEFAULT_DATA_DIR;
    cfg->epochs = 10;
    cfg->batch = 128;
    cfg->lr = 0.0f;            /* 0 = the optimizer's default (SGD 0.1, AdamW 0.001) */
    cfg->momentum = 0.9f;
    cfg->weight_decay = -1.0f; /* < 0 = the optimizer's default (SGD 5e-4, AdamW 0.05) */
    cfg->optimizer = NNZ_OPT_SGD;
    cfg->schedule = NNZ_SCHED_COSINE;
    cfg->step_size_epochs = 0; /* 0 = a third of the epochs */
    cfg->step_gamma = 0.1f;
    cfg->seed = 42;
    cfg->log_every = 50;
    nnz_prune_config_init(&cfg->prune);
}

nnz_status nnz_train_config_to_json(const nnz_train_config *cfg, char **json_out) {
    *json_out = NULL;
    cJSON *j = cJSON_CreateObject();
    if (!j) return nnz_fail(NNZ_ERR_NOMEM, "out of memory writing the training configuration");
    char seed[32];
    snprintf(seed, sizeof seed, "%" PRIu64, cfg->seed);
    cJSON_AddStringToObject(j, "model", cfg->model ? cfg->model : "");
    cJSON_AddStringToObject(j, "data_dir", cfg->data_dir ? cfg->data_dir : "");
    cJSON_AddNumberToObject(j, "epochs", cfg->epochs);
    cJSON_AddNumberToObject(j, "batch", cfg->batch);
    cJSON_AddStringToObject(j, "optimizer", nnz_optimizer_kind_name(cfg->optimizer));
    cJSON_AddNumberToObject(j, "lr", cfg->lr);
    cJSON_AddNumberToObject(j, "momentum", cfg->momentum);
    cJSON_AddBoolToObject(j, "nesterov", cfg->nesterov);
    cJSON_AddNumberToObject(j, "weight_decay", cfg->weight_decay);
    cJSON_AddBoolToObject(j, "decay_bn_and_bias", cfg->decay_bn_and_bias);
    cJSON_AddStringToObject(j, "schedule", nnz_schedule_kind_name(cfg->schedule));
    cJSON_AddNumberToObject(j, "warmup_epochs", cfg->warmup_epochs);
    cJSON_AddNumberToObject(j, "step_size_epochs", cfg->step_size_epochs);
    cJSON_AddNumberToObject(j, "step_gamma", cfg->step_gamma);
    cJSON_AddNumberToObject(j, "label_smoothing", cfg->label_smoothing);
    cJSON_AddBoolToObject(j, "augment", cfg->augment);
    cJSON_AddStringToObject(j, "seed", seed); /* a string: JSON numbers hold 53 bits */
    cJSON_AddNumberToObject(j, "threads", cfg->threads);
    cJSON_AddStringToObject(j, "precision", cfg->precision == NNZ_BF16 ? "bf16" : "fp32");
    if (cfg->bf16_activations) cJSON_AddBoolToObject(j, "bf16_activations", true); /* absent: false */
    cJSON_AddStringToObject(j, "mask", nnz_mask_kind_name(cfg->mask.kind));
    cJSON_AddNumberToObject(j, "sparsity", cfg->mask.sparsity);
    if (cfg->mask.block_rows > 0 && cfg->mask.block_cols > 0) { /* --mask-block; absent = the kind's default */
        char mb[32];
        snprintf(mb, sizeof mb, "%dx%d", cfg->mask.block_rows, cfg->mask.block_cols);
        cJSON_AddStringToObject(j, "mask_block", mb);
    }
    cJSON_AddNumberToObject(j, "train_limit", cfg->train_limit);
    cJSON_AddNumberToObject(j, "test_limit", cfg->test_limit);
    if (cfg->init_path) cJSON_AddStringToObject(j, "init_from", cfg->init_path); /* provenance only */
    if (cfg->prune.kind != NNZ_PRUNE_NONE) { /* absent = none (and in checkpoints from before pruning) */
        const nnz_prune_config *p = &cfg->prune;
        cJSON *pj = cJSON_AddObjectToObject(j, "prune");
        if (!pj) {
            cJSON_Delete(j);
            return nnz_fail(NNZ_ERR_NOMEM, "out of memory writing the training configuration");
        }
        cJSON_AddStringToObject(pj, "kind", nnz_prune_kind_name(p->kind));
        cJSON_AddNumberToObject(pj, "alpha0", p->alpha0);
        cJSON_AddStringToObject(pj, "anneal", nnz_anneal_name(p->anneal));
        cJSON_AddNumberToObject(pj, "alpha_off_epoch", p->alpha_off_epoch);
        cJSON_AddNumberToObject(pj, "threshold_init", p->threshold_init);
        cJSON_AddNumberToObject(pj, "threshold_decay", p->threshold_decay);
        cJSON_AddBoolToObject(pj, "per_channel", p->per_channel);
        cJSON_AddNumberToObject(pj, "target_sparsity", p->target_sparsity);
        cJSON_AddNumberToObject(pj, "gmp_begin", p->gmp_begin);
        cJSON_AddNumberToObject(pj, "gmp_end", p->gmp_end);
        cJSON_AddNumberToObject(pj, "gmp_every", p->gmp_every);
        cJSON_AddNumberToObject(pj, "bn_recalibrate", p->bn_recalibrate);
    }
    *json_out = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!*json_out) return nnz_fail(NNZ_ERR_NOMEM, "out of memory writing the training configuration");
    return NNZ_OK;
}

static nnz_status get_num(const cJSON *j, const char *key, double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!cJSON_IsNumber(v))
        return nnz_fail(NNZ_ERR_FORMAT, "the checkpoint's train_config lacks the number '%s'", key);
    *out = v->valuedouble;
    return NNZ_OK;
}

static nnz_status get_bool(const cJSON *j, const char *key, bool *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!cJSON_IsBool(v)) return nnz_fail(NNZ_ERR_FORMAT, "the checkpoint's train_config lacks the flag '%s'", key);
    *out = cJSON_IsTrue(v);
    return NNZ_OK;
}

static nnz_status get_str(const cJSON *j, const char *key, const char **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!cJSON_IsString(v)) return nnz_fail(NNZ_ERR_FORMAT, "the checkpoint's train_config lacks the text '%s'", key);
    *out = v->valuestring;
    return NNZ_OK;
}

static nnz_status int_in(double v, const char *key, int lo, int hi, int *out) {
    if (!(v >= lo && v <= hi) || v != (double)(int)v)
        return nnz_fail(NNZ_ERR_FORMAT, "the checkpoint's train_config has an invalid '%s' (%g)", key, v);
    *out = (int)v;
    return NNZ_OK;
}

/* A float hyper-parameter: finite and of a sane size (casting an out-of-range double is UB). */
static nnz_status float_in(double v, const char *key, float *out) {
    if (!(v >= -1e6 && v <= 1e6))
        return nnz_fail(NNZ_ERR_FORMAT, "the checkpoint's train_config has an invalid '%s' (%g)", key, v);
    *out = (float)v;
    return NNZ_OK;
}

/* the prune section: absent = none (checkpoints from before pruning during training) */
static nnz_status read_prune(const cJSON *pj, nnz_prune_config *p) {
    nnz_prune_config_init(p);
    if (!pj) return NNZ_OK;
    const char *s = NULL;
    double v = 0;
    if (!cJSON_IsObject(pj)) return nnz_fail(NNZ_ERR_FORMAT, "the checkpoint's train_config has an invalid 'prune'");
    NNZ_TRY(get_str(pj, "kind", &s));
    if (nnz_prune_kind_parse(s, &p->kind) != NNZ_OK)
        return nnz_fail(NNZ_ERR_FORMAT, "the checkpoint's pruning '%s' is unknown", s);
    NNZ_TRY(get_num(pj, "alpha0", &v));
    NNZ_TRY(float_in(v, "alpha0", &p->alpha0));
    NNZ_TRY(get_str(pj, "anneal", &s));
    if (nnz_anneal_parse(s, &p->anneal) != NNZ_OK)
        return nnz_fail(NNZ_ERR_FORMAT, "the checkpoint's annealing schedule '%s' is unknown", s);
    NNZ_TRY(get_num(pj, "alpha_off_epoch", &v));
    NNZ_TRY(int_in(v, "alpha_off_epoch", 0, 1000000, &p->alpha_off_epoch));
    NNZ_TRY(get_num(pj, "threshold_init", &v));
    NNZ_TRY(float_in(v, "threshold_init", &p->threshold_init));
    NNZ_TRY(get_num(pj, "threshold_decay", &v));
    NNZ_TRY(float_in(v, "threshold_decay", &p->threshold_decay));
    NNZ_TRY(get_bool(pj, "per_channel", &p->per_channel));
    NNZ_TRY(get_num(pj, "target_sparsity", &v));
    NNZ_TRY(float_in(v, "target_sparsity", &p->target_sparsity));
    NNZ_TRY(get_num(pj, "gmp_begin", &v));
    NNZ_TRY(float_in(v, "gmp_begin", &p->gmp_begin));
    NNZ_TRY(get_num(pj, "gmp_end", &v));
    NNZ_TRY(float_in(v, "gmp_end", &p->gmp_end));
    NNZ_TRY(get_num(pj, "gmp_every", &v));
    NNZ_TRY(int_in(v, "gmp_every", 0, INT32_MAX, &p->gmp_every));
    /* absent in checkpoints from before it: those runs kept the running averages */
    p->bn_recalibrate = 0;
    if (cJSON_GetObjectItemCaseSensitive(pj, "bn_recalibrate")) {
        NNZ_TRY(get_num(pj, "bn_recalibrate", &v));
        NNZ_TRY(int_in(v, "bn_recalibrate", 0, INT32_MAX, &p->bn_recalibrate));
    }
    return NNZ_OK;
}

static nnz_status read_config(const cJSON *j, nnz_train_config *c, char *model_buf, size_t model_len) {
    const char *s = NULL;
    double v = 0;
    NNZ_TRY(get_str(j, "model", &s));
    if (strlen(s) >= model_len) return nnz_fail(NNZ_ERR_FORMAT, "the checkpoint's model name is too long");
    snprintf(model_buf, model_len, "%s", s);
    c->model = model_buf;
    NNZ_TRY(get_num(j, "epochs", &v));
    if (c->epochs == 0) NNZ_TRY(int_in(v, "epochs", 1, 1000000, &c->epochs));
    NNZ_TRY(get_num(j, "batch", &v));
    NNZ_TRY(int_in(v, "batch", 1, 1 << 20, &c->batch));
    NNZ_TRY(get_str(j, "optimizer", &s));
    if (strcmp(s, "sgd") == 0) c->optimizer = NNZ_OPT_SGD;
    else if (strcmp(s, "adamw") == 0) c->optimizer = NNZ_OPT_ADAMW;
    else return nnz_fail(NNZ_ERR_FORMAT, "the checkpoint's optimizer '%s' is unknown", s);
    NNZ_TRY(get_num(j, "lr", &v));
    NNZ_TRY(float_in(v, "lr", &c->lr));
    NNZ_TRY(get_num(j, "momentum", &v));
    NNZ_TRY(float_in(v, "momentum", &c->momentum));
    NNZ_TRY(get_bool(j, "nesterov", &c->nesterov));
    NNZ_TRY(get_num(j, "weight_decay", &v));
    NNZ_TRY(float_in(v, "weight_decay", &c->weight_decay));
    NNZ_TRY(get_bool(j, "decay_bn_and_bias", &c->decay_bn_and_bias));
    NNZ_TRY(get_str(j, "schedule", &s));
    int k;
    for (k = 0; k < 4 && strcmp(s, nnz_schedule_kind_name((nnz_schedule_kind)k)) != 0; k++) {}
    if (k == 4) return nnz_fail(NNZ_ERR_FORMAT, "the checkpoint's schedule '%s' is unknown", s);
    c->schedule = (nnz_schedule_kind)k;
    NNZ_TRY(get_num(j, "warmup_epochs", &v));
    NNZ_TRY(float_in(v, "warmup_epochs", &c->warmup_epochs));
    NNZ_TRY(get_num(j, "step_size_epochs", &v));
    NNZ_TRY(int_in(v, "step_size_epochs", 0, 1000000, &c->step_size_epochs));
    NNZ_TRY(get_num(j, "step_gamma", &v));
    NNZ_TRY(float_in(v, "step_gamma", &c->step_gamma));
    NNZ_TRY(get_num(j, "label_smoothing", &v));
    NNZ_TRY(float_in(v, "label_smoothing", &c->label_smoothing));
    NNZ_TRY(get_bool(j, "augment", &c->augment));
    NNZ_TRY(get_str(j, "seed", &s));
    char *end = NULL;
    unsigned long long seed = strtoull(s, &end, 10);
    if (!*s || *end || *s == '-') return nnz_fail(NNZ_ERR_FORMAT, "the checkpoint's seed '%s' is not a number", s);
    c->seed = seed;
    /* precision: absent in checkpoints written before bf16 training existed (fp32 then) */
    const cJSON *prec = cJSON_GetObjectItemCaseSensitive(j, "precision");
    c->precision = NNZ_F32;
    if (prec && (!cJSON_IsString(prec) || nnz_precision_parse(prec->valuestring, &c->precision) != NNZ_OK))
        return nnz_fail(NNZ_ERR_FORMAT, "the checkpoint's train_config has an invalid 'precision' (fp32 or bf16)");
    const cJSON *ba = cJSON_GetObjectItemCaseSensitive(j, "bf16_activations");
    if (ba && !cJSON_IsBool(ba))
        return nnz_fail(NNZ_ERR_FORMAT, "the checkpoint's train_config has a 'bf16_activations' that is not true or false");
    c->bf16_activations = cJSON_IsTrue(ba);
    /* mask, sparsity: absent before masked training existed (dense then) */
    const cJSON *mk = cJSON_GetObjectItemCaseSensitive(j, "mask");
    c->mask = (nnz_mask_spec){.kind = NNZ_MASK_DENSE};
    if (mk && (!cJSON_IsString(mk) || nnz_mask_kind_parse(mk->valuestring, &c->mask.kind) != NNZ_OK))
        return nnz_fail(NNZ_ERR_FORMAT, "the checkpoint's train_config has an invalid 'mask'");
    if (mk) {
        NNZ_TRY(get_num(j, "sparsity", &v));
        if (!(v >= 0 && v < 1)) return nnz_fail(NNZ_ERR_FORMAT, "the checkpoint's train_config has an invalid 'sparsity'");
        c->mask.sparsity = (float)v;
        /* mask_block: absent when --mask-block was not given, and before it was recorded */
        const cJSON *mb = cJSON_GetObjectItemCaseSensitive(j, "mask_block");
        if (mb) {
            int br = 0, bc = 0;
            char tail = 0;
            if (!cJSON_IsString(mb) || sscanf(mb->valuestring, "%dx%d%c", &br, &bc, &tail) != 2 || br < 1 || bc < 1 ||
                br > 65536 || bc > 65536)
                return nnz_fail(NNZ_ERR_FORMAT, "the checkpoint's train_config has an invalid 'mask_block' (RxC)");
            c->mask.block_rows = br, c->mask.block_cols = bc;
        }
    }
    NNZ_TRY(get_num(j, "train_limit", &v));
    NNZ_TRY(int_in(v, "train_limit", 0, INT32_MAX, &c->train_limit));
    return read_prune(cJSON_GetObjectItemCaseSensitive(j, "prune"), &c->prune);
}

nnz_status nnz_train_config_from_json(const char *json, nnz_train_config *cfg, char *model_buf, size_t model_len) {
    cJSON *j = cJSON_Parse(json);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return nnz_fail(NNZ_ERR_FORMAT, "the checkpoint's train_config is not a JSON object");
    }
    /* Read into a copy so a bad field leaves cfg untouched. */
    nnz_train_config c = *cfg;
    nnz_status s = read_config(j, &c, model_buf, model_len);
    cJSON_Delete(j);
    if (s == NNZ_OK) *cfg = c;
    return s;
}
