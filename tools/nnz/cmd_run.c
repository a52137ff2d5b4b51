/* nnz run: inference from a .nnz file, decoding each layer's weights just before it runs. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static const char *const plan_names[] = {"fixed", "per-layer", NULL};

static void print_note(const char *line, void *user) { fprintf((FILE *)user, "%s\n", line); }

int cmd_run(int argc, char **argv) {
    const char *data = NNZ_DEFAULT_DATA_DIR, *budget_text = NULL;
    int batch = 0, threads = 0, limit = 0, plan = 0, synthetic = 0;
    float latency = 0;
    bool json = false, no_prefetch = false, dry_run = false;
    cli_flag flags[] = {
        FL_STR("--data", &data, "DIR", "Data set directory (its test split is used).", NNZ_DEFAULT_DATA_DIR),
        FL_INT("--synthetic", &synthetic, "N",
               "Run on N random images of the model's input shape instead of --data (for models no data set fits, "
               "e.g. alexnet's 224x224x3; the labels are random too, so the accuracy means nothing).",
               "0 (off)", 0, 1 << 20),
        FL_CHOICE("--plan", &plan, "PLAN",
                  "fixed: one batch for every layer, each layer decoded once per batch. per-layer: a super-batch of "
                  "images, each layer running over it in chunks of its own batch size and decoded once per "
                  "super-batch; the planner picks the super-batch and the chunks for the highest estimated "
                  "throughput within --memory-budget and --latency-budget and prints the plan.",
                  "per-layer when --memory-budget or --latency-budget is given without --batch, else fixed",
                  plan_names),
        FL_INT("--batch", &batch, "N",
               "fixed plan: images per forward pass, 0 = the largest that fits the budget (at most 256). per-layer "
               "plan: the super-batch, 0 = the planner's choice (at most 1024).",
               "0 (64 without a budget)", 0, 65536),
        FL_STR("--memory-budget", &budget_text, "BYTES",
               "Most bytes the process may hold resident (peak RSS), e.g. 32M, 1G (binary units): the data set, "
               "the compressed file, decoded weights, activations, scratch and the BLAS/OpenMP runtime at --threads. "
               "The batch (or plan) is chosen to fit, or a --batch that does not is refused (exit 1).",
               "unlimited"),
        FL_FLOAT("--latency-budget", &latency, "MS",
                 "Most milliseconds one super-batch (fixed plan: one batch) may take by the cost model: decoding "
                 "every layer once plus computing all of its images, at rates measured before the run. An image's "
                 "answer is ready that long after its super-batch starts (waiting for the super-batch to fill is not "
                 "counted). The slowest super-batch measured is printed; a plan that cannot meet it exits 1.",
                 "none", 0, 1e9, true),
        FL_INT("--limit", &limit, "N", "Run only the first N test images (0 = all).", "0", 0, 0),
        FL_INT("--threads", &threads, "N", "Worker threads; 0 = all cores.", "0", 0, 4096),
        FL_BOOL("--no-prefetch", &no_prefetch,
                "Decode each layer on the main thread instead of overlapping it (the fixed plan; a per-layer plan "
                "always decodes on the main thread, once per super-batch)."),
        FL_BOOL("--dry-run", &dry_run,
                "Choose the batch (fixed plan) or the plan (per-layer: the cost model is measured), print it and "
                "the memory estimate, and run no image."),
        FL_BOOL("--json", &json, "Print one JSON line instead of text (the plan goes to stderr)."),
    };
    cli_command cmd = {
        .name = "run",
        .summary = "run a .nnz model, decoding layer by layer under a memory budget",
        .usage = "nnz run FILE.nnz [--data DIR | --synthetic N] [--plan fixed|per-layer] [--batch N]\n"
                 "               [--memory-budget BYTES] [--latency-budget MS] [--limit N]",
        .description =
            "Runs a compressed model (nnz pack) on the test split without ever holding all of its\n"
            "decoded weights: each layer's weights are Huffman-decoded into a buffer just before the\n"
            "layer runs (the next layer's on a second thread while this one computes), and activations\n"
            "are freed after their last use. With --memory-budget the process's peak resident memory\n"
            "(the data set, kept to --limit images, the compressed file, decoded weights, activations,\n"
            "scratch and the libraries' runtime) is estimated before anything runs and stays within it:\n"
            "the batch is chosen to fit, or refused when --batch does not. Prints the accuracy, the\n"
            "throughput, the bytes the runner counted and the process's measured peak RSS.\n"
            "\n"
            "With a budget the default plan is per-layer (Vooturi et al. 2017): layers whose cost is\n"
            "decoding and streaming big weights (fc layers) run the whole super-batch at once, decoded\n"
            "once; layers with big activations (early convs) run it in small chunks. The plan (each\n"
            "layer's batch, and why) is printed before the run; results do not depend on the plan.",
        .example = "  nnz run lenet5.nnz --memory-budget 32M\n  nnz run mbv2.nnz --batch 32 --limit 1000 --json\n"
                   "  nnz run alexnet.nnz --synthetic 64 --memory-budget 320M --latency-budget 5000",
        .flags = flags,
        .n_flags = (int)(sizeof flags / sizeof flags[0]),
        .positional = "FILE.nnz",
        .min_pos = 1,
        .max_pos = 1,
    };
    const char *pos[1];
    int npos = 0;
    int r = cli_parse(&cmd, argc, argv, pos, &npos);
    if (r == CLI_HELP_SHOWN) return CLI_EXIT_OK;
    if (r) return r;
    nnz_run_config cfg;
    nnz_run_config_init(&cfg);
    if (budget_text && !nnz_parse_bytes(budget_text, &cfg.memory_budget))
        return cli_usage_error(&cmd, CLI_BUDGET_ERROR, budget_text);
    if (synthetic && flags[0].seen) return cli_usage_error(&cmd, "--synthetic and --data exclude each other");
    bool plan_seen = false;
    for (int i = 0; i < cmd.n_flags; i++)
        if (strcmp(flags[i].name, "--plan") == 0) plan_seen = flags[i].seen;
    if (!plan_seen) plan = (budget_text || latency > 0) && !batch ? NNZ_RUN_PLAN_PER_LAYER : NNZ_RUN_PLAN_FIXED;
    if (plan == NNZ_RUN_PLAN_PER_LAYER && no_prefetch)
        return cli_usage_error(&cmd, "--no-prefetch is for --plan fixed (a per-layer plan never prefetches)");
    if (budget_text) {
        cli_budget_malloc();
        if (!synthetic) {
            int rc = cli_budget_data("run", data, false, limit, cfg.memory_budget, NULL, NULL, NULL);
            if (rc) return rc;
        }
    }
    cfg.batch = batch;
    cfg.limit = limit;
    cfg.prefetch = !no_prefetch;
    cfg.plan = (nnz_run_plan_kind)plan;
    cfg.latency_budget_ms = latency;
    cfg.synthetic = synthetic;
    cfg.dry_run = dry_run;
    cfg.note = print_note;
    cfg.note_user = json ? stderr : stdout;
    nnz_set_threads(threads);
    nnz_dataset d = {0};
    if (!synthetic && nnz_dataset_load_first(data, false, limit, &d) != NNZ_OK) /* only the first --limit images */
        return cli_fail("run", "cannot load the data");
    nnz_run_result res;
    nnz_status s = nnz_run_packed(pos[0], synthetic ? NULL : &d, &cfg, &res);
    nnz_dataset_free(&d);
    if (s != NNZ_OK)
        return cli_fail("run", cfg.memory_budget && s == NNZ_ERR_NOMEM ? "the run does not fit the memory budget"
                               : latency > 0 && s == NNZ_ERR_INVALID_ARG ? "the run cannot meet the latency budget"
                                                                         : "cannot run the model");
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    if (json) {
        printf("{\"model\":");
        cli_json_string(stdout, pos[0]);
        printf(",\"images\":%d,\"plan\":\"%s\",\"batch\":%d,\"stages\":%d,\"layer_batches\":\"%s\",\"prefetch\":%s,\"accuracy\":%.6f,\"images_per_sec\":%.1f,"
               "\"seconds\":%.3f,\"decode_wait_seconds\":%.3f,\"budget_bytes\":%zu,\"peak_bytes\":%zu,"
               "\"peak_weight_bytes\":%zu,\"peak_activation_bytes\":%zu,\"file_bytes\":%zu,\"estimated_bytes\":%zu,"
               "\"peak_resident_bytes\":%zu,\"max_rss_kib\":%ld,\"est_images_per_sec\":%.1f,\"est_latency_ms\":%.3f,"
               "\"max_latency_ms\":%.3f,\"latency_budget_ms\":%g,\"calibrate_seconds\":%.3f,\"logits_checksum\":\"%016llx\"}\n",
               res.n, plan_names[res.plan], res.batch, res.stages, res.layer_batches, res.prefetch ? "true" : "false", res.accuracy, res.images_per_sec, res.seconds,
               res.decode_seconds, res.budget, res.peak_bytes, res.peak_weight_bytes, res.peak_act_bytes,
               res.file_bytes, res.memory_estimate, res.peak_resident, ru.ru_maxrss, res.est_images_per_sec,
               res.est_latency_ms, res.max_latency_ms, (double)latency, res.calibrate_seconds,
               (unsigned long long)res.logits_checksum);
    } else if (dry_run) {
        char est[32], bud[32] = "unlimited";
        cli_group_digits((int64_t)res.memory_estimate, est, sizeof est);
        if (res.budget) cli_group_digits((int64_t)res.budget, bud, sizeof bud);
        printf("dry run: %s plan, batch %d (%s), estimated peak resident %s bytes (budget %s); no image was run\n",
               plan_names[res.plan], res.batch, res.layer_batches, est, bud);
    } else {
        char pk[32], bw[32], ba[32], fb[32], est[32], rss[32], bud[32] = "unlimited";
        cli_group_digits((int64_t)res.peak_bytes, pk, sizeof pk);
        cli_group_digits((int64_t)res.peak_weight_bytes, bw, sizeof bw);
        cli_group_digits((int64_t)res.peak_act_bytes, ba, sizeof ba);
        cli_group_digits((int64_t)res.file_bytes, fb, sizeof fb);
        cli_group_digits((int64_t)res.memory_estimate, est, sizeof est);
        cli_group_digits((int64_t)res.peak_resident, rss, sizeof rss);
        if (res.budget) cli_group_digits((int64_t)res.budget, bud, sizeof bud);
        if (res.plan == NNZ_RUN_PLAN_PER_LAYER)
            printf("images: %d (%s), per-layer plan: super-batch %d in %d stage%s, each layer decoded once per "
                   "super-batch\n", res.n, synthetic ? "synthetic" : "test split", res.batch, res.stages,
                   res.stages == 1 ? "" : "s");
        else
            printf("images: %d (%s), batch %d, decode %s\n", res.n, synthetic ? "synthetic" : "test split", res.batch,
                   res.prefetch ? "overlapped (second thread)" : "on the main thread");
        printf("throughput: %.0f images/s (%.2f s, of which %.2f s waiting for decoding)\n", res.images_per_sec,
               res.seconds, res.decode_seconds);
        printf("memory: peak resident %s bytes (estimated %s, budget %s); the runner held at most %s bytes "
               "(decoded weights %s + activations/scratch %s)\n", rss, est, bud, pk, bw, ba);
        printf("compressed model: %s bytes held\n", fb);
        if (res.est_latency_ms > 0 || latency > 0) {
            char lb[32] = "none";
            if (latency > 0) snprintf(lb, sizeof lb, "%g ms", (double)latency);
            printf("latency: slowest %s %.1f ms (estimated %.1f ms, budget %s)%s\n",
                   res.plan == NNZ_RUN_PLAN_PER_LAYER ? "super-batch" : "batch", res.max_latency_ms, res.est_latency_ms,
                   lb, latency > 0 && res.max_latency_ms > latency ? ": over the budget (the estimate was wrong)" : "");
        }
        printf("accuracy: %.2f%%%s\n", 100.0 * res.accuracy, synthetic ? " (random labels)" : "");
    }
    return CLI_EXIT_OK;
}
