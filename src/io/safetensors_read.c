/* safetensors reader. Layout: u64 little-endian header size N, N bytes of a
 * JSON object {name: {"dtype", "shape", "data_offsets": [begin, end]}, ...,
 * "__metadata__": {string: string}}, then the data; offsets are relative to
 * the start of the data. Every number in the header is distrusted: sizes are
 * checked against the buffer with overflow checks, entries may not overlap,
 * and the tensors only ever point inside buf. */
#include "io/io.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static const struct { const char *name; size_t size; } st_dtypes[] = {
    {"F64", 8},  {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I64", 8}, {"I32", 4},
    {"I16", 2}, {"I8", 1},  {"U64", 8}, {"U32", 4},  {"U16", 2},     {"U8", 1},      {"BOOL", 1},
};

size_t nnz_st_dtype_size(const char *dtype) {
    if (!dtype) return 0;
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (strcmp(dtype, st_dtypes[i].name) == 0) return st_dtypes[i].size;
    return 0;
}

/* A JSON number that is a whole number in [0, 2^53] (what a double holds exactly). */
static bool json_uint(const cJSON *x, uint64_t *out) {
    if (!cJSON_IsNumber(x)) return false;
    double d = x->valuedouble;
    if (!(d >= 0 && d <= 9007199254740992.0)) return false;
    uint64_t u = (uint64_t)d;
    if ((double)u != d) return false;
    *out = u;
    return true;
}

static char *dup_string(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

typedef struct {
    const char *file;
    const uint8_t *data;
    size_t data_len;
} parse_ctx;

static nnz_status parse_tensor(const parse_ctx *c, const cJSON *entry, nnz_st_tensor *t, uint64_t *begin_out) {
    const char *name = entry->string;
    if (strlen(name) >= sizeof t->name)
        return nnz_fail(NNZ_ERR_UNSUPPORTED, "safetensors file '%s': tensor name '%.40s...' is over %zu bytes, nnz's limit",
                        c->file, name, sizeof t->name - 1);
    if (!cJSON_IsObject(entry))
        return nnz_fail(NNZ_ERR_FORMAT, "safetensors file '%s': entry '%s' is not a JSON object", c->file, name);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(entry, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(entry, "data_offsets");
    if (!cJSON_IsString(dtype) || !cJSON_IsArray(shape) || !cJSON_IsArray(offsets))
        return nnz_fail(NNZ_ERR_FORMAT, "safetensors file '%s': tensor '%s' needs a string \"dtype\", an array \"shape\" "
                        "and an array \"data_offsets\"", c->file, name);
    size_t esize = nnz_st_dtype_size(dtype->valuestring);
    if (esize == 0)
        return nnz_fail(NNZ_ERR_UNSUPPORTED, "safetensors file '%s': tensor '%s' has unknown dtype '%.16s'", c->file,
                        name, dtype->valuestring);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > NNZ_MAX_DIMS)
        return nnz_fail(NNZ_ERR_UNSUPPORTED, "safetensors file '%s': tensor '%s' has %d dimensions; nnz supports at "
                        "most %d", c->file, name, ndim, NNZ_MAX_DIMS);
    size_t numel = 1;
    int i = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, shape) {
        uint64_t v;
        if (!json_uint(d, &v))
            return nnz_fail(NNZ_ERR_FORMAT, "safetensors file '%s': tensor '%s': shape[%d] is not a non-negative "
                            "integer", c->file, name, i);
        if (!nnz_mul_size(numel, (size_t)v, &numel))
            return nnz_fail(NNZ_ERR_FORMAT, "safetensors file '%s': tensor '%s': shape overflows", c->file, name);
        t->shape[i++] = (int64_t)v;
    }
    size_t nbytes;
    if (!nnz_mul_size(numel, esize, &nbytes))
        return nnz_fail(NNZ_ERR_FORMAT, "safetensors file '%s': tensor '%s': size overflows", c->file, name);
    uint64_t begin, end;
    if (cJSON_GetArraySize(offsets) != 2 || !json_uint(cJSON_GetArrayItem(offsets, 0), &begin) ||
        !json_uint(cJSON_GetArrayItem(offsets, 1), &end) || begin > end)
        return nnz_fail(NNZ_ERR_FORMAT, "safetensors file '%s': tensor '%s': data_offsets must be [begin, end] with "
                        "0 <= begin <= end", c->file, name);
    if (end > c->data_len)
        return nnz_fail(NNZ_ERR_FORMAT, "safetensors file '%s': tensor '%s' ends at data byte %llu but the file holds "
                        "%zu data bytes (truncated file?)", c->file, name, (unsigned long long)end, c->data_len);
    if (end - begin != nbytes)
        return nnz_fail(NNZ_ERR_FORMAT, "safetensors file '%s': tensor '%s' has shape of %zu bytes but data_offsets "
                        "span %llu", c->file, name, nbytes, (unsigned long long)(end - begin));
    memcpy(t->name, name, strlen(name) + 1);
    snprintf(t->dtype, sizeof t->dtype, "%s", dtype->valuestring);
    t->ndim = ndim;
    t->nbytes = nbytes;
    t->data = c->data + begin;
    *begin_out = begin;
    return NNZ_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static nnz_status parse_metadata(const parse_ctx *c, const cJSON *meta, nnz_st_file *out) {
    if (cJSON_IsNull(meta)) return NNZ_OK;
    if (!cJSON_IsObject(meta))
        return nnz_fail(NNZ_ERR_FORMAT, "safetensors file '%s': __metadata__ is not a JSON object", c->file);
    int n = cJSON_GetArraySize(meta);
    if (n == 0) return NNZ_OK;
    out->meta_keys = calloc((size_t)n, sizeof(char *));
    out->meta_values = calloc((size_t)n, sizeof(char *));
    if (!out->meta_keys || !out->meta_values)
        return nnz_fail(NNZ_ERR_NOMEM, "out of memory reading the metadata of '%s'", c->file);
    const cJSON *kv;
    cJSON_ArrayForEach(kv, meta) {
        if (!cJSON_IsString(kv))
            return nnz_fail(NNZ_ERR_FORMAT, "safetensors file '%s': metadata value of '%.64s' is not a string",
                            c->file, kv->string);
        char *k = dup_string(kv->string), *v = dup_string(kv->valuestring);
        if (!k || !v) {
            free(k);
            free(v);
            return nnz_fail(NNZ_ERR_NOMEM, "out of memory reading the metadata of '%s'", c->file);
        }
        out->meta_keys[out->n_meta] = k;
        out->meta_values[out->n_meta] = v;
        out->n_meta++;
    }
    /* Repeated keys: sort a copy (a hostile header may hold a million keys). */
    char **keys = malloc((size_t)n * sizeof *keys);
    if (!keys) return nnz_fail(NNZ_ERR_NOMEM, "out of memory reading the metadata of '%s'", c->file);
    memcpy(keys, out->meta_keys, (size_t)n * sizeof *keys);
    qsort(keys, (size_t)n, sizeof *keys, cmp_str);
    nnz_status s = NNZ_OK;
    for (int i = 1; i < n && s == NNZ_OK; i++)
        if (strcmp(keys[i - 1], keys[i]) == 0)
            s = nnz_fail(NNZ_ERR_FORMAT, "safetensors file '%s': metadata key '%.64s' appears twice", c->file, keys[i]);
    free(keys);
    return s;
}

typedef struct { uint64_t begin, end; int index; } span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const nnz_st_tensor *)a)->name, ((const nnz_st_tensor *)b)->name);
}

