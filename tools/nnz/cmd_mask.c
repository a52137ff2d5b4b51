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

int cmd_mask(int argc, char **argv) {
    int kind = NNZ_MASK_RBGP, scale = 0, max_rows = 16;
    float sparsity = 0.875f, inner = 0.0f;
    const char *shape = NULL, *block = NULL, *levels = NULL, *core = NULL, *repeat = NULL, *pgm = NULL;
    uint64_t seed = 42;
    cli_flag flags[] = {
        FL_CHOICE("--kind", &kind, "KIND",
                  "rbgp (Ramanujan graph product, fixed at init), hbsnn (hierarchical blocks), block, unstructured or "
                  "dense. hbsnn/block/unstructured choose at random here (magnitude needs weights).",
                  "rbgp", cli_mask_kind_names),
        FL_STR("--shape", &shape, "OCxK", "The weight's shape: rows x cols (a conv weight is OC x KH*KW*IC).", NULL),
        FL_FLOAT("--sparsity", &sparsity, "S", "Fraction of weights pruned, below 1.", "0.875", 0, 1, false),
        FL_STR("--block", &block, "RxC", "block: the block; hbsnn: the first level; rbgp: the dense micro-block J_b.",
               "16x16 (rbgp 4x4)"),
        FL_STR("--levels", &levels, "RxC,...", "hbsnn: the nested blocks, coarse to fine, each dividing the previous.",
               "BLOCK,BLOCK/4"),
        FL_FLOAT("--inner-sparsity", &inner, "S", "rbgp: sparsity of the inner graph G_i (0 = split evenly).", "0", 0, 1,
                 false),
        FL_STR("--core", &core, "RxC", "rbgp: the core block G_i (x) J_b in elements.", "about 8x8 micro-blocks"),
        FL_STR("--repeat", &repeat, "RxC", "rbgp: J_r, core blocks repeating one pattern in an outer tile.", "1x1"),
        FL_U64("--seed", &seed, "N", "Random seed: same seed, same mask.", "42"),
        FL_STR("--pgm", &pgm, "FILE", "Write the mask as a PGM picture (kept = black), atomically.", NULL),
        FL_INT("--scale", &scale, "N", "Pixels per element side in the picture (0 = fit about 1024 pixels).", "0", 0,
               64),
        FL_INT("--show-rows", &max_rows, "N", "rbgp: adjacency rows printed per factor graph.", "16", 0, 100000),
    };
    cli_command cmd = {
        .name = "mask",
        .summary = "build and show a weight mask: RBGP factor graphs, spectral gap, index bytes, picture",
        .usage = "nnz mask --shape OCxK [--kind rbgp|hbsnn|block|unstructured] [--sparsity S] [flags]",
        .description =
            "Builds the mask of a (OC, K) weight and prints how many weights it keeps, its structure, and the bytes\n"
            "of its index as CSR, BSR and (rbgp) the succinct form: the factor graphs and block sizes. For rbgp\n"
            "(G_o (x) J_r (x) G_i (x) J_b) it prints both Ramanujan factor graphs, their degrees, their second\n"
            "singular value against the Ramanujan bound and their adjacency lists. See docs/RBGP.md.",
        .example = "  nnz mask --shape 64x576 --sparsity 0.875\n"
                   "  nnz mask --kind hbsnn --shape 128x1152 --sparsity 0.9 --levels 16x16,4x4 --pgm h.pgm\n"
                   "  nnz mask --kind rbgp --shape 256x2304 --block 16x16 --pgm rbgp.pgm",
        .flags = flags,
        .n_flags = (int)(sizeof flags / sizeof flags[0]),
    };
    const char *pos[1];
    int npos = 0;
    int r = cli_parse(&cmd, argc, argv, pos, &npos);
    if (r == CLI_HELP_SHOWN) return CLI_EXIT_OK;
    if (r) return r;

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
    if (spec.kind == NNZ_MASK_RBGP) {
        const nnz_mask_factor *o = &info.outer, *in = &info.inner;
        printf("structure: G_o %dx%d (x) J_r %dx%d (x) G_i %dx%d (x) J_b %dx%d on %dx%d (padded %dx%d)\n", o->rows, o->cols,
               info.repeat_rows, info.repeat_cols, in->rows, in->cols, info.block_rows, info.block_cols, rows, cols,
               info.pad_rows, info.pad_cols);
        printf("  outer tile %dx%d, core block %dx%d, micro-block %dx%d; density (dl_o/%d)*(dl_i/%d) = %.4f\n",
               info.repeat_rows * in->rows * info.block_rows, info.repeat_cols * in->cols * info.block_cols,
               in->rows * info.block_rows, in->cols * info.block_cols, info.block_rows, info.block_cols, o->cols, in->cols,
               (double)o->dl / o->cols * in->dl / in->cols);
        print_factor("G_o", o);
        print_factor("G_i", in);
    }
    printf("index bytes (int32, no values):");
    if (info.bytes_succinct) printf(" succinct %lld,", (long long)info.bytes_succinct);
    printf(" BSR %dx%d %lld (%lld blocks), CSR %lld; bitmap %lld\n", info.block_rows, info.block_cols,
           (long long)info.bytes_bsr, (long long)info.nblocks, (long long)info.bytes_csr, (long long)info.bytes_bitmap);
    int rc = CLI_EXIT_OK;
    if (spec.kind == NNZ_MASK_RBGP && max_rows > 0) {
        size_t cap = 1 << 20;
        char *text = malloc(cap);
        if (text && nnz_mask_factors_text(&spec, rows, cols, seed, max_rows, text, cap) == NNZ_OK) {
            printf("factor graphs (row: neighbours):\n");
            fputs(text, stdout);
        }
        free(text);
    }
    if (pgm) {
        int sc = scale;
        if (!sc) {
            int side = rows > cols ? rows : cols;
            sc = side >= 1024 ? 1 : 1024 / side;
            if (sc > 16) sc = 16;
        }
        if (nnz_mask_write_pgm(mask, rows, cols, sc, pgm) != NNZ_OK) rc = cli_fail("mask", "writing the picture");
        else printf("picture: %s (%dx%d pixels, %d per element, kept = black)\n", pgm, cols * sc, rows * sc, sc);
    }
    free(mask);
    return rc;
}
