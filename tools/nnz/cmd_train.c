/* nnz train: train a zoo model on an image data set, write a checkpoint. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *const optimizer_names[] = {"sgd", "adamw", NULL};         /* = nnz_optimizer_kind */
static const char *const schedule_names[] = {"cosine", "step", "onecycle", "constant", NULL}; /* = nnz_schedule_kind */
static const char *const prune_names[] = {"none", "autosparse", "gmp", NULL}; /* = nnz_prune_kind */
static const char *const anneal_names[] = {"cosine-sigmoid", "cosine", "sigmoid", "linear", "constant",
                                           NULL}; /* = nnz_anneal_kind */
static const char *const granularity_names[] = {"layer", "channel", NULL};

/* Prints the zoo's names, comma-separated. */
static void zoo_list(char *buf, size_t len) {
    buf[0] = '\0';
    const char *const *names = nnz_zoo_names();
    for (int i = 0; names && names[i]; i++) {
        strncat(buf, i ? ", " : "", len - strlen(buf) - 1);
        strncat(buf, names[i], len - strlen(buf) - 1);
    }
}

static bool zoo_has(const char *name) {
    const char *const *names = nnz_zoo_names();
    for (int i = 0; names && names[i]; i++)
        if (strcmp(names[i], name) == 0) return true;
    return false;
}

