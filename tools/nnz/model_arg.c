/* Resolves a model argument: a checkpoint file or a zoo name. */
#include "cli.h"

#include <string.h>
#include <sys/stat.h>

bool cli_is_arch_file(const char *path) {
    const size_t n = strlen(path);
    return n > 5 && strcmp(path + n - 5, ".json") == 0;
}

int cli_load_model(const char *cmd, const char *arg, uint64_t seed, nnz_model **out, bool *from_file) {
    *out = NULL;
    struct stat st;
    bool is_file = stat(arg, &st) == 0;
    if (from_file) *from_file = is_file;
    if (is_file && nnz_is_packed_file(arg)) {
        if (nnz_packed_load_model(arg, out) != NNZ_OK) return cli_fail(cmd, "cannot load the .nnz model");
        return CLI_EXIT_OK;
    }
    if (is_file && cli_is_arch_file(arg)) { /* an architecture: fresh weights */
        if (nnz_model_from_arch_file(arg, seed, out) != NNZ_OK) return cli_fail(cmd, "cannot build the architecture");
        return CLI_EXIT_OK;
    }
    if (is_file) {
        if (nnz_checkpoint_load_model(arg, out) != NNZ_OK) return cli_fail(cmd, "cannot load the checkpoint");
        return CLI_EXIT_OK;
    }
    const char *const *names = nnz_zoo_names();
    for (int i = 0; names && names[i]; i++)
        if (strcmp(names[i], arg) == 0) {
            if (nnz_model_from_zoo(arg, 28, 28, 1, 10, seed, out) != NNZ_OK)
                return cli_fail(cmd, "cannot build the model");
            return CLI_EXIT_OK;
        }
    /* Neither: report it as a file (the loader's message names the problem) and list the zoo. */
    if (from_file) *from_file = true;
    if (nnz_checkpoint_load_model(arg, out) == NNZ_OK) return CLI_EXIT_OK;
    fprintf(stderr, "nnz %s: '%s' is not a loadable checkpoint (%s) nor a zoo model (zoo:", cmd, arg,
            nnz_last_error());
    for (int i = 0; names && names[i]; i++) fprintf(stderr, " %s", names[i]);
    fprintf(stderr, ")\n");
    return CLI_EXIT_FAILURE;
}
