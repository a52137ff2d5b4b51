/* train: the training loop, its configuration as JSON, its JSON-lines log, its
 * memory budget, and benchmarking. The public entry points are in nnz.h; this
 * header holds the pieces the trainer and the tests share. What the other verbs
 * share with training lives lower: the batcher in io/io.h, checkpoints,
 * evaluation and the memory estimate in nn/nn.h. */
#ifndef NNZ_TRAIN_H
#define NNZ_TRAIN_H

#include "io/io.h"
#include "nn/nn.h"
#include "sparse/sparse.h" /* pruning during training */

/* The seed salt of the masks drawn at initialization (masked training); the data's salts are in io.h. */
#define NNZ_MASK_SEED_SALT 0x4D41534B53454544ull

/* ===================== JSON-lines log ===================== */
typedef struct { FILE *f; } nnz_train_log;
/* path NULL = no log (every call is a no-op). append keeps earlier records (resume). */
nnz_status nnz_log_open(nnz_train_log *log, const char *path, bool append);
nnz_status nnz_log_step(nnz_train_log *log, const nnz_progress *p);
nnz_status nnz_log_epoch(nnz_train_log *log, const nnz_progress *p, float train_loss, float train_accuracy);
/* {"type":"sparse","step":S,"layer":...,"zeros":Z,"format":"dense"|"csr"|"bsr:RxC","why":...}: a
 * layer's sparse-execution decision changed at step S (1-based: the step being computed). */
nnz_status nnz_log_sparse(nnz_train_log *log, int64_t step, const char *layer, double zeros, const char *format,
                          const char *why);
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

/* ===================== the trainer's memory budget ===================== */
/* zlib's state and buffers while a data split loads, besides the split itself */
#define NNZ_DATA_LOAD_SLACK ((size_t)1 << 20)

#endif
