/* The nnz command's shared pieces: flag parsing (strict, table-driven, with
 * generated --help), progress display, exit codes. Uses only the public API. */
#ifndef NNZ_CLI_H
#define NNZ_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "nnz.h"

/* Exit codes of every subcommand. */
enum { CLI_EXIT_OK = 0, CLI_EXIT_FAILURE = 1, CLI_EXIT_USAGE = 2 };
/* cli_parse's extra result: --help was printed, exit 0. */
#define CLI_HELP_SHOWN (-1)

typedef enum { FLAG_INT, FLAG_FLOAT, FLAG_U64, FLAG_STRING, FLAG_BOOL, FLAG_CHOICE } cli_flag_type;

typedef struct {
    const char *name;       /* "--epochs" */
    cli_flag_type type;
    void *dest;             /* int*, float*, uint64_t*, const char**, bool*, int* (index into choices) */
    const char *metavar;    /* "N"; NULL for FLAG_BOOL */
    const char *help;       /* one or two sentences */
    const char *def;        /* the default as the help shows it; NULL = none */
    double min, max;        /* FLAG_INT / FLAG_FLOAT: allowed range (inclusive unless min_exclusive) */
    bool min_exclusive;
    const char *const *choices; /* FLAG_CHOICE: NULL-terminated */
    bool seen;              /* set by cli_parse when given */
} cli_flag;

typedef struct {
    const char *name;        /* "train" */
    const char *summary;     /* one line, for `nnz --help` */
    const char *usage;       /* "nnz train [flags]" */
    const char *description; /* what it does, a paragraph or two */
    const char *example;     /* one or more example command lines */
    cli_flag *flags;
    int n_flags;
    const char *positional;  /* name of the positional arguments ("CHECKPOINT"), NULL = none */
    int min_pos, max_pos;
} cli_command;

/* Table rows (designated initializers; the rest is zero). */
/* --precision's choices, indexed by nnz_dtype (NNZ_F32 = 0, NNZ_BF16 = 1) */
extern const char *const cli_precision_names[];
#define CLI_PRECISION_HELP "Convolution/linear GEMM precision: bf16 rounds their inputs to bfloat16 and accumulates in fp32 (docs/BF16.md)."
#define CLI_BF16_ACTIVATIONS_HELP                                                                                   \
    "With --precision bf16: store each activation in bf16 between the forward and the backward, in buffers that "  \
    "share memory (less activation memory, two conversion passes; docs/BF16.md)."

/* --mask's choices, indexed by nnz_mask_kind */
extern const char *const cli_mask_kind_names[];
#define CLI_SPARSE_FORMAT_HELP "How layers whose weights hold zeros run: auto (each layer's format from its sparsity and block fill), dense, csr, bsr:RxC (e.g. bsr:16x16), or winograd:16x16 (3x3/5x5 stride-1 convs as Winograd over their kept 16x16 channel blocks: fast for --mask channel-block; bsr:16x16 elsewhere)."
/* With --memory-budget: freed buffers go back to the system at once (glibc's malloc thresholds
 * fixed), so the resident memory follows what is allocated. */
void cli_budget_malloc(void);
/* With --memory-budget, before loading a data split: 0 when reading it whole (then keeping its
 * first `limit` images, 0 = all) keeps the process within budget; otherwise says why on stderr
 * ("nnz CMD: ...") and returns CLI_EXIT_FAILURE. *need gets the process's estimated peak while
 * loading, *base the resident bytes before it, *bytes the split's (each may be NULL). */
int cli_budget_data(const char *cmd, const char *data, bool train_split, int limit, size_t budget, size_t *need,
                    size_t *base, size_t *bytes);
#define CLI_BUDGET_ERROR "--memory-budget expects a byte count like 8M, 512K or 1000000, got '%s'"
/* "64x576" -> 64, 576 (whole positive numbers, nothing else). */
bool cli_parse_pair(const char *s, int *a, int *b);

