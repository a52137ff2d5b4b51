/* libFuzzer target: the safetensors reader on arbitrary bytes. Every tensor
 * of an accepted file must lie inside the input; its bytes are read. */
#include "io/io.h"

#include <assert.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nnz_st_file f;
    if (nnz_st_parse(data, size, "fuzz", &f) != NNZ_OK) return 0;
    unsigned sum = 0;
    for (int i = 0; i < f.n; i++) {
        const nnz_st_tensor *t = &f.tensors[i];
        const uint8_t *p = t->data;
        assert(p >= data && p + t->nbytes <= data + size);
        assert(nnz_st_find(&f, t->name) != NULL);
        for (size_t j = 0; j < t->nbytes; j++) sum += p[j];
    }
    for (int i = 0; i < f.n_meta; i++) sum += (unsigned)strlen(f.meta_values[i]);
    (void)sum;
    nnz_st_free(&f);
    return 0;
}
