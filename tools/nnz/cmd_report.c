/* nnz report: draws a checkpoint's per-layer sparsity (bar chart) or the accuracy-vs-sparsity
 * curves of a results file (one line per method and model) as a hand-written SVG, written
 * atomically. docs/AUTOSPARSE.md, "Plots", has the results file's format. */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ---- a growing text buffer ---- */
typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

__attribute__((format(printf, 2, 3))) static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        const size_t room = b->cap - b->len;
        const int w = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? room : 0, fmt, ap);
        va_end(ap);
        if (w < 0) {
            b->oom = true;
            return;
        }
        if (b->p && (size_t)w < room) {
            b->len += (size_t)w;
            return;
        }
        const size_t cap = (b->cap ? b->cap * 2 : 4096) + (size_t)w;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p, b->cap = cap;
    }
}

/* text as XML character data / attribute value */
static void sb_escape(sbuf *b, const char *s) {
    for (; *s; s++) switch (*s) {
        case '&': sb_printf(b, "&amp;"); break;
        case '<': sb_printf(b, "&lt;"); break;
        case '>': sb_printf(b, "&gt;"); break;
        case '"': sb_printf(b, "&quot;"); break;
        case '\'': sb_printf(b, "&apos;"); break;
        default:
            /* control characters are not allowed in XML 1.0 */
            if ((unsigned char)*s >= 0x20 || *s == '\t') sb_printf(b, "%c", *s);
            else sb_printf(b, "?");
        }
}

static void svg_open(sbuf *b, int w, int h, const char *title) {
    sb_printf(b,
              "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
              "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
              "font-family=\"sans-serif\" font-size=\"12\">\n<title>",
              w, h, w, h);
    sb_escape(b, title);
    sb_printf(b, "</title>\n<rect class=\"background\" x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"white\"/>\n",
              w, h);
}

static void svg_text(sbuf *b, double x, double y, const char *anchor, const char *extra, const char *text) {
    sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\"%s>", x, y, anchor, extra ? extra : "");
    sb_escape(b, text);
    sb_printf(b, "</text>\n");
}

/* the path with its extension replaced by .svg (appended when it has none) */
static char *svg_path_of(const char *in) {
    const char *slash = strrchr(in, '/'), *dot = strrchr(in, '.');
    size_t base = dot && (!slash || dot > slash + 1) ? (size_t)(dot - in) : strlen(in);
    char *out = malloc(base + 5);
    if (!out) return NULL;
    memcpy(out, in, base);
    memcpy(out + base, ".svg", 5);
    return out;
}

static int write_svg(sbuf *b, const char *path) {
    if (b->oom) {
        fprintf(stderr, "nnz report: out of memory building the SVG\n");
        return CLI_EXIT_FAILURE;
    }
    if (nnz_write_file(path, b->p, b->len) != NNZ_OK) return cli_fail("report", "cannot write the SVG");
    return CLI_EXIT_OK;
}

/* ===================== per-layer sparsity of a checkpoint ===================== */

#define BAR_SLOT 40 /* pixels per layer */

