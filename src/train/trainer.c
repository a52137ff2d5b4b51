/* The training loop: data, model, optimizer, schedule; progress, log and a
 * checkpoint at each epoch end; exact resume.
 *
 * Exact resume: everything a step computes is a function of (seed, step) and
 * of the state the checkpoint holds (weights, batch-norm buffers, optimizer
 * state and t, the dropout rng counter). The batch of global step k is batch
 * k % steps_per_epoch of epoch k / steps_per_epoch, whose order is recomputed
 * from the seed; so N steps straight and N/2 + save + load + N/2 give the same
 * bits, for the same thread count. What defines the run (model, seed, batch,
 * optimizer, schedule, ...) is taken from the checkpoint's train_config; the
 * caller's epochs apply when non-zero (longer runs stretch the schedule). */
#include "train/train.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    double loss_sum;
    int64_t correct, images;
    double t0;
} interval_acc;

static void acc_reset(interval_acc *a) {
    a->loss_sum = 0;
    a->correct = a->images = 0;
    a->t0 = nnz_now_sec();
}

static void acc_add(interval_acc *a, float loss, int correct, int n) {
    a->loss_sum += (double)loss * n;
    a->correct += correct;
    a->images += n;
}

static float acc_loss(const interval_acc *a) { return a->images ? (float)(a->loss_sum / (double)a->images) : 0.0f; }
static float acc_accuracy(const interval_acc *a) {
    return a->images ? (float)((double)a->correct / (double)a->images) : 0.0f;
}

static nnz_status resolve_prune(nnz_train_config *c) {
    nnz_prune_config *p = &c->prune;
    if ((unsigned)p->kind > NNZ_PRUNE_GMP) return nnz_fail(NNZ_ERR_INVALID_ARG, "unknown pruning %d", (int)p->kind);
    if (p->kind == NNZ_PRUNE_NONE) return NNZ_OK;
    if (c->mask.kind != NNZ_MASK_DENSE)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "--prune %s and --mask %s do not combine: pick one",
                        nnz_prune_kind_name(p->kind), nnz_mask_kind_name(c->mask.kind));
    if ((unsigned)p->anneal > NNZ_ANNEAL_CONSTANT)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "unknown annealing schedule %d", (int)p->anneal);
    if (!(p->alpha0 >= 0.0f && p->alpha0 <= 1.0f))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "--alpha0 must be in [0, 1] (got %g; 0 = STR)", p->alpha0);
    if (p->alpha_off_epoch < 0) return nnz_fail(NNZ_ERR_INVALID_ARG, "--alpha-off-epoch must be >= 0 (0 = never)");
    if (!isfinite(p->threshold_init) || fabsf(p->threshold_init) > 1e5f)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "--threshold-init %g must be a finite number", p->threshold_init);
    if (p->threshold_decay < 0.0f) p->threshold_decay = c->weight_decay; /* the weights' by default */
    if (!isfinite(p->threshold_decay))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "--threshold-decay must be a finite number >= 0");
    if (p->kind == NNZ_PRUNE_GMP && !(p->target_sparsity > 0.0f && p->target_sparsity < 1.0f))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "--prune gmp needs --target-sparsity in (0, 1) (got %g)",
                        p->target_sparsity);
    if (!(p->gmp_begin >= 0.0f && p->gmp_begin <= p->gmp_end && p->gmp_end <= 1.0f))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "GMP's window %g..%g must satisfy 0 <= begin <= end <= 1", p->gmp_begin,
                        p->gmp_end);
    if (p->gmp_every < 0) return nnz_fail(NNZ_ERR_INVALID_ARG, "--gmp-every must be >= 0 (0 = auto)");
    if (p->bn_recalibrate < 0)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "--bn-recalibrate must be >= 0 images (0 = off; got %d)",
                        p->bn_recalibrate);
    return NNZ_OK;
}

