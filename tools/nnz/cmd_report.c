/* nnz report: draws a checkpoint's per-layer sparsity (bar chart) or the accuracy-vs-sparsity
 * curves of a results file (one line per method and model) as a hand-written SVG, written
 * atomically. docs/AUTOSPARSE.md, "Plots", has the results file's format. */
#include "cli.h"
#include "report.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

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
    svg_title(&b, W, 22, title);
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

static int report_curves(const char *path, const char *out_path, const char *title_arg) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "nnz report: cannot open the results file '%s': %s\n", path, strerror(errno));
        return CLI_EXIT_FAILURE;
    }
    result_row *R = NULL;
    int n = 0;
    const int bad = results_read(f, path, &R, &n);
    fclose(f);
    if (bad) return CLI_EXIT_FAILURE;
    sbuf b = {0};
    const int ns = chart_curves(R, n, title_arg, path, &b);
    int r = ns < 0 ? CLI_EXIT_FAILURE : write_svg(&b, out_path);
    if (r == CLI_EXIT_OK) {
        /* one line per curve: runs of (method, model) in the sorted rows */
        printf("%-16s %-12s %6s  %9s  %9s\n", "method", "model", "points", "sparsity", "accuracy");
        for (int a = 0, z; a < n; a = z + 1) {
            for (z = a; z + 1 < n && !strcmp(R[z + 1].method, R[a].method) && !strcmp(R[z + 1].model, R[a].model);)
                z++;
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
