/* safetensors writer. Deterministic: "__metadata__" first, then the tensors in
 * the order they were added, packed back to back from data offset 0 (the
 * reference reader rejects gaps); the JSON header is padded with spaces to a
 * multiple of 8 bytes so the data section starts 8-byte aligned, as the
 * reference implementation does. The header is written by hand, not by
 * cJSON, so that integers never come out in exponent notation. */
#include "io/io.h"

#include <stdlib.h>
#include <string.h>

static char *dup_string(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* Readers (Rust's serde_json, Python's json) need the header to be UTF-8. */
static bool utf8_valid(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        int extra;
        uint32_t cp;
        if (c < 0x80) { p++; continue; }
        if (c >= 0xC2 && c <= 0xDF) { extra = 1; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { extra = 2; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { extra = 3; cp = c & 0x07; }
        else return false;
        for (int i = 1; i <= extra; i++) {
            if ((p[i] & 0xC0) != 0x80) return false;
            cp = cp << 6 | (p[i] & 0x3F);
        }
        if ((extra == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (extra == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return false;
        p += extra + 1;
    }
    return true;
}

void nnz_st_writer_init(nnz_st_writer *w) { memset(w, 0, sizeof *w); }

nnz_status nnz_st_add(nnz_st_writer *w, const char *name, const char *dtype, int ndim, const int64_t *shape,
                      const void *data) {
    if (!name || !*name) return nnz_fail(NNZ_ERR_INVALID_ARG, "safetensors tensor name is empty");
    if (strlen(name) >= sizeof w->tensors[0].name)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "safetensors tensor name '%.40s...' is over %zu bytes",
                        name, sizeof w->tensors[0].name - 1);
    if (!utf8_valid(name)) return nnz_fail(NNZ_ERR_INVALID_ARG, "safetensors tensor name is not valid UTF-8");
    if (strcmp(name, "__metadata__") == 0)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "'__metadata__' is reserved and cannot name a tensor");
    size_t esize = nnz_st_dtype_size(dtype);
    if (!esize) return nnz_fail(NNZ_ERR_INVALID_ARG, "tensor '%s': unknown safetensors dtype '%s'", name, dtype ? dtype : "(null)");
    if (ndim < 0 || ndim > NNZ_MAX_DIMS)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "tensor '%s' has %d dimensions; nnz supports 0 to %d", name, ndim, NNZ_MAX_DIMS);
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || !nnz_mul_size(numel, (size_t)shape[i], &numel))
            return nnz_fail(NNZ_ERR_INVALID_ARG, "tensor '%s': bad shape (dimension %d is %lld)", name, i, (long long)shape[i]);
    }
    size_t nbytes;
    if (!nnz_mul_size(numel, esize, &nbytes) || nbytes > ((uint64_t)1 << 53))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "tensor '%s' is too large", name);
    if (nbytes && !data) return nnz_fail(NNZ_ERR_INVALID_ARG, "tensor '%s' has no data", name);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return nnz_fail(NNZ_ERR_INVALID_ARG, "tensor '%s' added twice", name);
    if (w->n == w->cap) {
        int ncap = w->cap ? w->cap * 2 : 16;
        nnz_st_tensor *nt = realloc(w->tensors, (size_t)ncap * sizeof *nt);
        if (!nt) return nnz_fail(NNZ_ERR_NOMEM, "out of memory adding tensor '%s'", name);
        w->tensors = nt;
        w->cap = ncap;
    }
    nnz_st_tensor *t = &w->tensors[w->n++];
    memset(t, 0, sizeof *t);
    memcpy(t->name, name, strlen(name) + 1);
    snprintf(t->dtype, sizeof t->dtype, "%s", dtype);
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->nbytes = nbytes;
    t->data = data;
    return NNZ_OK;
}

nnz_status nnz_st_set_meta(nnz_st_writer *w, const char *key, const char *value) {
    if (!key || !value) return nnz_fail(NNZ_ERR_INVALID_ARG, "safetensors metadata key and value must not be NULL");
    if (!utf8_valid(key) || !utf8_valid(value))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "safetensors metadata '%.64s' is not valid UTF-8", key);
    char *v = dup_string(value);
    if (!v) return nnz_fail(NNZ_ERR_NOMEM, "out of memory setting metadata '%.64s'", key);
    for (int i = 0; i < w->n_meta; i++)
        if (strcmp(w->meta_keys[i], key) == 0) {
            free(w->meta_values[i]);
            w->meta_values[i] = v;
            return NNZ_OK;
        }
    if (w->n_meta == w->cap_meta) {
        int ncap = w->cap_meta ? w->cap_meta * 2 : 8;
        char **nk = realloc(w->meta_keys, (size_t)ncap * sizeof *nk);
        if (nk) w->meta_keys = nk;
        char **nv = nk ? realloc(w->meta_values, (size_t)ncap * sizeof *nv) : NULL;
        if (nv) w->meta_values = nv;
        if (!nk || !nv) {
            free(v);
            return nnz_fail(NNZ_ERR_NOMEM, "out of memory setting metadata '%.64s'", key);
        }
        w->cap_meta = ncap;
    }
    char *k = dup_string(key);
    if (!k) {
        free(v);
        return nnz_fail(NNZ_ERR_NOMEM, "out of memory setting metadata '%.64s'", key);
    }
    w->meta_keys[w->n_meta] = k;
    w->meta_values[w->n_meta] = v;
    w->n_meta++;
    return NNZ_OK;
}