static nnz_status resolve_defaults(nnz_train_config *c) {
    if (!c->model || !*c->model) c->model = "mbv2-tiny";
    if (!c->data_dir || !*c->data_dir) c->data_dir = NNZ_DEFAULT_DATA_DIR;
    if (c->lr == 0.0f) c->lr = c->optimizer == NNZ_OPT_ADAMW ? 0.001f : 0.1f;
    if (c->weight_decay < 0.0f) c->weight_decay = c->optimizer == NNZ_OPT_ADAMW ? 0.05f : 5e-4f;
    if (c->log_every <= 0) c->log_every = 50;
    if (c->step_size_epochs == 0) c->step_size_epochs = c->epochs >= 3 ? c->epochs / 3 : 1;
    if (c->optimizer != NNZ_OPT_SGD && c->optimizer != NNZ_OPT_ADAMW)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "unknown optimizer %d (sgd or adamw)", (int)c->optimizer);
    if ((unsigned)c->schedule > NNZ_SCHED_CONSTANT)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "unknown schedule %d (cosine, step, onecycle or constant)",
                        (int)c->schedule);
    if (c->epochs < 1) return nnz_fail(NNZ_ERR_INVALID_ARG, "epochs must be at least 1 (got %d)", c->epochs);
    if (c->batch < 1 || c->batch > 65536)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "batch must be between 1 and 65536 (got %d)", c->batch);
    if (!(c->lr > 0.0f) || !isfinite(c->lr))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "the learning rate must be a positive number (got %g)", c->lr);
    if (!(c->momentum >= 0.0f && c->momentum < 1.0f))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "momentum must be in [0, 1) (got %g)", c->momentum);
    if (!(c->weight_decay >= 0.0f) || !isfinite(c->weight_decay))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "weight decay must be >= 0 (got %g)", c->weight_decay);
    if (!(c->label_smoothing >= 0.0f && c->label_smoothing < 1.0f))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "label smoothing must be in [0, 1) (got %g)", c->label_smoothing);
    nnz_sparse_format sf;
    if (c->sparse_format) NNZ_TRY(nnz_sparse_format_parse(c->sparse_format, &sf));
    if (c->mask.kind < NNZ_MASK_DENSE || c->mask.kind > NNZ_MASK_CHANNEL_BLOCK)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "unknown mask kind %d", (int)c->mask.kind);
    if (c->mask.kind != NNZ_MASK_DENSE && !(c->mask.sparsity > 0.0f && c->mask.sparsity < 1.0f))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "a %s mask needs a sparsity in (0, 1) (got %g)",
                        nnz_mask_kind_name(c->mask.kind), c->mask.sparsity);
    if (!(c->warmup_epochs >= 0.0f && c->warmup_epochs <= (float)c->epochs))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "warm-up (%g epochs) must be between 0 and the number of epochs (%d)",
                        c->warmup_epochs, c->epochs);
    if (c->step_size_epochs < 1)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "the step schedule's step size must be at least 1 epoch");
    if (!(c->step_gamma > 0.0f && c->step_gamma <= 1.0f))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "the step schedule's gamma must be in (0, 1] (got %g)", c->step_gamma);
    if (c->train_limit < 0 || c->test_limit < 0)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "image limits must be >= 0 (0 = all)");
    if (c->threads < 0) return nnz_fail(NNZ_ERR_INVALID_ARG, "threads must be >= 0 (0 = all cores)");
    if (c->checkpoint_every < 0)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "--checkpoint-every must be >= 0 steps (0 = only at epoch ends; got %d)",
                        c->checkpoint_every);
    return resolve_prune(c);
}

typedef struct {
    nnz_train_config cfg;
    char model_name[4096]; /* a resumed run's --model: a zoo name or a file's path */
    char *config_json;
    nnz_dataset train, test;
    bool have_train, have_test;
    nnz_checkpoint ck;
    bool resumed;
    nnz_model *m;
    nnz_optimizer opt;
    nnz_batcher batcher;
    nnz_train_log log;
    float *x, *dlogits;
    uint8_t *y;
    int64_t steps_per_epoch, total_steps;
    int64_t last_saved_step; /* -1 until this run writes a checkpoint */
    nnz_str str;             /* --prune autosparse */
    bool baked;              /* autosparse: the weights are w~ for good (the run's last step) */
    nnz_gmp gmp;             /* --prune gmp */
    nnz_share share;         /* codebook training (nnz_train_model) */
    bool borrowed;           /* nnz_train_model: m is the caller's */
    /* autosparse's sparse execution: per STR layer the format of its last training step (r*64+c,
       0 = dense, -1 = none yet) and its steps on the sparse kernels; decision changes not yet reported */
    int *sparse_fmt;
    int64_t *sparse_steps;
    char notes[2048];
    size_t estimate;         /* --memory-budget: the estimated peak resident bytes */
} trainer;

static void trainer_free(trainer *t) {
    nnz_log_close(&t->log);
    nnz_free(t->x);
    nnz_free(t->y);
    nnz_free(t->dlogits);
    nnz_batcher_free(&t->batcher);
    nnz_optimizer_free(&t->opt);
    nnz_str_free(&t->str);
    nnz_share_free(&t->share);
    nnz_free(t->sparse_fmt);
    nnz_free(t->sparse_steps);
    if (!t->borrowed) nnz_model_free(t->m);
    if (t->resumed) nnz_checkpoint_close(&t->ck);
    if (t->have_train) nnz_dataset_free(&t->train);
    if (t->have_test) nnz_dataset_free(&t->test);
    free(t->config_json);
}

/* After a NaN/Inf: which checkpoint the user has. */
static void kept_text(const trainer *t, char *buf, size_t len) {
    struct stat st;
    if (t->last_saved_step >= 0)
        snprintf(buf, len, "the last good checkpoint '%s' (step %lld) is kept", t->cfg.out_path,
                 (long long)t->last_saved_step);
    else if (t->cfg.out_path && stat(t->cfg.out_path, &st) == 0)
        snprintf(buf, len, "this run saved nothing, '%s' is unchanged", t->cfg.out_path);
    else
        snprintf(buf, len, "no checkpoint was written by this run");
}

