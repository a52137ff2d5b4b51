/* Checkpoints: a safetensors file holding every parameter, every batch-norm
 * buffer, the optimizer state and the metadata that lets a run resume exactly.
 * The layout is documented in docs/FORMAT.md, "Checkpoints". */
#include "nn/nn.h"

#include <cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATE_PREFIX "optimizer.state"

static nnz_status state_name(char *buf, size_t len, int which, const char *param) {
    int k = snprintf(buf, len, STATE_PREFIX "%d.%s", which, param);
    if (k < 0 || (size_t)k >= len)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "parameter name '%s' is too long for a checkpoint tensor name", param);
    return NNZ_OK;
}

static char *optimizer_json(const nnz_optimizer *o) {
    cJSON *j = cJSON_CreateObject();
    if (!j) return NULL;
    cJSON_AddStringToObject(j, "kind", nnz_optimizer_kind_name(o->kind));
    cJSON_AddNumberToObject(j, "momentum", o->momentum);
    cJSON_AddBoolToObject(j, "nesterov", o->nesterov);
    cJSON_AddNumberToObject(j, "beta1", o->beta1);
    cJSON_AddNumberToObject(j, "beta2", o->beta2);
    cJSON_AddNumberToObject(j, "eps", o->eps);
    cJSON_AddNumberToObject(j, "weight_decay", o->weight_decay);
    cJSON_AddBoolToObject(j, "decay_bn_and_bias", o->decay_bn_and_bias);
    cJSON_AddNumberToObject(j, "t", (double)o->t); /* exact below 2^53 steps */
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

/* The metadata keys fill_writer writes. */
static bool meta_is_reserved(const char *key) {
    static const char *const reserved[] = {"format", "version", "arch", "step", "epoch", "seed",
                                           "dropout_rng_counter", "dropout_rng_key", "optimizer", "train_config",
                                           NULL};
    for (int i = 0; reserved[i]; i++)
        if (strcmp(key, reserved[i]) == 0) return true;
    return false;
}

static nnz_status add_u64_meta(nnz_st_writer *w, const char *key, uint64_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    return nnz_st_set_meta(w, key, buf);
}

static nnz_status fill_writer(nnz_st_writer *w, const nnz_model *m, const nnz_optimizer *opt,
                              const nnz_ckpt_state *st, const char *train_config_json) {
    for (int i = 0; i < m->n_params; i++) {
        const nnz_param *p = &m->params[i];
        NNZ_TRY(nnz_st_add(w, p->name, "F32", p->value.ndim, p->value.shape, p->value.data));
    }
    char name[160];
    if (opt) {
        for (int i = 0; i < opt->n && i < m->n_params; i++) {
            const nnz_param *p = &m->params[i];
            float *states[2] = {opt->state1 ? opt->state1[i] : NULL, opt->state2 ? opt->state2[i] : NULL};
            for (int k = 0; k < 2; k++) {
                if (!states[k]) continue;
                NNZ_TRY(state_name(name, sizeof name, k + 1, p->name));
                NNZ_TRY(nnz_st_add(w, name, "F32", p->value.ndim, p->value.shape, states[k]));
            }
        }
    }
    NNZ_TRY(nnz_st_set_meta(w, "format", NNZ_CKPT_FORMAT));
    NNZ_TRY(nnz_st_set_meta(w, "version", NNZ_CKPT_VERSION));
    char *arch = NULL;
    NNZ_TRY(nnz_model_to_json(m, &arch));
    nnz_status s = nnz_st_set_meta(w, "arch", arch);
    free(arch);
    NNZ_TRY(s);
    NNZ_TRY(add_u64_meta(w, "step", (uint64_t)st->step));
    NNZ_TRY(add_u64_meta(w, "epoch", (uint64_t)st->epoch));
    NNZ_TRY(add_u64_meta(w, "seed", st->seed));
    NNZ_TRY(add_u64_meta(w, "dropout_rng_counter", m->dropout_rng.counter));
    NNZ_TRY(add_u64_meta(w, "dropout_rng_key", m->dropout_rng.key));
    if (opt) {
        char *oj = optimizer_json(opt);
        if (!oj) return nnz_fail(NNZ_ERR_NOMEM, "out of memory writing the optimizer's metadata");
        s = nnz_st_set_meta(w, "optimizer", oj);
        free(oj);
        NNZ_TRY(s);
    }
    if (train_config_json) NNZ_TRY(nnz_st_set_meta(w, "train_config", train_config_json));
    return NNZ_OK;
}

nnz_status nnz_checkpoint_save(const char *path, const nnz_model *m, const nnz_optimizer *opt,
                               const nnz_ckpt_state *st, const char *train_config_json) {
    return nnz_checkpoint_save_ex(path, m, opt, st, train_config_json, 0, NULL, NULL);
}

nnz_status nnz_checkpoint_save_ex(const char *path, const nnz_model *m, const nnz_optimizer *opt,
                                  const nnz_ckpt_state *st, const char *train_config_json, int n_extra,
                                  const char *const *keys, const char *const *values) {
    if (!path || !*path) return nnz_fail(NNZ_ERR_INVALID_ARG, "no checkpoint path given");
    if (!m || !m->finalized) return nnz_fail(NNZ_ERR_INVALID_ARG, "cannot save a model that is not finalized");
    if (opt && opt->n != m->n_params)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "the optimizer was made for another model (%d vs %d parameters)",
                        opt->n, m->n_params);
    nnz_ckpt_state zero = {0};
    nnz_st_writer w;
    nnz_st_writer_init(&w);
    nnz_status s = fill_writer(&w, m, opt, st ? st : &zero, train_config_json);
    for (int i = 0; s == NNZ_OK && i < n_extra; i++) {
        if (meta_is_reserved(keys[i]))
            s = nnz_fail(NNZ_ERR_INVALID_ARG, "checkpoint metadata '%s' is written by nnz itself", keys[i]);
        else
            s = nnz_st_set_meta(&w, keys[i], values[i]);
    }
    if (s == NNZ_OK) s = nnz_st_write(&w, path);
    nnz_st_writer_free(&w);
    return s;
}