#define FL_INT(nm, d, mv, h, def_, lo, hi) {.name = nm, .type = FLAG_INT, .dest = d, .metavar = mv, .help = h, .def = def_, .min = lo, .max = hi}
#define FL_FLOAT(nm, d, mv, h, def_, lo, hi, excl) {.name = nm, .type = FLAG_FLOAT, .dest = d, .metavar = mv, .help = h, .def = def_, .min = lo, .max = hi, .min_exclusive = excl}
#define FL_U64(nm, d, mv, h, def_) {.name = nm, .type = FLAG_U64, .dest = d, .metavar = mv, .help = h, .def = def_}
#define FL_STR(nm, d, mv, h, def_) {.name = nm, .type = FLAG_STRING, .dest = d, .metavar = mv, .help = h, .def = def_}
#define FL_BOOL(nm, d, h) {.name = nm, .type = FLAG_BOOL, .dest = d, .help = h, .def = "off"}
#define FL_CHOICE(nm, d, mv, h, def_, ch) {.name = nm, .type = FLAG_CHOICE, .dest = d, .metavar = mv, .help = h, .def = def_, .choices = ch}

/* Parses argv[1..argc) (argv[0] is the subcommand). Fills flags' dest and
 * `seen`, and pos[0..*npos) (at most cmd->max_pos). Returns 0, CLI_HELP_SHOWN,
 * or CLI_EXIT_USAGE after printing a message to stderr. */
int cli_parse(cli_command *cmd, int argc, char **argv, const char **pos, int *npos);
void cli_print_help(const cli_command *cmd, FILE *out);
/* Prints "nnz <cmd>: <message>" and a hint to stderr; returns CLI_EXIT_USAGE. */
int cli_usage_error(const cli_command *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "nnz <cmd>: <what>: <nnz_last_error()>" to stderr; returns CLI_EXIT_FAILURE. */
int cli_fail(const char *cmd, const char *what);
/* Finds a flag by name in cmd (NULL if none). */
cli_flag *cli_find_flag(cli_command *cmd, const char *name);

/* Progress display for nnz_train: a bar redrawn in place when stderr is a
 * terminal, one plain line per interval otherwise. Returns false (stop) after
 * SIGINT once cli_progress_catch_sigint was called. */
typedef struct {
    bool tty;
    bool drawn; /* a bar is on the current line */
} cli_progress;
void cli_progress_init(cli_progress *p);
bool cli_progress_fn(const nnz_progress *p, void *user);
void cli_progress_finish(cli_progress *p);
void cli_progress_catch_sigint(void);
bool cli_progress_interrupted(void);
/* "1h02m", "3m05s", "12s" */
void cli_format_duration(double sec, char *buf, size_t len);

/* Writes s as a JSON string literal (quoted, escaped). */
void cli_json_string(FILE *out, const char *s);
/* "1,234,567" */
void cli_group_digits(int64_t v, char *buf, size_t len);

/* A model named on the command line: an existing file is loaded as a packed
 * model or a checkpoint, or built from it with fresh weights (seed) when it is an
 * architecture .json; otherwise a zoo name builds a fresh model for
 * Fashion-MNIST-sized inputs (28x28x1, 10 classes). Returns 0 or an exit code
 * (message printed). */
int cli_load_model(const char *cmd, const char *arg, uint64_t seed, nnz_model **out, bool *from_file);
/* Whether cli_load_model reads path as an architecture (a name ending in .json). */
bool cli_is_arch_file(const char *path);

/* The subcommands. argv[0] is the subcommand's name. */
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_pack(int argc, char **argv);
int cmd_run(int argc, char **argv);
/* The per-tensor table of a .nnz file (nnz pack, nnz info). */
void cli_print_pack_table(const nnz_pack_report *r, bool with_rmse);
int cmd_mask(int argc, char **argv);
int cmd_shrink(int argc, char **argv);
int cmd_report(int argc, char **argv);

#endif
