/* The .nnz container: reader (bounds-checked, CRC-checked) and atomic writer.
 * Layout in docs/FORMAT.md, ".nnz compressed models". Little-endian throughout. */
#include "io/io.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define OFF_RECORDS(arch) (((uint64_t)NNZ_NF_HEADER_BYTES + (arch) + NNZ_NF_ALIGN - 1) / NNZ_NF_ALIGN * NNZ_NF_ALIGN)
#define HEADER_CRC_AT 40

static uint64_t rd64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static void wr64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void wr32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static bool all_zero(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i]) return false;
    return true;
}

static uint32_t crc(uint32_t c, const void *p, size_t n) { return (uint32_t)crc32_z(c, p, n); }

/* ---- records ---- */

static void encode_record(const nnz_nf_tensor *t, uint8_t r[NNZ_NF_RECORD_BYTES]) {
    memset(r, 0, NNZ_NF_RECORD_BYTES);
    memcpy(r, t->name, strnlen(t->name, NNZ_NF_NAME_MAX - 1));
    r[96] = t->codec, r[97] = t->ndim, r[98] = t->bits, r[99] = t->gap_bits;
    r[100] = t->idx_mode, r[101] = t->gap_mode, r[102] = t->idx_const, r[103] = t->gap_const;
    wr32(r + 104, t->codebook_size);
    wr32(r + 108, t->crc32);
    for (int d = 0; d < 4; d++) wr64(r + 112 + 8 * d, (uint64_t)t->shape[d]);
    wr64(r + 144, t->numel);
    wr64(r + 152, t->nnz);
    wr64(r + 160, t->n_gaps);
    wr64(r + 168, t->payload_offset);
    wr64(r + 176, t->payload_bytes);
    for (int k = 0; k < 4; k++) wr32(r + 184 + 4 * k, t->idx_stream_bytes[k]);
    for (int k = 0; k < 4; k++) wr32(r + 200 + 4 * k, t->gap_stream_bytes[k]);
}

static void decode_record(const uint8_t *r, nnz_nf_tensor *t) {
    memset(t, 0, sizeof *t);
    memcpy(t->name, r, NNZ_NF_NAME_MAX);
    t->codec = r[96], t->ndim = r[97], t->bits = r[98], t->gap_bits = r[99];
    t->idx_mode = r[100], t->gap_mode = r[101], t->idx_const = r[102], t->gap_const = r[103];
    t->codebook_size = rd32(r + 104);
    t->crc32 = rd32(r + 108);
    for (int d = 0; d < 4; d++) t->shape[d] = (int64_t)rd64(r + 112 + 8 * d);
    t->numel = rd64(r + 144);
    t->nnz = rd64(r + 152);
    t->n_gaps = rd64(r + 160);
    t->payload_offset = rd64(r + 168);
    t->payload_bytes = rd64(r + 176);
    for (int k = 0; k < 4; k++) t->idx_stream_bytes[k] = rd32(r + 184 + 4 * k);
    for (int k = 0; k < 4; k++) t->gap_stream_bytes[k] = rd32(r + 200 + 4 * k);
}

#define BAD(...) nnz_fail(NNZ_ERR_FORMAT, __VA_ARGS__)

