/* The .nnz container: reader (bounds-checked, CRC-checked) and atomic writer.
 * Layout in docs/FORMAT.md, ".nnz compressed models". Little-endian throughout.
 * Version 2 (written): zlib-compressed architecture JSON, compact variable-length records
 * (front-coded names, LEB128 numbers, derived offsets and sizes), payloads 4-byte aligned,
 * 64 from 4 KiB. Version 1 (still read, and written on request for the tests): the JSON as
 * is, fixed 256-byte records, 64-byte-aligned payloads. */
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

static nnz_status parse_v1(const uint8_t *buf, size_t size, const char *name, bool verify_crc, nnz_nf_file *out);
static nnz_status parse_v2(const uint8_t *buf, size_t size, const char *name, bool verify_crc, nnz_nf_file *out);

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
    uint32_t version = rd32(buf + 8);
    if (version == 1) return parse_v1(buf, size, name, verify_crc, out);
    if (version == NNZ_NF_VERSION) return parse_v2(buf, size, name, verify_crc, out);
    return nnz_fail(NNZ_ERR_UNSUPPORTED, "'%s' is .nnz version %u; this nnz reads versions 1 and %u%s", name, version,
                    NNZ_NF_VERSION, version > NNZ_NF_VERSION ? " (upgrade nnz)" : " (re-pack it with 'nnz pack')");
}

/* The checks every record gets once decoded, whatever the version: its fields consistent
 * (nnz_nf_record_sections) and with the payload size, the payload aligned to `align`, after the
 * previous one (*prev_end), inside the file, zero padding between, the decoded-size limit
 * (*decoded), the CRC. Sets t->payload. */
static nnz_status check_record(const uint8_t *buf, size_t size, const char *name, bool verify_crc, uint64_t align,
                               nnz_nf_tensor *t, uint64_t *prev_end, uint64_t *decoded) {
    nnz_nf_sections sec;
    NNZ_TRY(nnz_nf_record_sections(t, name, &sec));
    if (sec.total != t->payload_bytes)
        return BAD("'%s', tensor '%s': payload of %llu bytes, its sections need %zu", name, t->name,
                   (unsigned long long)t->payload_bytes, sec.total);
    if (t->payload_offset % align || t->payload_offset < *prev_end || t->payload_offset > size ||
        t->payload_bytes > size - t->payload_offset)
        return BAD("'%s', tensor '%s': payload at byte %llu (+%llu) is misaligned, overlapping or past the end of "
                   "the %zu-byte file", name, t->name, (unsigned long long)t->payload_offset,
                   (unsigned long long)t->payload_bytes, size);
    if (!all_zero(buf + *prev_end, (size_t)(t->payload_offset - *prev_end)))
        return BAD("'%s', tensor '%s': the padding before its payload is not zero (corrupt file)", name, t->name);
    *decoded += t->numel * 4; /* numel <= NNZ_NF_MAX_NUMEL (checked above): no overflow */
    if (*decoded > nnz_size_limit())
        return BAD("'%s': its tensors decode to more than the size limit of %zu bytes (at tensor '%s'); if the file "
                   "is genuine, raise NNZ_SIZE_LIMIT", name, nnz_size_limit(), t->name);
    *prev_end = t->payload_offset + t->payload_bytes;
    t->payload = buf + t->payload_offset;
    if (verify_crc && crc(0, t->payload, (size_t)t->payload_bytes) != t->crc32)
        return BAD("'%s', tensor '%s': payload checksum mismatch (the file is corrupt)", name, t->name);
    return NNZ_OK;
}

/* After the records: no bytes after the last payload, no name twice. */
static nnz_status check_names(nnz_nf_file *out, uint32_t n, uint64_t prev_end, size_t size, const char *name) {
    if (prev_end != size)
        return BAD("'%s': %llu bytes after the last payload (corrupt file)", name, (unsigned long long)(size - prev_end));
    nnz_nf_tensor **byname = calloc(n ? n : 1, sizeof *byname);
    if (!byname) return nnz_fail(NNZ_ERR_NOMEM, "out of memory reading '%s'", name);
    for (uint32_t i = 0; i < n; i++) byname[i] = &out->tensors[i];
    qsort(byname, n, sizeof *byname, cmp_name);
    nnz_status s = NNZ_OK;
    for (uint32_t i = 1; i < n && s == NNZ_OK; i++)
        if (strcmp(byname[i - 1]->name, byname[i]->name) == 0) s = BAD("'%s': tensor '%s' appears twice", name, byname[i]->name);
    free(byname);
    return s;
}