/* The first non-finite weight or optimizer state, or -1 when all are finite. */
static int non_finite_param(const nnz_model *m, const nnz_optimizer *opt) {
    for (int i = 0; i < m->n_params; i++) {
        const float *states[3] = {nnz_tensor_f32(&m->params[i].value), NULL, NULL};
        if (i < opt->n) {
            states[1] = opt->state1 ? opt->state1[i] : NULL;
            states[2] = opt->state2 ? opt->state2[i] : NULL;
        }
        const int64_t n = nnz_tensor_numel(&m->params[i].value);
        for (int k = 0; k < 3; k++) {
            if (!states[k]) continue;
            float bad = 0.0f; /* branch-free: NaN or Inf makes x - x NaN */
            for (int64_t j = 0; j < n; j++) bad += states[k][j] - states[k][j];
            if (bad != 0.0f) return i;
        }
    }
    return -1;
}

/* Writes the checkpoint of `step` (atomically: a crash leaves the previous one). An autosparse run's
 * checkpoint at its last step holds w~, the thresholded weights, for good: that save bakes them first
 * (and a run resumed from it does not bake again, see run()). Weights or optimizer state that are no
 * longer finite are never written: the previous checkpoint stays the last good one. */
static nnz_status save(trainer *t, int64_t step) {
    if (t->cfg.prune.kind == NNZ_PRUNE_AUTOSPARSE && step == t->total_steps && !t->baked) {
        nnz_str_bake(&t->str, t->m);
        t->baked = true;
    }
    if (!t->cfg.out_path) return NNZ_OK;
    const int bad = non_finite_param(t->m, &t->opt);
    if (bad >= 0) {
        char kept[4200];
        kept_text(t, kept, sizeof kept);
        return nnz_fail(NNZ_ERR_NUMERIC,
                        "'%s' (or its optimizer state) became NaN or infinite at step %lld and training stopped; %s. "
                        "Lower --lr (now %g), add --warmup, or try --optimizer adamw",
                        t->m->params[bad].name, (long long)step, kept, t->cfg.lr);
    }
    nnz_ckpt_state st = {.step = step, .epoch = (int)(step / t->steps_per_epoch), .seed = t->cfg.seed};
    NNZ_TRY(nnz_checkpoint_save(t->cfg.out_path, t->m, &t->opt, &st, t->config_json));
    t->last_saved_step = step;
    return NNZ_OK;
}

/* --memory-budget, before loading: only the images within the limits are read */
static nnz_status check_data_budget(const nnz_train_config *c) {
    size_t train_bytes, test_bytes, base = nnz_resident_bytes();
    NNZ_TRY(nnz_dataset_bytes(c->data_dir, true, c->train_limit, &train_bytes, NULL));
    NNZ_TRY(nnz_dataset_bytes(c->data_dir, false, c->test_limit, &test_bytes, NULL));
    size_t need = base + train_bytes + test_bytes + NNZ_DATA_LOAD_SLACK;
    if (need <= c->memory_budget) return NNZ_OK;
    return nnz_fail(NNZ_ERR_NOMEM,
                    "the data set alone does not fit --memory-budget %zu: loading '%s' takes the process to about "
                    "%zu bytes (%zu already resident, the training split %zu, the test split %zu; --train-limit "
                    "and --test-limit read fewer images); raise --memory-budget to at least %zu",
                    c->memory_budget, c->data_dir, need, base, train_bytes, test_bytes, need);
}

/* --memory-budget: the estimated peak at the run's batch must fit; the activation arena is capped */
static nnz_status fit_budget(trainer *t) {
    const nnz_train_config *c = &t->cfg;
    nnz_budget_shape sh = {
        .train_n = t->train.n,
        .eval_n = t->test.n,
        .train = true,
        .sparse = c->mask.kind != NNZ_MASK_DENSE || c->prune.kind != NNZ_PRUNE_NONE || c->codebooks,
        .pruning = c->prune.kind == NNZ_PRUNE_GMP,
    };
    nnz_mem_need need;
    NNZ_TRY(nnz_budget_need(t->m, c->batch, &sh, &need));
    const size_t peak = nnz_peak_resident_bytes(); /* loading may have been the peak */
    t->estimate = need.total > peak ? need.total : peak;
    if (peak > c->memory_budget)
        return nnz_fail(NNZ_ERR_NOMEM,
                        "loading the data set and building the model already took the process to %zu bytes, over "
                        "--memory-budget %zu; raise --memory-budget",
                        peak, c->memory_budget);
    if (need.total > c->memory_budget) {
        char what[512];
        nnz_budget_describe(&need, what, sizeof what);
        /* the batch named for the next run leaves NNZ_BUDGET_NAMED_SLACK free: that process measures
         * its resident memory a few kilobytes apart from this one */
        int fits = 0;
        if (c->memory_budget > NNZ_BUDGET_NAMED_SLACK)
            NNZ_TRY(nnz_budget_largest_batch(t->m, c->batch - 1, c->memory_budget - NNZ_BUDGET_NAMED_SLACK, &sh, &fits));
        if (fits < 1) NNZ_TRY(nnz_budget_largest_batch(t->m, c->batch - 1, c->memory_budget, &sh, &fits));
        if (fits < 1)
            return nnz_fail(NNZ_ERR_NOMEM,
                            "not even --batch 1 fits --memory-budget %zu: batch %d needs an estimated %s; raise "
                            "--memory-budget, or use a smaller model or fewer --threads",
                            c->memory_budget, c->batch, what);
        return nnz_fail(NNZ_ERR_NOMEM,
                        "--batch %d does not fit --memory-budget %zu: it needs an estimated %s. The largest --batch "
                        "that fits is %d; %s (training never changes the batch by itself: that would change the "
                        "numerics)",
                        c->batch, c->memory_budget, what, fits,
                        t->resumed ? "a resumed run keeps its checkpoint's batch, so raise --memory-budget"
                                   : "pass it, or raise --memory-budget");
    }
    /* the activations may use what the rest of the estimate leaves, no more */
    nnz_model_set_activation_limit(t->m, c->memory_budget - (need.total - need.activations));
    return NNZ_OK;
}

