/* nnz bench: training and inference throughput of a model on random data. */
#include "cli.h"

#include <string.h>

/* --layer: one layer's sparse products against dense GEMM */
static int bench_layer(const char *shape, int rows, float sparsity, const char *format, int iters, uint64_t seed,
                       bool json, cli_command *cmd) {
    nnz_layer_bench_config c = {.m = rows, .sparsity = sparsity, .format = format, .iters = iters, .seed = seed};
    if (!cli_parse_pair(shape, &c.rows, &c.cols))
        return cli_usage_error(cmd, "--layer expects OCxK like 1024x1024, got '%s'", shape);
    nnz_layer_bench_result r;
    if (nnz_bench_layer(&c, &r) != NNZ_OK) return cli_usage_error(cmd, "%s", nnz_last_error());
    static const char *const names[3] = {"forward", "backward_data", "weight_grad"};
    if (!json)
        printf("layer %dx%d, m %d, %s at %.1f%% sparsity (%lld nonzeros, %lld blocks), medians of %d runs\n"
               "%-14s %10s %10s %8s %14s %14s\n", c.rows, c.cols, rows, format, 100.0 * sparsity, (long long)r.nnz,
               (long long)r.nblocks, iters, "product", "dense ms", "sparse ms", "speedup", "actual GFLOP/s",
               "effective");
    for (int p = 0; p < 3; p++) {
        const double sp = r.sparse_seconds[p], de = r.dense_seconds[p];
        if (json)
            printf("{\"layer\":\"%dx%d\",\"m\":%d,\"format\":\"%s\",\"sparsity\":%.4f,\"product\":\"%s\","
                   "\"dense_s\":%.6g,\"sparse_s\":%.6g,\"speedup\":%.3f,\"actual_gflops\":%.2f,"
                   "\"effective_gflops\":%.2f}\n", c.rows, c.cols, rows, format, sparsity, names[p], de, sp, de / sp,
                   r.actual_flops / sp * 1e-9, r.dense_flops / sp * 1e-9);
        else
            printf("%-14s %10.3f %10.3f %7.2fx %14.1f %14.1f\n", names[p], de * 1e3, sp * 1e3, de / sp,
                   r.actual_flops / sp * 1e-9, r.dense_flops / sp * 1e-9);
    }
    return CLI_EXIT_OK;
}

/* The per-layer profile of the timed training steps: ms per step, forward and backward, and the
 * share of the sum; layers whose work another layer does (fused) are counted in one line. */
static void print_layers(const nnz_model *m) {
    const int n = nnz_model_node_count(m);
    double total = 0;
    nnz_node_profile p;
    for (int i = 0; i < n; i++)
        if (nnz_model_profile_node(m, i, &p) == NNZ_OK) total += p.forward_sec + p.backward_sec;
    if (nnz_model_profile_node(m, 0, &p) != NNZ_OK || p.steps == 0 || total <= 0) return;
    printf("per layer, ms per training step (%d steps):\n  %-24s %-16s %9s %9s %6s\n", p.steps, "layer", "op",
           "forward", "backward", "share");
    int folded = 0;
    for (int i = 0; i < n; i++) {
        nnz_model_profile_node(m, i, &p);
        const double f = 1e3 * p.forward_sec / p.steps, b = 1e3 * p.backward_sec / p.steps;
        if (f + b < 0.005) { /* under 5 us a step: its work is done by a neighbour */
            folded++;
            continue;
        }
        printf("  %-24s %-16s %9.2f %9.2f %5.1f%%\n", p.name, p.op, f, b,
               100.0 * (p.forward_sec + p.backward_sec) / total);
    }
    if (folded) printf("  (%d more layers under 5 us a step: fused into a neighbour, or views of their input)\n", folded);
}

static void print_layers_json(const nnz_model *m) {
    printf(",\"layers\":[");
    nnz_node_profile p;
    for (int i = 0; i < nnz_model_node_count(m); i++) {
        nnz_model_profile_node(m, i, &p);
        const int steps = p.steps > 0 ? p.steps : 1;
        printf("%s{\"name\":", i ? "," : "");
        cli_json_string(stdout, p.name);
        printf(",\"op\":\"%s\",\"forward_ms\":%.4f,\"backward_ms\":%.4f}", p.op, 1e3 * p.forward_sec / steps,
               1e3 * p.backward_sec / steps);
    }
    printf("]");
}

