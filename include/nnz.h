/* nnz — sparse, compact neural networks, trained and run fast on CPUs.
 *
 * The public C API. Every call that can fail returns an nnz_status; the
 * message (what was wrong, what to do) is in nnz_last_error(). Nothing here
 * aborts on bad input.
 *
 * This header holds only declarations and plain types, so every layer of the
 * library may include it (it is the vocabulary, not a layer).
 */
#ifndef NNZ_H
#define NNZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status ------------------------------------------------------------ */
typedef enum {
    NNZ_OK = 0,
    NNZ_ERR_INVALID_ARG = 1, /* a caller passed something impossible          */
    NNZ_ERR_IO = 2,          /* a file could not be opened, read or written    */
    NNZ_ERR_FORMAT = 3,      /* a file is corrupt, truncated or not ours       */
    NNZ_ERR_NOMEM = 4,       /* an allocation failed or exceeded a limit       */
    NNZ_ERR_UNSUPPORTED = 5, /* valid, but this build/CPU cannot do it         */
    NNZ_ERR_NUMERIC = 6,     /* NaN/Inf where numbers were expected            */
    NNZ_ERR_INTERRUPTED = 7, /* stopped by the user or a callback              */
} nnz_status;

/* The message of the last failed call on this thread ("" if none). */
const char *nnz_last_error(void);
const char *nnz_status_name(nnz_status s);
const char *nnz_version(void);

/* ---- sizes -------------------------------------------------------------
 * "8M", "512K", "1G", "1.5GiB", "1000000" -> bytes (binary units; K, M, G with an
 * optional "i" and "B"). Returns false on anything else, zero, or more than 2^60. */
bool nnz_parse_bytes(const char *text, size_t *out);
/* The size policy: the most bytes nnz accepts from what one file declares: the file
 * itself, its decompressed size (gzip), the decoded tensors of a .nnz file, and a model's
 * parameters and per-image activations. NNZ_SIZE_LIMIT in the environment (parsed as
 * nnz_parse_bytes) sets it; the default is 1 GiB. A malformed value gives the default
 * (nnz_size_limit_check reports it). */
#define NNZ_SIZE_LIMIT_DEFAULT ((size_t)1 << 30)
size_t nnz_size_limit(void);
/* NNZ_OK when NNZ_SIZE_LIMIT is unset or valid; otherwise NNZ_ERR_INVALID_ARG with a message. */
nnz_status nnz_size_limit_check(void);

/* ---- data types -------------------------------------------------------- */
typedef enum { NNZ_F32 = 0, NNZ_BF16 = 1 } nnz_dtype;
size_t nnz_dtype_size(nnz_dtype t);
const char *nnz_dtype_name(nnz_dtype t);

/* ---- CPU features and threads ----------------------------------------- */
typedef enum { NNZ_ISA_REF = 0, NNZ_ISA_AVX2, NNZ_ISA_AVX512, NNZ_ISA_AVX512BF16, NNZ_ISA_AMX, NNZ_ISA_COUNT } nnz_isa;
/* The ISA the kernels use: the best the CPU has, or NNZ_ISA from the environment. */
nnz_isa nnz_isa_active(void);
const char *nnz_isa_name(nnz_isa isa);
bool nnz_isa_supported(nnz_isa isa);
/* Force a path (tests use this to run every one); fails if the CPU lacks it. */
nnz_status nnz_isa_set(nnz_isa isa);
/* One line: "avx2 avx512f avx512_bf16 ..., active: avx512". */
void nnz_cpu_describe(char *buf, size_t len);
/* 0 = all cores. */
void nnz_set_threads(int n);
int nnz_get_threads(void);
/* Call first thing in main(). Two libraries read settings only when the process starts,
 * so this sets them and re-executes the program once (/proc/self/exe, same argv):
 * - the OpenMP wait, unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is set. When no other task
 *   is runnable at start (the median of 7 reads of /proc/loadavg, 1 ms apart), idle threads
 *   spin a short while (GOMP_SPINCOUNT=30000, about 0.5 ms) before they sleep: a training
 *   step's parallel regions follow each other closely, and waking a sleeping thread costs
 *   more than the spin (mbv2-tiny, 2 cores: 1.08x faster than passive). Otherwise
 *   OMP_WAIT_POLICY=passive: a spinning thread collapses when another process holds a core
 *   (measured on 2 cores with one busy neighbour: passive trains mbv2-tiny 1.37x faster than
 *   the short spin, 1.5x faster than GNU OpenMP's default). The choice is made once: a
 *   neighbour that starts later meets the spin. NNZ_OMP_WAIT says what was chosen and why
 *   (nnz_omp_wait).
 * - OPENBLAS_CORETYPE=SkylakeX (Haswell without AVX-512), unless OPENBLAS_CORETYPE is set,
 *   when OpenBLAS chose its SSE3 "Prescott" kernels on a CPU with AVX2 or AVX-512: OpenBLAS
 *   0.3.21 does that on Intel models it does not know (Emerald Rapids), and its sgemm then
 *   runs 3-4x slower (measured: mlp training 1,508 -> 6,166 images/s, 1 thread).
 *   NNZ_OPENBLAS_CHOSE keeps the name OpenBLAS had chosen.
 * It returns when nothing needed setting (the user's choices are kept) or the re-exec
 * failed (the program then runs as it started). */
void nnz_prefer_startup_env(char **argv);
/* The name of the kernel set OpenBLAS runs on this CPU ("SkylakeX", "Haswell", "Prescott"). */
const char *nnz_blas_core(void);
/* How this process's OpenMP threads wait, in words: what nnz_prefer_startup_env chose and why,
 * or the user's OMP_WAIT_POLICY / GOMP_SPINCOUNT. */
const char *nnz_omp_wait(void);

/* ---- process memory (--memory-budget) ---------------------------------- */
/* The process's resident memory now (VmRSS) and its peak so far (VmHWM), in bytes;
 * 0 where /proc/self/status cannot be read. */
size_t nnz_resident_bytes(void);
size_t nnz_peak_resident_bytes(void);

/* ---- models ------------------------------------------------------------ */
typedef struct nnz_model nnz_model;

