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

static size_t header_bytes(const uint8_t *buf, size_t len) { return len < 4 ? 0 : 4 + 4 * (size_t)buf[3]; }

/* max_items < 0: the whole file, whose length must match its header exactly. */
static nnz_status parse(const uint8_t *buf, size_t len, const char *name, int64_t max_items, nnz_idx *out) {
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
    out->file_items = dims[0];
    if (max_items >= 0 && max_items < dims[0]) { /* only the first max_items items are needed */
        dims[0] = max_items;
        total = (size_t)max_items * item;
        if (len - header < total)
            return nnz_fail(NNZ_ERR_FORMAT, "truncated IDX file '%s': its first %lld %s need %zu bytes, it holds %zu; "
                            "re-download or pass --data", name, (long long)max_items, item_word(ndim), total,
                            len - header);
        len = header + total;
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

nnz_status nnz_idx_parse(const uint8_t *buf, size_t len, const char *name, nnz_idx *out) {
    return parse(buf, len, name, -1, out);
}

nnz_status nnz_idx_parse_first(const uint8_t *buf, size_t len, const char *name, int64_t max_items, nnz_idx *out) {
    if (max_items < 1) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_idx_parse_first: max_items %lld < 1", (long long)max_items);
    return parse(buf, len, name, max_items, out);
}

nnz_status nnz_idx_first_bytes(const uint8_t *hdr, size_t len, const char *name, int64_t max_items, size_t *bytes) {
    size_t header = header_bytes(hdr, len);
    if (header == 0 || len < header || hdr[0] != 0 || hdr[1] != 0 || hdr[3] < 1 || hdr[3] > 4)
        return nnz_fail(NNZ_ERR_FORMAT, "'%s' does not start with an IDX header; re-download it or pass --data", name);
    size_t item = 1, n = load_be32(hdr + 4);
    for (int i = 1; i < hdr[3]; i++)
        if (!nnz_mul_size(item, load_be32(hdr + 4 + 4 * (size_t)i), &item))
            return nnz_fail(NNZ_ERR_FORMAT, "IDX file '%s': dimensions overflow the address space (corrupt header)", name);
    if (max_items >= 0 && (size_t)max_items < n) n = (size_t)max_items;
    if (!nnz_mul_size(item, n, bytes) || (*bytes += header) < header)
        return nnz_fail(NNZ_ERR_FORMAT, "IDX file '%s': dimensions overflow the address space (corrupt header)", name);
    return NNZ_OK;
}
