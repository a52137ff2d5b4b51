/* nnz pack: a checkpoint -> a compressed .nnz file (k-means weight sharing + Huffman coding). */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

/* Parses "NAME=N[,NAME=N...]" in place into names/bits (at most cap). Returns the count or -1. */
static int parse_overrides(char *spec, const char **names, int *bits, int cap) {
    int n = 0;
    for (char *tok = strtok(spec, ","); tok; tok = strtok(NULL, ",")) {
        char *eq = strrchr(tok, '=');
        if (!eq || eq == tok || n >= cap) return -1;
        *eq = '\0';
        char *end = NULL;
        long b = strtol(eq + 1, &end, 10);
        if (!eq[1] || *end || b < 0 || b > 8) return -1;
        names[n] = tok;
        bits[n++] = (int)b;
    }
    return n;
}

void cli_print_pack_table(const nnz_pack_report *r, bool with_rmse) {
    printf("%-28s %-6s %4s %4s %5s %8s %12s %12s %7s%s\n", "tensor", "codec", "bits", "gap", "cb", "nonzero",
           "fp32 bytes", "packed", "ratio", with_rmse ? "     rmse" : "");
    for (int i = 0; i < r->n; i++) {
        const nnz_pack_layer *l = &r->layers[i];
        char nz[16] = "-", fb[32], pb[32], bits[8] = "-", gap[8] = "-", cb[8] = "-";
        if (l->nonzeros >= 0 && l->numel) snprintf(nz, sizeof nz, "%.1f%%", 100.0 * (double)l->nonzeros / (double)l->numel);
        if (l->bits) snprintf(bits, sizeof bits, "%d", l->bits), snprintf(cb, sizeof cb, "%d", l->codebook);
        if (l->gap_bits) snprintf(gap, sizeof gap, "%d", l->gap_bits);
        cli_group_digits(l->fp32_bytes, fb, sizeof fb);
        cli_group_digits(l->packed_bytes, pb, sizeof pb);
        printf("%-28s %-6s %4s %4s %5s %8s %12s %12s %6.1fx", l->name, l->codec, bits, gap, cb, nz, fb, pb,
               l->packed_bytes ? (double)l->fp32_bytes / (double)l->packed_bytes : 0.0);
        if (with_rmse) printf(" %8.2e", l->rmse);
        printf("\n");
    }
    char fb[32], tb[32];
    cli_group_digits(r->fp32_bytes, fb, sizeof fb);
    cli_group_digits(r->file_bytes, tb, sizeof tb);
    printf("\ntotal: %s bytes as fp32 -> %s bytes in the .nnz file: %.1fx smaller\n", fb, tb,
           r->file_bytes > 0 ? (double)r->fp32_bytes / (double)r->file_bytes : 0.0);
}

/* Test accuracy of m on the first `limit` test images (0 = all) of d. */
static int accuracy(nnz_model *m, const nnz_dataset *d, int limit, float *acc) {
    nnz_eval_result er;
    if (nnz_evaluate(m, d, 256, limit, &er) != NNZ_OK) return cli_fail("pack", "cannot evaluate the model");
    *acc = er.accuracy;
    return CLI_EXIT_OK;
}

/* --finetune-codebook: quantize m in place, train its codebooks; acc[3] = the test accuracy of the
 * checkpoint, of the packed model and after finetuning. */
