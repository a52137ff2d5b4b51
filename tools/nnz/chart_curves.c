/* nnz report --results: test accuracy against sparsity, one polyline per (method, model), as SVG
 * text (report.h). */
#include "report.h"

#include <math.h>
#include <string.h>

static const char *const PALETTE[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                      "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
static const char *const DASHES[] = {"", "6 3", "2 3", "8 3 2 3", "12 4", "1 2"};
#define N_PALETTE ((int)(sizeof PALETTE / sizeof PALETTE[0]))
#define N_DASHES ((int)(sizeof DASHES / sizeof DASHES[0]))

/* index of name in names[0..*n), appended when new */
static int intern(char (*names)[RESULTS_NAME_MAX], int *n, const char *name) {
    for (int i = 0; i < *n; i++)
        if (strcmp(names[i], name) == 0) return i;
    snprintf(names[*n], RESULTS_NAME_MAX, "%s", name);
    return (*n)++;
}

int chart_curves(const result_row *R, int n, const char *title_arg, const char *path, sbuf *b_out) {
    /* series = runs of (method, model) in the sorted rows */
    int series_start[CURVES_MAX_SERIES + 1], ns = 0;
    for (int i = 0; i < n; i++)
        if (i == 0 || strcmp(R[i].method, R[i - 1].method) || strcmp(R[i].model, R[i - 1].model)) {
            if (ns == CURVES_MAX_SERIES) {
                fprintf(stderr, "nnz report: '%s' holds more than %d method/model pairs: split it\n", path,
                        CURVES_MAX_SERIES);
                return -1;
            }
            series_start[ns++] = i;
        }
    series_start[ns] = n;
    char methods[CURVES_MAX_SERIES][RESULTS_NAME_MAX], models[CURVES_MAX_SERIES][RESULTS_NAME_MAX];
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
    sbuf b = *b_out;
    svg_open(&b, W, H, title);
    svg_title(&b, W, 24, title);
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
    *b_out = b;
    return ns;
}