void nnz_st_writer_free(nnz_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n_meta; i++) {
        free(w->meta_keys[i]);
        free(w->meta_values[i]);
    }
    free(w->meta_keys);
    free(w->meta_values);
    free(w->tensors);
    memset(w, 0, sizeof *w);
}

/* ---- the JSON header, built in a growing string ---- */
typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} strbuf;

static void sb_put(strbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t ncap = b->cap ? b->cap : 256;
        while (ncap < b->len + n + 1) ncap *= 2;
        char *np = realloc(b->p, ncap);
        if (!np) { b->oom = true; return; }
        b->p = np;
        b->cap = ncap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(strbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_u64(strbuf *b, uint64_t v) {
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    sb_put(b, tmp, (size_t)n);
}

/* A JSON string literal: quotes, backslashes and control bytes escaped. */
static void sb_json_string(strbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') { esc[0] = '\\'; esc[1] = (char)*p; sb_put(b, esc, 2); }
        else if (*p < 0x20) { snprintf(esc, sizeof esc, "\\u%04x", *p); sb_put(b, esc, 6); }
        else sb_put(b, (const char *)p, 1);
    }
    sb_put(b, "\"", 1);
}

static void build_header(const nnz_st_writer *w, strbuf *b) {
    sb_str(b, "{");
    bool first = true;
    if (w->n_meta > 0) {
        sb_str(b, "\"__metadata__\":{");
        for (int i = 0; i < w->n_meta; i++) {
            if (i) sb_str(b, ",");
            sb_json_string(b, w->meta_keys[i]);
            sb_str(b, ":");
            sb_json_string(b, w->meta_values[i]);
        }
        sb_str(b, "}");
        first = false;
    }
    uint64_t offset = 0;
    for (int i = 0; i < w->n; i++) {
        const nnz_st_tensor *t = &w->tensors[i];
        if (!first) sb_str(b, ",");
        first = false;
        sb_json_string(b, t->name);
        sb_str(b, ":{\"dtype\":");
        sb_json_string(b, t->dtype);
        sb_str(b, ",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            if (d) sb_str(b, ",");
            sb_u64(b, (uint64_t)t->shape[d]);
        }
        sb_str(b, "],\"data_offsets\":[");
        sb_u64(b, offset);
        sb_str(b, ",");
        offset += t->nbytes;
        sb_u64(b, offset);
        sb_str(b, "]}");
    }
    sb_str(b, "}");
    while (b->len % 8 && !b->oom) sb_str(b, " "); /* a failed allocation stops len from growing */
}

nnz_status nnz_st_write(const nnz_st_writer *w, const char *path) {
    strbuf b = {0};
    build_header(w, &b);
    if (b.oom) {
        free(b.p);
        return nnz_fail(NNZ_ERR_NOMEM, "out of memory building the safetensors header for '%s'", path);
    }
    if (b.len > NNZ_ST_MAX_HEADER) {
        free(b.p);
        return nnz_fail(NNZ_ERR_INVALID_ARG, "safetensors header for '%s' would be %zu bytes, over the %zu-byte limit",
                        path, b.len, NNZ_ST_MAX_HEADER);
    }
    uint8_t size_le[8];
    for (int i = 0; i < 8; i++) size_le[i] = (uint8_t)((uint64_t)b.len >> (8 * i));
    nnz_atomic_file af;
    nnz_status s = nnz_atomic_open(&af, path);
    if (s != NNZ_OK) {
        free(b.p);
        return s;
    }
    s = nnz_atomic_write(&af, size_le, sizeof size_le);
    if (s == NNZ_OK) s = nnz_atomic_write(&af, b.p, b.len);
    for (int i = 0; i < w->n && s == NNZ_OK; i++) s = nnz_atomic_write(&af, w->tensors[i].data, w->tensors[i].nbytes);
    free(b.p);
    if (s != NNZ_OK) {
        nnz_atomic_abort(&af);
        return s;
    }
    return nnz_atomic_commit(&af);
}