nnz_status nnz_checkpoint_save_model(const nnz_model *m, const char *path) {
    return nnz_checkpoint_save(path, m, NULL, NULL, NULL);
}

/* ---- reading ---- */

static nnz_status parse_u64(const char *path, const char *key, const char *text, uint64_t max, uint64_t *out) {
    if (!text) return nnz_fail(NNZ_ERR_FORMAT, "checkpoint '%s' lacks the metadata '%s'", path, key);
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-' || text[0] == '+' || text[0] == ' ' || v > max)
        return nnz_fail(NNZ_ERR_FORMAT, "checkpoint '%s': metadata '%s' = '%s' is not a valid count", path, key,
                        text);
    *out = v;
    return NNZ_OK;
}

void nnz_checkpoint_close(nnz_checkpoint *ck) {
    nnz_st_free(&ck->file);
    memset(ck, 0, sizeof *ck);
}

nnz_status nnz_checkpoint_open(const char *path, nnz_checkpoint *ck) {
    memset(ck, 0, sizeof *ck);
    if (!path || !*path) return nnz_fail(NNZ_ERR_INVALID_ARG, "no checkpoint path given");
    NNZ_TRY(nnz_st_load(path, &ck->file));
    nnz_st_file *f = &ck->file;
    const char *format = nnz_st_meta(f, "format");
    nnz_status s = NNZ_OK;
    if (!format || strcmp(format, NNZ_CKPT_FORMAT) != 0) {
        s = nnz_fail(NNZ_ERR_FORMAT,
                     "'%s' is a safetensors file but not an nnz checkpoint (metadata format is %s%s%s, expected "
                     "\"" NNZ_CKPT_FORMAT "\")",
                     path, format ? "\"" : "", format ? format : "missing", format ? "\"" : "");
        goto fail;
    }
    const char *version = nnz_st_meta(f, "version");
    if (!version || strcmp(version, NNZ_CKPT_VERSION) != 0) {
        s = nnz_fail(NNZ_ERR_UNSUPPORTED,
                     "checkpoint '%s' has version %s; this nnz reads version " NNZ_CKPT_VERSION
                     " (use the nnz that wrote it, or retrain)",
                     path, version ? version : "(missing)");
        goto fail;
    }
    ck->arch_json = nnz_st_meta(f, "arch");
    if (!ck->arch_json) {
        s = nnz_fail(NNZ_ERR_FORMAT, "checkpoint '%s' lacks its architecture (metadata 'arch')", path);
        goto fail;
    }
    uint64_t v;
    if ((s = parse_u64(path, "step", nnz_st_meta(f, "step"), INT64_MAX, &v))) goto fail;
    ck->state.step = (int64_t)v;
    if ((s = parse_u64(path, "epoch", nnz_st_meta(f, "epoch"), INT32_MAX, &v))) goto fail;
    ck->state.epoch = (int)v;
    if ((s = parse_u64(path, "seed", nnz_st_meta(f, "seed"), UINT64_MAX, &ck->state.seed))) goto fail;
    if ((s = parse_u64(path, "dropout_rng_counter", nnz_st_meta(f, "dropout_rng_counter"), UINT64_MAX,
                       &ck->state.dropout_rng_counter)))
        goto fail;
    /* The key is derived from the seed the model was built with; stored too so a
     * model-only save (seed 0) still restores its dropout stream. Optional. */
    ck->has_dropout_key = nnz_st_meta(f, "dropout_rng_key") != NULL;
    if (ck->has_dropout_key &&
        (s = parse_u64(path, "dropout_rng_key", nnz_st_meta(f, "dropout_rng_key"), UINT64_MAX, &ck->dropout_rng_key)))
        goto fail;
    ck->optimizer_json = nnz_st_meta(f, "optimizer");
    ck->train_config_json = nnz_st_meta(f, "train_config");
    return NNZ_OK;
fail:
    nnz_checkpoint_close(ck);
    return s;
}

