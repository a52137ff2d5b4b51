/* nnz_shrink: search (gates trained with the weights), remove, finetune (optionally
 * distilled from the original), merge, save. One SGD run per phase, cosine from
 * cfg->lr to 0. Data order: the search uses epochs 0..S-1 of the seed's shuffles,
 * the finetuning S..S+F-1, so the two phases see different orders.
 *
 * nnz_shrink_from_scratch (Expand-then-Shrink) is the same pipeline on a freshly
 * initialised model: the "search" is its training from random weights (all
 * activations on during cfg->warmup, then the number of blocks keeping them falls
 * to k over cfg->ramp), and one cosine runs over search and finetuning together,
 * as one training run of S+F epochs would.
 *
 * nnz_shrink_train_target (Expand-then-Shrink to a given target) expands the target's dense
 * convs into inverted-residual blocks (nnz_shrink_expand), runs that same pipeline with all of
 * them to be merged (k = 0: the schedule removes their activations one by one), and returns
 * the merge to the target's own graph (nnz_shrink_to_target). */
#include "shrink/shrink.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void nnz_shrink_config_init(nnz_shrink_config *c) {
    memset(c, 0, sizeof *c);
    c->keep = 0.4f;
    c->search_epochs = 1;
    c->finetune_epochs = 2;
    c->batch = 128;
    c->lr = 0.01f;
    c->gate_lr = 0.02f;
    c->momentum = 0.9f;
    c->weight_decay = 5e-4f;
    c->label_smoothing = 0.1f;
    c->gumbel = 0.5f;
    c->distill_weight = 0.5f;
    c->warmup = 0.0f;
    c->ramp = 0.0f;
    c->seed = 42;
    c->data_dir = NNZ_DEFAULT_DATA_DIR;
    c->log_every = 50;
    c->expansion = 6;
}

static nnz_status check_config(const nnz_shrink_config *c) {
    if (!(c->keep >= 0.0f && c->keep <= 1.0f))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "the keep ratio must be in [0, 1] (got %g)", c->keep);
    if (c->search_epochs < 1 || c->finetune_epochs < 0)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "search epochs must be >= 1 and finetune epochs >= 0 (got %d, %d)",
                        c->search_epochs, c->finetune_epochs);
    if (c->batch < 1 || c->batch > 65536)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "batch must be between 1 and 65536 (got %d)", c->batch);
    if (!(c->lr > 0.0f) || !isfinite(c->lr) || !(c->gate_lr >= 0.0f) || !isfinite(c->gate_lr))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "learning rates must be positive numbers (got %g, gate %g)", c->lr,
                        c->gate_lr);
    if (!(c->momentum >= 0.0f && c->momentum < 1.0f) || !(c->weight_decay >= 0.0f) || !isfinite(c->weight_decay))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "momentum must be in [0, 1) and weight decay >= 0");
    if (!(c->label_smoothing >= 0.0f && c->label_smoothing < 1.0f) || !(c->gumbel >= 0.0f && c->gumbel <= 1.0f) ||
        !(c->distill_weight >= 0.0f && c->distill_weight <= 1.0f))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "label smoothing must be in [0, 1), the Gumbel fraction and the "
                        "distillation weight in [0, 1]");
    if (!(c->warmup >= 0.0f && c->ramp >= 0.0f && c->warmup + c->ramp <= 1.0f))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "the warm-up and ramp fractions must be >= 0 with warm-up + ramp <= 1 "
                        "(got %g + %g)", c->warmup, c->ramp);
    if (c->train_limit < 0 || c->test_limit < 0 || c->threads < 0)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "image limits and threads must be >= 0 (0 = all)");
    return NNZ_OK;
}

typedef struct {
    const nnz_shrink_config *cfg;
    nnz_dataset train, test;
    bool have_train, have_test;
    nnz_batcher batcher;
    float *x, *dlogits, *teacher_logits;
    uint8_t *y;
    int64_t steps_per_epoch;
    int epochs_done; /* epochs of the data order used so far */
    bool one_schedule; /* from scratch: one cosine over all phases (sched_total steps), not one per phase */
    int64_t sched_total;
    nnz_ir_block *blocks;
    int n_blocks;
    bool to_target; /* Expand-then-Shrink to a given target: expand it, merge every expanded block back */
} shrink_ctx;

