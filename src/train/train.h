/* train: the training loop, the data pipeline, checkpoints (save/resume),
 * evaluation and benchmarking. The public entry points are in nnz.h; this
 * header holds the pieces the trainer, the tests and the other verbs share. */
#ifndef NNZ_TRAIN_H
#define NNZ_TRAIN_H

#include "io/io.h"
#include "nn/nn.h"
#include "sparse/sparse.h" /* pruning during training */

/* The seed salt of the masks drawn at initialization (masked training); the data's salts are in io.h. */
#define NNZ_MASK_SEED_SALT 0x4D41534B53454544ull

/* ===================== checkpoints =====================
 * A safetensors file (docs/FORMAT.md, "Checkpoints"): every parameter and batch-norm
 * buffer under its name (F32), the optimizer state as
 * "optimizer.state1.<param>" / "optimizer.state2.<param>", and string metadata
 * format, version, arch, step, epoch, seed, dropout_rng_counter,
 * dropout_rng_key, optimizer, train_config. Written atomically. */
#define NNZ_CKPT_FORMAT "nnz-checkpoint"
#define NNZ_CKPT_VERSION "1"

typedef struct {
    int64_t step;                 /* optimizer steps done */
    int epoch;                    /* epochs fully done */
    uint64_t seed;
    uint64_t dropout_rng_counter;
} nnz_ckpt_state;

/* opt may be NULL (no optimizer state); train_config_json may be NULL. */
nnz_status nnz_checkpoint_save(const char *path, const nnz_model *m, const nnz_optimizer *opt,
                               const nnz_ckpt_state *st, const char *train_config_json);
/* The same, plus n_extra string metadata keys[i] = values[i] (e.g. "shrink", written by
 * nnz shrink); INVALID_ARG for a key of the list above. */
nnz_status nnz_checkpoint_save_ex(const char *path, const nnz_model *m, const nnz_optimizer *opt,
                                  const nnz_ckpt_state *st, const char *train_config_json, int n_extra,
                                  const char *const *keys, const char *const *values);

typedef struct {
    nnz_st_file file;
    nnz_ckpt_state state;
    const char *arch_json;         /* point into file's metadata */
    const char *optimizer_json;    /* NULL when absent */
    const char *train_config_json; /* NULL when absent */
    bool has_dropout_key;
    uint64_t dropout_rng_key;
} nnz_checkpoint;
/* Copies the checkpoint's tensors into parameters first .. n_params-1 of m by name (the ones a
 * run adds to its model, such as STR thresholds; nnz_checkpoint_build_model skips
 * "*.threshold" tensors). FORMAT when one is missing or has another shape. */
nnz_status nnz_checkpoint_load_params(const nnz_checkpoint *ck, nnz_model *m, int first);
/* Reads and checks the container and metadata (format, version, numbers). */
nnz_status nnz_checkpoint_open(const char *path, nnz_checkpoint *ck);
void nnz_checkpoint_close(nnz_checkpoint *ck);
/* Builds the model of the checkpoint's architecture and loads every parameter
 * and buffer, checking presence, dtype and shape; unknown tensors are an error. */
nnz_status nnz_checkpoint_build_model(const nnz_checkpoint *ck, nnz_model **out);
/* Fills an initialised optimizer's state (and t) from the checkpoint; every
 * state array the optimizer has must be present with its parameter's shape. */
nnz_status nnz_checkpoint_load_optimizer(const nnz_checkpoint *ck, const nnz_model *m, nnz_optimizer *opt);

/* Fails fast (before hours of training) when a checkpoint could never be written to path:
 * it is a directory, or its directory is missing or not writable. NULL is fine. */
nnz_status nnz_check_output_path(const char *path);

/* ===================== JSON-lines log ===================== */
typedef struct { FILE *f; } nnz_train_log;
/* path NULL = no log (every call is a no-op). append keeps earlier records (resume). */
nnz_status nnz_log_open(nnz_train_log *log, const char *path, bool append);
nnz_status nnz_log_step(nnz_train_log *log, const nnz_progress *p);
nnz_status nnz_log_epoch(nnz_train_log *log, const nnz_progress *p, float train_loss, float train_accuracy);
void nnz_log_close(nnz_train_log *log);

/* ===================== the trainer's configuration as JSON ===================== */
/* Caller frees with free(). The callback fields are not serialised. */
nnz_status nnz_train_config_to_json(const nnz_train_config *cfg, char **json_out);
/* Overwrites the fields that define a run (model, seed, batch, train_limit,
 * optimizer and its hyper-parameters, schedule, warm-up, label smoothing,
 * augment; epochs only when cfg->epochs is 0) from JSON written by
 * nnz_train_config_to_json. The model name is
 * written into model_buf (model_len bytes) and cfg->model points to it. */
nnz_status nnz_train_config_from_json(const char *json, nnz_train_config *cfg, char *model_buf, size_t model_len);

const char *nnz_optimizer_kind_name(nnz_optimizer_kind k); /* "sgd", "adamw" */
const char *nnz_schedule_kind_name(nnz_schedule_kind k);   /* "cosine", "step", "onecycle", "constant" */

/* ===================== memory budgets (budget.c) ===================== */
typedef struct {
    int train_n;      /* training images (their order array); 0 for evaluation only */
    int eval_n;       /* evaluated images */
    bool train;       /* training buffers (batch, labels, logit gradients) besides evaluation's */
    bool sparse;      /* layers hold zeros: the sparse formats' memory */
    bool pruning;     /* magnitude masks are made while training (GMP) */
} nnz_budget_shape;
/* zlib's state and buffers while a data split loads, besides the split itself */
#define NNZ_DATA_LOAD_SLACK ((size_t)1 << 20)
/* The estimated peak resident bytes at `batch` (budget.c explains the terms; nnz_mem_need and the
 * runtime share are nn/budget.c's). */
nnz_status nnz_budget_need(nnz_model *m, int batch, const nnz_budget_shape *sh, nnz_mem_need *out);
/* The largest batch <= most whose need fits budget (0: not even 1). */
nnz_status nnz_budget_largest_batch(nnz_model *m, int most, size_t budget, const nnz_budget_shape *sh, int *batch);
/* "N bytes: R resident before the batch (...), A for activations ..." */
void nnz_budget_describe(const nnz_mem_need *n, char *buf, size_t len);

#endif