/* A zoo model by name ("mlp", "lenet5", "vgg8", "mbv2-tiny", and "alexnet": the original layer
 * shapes with groups 1, for 224x224x3 inputs, not in nnz_zoo_names; src/nn/zoo.c) for inputs of
 * in_h x in_w x in_c and num_classes outputs; weights initialised from seed. */
nnz_status nnz_model_from_zoo(const char *name, int in_h, int in_w, int in_c, int num_classes,
                              uint64_t seed, nnz_model **out);
/* A model named by spec: a zoo name, an architecture JSON file (a path ending in .json,
 * docs/arch-json.md) or a checkpoint whose architecture (not its weights) is taken, e.g. a
 * DepthShrinker-merged one. Weights are initialised from seed. INVALID_ARG when the spec is
 * none of these or the architecture's input is not in_h x in_w x in_c or it has fewer than
 * num_classes outputs. */
nnz_status nnz_model_from_spec(const char *spec, int in_h, int in_w, int in_c, int num_classes, uint64_t seed,
                               nnz_model **out);
/* The zoo's names, NULL-terminated. */
const char *const *nnz_zoo_names(void);
/* Architecture as JSON (caller frees with free()) and back. */
nnz_status nnz_model_to_json(const nnz_model *m, char **json_out);
nnz_status nnz_model_from_json(const char *json, uint64_t seed, nnz_model **out);
/* nnz_model_from_json of an architecture file's text (bounds-checked read; a NUL byte is FORMAT). */
nnz_status nnz_model_from_arch_file(const char *path, uint64_t seed, nnz_model **out);
void nnz_model_free(nnz_model *m);

typedef struct {
    int64_t params;       /* trainable parameters                        */
    int64_t buffers;      /* non-trainable state (BN running statistics) */
    int64_t flops;        /* forward FLOPs per image (2 per multiply-add) */
    int layers;
    int in_h, in_w, in_c, num_classes;
} nnz_model_stats;
void nnz_model_get_stats(const nnz_model *m, nnz_model_stats *out);
/* Writes a human-readable table of layers (name, op, output shape, params, FLOPs). */
void nnz_model_summary(const nnz_model *m, char *buf, size_t len);

/* The precision of the model's convolution and linear GEMMs. NNZ_F32 (the default); NNZ_BF16
 * rounds their inputs (weights, activations, output gradients) to bfloat16 and accumulates in
 * fp32: weights, their gradients, optimizer state, batch norm, softmax and the loss stay fp32
 * (docs/BF16.md). INVALID_ARG for any other dtype. */
nnz_status nnz_model_set_precision(nnz_model *m, nnz_dtype precision);
nnz_dtype nnz_model_precision(const nnz_model *m);
/* At bf16 precision, training stores each activation in bf16 between the forward's last read of it
 * and the backward's first (docs/BF16.md, "Activations stored in bf16"): the buffers are laid out
 * in one pool that takes less than fp32 buffers (where it would not, the model keeps those), the
 * forward is unchanged and the backward reads the activations rounded to bf16. Off by default;
 * no effect at fp32. Takes effect at the next training forward. INVALID_ARG without a model. */
nnz_status nnz_model_set_bf16_activations(nnz_model *m, bool on);
/* Parses "fp32" (or "f32") and "bf16"; INVALID_ARG with a message otherwise. */
nnz_status nnz_precision_parse(const char *name, nnz_dtype *out);

/* Sparse layers. A conv (groups 1) or linear layer whose weight holds zeros can run on the
 * sparse kernels; the zeros are the mask (the dense weight stays the master copy).
 * format: "auto" (the default: each layer's format from its measured sparsity and block fill),
 * "dense" (sparse kernels off), "csr" or "bsr:RxC" (forced on every layer with zeros). */
nnz_status nnz_model_set_sparse_format(nnz_model *m, const char *format);
/* Zeroes layer's weights where mask (one byte per weight, in the weight's layout) is 0. */
nnz_status nnz_model_apply_mask(nnz_model *m, const char *layer, const uint8_t *mask, int64_t n);
/* on: training drops the gradients of zero weights, so they stay zero (masked training) */
void nnz_model_set_grad_mask(nnz_model *m, bool on);
/* One line per conv/linear layer: its zeros, the format chosen and why (plans if needed).
 * *with_zeros (may be NULL) gets the number of those layers whose weights hold zeros. */
nnz_status nnz_model_sparse_summary(nnz_model *m, char *buf, size_t len, int *with_zeros);
/* Forward FLOPs per image at the weights' zeros (docs/AUTOSPARSE.md): one line per conv/linear
 * layer holding zeros ("<name> <sparse> of <dense> FLOPs (<ratio>x)") and a "total" line. */
nnz_status nnz_model_flops_summary(const nnz_model *m, char *buf, size_t len);
/* One conv/linear layer's zeros and forward FLOPs per image (2 per multiply-add), dense and at
 * its zeros (docs/AUTOSPARSE.md, "FLOPs"); pruned: nnz train --prune/--mask act on it (every
 * conv of groups 1 and linear layer but the first and the last). */
typedef struct {
    char name[64];
    int64_t weights, zeros;
    int64_t flops;           /* dense forward FLOPs */
    double sparse_flops;     /* forward FLOPs at the zeros: (weights - zeros) / weights * flops */
    bool pruned;
} nnz_layer_sparsity;
/* Fills out[0..min(n, cap)) with the model's conv/linear layers in graph order and returns n
 * (their number); out may be NULL with cap 0 to count them. *total_flops (may be NULL) gets the
 * whole model's dense forward FLOPs and *total_sparse the model's at the zeros. */
int nnz_model_layer_sparsity(const nnz_model *m, nnz_layer_sparsity *out, int cap, double *total_flops,
                             double *total_sparse);

/* Inference: x is (n, in_h, in_w, in_c) NHWC floats, logits is (n, num_classes). */
nnz_status nnz_model_predict(nnz_model *m, const float *x, int n, float *logits);

/* ---- data sets --------------------------------------------------------- */
typedef struct {
    int n, h, w, c;         /* images are n x h x w x c bytes (NHWC) */
    int num_classes;
    uint8_t *images;
    uint8_t *labels;
} nnz_dataset;
/* Loads the train or test split from dir: MNIST-style IDX files (raw or .gz)
 * or CIFAR-10 binary batches, detected from the file names. */