__attribute__((format(printf, 2, 3)))
static void note(const shrink_ctx *c, const char *fmt, ...) {
    if (!c->cfg->note) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    c->cfg->note(line, c->cfg->progress_user);
}

/* softmax of row z (C) into p, in double for the difference below */
static void softmax_row(int C, const float *z, double *p) {
    double mx = z[0], sum = 0;
    for (int j = 1; j < C; j++) mx = z[j] > mx ? z[j] : mx;
    for (int j = 0; j < C; j++) sum += (p[j] = exp((double)z[j] - mx));
    for (int j = 0; j < C; j++) p[j] /= sum;
}

/* Mixes the distillation term into the cross-entropy's loss and dlogits (both of the mean over n):
 * loss = (1-w) ce + w KL(teacher || student), d/dz of the KL = (p_student - p_teacher) / n. */
static float distill(int n, int C, const float *z, const float *t, float w, float ce, float *dlogits) {
    double kl = 0, ps[1024], pt[1024];
    for (int i = 0; i < n; i++) {
        softmax_row(C, z + (size_t)i * C, ps);
        softmax_row(C, t + (size_t)i * C, pt);
        for (int j = 0; j < C; j++) {
            if (pt[j] > 0) kl += pt[j] * (log(pt[j]) - log(ps[j] > 1e-300 ? ps[j] : 1e-300));
            float *d = &dlogits[(size_t)i * C + j];
            *d = (float)((1.0 - w) * *d + w * (ps[j] - pt[j]) / n);
        }
    }
    return (float)((1.0 - w) * ce + w * kl / n);
}

/* One training phase of `epochs` epochs over m. gates: the search (select before each step,
 * score gradients after backward); teacher: distillation. */
