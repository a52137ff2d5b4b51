/* IDX files (the MNIST format): magic 0x00 0x00 <type> <ndim>, then ndim
 * big-endian uint32 dimensions, then prod(dims) items, row-major. nnz reads
 * type 0x08 (unsigned byte) only. Everything is validated against the buffer
 * length before the data is touched; nothing is allocated. */
#include "io/io.h"

#define IDX_TYPE_UBYTE 0x08

static uint32_t load_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* What the first dimension counts, for messages. */
static const char *item_word(int ndim) {
    switch (ndim) {
    case 1: return "labels";
    case 3: return "images";
    default: return "items";
    }
}

nnz_status nnz_idx_parse(const uint8_t *buf, size_t len, const char *name, nnz_idx *out) {
    if (!name) name = "(buffer)";
    if (len == 0) return nnz_fail(NNZ_ERR_FORMAT, "IDX file '%s' is empty; re-download it or pass --data", name);
    if (len < 4)
        return nnz_fail(NNZ_ERR_FORMAT, "IDX file '%s' is %zu bytes, too short for its 4-byte magic; re-download it",
                        name, len);
    if (buf[0] != 0 || buf[1] != 0)
        return nnz_fail(NNZ_ERR_FORMAT,
                        "'%s' is not an IDX file: magic starts 0x%02x%02x, expected 0x0000 (a gzip file not named "
                        ".gz, or the wrong file?)", name, buf[0], buf[1]);
    if (buf[2] != IDX_TYPE_UBYTE)
        return nnz_fail(NNZ_ERR_UNSUPPORTED, "IDX file '%s' has element type 0x%02x; nnz reads unsigned bytes (0x08) only",
                        name, buf[2]);
    int ndim = buf[3];
    if (ndim < 1 || ndim > 4)
        return nnz_fail(NNZ_ERR_FORMAT, "IDX file '%s' has %d dimensions; nnz reads 1 to 4", name, ndim);
    size_t header = 4 + 4 * (size_t)ndim;
    if (len < header)
        return nnz_fail(NNZ_ERR_FORMAT, "truncated IDX file '%s': %zu bytes, its %d-dimension header needs %zu; "
                        "re-download it or pass --data", name, len, ndim, header);
    size_t total = 1, item = 1;
    int64_t dims[4] = {0};
    for (int i = 0; i < ndim; i++) {
        uint32_t d = load_be32(buf + 4 + 4 * (size_t)i);
        if (d == 0) return nnz_fail(NNZ_ERR_FORMAT, "IDX file '%s': dimension %d is 0", name, i);
        if (!nnz_mul_size(total, d, &total))
            return nnz_fail(NNZ_ERR_FORMAT, "IDX file '%s': dimensions overflow the address space (corrupt header)", name);
        if (i > 0) item *= d; /* <= total: cannot overflow */
        dims[i] = d;
    }
    size_t body = len - header;
    if (body < total)
        return nnz_fail(NNZ_ERR_FORMAT, "truncated IDX file '%s': header says %lld %s, file holds %zu; "
                        "re-download or pass --data", name, (long long)dims[0], item_word(ndim), body / item);
    if (body > total)
        return nnz_fail(NNZ_ERR_FORMAT, "IDX file '%s' is %zu bytes longer than its header says (%lld %s); "
                        "is it the right file?", name, body - total, (long long)dims[0], item_word(ndim));
    out->ndim = ndim;
    for (int i = 0; i < 4; i++) out->dims[i] = dims[i];
    out->data = buf + header;
    return NNZ_OK;
}
