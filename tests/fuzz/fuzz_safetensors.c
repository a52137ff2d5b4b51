/* libFuzzer target: the safetensors reader on arbitrary bytes. Every tensor
 * of an accepted file must lie inside the input; its bytes are read. */
#include "io/io.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nnz_st_file f;
    if (nnz_st_parse(data, size, "fuzz", &f) != NNZ_OK) return 0;
    unsigned sum = 0;
    for (int i = 0; i < f.n; i++) {
        const nnz_st_tensor *t = &f.tensors[i];
        const uint8_t *p = t->data;
        if (!(p >= data && p + t->nbytes <= data + size)) abort(); /* also in Release replays, where assert is off */
        if (!(nnz_st_find(&f, t->name) != NULL)) abort(); /* also in Release replays, where assert is off */
        for (size_t j = 0; j < t->nbytes; j++) sum += p[j];
    }
    for (int i = 0; i < f.n_meta; i++) sum += (unsigned)strlen(f.meta_values[i]);
    (void)sum;
    nnz_st_free(&f);
    return 0;
}