int cmd_train(int argc, char **argv) {
    nnz_train_config cfg;
    nnz_train_config_init(&cfg);
    const char *model = cfg.model, *data = cfg.data_dir, *out = NULL, *resume = NULL, *init = NULL, *log = NULL, *budget = NULL;
    int optimizer = (int)cfg.optimizer, schedule = (int)cfg.schedule;
    float lr = 0.0f, wd = -1.0f;
    int precision = (int)cfg.precision, mask = NNZ_MASK_DENSE;
    const char *mask_block = NULL, *sparse_format = NULL;
    float sparsity = 0.0f;
    int prune = NNZ_PRUNE_NONE, anneal = (int)cfg.prune.anneal, granularity = 0;
    cli_flag flags[] = {
        FL_STR("--model", &model, "NAME|FILE",
               "Model to train from scratch: a zoo name (mlp, lenet5, vgg8, mbv2-tiny), an architecture file "
               "FILE.json (docs/arch-json.md) or a checkpoint whose architecture (not its weights) is trained, "
               "e.g. one nnz shrink merged.",
               "mbv2-tiny"),
        FL_INT("--epochs", &cfg.epochs, "N", "Passes over the training set.", "10", 1, 100000),
        FL_INT("--batch", &cfg.batch, "N", "Images per optimizer step.", "128", 1, 65536),
        FL_FLOAT("--lr", &lr, "X", "Peak learning rate.", "0.1 with sgd, 0.001 with adamw", 0, 0, true),
        FL_CHOICE("--optimizer", &optimizer, "NAME", "Update rule (as torch.optim.SGD / AdamW).", "sgd",
                  optimizer_names),
        FL_FLOAT("--momentum", &cfg.momentum, "X", "SGD momentum.", "0.9", 0, 0.9999, false),
        FL_BOOL("--nesterov", &cfg.nesterov, "Use Nesterov momentum (SGD)."),
        FL_FLOAT("--wd", &wd, "X", "Weight decay (decoupled with adamw); biases and batch-norm are exempt.",
                 "5e-4 with sgd, 0.05 with adamw", 0, 1, false),
        FL_CHOICE("--schedule", &schedule, "NAME", "Learning-rate schedule, updated every step.", "cosine",
                  schedule_names),
        FL_FLOAT("--warmup", &cfg.warmup_epochs, "EPOCHS",
                 "Linear warm-up from 0 over this many epochs (may be fractional).", "0", 0, 100000, false),
        FL_INT("--step-size", &cfg.step_size_epochs, "EPOCHS",
               "Step schedule: multiply the rate by --step-gamma every this many epochs.", "a third of --epochs", 1,
               100000),
        FL_FLOAT("--step-gamma", &cfg.step_gamma, "X", "Step schedule: the factor.", "0.1", 0, 1, true),
        FL_FLOAT("--label-smoothing", &cfg.label_smoothing, "X", "Label smoothing of the cross-entropy loss.", "0", 0,
                 0.99, false),
        FL_BOOL("--augment", &cfg.augment, "Random crop (2-pixel zero padding) and horizontal flip."),
        FL_CHOICE("--precision", &precision, "P", CLI_PRECISION_HELP, "fp32", cli_precision_names),
        FL_BOOL("--bf16-activations", &cfg.bf16_activations, CLI_BF16_ACTIVATIONS_HELP),
        FL_CHOICE("--mask", &mask, "KIND",
                  "Masked (sparse) training: every conv and linear layer but the first and last gets this mask at "
                  "initialization and keeps its zeros (docs/RBGP.md).", "dense (none)", cli_mask_kind_names),
        FL_FLOAT("--sparsity", &sparsity, "S", "Fraction of zero weights in each masked layer (with --mask).", "0.9",
                 0, 1, true),
        FL_STR("--mask-block", &mask_block, "RxC", "block: the block; hbsnn: the first level; rbgp: the micro-block; channel-block: output x input "
               "channels (only 16x16 runs Winograd over the blocks).",
               "16x16 (rbgp: 4x4)"),
        FL_CHOICE("--prune", &prune, "KIND",
                  "Pruning during training of every conv and linear layer but the first and last "
                  "(docs/AUTOSPARSE.md): autosparse = learnable thresholds (STR) + Gradient Annealing, the final "
                  "checkpoint holds the thresholded weights; gmp = gradual magnitude pruning to --target-sparsity.",
                  "none", prune_names),
        FL_FLOAT("--alpha0", &cfg.prune.alpha0, "A",
                 "autosparse: Gradient Annealing's initial alpha, the gradient factor of pruned weights (0 = STR).",
                 "0.5", 0, 1, false),
        FL_CHOICE("--anneal", &anneal, "SCHEDULE", "autosparse: how alpha decays from --alpha0 to 0 over training.",
                  "cosine-sigmoid", anneal_names),
        FL_INT("--alpha-off-epoch", &cfg.prune.alpha_off_epoch, "E",
               "autosparse: alpha = 0 once E epochs are done (0 = never).", "0", 0, 1000000),
        FL_FLOAT("--threshold-init", &cfg.prune.threshold_init, "S",
                 "autosparse: initial threshold parameter s; the threshold is sigmoid(s).", "-10", -1e5, 1e5, false),
        FL_FLOAT("--threshold-decay", &cfg.prune.threshold_decay, "D",
                 "autosparse: L2 decay of the thresholds (added to their gradient).", "the weights' --wd", 0, 1e3,
                 false),
        FL_CHOICE("--threshold-granularity", &granularity, "G",
                  "autosparse: one threshold per layer or per output channel.", "layer", granularity_names),
        FL_FLOAT("--target-sparsity", &cfg.prune.target_sparsity, "S",
                 "gmp: final fraction of zeros in each pruned layer.", "0.9", 0, 1, true),
        FL_FLOAT("--gmp-begin", &cfg.prune.gmp_begin, "F", "gmp: pruning starts at this fraction of training.", "0",
                 0, 1, false),
        FL_FLOAT("--gmp-end", &cfg.prune.gmp_end, "F", "gmp: the target is reached at this fraction of training.",
                 "0.75", 0, 1, false),
        FL_INT("--gmp-every", &cfg.prune.gmp_every, "N", "gmp: steps between pruning events (0 = the window / 16).",
               "0", 0, 1000000000),
        FL_INT("--bn-recalibrate", &cfg.prune.bn_recalibrate, "N",
               "autosparse, gmp: at the end, recompute the batch norms' running statistics with the final weights "
               "over the first N training images (0 = keep the running averages, which trail weights pruning "
               "changes until the end).",
               "2048", 0, 1000000000),
        FL_STR("--sparse-format", &sparse_format, "F", CLI_SPARSE_FORMAT_HELP, "auto"),
        FL_U64("--seed", &cfg.seed, "N",
               "Seeds weights, shuffling, augmentation and dropout: same seed and threads, same numbers.", "42"),
        FL_INT("--threads", &cfg.threads, "N", "Worker threads; 0 = all cores.", "0", 0, 4096),
        FL_STR("--data", &data, "DIR",
               "Data set directory: MNIST-style IDX files (raw or .gz) or CIFAR-10 binary batches.",
               NNZ_DEFAULT_DATA_DIR),
        FL_STR("--out", &out, "FILE",
               "Checkpoint written (atomically: a crash leaves the previous one) at every epoch end.",
               "MODEL.safetensors; with --resume, the resumed file"),
        FL_INT("--checkpoint-every", &cfg.checkpoint_every, "N",
               "Also write the checkpoint every N optimizer steps, so a crash or kill loses at most N steps; "
               "--resume continues from it bit for bit. Not remembered by the checkpoint: pass it again with "
               "--resume.",
               "0 (only at epoch ends)", 0, 1000000000),
        FL_STR("--resume", &resume, "FILE",
               "Continue the run saved in FILE exactly where it stopped (its model, seed, batch, optimizer and "
               "schedule are used; --epochs may extend it).",
               NULL),
        FL_STR("--init-from", &init, "FILE",
               "Start a new run from FILE's weights, e.g. a trained dense model (its architecture replaces "
               "--model; optimizer, schedule and epochs start anew). --mask unstructured|block|hbsnn then keeps the "
               "largest weights (block L1 norms): magnitude pruning of a trained model, then finetuning; rbgp "
               "ignores the weights.",
               NULL),
        FL_STR("--log", &log, "FILE", "Write JSON lines (one per log interval and per epoch) to FILE (appended "
               "with --resume).", NULL),
        FL_INT("--log-every", &cfg.log_every, "N", "Steps between progress reports.", "50", 1, 1000000000),
        FL_STR("--memory-budget", &budget, "BYTES",
               "Most bytes the process may hold resident (peak RSS), e.g. 256M, 1G (binary units): the data set, "
               "weights, gradients, optimizer state, activations, scratch and the BLAS/OpenMP runtime. The need at "
               "--batch is estimated before training; a batch that does not fit is refused (exit 1) with the "
               "largest that does, never changed.",
               "unlimited"),
        FL_INT("--train-limit", &cfg.train_limit, "N", "Use only the first N training images (0 = all).", "0", 0, 0),
        FL_INT("--test-limit", &cfg.test_limit, "N", "Evaluate on only the first N test images (0 = all).", "0", 0,
               0),
    };
    cli_command cmd = {
        .name = "train",
        .summary = "train a model on an image data set and save a checkpoint",
        .usage = "nnz train [--model NAME] [--epochs N] [flags]",
        .description =
            "Trains a model (from the zoo, or any architecture: --model FILE.json or a checkpoint's) from\n"
            "scratch on an image data set (Fashion-MNIST by default), evaluates it on\n"
            "the test split after every epoch and writes a safetensors checkpoint (weights, optimizer state\n"
            "and everything needed to resume) at every epoch end, and every N steps with --checkpoint-every N.\n"
            "Ctrl-C saves a checkpoint and stops; after a crash or kill the last checkpoint is intact;\n"
            "--resume continues from it with exactly the losses an uninterrupted run would have had\n"
            "(same --threads). Images are scaled to [0,1] and normalized with the data set's mean/std.\n"
            "A NaN/Inf loss stops training with exit code 1 and keeps the last good checkpoint.",
        .example = "  nnz train --model lenet5 --epochs 5 --optimizer adamw --log run.jsonl\n"
                   "  nnz train --model mbv2-tiny --epochs 20 --augment --label-smoothing 0.1 --warmup 1\n"
                   "  nnz train --model vgg8 --precision bf16\n"
                   "  nnz train --model shrunk.safetensors --epochs 3   # a merged architecture, fresh weights\n"
                   "  nnz train --model vgg8 --mask block --sparsity 0.9 --mask-block 16x16\n"
                   "  nnz train --init-from vgg8.safetensors --mask hbsnn --sparsity 0.9 --epochs 3 --out vgg8-h.safetensors\n"
                   "  nnz train --model vgg8 --prune autosparse --threshold-init -5 --alpha0 0.5\n"
                   "  nnz train --model vgg8 --prune gmp --target-sparsity 0.9\n"
                   "  nnz train --model vgg8 --epochs 30 --checkpoint-every 200\n"
                   "  nnz train --resume mbv2-tiny.safetensors",
        .flags = flags,
        .n_flags = (int)(sizeof flags / sizeof flags[0]),
    };
    const char *pos[1];
    int npos = 0;
    int r = cli_parse(&cmd, argc, argv, pos, &npos);
    if (r == CLI_HELP_SHOWN) return CLI_EXIT_OK;
    if (r) return r;

    if (init && resume) return cli_usage_error(&cmd, "--init-from starts a new run and --resume continues one: pick one");
    if (init && cli_find_flag(&cmd, "--model")->seen)
        return cli_usage_error(&cmd, "--init-from takes its architecture from the checkpoint: drop --model");
    struct stat model_st;
    const bool model_is_file = !zoo_has(model) && stat(model, &model_st) == 0 && S_ISREG(model_st.st_mode);
    if (!resume && !init && !zoo_has(model) && !model_is_file) {
        char names[256];
        zoo_list(names, sizeof names);
        return cli_usage_error(&cmd, "unknown model '%s': no such file, and the zoo has: %s", model, names);
    }
    cfg.model = model;
    cfg.data_dir = data;
    cfg.optimizer = (nnz_optimizer_kind)optimizer;
    cfg.schedule = (nnz_schedule_kind)schedule;
    cfg.lr = lr;
    cfg.precision = (nnz_dtype)precision;
    if (cfg.bf16_activations && cfg.precision != NNZ_BF16)
        return cli_usage_error(&cmd, "--bf16-activations needs --precision bf16");
    cfg.mask.kind = (nnz_mask_kind)mask;
    cfg.mask.sparsity = cli_find_flag(&cmd, "--sparsity")->seen ? sparsity : 0.9f;
    if (mask == NNZ_MASK_DENSE && (cli_find_flag(&cmd, "--sparsity")->seen || mask_block))
        return cli_usage_error(&cmd, "--sparsity and --mask-block need --mask unstructured|block|hbsnn|rbgp|channel-block");
    if (sparsity >= 1.0f) return cli_usage_error(&cmd, "--sparsity must be below 1");
    if (mask_block && !cli_parse_pair(mask_block, &cfg.mask.block_rows, &cfg.mask.block_cols))
        return cli_usage_error(&cmd, "--mask-block expects RxC like 16x16, got '%s'", mask_block);
    cfg.prune.kind = (nnz_prune_kind)prune;
    cfg.prune.anneal = (nnz_anneal_kind)anneal;
    cfg.prune.per_channel = granularity == 1;
    if (prune == NNZ_PRUNE_GMP && !cli_find_flag(&cmd, "--target-sparsity")->seen) cfg.prune.target_sparsity = 0.9f;
    if (prune != NNZ_PRUNE_NONE && mask != NNZ_MASK_DENSE)
        return cli_usage_error(&cmd, "--prune and --mask do not combine: pick one");
    if (cfg.prune.target_sparsity >= 1.0f) return cli_usage_error(&cmd, "--target-sparsity must be below 1");
    cfg.sparse_format = sparse_format;
    cfg.weight_decay = wd;
    cfg.log_path = log;
    if (budget && !nnz_parse_bytes(budget, &cfg.memory_budget)) return cli_usage_error(&cmd, CLI_BUDGET_ERROR, budget);
    if (budget) cli_budget_malloc();
    char default_out[4096];
    if (resume) {
        static const char *const run_flags[] = {"--model", "--batch", "--lr", "--optimizer", "--momentum",
                                                "--nesterov", "--wd", "--schedule", "--warmup", "--step-size",
                                                "--step-gamma", "--label-smoothing", "--augment", "--seed", "--precision", "--bf16-activations", "--mask",
                                                "--sparsity", "--mask-block",
                                                "--prune", "--alpha0", "--anneal", "--alpha-off-epoch",
                                                "--threshold-init", "--threshold-decay", "--threshold-granularity",
                                                "--target-sparsity", "--gmp-begin", "--gmp-end", "--gmp-every",
                                                "--train-limit", NULL};
        for (int i = 0; run_flags[i]; i++)
            if (cli_find_flag(&cmd, run_flags[i])->seen)
                fprintf(stderr, "nnz train: note: %s is ignored with --resume (the checkpoint's run continues)\n",
                        run_flags[i]);
        cfg.resume_path = resume;
        if (!cli_find_flag(&cmd, "--epochs")->seen) cfg.epochs = 0; /* the checkpoint's */
        if (!out) out = resume;
    } else if (!out && init) {
        return cli_usage_error(&cmd, "--init-from needs --out FILE, the new run's checkpoint");
    } else if (!out && model_is_file) { /* FILE.json or FILE.safetensors -> FILE-trained.safetensors */
        size_t n = strlen(model);
        const char *dot = strrchr(model, '.'), *slash = strrchr(model, '/');
        if (dot && (!slash || dot > slash)) n = (size_t)(dot - model);
        snprintf(default_out, sizeof default_out, "%.*s-trained.safetensors", (int)n, model);
        out = default_out;
    } else if (!out) {
        snprintf(default_out, sizeof default_out, "%s.safetensors", model);
        out = default_out;
    }
    cfg.out_path = out;
    cfg.init_path = init;
    if (init && strcmp(init, out) == 0)
        return cli_usage_error(&cmd, "--out must differ from --init-from: the starting model stays as it is");

    cli_progress prog;
    cli_progress_init(&prog);
    cfg.progress = cli_progress_fn;
    cfg.progress_user = &prog;
    cli_progress_catch_sigint();

    nnz_train_result res;
    nnz_status s = nnz_train(&cfg, &res);
    cli_progress_finish(&prog);
    if (s == NNZ_ERR_INTERRUPTED) {
        fprintf(stderr, "nnz train: %s\n", nnz_last_error());
        return CLI_EXIT_FAILURE;
    }
    if (s != NNZ_OK) return cli_fail("train", "training failed");
    char dur[32];
    cli_format_duration(res.seconds, dur, sizeof dur);
    printf("train loss: %.4f, train accuracy: %.2f%%\n", res.train_loss, 100.0 * res.train_accuracy);
    printf("throughput: %.0f images/s over %lld steps (%s, %d threads)\n", res.train_images_per_sec,
           (long long)res.steps, dur, cfg.threads > 0 ? cfg.threads : nnz_get_threads());
    if (res.prune != NNZ_PRUNE_NONE)
        printf("pruned (%s): %.2f%% zeros in the pruned layers\n", nnz_prune_kind_name(res.prune),
               100.0 * res.sparsity);
    if (res.layer_steps > 0)
        printf("sparse execution: %lld of %lld layer-steps ran forward and backward-data on the sparse kernels\n",
               (long long)res.sparse_layer_steps, (long long)res.layer_steps);
    if (res.train_flops_dense > 0)
        printf("training FLOPs: %.4g (%.3fx dense) over %lld steps; inference FLOPs: %.4g per image (%.3fx dense)\n",
               res.train_flops, res.train_flops / res.train_flops_dense, (long long)res.steps, res.infer_flops,
               res.infer_flops_dense > 0 ? res.infer_flops / res.infer_flops_dense : 1.0);
    if (cfg.memory_budget) {
        char pk[32], est[32], bud[32];
        cli_group_digits((int64_t)res.peak_resident, pk, sizeof pk);
        cli_group_digits((int64_t)res.memory_estimate, est, sizeof est);
        cli_group_digits((int64_t)cfg.memory_budget, bud, sizeof bud);
        printf("memory: peak resident %s bytes (estimated %s, budget %s)\n", pk, est, bud);
    }
    printf("checkpoint: %s\n", out);
    printf("test accuracy: %.2f%%\n", 100.0 * res.test_accuracy);
    return CLI_EXIT_OK;
}
