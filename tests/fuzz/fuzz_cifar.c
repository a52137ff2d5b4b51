/* libFuzzer target: the CIFAR-10 batch parser on arbitrary bytes, into
 * exactly sized output buffers. */
#include "io/io.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 16 * 3073) return 0; /* a few records say everything */
    int cap = (int)(size / 3073) + (size & 1); /* sometimes one spare record, sometimes none */
    uint8_t *images = malloc((size_t)(cap ? cap : 1) * 3072), *labels = malloc((size_t)(cap ? cap : 1));
    int count = 0;
    if (nnz_cifar_parse(data, size, "fuzz", images, labels, cap, &count) == NNZ_OK && count > 0) {
        /* a second batch appended after the first must respect the cap */
        nnz_cifar_parse(data, size, "fuzz", images, labels, cap, &count);
    }
    free(images);
    free(labels);
    return 0;
}