static nnz_status run_phase(shrink_ctx *c, nnz_model *m, const char *phase, int epochs, nnz_gates *gates,
                            nnz_model *teacher, float *test_accuracy) {
    const nnz_shrink_config *cfg = c->cfg;
    nnz_optimizer opt;
    NNZ_TRY(nnz_optimizer_init(&opt, m, NNZ_OPT_SGD, cfg->momentum, false, cfg->weight_decay, false));
    nnz_status s = nnz_model_reserve(m, cfg->batch);
    const int64_t spe = c->steps_per_epoch, total = spe * epochs;
    const int64_t noisy_steps = gates ? (int64_t)llround((double)cfg->gumbel * (double)total) : 0;
    /* the gate schedule: every block keeps its activations for warm_steps, then the number kept
     * falls linearly from all to gates->k by warm_steps + ramp_steps (both 0: k from the start) */
    const int64_t warm_steps = gates ? (int64_t)llround((double)cfg->warmup * (double)total) : 0;
    const int64_t ramp_steps = gates ? (int64_t)llround((double)cfg->ramp * (double)total) : 0;
    const int k_final = gates ? gates->k : 0;
    const int64_t sched_offset = c->one_schedule ? (int64_t)c->epochs_done * spe : 0;
    nnz_schedule sched = {.kind = NNZ_SCHED_COSINE, .base_lr = cfg->lr,
                          .total_steps = c->one_schedule ? c->sched_total : total};
    nnz_rng noise = nnz_rng_make(cfg->seed, 0x47554D42454Cull); /* "GUMBEL" */
    const float gate_scale = cfg->gate_lr / cfg->lr; /* SGD is linear in the gradient: the scores' own rate */
    const int C = m->num_classes;
    double t0 = nnz_now_sec(), iv_t0 = t0, loss_sum = 0, ep_loss = 0;
    int64_t iv_correct = 0, iv_images = 0, ep_correct = 0, ep_images = 0;
    for (int64_t step = 0; s == NNZ_OK && step < total; step++) {
        const int epoch = (int)(step / spe);
        nnz_batcher_set_epoch(&c->batcher, c->epochs_done + epoch);
        int n = nnz_batcher_fill(&c->batcher, step % spe, c->x, c->y);
        if (gates) {
            gates->k = nnz_gates_scheduled_k(gates->n, k_final, warm_steps, ramp_steps, step);
            nnz_gates_select(gates, m, &noise, step < noisy_steps ? 1.0f : 0.0f);
        }
        if (teacher) {
            if ((s = nnz_model_forward(teacher, c->x, n, false)) != NNZ_OK) break;
            memcpy(c->teacher_logits, nnz_model_output(teacher), sizeof(float) * (size_t)n * (size_t)C);
        }
        if ((s = nnz_model_forward(m, c->x, n, true)) != NNZ_OK) break;
        int correct = 0;
        const float *z = nnz_model_output(m);
        float loss = nnz_softmax_xent(n, C, z, c->y, cfg->label_smoothing, c->dlogits, &correct);
        if (teacher) loss = distill(n, C, z, c->teacher_logits, cfg->distill_weight, loss, c->dlogits);
        if (!isfinite(loss)) {
            s = nnz_fail(NNZ_ERR_NUMERIC,
                         "the %s loss became %s at step %lld; nothing was written. Lower --lr (now %g)", phase,
                         isnan(loss) ? "NaN" : "infinite", (long long)step + 1, cfg->lr);
            break;
        }
        nnz_model_zero_grad(m);
        if ((s = nnz_model_backward(m, c->x, n, c->dlogits)) != NNZ_OK) break;
        if (gates) {
            nnz_gates_backward(gates, m, n);
            for (int i = 0; i < gates->n; i++) m->params[gates->param[i]].grad[0] *= gate_scale;
        }
        const float lr = nnz_schedule_lr(&sched, sched_offset + step);
        nnz_optimizer_step(&opt, m, lr);
        loss_sum += (double)loss * n, ep_loss += (double)loss * n;
        iv_correct += correct, ep_correct += correct;
        iv_images += n, ep_images += n;

        const bool log_now = (step + 1) % cfg->log_every == 0, epoch_end = (step + 1) % spe == 0;
        double now = nnz_now_sec();
        nnz_progress p;
        memset(&p, 0, sizeof p);
        p.epoch = epoch + 1, p.epochs = epochs;
        p.step = step + 1, p.steps_total = total;
        p.images_seen = (step + 1) * (int64_t)cfg->batch;
        p.lr = lr;
        p.elapsed_sec = now - t0;
        p.eta_sec = (now - t0) / (double)(step + 1) * (double)(total - step - 1);
        p.test_accuracy = -1.0f;
        if (log_now && cfg->progress) {
            p.loss = (float)(loss_sum / (double)iv_images);
            p.accuracy = (float)iv_correct / (float)iv_images;
            p.images_per_sec = now > iv_t0 ? (double)iv_images / (now - iv_t0) : 0;
            if (!cfg->progress(&p, cfg->progress_user))
                s = nnz_fail(NNZ_ERR_INTERRUPTED, "stopped during the %s; nothing was written", phase);
        }
        if (log_now) loss_sum = 0, iv_correct = iv_images = 0, iv_t0 = now;
        if (!epoch_end || s != NNZ_OK) continue;
        nnz_eval_result er;
        if ((s = nnz_evaluate(m, &c->test, cfg->batch, cfg->test_limit, &er)) != NNZ_OK) break;
        *test_accuracy = er.accuracy;
        p.epoch_end = true;
        p.loss = (float)(ep_loss / (double)ep_images);
        p.accuracy = (float)ep_correct / (float)ep_images;
        p.test_accuracy = er.accuracy;
        p.images_per_sec = now > t0 ? (double)(step + 1) * cfg->batch / (now - t0) : 0;
        if (cfg->progress && !cfg->progress(&p, cfg->progress_user))
            s = nnz_fail(NNZ_ERR_INTERRUPTED, "stopped during the %s; nothing was written", phase);
        ep_loss = 0, ep_correct = ep_images = 0;
    }
    c->epochs_done += epochs;
    if (gates) gates->k = k_final;
    nnz_optimizer_free(&opt);
    return s;
}