nnz_status nnz_dataset_load(const char *dir, bool train, nnz_dataset *out);
/* Only the first `limit` images (limit <= 0: all): an IDX image file is read (and gunzipped)
 * only as far as those images go. num_classes is that of the whole split, as with
 * nnz_dataset_load + nnz_dataset_trim, which this equals. */
nnz_status nnz_dataset_load_first(const char *dir, bool train, int limit, nnz_dataset *out);
void nnz_dataset_free(nnz_dataset *d);
#define NNZ_DEFAULT_DATA_DIR "/usr/share/datasets/fashion-mnist"
/* The bytes nnz_dataset_load_first(dir, train, limit) will hold (images + labels, while loading
 * and after), from the files' headers and sizes, without loading them; *n (may be NULL) gets the
 * split's whole image count. */
nnz_status nnz_dataset_bytes(const char *dir, bool train, int limit, size_t *bytes, int *n);
/* Keeps only the first n images (n <= 0 or >= d->n: all), giving the rest's memory back.
 * num_classes stays that of the whole split. */
nnz_status nnz_dataset_trim(nnz_dataset *d, int n);


/* ---- weight masks (src/sparse/sparse.h has the semantics, docs/RBGP.md the why) ---- */
/* CHANNEL_BLOCK: a BLOCK mask over (output, input) channels, each block kept or dropped at every
 * kernel tap together (cols = taps x channels, spec.taps); the Winograd convolutions keep it sparse
 * (sparse format winograd:16x16) */
typedef enum {
    NNZ_MASK_DENSE = 0, NNZ_MASK_UNSTRUCTURED, NNZ_MASK_BLOCK, NNZ_MASK_HBSNN, NNZ_MASK_RBGP, NNZ_MASK_CHANNEL_BLOCK
} nnz_mask_kind;
#define NNZ_MASK_MAX_LEVELS 4
/* Zero fields mean "the default". */
typedef struct {
    nnz_mask_kind kind;
    float sparsity;              /* fraction of zeros wanted, in [0, 1) */
    int block_rows, block_cols;  /* BLOCK, CHANNEL_BLOCK: the block (16x16); HBSNN: level 0 (16x16); RBGP: J_b (4x4) */
    int taps;                    /* CHANNEL_BLOCK: the columns are taps x channels (a conv's KH*KW; 0: 1) */
    int levels;                  /* HBSNN: number of levels (2), each in level_rows/cols (level 0 = block) */
    int level_rows[NNZ_MASK_MAX_LEVELS], level_cols[NNZ_MASK_MAX_LEVELS];
    float level_density[NNZ_MASK_MAX_LEVELS]; /* HBSNN: density kept after each level (geometric split) */
    float inner_sparsity;        /* RBGP: sparsity of G_i (auto: half of the sparsity on each graph) */
    int core_rows, core_cols;    /* RBGP: core block G_i (x) J_b in elements (auto: about 8x8 micro-blocks) */
    int repeat_rows, repeat_cols;/* RBGP: J_r (auto: 1x1 preferred) */
    int max_tries;               /* RBGP: graphs drawn per factor until one meets the Ramanujan bound (16) */
} nnz_mask_spec;

/* One RBGP factor graph: rows x cols, left degree dl, right degrees dr_min..dr_max. */
typedef struct {
    int rows, cols, dl, dr_min, dr_max;
    double sigma1, sigma2, bound; /* the two largest singular values; sqrt(dl-1)+sqrt(dr_max-1) */
    bool biregular, ramanujan;    /* ramanujan: sigma2 <= bound */
    int tries;                    /* graphs drawn */
    const char *method;           /* "2-lift" or "switch" */
} nnz_mask_factor;

typedef struct {
    int rows, cols;
    int64_t kept;
    double density, target_density; /* achieved (kept / (rows*cols)) and asked for */
    int block_rows, block_cols;     /* the block of the BSR count (RBGP: J_b) */
    int64_t nblocks;                /* blocks of that size holding a kept element */
    int64_t bytes_csr, bytes_bsr;   /* int32 index bytes (row pointers + indices), no values */
    int64_t bytes_bitmap;           /* one bit per element */
    int64_t bytes_succinct;         /* RBGP: factor graphs + sizes; 0 for other kinds */
    /* RBGP only */
    int repeat_rows, repeat_cols, pad_rows, pad_cols;
    nnz_mask_factor outer, inner;
} nnz_mask_info;

/* mask (rows x cols bytes, 1 = kept) for a weight (rows, cols) = (OC, K) (conv weights
 * flattened to (OC, KH*KW*IC)); weight (same shape) or NULL picks magnitude or random
 * selection for UNSTRUCTURED/BLOCK/HBSNN; RBGP ignores it. Same seed, same mask. info may be
 * NULL. INVALID_ARG (with a message) for bad shapes, sparsities, blocks or levels. */
nnz_status nnz_mask_make(const nnz_mask_spec *spec, int rows, int cols, const float *weight, uint64_t seed,
                         uint8_t *mask, nnz_mask_info *info);
/* RBGP: the factor graphs' adjacency lists as text (at most max_rows rows each). */
nnz_status nnz_mask_factors_text(const nnz_mask_spec *spec, int rows, int cols, uint64_t seed, int max_rows,
                                 char *buf, size_t len);
/* The mask as a binary PGM (P5) picture, kept = black, scale x scale pixels per element,
 * written atomically. */
nnz_status nnz_mask_write_pgm(const uint8_t *mask, int rows, int cols, int scale, const char *path);
/* "dense", "unstructured", "block", "hbsnn", "rbgp", "channel-block" and back (INVALID_ARG for other names). */
const char *nnz_mask_kind_name(nnz_mask_kind k);
nnz_status nnz_mask_kind_parse(const char *name, nnz_mask_kind *out);

/* Statistics of any mask (rows x cols bytes, nonzero = kept): rows, cols, kept, density,
 * block_rows x block_cols (r, c >= 1) and nblocks (blocks of that size holding a kept element),
 * bytes_csr, bytes_bsr (with that block), bytes_bitmap; target_density and the RBGP fields 0. */