/* Checks one symbol stream's fields: count symbols in `mode` over an alphabet of nsym. */
static nnz_status check_stream(const char *file, const char *tname, const char *which, uint8_t mode, uint8_t constant,
                               uint64_t count, uint64_t nsym, const uint32_t bytes[4], size_t *lengths,
                               size_t *streams) {
    *lengths = *streams = 0;
    bool none = bytes[0] == 0 && bytes[1] == 0 && bytes[2] == 0 && bytes[3] == 0;
    switch (mode) {
    case NNZ_STREAM_EMPTY:
        if (count != 0 || !none)
            return BAD("'%s', tensor '%s': the %s stream is marked empty but holds %llu symbols", file, tname, which,
                       (unsigned long long)count);
        return NNZ_OK;
    case NNZ_STREAM_CONST:
        if (count == 0 || !none || constant >= nsym)
            return BAD("'%s', tensor '%s': inconsistent constant %s stream", file, tname, which);
        return NNZ_OK;
    case NNZ_STREAM_HUFFMAN: {
        if (count == 0 || nsym < 2)
            return BAD("'%s', tensor '%s': a Huffman %s stream needs symbols and an alphabet of 2 or more", file,
                       tname, which);
        uint64_t q = (count + 3) / 4;
        for (int k = 0; k < 4; k++) {
            uint64_t b = q * (uint64_t)k < count ? q * (uint64_t)k : count;
            uint64_t e = q * (uint64_t)(k + 1) < count ? q * (uint64_t)(k + 1) : count;
            /* each symbol takes 1..12 bits */
            if ((uint64_t)bytes[k] * 8 < e - b || (uint64_t)bytes[k] > ((e - b) * NNZ_NF_MAX_CODE_BITS + 7) / 8)
                return BAD("'%s', tensor '%s': %s stream %d holds %u bytes, impossible for %llu symbols", file, tname,
                           which, k, bytes[k], (unsigned long long)(e - b));
            *streams += bytes[k];
        }
        *lengths = (size_t)(nsym + 1) / 2;
        return NNZ_OK;
    }
    default: return BAD("'%s', tensor '%s': unknown %s stream mode %u", file, tname, which, mode);
    }
}

nnz_status nnz_nf_record_sections(const nnz_nf_tensor *t, const char *file, nnz_nf_sections *out) {
    memset(out, 0, sizeof *out);
    const char *tn = t->name;
    if (t->ndim > 4) return BAD("'%s', tensor '%s': %u dimensions (at most 4)", file, tn, t->ndim);
    uint64_t numel = 1;
    for (int d = 0; d < 4; d++) {
        if (d >= t->ndim) {
            if (t->shape[d] != 0) return BAD("'%s', tensor '%s': a dimension past ndim is set", file, tn);
            continue;
        }
        if (t->shape[d] < 0 || __builtin_mul_overflow(numel, (uint64_t)t->shape[d], &numel) ||
            numel > NNZ_NF_MAX_NUMEL)
            return BAD("'%s', tensor '%s': impossible shape", file, tn);
    }
    if (numel != t->numel)
        return BAD("'%s', tensor '%s': numel %llu does not match its shape (%llu)", file, tn,
                   (unsigned long long)t->numel, (unsigned long long)numel);
    if (t->codec == NNZ_CODEC_RAW_F32) {
        uint32_t zero[4] = {0};
        if (t->bits || t->gap_bits || t->codebook_size || t->nnz || t->n_gaps || t->idx_mode || t->gap_mode ||
            t->idx_const || t->gap_const || memcmp(t->idx_stream_bytes, zero, 16) || memcmp(t->gap_stream_bytes, zero, 16))
            return BAD("'%s', tensor '%s': a raw tensor with codec fields set", file, tn);
        out->total = (size_t)numel * 4;
        return NNZ_OK;
    }
    if (t->codec != NNZ_CODEC_DENSE && t->codec != NNZ_CODEC_SPARSE)
        return BAD("'%s', tensor '%s': unknown codec %u", file, tn, t->codec);
    bool sparse = t->codec == NNZ_CODEC_SPARSE;
    if (t->bits < 1 || t->bits > 8 || t->codebook_size > (1u << t->bits) || (t->nnz > 0) != (t->codebook_size > 0))
        return BAD("'%s', tensor '%s': %u bits with a codebook of %u values", file, tn, t->bits, t->codebook_size);
    if (!sparse && (t->nnz != numel || t->gap_bits || t->n_gaps || t->gap_mode || t->gap_const ||
                    t->gap_stream_bytes[0] || t->gap_stream_bytes[1] || t->gap_stream_bytes[2] || t->gap_stream_bytes[3]))
        return BAD("'%s', tensor '%s': inconsistent dense record", file, tn);
    if (sparse) {
        if (t->gap_bits < 1 || t->gap_bits > 8 || t->nnz > numel)
            return BAD("'%s', tensor '%s': inconsistent sparse record (%u gap bits, %llu of %llu nonzero)", file, tn,
                       t->gap_bits, (unsigned long long)t->nnz, (unsigned long long)numel);
        uint64_t S = (1u << t->gap_bits) - 1;
        if (t->n_gaps < t->nnz || t->n_gaps - t->nnz > (numel - t->nnz) / S)
            return BAD("'%s', tensor '%s': %llu gap symbols are impossible for %llu nonzeros", file, tn,
                       (unsigned long long)t->n_gaps, (unsigned long long)t->nnz);
    }
    out->codebook = (size_t)t->codebook_size * 4;
    NNZ_TRY(check_stream(file, tn, "index", t->idx_mode, t->idx_const, t->nnz, t->codebook_size, t->idx_stream_bytes,
                         &out->idx_lengths, &out->idx_streams));
    if (sparse)
        NNZ_TRY(check_stream(file, tn, "gap", t->gap_mode, t->gap_const, t->n_gaps, 1u << t->gap_bits,
                             t->gap_stream_bytes, &out->gap_lengths, &out->gap_streams));
    out->total = out->codebook + out->idx_lengths + out->gap_lengths + out->idx_streams + out->gap_streams;
    return NNZ_OK;
}