static nnz_status evaluate(shrink_ctx *c, nnz_model *m, float *accuracy) {
    nnz_eval_result er;
    NNZ_TRY(nnz_evaluate(m, &c->test, c->cfg->batch, c->cfg->test_limit, &er));
    *accuracy = er.accuracy;
    return NNZ_OK;
}

/* max |a-b| / max |b| of two models' logits on the first test batch (eval mode) */
static nnz_status logits_error(shrink_ctx *c, nnz_model *a, nnz_model *b, float *err) {
    nnz_batcher eb;
    NNZ_TRY(nnz_batcher_init(&eb, &c->test, c->cfg->test_limit, c->cfg->batch, false, false, 0));
    int n = nnz_batcher_fill(&eb, 0, c->x, c->y);
    nnz_batcher_free(&eb);
    const size_t count = (size_t)n * (size_t)a->num_classes;
    NNZ_TRY(nnz_model_forward(b, c->x, n, false));
    memcpy(c->teacher_logits, nnz_model_output(b), sizeof(float) * count);
    NNZ_TRY(nnz_model_forward(a, c->x, n, false));
    const float *za = nnz_model_output(a), *zb = c->teacher_logits;
    double num = 0, den = 0;
    for (size_t i = 0; i < count; i++) {
        num = fmax(num, fabs((double)za[i] - zb[i]));
        den = fmax(den, fabs((double)zb[i]));
    }
    *err = (float)(num / (den > 0 ? den : 1));
    return NNZ_OK;
}

/* in_path: the trained checkpoint, or with c->one_schedule (from scratch) the model spec
 * (nnz_model_from_spec) whose freshly initialised weights the search trains; with c->to_target
 * too, the spec of the target, whose expansion (nnz_shrink_expand) is trained */
