/* nnz mask: build a weight mask (RBGP, HBsNN, block, unstructured) for a shape, print its
 * statistics, factor graphs, spectral gaps and index sizes, and draw it as a PGM picture. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

static void print_factor(const char *name, const nnz_mask_factor *f) {
    printf("  %s %dx%d: left degree %d, right degree %d", name, f->rows, f->cols, f->dl, f->dr_min);
    if (f->dr_max != f->dr_min) printf("..%d (near-biregular)", f->dr_max);
    else printf(" (biregular)");
    printf(", %s, %d tr%s\n", f->method, f->tries, f->tries == 1 ? "y" : "ies");
    printf("      sigma1 %.4f  sigma2 %.4f  Ramanujan bound sqrt(dl-1)+sqrt(dr-1) = %.4f  gap %+.4f  %s\n", f->sigma1,
           f->sigma2, f->bound, f->bound - f->sigma2, f->ramanujan ? "Ramanujan" : "NOT Ramanujan");
}

static int picture_scale(int rows, int cols, int scale) {
    if (scale) return scale;
    const int side = rows > cols ? rows : cols;
    const int sc = side >= 1024 ? 1 : 1024 / side;
    return sc > 16 ? 16 : sc;
}

static void print_rbgp(const nnz_mask_info *info, int rows, int cols) {
    const nnz_mask_factor *o = &info->outer, *in = &info->inner;
    printf("structure: G_o %dx%d (x) J_r %dx%d (x) G_i %dx%d (x) J_b %dx%d on %dx%d (padded %dx%d)\n", o->rows, o->cols,
           info->repeat_rows, info->repeat_cols, in->rows, in->cols, info->block_rows, info->block_cols, rows, cols,
           info->pad_rows, info->pad_cols);
    printf("  outer tile %dx%d, core block %dx%d, micro-block %dx%d; density (dl_o/%d)*(dl_i/%d) = %.4f\n",
           info->repeat_rows * in->rows * info->block_rows, info->repeat_cols * in->cols * info->block_cols,
           in->rows * info->block_rows, in->cols * info->block_cols, info->block_rows, info->block_cols, o->cols,
           in->cols, (double)o->dl / o->cols * in->dl / in->cols);
    print_factor("G_o", o);
    print_factor("G_i", in);
}

static void print_factor_lists(const nnz_mask_spec *spec, int rows, int cols, uint64_t seed, int max_rows) {
    if (max_rows <= 0) return;
    size_t cap = 1 << 20;
    char *text = malloc(cap);
    if (text && nnz_mask_factors_text(spec, rows, cols, seed, max_rows, text, cap) == NNZ_OK) {
        printf("factor graphs (row: neighbours):\n");
        fputs(text, stdout);
    }
    free(text);
}

static int64_t count_empty_lines(const uint8_t *mask, int rows, int cols, bool by_rows) {
    int64_t empty = 0;
    const int n = by_rows ? rows : cols, len = by_rows ? cols : rows;
    for (int a = 0; a < n; a++) {
        bool any = false;
        for (int b = 0; b < len && !any; b++) any = by_rows ? mask[(int64_t)a * cols + b] : mask[(int64_t)b * cols + a];
        empty += !any;
    }
    return empty;
}

/* The checkpoint's list of conv/linear layers with their zeros. */
static void list_layers(const char *path, const nnz_weight_layer *ls, int n) {
    printf("checkpoint: %s, %d conv/linear layers (nnz mask %s --layer NAME shows one)\n", path, n, path);
    printf("  %-20s %-6s %-12s %12s %9s\n", "layer", "op", "OCxK", "zeros", "sparsity");
    for (int i = 0; i < n; i++) {
        const int64_t total = (int64_t)ls[i].rows * ls[i].cols;
        int64_t zeros = 0;
        for (int64_t k = 0; k < total; k++) zeros += ls[i].weight[k] == 0.0f;
        char shape[32], z[32];
        snprintf(shape, sizeof shape, "%dx%d", ls[i].rows, ls[i].cols);
        cli_group_digits(zeros, z, sizeof z);
        printf("  %-20s %-6s %-12s %12s %9.4f%s\n", ls[i].name, ls[i].op, shape, z, (double)zeros / (double)total,
               ls[i].maskable ? "" : "  (first/last layer: --mask leaves it dense)");
    }
}