int cmd_bench(int argc, char **argv) {
    const char *model = NULL;
    nnz_bench_config bc;
    nnz_bench_config_init(&bc);
    int threads = 0, iters = 0;
    float min_time = (float)bc.min_time;
    uint64_t seed = bc.seed;
    bool json = false;
    int precision = NNZ_F32, mask = NNZ_MASK_DENSE;
    bool bf16_activations = false;
    float sparsity = 0.9f;
    const char *sparse_format = "auto", *mask_block = NULL, *layer = NULL, *format = "bsr:16x16";
    int rows = 256;
    cli_flag flags[] = {
        FL_STR("--model", &model, "NAME",
               "Benchmark a zoo model (28x28x1 inputs, 10 classes) instead of a checkpoint.", NULL),
        FL_INT("--batch", &bc.batch, "N", "Images per step.", "128", 1, 65536),
        FL_INT("--threads", &threads, "N", "Worker threads; 0 = all cores.", "0", 0, 4096),
        FL_INT("--runs", &bc.runs, "R", "Timed runs of each kind; the median run's images/s is reported.", "5", 1,
               1000),
        FL_INT("--iters", &iters, "N",
               "Steps per timed run; 0 = as many as make a run last --min-time, from the warm-up's pace. With "
               "--layer: timed repetitions of each product.", "0 (--layer: 10)", 0, 1000000),
        FL_FLOAT("--min-time", &min_time, "S", "Seconds a timed run lasts at least, when --iters is 0.", "0.3", 0,
                 3600, false),
        FL_U64("--seed", &seed, "N", "Seeds the random input (and a zoo model's weights).", "42"),
        FL_CHOICE("--precision", &precision, "P", CLI_PRECISION_HELP, "fp32", cli_precision_names),
        FL_BOOL("--bf16-activations", &bf16_activations, CLI_BF16_ACTIVATIONS_HELP),
        FL_CHOICE("--mask", &mask, "KIND",
                  "Mask every conv/linear layer but the first and last (as nnz train --mask) before timing; "
                  "masked training keeps the zeros.", "dense (none)", cli_mask_kind_names),
        FL_FLOAT("--sparsity", &sparsity, "S", "Zeros per masked layer (with --mask).", "0.9", 0, 1, true),
        FL_STR("--mask-block", &mask_block, "RxC", "The mask's block (as nnz train).", "16x16 (rbgp: 4x4)"),
        FL_STR("--sparse-format", &sparse_format, "F", CLI_SPARSE_FORMAT_HELP, "auto"),
        FL_STR("--layer", &layer, "OCxK",
               "Time one layer's forward, backward-data and weight gradient, sparse against dense GEMM, instead "
               "of a model.", NULL),
        FL_INT("--rows", &rows, "M", "--layer: activation rows (batch x output pixels).", "256", 1, 1 << 26),
        FL_STR("--format", &format, "F", "--layer: the sparse format, csr or bsr:RxC.", "bsr:16x16"),
        FL_BOOL("--per-layer", &bc.per_layer,
                "Also time each layer of the timed training steps: forward and backward ms per step, and its "
                "share of all layers' time (work fused into another layer counts with that layer)."),
        FL_BOOL("--json", &json, "Print one JSON line instead of text."),
    };
    cli_command cmd = {
        .name = "bench",
        .summary = "measure training and inference speed (images/s, GFLOP/s)",
        .usage = "nnz bench CHECKPOINT|--model NAME|--layer OCxK [--batch N] [--threads N] [--runs R] [--iters N] "
                 "[--per-layer] [--json]",
        .description =
            "Times training steps (forward, loss, backward, SGD update) and inference passes of a model\n"
            "on random data and prints images/s and the achieved GFLOP/s, counting the model's dense\n"
            "forward FLOPs once per inference image and three times per training image. These are\n"
            "effective rates: stride-1 3x3 and 5x5 convolutions run Winograd, with 2.8-4x fewer\n"
            "multiply-adds than counted, so a model of them can pass the CPU's peak. Each kind runs\n"
            "2 untimed warm-up steps, then --runs timed runs, and reports the median run: the protocol\n"
            "bench/torch_bench.py uses for PyTorch. The checkpoint's weights are not changed.\n"
            "'threads wait' says how idle threads waited: a short spin when nothing else ran at\n"
            "start, passive when other tasks did (set OMP_WAIT_POLICY or GOMP_SPINCOUNT to choose).",
        .example = "  nnz bench mbv2-tiny.safetensors\n  nnz bench --model lenet5 --batch 256 --threads 1 --json\n"
                   "  nnz bench --model mbv2-tiny --precision bf16 --per-layer\n"
                   "  nnz bench --model vgg8 --mask block --sparsity 0.9 --sparse-format bsr:16x16\n"
                   "  nnz bench --layer 1024x1024 --rows 256 --sparsity 0.9 --format csr",
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
    if (layer) {
        if (npos || model) return cli_usage_error(&cmd, "--layer times a layer: give no CHECKPOINT or --model");
        if (bc.per_layer) return cli_usage_error(&cmd, "--per-layer times a model's layers: not with --layer");
        nnz_set_threads(threads);
        return bench_layer(layer, rows, sparsity, format, iters ? iters : 10, seed, json, &cmd);
    }
    if ((npos == 1) == (model != NULL)) return cli_usage_error(&cmd, "give either a CHECKPOINT or --model NAME");
    if (bf16_activations && precision != NNZ_BF16) return cli_usage_error(&cmd, "--bf16-activations needs --precision bf16");
    const char *what = npos ? pos[0] : model;
    nnz_set_threads(threads);

    nnz_model *m = NULL;
    if ((r = cli_load_model("bench", what, seed, &m, NULL))) return r;
    nnz_model_set_precision(m, (nnz_dtype)precision);
    nnz_model_set_bf16_activations(m, bf16_activations);
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
    bc.iters = iters;
    bc.min_time = min_time;
    bc.seed = seed;
    nnz_status s = nnz_bench_model(m, &bc, &br);
    nnz_model_stats st;
    nnz_model_get_stats(m, &st);
    if (s != NNZ_OK) {
        nnz_model_free(m);
        return cli_fail("bench", "benchmark failed");
    }
    if (json) {
        printf("{\"model\":");
        cli_json_string(stdout, what);
        printf(",\"batch\":%d,\"threads\":%d,\"runs\":%d,\"train_iters\":%d,\"infer_iters\":%d,\"isa\":\"%s\","
               "\"flops_per_image\":%lld,\"openblas_core\":\"%s\",\"precision\":\"%s\",\"train_images_per_sec\":%.1f,\"infer_images_per_sec\":%.1f,\"train_gflops\":%.3f,"
               "\"infer_gflops\":%.3f",
               br.batch, br.threads, br.runs, br.train_iters, br.infer_iters, nnz_isa_name(nnz_isa_active()),
               (long long)st.flops, nnz_blas_core(),
               cli_precision_names[precision], br.train_images_per_sec, br.infer_images_per_sec, br.train_gflops, br.infer_gflops);
        if (bf16_activations) printf(",\"bf16_activations\":true");
        printf(",\"omp_wait\":");
        cli_json_string(stdout, nnz_omp_wait()); /* the user's OMP_WAIT_POLICY may hold anything */
        if (bc.per_layer) print_layers_json(m);
        printf("}\n");
    } else {
        printf("model: %s  batch %d  threads %d  isa %s  precision %s%s  (median of %d runs of %d training / %d "
               "inference steps)\nthreads wait: %s\n", what, br.batch, br.threads, nnz_isa_name(nnz_isa_active()),
               cli_precision_names[precision], bf16_activations ? " (bf16 activations)" : "", br.runs, br.train_iters, br.infer_iters, nnz_omp_wait());
        printf("training:  %10.1f images/s  %8.2f GFLOP/s\n", br.train_images_per_sec, br.train_gflops);
        printf("inference: %10.1f images/s  %8.2f GFLOP/s\n", br.infer_images_per_sec, br.infer_gflops);
        if (bc.per_layer) print_layers(m);
    }
    nnz_model_free(m);
    return CLI_EXIT_OK;
}