static void parse_fail(nnz_nf_file *out) {
    free(out->arch_json);
    free(out->tensors);
    memset(out, 0, sizeof *out);
}

static nnz_status parse_v1(const uint8_t *buf, size_t size, const char *name, bool verify_crc, nnz_nf_file *out) {
    uint32_t n = rd32(buf + 12);
    uint64_t arch = rd64(buf + 16), file_bytes = rd64(buf + 32);
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
    nnz_status s = NNZ_OK;
    if (!out->arch_json || !out->tensors) {
        s = nnz_fail(NNZ_ERR_NOMEM, "out of memory reading '%s'", name);
        goto fail;
    }
    memcpy(out->arch_json, buf + NNZ_NF_HEADER_BYTES, (size_t)arch);
    out->arch_json[arch] = '\0';
    out->size = size;
    uint64_t prev_end = rec_end, decoded = 0;
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
        if ((s = check_record(buf, size, name, verify_crc, NNZ_NF_ALIGN, t, &prev_end, &decoded))) goto fail;
    }
    if ((s = check_names(out, n, prev_end, size, name))) goto fail;
    out->n = (int)n;
    return NNZ_OK;
fail:
    parse_fail(out);
    return s;
}

/* ---- version 2 ---- */

/* A payload's alignment in version 2: 64 bytes from 4 KiB, else 4. */
static uint64_t v2_align(uint64_t payload_bytes) { return payload_bytes >= NNZ_NF_V2_BIG ? NNZ_NF_ALIGN : 4; }

typedef struct {
    const uint8_t *p;
    size_t n, at;
    bool ok;
} cursor;

static uint8_t get8(cursor *c) {
    if (c->at >= c->n) {
        c->ok = false;
        return 0;
    }
    return c->p[c->at++];
}
static uint32_t get32(cursor *c) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)get8(c) << (8 * i);
    return v;
}
/* LEB128, canonical (no trailing zero byte), at most 64 bits. */
static uint64_t getvar(cursor *c) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        uint8_t b = get8(c);
        if (!c->ok) return 0;
        if (shift == 63 && b > 1) break;
        v |= (uint64_t)(b & 127) << shift;
        if (!(b & 128)) {
            if (b == 0 && shift > 0) break; /* overlong */
            return v;
        }
    }
    c->ok = false;
    return 0;
}

/* Decodes one version-2 record at c into t (prev: the previous record's name, "" for the
 * first); payload_offset and payload_bytes are left for the caller. */