static nnz_status check_model_fits_data(const nnz_model *m, const nnz_dataset *d, const char *data_dir) {
    if (m->in_h != d->h || m->in_w != d->w || m->in_c != d->c || m->num_classes < d->num_classes)
        return nnz_fail(NNZ_ERR_INVALID_ARG,
                        "the checkpoint's model takes %dx%dx%d images and %d classes, but the data in '%s' has "
                        "%dx%dx%d images and %d classes",
                        m->in_h, m->in_w, m->in_c, m->num_classes, data_dir, d->h, d->w, d->c, d->num_classes);
    return NNZ_OK;
}

/* A run started from another checkpoint's weights is named after that checkpoint's model. */
static nnz_status name_from_init(trainer *t) {
    nnz_train_config *c = &t->cfg;
    nnz_checkpoint ck;
    NNZ_TRY(nnz_checkpoint_open(c->init_path, &ck));
    nnz_status s = NNZ_OK;
    snprintf(t->model_name, sizeof t->model_name, "%s", "custom");
    if (ck.train_config_json) {
        nnz_train_config theirs = {0};
        s = nnz_train_config_from_json(ck.train_config_json, &theirs, t->model_name, sizeof t->model_name);
    }
    nnz_checkpoint_close(&ck);
    c->model = t->model_name;
    return s;
}

