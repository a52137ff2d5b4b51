/* nnz info: what is inside a checkpoint (or a zoo model): layers, sizes, FLOPs. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* A .nnz file: the architecture's layer table, then per tensor: codec, bits, codebook,
 * sparsity, bytes before and after. */
static int info_packed(const char *path) {
    nnz_pack_report rep;
    char *arch = NULL;
    if (nnz_pack_inspect(path, &rep, &arch) != NNZ_OK) return cli_fail("info", "cannot read the .nnz file");
    nnz_model *m = NULL;
    if (nnz_model_from_json(arch, 0, &m) != NNZ_OK) {
        free(arch);
        nnz_pack_report_free(&rep);
        return cli_fail("info", "the .nnz file's architecture is invalid");
    }
    free(arch);
    nnz_model_stats st;
    nnz_model_get_stats(m, &st);
    size_t cap = 1 << 20;
    char *table = malloc(cap);
    if (table) nnz_model_summary(m, table, cap);
    printf("file: %s (.nnz compressed model)\ninput: %dx%dx%d (HxWxC), classes: %d, layers: %d\n\n", path, st.in_h,
           st.in_w, st.in_c, st.num_classes, st.layers);
    if (table) fputs(table, stdout);
    if (table && table[0] && table[strlen(table) - 1] != '\n') fputc('\n', stdout);
    printf("\n");
    cli_print_pack_table(&rep, false);
    free(table);
    nnz_model_free(m);
    nnz_pack_report_free(&rep);
    return CLI_EXIT_OK;
}

int cmd_info(int argc, char **argv) {
    const char *sparse_format = "auto";
    bool arch_only = false;
    cli_flag flags[] = {
        FL_STR("--sparse-format", &sparse_format, "F", CLI_SPARSE_FORMAT_HELP, "auto"),
        FL_BOOL("--arch", &arch_only,
                "Print only the architecture JSON (docs/arch-json.md), e.g. to train a merged architecture "
                "from scratch with nnz train --model FILE.json."),
    };
    cli_command cmd = {
        .name = "info",
        .summary = "show a checkpoint's architecture, parameter count, size and FLOPs",
        .usage = "nnz info FILE|FILE.nnz|ARCH.json|MODEL",
        .description = "Prints the layer table of a checkpoint (name, op, output shape, parameters, FLOPs per\n"
                       "image), the number of trainable parameters and batch-norm buffers, the bytes they take\n"
                       "as fp32, and the forward FLOPs per image (2 per multiply-add). A zoo model name instead\n"
                       "of a file shows that model, freshly built for 28x28x1 inputs and 10 classes; an\n"
                       "architecture .json (nnz info --arch, docs/arch-json.md) shows that graph. For a .nnz\n"
                       "file (nnz pack) it adds, per tensor: codec, bits, gap bits, codebook size, nonzeros, bytes\n"
                       "as fp32 and packed, and the compression ratio. When conv/linear weights hold zeros\n"
                       "(masked or pruned training), it also shows each layer's zeros and the sparse format nnz\n"
                       "runs it in, with the reason.",
        .example = "  nnz info mbv2-tiny.safetensors\n  nnz info lenet5\n"
                   "  nnz info shrunk.safetensors --arch > target.json",
        .flags = flags,
        .n_flags = (int)(sizeof flags / sizeof flags[0]),
        .positional = "FILE",
        .min_pos = 1,
        .max_pos = 1,
    };
    const char *pos[1];
    int npos = 0;
    int r = cli_parse(&cmd, argc, argv, pos, &npos);
    if (r == CLI_HELP_SHOWN) return CLI_EXIT_OK;
    if (r) return r;

    if (nnz_is_packed_file(pos[0]) && !arch_only) return info_packed(pos[0]);
    nnz_model *m = NULL;
    bool from_file = false;
    if ((r = cli_load_model("info", pos[0], 42, &m, &from_file))) return r;
    if (arch_only) {
        char *json = NULL;
        if (nnz_model_to_json(m, &json) != NNZ_OK) {
            nnz_model_free(m);
            return cli_fail("info", "cannot write the architecture");
        }
        printf("%s\n", json);
        free(json);
        nnz_model_free(m);
        return CLI_EXIT_OK;
    }
    nnz_model_stats st;
    nnz_model_get_stats(m, &st);
    size_t cap = 1 << 20;
    char *table = malloc(cap);
    if (!table) {
        nnz_model_free(m);
        fprintf(stderr, "nnz info: out of memory\n");
        return CLI_EXIT_FAILURE;
    }
    nnz_model_summary(m, table, cap);
    char params[32], buffers[32], bytes[32], flops[32];
    cli_group_digits(st.params, params, sizeof params);
    cli_group_digits(st.buffers, buffers, sizeof buffers);
    cli_group_digits((st.params + st.buffers) * 4, bytes, sizeof bytes);
    cli_group_digits(st.flops, flops, sizeof flops);
    if (from_file) {
        struct stat fs;
        char fsize[32] = "?";
        if (stat(pos[0], &fs) == 0) cli_group_digits((int64_t)fs.st_size, fsize, sizeof fsize);
        if (cli_is_arch_file(pos[0]))
            printf("architecture: %s (%s bytes; fresh weights)\n", pos[0], fsize);
        else
            printf("file: %s (%s bytes)\n", pos[0], fsize);
    } else {
        printf("model: %s (zoo, fresh weights)\n", pos[0]);
    }
    printf("input: %dx%dx%d (HxWxC), classes: %d, layers: %d\n\n", st.in_h, st.in_w, st.in_c, st.num_classes,
           st.layers);
    fputs(table, stdout);
    if (table[0] && table[strlen(table) - 1] != '\n') fputc('\n', stdout);
    printf("\nparameters: %s (trainable)\nbuffers: %s (batch-norm running statistics)\n", params, buffers);
    printf("bytes: %s (fp32 parameters + buffers, %.2f MiB)\n", bytes,
           (double)(st.params + st.buffers) * 4.0 / (1024.0 * 1024.0));
    printf("FLOPs per image: %s (%.2f MFLOPs forward; training ~3x)\n", flops, (double)st.flops * 1e-6);
    if (nnz_model_set_sparse_format(m, sparse_format) != NNZ_OK) {
        free(table);
        nnz_model_free(m);
        return cli_usage_error(&cmd, "%s", nnz_last_error());
    }
    int with_zeros = 0;
    if (nnz_model_sparse_summary(m, table, cap, &with_zeros) == NNZ_OK && with_zeros > 0)
    {
        printf("\nsparse layers (--sparse-format %s):\n%s", sparse_format, table);
        if (nnz_model_flops_summary(m, table, cap) == NNZ_OK)
            printf("\nforward FLOPs per image at this sparsity (layers with zeros):\n%s", table);
    }
    if (from_file && nnz_shrink_describe(pos[0], table, cap) == NNZ_OK && table[0]) printf("\n%s", table);
    free(table);
    nnz_model_free(m);
    return CLI_EXIT_OK;
}