static nnz_status shrink(shrink_ctx *c, const char *in_path, const char *out_path, nnz_shrink_result *res) {
    const nnz_shrink_config *cfg = c->cfg;
    const bool scratch = c->one_schedule;
    double t_start = nnz_now_sec();
    nnz_model *orig = NULL, *search = NULL, *tuned = NULL, *merged = NULL, *target = NULL;
    nnz_gates gates;
    memset(&gates, 0, sizeof gates);
    float *scores = NULL;
    bool *keep = NULL;
    nnz_status s = scratch ? NNZ_OK : nnz_checkpoint_load_model(in_path, &orig);
    if (s != NNZ_OK) return s;
    if ((s = nnz_dataset_load_first(cfg->data_dir, true, cfg->train_limit, &c->train)) != NNZ_OK) goto done;
    c->have_train = true;
    if ((s = nnz_dataset_load_first(cfg->data_dir, false, cfg->test_limit, &c->test)) != NNZ_OK) goto done;
    c->have_test = true;
    const nnz_dataset *d = &c->train;
    if (scratch && (s = nnz_model_from_spec(in_path, d->h, d->w, d->c, d->num_classes, cfg->seed,
                                            c->to_target ? &target : &orig)) != NNZ_OK)
        goto done;
    if (c->to_target) {
        int expanded = 0;
        if ((s = nnz_shrink_expand(target, cfg->expansion, cfg->seed, &orig, &expanded)) != NNZ_OK) goto done;
        if (expanded == 0) {
            s = nnz_fail(NNZ_ERR_INVALID_ARG, "'%s' has no convolution to expand: a dense kxk conv (groups 1, k >= 2) "
                         "that is not the first layer and has a bias or a batch norm after it", in_path);
            goto done;
        }
    }
    if (orig->in_h != d->h || orig->in_w != d->w || orig->in_c != d->c || orig->num_classes < d->num_classes) {
        s = nnz_fail(NNZ_ERR_INVALID_ARG,
                     "'%s' takes %dx%dx%d images and %d classes, but the data in '%s' has %dx%dx%d images and %d "
                     "classes; pass the --data it was trained on",
                     in_path, orig->in_h, orig->in_w, orig->in_c, orig->num_classes, cfg->data_dir, d->h, d->w, d->c,
                     d->num_classes);
        goto done;
    }
    /* the blocks that still have both activations */
    nnz_ir_block *all = NULL;
    int n_all = 0;
    if ((s = nnz_shrink_find_blocks(orig, &all, &n_all)) != NNZ_OK) goto done;
    c->blocks = all;
    char skipped[1024] = "";
    for (int i = 0; i < n_all; i++) {
        if (all[i].removed || orig->nodes[all[i].act1].op == NNZ_OP_IDENTITY ||
            orig->nodes[all[i].act2].op == NNZ_OP_IDENTITY)
            continue;
        /* to a target: only the blocks expanded from its convs (named after them); its own blocks stay */
        if (c->to_target && nnz_model_find_node(target, all[i].name) < 0) continue;
        if (cfg->cost_aware && !nnz_shrink_merge_pays(orig, &all[i])) { /* stays as it is */
            size_t off = strlen(skipped);
            snprintf(skipped + off, sizeof skipped - off, "%s%s", off ? ", " : "", all[i].name);
            continue;
        }
        all[c->n_blocks++] = all[i];
    }
    if (skipped[0])
        note(c, "cost-aware: %s %s, merging would cost more FLOPs than the block", skipped,
             strchr(skipped, ',') ? "keep their activations" : "keeps its activations");
    if (c->n_blocks == 0 && skipped[0]) {
        s = nnz_fail(NNZ_ERR_INVALID_ARG, "'%s': no inverted-residual block would be cheaper merged (%s); drop "
                     "--cost-aware to merge them anyway", in_path, skipped);
        goto done;
    }
    if (c->n_blocks == 0) {
        s = nnz_fail(NNZ_ERR_INVALID_ARG,
                     "'%s' has no inverted-residual blocks left to shrink (1x1 conv, batch norm, relu6, depthwise "
                     "conv, batch norm, relu6, 1x1 conv, batch norm); DepthShrinker works on mbv2-tiny",
                     in_path);
        goto done;
    }
    const int nb = c->n_blocks, k = c->to_target ? 0 : nnz_shrink_keep_count(cfg->keep, nb);
    res->blocks = nb;
    res->kept = k;
    if ((s = nnz_batcher_init(&c->batcher, d, cfg->train_limit, cfg->batch, true, false, cfg->seed)) != NNZ_OK)
        goto done;
    c->steps_per_epoch = nnz_batcher_train_steps(&c->batcher);
    c->sched_total = c->steps_per_epoch * (int64_t)(cfg->search_epochs + cfg->finetune_epochs);
    const size_t img = (size_t)d->h * d->w * d->c;
    c->x = nnz_alloc(sizeof(float) * img * (size_t)cfg->batch, "the training batch");
    c->y = nnz_alloc((size_t)cfg->batch, "the training labels");
    c->dlogits = nnz_alloc(sizeof(float) * (size_t)cfg->batch * (size_t)orig->num_classes, "the logits' gradient");
    c->teacher_logits = nnz_alloc(sizeof(float) * (size_t)cfg->batch * (size_t)orig->num_classes, "teacher logits");
    scores = calloc((size_t)nb, sizeof *scores);
    keep = calloc((size_t)nb, sizeof *keep);
    if (!c->x || !c->y || !c->dlogits || !c->teacher_logits || !scores || !keep) {
        s = NNZ_ERR_NOMEM;
        goto done;
    }
    if (orig->num_classes > 1024) {
        s = nnz_fail(NNZ_ERR_UNSUPPORTED, "nnz shrink handles at most 1024 classes (the model has %d)",
                     orig->num_classes);
        goto done;
    }
    nnz_model_stats st;
    nnz_model_get_stats(orig, &st);
    res->flops_before = st.flops;
    res->params_before = st.params;
    if ((s = evaluate(c, orig, &res->acc_original)) != NNZ_OK) goto done;
    if (c->to_target)
        note(c, "expand-then-shrink to the target '%s': its %d dense kxk convs trained as inverted-residual blocks "
             "(expansion %d) from random weights (test accuracy %.2f%%), all merged back at the end",
             in_path, nb, cfg->expansion, 100.0 * res->acc_original);
    else if (scratch)
        note(c, "expand-then-shrink: '%s' from random weights (test accuracy %.2f%%), %d inverted-residual blocks; "
             "keeping activations in %d of them (keep %g), the other %d merged at the end",
             in_path, 100.0 * res->acc_original, nb, k, (double)cfg->keep, nb - k);
    else
        note(c, "original: %d inverted-residual blocks, test accuracy %.2f%%; keeping activations in %d of them "
             "(keep %g)", nb, 100.0 * res->acc_original, k, (double)cfg->keep);

    /* search: the gates trained with the weights, on a copy of the original */
    if ((s = nnz_shrink_rebuild(orig, orig->nodes, orig->n_nodes, &search)) != NNZ_OK) goto done;
    {
        int *acts = malloc(sizeof *acts * 2 * (size_t)nb);
        const char **names = malloc(sizeof *names * (size_t)nb);
        if (!acts || !names) s = nnz_fail(NNZ_ERR_NOMEM, "out of memory for the gates");
        for (int i = 0; s == NNZ_OK && i < nb; i++) {
            acts[2 * i] = c->blocks[i].act1, acts[2 * i + 1] = c->blocks[i].act2;
            names[i] = c->blocks[i].name;
        }
        if (s == NNZ_OK) s = nnz_gates_init(&gates, search, nb, acts, names, k);
        free(acts);
        free(names);
        if (s != NNZ_OK) goto done;
    }
    note(c, "search: %d epoch%s, scores and weights together, Gumbel noise on the ranking for the first %.0f%%",
         cfg->search_epochs, cfg->search_epochs == 1 ? "" : "s", 100.0 * cfg->gumbel);
    if (cfg->warmup > 0 || cfg->ramp > 0)
        note(c, "gate schedule: every block keeps its activations for the first %.0f%% of the search, then the "
             "number kept falls from %d to %d over %.0f%%", 100.0 * cfg->warmup, nb, k, 100.0 * cfg->ramp);
    if (scratch)
        note(c, "learning rate: one cosine from %g to 0 over the search and finetuning (%d epochs)", (double)cfg->lr,
             cfg->search_epochs + cfg->finetune_epochs);
    float acc = 0;
    if ((s = run_phase(c, search, "search", cfg->search_epochs, &gates, NULL, &acc)) != NNZ_OK) goto done;
    nnz_gates_select(&gates, search, NULL, 0.0f);
    if ((s = evaluate(c, search, &res->acc_searched)) != NNZ_OK) goto done;
    {
        char list[2048] = "";
        for (int i = 0; i < nb; i++) {
            scores[i] = nnz_gates_score(&gates, search, i);
            keep[i] = gates.keep[i];
            size_t off = strlen(list);
            snprintf(list + off, sizeof list - off, "%s%s %+.4f %s", i ? ", " : "", c->blocks[i].name,
                     (double)scores[i], keep[i] ? "kept" : "removed");
        }
        note(c, "scores: %s", list);
        note(c, "activations removed: test accuracy %.2f%% before finetuning", 100.0 * res->acc_searched);
    }
    nnz_gates_free(&gates, search);

    /* remove, in the pad-the-input form, and finetune */
    {
        bool *remove = malloc(sizeof *remove * (size_t)nb);
        if (!remove) {
            s = nnz_fail(NNZ_ERR_NOMEM, "out of memory");
            goto done;
        }
        for (int i = 0; i < nb; i++) remove[i] = !keep[i];
        s = nnz_shrink_remove(search, c->blocks, nb, remove, &tuned);
        free(remove);
        if (s != NNZ_OK) goto done;
    }
    nnz_model_free(search);
    search = NULL;
    if (cfg->finetune_epochs > 0) {
        note(c, "finetune: %d epoch%s%s", cfg->finetune_epochs, cfg->finetune_epochs == 1 ? "" : "s",
             cfg->distill ? ", distilled from the original" : "");
        if ((s = run_phase(c, tuned, "finetuning", cfg->finetune_epochs, NULL, cfg->distill ? orig : NULL, &acc)) !=
            NNZ_OK)
            goto done;
    }
    if ((s = evaluate(c, tuned, &res->acc_finetuned)) != NNZ_OK) goto done;

    /* merge, check it against the unmerged model, save */
    if ((s = nnz_shrink_merge(tuned, &merged, &res->merged)) != NNZ_OK) goto done;
    if (c->to_target) { /* back to the target's own graph: its names, and no bias it did not have */
        nnz_model *exact = NULL;
        if ((s = nnz_shrink_to_target(merged, target, &exact)) != NNZ_OK) goto done;
        nnz_model_free(merged);
        merged = exact;
    }
    if ((s = evaluate(c, merged, &res->acc_merged)) != NNZ_OK) goto done;
    if ((s = logits_error(c, merged, tuned, &res->merge_error)) != NNZ_OK) goto done;
    if (!(res->merge_error <= 1e-4f)) {
        s = nnz_fail(NNZ_ERR_NUMERIC, "the merged model differs from the unmerged one by %.3g (relative); this is a "
                     "bug in nnz shrink, nothing was written", (double)res->merge_error);
        goto done;
    }
    nnz_model_get_stats(merged, &st);
    res->flops_after = st.flops;
    res->params_after = st.params;
    note(c, "merged %d block%s: test accuracy %.2f%% (unmerged %.2f%%, logits differ by %.2g relative)", res->merged,
         res->merged == 1 ? "" : "s", 100.0 * res->acc_merged, 100.0 * res->acc_finetuned, (double)res->merge_error);
    res->seconds = nnz_now_sec() - t_start;
    s = nnz_shrink_save(out_path, merged, cfg, in_path, scratch, c->to_target, c->blocks, nb, scores, keep, res);
done:
    nnz_model_free(target);
    nnz_gates_free(&gates, search);
    nnz_model_free(orig);
    nnz_model_free(search);
    nnz_model_free(tuned);
    nnz_model_free(merged);
    free(scores);
    free(keep);
    return s;
}