/* What the run's recorded mask settings regenerate, against the zeros. */
/* the layer's weight in the --init-from model (malloc'ed copy, NULL with a reason printed) */
static float *init_weight(const nnz_mask_origin *origin, const char *layer, int rows, int cols) {
    if (!origin->init_from[0]) {
        printf("regenerated mask: not checked: chosen by magnitude from an --init-from model whose path is not "
               "recorded in full\n");
        return NULL;
    }
    nnz_model *im = NULL;
    if (nnz_checkpoint_load_model(origin->init_from, &im) != NNZ_OK) {
        printf("regenerated mask: not checked: chosen by magnitude from the --init-from model '%s', which cannot be "
               "loaded (%s)\n", origin->init_from, nnz_last_error());
        return NULL;
    }
    float *w = NULL;
    const int n = nnz_model_weight_layers(im, NULL, 0);
    nnz_weight_layer *ls = calloc((size_t)(n ? n : 1), sizeof *ls);
    if (ls) {
        nnz_model_weight_layers(im, ls, n);
        for (int i = 0; i < n && !w; i++)
            if (strcmp(ls[i].name, layer) == 0 && ls[i].rows == rows && ls[i].cols == cols &&
                (w = malloc(sizeof(float) * (size_t)rows * cols)))
                memcpy(w, ls[i].weight, sizeof(float) * (size_t)rows * cols);
    }
    if (!w) printf("regenerated mask: not checked: the --init-from model '%s' has no %dx%d layer '%s'\n",
                   origin->init_from, rows, cols, layer);
    free(ls);
    nnz_model_free(im);
    return w;
}

static void show_origin(const nnz_mask_origin *origin, const char *layer, const uint8_t *mask, int rows, int cols,
                        int max_rows) {
    if (!origin->recorded) {
        printf("origin: the checkpoint's training configuration records no --mask (a dense or pruned run, or no "
               "configuration saved): the zeros are shown as they are\n");
        return;
    }
    const nnz_mask_spec *sp = &origin->spec;
    if (!origin->layer_masked) {
        printf("origin: the run used --mask %s, but not on this layer (the first and the last stay dense)\n",
               nnz_mask_kind_name(sp->kind));
        return;
    }
    printf("origin: nnz train --mask %s --sparsity %g", nnz_mask_kind_name(sp->kind), sp->sparsity);
    if (sp->block_rows) printf(" --mask-block %dx%d", sp->block_rows, sp->block_cols);
    else printf(" (no --mask-block recorded: the default)");
    if (origin->init_from[0] || origin->by_magnitude) printf(" --init-from %s", origin->init_from);
    printf("; this layer's mask seed %llu\n", (unsigned long long)origin->seed);
    float *w = NULL;
    if (origin->by_magnitude) {
        printf("origin: %s masks of an --init-from run keep the largest weights of that model\n",
               nnz_mask_kind_name(sp->kind));
        if (!(w = init_weight(origin, layer, rows, cols))) return;
    }
    const int64_t total = (int64_t)rows * cols;
    uint8_t *regen = malloc((size_t)total);
    nnz_mask_info gi;
    if (!regen || nnz_mask_make(sp, rows, cols, w, origin->seed, regen, &gi) != NNZ_OK) {
        printf("regenerated mask: could not be rebuilt (%s)\n", regen ? nnz_last_error() : "out of memory");
        free(regen);
        free(w);
        return;
    }
    free(w);
    int64_t outside = 0, zero_inside = 0; /* nonzero where the mask prunes; exactly 0 where it keeps */
    for (int64_t k = 0; k < total; k++) outside += mask[k] && !regen[k], zero_inside += !mask[k] && regen[k];
    free(regen);
    if (!outside && !zero_inside)
        printf("regenerated mask: equals the zeros of the weight (%lld kept)\n", (long long)gi.kept);
    else if (!outside)
        printf("regenerated mask: holds every nonzero weight; %lld of its %lld kept weights are exactly 0 in the "
               "checkpoint\n", (long long)zero_inside, (long long)gi.kept);
    else
        printf("regenerated mask: DIFFERS from the zeros: %lld nonzero weights lie outside it, %lld of its kept "
               "positions are 0 (another --mask-block or seed than recorded, or weights changed after training)\n",
               (long long)outside, (long long)zero_inside);
    if (sp->kind != NNZ_MASK_RBGP) return;
    print_rbgp(&gi, rows, cols);
    printf("index bytes of the regenerated mask (int32, no values): succinct %lld, BSR %dx%d %lld (%lld blocks), "
           "CSR %lld\n", (long long)gi.bytes_succinct, gi.block_rows, gi.block_cols, (long long)gi.bytes_bsr,
           (long long)gi.nblocks, (long long)gi.bytes_csr);
    print_factor_lists(sp, rows, cols, origin->seed, max_rows);
}