/* Checks that t is an F32 tensor of p's shape. */
static nnz_status check_tensor(const nnz_st_tensor *t, const char *name, const nnz_tensor *want) {
    char have_s[64], want_s[64];
    if (strcmp(t->dtype, "F32") != 0)
        return nnz_fail(NNZ_ERR_FORMAT, "checkpoint tensor '%s' has dtype %s; expected F32", name, t->dtype);
    bool same = t->ndim == want->ndim;
    for (int d = 0; same && d < want->ndim; d++) same = t->shape[d] == want->shape[d];
    if (!same) {
        nnz_shape_str(t->shape, t->ndim, have_s, sizeof have_s);
        nnz_shape_str(want->shape, want->ndim, want_s, sizeof want_s);
        return nnz_fail(NNZ_ERR_FORMAT,
                        "checkpoint tensor '%s' has shape %s but the architecture needs %s; the file does not match "
                        "its architecture (corrupt or edited?)",
                        name, have_s, want_s);
    }
    if (t->nbytes != nnz_tensor_bytes(want))
        return nnz_fail(NNZ_ERR_FORMAT, "checkpoint tensor '%s' holds %zu bytes, expected %zu", name, t->nbytes,
                        nnz_tensor_bytes(want));
    return NNZ_OK;
}

/* "<layer>.threshold": an STR threshold (src/sparse/str.c), added to the model by the trainer,
 * not declared by the architecture */
static bool is_threshold(const char *name) {
    const size_t n = strlen(name), k = strlen(".threshold");
    return n > k && strcmp(name + n - k, ".threshold") == 0;
}

nnz_status nnz_checkpoint_load_params(const nnz_checkpoint *ck, nnz_model *m, int first) {
    for (int i = first; i < m->n_params; i++) {
        nnz_param *p = &m->params[i];
        const nnz_st_tensor *t = nnz_st_find(&ck->file, p->name);
        if (!t) return nnz_fail(NNZ_ERR_FORMAT, "checkpoint lacks the tensor '%s' the run needs", p->name);
        NNZ_TRY(check_tensor(t, p->name, &p->value));
        memcpy(p->value.data, t->data, t->nbytes);
    }
    return NNZ_OK;
}

nnz_status nnz_checkpoint_build_model(const nnz_checkpoint *ck, nnz_model **out) {
    *out = NULL;
    nnz_model *m = NULL;
    nnz_status s = nnz_model_from_json(ck->arch_json, ck->state.seed, &m);
    if (s != NNZ_OK) return s;
    if (!m->finalized && (s = nnz_model_finalize(m, ck->state.seed)) != NNZ_OK) goto fail;
    for (int i = 0; i < m->n_params; i++) {
        nnz_param *p = &m->params[i];
        const nnz_st_tensor *t = nnz_st_find(&ck->file, p->name);
        if (!t) {
            s = nnz_fail(NNZ_ERR_FORMAT, "checkpoint lacks the tensor '%s' that its architecture declares", p->name);
            goto fail;
        }
        if ((s = check_tensor(t, p->name, &p->value))) goto fail;
        memcpy(p->value.data, t->data, t->nbytes);
    }
    /* Every tensor must be a parameter, a buffer or optimizer state: anything else means a mismatch. */
    for (int i = 0; i < ck->file.n; i++) {
        const char *name = ck->file.tensors[i].name;
        if (strncmp(name, STATE_PREFIX, strlen(STATE_PREFIX)) == 0) continue;
        if (is_threshold(name)) continue; /* STR training state: nnz_checkpoint_load_params reads it */
        if (nnz_model_find_param(m, name) < 0) {
            s = nnz_fail(NNZ_ERR_FORMAT, "checkpoint holds the tensor '%s' that its architecture does not declare",
                         name);
            goto fail;
        }
    }
    m->dropout_rng.counter = ck->state.dropout_rng_counter;
    if (ck->has_dropout_key) m->dropout_rng.key = ck->dropout_rng_key;
    *out = m;
    return NNZ_OK;
fail:
    nnz_model_free(m);
    return s;
}