static nnz_status decode_record_v2(cursor *c, const char *prev, uint32_t i, const char *file, nnz_nf_tensor *t) {
    memset(t, 0, sizeof *t);
    uint8_t shared = get8(c), len = get8(c);
    if (!c->ok) goto truncated;
    if (shared > strlen(prev) || len == 0 || (size_t)shared + len >= NNZ_NF_NAME_MAX || len > c->n - c->at)
        return BAD("'%s': tensor record %u has an empty, overlong or impossible name (%u shared + %u new bytes)", file,
                   i, shared, len);
    memcpy(t->name, prev, shared);
    memcpy(t->name + shared, c->p + c->at, len);
    c->at += len;
    if (memchr(t->name + shared, 0, len)) return BAD("'%s': the name of tensor record %u holds a NUL byte", file, i);
    t->codec = get8(c);
    t->ndim = get8(c);
    if (!c->ok) goto truncated;
    if (t->codec > NNZ_CODEC_SPARSE) return BAD("'%s', tensor '%s': unknown codec %u", file, t->name, t->codec);
    if (t->ndim > 4) return BAD("'%s', tensor '%s': %u dimensions (at most 4)", file, t->name, t->ndim);
    uint64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        uint64_t v = getvar(c);
        if (!c->ok) goto truncated;
        if (v > NNZ_NF_MAX_NUMEL || __builtin_mul_overflow(numel, v, &numel) || numel > NNZ_NF_MAX_NUMEL)
            return BAD("'%s', tensor '%s': impossible shape", file, t->name);
        t->shape[d] = (int64_t)v;
    }
    t->numel = numel;
    t->crc32 = get32(c);
    if (t->codec != NNZ_CODEC_RAW_F32) {
        t->bits = get8(c);
        uint64_t k = getvar(c);
        if (c->ok && k > 256 /* 2^8: the largest codebook */)
            return BAD("'%s', tensor '%s': %u bits with a codebook of %llu values", file, t->name, t->bits,
                       (unsigned long long)k);
        t->codebook_size = (uint32_t)k;
        t->nnz = numel;
        if (t->codec == NNZ_CODEC_SPARSE) {
            t->gap_bits = get8(c);
            t->nnz = getvar(c);
            t->n_gaps = getvar(c);
        }
        for (int which = 0; which < (t->codec == NNZ_CODEC_SPARSE ? 2 : 1); which++) {
            uint8_t mode = get8(c), constant = 0;
            uint32_t *bytes = which ? t->gap_stream_bytes : t->idx_stream_bytes;
            if (mode == NNZ_STREAM_CONST) constant = get8(c);
            if (mode == NNZ_STREAM_HUFFMAN)
                for (int k4 = 0; k4 < 4; k4++) {
                    uint64_t v = getvar(c);
                    if (c->ok && v > UINT32_MAX)
                        return BAD("'%s', tensor '%s': %s stream %d holds %llu bytes, impossible", file, t->name,
                                   which ? "gap" : "index", k4, (unsigned long long)v);
                    bytes[k4] = (uint32_t)v;
                }
            if (which) t->gap_mode = mode, t->gap_const = constant;
            else t->idx_mode = mode, t->idx_const = constant;
        }
    }
    if (!c->ok) goto truncated;
    return NNZ_OK;
truncated:
    return BAD("'%s': tensor record %u runs past the end of the record table (truncated or corrupt)", file, i);
}