/* ---- reading ---- */

void nnz_nf_free(nnz_nf_file *f) {
    if (!f) return;
    nnz_free(f->buf);
    free(f->arch_json);
    free(f->tensors);
    memset(f, 0, sizeof *f);
}

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(const nnz_nf_tensor *const *)a)->name, (*(const nnz_nf_tensor *const *)b)->name);
}

nnz_status nnz_nf_parse(const uint8_t *buf, size_t size, const char *name, nnz_nf_file *out) {
    return nnz_nf_parse_ex(buf, size, name, true, out);
}

nnz_status nnz_nf_parse_ex(const uint8_t *buf, size_t size, const char *name, bool verify_crc, nnz_nf_file *out) {
    memset(out, 0, sizeof *out);
    if (!name) name = "?";
    if (size < NNZ_NF_HEADER_BYTES)
        return BAD("'%s' is %zu bytes, too short for a .nnz file (the header alone is %d)", name, size,
                   NNZ_NF_HEADER_BYTES);
    if (memcmp(buf, NNZ_NF_MAGIC, 8) != 0) {
        if (memcmp(buf, NNZ_NF_MAGIC, 7) == 0)
            return nnz_fail(NNZ_ERR_UNSUPPORTED, "'%s' is a .nnz file of another container generation ('%.8s')", name,
                            (const char *)buf);
        return BAD("'%s' is not a .nnz file (no NNZPACK1 magic; make one with 'nnz pack')", name);
    }
    uint32_t version = rd32(buf + 8), n = rd32(buf + 12);
    uint64_t arch = rd64(buf + 16), file_bytes = rd64(buf + 32);
    if (version != NNZ_NF_VERSION)
        return nnz_fail(NNZ_ERR_UNSUPPORTED, "'%s' is .nnz version %u; this nnz reads version %u%s", name, version,
                        NNZ_NF_VERSION, version > NNZ_NF_VERSION ? " (upgrade nnz)" : "");
    if (file_bytes != size)
        return BAD("%s .nnz file '%s': the header says %llu bytes, the file holds %zu; re-pack or copy it again",
                   file_bytes > size ? "truncated" : "oversized", name, (unsigned long long)file_bytes, size);
    if (rd64(buf + 24) != 0 || !all_zero(buf + 44, NNZ_NF_HEADER_BYTES - 44))
        return BAD("'%s': reserved header bytes are not zero (corrupt header)", name);
    if (n > NNZ_NF_MAX_TENSORS || arch > NNZ_NF_MAX_ARCH_BYTES)
        return BAD("'%s': the header declares %u tensors and %llu bytes of architecture (limits %d, %zu): corrupt "
                   "header", name, n, (unsigned long long)arch, NNZ_NF_MAX_TENSORS, NNZ_NF_MAX_ARCH_BYTES);
    uint64_t rec_off = OFF_RECORDS(arch), rec_end = rec_off + (uint64_t)n * NNZ_NF_RECORD_BYTES;
    if (rec_end > size)
        return BAD("'%s': the header declares %u tensor records ending at byte %llu, past the end of the %zu-byte "
                   "file: truncated or corrupt", name, n, (unsigned long long)rec_end, size);
    uint32_t hc = crc(0, buf, HEADER_CRC_AT);
    hc = crc(hc, buf + NNZ_NF_HEADER_BYTES, (size_t)(rec_end - NNZ_NF_HEADER_BYTES));
    if (verify_crc && hc != rd32(buf + HEADER_CRC_AT))
        return BAD("'%s': the header checksum does not match (the header, architecture or tensor table is corrupt)",
                   name);
    if (memchr(buf + NNZ_NF_HEADER_BYTES, 0, (size_t)arch))
        return BAD("'%s': the architecture JSON holds a NUL byte", name);
    out->arch_json = malloc((size_t)arch + 1);
    out->tensors = calloc(n ? n : 1, sizeof *out->tensors);
    nnz_nf_tensor **byname = calloc(n ? n : 1, sizeof *byname);
    nnz_status s = NNZ_OK;
    if (!out->arch_json || !out->tensors || !byname) {
        s = nnz_fail(NNZ_ERR_NOMEM, "out of memory reading '%s'", name);
        goto fail;
    }
    memcpy(out->arch_json, buf + NNZ_NF_HEADER_BYTES, (size_t)arch);
    out->arch_json[arch] = '\0';
    out->size = size;
    uint64_t prev_end = rec_end, decoded = 0;
    const size_t limit = nnz_size_limit();
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *r = buf + rec_off + (uint64_t)i * NNZ_NF_RECORD_BYTES;
        nnz_nf_tensor *t = &out->tensors[i];
        decode_record(r, t);
        size_t len = strnlen(t->name, NNZ_NF_NAME_MAX);
        if (len == 0 || len == NNZ_NF_NAME_MAX || !all_zero(r + len, NNZ_NF_NAME_MAX - len)) {
            s = BAD("'%s': tensor record %u has an empty, unterminated or unpadded name", name, i);
            goto fail;
        }
        if (!all_zero(r + 216, NNZ_NF_RECORD_BYTES - 216)) {
            s = BAD("'%s', tensor '%s': reserved record bytes are not zero", name, t->name);
            goto fail;
        }
        nnz_nf_sections sec;
        if ((s = nnz_nf_record_sections(t, name, &sec))) goto fail;
        if (sec.total != t->payload_bytes) {
            s = BAD("'%s', tensor '%s': payload of %llu bytes, its sections need %zu", name, t->name,
                    (unsigned long long)t->payload_bytes, sec.total);
            goto fail;
        }
        if (t->payload_offset % NNZ_NF_ALIGN || t->payload_offset < prev_end || t->payload_offset > size ||
            t->payload_bytes > size - t->payload_offset) {
            s = BAD("'%s', tensor '%s': payload at byte %llu (+%llu) is misaligned, overlapping or past the end of "
                    "the %zu-byte file", name, t->name, (unsigned long long)t->payload_offset,
                    (unsigned long long)t->payload_bytes, size);
            goto fail;
        }
        if (!all_zero(buf + prev_end, (size_t)(t->payload_offset - prev_end))) {
            s = BAD("'%s', tensor '%s': the padding before its payload is not zero (corrupt file)", name, t->name);
            goto fail;
        }
        decoded += t->numel * 4; /* numel <= NNZ_NF_MAX_NUMEL (checked above): no overflow */
        if (decoded > limit) {
            s = BAD("'%s': its tensors decode to more than the size limit of %zu bytes (at tensor '%s'); if the file "
                    "is genuine, raise NNZ_SIZE_LIMIT", name, limit, t->name);
            goto fail;
        }
        prev_end = t->payload_offset + t->payload_bytes;
        t->payload = buf + t->payload_offset;
        if (verify_crc && crc(0, t->payload, (size_t)t->payload_bytes) != t->crc32) {
            s = BAD("'%s', tensor '%s': payload checksum mismatch (the file is corrupt)", name, t->name);
            goto fail;
        }
        byname[i] = t;
    }
    if (prev_end != size) {
        s = BAD("'%s': %llu bytes after the last payload (corrupt file)", name, (unsigned long long)(size - prev_end));
        goto fail;
    }
    qsort(byname, n, sizeof *byname, cmp_name);
    for (uint32_t i = 1; i < n; i++)
        if (strcmp(byname[i - 1]->name, byname[i]->name) == 0) {
            s = BAD("'%s': tensor '%s' appears twice", name, byname[i]->name);
            goto fail;
        }
    free(byname);
    out->n = (int)n;
    return NNZ_OK;