nnz_status nnz_mask_measure(const uint8_t *mask, int rows, int cols, int block_rows, int block_cols,
                            nnz_mask_info *info);

/* A model's conv and linear layers as the (rows, cols) = (OC, KH*KW*IC) (or (OUT, IN)) weight
 * matrices masks are made for (depthwise and grouped convolutions have none). */
typedef struct {
    const char *name;     /* the layer's name (owned by the model) */
    const char *op;       /* "conv" or "linear" */
    int node;             /* its index in the model's graph */
    int rows, cols;
    const float *weight;  /* rows x cols, row-major: points into the model */
    bool maskable;        /* one of the layers nnz train --mask / --prune act on (not the first, not the last) */
} nnz_weight_layer;
/* Fills out[0 .. min(count, cap)) in graph order and returns count (out may be NULL, cap 0). */
int nnz_model_weight_layers(const nnz_model *m, nnz_weight_layer *out, int cap);

/* How a checkpoint's layer was masked, from its training configuration (nnz train --mask):
 * recorded is false when the checkpoint holds no training configuration or its run had no mask
 * (spec.kind DENSE). Otherwise spec is the run's mask (kind, sparsity, the --mask-block micro-block
 * when the configuration records it, 0 = the default otherwise) and, when the run masked this
 * layer (layer_masked), seed is the seed nnz_mask_make got for it: nnz_mask_make(&spec, rows, cols,
 * NULL, seed, ...) regenerates the layer's mask as drawn at initialization (with by_magnitude, pass
 * the init_from model's weight of the layer instead of NULL). m is the checkpoint's
 * model (nnz_checkpoint_load_model); INVALID_ARG when it has no conv/linear layer named layer. */
typedef struct {
    bool recorded, layer_masked;
    nnz_mask_spec spec;
    uint64_t seed;
    /* the run started from a trained model (nnz train --init-from): its path as recorded ("" if
     * not, or longer than the buffer); then unstructured, block and hbsnn masks were chosen by
     * magnitude from that model's weights (by_magnitude): regenerate them with its layer weight */
    char init_from[1024];
    bool by_magnitude;
} nnz_mask_origin;
nnz_status nnz_checkpoint_mask_origin(const char *path, const nnz_model *m, const char *layer, nnz_mask_origin *out);

/* Masked training: masks every conv (groups 1) and linear layer of m except the first and
 * the last (they stay dense, as the sparse-training literature does) with
 * nnz_mask_make(spec, OC, KH*KW*IC, NULL (random or structured, not by magnitude), seed + node
 * index), zeroes the masked weights and turns on the gradient mask, so training keeps them
 * zero. One line per masked layer goes to log (NULL: none). */
nnz_status nnz_model_apply_masks(nnz_model *m, const nnz_mask_spec *spec, uint64_t seed, char *log, size_t len);
/* The same, but the masks of kinds that rank weights (unstructured, block, hbsnn) keep the
 * largest-magnitude weights (block L1 norms) of the model's current weights, as pruning a
 * trained dense model does; rbgp ignores the weights (its graphs come from the seed). */
nnz_status nnz_model_apply_magnitude_masks(nnz_model *m, const nnz_mask_spec *spec, uint64_t seed, char *log,
                                           size_t len);

/* ---- pruning during training (src/sparse/str.c, gmp.c; docs/AUTOSPARSE.md) ----
 * Both act on the layers nnz_model_apply_masks masks: conv (groups 1) and linear but the
 * first and the last. AUTOSPARSE: learnable thresholds (STR) w~ = sign(w)*relu(|w| - sigmoid(s))
 * with Gradient Annealing (pruned weights get alpha times their gradient; alpha0 = 0 is STR).
 * GMP: gradual magnitude pruning to target_sparsity, Zhu & Gupta's cubic schedule. */
typedef enum { NNZ_PRUNE_NONE = 0, NNZ_PRUNE_AUTOSPARSE, NNZ_PRUNE_GMP } nnz_prune_kind;
typedef enum {
    NNZ_ANNEAL_COSINE_SIGMOID = 0, NNZ_ANNEAL_COSINE, NNZ_ANNEAL_SIGMOID, NNZ_ANNEAL_LINEAR, NNZ_ANNEAL_CONSTANT
} nnz_anneal_kind;
typedef struct {
    nnz_prune_kind kind;
    /* autosparse */
    float alpha0;                /* Gradient Annealing's alpha at t = 0 (default 0.5; 0 = STR) */
    nnz_anneal_kind anneal;      /* alpha's decay over training (default cosine-sigmoid) */
    int alpha_off_epoch;         /* alpha = 0 once this many epochs are done (0 = never forced) */
    float threshold_init;        /* s0 (default -10: sigmoid(s0) = 4.5e-5 prunes almost nothing) */
    float threshold_decay;       /* L2 decay on s (< 0, the default: the weights' weight decay) */
    bool per_channel;            /* one threshold per output channel instead of per layer */
    /* gmp */
    float target_sparsity;       /* final fraction of zeros per layer, in (0, 1) */
    float gmp_begin, gmp_end;    /* pruning window as fractions of the run (defaults 0 and 0.75) */
    int gmp_every;               /* steps between pruning events (0 = auto: the window / 16, at least 1) */
    /* both: at the run's end, the batch norms' running statistics are recomputed with the final weights
       over this many training images (the first ones, in file order); default 2048, 0 = keep the running
       averages. Pruning changes the weights until the end, faster than the averages follow. */
    int bn_recalibrate;
} nnz_prune_config;
/* "none", "autosparse", "gmp" / "cosine-sigmoid", "cosine", "sigmoid", "linear", "constant" */
const char *nnz_prune_kind_name(nnz_prune_kind k);
nnz_status nnz_prune_kind_parse(const char *name, nnz_prune_kind *out);
const char *nnz_anneal_name(nnz_anneal_kind k);
nnz_status nnz_anneal_parse(const char *name, nnz_anneal_kind *out);
void nnz_prune_config_init(nnz_prune_config *p); /* kind NONE and the defaults above */
/* Gradient Annealing's alpha at progress t/T = frac in [0, 1] (docs/AUTOSPARSE.md). */
float nnz_anneal_alpha(nnz_anneal_kind k, float alpha0, double frac);
/* Zhu & Gupta: sparsity at step of a run pruning from s_i = 0 to target over [begin, end). */
double nnz_gmp_sparsity(double target, int64_t begin, int64_t end, int64_t step);

