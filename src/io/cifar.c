/* CIFAR-10 binary batches: fixed 3073-byte records, one label byte (0..9)
 * then a 32x32 image as three 1024-byte planes (R, G, B: CHW). nnz stores
 * images NHWC, so each record is transposed on the way in. */
#include "io/io.h"

#define CIFAR_SIDE 32
#define CIFAR_PLANE (CIFAR_SIDE * CIFAR_SIDE)
#define CIFAR_PIXELS (3 * CIFAR_PLANE)
#define CIFAR_RECORD (1 + CIFAR_PIXELS)
#define CIFAR_CLASSES 10

/* *count is the number of records already in images/labels on entry; the
 * records of buf are appended after them and *count is advanced. Nothing is
 * written unless the whole buffer is valid. */
nnz_status nnz_cifar_parse(const uint8_t *buf, size_t len, const char *name, uint8_t *images, uint8_t *labels,
                           int cap, int *count) {
    if (!name) name = "(buffer)";
    if (len == 0) return nnz_fail(NNZ_ERR_FORMAT, "CIFAR-10 batch '%s' is empty; re-download it", name);
    if (len % CIFAR_RECORD != 0)
        return nnz_fail(NNZ_ERR_FORMAT,
                        "CIFAR-10 batch '%s' is %zu bytes, not a whole number of %d-byte records (%zu complete, "
                        "%zu bytes left over); truncated or not a CIFAR-10 binary batch?",
                        name, len, CIFAR_RECORD, len / CIFAR_RECORD, len % CIFAR_RECORD);
    size_t n = len / CIFAR_RECORD;
    if (*count < 0 || *count > cap || n > (size_t)(cap - *count))
        return nnz_fail(NNZ_ERR_FORMAT, "CIFAR-10 batch '%s' has %zu records but room is left for %d (did the file change "
                        "while loading?)", name, n, cap - *count);
    for (size_t r = 0; r < n; r++) {
        uint8_t label = buf[r * CIFAR_RECORD];
        if (label >= CIFAR_CLASSES)
            return nnz_fail(NNZ_ERR_FORMAT, "CIFAR-10 batch '%s': record %zu has label %u, expected 0..9 "
                            "(CIFAR-100 or not a CIFAR-10 batch?)", name, r, label);
    }
    for (size_t r = 0; r < n; r++) {
        const uint8_t *rec = buf + r * CIFAR_RECORD;
        size_t at = (size_t)*count + r;
        labels[at] = rec[0];
        uint8_t *img = images + at * CIFAR_PIXELS;
        for (int p = 0; p < CIFAR_PLANE; p++)
            for (int c = 0; c < 3; c++) img[p * 3 + c] = rec[1 + c * CIFAR_PLANE + p];
    }
    *count += (int)n;
    return NNZ_OK;
}