/* m: nnz_train_model's model (trained in place), or NULL (the zoo, --init-from or --resume) */
static nnz_status setup(trainer *t, const nnz_train_config *cfg_in, nnz_model *m) {
    t->cfg = *cfg_in;
    nnz_train_config *c = &t->cfg;
    if (c->init_path && c->resume_path)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "--init-from starts a new run and --resume continues one: pick one");
    if (m) {
        if (c->resume_path || c->init_path || c->out_path || c->checkpoint_every)
            return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_train_model trains a model in memory: no resume_path, "
                                                 "init_path, out_path or checkpoint_every");
        if (c->mask.kind != NNZ_MASK_DENSE || c->prune.kind != NNZ_PRUNE_NONE)
            return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_train_model: masks and pruning are nnz_train's (a new model)");
        if (c->codebooks) {
            if (c->weight_decay < 0.0f) c->weight_decay = 0.0f;
            if (c->weight_decay != 0.0f)
                return nnz_fail(NNZ_ERR_INVALID_ARG,
                                "codebook training takes no weight decay (got %g): it would move the frozen parameters",
                                c->weight_decay);
            if (c->lr == 0.0f) c->lr = NNZ_CODEBOOK_DEFAULT_LR;
        }
    } else if (c->codebooks) {
        return nnz_fail(NNZ_ERR_INVALID_ARG, "codebook training starts from a quantized model: use nnz_train_model");
    }
    if (c->resume_path) {
        NNZ_TRY(nnz_checkpoint_open(c->resume_path, &t->ck));
        t->resumed = true;
        if (!t->ck.train_config_json || !t->ck.optimizer_json)
            return nnz_fail(NNZ_ERR_FORMAT,
                            "'%s' holds a model but no training state (saved without optimizer); it cannot be "
                            "resumed: start a new run",
                            c->resume_path);
        NNZ_TRY(nnz_train_config_from_json(t->ck.train_config_json, c, t->model_name, sizeof t->model_name));
    } else if (c->init_path) {
        NNZ_TRY(name_from_init(t));
    }
    NNZ_TRY(resolve_defaults(c));
    NNZ_TRY(nnz_check_output_path(c->out_path));
    NNZ_TRY(nnz_train_config_to_json(c, &t->config_json));

    if (c->memory_budget) NNZ_TRY(check_data_budget(c));
    /* only the first train_limit / test_limit images are ever used: hold no more */
    NNZ_TRY(nnz_dataset_load_first(c->data_dir, true, c->train_limit, &t->train));
    t->have_train = true;
    NNZ_TRY(nnz_dataset_load_first(c->data_dir, false, c->test_limit, &t->test));
    t->have_test = true;
    const nnz_dataset *d = &t->train;

    if (m) {
        t->m = m;
        t->borrowed = true;
        if (!m->finalized) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_train_model: the model is not finalized");
        NNZ_TRY(check_model_fits_data(m, d, c->data_dir));
    } else if (t->resumed) {
        NNZ_TRY(nnz_checkpoint_build_model(&t->ck, &t->m));
        NNZ_TRY(check_model_fits_data(t->m, d, c->data_dir));
    } else if (c->init_path) {
        NNZ_TRY(nnz_checkpoint_load_model(c->init_path, &t->m));
        NNZ_TRY(check_model_fits_data(t->m, d, c->data_dir));
        NNZ_TRY(nnz_model_apply_magnitude_masks(t->m, &c->mask, c->seed ^ NNZ_MASK_SEED_SALT, NULL, 0));
    } else {
        NNZ_TRY(nnz_model_from_spec(c->model, d->h, d->w, d->c, d->num_classes, c->seed, &t->m));
        NNZ_TRY(nnz_model_apply_masks(t->m, &c->mask, c->seed ^ NNZ_MASK_SEED_SALT, NULL, 0));
    }
    /* a resumed masked or GMP run: its zeros are in the checkpoint's weights, keep them */
    nnz_model_set_grad_mask(t->m, c->mask.kind != NNZ_MASK_DENSE || c->prune.kind == NNZ_PRUNE_GMP || c->codebooks);
    if (c->codebooks) NNZ_TRY(nnz_share_init(&t->share, t->m)); /* zeros stay zero: the grad mask above */
    if (c->prune.kind == NNZ_PRUNE_AUTOSPARSE) {
        const int first = t->m->n_params;
        NNZ_TRY(nnz_str_init(&t->str, t->m, c->prune.per_channel, c->prune.threshold_init, c->prune.threshold_decay));
        if (t->resumed) NNZ_TRY(nnz_checkpoint_load_params(&t->ck, t->m, first)); /* the learned thresholds */
        /* w~'s zeros move every step: each training forward replans the layers from them and runs the
           ones the planner finds faster on the sparse kernels (docs/AUTOSPARSE.md, "Sparse execution") */
        t->m->train_sparse = true;
        t->sparse_fmt = nnz_alloc(sizeof(int) * (size_t)t->str.n, "the sparse decisions");
        t->sparse_steps = nnz_alloc(sizeof(int64_t) * (size_t)t->str.n, "the sparse decisions");
        if (!t->sparse_fmt || !t->sparse_steps) return NNZ_ERR_NOMEM;
        for (int l = 0; l < t->str.n; l++) t->sparse_fmt[l] = -1, t->sparse_steps[l] = 0;
    }
    if (c->sparse_format) NNZ_TRY(nnz_model_set_sparse_format(t->m, c->sparse_format));
    NNZ_TRY(nnz_model_set_precision(t->m, c->precision));
    NNZ_TRY(nnz_model_set_bf16_activations(t->m, c->bf16_activations));
    NNZ_TRY(nnz_optimizer_init(&t->opt, t->m, c->optimizer, c->momentum, c->nesterov, c->weight_decay,
                               c->decay_bn_and_bias));
    if (t->resumed) NNZ_TRY(nnz_checkpoint_load_optimizer(&t->ck, t->m, &t->opt));
    if (c->memory_budget) NNZ_TRY(fit_budget(t));
    NNZ_TRY(nnz_model_reserve(t->m, c->batch));

    NNZ_TRY(nnz_batcher_init(&t->batcher, d, c->train_limit, c->batch, true, c->augment, c->seed));
    t->steps_per_epoch = nnz_batcher_train_steps(&t->batcher);
    t->total_steps = t->steps_per_epoch * c->epochs;
    if (c->prune.kind == NNZ_PRUNE_GMP)
        NNZ_TRY(nnz_gmp_init(&t->gmp, c->prune.target_sparsity, c->prune.gmp_begin, c->prune.gmp_end,
                             c->prune.gmp_every, t->total_steps));

    size_t img = (size_t)d->h * d->w * d->c;
    t->x = nnz_alloc(sizeof(float) * img * (size_t)c->batch, "the training batch");
    t->y = nnz_alloc((size_t)c->batch, "the training labels");
    t->dlogits = nnz_alloc(sizeof(float) * (size_t)c->batch * (size_t)t->m->num_classes, "the logits' gradient");
    if (!t->x || !t->y || !t->dlogits) return NNZ_ERR_NOMEM;
    return nnz_log_open(&t->log, c->log_path, t->resumed);
}

/* Gradient Annealing's alpha for step (docs/AUTOSPARSE.md): the schedule over t/T = step / total,
 * 0 once alpha_off_epoch epochs are done */
static float alpha_at(const nnz_train_config *c, int64_t step, int64_t total, int64_t spe) {
    if (c->prune.alpha_off_epoch > 0 && step >= (int64_t)c->prune.alpha_off_epoch * spe) return 0.0f;
    return nnz_anneal_alpha(c->prune.anneal, c->prune.alpha0, (double)step / (double)total);
}