static int finetune(nnz_model *m, const nnz_pack_config *pcfg, nnz_train_config *tcfg, float acc[3]) {
    nnz_dataset test;
    if (nnz_dataset_load_first(tcfg->data_dir, false, tcfg->test_limit, &test) != NNZ_OK)
        return cli_fail("pack", "cannot load the test data for --finetune-codebook");
    float acc_fp32 = 0, acc_packed = 0;
    int rc = accuracy(m, &test, tcfg->test_limit, &acc_fp32);
    if (!rc && nnz_pack_quantize(m, pcfg) != NNZ_OK) rc = cli_fail("pack", "cannot quantize the model");
    if (!rc) rc = accuracy(m, &test, tcfg->test_limit, &acc_packed);
    nnz_dataset_free(&test);
    if (rc) return rc;
    fprintf(stderr, "test accuracy: checkpoint %.2f%%, packed %.2f%%; finetuning the codebooks for %d epoch%s\n",
            100.0 * acc_fp32, 100.0 * acc_packed, tcfg->epochs, tcfg->epochs == 1 ? "" : "s");
    cli_progress prog;
    cli_progress_init(&prog);
    tcfg->progress = cli_progress_fn;
    tcfg->progress_user = &prog;
    cli_progress_catch_sigint();
    nnz_train_result res;
    nnz_status s = nnz_train_model(m, tcfg, &res);
    cli_progress_finish(&prog);
    if (s == NNZ_ERR_INTERRUPTED) {
        fprintf(stderr, "nnz pack: %s; nothing was written\n", nnz_last_error());
        return CLI_EXIT_FAILURE;
    }
    if (s != NNZ_OK) return cli_fail("pack", "codebook finetuning failed");
    acc[0] = acc_fp32, acc[1] = acc_packed, acc[2] = res.test_accuracy;
    return CLI_EXIT_OK;
}