static nnz_status run_shrink(const char *in_path, bool from_scratch, bool to_target, const char *out_path,
                             const nnz_shrink_config *cfg, nnz_shrink_result *result) {
    if (!in_path || !out_path || !cfg)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_shrink: %s, output path and configuration are required",
                        from_scratch ? "model" : "checkpoint");
    nnz_shrink_result local;
    if (!result) result = &local;
    memset(result, 0, sizeof *result);
    NNZ_TRY(check_config(cfg));
    if (from_scratch && cfg->distill)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "distillation needs a trained teacher; from scratch there is none "
                        "(drop --distill, or shrink a trained checkpoint)");
    if (to_target && cfg->cost_aware)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "a given target fixes which blocks are merged (all the expanded ones): "
                        "cost-aware selection does not apply");
    NNZ_TRY(nnz_check_output_path(out_path));
    shrink_ctx c;
    memset(&c, 0, sizeof c);
    c.cfg = cfg;
    c.one_schedule = from_scratch;
    c.to_target = to_target;
    const int old_threads = nnz_get_threads();
    nnz_set_threads(cfg->threads);
    nnz_status s = shrink(&c, in_path, out_path, result);
    nnz_set_threads(old_threads);
    nnz_batcher_free(&c.batcher);
    nnz_free(c.x);
    nnz_free(c.y);
    nnz_free(c.dlogits);
    nnz_free(c.teacher_logits);
    free(c.blocks);
    if (c.have_train) nnz_dataset_free(&c.train);
    if (c.have_test) nnz_dataset_free(&c.test);
    return s;
}

nnz_status nnz_shrink(const char *checkpoint, const char *out_path, const nnz_shrink_config *cfg,
                      nnz_shrink_result *result) {
    return run_shrink(checkpoint, false, false, out_path, cfg, result);
}

nnz_status nnz_shrink_from_scratch(const char *model, const char *out_path, const nnz_shrink_config *cfg,
                                   nnz_shrink_result *result) {
    return run_shrink(model, true, false, out_path, cfg, result);
}

nnz_status nnz_shrink_train_target(const char *target, const char *out_path, const nnz_shrink_config *cfg,
                                   nnz_shrink_result *result) {
    return run_shrink(target, true, true, out_path, cfg, result);
}