static int report_layers(const char *input, const char *out_path, const char *title_arg) {
    nnz_model *m = NULL;
    int r = cli_load_model("report", input, 42, &m, NULL);
    if (r) return r;
    const int n = nnz_model_layer_sparsity(m, NULL, 0, NULL, NULL);
    if (n <= 0) {
        nnz_model_free(m);
        fprintf(stderr, "nnz report: '%s' has no conv or linear layer to chart\n", input);
        return CLI_EXIT_FAILURE;
    }
    nnz_layer_sparsity *L = calloc((size_t)n, sizeof *L);
    if (!L) {
        nnz_model_free(m);
        fprintf(stderr, "nnz report: out of memory\n");
        return CLI_EXIT_FAILURE;
    }
    double total_dense = 0, total_sparse = 0;
    nnz_model_layer_sparsity(m, L, n, &total_dense, &total_sparse);
    nnz_model_free(m);

    int64_t pz = 0, pw = 0;
    for (int i = 0; i < n; i++)
        if (L[i].pruned) pz += L[i].zeros, pw += L[i].weights;

    const int left = 70, right = 20, top = 70, bottom = 140, plot_h = 300;
    const int plot_w = n * BAR_SLOT < 640 ? 640 : n * BAR_SLOT;
    const int W = left + plot_w + right, H = top + plot_h + bottom;
    const double slot = (double)plot_w / n, bw = slot * 0.35;
    char title[512], line[512];
    if (title_arg) snprintf(title, sizeof title, "%s", title_arg);
    else snprintf(title, sizeof title, "%s: zeros per layer", input);

    sbuf b = {0};
    svg_open(&b, W, H, title);
    svg_text(&b, W / 2.0, 22, "middle", " font-size=\"15\"", title);
    snprintf(line, sizeof line,
             "forward FLOPs per image at these zeros: %.4g of %.4g (%.3fx dense); pruned layers: %.1f%% zeros",
             total_sparse, total_dense, total_dense > 0 ? total_sparse / total_dense : 1.0,
             pw ? 100.0 * (double)pz / (double)pw : 0.0);
    svg_text(&b, W / 2.0, 42, "middle", " fill=\"#444\"", line);
    /* y axis: 0..100 % with grid lines */
    for (int t = 0; t <= 100; t += 25) {
        const double y = top + plot_h - plot_h * t / 100.0;
        sb_printf(&b, "<line class=\"grid\" x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", left, y,
                  left + plot_w, y);
        snprintf(line, sizeof line, "%d%%", t);
        svg_text(&b, left - 6, y + 4, "end", NULL, line);
    }
    sb_printf(&b, "<line class=\"axis\" x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", left, top,
              left, top + plot_h);
    sb_printf(&b, "<line class=\"axis\" x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", left,
              top + plot_h, left + plot_w, top + plot_h);
    snprintf(line, sizeof line, " transform=\"rotate(-90 18 %.1f)\"", top + plot_h / 2.0);
    svg_text(&b, 18, top + plot_h / 2.0, "middle", line, "percent");
    /* per layer: its zeros (blue) and its share of the model's dense forward FLOPs (orange) */
    for (int i = 0; i < n; i++) {
        const double x0 = left + slot * i + slot * 0.12;
        const double zf = L[i].weights ? (double)L[i].zeros / (double)L[i].weights : 0.0;
        const double ff = total_dense > 0 ? (double)L[i].flops / total_dense : 0.0;
        const double hz = plot_h * zf, hf = plot_h * ff;
        sb_printf(&b,
                  "<rect class=\"sparsity\" data-layer=\"%d\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" "
                  "fill=\"%s\"><title>",
                  i, x0, top + plot_h - hz, bw, hz, L[i].pruned ? "#1f77b4" : "#9ecae1");
        sb_escape(&b, L[i].name);
        sb_printf(&b, ": %.2f%% zeros (%lld of %lld)%s</title></rect>\n", 100.0 * zf, (long long)L[i].zeros,
                  (long long)L[i].weights, L[i].pruned ? "" : ", not pruned (first/last or grouped layer)");
        sb_printf(&b,
                  "<rect class=\"flops\" data-layer=\"%d\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" "
                  "fill=\"#ff7f0e\"><title>",
                  i, x0 + bw, top + plot_h - hf, bw, hf);
        sb_escape(&b, L[i].name);
        sb_printf(&b, ": %.2f%% of the dense forward FLOPs; %.3fx its dense FLOPs at its zeros</title></rect>\n",
                  100.0 * ff, L[i].flops ? L[i].sparse_flops / (double)L[i].flops : 1.0);
        const double lx = x0 + bw, ly = top + plot_h + 10;
        char tr[96];
        snprintf(tr, sizeof tr, " class=\"layer\" transform=\"rotate(-45 %.1f %.1f)\"", lx, ly);
        svg_text(&b, lx, ly, "end", tr, L[i].name);
    }
    /* legend */
    const double ly = H - 36;
    sb_printf(&b, "<rect class=\"legend\" x=\"%d\" y=\"%.1f\" width=\"12\" height=\"12\" fill=\"#1f77b4\"/>\n", left,
              ly - 10);
    svg_text(&b, left + 16, ly, "start", NULL, "zeros in the layer's weight (light: a layer pruning leaves dense)");
    sb_printf(&b, "<rect class=\"legend\" x=\"%d\" y=\"%.1f\" width=\"12\" height=\"12\" fill=\"#ff7f0e\"/>\n",
              left, ly + 8);
    svg_text(&b, left + 16, ly + 18, "start", NULL, "the layer's share of the model's dense forward FLOPs");
    sb_printf(&b, "</svg>\n");

    r = write_svg(&b, out_path);
    if (r == CLI_EXIT_OK) {
        printf("%-20s %8s %12s %12s %9s\n", "layer", "zeros", "weights", "FLOPs", "FLOPs at");
        printf("%-20s %8s %12s %12s %9s\n", "", "", "", "(dense)", "zeros");
        for (int i = 0; i < n; i++)
            printf("%-20s %7.2f%% %12lld %12lld %8.3fx%s\n", L[i].name,
                   L[i].weights ? 100.0 * (double)L[i].zeros / (double)L[i].weights : 0.0, (long long)L[i].weights,
                   (long long)L[i].flops, L[i].flops ? L[i].sparse_flops / (double)L[i].flops : 1.0,
                   L[i].pruned ? "" : "  (not pruned)");
        printf("total forward FLOPs per image: %.4g of %.4g (%.3fx dense)\nwrote %s (%d layers)\n", total_sparse,
               total_dense, total_dense > 0 ? total_sparse / total_dense : 1.0, out_path, n);
    }
    free(b.p);
    free(L);
    return r;
}