/* nnz mask CKPT [--layer NAME]: a trained checkpoint's layer masks (the zeros of its weights) */
static int mask_checkpoint(cli_command *cmd, const char *path, const char *layer, const char *pgm, int scale,
                           int max_rows) {
    nnz_model *m = NULL;
    if (nnz_checkpoint_load_model(path, &m) != NNZ_OK) return cli_fail("mask", "cannot load the checkpoint");
    const int n = nnz_model_weight_layers(m, NULL, 0);
    nnz_weight_layer *ls = calloc((size_t)(n ? n : 1), sizeof *ls);
    uint8_t *mask = NULL;
    int rc = CLI_EXIT_OK;
    if (!ls) {
        fprintf(stderr, "nnz mask: out of memory\n");
        rc = CLI_EXIT_FAILURE;
        goto done;
    }
    nnz_model_weight_layers(m, ls, n);
    if (!layer) {
        list_layers(path, ls, n);
        goto done;
    }
    int at = -1;
    for (int i = 0; i < n && at < 0; i++)
        if (strcmp(ls[i].name, layer) == 0) at = i;
    if (at < 0) {
        char names[1024] = "";
        size_t k = 0;
        for (int i = 0; i < n && k < sizeof names; i++) {
            const int w = snprintf(names + k, sizeof names - k, "%s%s", i ? ", " : "", ls[i].name);
            if (w > 0) k += (size_t)w;
        }
        rc = cli_usage_error(cmd, "--layer '%s': '%s' has no conv or linear layer of that name (it has: %s)", layer,
                             path, names);
        goto done;
    }
    const nnz_weight_layer *l = &ls[at];
    const int rows = l->rows, cols = l->cols;
    const int64_t total = (int64_t)rows * cols;
    mask = malloc((size_t)total);
    if (!mask) {
        fprintf(stderr, "nnz mask: out of memory for a %dx%d mask\n", rows, cols);
        rc = CLI_EXIT_FAILURE;
        goto done;
    }
    for (int64_t k = 0; k < total; k++) mask[k] = l->weight[k] != 0.0f;
    nnz_mask_origin origin;
    if (nnz_checkpoint_mask_origin(path, m, layer, &origin) != NNZ_OK) {
        rc = cli_fail("mask", "cannot read the checkpoint's training configuration");
        goto done;
    }
    nnz_mask_info info;
    nnz_mask_measure(mask, rows, cols, 1, 1, &info);
    char kept[32], all[32];
    cli_group_digits(info.kept, kept, sizeof kept);
    cli_group_digits(total, all, sizeof all);
    printf("checkpoint: %s, layer %s (%s), weight %dx%d (%s)\n", path, l->name, l->op, rows, cols,
           strcmp(l->op, "conv") == 0 ? "OC x KH*KW*IC" : "OUT x IN");
    printf("kept (nonzero weights): %s of %s (density %.4f, sparsity %.4f)\n", kept, all, info.density,
           1.0 - info.density);
    printf("empty rows (outputs reading no input): %lld of %d; empty columns (inputs no output reads): %lld of %d\n",
           (long long)count_empty_lines(mask, rows, cols, true), rows,
           (long long)count_empty_lines(mask, rows, cols, false), cols);
    /* block structure: how full the kept blocks are at several block sizes and the run's micro-block */
    int sizes[5][2] = {{1, 4}, {4, 4}, {8, 8}, {16, 16}, {0, 0}};
    const nnz_mask_spec *sp = &origin.spec;
    if (origin.recorded && sp->block_rows && !(sp->block_rows == 4 && sp->block_cols == 4) &&
        !(sp->block_rows == 8 && sp->block_cols == 8) && !(sp->block_rows == 16 && sp->block_cols == 16))
        sizes[4][0] = sp->block_rows, sizes[4][1] = sp->block_cols;
    printf("blocks (size: blocks holding a nonzero of all, fill = nonzeros / their positions, int32 BSR index):\n");
    for (int b = 0; b < 5 && sizes[b][0]; b++) {
        const int br = sizes[b][0], bc = sizes[b][1];
        nnz_mask_info bi;
        if (nnz_mask_measure(mask, rows, cols, br, bc, &bi) != NNZ_OK) continue;
        const int64_t grid = (int64_t)((rows + br - 1) / br) * ((cols + bc - 1) / bc);
        printf("  %2dx%-2d  %lld of %lld, fill %.4f, BSR %lld bytes\n", br, bc, (long long)bi.nblocks, (long long)grid,
               bi.nblocks ? (double)bi.kept / ((double)bi.nblocks * br * bc) : 0.0, (long long)bi.bytes_bsr);
    }
    printf("index bytes (int32, no values): CSR %lld; bitmap %lld\n", (long long)info.bytes_csr,
           (long long)info.bytes_bitmap);
    show_origin(&origin, layer, mask, rows, cols, max_rows);
    if (pgm) {
        const int sc = picture_scale(rows, cols, scale);
        if (nnz_mask_write_pgm(mask, rows, cols, sc, pgm) != NNZ_OK) rc = cli_fail("mask", "writing the picture");
        else printf("picture: %s (%dx%d pixels, %d per element, nonzero = black)\n", pgm, cols * sc, rows * sc, sc);
    }
done:
    free(mask);
    free(ls);
    nnz_model_free(m);
    return rc;
}