int cmd_pack(int argc, char **argv) {
    const char *out = NULL, *out_long = NULL, *layers = NULL;
    int bits = 0, conv_bits = 5, linear_bits = 4, dw_bits = 0, layout = 0, threads = 0;
    bool json = false, keep_bn = false;
    nnz_train_config tcfg;
    nnz_train_config_init(&tcfg);
    tcfg.epochs = 0;
    tcfg.lr = NNZ_CODEBOOK_DEFAULT_LR;
    /* AdamW (without decay): a centroid's gradient is a sum over its weights, so its scale goes
     * with the layer's size (3 orders of magnitude between lenet5's conv1 and fc1); Adam's steps
     * do not, one rate fits every layer */
    tcfg.optimizer = NNZ_OPT_ADAMW;
    tcfg.weight_decay = 0.0f;
    char lr_default[32];
    snprintf(lr_default, sizeof lr_default, "%g", (double)NNZ_CODEBOOK_DEFAULT_LR);
    static const char *const layouts[] = {"auto", "dense", "sparse", NULL};
    cli_flag flags[] = {
        FL_STR("-o", &out, "FILE", "The .nnz file to write (written atomically).", NULL),
        FL_STR("--output", &out_long, "FILE", "Same as -o.", NULL),
        FL_INT("--bits", &bits, "N", "k-means bits for every conv and linear weight (overrides the three below).", NULL, 1, 8),
        FL_INT("--conv-bits", &conv_bits, "N", "Bits for convolution weights (2^N shared values per tensor).", "5", 1, 8),
        FL_INT("--linear-bits", &linear_bits, "N", "Bits for linear weights.", "4", 1, 8),
        FL_INT("--dw-bits", &dw_bits, "N",
               "Bits for depthwise convolution weights (groups > 1); 0 = the conv bits.", "0", 0, 8),
        FL_STR("--bits-layer", &layers, "NAME=N,...",
               "Per-layer bits, by node or tensor name, comma-separated; N = 0 keeps the tensor raw fp32.", NULL),
        FL_CHOICE("--layout", &layout, "L",
                  "Weight layout: auto picks sparse (position gaps + indices of the nonzeros) when a tensor has "
                  "exact zeros (pruned weights) and that is smaller.", "auto", layouts),
        FL_INT("--threads", &threads, "N", "Worker threads; 0 = all cores.", "0", 0, 4096),
        FL_BOOL("--json", &json, "Print one JSON line (totals) instead of the table."),
        FL_BOOL("--keep-batchnorm", &keep_bn,
                "Store batch norms as they are (four fp32 tensors each). By default each batch norm that follows a "
                "conv is folded into it first (eval-mode statistics: the conv's weights scaled per channel, a "
                "bias added), and the folded weights are quantized; a conv whose folding would make some channel's "
                "weights outliers (a near-zero running variance) keeps its batch norm."),
        FL_INT("--finetune-codebook", &tcfg.epochs, "EPOCHS",
               "Deep Compression's trained quantization: after k-means, train the shared values (centroids) for "
               "EPOCHS epochs on the training data (a centroid's gradient is the sum of its weights' gradients; "
               "assignments fixed, pruned zeros stay zero, every other parameter frozen), then pack. Prints the "
               "test accuracy before and after; 0 = none.",
               "0", 0, 100000),
        FL_FLOAT("--codebook-lr", &tcfg.lr, "X",
                 "With --finetune-codebook: the centroids' learning rate (AdamW without weight decay, cosine to 0; "
                 "a centroid moves about this much per step).",
                 lr_default, 0, 1e3, true),
        FL_INT("--batch", &tcfg.batch, "N", "With --finetune-codebook: images per step.", "128", 1, 65536),
        FL_STR("--data", &tcfg.data_dir, "DIR", "With --finetune-codebook: the data set the checkpoint was trained on.",
               NNZ_DEFAULT_DATA_DIR),
        FL_INT("--train-limit", &tcfg.train_limit, "N",
               "With --finetune-codebook: train on only the first N training images (0 = all).", "0", 0, 0),
        FL_INT("--test-limit", &tcfg.test_limit, "N",
               "With --finetune-codebook: evaluate on only the first N test images (0 = all).", "0", 0, 0),
        FL_U64("--seed", &tcfg.seed, "N",
               "With --finetune-codebook: seeds the shuffling (same seed and threads, same file).", "42"),
    };
    cli_command cmd = {
        .name = "pack",
        .summary = "compress a checkpoint into a .nnz file (k-means weight sharing + Huffman)",
.usage = "nnz pack CHECKPOINT -o FILE.nnz [--bits N | --conv-bits N --linear-bits N --dw-bits N] [--bits-layer NAME=N,...]\n"
                 "       [--finetune-codebook EPOCHS [--codebook-lr X] [--data DIR] [--train-limit N]]",
        .description =
            "Deep Compression's last two stages: every convolution and linear weight tensor is quantized\n"
            "to at most 2^bits shared values (k-means, linear initialization) and the indices are Huffman\n"
            "coded (canonical, <= 11-bit codes, four interleaved streams). Pruned tensors (exact zeros)\n"
            "store only their nonzeros, with Huffman-coded relative position gaps. Batch norms after a conv\n"
            "are folded into it first, unless a near-dead channel would make the folded weights outliers\n"
            "(--keep-batchnorm keeps them all); biases and other batch norms stay fp32.\n"
            "Prints per-tensor sizes and the compression ratio; 'nnz info FILE.nnz'\n"
            "shows them again, 'nnz run FILE.nnz' runs the model decoding layer by layer.\n"
            "--finetune-codebook adds Deep Compression's trained quantization: the shared values are trained\n"
            "on the training data (weights stay tied to them), so packing loses less accuracy.",
        .example = "  nnz pack lenet5.safetensors -o lenet5.nnz\n  nnz pack mbv2.safetensors -o mbv2.nnz --bits-layer fc=6,stem=0\n"
                   "  nnz pack lenet5.safetensors -o lenet5.nnz --bits 3 --finetune-codebook 1",
        .flags = flags,
        .n_flags = (int)(sizeof flags / sizeof flags[0]),
        .positional = "CHECKPOINT",
        .min_pos = 1,
        .max_pos = 1,
    };
    const char *pos[1];
    int npos = 0;
    int r = cli_parse(&cmd, argc, argv, pos, &npos);
    if (r == CLI_HELP_SHOWN) return CLI_EXIT_OK;
    if (r) return r;
    if (out && out_long) return cli_usage_error(&cmd, "give -o or --output, not both");
    if (!out) out = out_long;
    if (!out) return cli_usage_error(&cmd, "missing the output file (-o FILE.nnz)");
    static const char *const finetune_flags[] = {"--codebook-lr", "--batch", "--data", "--train-limit",
                                                 "--test-limit", "--seed"};
    for (size_t i = 0; i < sizeof finetune_flags / sizeof finetune_flags[0]; i++)
        if (tcfg.epochs == 0 && cli_find_flag(&cmd, finetune_flags[i])->seen)
            return cli_usage_error(&cmd, "%s applies to --finetune-codebook only", finetune_flags[i]);
    nnz_set_threads(threads);
    tcfg.threads = threads;
    tcfg.codebooks = true;
    tcfg.log_every = 50;
    nnz_pack_config cfg;
    nnz_pack_config_init(&cfg);
    cfg.conv_bits = bits ? bits : conv_bits;
    cfg.linear_bits = bits ? bits : linear_bits;
    cfg.depthwise_bits = bits ? bits : dw_bits;
    cfg.layout = layout;
    const char *names[256];
    int nbits[256];
    char *spec = NULL;
    if (layers) {
        spec = strdup(layers);
        int k = spec ? parse_overrides(spec, names, nbits, 256) : -1;
        if (k < 0) {
            free(spec);
            return cli_usage_error(&cmd, "--bits-layer expects NAME=N[,NAME=N...] with N from 0 to 8, got '%s'", layers);
        }
        cfg.n_overrides = k;
        cfg.override_names = names;
        cfg.override_bits = nbits;
    }
    nnz_model *m = NULL;
    if (nnz_checkpoint_load_model(pos[0], &m) != NNZ_OK) {
        free(spec);
        return cli_fail("pack", "cannot load the checkpoint");
    }
    if (!keep_bn) {
        nnz_model *f = NULL;
        int folded = 0;
        if (nnz_pack_fold_batchnorm(m, &f, &folded) != NNZ_OK) {
            nnz_model_free(m);
            free(spec);
            return cli_fail("pack", "cannot fold the batch norms");
        }
        nnz_model_free(m);
        m = f;
        if (folded && !json) printf("folded %d batch norm%s into their convs\n", folded, folded == 1 ? "" : "s");
    }
    float acc[3] = {0};
    if (tcfg.epochs > 0) {
        /* fail before training rather than after: the output must be writable */
        int rc = nnz_check_output_path(out) == NNZ_OK ? finetune(m, &cfg, &tcfg, acc)
                                                      : cli_fail("pack", "cannot write the output");
        if (rc) {
            nnz_model_free(m);
            free(spec);
            return rc;
        }
    }
    nnz_pack_report rep;
    nnz_status s = nnz_pack(m, out, &cfg, &rep);
    nnz_model_free(m);
    free(spec);
    if (s != NNZ_OK) return cli_fail("pack", "cannot pack the model");
    if (json) {
        printf("{\"checkpoint\":");
        cli_json_string(stdout, pos[0]);
        printf(",\"output\":");
        cli_json_string(stdout, out);
        printf(",\"conv_bits\":%d,\"linear_bits\":%d,\"fp32_bytes\":%lld,\"file_bytes\":%lld,\"ratio\":%.3f",
               cfg.conv_bits, cfg.linear_bits, (long long)rep.fp32_bytes, (long long)rep.file_bytes,
               (double)rep.fp32_bytes / (double)rep.file_bytes);
        if (tcfg.epochs > 0)
            printf(",\"finetune_epochs\":%d,\"accuracy_checkpoint\":%.4f,\"accuracy_packed\":%.4f,"
                   "\"accuracy_finetuned\":%.4f",
                   tcfg.epochs, acc[0], acc[1], acc[2]);
        printf("}\n");
    } else {
        if (tcfg.epochs > 0)
            printf("test accuracy: checkpoint %.2f%%, packed %.2f%%, packed + %d epoch%s of codebook finetuning "
                   "%.2f%%\n",
                   100.0 * acc[0], 100.0 * acc[1], tcfg.epochs, tcfg.epochs == 1 ? "" : "s", 100.0 * acc[2]);
        printf("packed %s -> %s (conv %d bits, depthwise conv %d, linear %d)\n\n", pos[0], out, cfg.conv_bits,
               cfg.depthwise_bits ? cfg.depthwise_bits : cfg.conv_bits, cfg.linear_bits);
        cli_print_pack_table(&rep, true);
        if (tcfg.epochs > 0)
            printf("(rmse against the finetuned weights, which are the codebooks' values: 0 where they fit)\n");
    }
    nnz_pack_report_free(&rep);
    return CLI_EXIT_OK;
}