/* ---- training ---------------------------------------------------------- */
typedef enum { NNZ_OPT_SGD = 0, NNZ_OPT_ADAMW = 1 } nnz_optimizer_kind;
typedef enum { NNZ_SCHED_COSINE = 0, NNZ_SCHED_STEP = 1, NNZ_SCHED_ONECYCLE = 2, NNZ_SCHED_CONSTANT = 3 } nnz_schedule_kind;

typedef struct {
    int epoch, epochs;      /* epoch is 1-based: the one in progress (or just finished) */
    int64_t step, steps_total; /* optimizer steps done so far (global, across resumes) */
    int64_t images_seen;
    float loss, accuracy;   /* running averages over the current interval */
    float lr;
    double images_per_sec, elapsed_sec, eta_sec;
    bool epoch_end;         /* true once per epoch, with test accuracy below */
    float test_accuracy;    /* -1 when not evaluated */
    const char *note;       /* NULL, or lines the trainer reports since the last call (an autosparse run's
                               per-layer sparse/dense decisions when they change) */
} nnz_progress;
/* Return false to stop training (the status will be NNZ_ERR_INTERRUPTED). */
typedef bool (*nnz_progress_fn)(const nnz_progress *p, void *user);

typedef struct {
    const char *model;          /* zoo name, architecture .json or checkpoint (nnz_model_from_spec); default
                                   "mbv2-tiny" */
    const char *data_dir;       /* default NNZ_DEFAULT_DATA_DIR */
    const char *out_path;       /* checkpoint written at each epoch end (and on interruption); NULL = none */
    int checkpoint_every;       /* also write it every this many optimizer steps (0, the default = epoch ends
                                   only); not part of the run: not stored in the checkpoint, resume passes it anew */
    const char *resume_path;    /* continue from this checkpoint: the run's settings (model, seed, batch,
                                   optimizer, schedule, ...) come from it; epochs too when epochs is 0 */
    const char *init_path;      /* start a new run from this checkpoint's weights (e.g. a trained dense
                                   model): its architecture replaces `model`, and mask kinds that rank
                                   weights (unstructured, block, hbsnn) prune by magnitude; the optimizer,
                                   schedule and epochs start anew. Not with resume_path. */
    const char *log_path;       /* JSON lines, one per interval and per epoch; NULL = none */
    int epochs;                 /* default 10 (0 only with resume_path: the checkpoint's) */
    int batch;                  /* default 128 */
    float lr;                   /* 0 (the default) = per optimizer: SGD 0.1, AdamW 0.001 */
    float momentum;             /* default 0.9 */
    bool nesterov;
    float weight_decay;         /* < 0 (the default, -1) = per optimizer: 5e-4 (SGD) / 0.05 (AdamW) */
    bool decay_bn_and_bias;     /* default false: BN parameters and biases exempt */
    nnz_optimizer_kind optimizer;
    nnz_schedule_kind schedule; /* default cosine */
    float warmup_epochs;        /* default 0 */
    int step_size_epochs;       /* step schedule: decay every this many epochs (0 = a third of the epochs) */
    float step_gamma;           /* step schedule factor, default 0.1 */
    float label_smoothing;      /* default 0 */
    bool augment;               /* random crop (pad 2) + horizontal flip */
    uint64_t seed;              /* default 42: weights, shuffling, augmentation, dropout */
    int threads;                /* 0 = all cores */
    nnz_dtype precision;        /* NNZ_F32 (default) or NNZ_BF16: see nnz_model_set_precision */
    bool bf16_activations;      /* with NNZ_BF16: activations stored in bf16 (nnz_model_set_bf16_activations) */
    nnz_mask_spec mask;         /* masked (sparse) training: kind DENSE (default) = none; otherwise every
                                   conv (groups 1) and linear layer but the first and the last gets this
                                   mask at initialization (nnz_model_apply_masks) and keeps its zeros */
    nnz_prune_config prune;     /* pruning during training: kind NONE (default) = none */
    const char *sparse_format;  /* NULL = "auto": see nnz_model_set_sparse_format */
    int train_limit, test_limit;/* use only the first N images (0 = all) */
    int log_every;              /* steps between progress reports, default 50 */
    size_t memory_budget;       /* bytes the process's peak resident memory must stay within (0 = no
                                   limit): the estimated peak at `batch` is checked before training and
                                   the run fails (NNZ_ERR_NOMEM, naming the largest batch that fits)
                                   rather than change the batch; not saved in the checkpoint */
    bool codebooks;             /* codebook training (Deep Compression's trained quantization), only with
                                   nnz_train_model: see there. Default false */
    nnz_progress_fn progress;
    void *progress_user;
} nnz_train_config;

/* Fills cfg with the defaults listed above. */
void nnz_train_config_init(nnz_train_config *cfg);

typedef struct {
    float train_loss, train_accuracy, test_accuracy; /* accuracies in [0,1] */
    double train_images_per_sec;
    double seconds;
    int64_t steps;
    double sparsity;      /* fraction of zero weights at the end over the layers --prune and --mask act on */
    nnz_prune_kind prune; /* the run's pruning (a resumed run: the checkpoint's) */
    /* FLOPs per image (docs/AUTOSPARSE.md): training summed over this process's steps and its dense
       equivalent (3x forward per step), inference of the final weights and of the dense model */
    double train_flops, train_flops_dense, infer_flops, infer_flops_dense;
    size_t memory_estimate; /* with memory_budget: the estimated peak resident bytes, else 0 */
    size_t peak_resident;   /* the process's measured peak resident bytes at the end (0 if unknown) */
    /* autosparse: training steps x pruned layers this process ran, and how many of those ran the layer's
       forward and backward-data on the sparse kernels (the planner's decision on w~, each step) */
    int64_t layer_steps, sparse_layer_steps;
} nnz_train_result;

