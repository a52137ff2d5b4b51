/* The pieces of nnz report that read untrusted input or build the picture in memory, apart from
 * the command so that the fuzz target tests/fuzz/fuzz_results_csv.c can drive them: a growing
 * text buffer with SVG primitives (svg.c), the results-file reader (results_csv.c) and the
 * accuracy-vs-sparsity chart (chart_curves.c). */
#ifndef NNZ_TOOL_REPORT_H
#define NNZ_TOOL_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* ---- svg.c: a growing text buffer; oom latches and every later append is a no-op ---- */
typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

__attribute__((format(printf, 2, 3))) void sb_printf(sbuf *b, const char *fmt, ...);
/* s as XML character data or attribute value (control characters become '?') */
void sb_escape(sbuf *b, const char *s);
/* the XML prolog, <svg> with its size, <title>, and a white background */
void svg_open(sbuf *b, int w, int h, const char *title);
void svg_text(sbuf *b, double x, double y, const char *anchor, const char *extra, const char *text);
/* a chart's title, centred on a canvas w wide at baseline y, squeezed to fit it when long */
void svg_title(sbuf *b, int w, double y, const char *title);

/* ---- results_csv.c: the results file of nnz report --results (docs/AUTOSPARSE.md, "Plots") ---- */
#define RESULTS_MAX_ROWS 100000
#define RESULTS_NAME_MAX 64
typedef struct {
    char method[RESULTS_NAME_MAX], model[RESULTS_NAME_MAX];
    double sparsity, accuracy; /* fractions in [0, 1] */
} result_row;

/* Reads CSV from f (name is for messages): '#' comments and blank lines skipped, a header naming
 * method, model, sparsity, accuracy (any order, other columns ignored), one result per line, no
 * quoting. On success returns 0 with *rows (malloc'd, sorted by method, model, sparsity) and *n >= 1;
 * on malformed input prints "nnz report: <file> line <k>: ..." to stderr and returns 1, with
 * nothing allocated. */
int results_read(FILE *f, const char *name, result_row **rows, int *n);

/* ---- chart_curves.c ---- */
#define CURVES_MAX_SERIES 64
/* The accuracy-vs-sparsity SVG of rows[0..n) (sorted as results_read leaves them), one polyline per
 * (method, model), into b. Returns the number of curves, or -1 (message printed) past
 * CURVES_MAX_SERIES pairs. */
int chart_curves(const result_row *rows, int n, const char *title, const char *name, sbuf *b);

#endif