/* Entries may not overlap (zero-size ones overlap nothing) nor repeat a name. */
static nnz_status check_layout(const parse_ctx *c, const nnz_st_file *f, const uint64_t *begins) {
    if (f->n < 2) return NNZ_OK;
    nnz_status s = NNZ_OK;
    span *sp = malloc((size_t)f->n * sizeof *sp);
    nnz_st_tensor *sorted = malloc((size_t)f->n * sizeof *sorted);
    if (!sp || !sorted) {
        s = nnz_fail(NNZ_ERR_NOMEM, "out of memory checking '%s'", c->file);
        goto done;
    }
    for (int i = 0; i < f->n; i++) sp[i] = (span){begins[i], begins[i] + f->tensors[i].nbytes, i};
    qsort(sp, (size_t)f->n, sizeof *sp, cmp_span);
    uint64_t reach = 0;
    int reach_index = -1;
    for (int i = 0; i < f->n && s == NNZ_OK; i++) {
        if (sp[i].begin == sp[i].end) continue;
        if (sp[i].begin < reach)
            s = nnz_fail(NNZ_ERR_FORMAT, "safetensors file '%s': tensors '%s' and '%s' overlap in the data", c->file,
                         f->tensors[reach_index].name, f->tensors[sp[i].index].name);
        reach = sp[i].end;
        reach_index = sp[i].index;
    }
    memcpy(sorted, f->tensors, (size_t)f->n * sizeof *sorted);
    qsort(sorted, (size_t)f->n, sizeof *sorted, cmp_name);
    for (int i = 1; i < f->n && s == NNZ_OK; i++)
        if (strcmp(sorted[i - 1].name, sorted[i].name) == 0)
            s = nnz_fail(NNZ_ERR_FORMAT, "safetensors file '%s': tensor '%s' appears twice", c->file, sorted[i].name);
done:
    free(sp);
    free(sorted);
    return s;
}