int cmd_mask(int argc, char **argv) {
    int kind = NNZ_MASK_RBGP, scale = 0, max_rows = 16, taps = 1;
    float sparsity = 0.875f, inner = 0.0f;
    const char *shape = NULL, *block = NULL, *levels = NULL, *core = NULL, *repeat = NULL, *pgm = NULL, *layer = NULL;
    uint64_t seed = 42;
    cli_flag flags[] = {
        FL_CHOICE("--kind", &kind, "KIND",
                  "rbgp (Ramanujan graph product, fixed at init), hbsnn (hierarchical blocks), block, unstructured, "
                  "channel-block (blocks of channels kept at every tap: --taps) or dense. hbsnn/block/unstructured/"
                  "channel-block choose at random here (magnitude needs weights).",
                  "rbgp", cli_mask_kind_names),
        FL_STR("--shape", &shape, "OCxK", "The weight's shape: rows x cols (a conv weight is OC x KH*KW*IC).", NULL),
        FL_FLOAT("--sparsity", &sparsity, "S", "Fraction of weights pruned, below 1.", "0.875", 0, 1, false),
        FL_STR("--block", &block, "RxC", "block: the block; hbsnn: the first level; rbgp: the dense micro-block J_b.",
               "16x16 (rbgp 4x4)"),
        FL_INT("--taps", &taps, "N", "channel-block: the kernel's taps (KH*KW; K = taps x channels): a block of channels "
               "is kept or dropped at every tap.", "1", 1, 1024),
        FL_STR("--levels", &levels, "RxC,...", "hbsnn: the nested blocks, coarse to fine, each dividing the previous.",
               "BLOCK,BLOCK/4"),
        FL_FLOAT("--inner-sparsity", &inner, "S", "rbgp: sparsity of the inner graph G_i (0 = split evenly).", "0", 0, 1,
                 false),
        FL_STR("--core", &core, "RxC", "rbgp: the core block G_i (x) J_b in elements.", "about 8x8 micro-blocks"),
        FL_STR("--repeat", &repeat, "RxC", "rbgp: J_r, core blocks repeating one pattern in an outer tile.", "1x1"),
        FL_U64("--seed", &seed, "N", "Random seed: same seed, same mask.", "42"),
        FL_STR("--layer", &layer, "NAME", "With CHECKPOINT: the layer whose mask (the zeros of its weight) to show.",
               "list the layers"),
        FL_STR("--pgm", &pgm, "FILE", "Write the mask as a PGM picture (kept = black), atomically.", NULL),
        FL_INT("--scale", &scale, "N", "Pixels per element side in the picture (0 = fit about 1024 pixels).", "0", 0,
               64),
        FL_INT("--show-rows", &max_rows, "N", "rbgp: adjacency rows printed per factor graph.", "16", 0, 100000),
    };
    cli_command cmd = {
        .name = "mask",
        .summary = "build and show a weight mask: RBGP factor graphs, spectral gap, index bytes, picture",
        .usage = "nnz mask --shape OCxK [--kind rbgp|hbsnn|block|unstructured|channel-block] [--sparsity S] [flags]\n"
                 "       nnz mask CHECKPOINT [--layer NAME] [--pgm FILE] [--scale N] [--show-rows N]",
        .description =
            "Builds the mask of a (OC, K) weight and prints how many weights it keeps, its structure, and the bytes\n"
            "of its index as CSR, BSR and (rbgp) the succinct form: the factor graphs and block sizes. For rbgp\n"
            "(G_o (x) J_r (x) G_i (x) J_b) it prints both Ramanujan factor graphs, their degrees, their second\n"
            "singular value against the Ramanujan bound and their adjacency lists. See docs/RBGP.md.\n"
            "With a CHECKPOINT it lists the conv/linear layers and their zeros; with --layer it shows that layer's\n"
            "mask (the zeros of its weight, OC x KH*KW*IC): sparsity, empty rows/columns, block fill at several\n"
            "block sizes, index bytes. When the checkpoint's training configuration records --mask (nnz train\n"
            "--mask), it regenerates the mask from the recorded seed and settings and says whether it equals the\n"
            "zeros; for rbgp it then prints the factor graphs and their spectral gaps.",
        .example = "  nnz mask --shape 64x576 --sparsity 0.875\n"
                   "  nnz mask --kind hbsnn --shape 128x1152 --sparsity 0.9 --levels 16x16,4x4 --pgm h.pgm\n"
                   "  nnz mask --kind rbgp --shape 256x2304 --block 16x16 --pgm rbgp.pgm\n"
                   "  nnz mask --kind channel-block --shape 128x1152 --taps 9 --sparsity 0.75\n"
                   "  nnz mask vgg8.safetensors --layer conv4 --pgm conv4.pgm",
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

    if (npos == 1) {
        static const char *const build_only[] = {"--kind", "--shape", "--sparsity", "--block", "--levels",
                                                 "--inner-sparsity", "--core", "--repeat", "--seed", "--taps"};
        for (size_t i = 0; i < sizeof build_only / sizeof build_only[0]; i++)
            if (cli_find_flag(&cmd, build_only[i])->seen)
                return cli_usage_error(&cmd, "%s builds a new mask; with a CHECKPOINT the mask is the weights' zeros "
                                             "(use --layer NAME)", build_only[i]);
        return mask_checkpoint(&cmd, pos[0], layer, pgm, scale, max_rows);
    }
    if (layer) return cli_usage_error(&cmd, "--layer needs a CHECKPOINT: nnz mask CKPT --layer NAME");
    int rows = 0, cols = 0;
    if (!shape) return cli_usage_error(&cmd, "--shape OCxK is required (e.g. --shape 64x576)");
    if (!cli_parse_pair(shape, &rows, &cols)) return cli_usage_error(&cmd, "--shape expects OCxK like 64x576, got '%s'", shape);
    if ((int64_t)rows * cols > ((int64_t)1 << 28))
        return cli_usage_error(&cmd, "--shape %dx%d has more than 2^28 weights", rows, cols);
    if (sparsity >= 1.0f) return cli_usage_error(&cmd, "--sparsity must be below 1 (1 would prune everything), got %g", sparsity);
    if (inner >= 1.0f) return cli_usage_error(&cmd, "--inner-sparsity must be below 1, got %g", inner);
    nnz_mask_spec spec = {.kind = (nnz_mask_kind)kind, .sparsity = sparsity, .inner_sparsity = inner};
    if (block && !cli_parse_pair(block, &spec.block_rows, &spec.block_cols))
        return cli_usage_error(&cmd, "--block expects RxC like 16x16, got '%s'", block);
    if (core && !cli_parse_pair(core, &spec.core_rows, &spec.core_cols))
        return cli_usage_error(&cmd, "--core expects RxC like 32x32, got '%s'", core);
    if (repeat && !cli_parse_pair(repeat, &spec.repeat_rows, &spec.repeat_cols))
        return cli_usage_error(&cmd, "--repeat expects RxC like 2x1, got '%s'", repeat);
    if (levels) {
        if (kind != NNZ_MASK_HBSNN) return cli_usage_error(&cmd, "--levels is for --kind hbsnn");
        char buf[256];
        snprintf(buf, sizeof buf, "%s", levels);
        char *save = NULL;
        for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            if (spec.levels == NNZ_MASK_MAX_LEVELS)
                return cli_usage_error(&cmd, "--levels: at most %d levels", NNZ_MASK_MAX_LEVELS);
            if (!cli_parse_pair(tok, &spec.level_rows[spec.levels], &spec.level_cols[spec.levels]))
                return cli_usage_error(&cmd, "--levels expects RxC,RxC,... like 16x16,4x4, got '%s'", levels);
            spec.levels++;
        }
        if (!spec.levels) return cli_usage_error(&cmd, "--levels is empty");
    }
    if (kind != NNZ_MASK_RBGP && (core || repeat || inner > 0))
        return cli_usage_error(&cmd, "--core, --repeat and --inner-sparsity are for --kind rbgp");
    if (kind != NNZ_MASK_CHANNEL_BLOCK && cli_find_flag(&cmd, "--taps")->seen)
        return cli_usage_error(&cmd, "--taps is for --kind channel-block");
    spec.taps = taps;

    uint8_t *mask = malloc((size_t)rows * cols);
    if (!mask) {
        fprintf(stderr, "nnz mask: out of memory for a %dx%d mask\n", rows, cols);
        return CLI_EXIT_FAILURE;
    }
    nnz_mask_info info;
    nnz_status st = nnz_mask_make(&spec, rows, cols, NULL, seed, mask, &info);
    if (st != NNZ_OK) {
        free(mask);
        if (st == NNZ_ERR_INVALID_ARG) return cli_usage_error(&cmd, "%s", nnz_last_error());
        return cli_fail("mask", "building the mask");
    }
    char kept[32], total[32];
    cli_group_digits(info.kept, kept, sizeof kept);
    cli_group_digits((int64_t)rows * cols, total, sizeof total);
    printf("mask: %s %dx%d, sparsity %.4f asked, seed %llu\n", nnz_mask_kind_name(spec.kind), rows, cols, sparsity,
           (unsigned long long)seed);
    printf("kept: %s of %s (density %.4f, sparsity %.4f)\n", kept, total, info.density, 1.0 - info.density);
    if (spec.kind == NNZ_MASK_RBGP) print_rbgp(&info, rows, cols);
    printf("index bytes (int32, no values):");
    if (info.bytes_succinct) printf(" succinct %lld,", (long long)info.bytes_succinct);
    printf(" BSR %dx%d %lld (%lld blocks), CSR %lld; bitmap %lld\n", info.block_rows, info.block_cols,
           (long long)info.bytes_bsr, (long long)info.nblocks, (long long)info.bytes_csr, (long long)info.bytes_bitmap);
    int rc = CLI_EXIT_OK;
    if (spec.kind == NNZ_MASK_RBGP) print_factor_lists(&spec, rows, cols, seed, max_rows);
    if (pgm) {
        const int sc = picture_scale(rows, cols, scale);
        if (nnz_mask_write_pgm(mask, rows, cols, sc, pgm) != NNZ_OK) rc = cli_fail("mask", "writing the picture");
        else printf("picture: %s (%dx%d pixels, %d per element, kept = black)\n", pgm, cols * sc, rows * sc, sc);
    }
    free(mask);
    return rc;
}