nnz_status nnz_checkpoint_load_optimizer(const nnz_checkpoint *ck, const nnz_model *m, nnz_optimizer *opt) {
    if (!ck->optimizer_json)
        return nnz_fail(NNZ_ERR_FORMAT,
                        "the checkpoint holds no optimizer state (saved as a model only); it cannot be resumed, "
                        "start a new run instead");
    cJSON *j = cJSON_Parse(ck->optimizer_json);
    if (!j) return nnz_fail(NNZ_ERR_FORMAT, "the checkpoint's optimizer metadata is not valid JSON");
    nnz_status s = NNZ_OK;
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(j, "kind");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "t");
    if (!cJSON_IsString(kind) || strcmp(kind->valuestring, nnz_optimizer_kind_name(opt->kind)) != 0) {
        s = nnz_fail(NNZ_ERR_FORMAT, "the checkpoint's optimizer is %s, not %s",
                     cJSON_IsString(kind) ? kind->valuestring : "(missing)", nnz_optimizer_kind_name(opt->kind));
        goto done;
    }
    if (!cJSON_IsNumber(t) || t->valuedouble < 0 || t->valuedouble > 9007199254740992.0 ||
        t->valuedouble != (double)(int64_t)t->valuedouble) {
        s = nnz_fail(NNZ_ERR_FORMAT, "the checkpoint's optimizer metadata lacks a valid step count 't'");
        goto done;
    }
    char name[160];
    for (int i = 0; i < opt->n && i < m->n_params; i++) {
        float *states[2] = {opt->state1 ? opt->state1[i] : NULL, opt->state2 ? opt->state2[i] : NULL};
        for (int k = 0; k < 2; k++) {
            if (!states[k]) continue;
            if ((s = state_name(name, sizeof name, k + 1, m->params[i].name))) goto done;
            const nnz_st_tensor *st = nnz_st_find(&ck->file, name);
            if (!st) {
                s = nnz_fail(NNZ_ERR_FORMAT, "checkpoint lacks the optimizer state '%s'", name);
                goto done;
            }
            if ((s = check_tensor(st, name, &m->params[i].value))) goto done;
            memcpy(states[k], st->data, st->nbytes);
        }
    }
    opt->t = (int64_t)t->valuedouble;
done:
    cJSON_Delete(j);
    return s;
}

nnz_status nnz_checkpoint_load_model(const char *path, nnz_model **out) {
    if (!out) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_checkpoint_load_model: out is NULL");
    *out = NULL;
    nnz_checkpoint ck;
    NNZ_TRY(nnz_checkpoint_open(path, &ck));
    nnz_status s = nnz_checkpoint_build_model(&ck, out);
    if (s != NNZ_OK) {
        /* Name the file in the message. */
        char msg[512];
        snprintf(msg, sizeof msg, "%s", nnz_last_error());
        s = nnz_fail(s, "'%s': %s", path, msg);
    }
    nnz_checkpoint_close(&ck);
    return s;
}

nnz_status nnz_check_output_path(const char *path) {
    if (!path) return NNZ_OK;
    struct stat out_st;
    if (stat(path, &out_st) == 0 && S_ISDIR(out_st.st_mode))
        return nnz_fail(NNZ_ERR_IO, "cannot write the checkpoint '%s': it is a directory; pass a file name to --out",
                        path);
    char dir[4096];
    if (strlen(path) >= sizeof dir) return nnz_fail(NNZ_ERR_INVALID_ARG, "the output path is too long");
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == dir) dir[1] = '\0';
    else *slash = '\0';
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return nnz_fail(NNZ_ERR_IO, "cannot write the checkpoint '%s': the directory '%s' does not exist", path, dir);
    if (access(dir, W_OK) != 0)
        return nnz_fail(NNZ_ERR_IO, "cannot write the checkpoint '%s': the directory '%s' is not writable (%s)",
                        path, dir, strerror(errno));
    return NNZ_OK;
}
