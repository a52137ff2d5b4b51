/* nnz bench: training and inference throughput of a model on random data. */
#include "cli.h"

#include <string.h>

int cmd_bench(int argc, char **argv) {
    const char *model = NULL;
    int batch = 128, threads = 0, iters = 10;
    uint64_t seed = 42;
    bool json = false;
    int precision = NNZ_F32, mask = NNZ_MASK_DENSE;
    float sparsity = 0.9f;
    const char *sparse_format = "auto", *mask_block = NULL;
    cli_flag flags[] = {
        FL_STR("--model", &model, "NAME",
               "Benchmark a zoo model (28x28x1 inputs, 10 classes) instead of a checkpoint.", NULL),
        FL_INT("--batch", &batch, "N", "Images per step.", "128", 1, 65536),
        FL_INT("--threads", &threads, "N", "Worker threads; 0 = all cores.", "0", 0, 4096),
        FL_INT("--iters", &iters, "N", "Timed iterations of each kind (after 2 untimed warm-up ones).", "10", 1,
               1000000),
        FL_U64("--seed", &seed, "N", "Seeds the random input (and a zoo model's weights).", "42"),
        FL_CHOICE("--precision", &precision, "P", CLI_PRECISION_HELP, "fp32", cli_precision_names),
        FL_CHOICE("--mask", &mask, "KIND",
                  "Mask every conv/linear layer but the first and last (as nnz train --mask) before timing; "
                  "masked training keeps the zeros.", "dense (none)", cli_mask_kind_names),
        FL_FLOAT("--sparsity", &sparsity, "S", "Zeros per masked layer (with --mask).", "0.9", 0, 1, true),
        FL_STR("--mask-block", &mask_block, "RxC", "The mask's block (as nnz train).", "16x16 (rbgp: 4x4)"),
        FL_STR("--sparse-format", &sparse_format, "F", CLI_SPARSE_FORMAT_HELP, "auto"),
        FL_BOOL("--json", &json, "Print one JSON line instead of text."),
    };
    cli_command cmd = {
        .name = "bench",
        .summary = "measure training and inference speed (images/s, GFLOP/s)",
        .usage = "nnz bench CHECKPOINT|--model NAME [--batch N] [--threads N] [--iters N] [--json]",
        .description =
            "Times training steps (forward, loss, backward, SGD update) and inference passes of a model\n"
            "on random data, excluding 2 warm-up iterations, and prints images/s and the achieved\n"
            "GFLOP/s, counting the model's dense forward FLOPs once per inference image and three\n"
            "times per training image. The checkpoint's weights are not changed.",
        .example = "  nnz bench mbv2-tiny.safetensors\n  nnz bench --model lenet5 --batch 256 --threads 1 --json\n"
                   "  nnz bench --model vgg8 --mask block --sparsity 0.9 --sparse-format bsr:16x16",
        .flags = flags,
        .n_flags = (int)(sizeof flags / sizeof flags[0]),
        .positional = "CHECKPOINT",
        .min_pos = 0,
        .max_pos = 1,
    };
    const char *pos[1];
    int npos = 0;
    int r = cli_parse(&cmd, argc, argv, pos, &npos);
    if (r == CLI_HELP_SHOWN) return CLI_EXIT_OK;
    if (r) return r;
    if ((npos == 1) == (model != NULL)) return cli_usage_error(&cmd, "give either a CHECKPOINT or --model NAME");
    const char *what = npos ? pos[0] : model;
    nnz_set_threads(threads);

    nnz_model *m = NULL;
    if ((r = cli_load_model("bench", what, seed, &m, NULL))) return r;
    nnz_model_set_precision(m, (nnz_dtype)precision);
    nnz_mask_spec spec = {.kind = (nnz_mask_kind)mask, .sparsity = sparsity};
    if (mask_block && !cli_parse_pair(mask_block, &spec.block_rows, &spec.block_cols)) {
        nnz_model_free(m);
        return cli_usage_error(&cmd, "--mask-block expects RxC like 16x16, got '%s'", mask_block);
    }
    if (nnz_model_set_sparse_format(m, sparse_format) != NNZ_OK) {
        nnz_model_free(m);
        return cli_usage_error(&cmd, "%s", nnz_last_error());
    }
    if (nnz_model_apply_masks(m, &spec, seed, NULL, 0) != NNZ_OK) {
        nnz_model_free(m);
        return cli_fail("bench", "cannot mask the model");
    }
    nnz_bench_result br;
    nnz_status s = nnz_bench_model(m, batch, iters, seed, &br);
    nnz_model_stats st;
    nnz_model_get_stats(m, &st);
    nnz_model_free(m);
    if (s != NNZ_OK) return cli_fail("bench", "benchmark failed");
    if (json) {
        printf("{\"model\":");
        cli_json_string(stdout, what);
        printf(",\"batch\":%d,\"threads\":%d,\"iters\":%d,\"isa\":\"%s\",\"flops_per_image\":%lld,"
               "\"precision\":\"%s\",\"train_images_per_sec\":%.1f,\"infer_images_per_sec\":%.1f,\"train_gflops\":%.3f,"
               "\"infer_gflops\":%.3f}\n",
               br.batch, br.threads, br.iters, nnz_isa_name(nnz_isa_active()), (long long)st.flops,
               cli_precision_names[precision], br.train_images_per_sec, br.infer_images_per_sec, br.train_gflops, br.infer_gflops);
    } else {
        printf("model: %s  batch %d  threads %d  isa %s  precision %s  (%d timed iterations)\n", what, br.batch,
               br.threads, nnz_isa_name(nnz_isa_active()), cli_precision_names[precision], br.iters);
        printf("training:  %10.1f images/s  %8.2f GFLOP/s\n", br.train_images_per_sec, br.train_gflops);
        printf("inference: %10.1f images/s  %8.2f GFLOP/s\n", br.infer_images_per_sec, br.infer_gflops);
    }
    return CLI_EXIT_OK;
}
