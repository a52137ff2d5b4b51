/* The results file of nnz report --results (report.h; format in docs/AUTOSPARSE.md, "Plots"). It
 * comes from users and scripts, so every line, field and number is checked; it is fuzzed by
 * tests/fuzz/fuzz_results_csv.c. */
#include "report.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FIELDS 64
#define LINE_MAX_CHARS 4096

static int row_cmp(const void *a, const void *b) {
    const result_row *x = a, *y = b;
    int c = strcmp(x->method, y->method);
    if (c) return c;
    if ((c = strcmp(x->model, y->model))) return c;
    return (x->sparsity > y->sparsity) - (x->sparsity < y->sparsity);
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
    return s;
}

/* splits line at commas in place; returns the field count, or -1 past MAX_FIELDS */
static int split(char *line, char **f) {
    int n = 0;
    for (char *p = line;;) {
        if (n == MAX_FIELDS) return -1;
        char *c = strchr(p, ',');
        if (c) *c = '\0';
        f[n++] = trim(p);
        if (!c) return n;
        p = c + 1;
    }
}

static bool parse_fraction(const char *s, double *out) {
    char *end;
    errno = 0;
    const double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v)) return false;
    *out = v;
    return true;
}

#define RFAIL(...)                                                                                                     \
    do {                                                                                                               \
        fprintf(stderr, "nnz report: ");                                                                               \
        fprintf(stderr, __VA_ARGS__);                                                                                  \
        fprintf(stderr, "\n");                                                                                         \
        goto fail;                                                                                                     \
    } while (0)

int results_read(FILE *f, const char *path, result_row **rows_out, int *n_out) {
    static const char *const need[4] = {"method", "model", "sparsity", "accuracy"};
    result_row *rows = NULL;
    int n = 0, cap = 0, lineno = 0, n_fields = 0, col[4] = {-1, -1, -1, -1};
    char line[LINE_MAX_CHARS + 2], *field[MAX_FIELDS];
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f))
            RFAIL("'%s' line %d is longer than %d characters: not a results file?", path, lineno, LINE_MAX_CHARS);
        char *s = trim(line);
        if (!*s || *s == '#') continue;
        if (strchr(s, '"')) RFAIL("'%s' line %d: quoted fields are not supported (names must not hold commas)", path,
                                  lineno);
        const int nf = split(s, field);
        if (nf < 0) RFAIL("'%s' line %d has more than %d columns", path, lineno, MAX_FIELDS);
        if (!n_fields) { /* the header */
            for (int c = 0; c < nf; c++)
                for (int k = 0; k < 4; k++)
                    if (strcmp(field[c], need[k]) == 0) {
                        if (col[k] >= 0) RFAIL("'%s' line %d: column '%s' appears twice", path, lineno, need[k]);
                        col[k] = c;
                    }
            for (int k = 0; k < 4; k++)
                if (col[k] < 0)
                    RFAIL("'%s' line %d: the header has no '%s' column (it needs method,model,sparsity,accuracy; "
                          "got '%s...')",
                          path, lineno, need[k], field[0]);
            n_fields = nf;
            continue;
        }
        if (nf != n_fields)
            RFAIL("'%s' line %d has %d columns, the header %d", path, lineno, nf, n_fields);
        if (n == RESULTS_MAX_ROWS) RFAIL("'%s' holds more than %d results", path, RESULTS_MAX_ROWS);
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            result_row *p = realloc(rows, (size_t)cap * sizeof *rows);
            if (!p) RFAIL("out of memory reading '%s'", path);
            rows = p;
        }
        result_row *r = &rows[n];
        for (int k = 0; k < 2; k++) {
            const char *v = field[col[k]];
            if (!*v) RFAIL("'%s' line %d: empty %s", path, lineno, need[k]);
            if (strlen(v) >= sizeof r->method) RFAIL("'%s' line %d: %s name longer than %d characters", path, lineno,
                                                     need[k], RESULTS_NAME_MAX - 1);
            snprintf(k == 0 ? r->method : r->model, sizeof r->method, "%s", v);
        }
        double *val[2] = {&r->sparsity, &r->accuracy};
        for (int k = 2; k < 4; k++) {
            const char *v = field[col[k]];
            if (!parse_fraction(v, val[k - 2]))
                RFAIL("'%s' line %d: %s '%s' is not a number", path, lineno, need[k], v);
            if (*val[k - 2] < 0 || *val[k - 2] > 1)
                RFAIL("'%s' line %d: %s %s is not a fraction in [0, 1] (write 85%% as 0.85)", path, lineno, need[k], v);
        }
        n++;
    }
    if (ferror(f)) RFAIL("cannot read '%s': %s", path, strerror(errno));
    if (!n_fields) RFAIL("'%s' is empty: it needs a header line method,model,sparsity,accuracy and one line per result",
                         path);
    if (!n) RFAIL("'%s' has a header but no results", path);
    qsort(rows, (size_t)n, sizeof *rows, row_cmp);
    *rows_out = rows;
    *n_out = n;
    return 0;
fail:
    free(rows);
    return 1;
}