/* Appends a line to what the next progress report shows (cut when the buffer is full). */
__attribute__((format(printf, 2, 3))) static void add_note(trainer *t, const char *fmt, ...) {
    const size_t k = strlen(t->notes);
    if (k + 1 >= sizeof t->notes) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->notes + k, sizeof t->notes - k, fmt, ap);
    va_end(ap);
}

/* After an autosparse training forward (which planned the layers on w~): each STR layer's decision
 * is logged when it changes (the --log file and the next progress report), and counted. */
static nnz_status note_sparse_decisions(trainer *t, int64_t step) {
    const nnz_model *m = t->m;
    if (!m->sparse_plan) return NNZ_OK;
    for (int l = 0; l < t->str.n; l++) {
        const nnz_sparse_plan *p = &m->sparse_plan[t->str.node[l]];
        const int fmt = (p->r * 64 + p->c) * 2 + p->winograd;
        if (fmt) t->sparse_steps[l]++;
        if (fmt == t->sparse_fmt[l]) continue;
        char fname[24];
        nnz_sparse_plan_format_name(p, fname, sizeof fname);
        const char *name = m->nodes[t->str.node[l]].name;
        NNZ_TRY(nnz_log_sparse(&t->log, step, name, 1.0 - p->density, fname, p->why));
        add_note(t, "step %lld: %s -> %s (%.1f%% zeros): %s\n", (long long)step + 1, name, fname,
                 100.0 * (1.0 - p->density), p->why);
        t->sparse_fmt[l] = fmt;
    }
    return NNZ_OK;
}

/* The end of a pruned run: the batch norms' running statistics become the plain average of the batch
 * statistics over the first `images` training images (file order, no augmentation), computed with the
 * final weights (an autosparse run's w~, baked here). Why: the running averages (momentum 0.1) trail
 * weights that change fast, and pruning changes them fast until the end (AutoSparse's thresholds keep
 * rising, soft-thresholding every kept weight): on vgg8 they ended 2-4x the true variances and the
 * model, 71% right in training, evaluated at 10%. Counted as forward FLOPs in the run's training FLOPs. */
static nnz_status recalibrate_batchnorm(trainer *t, nnz_train_result *res) {
    const nnz_train_config *c = &t->cfg;
    nnz_model *m = t->m;
    int nbn = 0;
    for (int i = 0; i < m->n_nodes; i++) nbn += m->nodes[i].op == NNZ_OP_BATCHNORM;
    if (c->prune.bn_recalibrate <= 0 || nbn == 0) return NNZ_OK;
    if (c->prune.kind == NNZ_PRUNE_AUTOSPARSE && !t->baked) {
        nnz_str_bake(&t->str, m); /* the weights the statistics describe are the ones saved and evaluated */
        t->baked = true;
    }
    float *momentum = malloc((size_t)m->n_nodes * sizeof *momentum);
    if (!momentum) return nnz_fail(NNZ_ERR_NOMEM, "out of memory recalibrating the batch norms");
    for (int i = 0; i < m->n_nodes; i++) momentum[i] = m->nodes[i].momentum;
    nnz_batcher b;
    nnz_status s = nnz_batcher_init(&b, &t->train, c->prune.bn_recalibrate, c->batch, false, false, c->seed);
    double dense = 0;
    const double flops = nnz_model_sparse_flops(m, NULL, &dense);
    int64_t seen = 0;
    for (int64_t i = 0; s == NNZ_OK && i < nnz_batcher_eval_steps(&b); i++) {
        const int n = nnz_batcher_fill(&b, i, t->x, t->y);
        for (int k = 0; k < m->n_nodes; k++) /* the running value becomes the mean over the batches so far */
            if (m->nodes[k].op == NNZ_OP_BATCHNORM) m->nodes[k].momentum = (float)((double)n / (double)(seen + n));
        s = nnz_model_forward(m, t->x, n, true);
        seen += n;
    }
    for (int i = 0; i < m->n_nodes; i++) m->nodes[i].momentum = momentum[i];
    free(momentum);
    nnz_batcher_free(&b);
    if (s != NNZ_OK) return s;
    res->train_flops += flops * (double)seen;
    res->train_flops_dense += dense * (double)seen;
    add_note(t, "batch norm: running statistics recomputed on %lld training images with the final weights\n",
             (long long)seen);
    return NNZ_OK;
}

/* test accuracy; an autosparse run is evaluated on w~ */
static nnz_status evaluate(trainer *t, nnz_eval_result *er) {
    const bool str = t->cfg.prune.kind == NNZ_PRUNE_AUTOSPARSE && !t->baked;
    if (str) nnz_str_apply(&t->str, t->m);
    nnz_status s = nnz_evaluate(t->m, &t->test, t->cfg.batch, t->cfg.test_limit, er);
    if (str) nnz_str_restore(&t->str, t->m);
    return s;
}

