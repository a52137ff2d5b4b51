/* nnz run: inference from a .nnz file, decoding each layer's weights just before it runs. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

int cmd_run(int argc, char **argv) {
    const char *data = NNZ_DEFAULT_DATA_DIR, *budget_text = NULL;
    int batch = 0, threads = 0, limit = 0;
    bool json = false, no_prefetch = false;
    cli_flag flags[] = {
        FL_STR("--data", &data, "DIR", "Data set directory (its test split is used).", NNZ_DEFAULT_DATA_DIR),
        FL_INT("--batch", &batch, "N", "Images per forward pass; 0 = the largest that fits the budget (at most 256).",
               "0 (64 without a budget)", 0, 65536),
        FL_STR("--memory-budget", &budget_text, "BYTES",
               "Most bytes the process may hold resident (peak RSS), e.g. 32M, 1G (binary units): the data set, "
               "the compressed file, decoded weights, activations, scratch and the BLAS/OpenMP runtime at --threads. "
               "The batch is the largest that fits, or a --batch that does not is refused (exit 1).",
               "unlimited"),
        FL_INT("--limit", &limit, "N", "Run only the first N test images (0 = all).", "0", 0, 0),
        FL_INT("--threads", &threads, "N", "Worker threads; 0 = all cores.", "0", 0, 4096),
        FL_BOOL("--no-prefetch", &no_prefetch, "Decode each layer on the main thread instead of overlapping it."),
        FL_BOOL("--json", &json, "Print one JSON line instead of text."),
    };
    cli_command cmd = {
        .name = "run",
        .summary = "run a .nnz model, decoding layer by layer under a memory budget",
        .usage = "nnz run FILE.nnz [--data DIR] [--batch N] [--memory-budget BYTES] [--limit N]",
        .description =
            "Runs a compressed model (nnz pack) on the test split without ever holding all of its\n"
            "decoded weights: each layer's weights are Huffman-decoded into a buffer just before the\n"
            "layer runs (the next layer's on a second thread while this one computes), and activations\n"
            "are freed after their last use. With --memory-budget the process's peak resident memory\n"
            "(the data set, kept to --limit images, the compressed file, decoded weights, activations,\n"
            "scratch and the libraries' runtime) is estimated before anything runs and stays within it:\n"
            "the batch is chosen to fit, or refused when --batch does not. Prints the accuracy, the\n"
            "throughput, the bytes the runner counted and the process's measured peak RSS.",
        .example = "  nnz run lenet5.nnz --memory-budget 32M\n  nnz run mbv2.nnz --batch 32 --limit 1000 --json",
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
    if (budget_text) {
        cli_budget_malloc();
        int rc = cli_budget_data("run", data, false, limit, cfg.memory_budget, NULL, NULL, NULL);
        if (rc) return rc;
    }
    cfg.batch = batch;
    cfg.limit = limit;
    cfg.prefetch = !no_prefetch;
    nnz_set_threads(threads);
    nnz_dataset d;
    if (nnz_dataset_load_first(data, false, limit, &d) != NNZ_OK) /* only the first --limit images are run */
        return cli_fail("run", "cannot load the data");
    nnz_run_result res;
    nnz_status s = nnz_run_packed(pos[0], &d, &cfg, &res);
    nnz_dataset_free(&d);
    if (s != NNZ_OK)
        return cli_fail("run", cfg.memory_budget && s == NNZ_ERR_NOMEM ? "the run does not fit the memory budget"
                                                                        : "cannot run the model");
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    if (json) {
        printf("{\"model\":");
        cli_json_string(stdout, pos[0]);
        printf(",\"images\":%d,\"batch\":%d,\"prefetch\":%s,\"accuracy\":%.6f,\"images_per_sec\":%.1f,"
               "\"seconds\":%.3f,\"decode_wait_seconds\":%.3f,\"budget_bytes\":%zu,\"peak_bytes\":%zu,"
               "\"peak_weight_bytes\":%zu,\"peak_activation_bytes\":%zu,\"file_bytes\":%zu,\"estimated_bytes\":%zu,"
               "\"peak_resident_bytes\":%zu,\"max_rss_kib\":%ld}\n",
               res.n, res.batch, res.prefetch ? "true" : "false", res.accuracy, res.images_per_sec, res.seconds,
               res.decode_seconds, res.budget, res.peak_bytes, res.peak_weight_bytes, res.peak_act_bytes,
               res.file_bytes, res.memory_estimate, res.peak_resident, ru.ru_maxrss);
    } else {
        char pk[32], bw[32], ba[32], fb[32], est[32], rss[32], bud[32] = "unlimited";
        cli_group_digits((int64_t)res.peak_bytes, pk, sizeof pk);
        cli_group_digits((int64_t)res.peak_weight_bytes, bw, sizeof bw);
        cli_group_digits((int64_t)res.peak_act_bytes, ba, sizeof ba);
        cli_group_digits((int64_t)res.file_bytes, fb, sizeof fb);
        cli_group_digits((int64_t)res.memory_estimate, est, sizeof est);
        cli_group_digits((int64_t)res.peak_resident, rss, sizeof rss);
        if (res.budget) cli_group_digits((int64_t)res.budget, bud, sizeof bud);
        printf("images: %d (test split), batch %d, decode %s\n", res.n, res.batch,
               res.prefetch ? "overlapped (second thread)" : "on the main thread");
        printf("throughput: %.0f images/s (%.2f s, of which %.2f s waiting for decoding)\n", res.images_per_sec,
               res.seconds, res.decode_seconds);
        printf("memory: peak resident %s bytes (estimated %s, budget %s); the runner held at most %s bytes "
               "(decoded weights %s + activations/scratch %s)\n", rss, est, bud, pk, bw, ba);
        printf("compressed model: %s bytes held\n", fb);
        printf("accuracy: %.2f%%\n", 100.0 * res.accuracy);
    }
    return CLI_EXIT_OK;
}
