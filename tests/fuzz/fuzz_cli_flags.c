/* libFuzzer target: the nnz command's flag parser (tools/nnz/flags.c) and the
 * value parsers the subcommands call (RxC pairs, byte sizes, sparse formats,
 * precision and mask names). The input is split at NUL bytes into an argument vector. The
 * oracle: the parser returns one of its three documented results, and a value it
 * accepts is inside the flag's declared range. Run with -close_fd_mask=3
 * (tests/fuzz/cli_flags.options): usage errors print on every rejected input. */
#include "cli.h"
#include "kernels/kernels.h"
#include "nn/nn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ARGS 16

static const char *const colors[] = {"red", "green", "blue", NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 4096) return 0;
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    char *argv[MAX_ARGS + 1];
    int argc = 0;
    argv[argc++] = "fuzz";
    for (size_t i = 0; i <= size && argc < MAX_ARGS;) {
        argv[argc++] = text + i;
        i += strlen(text + i) + 1;
    }
    argv[argc] = NULL;

    int epochs = 7, color = 0;
    float lr = 0.5f, frac = 0.5f;
    uint64_t seed = 0;
    const char *out = NULL;
    bool flag = false;
    cli_flag flags[] = {
        FL_INT("--epochs", &epochs, "N", "an int in [1, 1000]", "7", 1, 1000),
        FL_FLOAT("--lr", &lr, "X", "a float > 0", "0.5", 0, 0, true),
        FL_FLOAT("--frac", &frac, "X", "a float in [0, 1]", "0.5", 0, 1, false),
        FL_U64("--seed", &seed, "N", "a u64", "0"),
        FL_STR("--out", &out, "FILE", "a string", NULL),
        FL_BOOL("--flag", &flag, "a switch"),
        FL_CHOICE("--color", &color, "C", "a choice", "red", colors),
    };
    cli_command cmd = {.name = "fuzz", .summary = "s", .usage = "u", .description = "d", .example = "e",
                       .flags = flags, .n_flags = (int)(sizeof flags / sizeof flags[0]), .positional = "FILE",
                       .min_pos = 0, .max_pos = 2};
    const char *pos[MAX_ARGS];
    int npos = -1;
    int rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc != 0 && rc != CLI_HELP_SHOWN && rc != CLI_EXIT_USAGE) abort();
    if (rc == 0) {
        if (npos < 0 || npos > cmd.max_pos) abort();
        if (epochs < 1 || epochs > 1000) abort();
        if (!(lr > 0) || !isfinite(lr)) abort();
        if (!(frac >= 0 && frac <= 1)) abort();
        if (color < 0 || color > 2) abort();
        if (flags[4].seen && (!out || !*out)) abort();
    }

    for (int i = 1; i < argc; i++) {
        int a = 0, b = 0;
        if (cli_parse_pair(argv[i], &a, &b) && (a < 1 || b < 1 || a > (1 << 30) || b > (1 << 30))) abort();
        nnz_sparse_format f;
        if (nnz_sparse_format_parse(argv[i], &f) == NNZ_OK && f.kind == NNZ_SPARSE_FORCED &&
            !(f.r == 1 && f.c == 1) && !nnz_sparse_block_supported(f.r, f.c))
            abort();
        size_t bytes = 0;
        if (nnz_parse_bytes(argv[i], &bytes) && (bytes < 1 || bytes > ((size_t)1 << 60))) abort();
        nnz_dtype d;
        (void)nnz_precision_parse(argv[i], &d);
        nnz_mask_kind k;
        (void)nnz_mask_kind_parse(argv[i], &k);
    }
    free(text);
    return 0;
}
