/* nnz: the command-line tool. Dispatches to one file per subcommand.
 * Exit codes: 0 ok, 1 runtime failure, 2 usage error. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name, *summary;
    int (*fn)(int argc, char **argv);
} subcommand;

/* One row per subcommand (cmd_<name>.c). */
static const subcommand commands[] = {
    {"train", "train a model on an image data set and save a checkpoint", cmd_train},
    {"eval", "measure a checkpoint's accuracy on a test set", cmd_eval},
    {"info", "show a checkpoint's architecture, parameter count, size and FLOPs", cmd_info},
    {"bench", "measure training and inference speed (images/s, GFLOP/s)", cmd_bench},
    {"pack", "compress a checkpoint into a .nnz file (k-means weight sharing + Huffman)", cmd_pack},
    {"run", "run a .nnz model, decoding layer by layer under a memory budget", cmd_run},
    {"mask", "build and show a weight mask (RBGP, HBsNN, block): factor graphs, spectral gap, bytes, picture", cmd_mask},
    {"shrink", "DepthShrinker: remove activations, merge blocks into dense convs", cmd_shrink},
    {"report", "draw a checkpoint's per-layer sparsity, or accuracy-vs-sparsity curves, as SVG", cmd_report},
};
#define N_COMMANDS ((int)(sizeof commands / sizeof commands[0]))

static void print_help(FILE *out) {
    fprintf(out,
            "nnz %s: sparse, compact neural networks, trained and run fast on CPUs.\n\n"
            "usage: nnz <command> [arguments]     (nnz <command> --help for its flags)\n\ncommands:\n",
            nnz_version());
    for (int i = 0; i < N_COMMANDS; i++) fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(out,
            "\nother:\n  nnz --version   version and CPU features\n  nnz --help      this text\n\n"
            "start with:\n  nnz train --model lenet5 --epochs 2\n  nnz info lenet5.safetensors\n"
            "  nnz eval lenet5.safetensors\n\n"
            "environment:\n  NNZ_ISA=ref|avx2|avx512|avx512bf16|amx   force a kernel path\n"
            "  NNZ_SIZE_LIMIT=1G   the most bytes one file may declare (file, decompressed data, decoded\n"
            "                      weights, a model's weights or per-image activations); default 1G\n\n"
            "exit codes: 0 ok, 1 failure (message on stderr), 2 usage error.\n");
}

int main(int argc, char **argv) {
    nnz_prefer_startup_env(argv); /* may re-exec once: passive OpenMP, OpenBLAS on its best kernels */
    if (nnz_size_limit_check() != NNZ_OK) {
        fprintf(stderr, "nnz: %s\n", nnz_last_error());
        return CLI_EXIT_USAGE;
    }
    if (argc < 2) {
        print_help(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *c = argv[1];
    if (strcmp(c, "--help") == 0 || strcmp(c, "-h") == 0 || strcmp(c, "help") == 0) {
        if (strcmp(c, "help") == 0 && argc > 2) {
            for (int i = 0; i < N_COMMANDS; i++)
                if (strcmp(commands[i].name, argv[2]) == 0) {
                    char *args[] = {argv[2], "--help", NULL};
                    return commands[i].fn(2, args);
                }
            fprintf(stderr, "nnz: unknown command '%s' (see nnz --help)\n", argv[2]);
            return CLI_EXIT_USAGE;
        }
        print_help(stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(c, "--version") == 0 || strcmp(c, "-V") == 0 || strcmp(c, "version") == 0) {
        char cpu[256];
        nnz_cpu_describe(cpu, sizeof cpu);
        printf("nnz %s\ncpu: %s\nthreads wait: %s\nopenblas core: %s", nnz_version(), cpu, nnz_omp_wait(),
               nnz_blas_core());
        const char *chose = getenv("NNZ_OPENBLAS_CHOSE");
        if (chose && getenv("OPENBLAS_CORETYPE"))
            printf(" (OPENBLAS_CORETYPE set by nnz: OpenBLAS chose %s, slower kernels, on this CPU)", chose);
        printf("\n");
        return CLI_EXIT_OK;
    }
    for (int i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, c) == 0) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "nnz: unknown command '%s'; commands:", c);
    for (int i = 0; i < N_COMMANDS; i++) fprintf(stderr, " %s", commands[i].name);
    fprintf(stderr, " (see nnz --help)\n");
    return CLI_EXIT_USAGE;
}
