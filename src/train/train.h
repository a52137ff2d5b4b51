/* train: the training loop, the data pipeline, checkpoints (save/resume),
 * evaluation and benchmarking. The public entry points are in nnz.h; this
 * header holds the pieces the trainer, the tests and the other verbs share. */
#ifndef NNZ_TRAIN_H
#define NNZ_TRAIN_H

#include "io/io.h"
#include "nn/nn.h"
#include "sparse/sparse.h" /* pruning during training */

/* ===================== data: batches from an nnz_dataset =====================
 *
 * Normalization: x = (pixel/255 - mean[c]) / std[c], with fixed per-channel
 * constants chosen by the channel count, so training, evaluation and every
 * later verb agree without storing them:
 *   1 channel  (Fashion-MNIST): mean 0.2860, std 0.3530 (the Fashion-MNIST
 *              training set's statistics; tests/test_train.c recomputes them);
 *   3 channels (CIFAR-10):      mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616);
 *   otherwise:                  mean 0.5, std 0.5.
 *
 * Order: epoch e visits the first `limit` images in the permutation drawn by
 * nnz_rng_shuffle from nnz_rng_make(seed ^ NNZ_DATA_SHUFFLE_SALT, e), so the
 * order of any epoch is a pure function of (seed, e): a resumed run recomputes
 * it and skips the batches already done. Training drops the last incomplete
 * batch (it would give batch norm a tiny, noisy batch); evaluation keeps it.
 *
 * Augmentation (optional): random crop with 2-pixel zero padding (pixel value
 * 0 before normalization, as torchvision's RandomCrop(padding=2)) and a
 * horizontal flip with probability 1/2, drawn from
 * nnz_rng_make(nnz_rng_hash(seed ^ NNZ_DATA_AUGMENT_SALT, e), image index):
 * reproducible per (epoch, image), independent of batch size and threads. */
#define NNZ_DATA_SHUFFLE_SALT 0x53485546464C4531ull
#define NNZ_DATA_AUGMENT_SALT 0x4155474D454E5431ull
#define NNZ_MASK_SEED_SALT 0x4D41534B53454544ull /* masks drawn at initialization (masked training) */
#define NNZ_DATA_PAD 2

typedef struct {
    const nnz_dataset *data;
    int n;               /* images used: min(limit, data->n) */
    int batch;
    bool augment, shuffle;
    uint64_t seed;
    int epoch;           /* the epoch `order` was drawn for */
    int32_t *order;      /* (n) image indices of the current epoch */
    float mean[4], std[4];
} nnz_batcher;

/* limit 0 = all images. shuffle=false visits images in file order (evaluation). */
nnz_status nnz_batcher_init(nnz_batcher *b, const nnz_dataset *d, int limit, int batch, bool shuffle,
                            bool augment, uint64_t seed);
void nnz_batcher_free(nnz_batcher *b);
/* Draws the order of epoch e (cheap; call at each epoch start, or on resume). */
void nnz_batcher_set_epoch(nnz_batcher *b, int epoch);
/* Training batches per epoch: floor(n / batch), at least 1 when n > 0. */
int64_t nnz_batcher_train_steps(const nnz_batcher *b);
/* Evaluation batches: ceil(n / batch). */
int64_t nnz_batcher_eval_steps(const nnz_batcher *b);
/* Batch i of the current epoch: x (count, h, w, c) normalized floats, y (count)
 * labels; returns count (0 past the end). x must hold batch*h*w*c floats. */
int nnz_batcher_fill(const nnz_batcher *b, int64_t i, float *x, uint8_t *y);
/* The normalization constants described above, for c channels (c <= 4). */
void nnz_data_norm(int c, float *mean, float *std);
/* Normalizes (and, when augment, crops/flips with the rng of (seed, epoch, index))
 * one image (h,w,c bytes) into out (h,w,c floats). */
void nnz_data_image(const nnz_dataset *d, int index, const float *mean, const float *std, bool augment,
                    uint64_t seed, int epoch, float *out);

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