/* fraction of zero weights over the layers pruning acts on */
static double pruned_sparsity(const nnz_model *m) {
    int node[1024];
    const int n = nnz_prune_layers(m, node, 1024);
    int64_t zeros = 0, total = 0;
    for (int l = 0; l < n && l < 1024; l++) {
        const nnz_param *p = &m->params[m->nodes[node[l]].weight];
        const float *W = nnz_tensor_f32(&p->value);
        for (int64_t i = 0; i < nnz_tensor_numel(&p->value); i++) zeros += W[i] == 0.0f;
        total += nnz_tensor_numel(&p->value);
    }
    return total ? (double)zeros / (double)total : 0.0;
}

static nnz_status run(trainer *t, nnz_train_result *res) {
    const nnz_train_config *c = &t->cfg;
    nnz_model *m = t->m;
    const int64_t spe = t->steps_per_epoch;
    int64_t step = t->resumed ? t->ck.state.step : 0;
    if (step > t->total_steps)
        return nnz_fail(NNZ_ERR_INVALID_ARG,
                        "the checkpoint is at step %lld, past the end of a %d-epoch run (%lld steps); pass more "
                        "--epochs to continue it",
                        (long long)step, c->epochs, (long long)t->total_steps);
    nnz_schedule sched = {
        .kind = c->schedule,
        .base_lr = c->lr,
        .total_steps = t->total_steps,
        .warmup_steps = (int64_t)llround((double)c->warmup_epochs * (double)spe),
        .step_size = (int64_t)c->step_size_epochs * spe,
        .gamma = c->step_gamma,
        .min_lr = 0.0f,
    };
    const int64_t start_step = step;
    /* an autosparse checkpoint at the run's last step already holds w~ (save() baked it) */
    if (c->prune.kind == NNZ_PRUNE_AUTOSPARSE && step == t->total_steps) t->baked = true;
    const double t_start = nnz_now_sec();
    interval_acc iv, ep;
    acc_reset(&iv);
    acc_reset(&ep);
    int64_t run_images = 0;
    float lr = nnz_schedule_lr(&sched, step < t->total_steps ? step : t->total_steps - 1);
    float test_acc = -1.0f;
    nnz_progress p;

    while (step < t->total_steps) {
        const int epoch = (int)(step / spe);
        nnz_batcher_set_epoch(&t->batcher, epoch);
        int n = nnz_batcher_fill(&t->batcher, step % spe, t->x, t->y);
        if (c->prune.kind == NNZ_PRUNE_GMP) NNZ_TRY(nnz_gmp_step(&t->gmp, m, &t->opt, step));
        if (c->prune.kind == NNZ_PRUNE_AUTOSPARSE) {
            nnz_str_apply(&t->str, m); /* the layers read w~ */
            /* Gradient Annealing: while alpha > 0 every weight, pruned or not, needs its gradient */
            m->dense_wgrad = alpha_at(c, step, t->total_steps, spe) > 0;
        }
        {
            /* the weights hold what this step computes with (w~, GMP's zeros); GA's backward-weight is dense */
            const bool dense_wgrad = c->prune.kind == NNZ_PRUNE_AUTOSPARSE && alpha_at(c, step, t->total_steps, spe) > 0;
            double dense = 0;
            res->train_flops += nnz_train_step_flops(m, dense_wgrad, &dense) * n;
            res->train_flops_dense += dense * n;
        }
        NNZ_TRY(nnz_model_forward(m, t->x, n, true));
        if (c->prune.kind == NNZ_PRUNE_AUTOSPARSE) NNZ_TRY(note_sparse_decisions(t, step));
        int correct = 0;
        float loss = nnz_softmax_xent(n, m->num_classes, nnz_model_output(m), t->y, c->label_smoothing, t->dlogits,
                                      &correct);
        if (!isfinite(loss)) {
            char kept[4200];
            kept_text(t, kept, sizeof kept);
            return nnz_fail(NNZ_ERR_NUMERIC,
                            "the training loss became %s at step %lld (epoch %d) and training stopped; %s. Lower "
                            "--lr (now %g), add --warmup, or try --optimizer adamw",
                            isnan(loss) ? "NaN" : "infinite", (long long)step + 1, epoch + 1, kept, c->lr);
        }
        nnz_model_zero_grad(m);
        NNZ_TRY(nnz_model_backward(m, t->x, n, t->dlogits));
        if (c->prune.kind == NNZ_PRUNE_AUTOSPARSE) nnz_str_backward(&t->str, m, alpha_at(c, step, t->total_steps, spe));
        if (c->codebooks) nnz_share_backward(&t->share, m); /* each shared value's gradient: its weights' sum */
        lr = nnz_schedule_lr(&sched, step);
        nnz_optimizer_step(&t->opt, m, lr);
        if (c->codebooks) nnz_share_sync(&t->share, m); /* the copies of a value stay one value */
        step++;
        run_images += n;
        if (step == t->total_steps && c->prune.kind != NNZ_PRUNE_NONE) NNZ_TRY(recalibrate_batchnorm(t, res));
        acc_add(&iv, loss, correct, n);
        acc_add(&ep, loss, correct, n);

        const bool log_now = step % c->log_every == 0;
        const bool epoch_end = step % spe == 0;
        const bool save_now = c->checkpoint_every > 0 && step % c->checkpoint_every == 0;
        if (!log_now && !epoch_end && !save_now) continue;
        double now = nnz_now_sec(), elapsed = now - t_start;
        memset(&p, 0, sizeof p);
        p.epoch = epoch + 1;
        p.epochs = c->epochs;
        p.step = step;
        p.steps_total = t->total_steps;
        p.images_seen = step * (int64_t)c->batch;
        p.lr = lr;
        p.elapsed_sec = elapsed;
        p.eta_sec = step > start_step ? elapsed / (double)(step - start_step) * (double)(t->total_steps - step) : 0;
        p.test_accuracy = -1.0f;
        p.note = t->notes[0] ? t->notes : NULL;
        bool go_on = true;
        if (log_now) {
            p.loss = acc_loss(&iv);
            p.accuracy = acc_accuracy(&iv);
            p.images_per_sec = now > iv.t0 ? (double)iv.images / (now - iv.t0) : 0;
            NNZ_TRY(nnz_log_step(&t->log, &p));
            if (c->progress) go_on = c->progress(&p, c->progress_user);
            p.note = NULL;
            t->notes[0] = '\0';
            acc_reset(&iv);
        }
        if (epoch_end) {
            nnz_eval_result er;
            NNZ_TRY(evaluate(t, &er));
            test_acc = er.accuracy;
            p.epoch_end = true;
            p.test_accuracy = test_acc;
            p.loss = acc_loss(&ep);
            p.accuracy = acc_accuracy(&ep);
            p.images_per_sec = elapsed > 0 ? (double)run_images / elapsed : 0;
            res->train_loss = p.loss;
            res->train_accuracy = p.accuracy;
            NNZ_TRY(nnz_log_epoch(&t->log, &p, p.loss, p.accuracy));
        }
        /* at each epoch end, every --checkpoint-every steps, and when stopped (Ctrl-C) */
        if (epoch_end || save_now || !go_on) NNZ_TRY(save(t, step));
        if (epoch_end) {
            if (c->progress && go_on) go_on = c->progress(&p, c->progress_user);
            t->notes[0] = '\0';
            acc_reset(&ep);
        }
        if (!go_on) {
            res->steps = step;
            return nnz_fail(NNZ_ERR_INTERRUPTED, "training stopped at step %lld of %lld%s%s%s", (long long)step,
                            (long long)t->total_steps, c->out_path ? "; resume with --resume " : "",
                            c->out_path ? c->out_path : "", c->out_path ? "" : " (no checkpoint: no output path)");
        }
    }
    if (test_acc < 0) { /* resumed at the very end: nothing to train, still report */
        nnz_eval_result er;
        NNZ_TRY(evaluate(t, &er));
        test_acc = er.accuracy;
    }
    /* an autosparse checkpoint gets w~ (zeros the sparse kernels run at eval; the thresholds stay in it):
     * the last epoch end's save baked it, or the run was resumed from that checkpoint */
    if (c->prune.kind == NNZ_PRUNE_AUTOSPARSE && !t->baked) NNZ_TRY(save(t, step));
    res->sparsity = pruned_sparsity(m);
    res->prune = c->prune.kind;
    res->infer_flops = nnz_model_sparse_flops(m, NULL, &res->infer_flops_dense);
    if (t->sparse_steps) {
        for (int l = 0; l < t->str.n; l++) res->sparse_layer_steps += t->sparse_steps[l];
        res->layer_steps = (int64_t)t->str.n * (step - start_step);
    }
    double seconds = nnz_now_sec() - t_start;
    res->test_accuracy = test_acc;
    res->seconds = seconds;
    res->steps = step;
    res->train_images_per_sec = seconds > 0 ? (double)run_images / seconds : 0;
    res->memory_estimate = t->estimate;
    res->peak_resident = nnz_peak_resident_bytes();
    return NNZ_OK;
}

