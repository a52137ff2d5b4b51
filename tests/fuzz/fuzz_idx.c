/* libFuzzer target: the IDX parser on arbitrary bytes. Every accepted file
 * must describe exactly the bytes it was given. */
#include "io/io.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nnz_idx idx;
    if (nnz_idx_parse(data, size, "fuzz", &idx) != NNZ_OK) return 0;
    size_t total = 1;
    for (int i = 0; i < idx.ndim; i++) total *= (size_t)idx.dims[i];
    if (!(idx.data + total == data + size)) abort(); /* also in Release replays, where assert is off */
    unsigned sum = 0; /* touch every byte so ASan sees any over-read */
    for (size_t i = 0; i < total; i++) sum += idx.data[i];
    (void)sum;
    return 0;
}