static nnz_status parse_v2(const uint8_t *buf, size_t size, const char *name, bool verify_crc, nnz_nf_file *out) {
    uint32_t n = rd32(buf + 12), table = rd32(buf + 44);
    uint64_t zarch = rd64(buf + 16), arch = rd64(buf + 24), file_bytes = rd64(buf + 32);
    if (file_bytes != size)
        return BAD("%s .nnz file '%s': the header says %llu bytes, the file holds %zu; re-pack or copy it again",
                   file_bytes > size ? "truncated" : "oversized", name, (unsigned long long)file_bytes, size);
    if (!all_zero(buf + 48, NNZ_NF_HEADER_BYTES - 48))
        return BAD("'%s': reserved header bytes are not zero (corrupt header)", name);
    if (n > NNZ_NF_MAX_TENSORS || arch > NNZ_NF_MAX_ARCH_BYTES || zarch > NNZ_NF_MAX_ARCH_BYTES + 1024 ||
        (arch == 0) != (zarch == 0))
        return BAD("'%s': the header declares %u tensors and %llu bytes of architecture (%llu compressed; limits %d, "
                   "%zu): corrupt header", name, n, (unsigned long long)arch, (unsigned long long)zarch,
                   NNZ_NF_MAX_TENSORS, NNZ_NF_MAX_ARCH_BYTES);
    const uint64_t rec_off = NNZ_NF_HEADER_BYTES + zarch, rec_end = rec_off + table;
    if (rec_end > size)
        return BAD("'%s': the header declares a tensor table ending at byte %llu, past the end of the %zu-byte "
                   "file: truncated or corrupt", name, (unsigned long long)rec_end, size);
    uint32_t hc = crc(0, buf, HEADER_CRC_AT);
    hc = crc(hc, buf + NNZ_NF_HEADER_BYTES, (size_t)(rec_end - NNZ_NF_HEADER_BYTES));
    if (verify_crc && hc != rd32(buf + HEADER_CRC_AT))
        return BAD("'%s': the header checksum does not match (the header, architecture or tensor table is corrupt)",
                   name);
    out->arch_json = malloc((size_t)arch + 1);
    out->tensors = calloc(n ? n : 1, sizeof *out->tensors);
    nnz_status s = NNZ_OK;
    if (!out->arch_json || !out->tensors) {
        s = nnz_fail(NNZ_ERR_NOMEM, "out of memory reading '%s'", name);
        goto fail;
    }
    if (arch) {
        uLongf got = (uLongf)arch;
        if (uncompress((Bytef *)out->arch_json, &got, buf + NNZ_NF_HEADER_BYTES, (uLong)zarch) != Z_OK ||
            got != arch) {
            s = BAD("'%s': the compressed architecture JSON is corrupt (it does not inflate to the %llu bytes the "
                    "header declares)", name, (unsigned long long)arch);
            goto fail;
        }
        if (memchr(out->arch_json, 0, (size_t)arch)) {
            s = BAD("'%s': the architecture JSON holds a NUL byte", name);
            goto fail;
        }
    }
    out->arch_json[arch] = '\0';
    out->size = size;
    cursor c = {buf + rec_off, table, 0, true};
    uint64_t prev_end = rec_end, decoded = 0;
    for (uint32_t i = 0; i < n; i++) {
        nnz_nf_tensor *t = &out->tensors[i];
        if ((s = decode_record_v2(&c, i ? out->tensors[i - 1].name : "", i, name, t))) goto fail;
        nnz_nf_sections sec;
        if ((s = nnz_nf_record_sections(t, name, &sec))) goto fail;
        t->payload_bytes = sec.total;
        const uint64_t al = v2_align(sec.total);
        t->payload_offset = (prev_end + al - 1) / al * al;
        if ((s = check_record(buf, size, name, verify_crc, al, t, &prev_end, &decoded))) goto fail;
    }
    if (c.at != table) {
        s = BAD("'%s': %zu bytes left in the tensor table after its %u records (corrupt file)", name, table - c.at, n);
        goto fail;
    }
    if ((s = check_names(out, n, prev_end, size, name))) goto fail;
    out->n = (int)n;
    return NNZ_OK;
fail:
    parse_fail(out);
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

static void put_var(uint8_t **at, uint64_t v) {
    do {
        uint8_t b = v & 127;
        v >>= 7;
        *(*at)++ = (uint8_t)(b | (v ? 128 : 0));
    } while (v);
}

/* Encodes the version-2 record of t after the record named prev into *at. At most
 * NNZ_NF_V2_RECORD_MAX bytes. */
static void encode_record_v2(const nnz_nf_tensor *t, const char *prev, uint8_t **at) {
    size_t shared = 0, len = strnlen(t->name, NNZ_NF_NAME_MAX - 1);
    while (shared < len && shared < 255 && prev[shared] == t->name[shared]) shared++;
    if (shared == len) shared--; /* at least one new byte (names are unique: only when prev is longer) */
    uint8_t *p = *at;
    *p++ = (uint8_t)shared;
    *p++ = (uint8_t)(len - shared);
    memcpy(p, t->name + shared, len - shared);
    p += len - shared;
    *p++ = t->codec;
    *p++ = t->ndim;
    for (int d = 0; d < t->ndim; d++) put_var(&p, (uint64_t)t->shape[d]);
    wr32(p, t->crc32);
    p += 4;
    if (t->codec != NNZ_CODEC_RAW_F32) {
        *p++ = t->bits;
        put_var(&p, t->codebook_size);
        if (t->codec == NNZ_CODEC_SPARSE) {
            *p++ = t->gap_bits;
            put_var(&p, t->nnz);
            put_var(&p, t->n_gaps);
        }
        for (int which = 0; which < (t->codec == NNZ_CODEC_SPARSE ? 2 : 1); which++) {
            uint8_t mode = which ? t->gap_mode : t->idx_mode;
            const uint32_t *bytes = which ? t->gap_stream_bytes : t->idx_stream_bytes;
            *p++ = mode;
            if (mode == NNZ_STREAM_CONST) *p++ = which ? t->gap_const : t->idx_const;
            if (mode == NNZ_STREAM_HUFFMAN)
                for (int k = 0; k < 4; k++) put_var(&p, bytes[k]);
        }
    }
    *at = p;
}

nnz_status nnz_nf_write(const char *path, const char *arch_json, nnz_nf_tensor *tensors, int n) {
    return nnz_nf_write_version(path, arch_json, tensors, n, NNZ_NF_VERSION);
}

nnz_status nnz_nf_write_version(const char *path, const char *arch_json, nnz_nf_tensor *tensors, int n,
                                unsigned version) {
    size_t arch = arch_json ? strlen(arch_json) : 0;
    if (n < 0 || n > NNZ_NF_MAX_TENSORS || arch > NNZ_NF_MAX_ARCH_BYTES || (version != 1 && version != NNZ_NF_VERSION))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "cannot write '%s': %d tensors / %zu bytes of architecture / version %u "
                        "exceed the format's limits", path, n, arch, version);
    for (int i = 0; i < n; i++) {
        nnz_nf_sections sec;
        NNZ_TRY(nnz_nf_record_sections(&tensors[i], path, &sec));
        if (sec.total != tensors[i].payload_bytes)
            return nnz_fail(NNZ_ERR_INVALID_ARG, "tensor '%s': payload of %llu bytes, its sections need %zu",
                            tensors[i].name, (unsigned long long)tensors[i].payload_bytes, sec.total);
        if (!tensors[i].name[0] || strnlen(tensors[i].name, NNZ_NF_NAME_MAX) >= NNZ_NF_NAME_MAX)
            return nnz_fail(NNZ_ERR_INVALID_ARG, "cannot write '%s': tensor %d has an empty or overlong name", path, i);
        tensors[i].crc32 = crc(0, tensors[i].payload, (size_t)tensors[i].payload_bytes);
    }
    /* the metadata after the header: JSON (v2: compressed) then the records (v1: after padding) */
    size_t meta_cap = version == 1 ? (size_t)(OFF_RECORDS(arch) - NNZ_NF_HEADER_BYTES) + (size_t)n * NNZ_NF_RECORD_BYTES
                                   : (size_t)compressBound((uLong)arch) + (size_t)n * NNZ_NF_V2_RECORD_MAX;
    uint8_t *meta = calloc(meta_cap ? meta_cap : 1, 1);
    if (!meta) return nnz_fail(NNZ_ERR_NOMEM, "out of memory writing '%s'", path);
    uint8_t hdr[NNZ_NF_HEADER_BYTES] = {0};
    memcpy(hdr, NNZ_NF_MAGIC, 8);
    wr32(hdr + 8, version);
    wr32(hdr + 12, (uint32_t)n);
    size_t table;
    uint64_t at;
    if (version == 1) {
        uint64_t rec_off = OFF_RECORDS(arch);
        table = meta_cap;
        at = rec_off + (uint64_t)n * NNZ_NF_RECORD_BYTES;
        for (int i = 0; i < n; i++) {
            at = (at + NNZ_NF_ALIGN - 1) / NNZ_NF_ALIGN * NNZ_NF_ALIGN;
            tensors[i].payload_offset = at;
            at += tensors[i].payload_bytes;
        }
        if (arch) memcpy(meta, arch_json, arch);
        for (int i = 0; i < n; i++)
            encode_record(&tensors[i], meta + (rec_off - NNZ_NF_HEADER_BYTES) + (size_t)i * NNZ_NF_RECORD_BYTES);
        wr64(hdr + 16, arch);
    } else {
        uLongf zlen = 0;
        if (arch) {
            zlen = compressBound((uLong)arch);
            if (compress2(meta, &zlen, (const Bytef *)arch_json, (uLong)arch, 9) != Z_OK) {
                free(meta);
                return nnz_fail(NNZ_ERR_NOMEM, "cannot compress the architecture JSON writing '%s'", path);
            }
        }
        uint8_t *p = meta + zlen;
        for (int i = 0; i < n; i++) encode_record_v2(&tensors[i], i ? tensors[i - 1].name : "", &p);
        table = (size_t)(p - meta);
        at = NNZ_NF_HEADER_BYTES + table;
        for (int i = 0; i < n; i++) {
            uint64_t al = v2_align(tensors[i].payload_bytes);
            at = (at + al - 1) / al * al;
            tensors[i].payload_offset = at;
            at += tensors[i].payload_bytes;
        }
        wr64(hdr + 16, zlen);
        wr64(hdr + 24, arch);
        wr32(hdr + 44, (uint32_t)(table - zlen));
    }
    wr64(hdr + 32, at);
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
