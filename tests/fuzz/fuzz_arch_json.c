/* libFuzzer target: nnz_model_from_json must reject hostile architecture JSON
 * with an error, never crash; whatever it accepts must write back to JSON that
 * reads back to the same text. Seeds: tests/fuzz/corpus/arch_json (the zoo).
 *   build: cmake -DNNZ_FUZZ=ON -DCMAKE_C_COMPILER=clang ... ; run:
 *   ./fuzz_arch_json -rss_limit_mb=4096 tests/fuzz/corpus/arch_json
 * (the builder caps a model at 2^27 parameters; with gradients that is 1 GiB) */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nn.h"

/* Hostile architectures may declare models up to the size policy's limit, and each
 * accepted one is built (weights initialised) per execution: a 256 KiB limit keeps an
 * execution cheap and fuzzes the limit's checks too. NNZ_SIZE_LIMIT set by the caller wins. */
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    setenv("NNZ_SIZE_LIMIT", "256K", 0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    nnz_model *m = NULL;
    if (nnz_model_from_json(text, 1, &m) == NNZ_OK) {
        char *j1 = NULL, *j2 = NULL;
        nnz_model *m2 = NULL;
        if (nnz_model_to_json(m, &j1) != NNZ_OK || nnz_model_from_json(j1, 1, &m2) != NNZ_OK ||
            nnz_model_to_json(m2, &j2) != NNZ_OK || strcmp(j1, j2) != 0)
            abort(); /* an accepted architecture must round-trip */
        free(j1);
        free(j2);
        nnz_model_free(m2);
        nnz_model_free(m);
    } else if (m != NULL || nnz_last_error()[0] == '\0') {
        abort(); /* a failure leaves no model and says why */
    }
    free(text);
    return 0;
}