/* ===================== accuracy vs sparsity from a results file ===================== */

#define MAX_FIELDS 64
#define MAX_ROWS 100000
#define MAX_SERIES 64
#define LINE_MAX_CHARS 4096

typedef struct {
    char method[64], model[64];
    double sparsity, accuracy;
} result_row;

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

/* Reads the results file into *rows (sorted by method, model, sparsity); 0 or CLI_EXIT_FAILURE. */
static int read_results(const char *path, result_row **rows_out, int *n_out) {
    static const char *const need[4] = {"method", "model", "sparsity", "accuracy"};
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "nnz report: cannot open the results file '%s': %s\n", path, strerror(errno));
        return CLI_EXIT_FAILURE;
    }
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
        if (n == MAX_ROWS) RFAIL("'%s' holds more than %d results", path, MAX_ROWS);
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
            if (strlen(v) >= sizeof r->method) RFAIL("'%s' line %d: %s name longer than 63 characters", path, lineno,
                                                     need[k]);
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
    fclose(f);
    qsort(rows, (size_t)n, sizeof *rows, row_cmp);
    *rows_out = rows;
    *n_out = n;
    return CLI_EXIT_OK;
fail:
    fclose(f);
    free(rows);
    return CLI_EXIT_FAILURE;
}

static const char *const PALETTE[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                      "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
static const char *const DASHES[] = {"", "6 3", "2 3", "8 3 2 3", "12 4", "1 2"};
#define N_PALETTE ((int)(sizeof PALETTE / sizeof PALETTE[0]))
#define N_DASHES ((int)(sizeof DASHES / sizeof DASHES[0]))

/* index of name in names[0..*n), appended when new */
static int intern(char (*names)[64], int *n, const char *name) {
    for (int i = 0; i < *n; i++)
        if (strcmp(names[i], name) == 0) return i;
    snprintf(names[*n], 64, "%s", name);
    return (*n)++;
}

static int report_curves(const char *path, const char *out_path, const char *title_arg) {
    result_row *R = NULL;
    int n = 0;
    int r = read_results(path, &R, &n);
    if (r) return r;
    /* series = runs of (method, model) in the sorted rows */
    int series_start[MAX_SERIES + 1], ns = 0;
    for (int i = 0; i < n; i++)
        if (i == 0 || strcmp(R[i].method, R[i - 1].method) || strcmp(R[i].model, R[i - 1].model)) {
            if (ns == MAX_SERIES) {
                free(R);
                fprintf(stderr, "nnz report: '%s' holds more than %d method/model pairs: split it\n", path,
                        MAX_SERIES);
                return CLI_EXIT_FAILURE;
            }
            series_start[ns++] = i;
        }
    series_start[ns] = n;
    static char methods[MAX_SERIES][64], models[MAX_SERIES][64];
    int n_methods = 0, n_models = 0;
    double smin = 1, smax = 0, amin = 1, amax = 0;
    for (int i = 0; i < n; i++) {
        smin = fmin(smin, R[i].sparsity), smax = fmax(smax, R[i].sparsity);
        amin = fmin(amin, R[i].accuracy), amax = fmax(amax, R[i].accuracy);
    }
    /* axes in percent, on round numbers */
    double x0 = floor(smin * 10) * 10, x1 = ceil(smax * 10) * 10;
    double y0 = floor(amin * 20) * 5, y1 = ceil(amax * 20) * 5;
    if (x1 <= x0) x0 = fmax(0, x0 - 10), x1 = fmin(100, x0 + 20);
    if (y1 <= y0) y0 = fmax(0, y0 - 5), y1 = fmin(100, y0 + 10);
    const double xstep = x1 - x0 > 50 ? 20 : x1 - x0 > 20 ? 10 : 5;
    const double ystep = y1 - y0 > 50 ? 10 : y1 - y0 > 20 ? 5 : y1 - y0 > 10 ? 2 : 1;

    const int left = 70, right = 230, top = 50, bottom = 60, plot_w = 520, plot_h = 360;
    const int W = left + plot_w + right, H = top + plot_h + bottom;
#define PX(s) (left + ((s) * 100 - x0) / (x1 - x0) * plot_w)
#define PY(a) (top + plot_h - ((a) * 100 - y0) / (y1 - y0) * plot_h)
    char title[512], text[256];
    if (title_arg) snprintf(title, sizeof title, "%s", title_arg);
    else snprintf(title, sizeof title, "test accuracy vs sparsity (%s)", path);
    sbuf b = {0};
    svg_open(&b, W, H, title);
    svg_text(&b, left + plot_w / 2.0, 24, "middle", " font-size=\"15\"", title);
    for (double t = x0; t <= x1 + 1e-9; t += xstep) {
        const double x = left + (t - x0) / (x1 - x0) * plot_w;
        sb_printf(&b, "<line class=\"grid\" x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#ddd\"/>\n", x, top, x,
                  top + plot_h);
        snprintf(text, sizeof text, "%g%%", t);
        svg_text(&b, x, top + plot_h + 16, "middle", NULL, text);
    }
    for (double t = y0; t <= y1 + 1e-9; t += ystep) {
        const double y = top + plot_h - (t - y0) / (y1 - y0) * plot_h;
        sb_printf(&b, "<line class=\"grid\" x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", left, y,
                  left + plot_w, y);
        snprintf(text, sizeof text, "%g%%", t);
        svg_text(&b, left - 6, y + 4, "end", NULL, text);
    }
    sb_printf(&b, "<rect class=\"frame\" x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"black\"/>\n",
              left, top, plot_w, plot_h);
    svg_text(&b, left + plot_w / 2.0, H - 18, "middle", NULL, "sparsity of the pruned layers (fraction of zero weights)");
    snprintf(text, sizeof text, " transform=\"rotate(-90 20 %.1f)\"", top + plot_h / 2.0);
    svg_text(&b, 20, top + plot_h / 2.0, "middle", text, "test accuracy");
    for (int s = 0; s < ns; s++) {
        const result_row *first = &R[series_start[s]];
        const int mi = intern(methods, &n_methods, first->method), di = intern(models, &n_models, first->model);
        const char *color = PALETTE[mi % N_PALETTE], *dash = DASHES[di % N_DASHES];
        sb_printf(&b, "<polyline class=\"series\" data-method=\"");
        sb_escape(&b, first->method);
        sb_printf(&b, "\" data-model=\"");
        sb_escape(&b, first->model);
        sb_printf(&b, "\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s%s%s points=\"", color,
                  *dash ? " stroke-dasharray=\"" : "", dash, *dash ? "\"" : "");
        for (int i = series_start[s]; i < series_start[s + 1]; i++)
            sb_printf(&b, "%s%.2f,%.2f", i > series_start[s] ? " " : "", PX(R[i].sparsity), PY(R[i].accuracy));
        sb_printf(&b, "\"/>\n");
        for (int i = series_start[s]; i < series_start[s + 1]; i++) {
            sb_printf(&b, "<circle class=\"point\" cx=\"%.2f\" cy=\"%.2f\" r=\"3\" fill=\"%s\"><title>",
                      PX(R[i].sparsity), PY(R[i].accuracy), color);
            sb_escape(&b, R[i].method);
            sb_printf(&b, " / ");
            sb_escape(&b, R[i].model);
            sb_printf(&b, ": %.2f%% sparsity, %.2f%% accuracy</title></circle>\n", 100 * R[i].sparsity,
                      100 * R[i].accuracy);
        }
        /* legend entry */
        const double ly = top + 10 + 20.0 * s;
        sb_printf(&b,
                  "<line class=\"legend\" x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"%s\" "
                  "stroke-width=\"2\"%s%s%s/>\n",
                  left + plot_w + 12, ly, left + plot_w + 40, ly, color, *dash ? " stroke-dasharray=\"" : "", dash,
                  *dash ? "\"" : "");
        snprintf(text, sizeof text, "%s / %s (%d)", first->method, first->model, series_start[s + 1] - series_start[s]);
        svg_text(&b, left + plot_w + 46, ly + 4, "start", NULL, text);
    }
    sb_printf(&b, "</svg>\n");
#undef PX
#undef PY
    r = write_svg(&b, out_path);
    if (r == CLI_EXIT_OK) {
        printf("%-16s %-12s %6s  %9s  %9s\n", "method", "model", "points", "sparsity", "accuracy");
        for (int s = 0; s < ns; s++) {
            const int a = series_start[s], z = series_start[s + 1] - 1;
            double lo = 1, hi = 0;
            for (int i = a; i <= z; i++) lo = fmin(lo, R[i].accuracy), hi = fmax(hi, R[i].accuracy);
            printf("%-16s %-12s %6d  %3.0f..%3.0f%%  %4.1f..%4.1f%%\n", R[a].method, R[a].model, z - a + 1,
                   100 * R[a].sparsity, 100 * R[z].sparsity, 100 * lo, 100 * hi);
        }
        printf("wrote %s (%d curves, %d results)\n", out_path, ns, n);
    }
    free(b.p);
    free(R);
    return r;
}

int cmd_report(int argc, char **argv) {
    const char *results = NULL, *out = NULL, *title = NULL;
    cli_flag flags[] = {
        FL_STR("--results", &results, "FILE",
               "Draw accuracy vs sparsity from this results file (CSV, below) instead of a checkpoint's layers.", NULL),
        FL_STR("--out", &out, "FILE.svg", "The picture, written atomically (an existing file stays whole on failure).",
               "the input's name with .svg"),
        FL_STR("--title", &title, "TEXT", "The chart's title.", "what is drawn and from which file"),
    };
    cli_command cmd = {
        .name = "report",
        .summary = "draw a checkpoint's per-layer sparsity, or accuracy-vs-sparsity curves, as SVG",
        .usage = "nnz report CHECKPOINT [--out FILE.svg]\n       nnz report --results FILE.csv [--out FILE.svg]",
        .description =
            "With a checkpoint (or .nnz file): a bar chart, two bars per conv/linear layer in graph order: the\n"
            "fraction of zeros in its weight (dark blue where nnz train --prune/--mask acts, light blue for the\n"
            "first, last and grouped layers it leaves dense) and the layer's share of the model's dense forward\n"
            "FLOPs. The subtitle gives the model's forward FLOPs at these zeros as a fraction of dense\n"
            "(docs/AUTOSPARSE.md, \"FLOPs\"); the same numbers are printed as a table.\n\n"
            "With --results: test accuracy against sparsity, one line per method and model (color = method,\n"
            "dash = model), points sorted by sparsity. The results file is CSV: '#' comments and blank lines\n"
            "are skipped; the first other line is the header and must name the columns method, model,\n"
            "sparsity and accuracy (any order; other columns are ignored); every following line is one\n"
            "trained model, sparsity and accuracy as fractions in [0, 1], no quoting. scripts/autosparse-curves\n"
            "writes such a file. Each bar, point and curve carries a tooltip (<title>) with its numbers.\n\n"
            "Exit codes: 2 for a usage error (no input, both inputs), 1 when the input cannot be read or is\n"
            "malformed (the message names the file and line) or the picture cannot be written.",
        .example = "  nnz report vgg8-autosparse.safetensors --out layers.svg\n"
                   "  nnz report --results results.csv --out curves.svg --title 'Fashion-MNIST, 30 epochs'\n\n"
                   "results file:\n  method,model,sparsity,accuracy,epochs\n  autosparse,lenet5,0.812,0.893,10\n"
                   "  gmp,lenet5,0.800,0.889,10",
        .flags = flags,
        .n_flags = (int)(sizeof flags / sizeof flags[0]),
        .positional = "CHECKPOINT",
        .min_pos = 0,
        .max_pos = 1,
    };
    const char *pos[1];
    int npos = 0;
    int r = cli_parse(&cmd, argc, argv, pos, &npos);
    if (r == CLI_HELP_SHOWN) return CLI_EXIT_OK;
    if (r) return r;
    if (npos && results)
        return cli_usage_error(&cmd, "give a checkpoint or --results, not both (one chart per file)");
    if (!npos && !results) return cli_usage_error(&cmd, "nothing to draw: give a checkpoint or --results FILE");
    if (out && !*out) return cli_usage_error(&cmd, "--out needs a file name");
    const char *input = npos ? pos[0] : results;
    char *def = out ? NULL : svg_path_of(input);
    if (!out && !def) {
        fprintf(stderr, "nnz report: out of memory\n");
        return CLI_EXIT_FAILURE;
    }
    const char *path = out ? out : def;
    if (strcmp(path, input) == 0) {
        free(def);
        return cli_usage_error(&cmd, "the picture would overwrite its input '%s': pass --out", input);
    }
    r = npos ? report_layers(input, path, title) : report_curves(input, path, title);
    free(def);
    return r;
}