nnz_status nnz_train(const nnz_train_config *cfg, nnz_train_result *result);
/* Trains the model m in place, from its current weights, with a fresh optimizer: the same loop,
 * data, schedule, progress, log and per-epoch test accuracy as nnz_train, but nothing is written
 * (out_path, resume_path and checkpoint_every must be unset; save m yourself); cfg->model is
 * ignored, masks and pruning are refused. m's input shape must match the data.
 * With cfg->codebooks (Deep Compression's trained quantization): every conv/linear weight tensor
 * holding at most 256 distinct nonzero values (nnz_pack_quantize leaves the quantized ones so)
 * trains as those shared values: a value's gradient is the sum of the gradients of the weights
 * that hold it, weights always equal their value, the assignment never changes, zeros stay zero;
 * every other parameter is frozen (batch-norm running statistics still follow the training
 * batches). Weight decay must be 0 (the default in this mode); lr 0 means NNZ_CODEBOOK_DEFAULT_LR. Then
 * nnz_pack of m stores exactly those values (the packed file decodes to m bit for bit).
 *   nnz_pack_quantize(m, &pcfg); nnz_train_model(m, &tcfg, &res); nnz_pack(m, path, &pcfg, NULL); */
nnz_status nnz_train_model(nnz_model *m, const nnz_train_config *cfg, nnz_train_result *result);
#define NNZ_CODEBOOK_DEFAULT_LR 1e-3f /* codebook training's rate when cfg->lr is 0 (chosen for AdamW, which nnz pack uses) */

/* ---- checkpoints, evaluation, benchmarks ------------------------------- */
/* Loads the model (architecture + weights) from a safetensors checkpoint. */
nnz_status nnz_checkpoint_load_model(const char *path, nnz_model **out);
nnz_status nnz_checkpoint_save_model(const nnz_model *m, const char *path);
/* Fails fast (before hours of training) when a file could never be written to path: it is a
 * directory, or its directory is missing or not writable. NULL is fine. */
nnz_status nnz_check_output_path(const char *path);

typedef struct { float accuracy, loss; int n; double images_per_sec; } nnz_eval_result;
nnz_status nnz_evaluate(nnz_model *m, const nnz_dataset *d, int batch, int limit, nnz_eval_result *out);
/* Evaluation under a memory budget (bytes the process's peak resident memory must stay within):
 * *batch (in: the batch wanted) becomes the largest batch <= it whose estimated peak fits, the
 * model's activation buffers are capped to match, and *estimate (may be NULL) gets the estimated
 * peak. NNZ_ERR_NOMEM, with the estimate, when not even a batch of 1 fits. nnz_evaluate's results
 * do not depend on the batch. */
nnz_status nnz_evaluate_fit(nnz_model *m, const nnz_dataset *d, int limit, size_t budget, int *batch,
                            size_t *estimate);

/* Per-layer time of training steps. nnz_model_profile(m, true) zeroes the counters and starts:
 * every training forward and backward then adds each node's seconds to it (a node's turn lasts
 * until the next node's: work one node does for another, a fused activation or a batch norm
 * deferred into the conv after it, counts with the node that does it; steps counts the
 * backwards). false stops counting; the counters stay readable until the next start. */
typedef struct {
    const char *name, *op;             /* the node's name and operation ("conv2d", "batchnorm", ...) */
    double forward_sec, backward_sec;  /* summed over the steps counted */
    int steps;
} nnz_node_profile;
nnz_status nnz_model_profile(nnz_model *m, bool on);
int nnz_model_node_count(const nnz_model *m);
nnz_status nnz_model_profile_node(const nnz_model *m, int node, nnz_node_profile *out);

/* Training-step and inference throughput on random data, measured as bench/torch_bench.py
 * measures PyTorch: warm-up steps untimed, then `runs` timed runs of `iters` steps each (0: as
 * many as make a run last min_time seconds, from the warm-up's pace), and the median run's
 * images/s. nnz_bench_config_init: batch 128, runs 5, iters 0, min_time 0.3, seed 42. */
typedef struct {
    int batch, runs, iters;
    double min_time;
    uint64_t seed;
    bool per_layer; /* profile the timed training runs (nnz_model_profile; warm-up excluded) */
} nnz_bench_config;
void nnz_bench_config_init(nnz_bench_config *c);
typedef struct {
    double train_images_per_sec, infer_images_per_sec; /* the median run's */
    double train_gflops, infer_gflops; /* achieved, counting forward=1x, training=3x forward FLOPs */
    int batch, threads, runs;
    int train_iters, infer_iters;      /* steps per timed run */
} nnz_bench_result;
nnz_status nnz_bench_model(nnz_model *m, const nnz_bench_config *c, nnz_bench_result *out);

/* One layer's three products (forward, backward-data, weight gradient), sparse against dense
 * fp32 GEMM, on random data: a (rows, cols) weight masked at sparsity (unstructured for "csr",
 * blocks of the format's block for "bsr:RxC"), m rows of activations. Medians of iters runs. */
typedef struct {
    int rows, cols;       /* the weight: (OC, KH*KW*IC) or (OUT, IN) */
    int64_t m;            /* activation rows (batch x output pixels) */
    float sparsity;       /* in [0, 1) */
    const char *format;   /* "csr" or "bsr:RxC" */
    int iters;
    uint64_t seed;
} nnz_layer_bench_config;
typedef struct {
    double dense_seconds[3], sparse_seconds[3]; /* forward, backward-data, weight gradient (SDDMM) */
    double dense_flops, actual_flops;           /* per product: 2*m*rows*cols and 2*m*nonzeros */
    int64_t nnz, nblocks;
} nnz_layer_bench_result;
nnz_status nnz_bench_layer(const nnz_layer_bench_config *cfg, nnz_layer_bench_result *out);

