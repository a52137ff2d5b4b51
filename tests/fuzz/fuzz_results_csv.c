/* libFuzzer target: nnz report --results, from the CSV bytes to the SVG text (tools/nnz/
 * results_csv.c, chart_curves.c). The oracle: the reader either refuses the input or returns
 * rows that are sorted, named and inside [0, 1]; the chart then has one polyline per
 * (method, model) pair, ends the SVG, and every point of every polyline lies inside the plot
 * frame (no NaN, no point off the axes). Run with -close_fd_mask=3: every rejected input
 * prints its reason. */
#include "report.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* the plot frame chart_curves draws (left, top, plot_w, plot_h), with room for %.2f rounding */
#define FRAME_X0 70.0
#define FRAME_X1 590.0
#define FRAME_Y0 50.0
#define FRAME_Y1 410.0
#define SLACK 0.01

static int count(const char *s, const char *what) {
    int n = 0;
    for (const char *p = s; (p = strstr(p, what)); p += strlen(what)) n++;
    return n;
}

/* every "x,y" pair of every points="..." attribute inside the frame */
static void check_points(const char *svg) {
    for (const char *p = svg; (p = strstr(p, " points=\""));) {
        p += 9;
        while (*p != '"') {
            char *end;
            const double x = strtod(p, &end);
            if (end == p || *end != ',') abort();
            p = end + 1;
            const double y = strtod(p, &end);
            if (end == p) abort();
            p = end;
            if (!(x >= FRAME_X0 - SLACK && x <= FRAME_X1 + SLACK && y >= FRAME_Y0 - SLACK && y <= FRAME_Y1 + SLACK))
                abort();
            if (*p == ' ') p++;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > (1 << 20)) return 0;
    FILE *f = fmemopen((void *)data, size ? size : 1, "r");
    if (!f) return 0;
    if (!size) { /* fmemopen needs a non-empty buffer: read an empty file instead */
        fclose(f);
        f = fopen("/dev/null", "r");
        if (!f) return 0;
    }
    result_row *rows = NULL;
    int n = -1;
    const int bad = results_read(f, "fuzz.csv", &rows, &n);
    fclose(f);
    if (bad) {
        if (rows) abort(); /* nothing handed back on failure */
        return 0;
    }
    if (!rows || n < 1 || n > RESULTS_MAX_ROWS) abort();
    int pairs = 0;
    for (int i = 0; i < n; i++) {
        const result_row *r = &rows[i];
        if (!r->method[0] || !r->model[0] || !memchr(r->method, 0, RESULTS_NAME_MAX) ||
            !memchr(r->model, 0, RESULTS_NAME_MAX))
            abort();
        if (!(r->sparsity >= 0 && r->sparsity <= 1 && r->accuracy >= 0 && r->accuracy <= 1)) abort();
        if (i) {
            const result_row *q = &rows[i - 1];
            const int c = strcmp(q->method, r->method) ? strcmp(q->method, r->method) : strcmp(q->model, r->model);
            if (c > 0 || (c == 0 && q->sparsity > r->sparsity)) abort();
            pairs += c != 0;
        } else pairs = 1;
    }
    sbuf b = {0};
    const int ns = chart_curves(rows, n, NULL, "fuzz.csv", &b);
    if (ns < 0) {
        if (pairs <= CURVES_MAX_SERIES) abort(); /* refused only past the limit */
    } else if (!b.oom) {
        if (ns != pairs || !b.p || b.len < 7 || strcmp(b.p + b.len - 7, "</svg>\n") != 0) abort();
        if (count(b.p, "<polyline") != ns || count(b.p, "<circle") != n) abort();
        check_points(b.p);
    }
    free(b.p);
    free(rows);
    return 0;
}
