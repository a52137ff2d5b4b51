/* Flag parsing for every subcommand: "--flag value" or "--flag=value",
 * strict numbers (the whole text must be a number in range), and --help
 * generated from the same table, so the help can never drift from the parser. */
#include "cli.h"

#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

const char *const cli_precision_names[] = {"fp32", "bf16", NULL};
const char *const cli_mask_kind_names[] = {"dense", "unstructured", "block", "hbsnn", "rbgp", "channel-block", NULL};

bool cli_parse_pair(const char *s, int *a, int *b) {
    char *end;
    if (!s || s[0] < '0' || s[0] > '9') return false;
    long x = strtol(s, &end, 10);
    if (*end != 'x' || end[1] < '0' || end[1] > '9') return false;
    long y = strtol(end + 1, &end, 10);
    if (*end || x < 1 || y < 1 || x > (1 << 30) || y > (1 << 30)) return false;
    *a = (int)x, *b = (int)y;
    return true;
}

cli_flag *cli_find_flag(cli_command *cmd, const char *name) {
    for (int i = 0; i < cmd->n_flags; i++)
        if (strcmp(cmd->flags[i].name, name) == 0) return &cmd->flags[i];
    return NULL;
}

int cli_usage_error(const cli_command *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "nnz %s: ", cmd->name);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(see 'nnz %s --help')\n", cmd->name);
    va_end(ap);
    return CLI_EXIT_USAGE;
}

int cli_fail(const char *cmd, const char *what) {
    fprintf(stderr, "nnz %s: %s: %s\n", cmd, what, nnz_last_error());
    return CLI_EXIT_FAILURE;
}

/* Edit distance, for "did you mean". */
static int distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 40 || lb > 40) return 99;
    int d[41][41];
    for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            int sub = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            int del = d[i - 1][j] + 1, ins = d[i][j - 1] + 1;
            d[i][j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
    return d[la][lb];
}

static void range_text(const cli_flag *f, char *buf, size_t len) {
    bool has_max = f->max > f->min;
    if (f->type == FLAG_INT) {
        if (has_max) snprintf(buf, len, "a whole number from %.0f to %.0f", f->min, f->max);
        else snprintf(buf, len, "a whole number >= %.0f", f->min);
    } else if (f->min_exclusive) {
        if (has_max) snprintf(buf, len, "a number > %g and <= %g", f->min, f->max);
        else snprintf(buf, len, "a number > %g", f->min);
    } else {
        if (has_max) snprintf(buf, len, "a number from %g to %g", f->min, f->max);
        else snprintf(buf, len, "a number >= %g", f->min);
    }
}

static int set_value(const cli_command *cmd, cli_flag *f, const char *v) {
    char range[96];
    char *end = NULL;
    errno = 0;
    switch (f->type) {
    case FLAG_INT: {
        long x = strtol(v, &end, 10);
        range_text(f, range, sizeof range);
        bool plain = (v[0] >= '0' && v[0] <= '9') || v[0] == '-'; /* strtol would skip spaces and a '+' */
        if (!*v || !plain || *end || errno || x < (long)f->min || x > INT32_MAX || (f->max > f->min && x > (long)f->max))
            return cli_usage_error(cmd, "%s expects %s, got '%s'", f->name, range, v);
        *(int *)f->dest = (int)x;
        return 0;
    }
    case FLAG_FLOAT: {
        float x = strtof(v, &end);
        range_text(f, range, sizeof range);
        bool below = f->min_exclusive ? !(x > f->min) : !(x >= f->min);
        if (!*v || *end || errno || !isfinite(x) || below || (f->max > f->min && x > f->max))
            return cli_usage_error(cmd, "%s expects %s, got '%s'", f->name, range, v);
        *(float *)f->dest = x;
        return 0;
    }
    case FLAG_U64: {
        unsigned long long x = strtoull(v, &end, 10);
        if (!*v || *end || errno || v[0] == '-' || v[0] == '+' || v[0] == ' ')
            return cli_usage_error(cmd, "%s expects a whole number >= 0, got '%s'", f->name, v);
        *(uint64_t *)f->dest = x;
        return 0;
    }
    case FLAG_STRING:
        if (!*v) return cli_usage_error(cmd, "%s needs a non-empty value", f->name);
        *(const char **)f->dest = v;
        return 0;
    case FLAG_CHOICE:
        for (int i = 0; f->choices[i]; i++)
            if (strcmp(f->choices[i], v) == 0) {
                *(int *)f->dest = i;
                return 0;
            }
        {
            char list[256] = "";
            for (int i = 0; f->choices[i]; i++) {
                strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
                strncat(list, f->choices[i], sizeof list - strlen(list) - 1);
            }
            return cli_usage_error(cmd, "%s must be one of %s, got '%s'", f->name, list, v);
        }
    case FLAG_BOOL:
        *(bool *)f->dest = true;
        return 0;
    }
    return CLI_EXIT_USAGE;
}