/* One run: m NULL builds the model from cfg (nnz_train); else trains the caller's model, whose
 * gradient-mask setting is restored afterwards (nnz_train_model). */
static nnz_status train_with(nnz_model *m, const nnz_train_config *cfg, nnz_train_result *result) {
    nnz_train_result local;
    if (!result) result = &local;
    memset(result, 0, sizeof *result);
    const int old_threads = nnz_get_threads();
    trainer t;
    memset(&t, 0, sizeof t);
    t.last_saved_step = -1;
    nnz_set_threads(cfg->threads);
    const bool grad_mask = m && m->grad_mask;
    nnz_status s = setup(&t, cfg, m);
    if (s == NNZ_OK) s = run(&t, result);
    trainer_free(&t);
    if (m) nnz_model_set_grad_mask(m, grad_mask);
    nnz_set_threads(old_threads);
    return s;
}

nnz_status nnz_train(const nnz_train_config *cfg, nnz_train_result *result) {
    if (!cfg) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_train: no configuration given");
    return train_with(NULL, cfg, result);
}

nnz_status nnz_train_model(nnz_model *m, const nnz_train_config *cfg, nnz_train_result *result) {
    if (!cfg || !m) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_train_model: a model and a configuration are needed");
    return train_with(m, cfg, result);
}