fail:
    free(byname);
    free(out->arch_json);
    free(out->tensors);
    memset(out, 0, sizeof *out);
    return s;
}

nnz_status nnz_nf_load(const char *path, nnz_nf_file *out) {
    memset(out, 0, sizeof *out);
    uint8_t *data = NULL;
    size_t size = 0;
    NNZ_TRY(nnz_read_file(path, false, nnz_size_limit(), &data, &size));
    nnz_status s = nnz_nf_parse(data, size, path, out);
    if (s != NNZ_OK) {
        nnz_free(data);
        return s;
    }
    out->buf = data;
    return NNZ_OK;
}

const nnz_nf_tensor *nnz_nf_find(const nnz_nf_file *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

/* ---- writing ---- */

nnz_status nnz_nf_write(const char *path, const char *arch_json, nnz_nf_tensor *tensors, int n) {
    size_t arch = arch_json ? strlen(arch_json) : 0;
    if (n < 0 || n > NNZ_NF_MAX_TENSORS || arch > NNZ_NF_MAX_ARCH_BYTES)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "cannot write '%s': %d tensors / %zu bytes of architecture exceed the "
                        "format's limits", path, n, arch);
    uint64_t rec_off = OFF_RECORDS(arch), at = rec_off + (uint64_t)n * NNZ_NF_RECORD_BYTES;
    for (int i = 0; i < n; i++) {
        nnz_nf_tensor *t = &tensors[i];
        nnz_nf_sections sec;
        NNZ_TRY(nnz_nf_record_sections(t, path, &sec));
        if (sec.total != t->payload_bytes)
            return nnz_fail(NNZ_ERR_INVALID_ARG, "tensor '%s': payload of %llu bytes, its sections need %zu", t->name,
                            (unsigned long long)t->payload_bytes, sec.total);
        at = (at + NNZ_NF_ALIGN - 1) / NNZ_NF_ALIGN * NNZ_NF_ALIGN;
        t->payload_offset = at;
        t->crc32 = crc(0, t->payload, (size_t)t->payload_bytes);
        at += t->payload_bytes;
    }
    uint8_t hdr[NNZ_NF_HEADER_BYTES] = {0};
    memcpy(hdr, NNZ_NF_MAGIC, 8);
    wr32(hdr + 8, NNZ_NF_VERSION);
    wr32(hdr + 12, (uint32_t)n);
    wr64(hdr + 16, arch);
    wr64(hdr + 32, at);
    size_t table = (size_t)(rec_off - NNZ_NF_HEADER_BYTES) + (size_t)n * NNZ_NF_RECORD_BYTES;
    uint8_t *meta = calloc(table ? table : 1, 1);
    if (!meta) return nnz_fail(NNZ_ERR_NOMEM, "out of memory writing '%s'", path);
    if (arch) memcpy(meta, arch_json, arch);
    for (int i = 0; i < n; i++)
        encode_record(&tensors[i], meta + (rec_off - NNZ_NF_HEADER_BYTES) + (size_t)i * NNZ_NF_RECORD_BYTES);
    wr32(hdr + HEADER_CRC_AT, crc(crc(0, hdr, HEADER_CRC_AT), meta, table));

    nnz_atomic_file af;
    nnz_status s = nnz_atomic_open(&af, path);
    if (s != NNZ_OK) {
        free(meta);
        return s;
    }
    static const uint8_t zeros[NNZ_NF_ALIGN] = {0};
    uint64_t pos = NNZ_NF_HEADER_BYTES + table;
    s = nnz_atomic_write(&af, hdr, sizeof hdr);
    if (s == NNZ_OK) s = nnz_atomic_write(&af, meta, table);
    for (int i = 0; i < n && s == NNZ_OK; i++) {
        s = nnz_atomic_write(&af, zeros, (size_t)(tensors[i].payload_offset - pos));
        if (s == NNZ_OK) s = nnz_atomic_write(&af, tensors[i].payload, (size_t)tensors[i].payload_bytes);
        pos = tensors[i].payload_offset + tensors[i].payload_bytes;
    }
    free(meta);
    if (s != NNZ_OK) {
        nnz_atomic_abort(&af);
        return s;
    }
    return nnz_atomic_commit(&af);
}