/* ---- compressed models (.nnz files: k-means weight sharing + Huffman coding) ---- */
typedef struct {
    int conv_bits;        /* k-means bits of convolution weights, 1..8 (default 5) */
    int linear_bits;      /* ... of linear weights (default 4); Deep Compression's finding */
    int depthwise_bits;   /* ... of depthwise convs (groups > 1), 1..8; 0 (the default) = conv_bits */
    int n_overrides;      /* per-layer bits: names (a node "conv1" or a tensor "conv1.weight") */
    const char *const *override_names;
    const int *override_bits; /* 1..8, or 0 = keep raw fp32 */
    int layout;           /* 0 auto (sparse when the tensor has exact zeros and that is smaller), 1 dense, 2 sparse */
} nnz_pack_config;
void nnz_pack_config_init(nnz_pack_config *cfg);

typedef struct {
    char name[96];
    const char *codec;    /* "raw", "dense", "sparse" */
    int bits, gap_bits, codebook;
    int64_t numel, nonzeros;
    int64_t fp32_bytes, packed_bytes; /* packed: the payload (codebook + code lengths + streams) */
    double rmse;          /* quantization error (pack only; -1 when read from a file) */
} nnz_pack_layer;
typedef struct {
    int n;
    nnz_pack_layer *layers;
    int64_t fp32_bytes;   /* all tensors as fp32 */
    int64_t file_bytes;   /* the .nnz file, headers included */
} nnz_pack_report;
void nnz_pack_report_free(nnz_pack_report *r);

/* Quantizes and Huffman-codes every weight of m (biases and batch-norm tensors stay fp32)
 * into the .nnz file at path (written atomically); rep (may be NULL) gets the per-tensor sizes. */
nnz_status nnz_pack(const nnz_model *m, const char *path, const nnz_pack_config *cfg, nnz_pack_report *rep);
/* Replaces every weight nnz_pack would quantize with cfg by its quantized value, in place: m then
 * computes what the .nnz file would decode to (bit for bit), and each such tensor holds at most
 * 2^bits distinct nonzero values (its codebook) and the zeros it had (the sparse layout) or none
 * but its codebook's (dense). The starting point of codebook training (nnz_train_model). */
nnz_status nnz_pack_quantize(nnz_model *m, const nnz_pack_config *cfg);
/* Folds every batch norm whose input is a conv read by nothing else into that conv (eval-mode
 * statistics: weights scaled per output channel, a bias added; the batch norm node is gone), into
 * a new model *out; *folded (may be NULL) gets the count. What nnz pack does before quantizing,
 * unless told --keep-batchnorm: the .nnz then holds the folded architecture. The folded model
 * computes the same eval-mode outputs up to float rounding; it is not for further training. */
nnz_status nnz_pack_fold_batchnorm(const nnz_model *m, nnz_model **out, int *folded);
/* Reads a .nnz file's table (checked, CRCs included) into rep, without decoding. */
nnz_status nnz_pack_inspect(const char *path, nnz_pack_report *rep, char **arch_json);
/* Decodes a .nnz file into a model (several tensors on several threads). */
nnz_status nnz_packed_load_model(const char *path, nnz_model **out);
/* true when the file starts with the .nnz magic. */
bool nnz_is_packed_file(const char *path);

/* Writes len bytes to path atomically (temp file + fsync + rename): on any failure the old file,
 * if any, is untouched and no partial file is left. For the CLI's reports (nnz report's SVG). */
nnz_status nnz_write_file(const char *path, const void *data, size_t len);

/* Inference from a .nnz file, decoding each layer's weights just before it runs. */
typedef enum {
    NNZ_RUN_PLAN_FIXED = 0,     /* one batch for every layer: each layer decoded once per batch */
    NNZ_RUN_PLAN_PER_LAYER = 1  /* a super-batch, each layer over it in chunks of its own batch size, each layer
                                   decoded once per super-batch (Vooturi et al. 2017; src/run/run.h) */
} nnz_run_plan_kind;
typedef struct {
    int batch;            /* fixed plan: images per forward pass; 0 = the largest that fits the budget (at most
                             256). per-layer plan: the super-batch; 0 = the planner's choice (at most max_super) */
    size_t memory_budget; /* bytes the process's peak resident memory must stay within (0 = no limit), as
                             nnz_train's: the data set and the compressed file already held, the decoded
                             weights, activations, scratch and the BLAS/OpenMP runtime at the thread count.
                             The batch is the largest that fits (at most 256), or a given batch is refused
                             (NNZ_ERR_NOMEM, naming the largest that fits) */
    int limit;            /* first N test images (0 = all) */
    bool prefetch;        /* decode the next layer on a second thread while this one computes (default true;
                             fixed plan only: a per-layer plan decodes each layer once per super-batch) */
    nnz_run_plan_kind plan;   /* default NNZ_RUN_PLAN_FIXED */
    double latency_budget_ms; /* > 0: the estimated time of one super-batch (fixed plan: one batch) must be at most
                                 this: decoding and computing every layer over all of its images, by the cost
                                 model of src/run/run.h (measured rates); an image's answer is ready that long
                                 after its super-batch starts. 0 = none. The measured worst super-batch is in
                                 the result */
    int max_super;        /* per-layer plan with batch 0: the largest super-batch tried (default 1024) */
    int synthetic;        /* > 0: run on this many random images of the model's input shape (labels random,
                             so the accuracy means nothing) instead of a data set; d may be NULL */
    uint64_t seed;        /* the synthetic images' seed (default 1) */
    float *logits;        /* non-NULL: gets the (images, num_classes) logits */
    bool dry_run;         /* choose the batch or plan (calibrating a per-layer plan's cost model), run nothing */
    void (*note)(const char *line, void *user); /* the plan, one line at a time (NULL: none) */
    void *note_user;
} nnz_run_config;
void nnz_run_config_init(nnz_run_config *cfg);
typedef struct {
    float accuracy;
    int n, batch;
    double seconds, images_per_sec, decode_seconds;
    size_t budget, peak_bytes;       /* measured: the most bytes held at once (weights + activations + scratch) */
    size_t peak_weight_bytes, peak_act_bytes;
    size_t file_bytes;               /* the compressed model, held in memory while it runs */
    size_t memory_estimate;          /* the estimated peak resident bytes at the batch (with or without a budget) */
    size_t peak_resident;            /* the process's measured peak resident bytes at the end (0 if unknown) */
    bool prefetch;
    nnz_run_plan_kind plan;
    int stages;                      /* per-layer plan: stages (1 for the fixed plan) */
    char layer_batches[1024];        /* "conv1:4,conv2:4,...,fc8:64" (fixed plan: every layer at the batch) */
    double est_images_per_sec, est_latency_ms; /* the cost model's (0 when not calibrated) */
    double max_latency_ms;           /* the slowest super-batch (batch) measured */
    double calibrate_seconds;        /* measuring the cost model's rates (not in seconds) */
    uint64_t logits_checksum;        /* FNV-1a of the logits' bytes: equal for bit-identical logits */
} nnz_run_result;
nnz_status nnz_run_packed(const char *path, const nnz_dataset *d, const nnz_run_config *cfg, nnz_run_result *out);
/* ---- DepthShrinker ------------------------------------------------------ */
/* Learns which inverted-residual blocks of a trained model (mbv2-tiny) can lose their
 * activations, removes them, finetunes, and merges each activation-free block into one
 * dense convolution, exactly (docs/DEPTHSHRINKER.md). */
