/* nnz eval: accuracy and loss of a checkpoint on a data set's test split. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int cmd_eval(int argc, char **argv) {
    const char *data = NNZ_DEFAULT_DATA_DIR;
    int batch = 256, threads = 0, limit = 0;
    bool json = false, train_split = false;
    int precision = NNZ_F32;
    const char *sparse_format = "auto", *budget_text = NULL;
    cli_flag flags[] = {
        FL_STR("--data", &data, "DIR", "Data set directory (MNIST-style IDX or CIFAR-10 binary).",
               NNZ_DEFAULT_DATA_DIR),
        FL_BOOL("--train-split", &train_split, "Evaluate on the training split instead of the test split."),
        FL_INT("--batch", &batch, "N", "Images per forward pass.", "256", 1, 65536),
        FL_INT("--threads", &threads, "N", "Worker threads; 0 = all cores.", "0", 0, 4096),
        FL_INT("--limit", &limit, "N", "Evaluate only the first N images (0 = all).", "0", 0, 0),
        FL_CHOICE("--precision", &precision, "P", CLI_PRECISION_HELP, "fp32", cli_precision_names),
        FL_STR("--sparse-format", &sparse_format, "F", CLI_SPARSE_FORMAT_HELP, "auto"),
        FL_STR("--memory-budget", &budget_text, "BYTES",
               "Most bytes the process may hold resident (peak RSS), e.g. 64M, 1G (binary units): the batch is "
               "lowered to the largest that fits (the results do not depend on it), or the run refused (exit 1).",
               "unlimited"),
        FL_BOOL("--json", &json, "Print one JSON line instead of text."),
    };
    cli_command cmd = {
        .name = "eval",
        .summary = "measure a checkpoint's accuracy on a test set",
        .usage = "nnz eval CHECKPOINT|FILE.nnz [--data DIR] [flags]",
        .description = "Loads a checkpoint written by 'nnz train' and runs it in inference mode (batch norm uses\n"
                       "its running statistics, dropout is off) over the test split of the data set, printing\n"
                       "the top-1 accuracy, the mean cross-entropy loss and the throughput. A .nnz file (nnz pack)\n"
                       "is decoded whole first; 'nnz run' runs one decoding layer by layer instead.",
        .example = "  nnz eval mbv2-tiny.safetensors\n  nnz eval lenet5.safetensors --limit 1000 --json",
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
    nnz_set_threads(threads);
    size_t budget = 0;
    if (budget_text && !nnz_parse_bytes(budget_text, &budget)) return cli_usage_error(&cmd, CLI_BUDGET_ERROR, budget_text);
    if (budget) { /* only the first --limit images are read */
        cli_budget_malloc();
        size_t need, base, bytes;
        int rc = cli_budget_data("eval", data, train_split, limit, budget, &need, &base, &bytes);
        if (rc) return rc;
        /* a checkpoint is read whole while the model (about its size: weights and gradients) is
         * built; the data set comes after it (a .nnz file's check comes after loading) */
        struct stat st;
        if (!nnz_is_packed_file(pos[0]) && stat(pos[0], &st) == 0) {
            size_t file = (size_t)st.st_size, with_model = base + 2 * file + (1 << 20);
            if (need + file > with_model) with_model = need + file;
            if (with_model > budget) {
                fprintf(stderr,
                        "nnz eval: loading '%s' (%zu bytes) and the data set (%zu bytes) takes the process to about "
                        "%zu bytes, over --memory-budget %zu; raise --memory-budget to at least that\n",
                        pos[0], file, bytes, with_model, budget);
                return CLI_EXIT_FAILURE;
            }
        }
    }

    nnz_model *m = NULL;
    if (nnz_is_packed_file(pos[0])) { /* a .nnz file: decoded whole into a model */
        if (nnz_packed_load_model(pos[0], &m) != NNZ_OK) return cli_fail("eval", "cannot load the .nnz model");
    } else if (nnz_checkpoint_load_model(pos[0], &m) != NNZ_OK)
        return cli_fail("eval", "cannot load the checkpoint");
    nnz_model_set_precision(m, (nnz_dtype)precision);
    if (nnz_model_set_sparse_format(m, sparse_format) != NNZ_OK) {
        nnz_model_free(m);
        return cli_usage_error(&cmd, "%s", nnz_last_error());
    }
    nnz_dataset d;
    if (nnz_dataset_load_first(data, train_split, limit, &d) != NNZ_OK) { /* only --limit images are evaluated */
        nnz_model_free(m);
        return cli_fail("eval", "cannot load the data");
    }
    nnz_status s = NNZ_OK;
    size_t estimate = 0;
    const int wanted = batch;
    if (s == NNZ_OK && budget) {
        if ((s = nnz_evaluate_fit(m, &d, limit, budget, &batch, &estimate)) != NNZ_OK) {
            nnz_dataset_free(&d);
            nnz_model_free(m);
            return cli_fail("eval", "the evaluation does not fit the memory budget");
        }
        if (batch < wanted)
            fprintf(stderr, "nnz eval: note: --batch %d lowered to %d to fit --memory-budget %zu (the results do not "
                    "depend on the batch)\n", wanted, batch, budget);
    }
    nnz_eval_result er;
    if (s == NNZ_OK) s = nnz_evaluate(m, &d, batch, limit, &er);
    nnz_dataset_free(&d);
    /* at bf16 the sparse layers' forward kernel is a decision of its own (bf16 SpMM or fp32): logged */
    char *table = NULL;
    if (s == NNZ_OK && !json && precision == NNZ_BF16 && (table = malloc(1 << 16))) {
        int with_zeros = 0;
        if (nnz_model_sparse_summary(m, table, 1 << 16, &with_zeros) != NNZ_OK || with_zeros == 0) table[0] = '\0';
    }
    nnz_model_free(m);
    if (s != NNZ_OK) {
        free(table);
        return cli_fail("eval", "evaluation failed");
    }
    if (table && table[0]) printf("sparse layers (--precision bf16, --sparse-format %s):\n%s", sparse_format, table);
    free(table);
    if (json) {
        printf("{\"checkpoint\":");
        cli_json_string(stdout, pos[0]);
        printf(",\"precision\":\"%s\",\"split\":\"%s\",\"images\":%d,\"accuracy\":%.6f,\"loss\":%.6f,\"images_per_sec\":%.1f,"
               "\"batch\":%d,\"budget_bytes\":%zu,\"estimated_bytes\":%zu,\"peak_resident_bytes\":%zu}\n",
               cli_precision_names[precision], train_split ? "train" : "test", er.n, er.accuracy, er.loss, er.images_per_sec,
               batch, budget, estimate, nnz_peak_resident_bytes());
    } else {
        printf("images: %d (%s split)\nloss: %.4f\nthroughput: %.0f images/s\naccuracy: %.2f%%\n", er.n,
               train_split ? "train" : "test", er.loss, er.images_per_sec, 100.0 * er.accuracy);
        if (budget) {
            char pk[32], est[32], bud[32];
            cli_group_digits((int64_t)nnz_peak_resident_bytes(), pk, sizeof pk);
            cli_group_digits((int64_t)estimate, est, sizeof est);
            cli_group_digits((int64_t)budget, bud, sizeof bud);
            printf("memory: peak resident %s bytes (estimated %s, budget %s), batch %d\n", pk, est, bud, batch);
        }
    }
    return CLI_EXIT_OK;
}