int cli_parse(cli_command *cmd, int argc, char **argv, const char **pos, int *npos) {
    *npos = 0;
    bool only_pos = false;
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            cli_print_help(cmd, stdout);
            return CLI_HELP_SHOWN;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!only_pos && strcmp(a, "--") == 0) {
            only_pos = true;
            continue;
        }
        if (only_pos || a[0] != '-' || a[1] == '\0') {
            if (*npos >= cmd->max_pos) {
                if (cmd->max_pos == 0) return cli_usage_error(cmd, "unexpected argument '%s'", a);
                return cli_usage_error(cmd, "too many arguments at '%s' (expected %s)", a,
                                       cmd->positional ? cmd->positional : "none");
            }
            pos[(*npos)++] = a;
            continue;
        }
        char name[64];
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        if (nl >= sizeof name) return cli_usage_error(cmd, "unknown flag '%s'", a);
        memcpy(name, a, nl);
        name[nl] = '\0';
        cli_flag *f = cli_find_flag(cmd, name);
        if (!f) {
            const cli_flag *best = NULL;
            int bd = 3;
            for (int k = 0; k < cmd->n_flags; k++) {
                int d = distance(name, cmd->flags[k].name);
                if (d < bd) bd = d, best = &cmd->flags[k];
            }
            if (best) return cli_usage_error(cmd, "unknown flag '%s'; did you mean %s?", name, best->name);
            return cli_usage_error(cmd, "unknown flag '%s'", name);
        }
        if (f->seen) return cli_usage_error(cmd, "%s is given twice", f->name);
        f->seen = true;
        if (f->type == FLAG_BOOL) {
            if (eq) return cli_usage_error(cmd, "%s is a switch and takes no value", f->name);
            *(bool *)f->dest = true;
            continue;
        }
        const char *v = eq ? eq + 1 : NULL;
        if (!v) {
            if (i + 1 >= argc) return cli_usage_error(cmd, "%s needs a value (%s)", f->name, f->metavar);
            v = argv[++i];
        }
        int r = set_value(cmd, f, v);
        if (r) return r;
    }
    if (*npos < cmd->min_pos)
        return cli_usage_error(cmd, "missing %s", cmd->positional ? cmd->positional : "argument");
    return 0;
}

/* Prints text word-wrapped at `width` columns, continuation lines indented by `indent`. */
static void wrap(FILE *out, const char *text, int col, int indent, int width) {
    const char *p = text;
    while (*p) {
        while (*p == ' ') p++;
        size_t n = strcspn(p, " ");
        if (!n) break;
        if (col > indent && col + 1 + (int)n > width) {
            fprintf(out, "\n%*s", indent, "");
            col = indent;
        } else if (col > indent) {
            fputc(' ', out);
            col++;
        }
        fwrite(p, 1, n, out);
        col += (int)n;
        p += n;
    }
}

void cli_print_help(const cli_command *cmd, FILE *out) {
    enum { INDENT = 27, WIDTH = 100 };
    fprintf(out, "usage: %s\n\n%s\n", cmd->usage, cmd->description);
    if (cmd->n_flags) fprintf(out, "\nflags:\n");
    for (int i = 0; i < cmd->n_flags; i++) {
        const cli_flag *f = &cmd->flags[i];
        char head[64], text[1024];
        snprintf(head, sizeof head, "%s%s%s", f->name, f->metavar ? " " : "", f->metavar ? f->metavar : "");
        int k = snprintf(text, sizeof text, "%s", f->help);
        if (f->type == FLAG_CHOICE) {
            k += snprintf(text + k, sizeof text - (size_t)k, " One of:");
            for (int c = 0; f->choices[c]; c++)
                k += snprintf(text + k, sizeof text - (size_t)k, " %s%s", f->choices[c], f->choices[c + 1] ? "," : ".");
        }
        if (f->def) snprintf(text + k, sizeof text - (size_t)k, " [default: %s]", f->def);
        fprintf(out, "  %-24s ", head);
        wrap(out, text, INDENT, INDENT, WIDTH);
        fputc('\n', out);
    }
    fprintf(out, "  %-24s %s\n", "--help", "Show this help.");
    if (cmd->example) fprintf(out, "\nexample:\n%s\n", cmd->example);
}

void cli_budget_malloc(void) {
#ifdef __GLIBC__
    /* fixed thresholds turn off glibc's adaptive ones, which after a large free serve big buffers
     * from the heap and keep tens of MB of freed memory resident */
    mallopt(M_MMAP_THRESHOLD, 256 << 10);
    mallopt(M_TRIM_THRESHOLD, 1 << 20);
#endif
}

int cli_budget_data(const char *cmd, const char *data, bool train_split, int limit, size_t budget, size_t *need_out,
                    size_t *base_out, size_t *bytes_out) {
    size_t bytes, base = nnz_resident_bytes();
    int n;
    if (nnz_dataset_bytes(data, train_split, limit, &bytes, &n) != NNZ_OK) return cli_fail(cmd, "cannot load the data");
    /* only the first `limit` images are read (zlib's state besides them) */
    size_t need = base + bytes + (1 << 20);
    if (need_out) *need_out = need;
    if (base_out) *base_out = base;
    if (bytes_out) *bytes_out = bytes;
    if (need <= budget) return 0;
    fprintf(stderr,
            "nnz %s: the data set alone does not fit --memory-budget %zu: loading the %s split of '%s' takes the "
            "process to about %zu bytes (%zu already resident, the split %zu); raise --memory-budget to at least "
            "that\n",
            cmd, budget, train_split ? "train" : "test", data, need, base, bytes);
    return CLI_EXIT_FAILURE;
}