typedef struct {
    float keep;               /* fraction of blocks that keep their activations, in [0,1]: round(keep * blocks)
                                 of them, halves up; default 0.4 */
    int search_epochs;        /* training the gate scores with the weights; default 1, at least 1 */
    int finetune_epochs;      /* training the shrunk model; default 2, 0 = none */
    int batch;                /* default 128 */
    float lr;                 /* peak SGD rate of each phase (cosine to 0); default 0.01 */
    float gate_lr;            /* the gate scores' rate; default 0.02 */
    float momentum;           /* default 0.9 */
    float weight_decay;       /* default 5e-4; biases, batch norm and scores exempt */
    float label_smoothing;    /* default 0.1 */
    float gumbel;             /* fraction of the search ranking blocks by score + Gumbel noise; default 0.5 */
    bool distill;             /* finetune towards the original model's outputs too */
    float distill_weight;     /* with distill: loss = (1-w) cross-entropy + w KL(teacher || student); default 0.5 */
    float warmup;             /* fraction of the search during which every block keeps its activations; default 0 */
    float ramp;               /* then the fraction over which the number of blocks keeping them falls linearly
                                 to round(keep * blocks); default 0 (warmup + ramp <= 1) */
    bool cost_aware;          /* only blocks whose merged dense conv takes fewer FLOPs than the block itself are
                                 candidates (keep counts over them); the others keep their activations and stay
                                 unmerged (nnz_shrink_merge_pays). Default off: the paper's search */
    uint64_t seed;            /* default 42: shuffling and the Gumbel noise */
    int threads;              /* 0 = all cores */
    const char *data_dir;     /* default NNZ_DEFAULT_DATA_DIR */
    int train_limit, test_limit; /* only the first N images (0 = all) */
    int log_every;            /* steps between progress reports; default 50 */
    int expansion;            /* nnz_shrink_train_target: hidden channels = expansion x a conv's inputs; default 6 */
    nnz_progress_fn progress; /* per phase: epoch/epochs count that phase's epochs */
    void *progress_user;
    void (*note)(const char *line, void *user); /* one line per phase and decision; gets progress_user */
} nnz_shrink_config;
void nnz_shrink_config_init(nnz_shrink_config *cfg);

typedef struct {
    int blocks, kept, merged;   /* inverted-residual blocks; those keeping activations; those merged */
    float acc_original;         /* test accuracy of the input checkpoint, in [0,1] */
    float acc_searched;         /* after the search, activations removed, before finetuning */
    float acc_finetuned;        /* after finetuning, not yet merged */
    float acc_merged;           /* the saved model */
    float merge_error;          /* max |merged - unmerged| / max |unmerged| over the first test batch's logits */
    int64_t flops_before, flops_after, params_before, params_after;
    double seconds;
} nnz_shrink_result;

/* Shrinks the checkpoint at `checkpoint` and writes the merged model to out_path (atomically,
 * a normal checkpoint that eval, bench and info load; what was done is in its "shrink" metadata). */
nnz_status nnz_shrink(const char *checkpoint, const char *out_path, const nnz_shrink_config *cfg,
                      nnz_shrink_result *result);
/* Expand-then-Shrink (DepthShrinker+): the same pipeline from random weights. model is a spec
 * (nnz_model_from_spec: a zoo name, an architecture .json or a checkpoint's architecture) with
 * inverted-residual blocks — the expanded network; it is trained with the gates for
 * search_epochs (cfg->warmup / ramp: activations removed progressively), the removed blocks are
 * finetuned without activations for finetune_epochs, merged and saved: the result has the
 * architecture of the model with those blocks merged (the target) and that target's cost. The
 * learning rate is one cosine from cfg->lr (0.1 is a usual from-scratch rate) to 0 over both
 * phases, as one training run of the same epochs. cfg->distill is INVALID_ARG (no teacher). */
nnz_status nnz_shrink_from_scratch(const char *model, const char *out_path, const nnz_shrink_config *cfg,
                                   nnz_shrink_result *result);
/* Expand-then-Shrink to a given target network. target is a spec (as above) of the compact
 * network to deploy; each of its dense kxk convolutions (groups 1, k >= 2, not the first layer,
 * with a bias or a batch norm after it) is trained as an inverted-residual block with
 * activations (1x1 to cfg->expansion x its inputs, relu6, depthwise kxk with the conv's stride
 * and padding, relu6, 1x1 to its outputs, batch norms, a residual where stride 1 keeps the
 * channels), from random weights. The gates remove every such block's activations by the end
 * of the ramp (cfg->keep is not used), the rest runs as nnz_shrink_from_scratch, and the merged
 * model is saved with exactly the target's graph, layer names and parameter shapes (a bias the
 * target's conv lacks goes into its batch norm). cfg->distill and cfg->cost_aware: INVALID_ARG. */
nnz_status nnz_shrink_train_target(const char *target, const char *out_path, const nnz_shrink_config *cfg,
                                   nnz_shrink_result *result);
/* A few lines on what nnz shrink did to a checkpoint (from its metadata); "" when it was not shrunk. */
nnz_status nnz_shrink_describe(const char *checkpoint, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