static nnz_status parse_header(const parse_ctx *c, const cJSON *root, nnz_st_file *out) {
    int entries = cJSON_GetArraySize(root);
    out->tensors = calloc(entries > 0 ? (size_t)entries : 1, sizeof *out->tensors);
    uint64_t *begins = calloc(entries > 0 ? (size_t)entries : 1, sizeof *begins);
    nnz_status s = NNZ_OK;
    if (!out->tensors || !begins) s = nnz_fail(NNZ_ERR_NOMEM, "out of memory reading the header of '%s'", c->file);
    bool seen_meta = false;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (s != NNZ_OK) break;
        if (strcmp(e->string, "__metadata__") == 0) {
            if (seen_meta) s = nnz_fail(NNZ_ERR_FORMAT, "safetensors file '%s': __metadata__ appears twice", c->file);
            else s = parse_metadata(c, e, out);
            seen_meta = true;
            continue;
        }
        s = parse_tensor(c, e, &out->tensors[out->n], &begins[out->n]);
        if (s == NNZ_OK) out->n++;
    }
    if (s == NNZ_OK) s = check_layout(c, out, begins);
    free(begins);
    return s;
}

static bool json_space(uint8_t ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r'; }

nnz_status nnz_st_parse(const uint8_t *buf, size_t size, const char *name, nnz_st_file *out) {
    memset(out, 0, sizeof *out);
    if (!name) name = "(buffer)";
    if (size < 8)
        return nnz_fail(NNZ_ERR_FORMAT, "safetensors file '%s' is %zu bytes, too short for its 8-byte header size; "
                        "truncated or not a safetensors file", name, size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | buf[i];
    if (n > NNZ_ST_MAX_HEADER)
        return nnz_fail(NNZ_ERR_FORMAT, "safetensors file '%s' claims a %llu-byte header, over the %zu-byte limit; "
                        "corrupt or not a safetensors file", name, (unsigned long long)n, NNZ_ST_MAX_HEADER);
    if (n > size - 8)
        return nnz_fail(NNZ_ERR_FORMAT, "truncated safetensors file '%s': header says %llu bytes, file holds %zu after "
                        "the size field", name, (unsigned long long)n, size - 8);
    const char *json = (const char *)buf + 8;
    if (n < 2 || json[0] != '{')
        return nnz_fail(NNZ_ERR_FORMAT, "safetensors file '%s': header does not start with '{'; not a safetensors file",
                        name);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, (size_t)n, &end, 0);
    if (!root) {
        size_t at = end && end >= json && end <= json + n ? (size_t)(end - json) : 0;
        return nnz_fail(NNZ_ERR_FORMAT, "safetensors file '%s': header is not valid JSON (near byte %zu of %llu)", name,
                        at, (unsigned long long)n);
    }
    nnz_status s = NNZ_OK;
    for (const char *p = end; p < json + n && s == NNZ_OK; p++)
        if (!json_space((uint8_t)*p))
            s = nnz_fail(NNZ_ERR_FORMAT, "safetensors file '%s': unexpected bytes after the JSON header (at byte %zu)",
                         name, (size_t)(p - json));
    if (s == NNZ_OK && !cJSON_IsObject(root))
        s = nnz_fail(NNZ_ERR_FORMAT, "safetensors file '%s': header is not a JSON object", name);
    parse_ctx c = {name, buf + 8 + n, size - 8 - (size_t)n};
    if (s == NNZ_OK) s = parse_header(&c, root, out);
    cJSON_Delete(root);
    if (s != NNZ_OK) {
        nnz_st_free(out);
        return s;
    }
    out->size = size;
    return NNZ_OK;
}

nnz_status nnz_st_load(const char *path, nnz_st_file *out) {
    memset(out, 0, sizeof *out);
    uint8_t *buf;
    size_t size;
    NNZ_TRY(nnz_read_file(path, false, nnz_size_limit(), &buf, &size));
    nnz_status s = nnz_st_parse(buf, size, path, out);
    if (s != NNZ_OK) {
        nnz_free(buf);
        return s;
    }
    out->buf = buf;
    return NNZ_OK;
}

const nnz_st_tensor *nnz_st_find(const nnz_st_file *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *nnz_st_meta(const nnz_st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
    return NULL;
}

void nnz_st_free(nnz_st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->meta_keys);
    free(f->meta_values);
    free(f->tensors);
    nnz_free(f->buf);
    memset(f, 0, sizeof *f);
}
