/* nnz shrink: DepthShrinker on a checkpoint: search, remove, finetune, merge; with
 * --from-scratch MODEL, Expand-then-Shrink: the same from random weights; with --target
 * MODEL, Expand-then-Shrink to that given compact network. */
#include "cli.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static void print_note(const char *line, void *user) {
    cli_progress *p = user;
    cli_progress_finish(p); /* end a progress bar first */
    fprintf(stderr, "%s\n", line);
    fflush(stderr);
}

/* CKPT minus ".safetensors", plus "-shrunk.safetensors"; from scratch MODEL minus its extension plus
 * "-ets.safetensors" */
static void default_out(const char *in, bool scratch, char *buf, size_t len) {
    size_t n = strlen(in);
    const char *ext = ".safetensors";
    size_t e = strlen(ext);
    if (n > e && strcmp(in + n - e, ext) == 0) n -= e;
    else if (scratch && n > 5 && strcmp(in + n - 5, ".json") == 0) n -= 5;
    snprintf(buf, len, "%.*s-%s.safetensors", (int)n, in, scratch ? "ets" : "shrunk");
}

int cmd_shrink(int argc, char **argv) {
    nnz_shrink_config cfg;
    nnz_shrink_config_init(&cfg);
    const char *out = NULL, *data = cfg.data_dir, *scratch = NULL, *target = NULL;
    cli_flag flags[] = {
        FL_STR("--from-scratch", &scratch, "MODEL",
               "Expand-then-Shrink (DepthShrinker+): instead of a trained CKPT, train MODEL (a zoo name such as "
               "mbv2-tiny, an architecture .json or a checkpoint's architecture) from random weights, its "
               "inverted-residual blocks being the expanded, mergeable part: the gates learn during that training "
               "(--search-epochs; --warmup, --ramp), the removed blocks are finetuned without activations "
               "(--finetune-epochs) and merged, so the result has the merged target's architecture and cost. "
               "One cosine learning rate runs over both phases.",
               "none: shrink CKPT"),
        FL_STR("--target", &target, "MODEL",
               "Expand-then-Shrink to a given compact network: MODEL (zoo name, .json or checkpoint) is the "
               "network to deploy. Each of its dense kxk convs (not the first layer) is trained from random "
               "weights as an inverted-residual block with relu6s (1x1 to --expansion x its inputs, depthwise "
               "kxk, 1x1 back), the gates remove all their activations by the end of --ramp, and the merge gives "
               "back exactly MODEL's layers. --keep and --cost-aware do not apply.",
               "none"),
        FL_INT("--expansion", &cfg.expansion, "N", "With --target: an expanded block's hidden channels per input "
               "channel (MobileNetV2's t).", "6", 1, 64),
        FL_FLOAT("--keep", &cfg.keep, "R",
                 "Fraction of the inverted-residual blocks that keep their activations (round(R x blocks), halves "
                 "up); the others lose both and are merged into one dense conv each. mbv2-tiny has 6 blocks.",
                 "0.4", 0, 1, false),
        FL_INT("--search-epochs", &cfg.search_epochs, "N",
               "Epochs of the search: block scores trained with the weights, top blocks kept each step.", "1", 1,
               100000),
        FL_INT("--finetune-epochs", &cfg.finetune_epochs, "N", "Epochs of finetuning the shrunk model (0 = none).",
               "2", 0, 100000),
        FL_FLOAT("--lr", &cfg.lr, "X",
                 "Peak SGD learning rate of each phase (cosine to 0); with --from-scratch of the one cosine over both.",
                 "0.01; 0.1 with --from-scratch", 0, 0, true),
        FL_FLOAT("--gate-lr", &cfg.gate_lr, "X",
                 "Learning rate of the block scores (their gradient is a sum over whole activation tensors, so "
                 "it is large).",
                 "0.02", 0, 0, false),
        FL_FLOAT("--gumbel", &cfg.gumbel, "F",
                 "Fraction of the search that ranks blocks by score plus Gumbel noise (exploration).", "0.5", 0, 1,
                 false),
        FL_FLOAT("--warmup", &cfg.warmup, "F",
                 "Fraction of the search during which every block keeps its activations (from scratch: the "
                 "network first learns with all of them).",
                 "0; 0.25 with --from-scratch", 0, 1, false),
        FL_FLOAT("--ramp", &cfg.ramp, "F",
                 "Then the fraction of the search over which the number of blocks keeping their activations falls "
                 "linearly from all to round(R x blocks): activations are removed progressively. --warmup + --ramp "
                 "<= 1.",
                 "0; 0.25 with --from-scratch", 0, 1, false),
        FL_BOOL("--cost-aware", &cfg.cost_aware,
                "Only blocks whose merged dense conv takes fewer FLOPs than the block are candidates: --keep "
                "counts over them, the others keep their activations and stay as they are (mbv2-tiny's "
                "expansion-1 blocks.0 would grow from 656 to 2,304 multiply-adds per pixel)."),
        FL_BOOL("--distill", &cfg.distill,
                "Finetune towards the original model's outputs as well (its teacher); not with --from-scratch."),
        FL_FLOAT("--distill-weight", &cfg.distill_weight, "W",
                 "With --distill: loss = (1-W) cross-entropy + W KL(teacher || student).", "0.5", 0, 1, false),
        FL_FLOAT("--label-smoothing", &cfg.label_smoothing, "X", "Label smoothing of the cross-entropy loss.", "0.1",
                 0, 0.99, false),
        FL_INT("--batch", &cfg.batch, "N", "Images per step.", "128", 1, 65536),
        FL_U64("--seed", &cfg.seed, "N", "Seeds shuffling and the Gumbel noise: same seed and threads, same model.",
               "42"),
        FL_INT("--threads", &cfg.threads, "N", "Worker threads; 0 = all cores.", "0", 0, 4096),
        FL_STR("--data", &data, "DIR", "The data set the checkpoint was trained on.", NNZ_DEFAULT_DATA_DIR),
        FL_STR("--out", &out, "FILE", "The merged model's checkpoint (written atomically, once, at the end).",
               "CKPT-shrunk.safetensors"),
        FL_INT("--log-every", &cfg.log_every, "N", "Steps between progress reports.", "50", 1, 1000000000),
        FL_INT("--train-limit", &cfg.train_limit, "N", "Use only the first N training images (0 = all).", "0", 0,
               0),
        FL_INT("--test-limit", &cfg.test_limit, "N", "Evaluate on only the first N test images (0 = all).", "0", 0,
               0),
    };
    cli_command cmd = {
        .name = "shrink",
        .summary = "DepthShrinker: remove activations, merge blocks into dense convs",
        .usage = "nnz shrink CKPT [--keep R] [--out FILE] [flags]\n"
                 "       nnz shrink --from-scratch MODEL [--keep R] [--out FILE] [flags]\n"
                 "       nnz shrink --target MODEL [--expansion N] [--out FILE] [flags]",
        .description =
            "DepthShrinker (Fu et al., ICML 2022) on a trained checkpoint with inverted-residual blocks\n"
            "(mbv2-tiny). 1. search: one score per block is trained with the weights; each step the\n"
            "blocks with the top scores keep their relu6s, the others run without (straight-through).\n"
            "2. remove: the lowest-scored blocks lose both activations for good. 3. finetune the shrunk\n"
            "model (--distill: towards the original's outputs too). 4. merge: each activation-free block\n"
            "(1x1 conv, depthwise kxk, 1x1 conv, batch norms, residual) becomes ONE dense kxk conv, exactly:\n"
            "the removed block's zero padding is moved to its input before finetuning, so the merged model\n"
            "computes what was finetuned (docs/DEPTHSHRINKER.md). The result is a normal checkpoint for\n"
            "nnz eval, bench and info; nnz info shows which blocks were merged.\n"
            "\n"
            "Expand-then-Shrink (--from-scratch MODEL): no trained checkpoint; MODEL is trained from random\n"
            "weights as the expanded network: all relu6s on for --warmup, then the gates remove them\n"
            "progressively (--ramp) down to the kept blocks, the rest of the search trains the final choice,\n"
            "finetuning trains it without the removed activations, and the merge gives a network with the\n"
            "target's (MODEL with those blocks merged) architecture. Its baseline is the target trained\n"
            "directly for the same epochs: nnz train --model OUT.safetensors --epochs S+F.\n"
            "\n"
            "Expand-then-Shrink to a given target (--target MODEL): MODEL is the compact network itself; its\n"
            "dense kxk convs are expanded into inverted-residual blocks for training and all merged back, so\n"
            "OUT has MODEL's architecture (nnz info OUT --arch equals nnz info MODEL --arch).",
        .example = "  nnz train --model mbv2-tiny --epochs 3 --out base.safetensors\n"
                   "  nnz shrink base.safetensors --keep 0.4 --out shrunk.safetensors\n"
                   "  nnz shrink base.safetensors --keep 0.2 --finetune-epochs 3 --distill\n"
                   "  nnz info shrunk.safetensors && nnz bench shrunk.safetensors --batch 1\n"
                   "  nnz shrink --from-scratch mbv2-tiny --keep 0.4 --search-epochs 2 --finetune-epochs 1 "
                   "--out ets.safetensors\n"
                   "  nnz train --model ets.safetensors --epochs 3 --lr 0.1 --label-smoothing 0.1   # the baseline\n"
                   "  nnz shrink --target target.json --search-epochs 2 --finetune-epochs 1 --out t.safetensors",
        .flags = flags,
        .n_flags = (int)(sizeof flags / sizeof flags[0]),
        .positional = "CKPT",
        .min_pos = 0,
        .max_pos = 1,
    };
    const char *pos[1];
    int npos = 0;
    int r = cli_parse(&cmd, argc, argv, pos, &npos);
    if (r == CLI_HELP_SHOWN) return CLI_EXIT_OK;
    if (r) return r;
    if (target && scratch) return cli_usage_error(&cmd, "give either --from-scratch MODEL or --target MODEL, not both");
    if (target && (cli_find_flag(&cmd, "--keep")->seen || cfg.cost_aware))
        return cli_usage_error(&cmd, "--target fixes the merged blocks (every expanded conv): --keep and --cost-aware "
                               "do not apply");
    if (!target && cli_find_flag(&cmd, "--expansion")->seen)
        return cli_usage_error(&cmd, "--expansion applies to --target only");
    const bool to_target = target != NULL;
    if (to_target) scratch = target;
    if (!scratch && npos == 0) return cli_usage_error(&cmd, "missing CKPT (or --from-scratch MODEL, --target MODEL)");
    if (scratch && npos > 0)
        return cli_usage_error(&cmd, "give either CKPT (shrink a trained model) or --%s MODEL, not both",
                               to_target ? "target" : "from-scratch");
    if (scratch) {
        bool known = false;
        for (const char *const *z = nnz_zoo_names(); *z; z++) known |= strcmp(*z, scratch) == 0;
        struct stat st;
        if (!known && (stat(scratch, &st) != 0 || !S_ISREG(st.st_mode)))
            return cli_usage_error(&cmd, "--%s '%s': no such file, and not a zoo model (mlp, lenet5, "
                                   "vgg8, mbv2-tiny)", to_target ? "target" : "from-scratch", scratch);
    }
    if (scratch && cfg.distill)
        return cli_usage_error(&cmd, "--distill needs a trained teacher: it does not combine with --%s",
                               to_target ? "target" : "from-scratch");
    if (scratch) {
        if (!cli_find_flag(&cmd, "--lr")->seen) cfg.lr = 0.1f;
        if (!cli_find_flag(&cmd, "--warmup")->seen) cfg.warmup = 0.25f;
        if (!cli_find_flag(&cmd, "--ramp")->seen) cfg.ramp = 0.25f;
    }
    if (cfg.warmup + cfg.ramp > 1.0f)
        return cli_usage_error(&cmd, "--warmup + --ramp must be at most 1 (got %g + %g)", (double)cfg.warmup,
                               (double)cfg.ramp);
    const char *in = scratch ? scratch : pos[0];
    char out_buf[4096];
    if (!out) {
        default_out(in, scratch != NULL, out_buf, sizeof out_buf);
        out = out_buf;
    }
    cfg.data_dir = data;
    cli_progress prog;
    cli_progress_init(&prog);
    cfg.progress = cli_progress_fn;
    cfg.progress_user = &prog;
    cfg.note = print_note;
    cli_progress_catch_sigint();

    nnz_shrink_result res;
    nnz_status s = to_target ? nnz_shrink_train_target(target, out, &cfg, &res)
                   : scratch ? nnz_shrink_from_scratch(scratch, out, &cfg, &res)
                             : nnz_shrink(in, out, &cfg, &res);
    cli_progress_finish(&prog);
    if (s == NNZ_ERR_INTERRUPTED) {
        fprintf(stderr, "nnz shrink: %s\n", nnz_last_error());
        return CLI_EXIT_FAILURE;
    }
    if (s != NNZ_OK) return cli_fail("shrink", "shrinking failed");
    char fb[32], fa[32], pb[32], pa[32], dur[32];
    cli_group_digits(res.flops_before, fb, sizeof fb);
    cli_group_digits(res.flops_after, fa, sizeof fa);
    cli_group_digits(res.params_before, pb, sizeof pb);
    cli_group_digits(res.params_after, pa, sizeof pa);
    cli_format_duration(res.seconds, dur, sizeof dur);
    printf("blocks: %d, kept %d, merged %d (%s)\n", res.blocks, res.kept, res.merged, dur);
    /* merging can add FLOPs (an expansion-1 block) while it saves time: say which way it went */
    const bool fewer = res.flops_after <= res.flops_before;
    printf("FLOPs per image: %s -> %s (%.2fx %s)\n", fb, fa,
           fewer ? (double)res.flops_before / (double)(res.flops_after > 0 ? res.flops_after : 1)
                 : (double)res.flops_after / (double)res.flops_before,
           fewer ? "fewer" : "more");
    printf("parameters: %s -> %s\n", pb, pa);
    printf(scratch ? "test accuracy: random init %.2f%%, trained with gates %.2f%%, finetuned %.2f%%\n"
                   : "test accuracy: original %.2f%%, activations removed %.2f%%, finetuned %.2f%%\n",
           100.0 * res.acc_original, 100.0 * res.acc_searched, 100.0 * res.acc_finetuned);
    printf("checkpoint: %s\n", out);
    printf("test accuracy: %.2f%%\n", 100.0 * res.acc_merged);
    return CLI_EXIT_OK;
}
