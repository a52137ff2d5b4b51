/* io: the .nnz container, both versions (2, written by nnz pack, and 1, still read) — round
 * trip, truncation at every prefix, every single-bit flip, and hostile headers and records
 * (with valid checksums, so the structural checks themselves are what must catch them). */
#include "test_util.h"

#include "io/io.h"
#include "pack/pack.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define ARCH "{\"format\":\"test\"}"

#define NT 6

typedef struct {
    char dir[512], path[600];
    uint8_t *bytes;
    size_t size;
    unsigned version;
    nnz_packed p[NT];
    float *w[NT];
    int64_t numel[NT];
} fixture;

/* Six tensors: dense, sparse, raw bias, an all-zero (empty-stream) one, an empty one and a raw
 * one of more than 4 KiB (64-byte aligned in version 2), written in the given version. */
static int setup_version(void **state, unsigned version) {
    fixture *f = calloc(1, sizeof *f);
    f->version = version;
    tu_make_temp_dir(f->dir, sizeof f->dir);
    snprintf(f->path, sizeof f->path, "%s/m.nnz", f->dir);
    int64_t shapes[NT][4] = {{8, 3, 3, 4}, {16, 40}, {8}, {3, 7}, {0, 4}, {1100}};
    int ndims[NT] = {4, 2, 1, 2, 2, 1}, bits[NT] = {5, 4, 0, 4, 4, 0};
    const char *names[NT] = {"conv.weight", "fc.weight", "conv.bias", "zero.weight", "empty.weight", "big.bias"};
    nnz_nf_tensor recs[NT];
    for (int i = 0; i < NT; i++) {
        f->numel[i] = 1;
        for (int d = 0; d < ndims[i]; d++) f->numel[i] *= shapes[i][d];
        f->w[i] = calloc((size_t)f->numel[i] + 1, sizeof(float));
        if (i < 3 || i == 5) tu_fill_uniform(f->w[i], f->numel[i], -1, 1, 10 + (uint64_t)i);
        if (i == 1)
            for (int64_t j = 0; j < f->numel[i]; j++)
                if (j % 9) f->w[i][j] = 0; /* 89% sparse */
        assert_int_equal(nnz_pack_tensor(names[i], f->w[i], ndims[i], shapes[i], bits[i], NNZ_LAYOUT_AUTO, &f->p[i]),
                         NNZ_OK);
        recs[i] = f->p[i].rec;
    }
    assert_int_equal(recs[1].codec, NNZ_CODEC_SPARSE);
    assert_int_equal(nnz_nf_write_version(f->path, ARCH, recs, NT, version), NNZ_OK);
    assert_int_equal(nnz_read_file(f->path, false, 1 << 20, &f->bytes, &f->size), NNZ_OK);
    assert_int_equal(f->bytes[8], version);
    *state = f;
    return 0;
}
static int setup(void **state) { return setup_version(state, NNZ_NF_VERSION); }
static int setup_v1(void **state) { return setup_version(state, 1); }

static int teardown(void **state) {
    fixture *f = *state;
    for (int i = 0; i < NT; i++) nnz_packed_free(&f->p[i]), free(f->w[i]);
    nnz_free(f->bytes);
    unlink(f->path);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void test_roundtrip(void **state) {
    fixture *f = *state;
    nnz_nf_file nf;
    assert_int_equal(nnz_nf_load(f->path, &nf), NNZ_OK);
    assert_int_equal(nf.n, NT);
    assert_string_equal(nf.arch_json, ARCH);
    for (int i = 0; i < NT; i++) {
        const nnz_nf_tensor *t = nnz_nf_find(&nf, f->p[i].rec.name);
        assert_non_null(t);
        /* v1: every payload 64-byte aligned; v2: 4, and 64 from 4 KiB */
        uint64_t align = f->version == 1 || t->payload_bytes >= NNZ_NF_V2_BIG ? 64 : 4;
        assert_int_equal(t->payload_offset % align, 0);
        assert_int_equal(t->codec, f->p[i].rec.codec);
        assert_int_equal(t->nnz, f->p[i].rec.nnz);
        assert_int_equal(t->n_gaps, f->p[i].rec.n_gaps);
        assert_memory_equal(t->shape, f->p[i].rec.shape, sizeof t->shape);
        assert_int_equal(t->payload_bytes, f->p[i].rec.payload_bytes);
        assert_memory_equal(t->payload, f->p[i].payload, t->payload_bytes);
        float *out = malloc(((size_t)f->numel[i] + 1) * sizeof *out);
        uint8_t *scratch = malloc(nnz_unpack_scratch_bytes(t) + 1);
        assert_int_equal(nnz_unpack_tensor(t, out, scratch, f->path), NNZ_OK);
        if (t->codec == NNZ_CODEC_RAW_F32) assert_memory_equal(out, f->w[i], (size_t)f->numel[i] * 4);
        if (i == 3)
            for (int j = 0; j < 21; j++) assert_true(out[j] == 0.0f);
        free(out);
        free(scratch);
    }
    /* a raw tensor can be used in place: aligned fp32 inside the file buffer */
    const nnz_nf_tensor *b = nnz_nf_find(&nf, f->version == 1 ? "conv.bias" : "big.bias");
    assert_int_equal(((uintptr_t)b->payload) % 64, 0);
    if (f->version == NNZ_NF_VERSION) { /* no padding where none is needed: the file is compact */
        uint64_t payload = 0;
        for (int i = 0; i < NT; i++) payload += f->p[i].rec.payload_bytes;
        assert_true(f->size < payload + 64 + 200 + 3 * NT + 63);
    }
    assert_null(nnz_nf_find(&nf, "nope"));
    nnz_nf_free(&nf);
}

/* The size policy: the tensors' decoded bytes are checked against NNZ_SIZE_LIMIT at parse time. */
static void test_decoded_size_limit(void **state) {
    fixture *f = *state;
    size_t decoded = 0;
    for (int i = 0; i < NT; i++) decoded += 4 * (size_t)f->numel[i];
    char text[32];
    nnz_nf_file nf;
    snprintf(text, sizeof text, "%zu", decoded);
    setenv("NNZ_SIZE_LIMIT", text, 1);
    assert_int_equal(nnz_nf_parse(f->bytes, f->size, "limit.nnz", &nf), NNZ_OK);
    nnz_nf_free(&nf);
    snprintf(text, sizeof text, "%zu", decoded - 1);
    setenv("NNZ_SIZE_LIMIT", text, 1);
    assert_int_equal(nnz_nf_parse(f->bytes, f->size, "limit.nnz", &nf), NNZ_ERR_FORMAT);
    assert_non_null(strstr(nnz_last_error(), "NNZ_SIZE_LIMIT"));
    /* and the file itself: smaller than the limit is read, larger is refused */
    snprintf(text, sizeof text, "%zu", f->size - 1);
    setenv("NNZ_SIZE_LIMIT", text, 1);
    assert_int_equal(nnz_nf_load(f->path, &nf), NNZ_ERR_FORMAT);
    assert_non_null(strstr(nnz_last_error(), "larger than the limit"));
    unsetenv("NNZ_SIZE_LIMIT");
    assert_int_equal(nnz_nf_load(f->path, &nf), NNZ_OK);
    nnz_nf_free(&nf);
}

static void test_every_prefix_fails(void **state) {
    fixture *f = *state;
    for (size_t len = 0; len < f->size; len++) {
        nnz_nf_file nf;
        uint8_t *copy = malloc(len ? len : 1); /* exact size: ASan sees any over-read */
        memcpy(copy, f->bytes, len);
        nnz_status s = nnz_nf_parse(copy, len, "cut.nnz", &nf);
        assert_int_equal(s, NNZ_ERR_FORMAT);
        assert_non_null(strstr(nnz_last_error(), "cut.nnz"));
        free(copy);
    }
    /* and a longer one */
    uint8_t *longer = calloc(f->size + 10, 1);
    memcpy(longer, f->bytes, f->size);
    nnz_nf_file nf;
    assert_int_equal(nnz_nf_parse(longer, f->size + 10, "long.nnz", &nf), NNZ_ERR_FORMAT);
    assert_non_null(strstr(nnz_last_error(), "oversized"));
    free(longer);
}

static void test_every_bit_flip_fails(void **state) {
    fixture *f = *state;
    uint8_t *copy = malloc(f->size);
    memcpy(copy, f->bytes, f->size);
    for (size_t bit = 0; bit < f->size * 8; bit++) {
        copy[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        nnz_nf_file nf;
        nnz_status s = nnz_nf_parse(copy, f->size, "flip.nnz", &nf);
        if (s == NNZ_OK) fail_msg("flipping bit %zu went unnoticed", bit);
        assert_non_null(strstr(nnz_last_error(), "flip.nnz"));
        copy[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    free(copy);
}

static uint64_t get_le(const uint8_t *p, int width) {
    uint64_t v = 0;
    for (int i = width - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* Rewrites the header checksum so that a hostile edit reaches the structural checks. */
static void fix_header_crc(uint8_t *b, size_t size) {
    uint64_t arch = get_le(b + 16, 8), n = get_le(b + 12, 4);
    uint64_t rec_off = (64 + arch + 63) / 64 * 64, rec_end = rec_off + n * 256;
    if (get_le(b + 8, 4) == 2) rec_off = 64 + arch, rec_end = rec_off + get_le(b + 44, 4); /* v2 */
    if (rec_end > size || arch > size) return;
    uint32_t c = (uint32_t)crc32_z(0, b, 40);
    c = (uint32_t)crc32_z(c, b + 64, (size_t)(rec_end - 64));
    for (int i = 0; i < 4; i++) b[40 + i] = (uint8_t)(c >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void expect_hostile(fixture *f, size_t at, int width, uint64_t value, nnz_status want, const char *words) {
    uint8_t *b = malloc(f->size);
    memcpy(b, f->bytes, f->size);
    if (width == 8) put64(b + at, value);
    else if (width == 4) put32(b + at, (uint32_t)value);
    else b[at] = (uint8_t)value;
    fix_header_crc(b, f->size);
    nnz_nf_file nf;
    nnz_status s = nnz_nf_parse(b, f->size, "hostile.nnz", &nf);
    if (s == NNZ_OK) nnz_nf_free(&nf);
    if (s != want || !strstr(nnz_last_error(), words))
        fail_msg("byte %zu := %llu: status %d, message '%s' (wanted %d with '%s')", at, (unsigned long long)value, s,
                 nnz_last_error(), want, words);
    free(b);
}

static void test_hostile_headers_v1(void **state) {
    fixture *f = *state;
    size_t rec0 = 128; /* ARCH is 17 bytes: records start at 128 */
    size_t rec1 = rec0 + 256;
    expect_hostile(f, 0, 1, 'X', NNZ_ERR_FORMAT, "not a .nnz file");
    expect_hostile(f, 8, 4, 3, NNZ_ERR_UNSUPPORTED, "version 3");
    expect_hostile(f, 8, 4, 0, NNZ_ERR_UNSUPPORTED, "re-pack");
    expect_hostile(f, 12, 4, 0xFFFFFFFFu, NNZ_ERR_FORMAT, "tensors");
    expect_hostile(f, 12, 4, 1000, NNZ_ERR_FORMAT, "past the end");
    expect_hostile(f, 16, 8, (uint64_t)1 << 62, NNZ_ERR_FORMAT, "architecture");
    expect_hostile(f, 32, 8, f->size + 1, NNZ_ERR_FORMAT, "truncated");
    expect_hostile(f, 48, 1, 1, NNZ_ERR_FORMAT, "reserved");
    /* records (tensor 0 is conv.weight, dense; tensor 1 fc.weight, sparse) */
    expect_hostile(f, rec0 + 96, 1, 7, NNZ_ERR_FORMAT, "unknown codec");
    expect_hostile(f, rec0 + 97, 1, 5, NNZ_ERR_FORMAT, "dimensions");
    expect_hostile(f, rec0 + 112, 8, (uint64_t)-1, NNZ_ERR_FORMAT, "shape");
    expect_hostile(f, rec0 + 144, 8, 1, NNZ_ERR_FORMAT, "numel");
    expect_hostile(f, rec0 + 98, 1, 1, NNZ_ERR_FORMAT, "codebook");
    expect_hostile(f, rec0 + 104, 4, 257, NNZ_ERR_FORMAT, "codebook");
    expect_hostile(f, rec0 + 168, 8, 8, NNZ_ERR_FORMAT, "misaligned");
    expect_hostile(f, rec0 + 168, 8, (uint64_t)1 << 40, NNZ_ERR_FORMAT, "past the end");
    expect_hostile(f, rec0 + 176, 8, (uint64_t)-1, NNZ_ERR_FORMAT, "payload of");
    expect_hostile(f, rec0 + 184, 4, 0xFFFFFFFFu, NNZ_ERR_FORMAT, "impossible");
    expect_hostile(f, rec0 + 100, 1, 9, NNZ_ERR_FORMAT, "stream mode");
    expect_hostile(f, rec0 + 200, 4, 3, NNZ_ERR_FORMAT, "dense");
    expect_hostile(f, rec0 + 250, 1, 1, NNZ_ERR_FORMAT, "reserved");
    expect_hostile(f, rec0 + 95, 1, 'x', NNZ_ERR_FORMAT, "unpadded");
    expect_hostile(f, rec0, 1, 0, NNZ_ERR_FORMAT, "empty");
    expect_hostile(f, rec1 + 160, 8, (uint64_t)1 << 33, NNZ_ERR_FORMAT, "gap symbols");
    expect_hostile(f, rec1 + 99, 1, 0, NNZ_ERR_FORMAT, "sparse");
    expect_hostile(f, rec1 + 152, 8, 100000, NNZ_ERR_FORMAT, "sparse");
    /* a duplicate name */
    uint8_t *b = malloc(f->size);
    memcpy(b, f->bytes, f->size);
    memcpy(b + rec1, b + rec0, 96);
    fix_header_crc(b, f->size);
    nnz_nf_file nf;
    assert_int_equal(nnz_nf_parse(b, f->size, "dup.nnz", &nf), NNZ_ERR_FORMAT);
    assert_non_null(strstr(nnz_last_error(), "twice"));
    free(b);
    /* a name filling all 96 bytes */
    memcpy(b = malloc(f->size), f->bytes, f->size);
    memset(b + rec0, 'a', 96);
    fix_header_crc(b, f->size);
    assert_int_equal(nnz_nf_parse(b, f->size, "name.nnz", &nf), NNZ_ERR_FORMAT);
    assert_non_null(strstr(nnz_last_error(), "unterminated"));
    free(b);
    /* a file that does not exist, a directory */
    assert_int_equal(nnz_nf_load("/nonexistent/x.nnz", &nf), NNZ_ERR_IO);
    assert_non_null(strstr(nnz_last_error(), "/nonexistent/x.nnz"));
}

/* Version 2: the header's fields and the compact records' (found by walking the known layout
 * of the fixture's first two records, checked on the way). */
static void test_hostile_headers_v2(void **state) {
    fixture *f = *state;
    const uint8_t *b = f->bytes;
    const size_t rec0 = 64 + (size_t)get_le(b + 16, 8), table = (size_t)get_le(b + 44, 4);
    assert_int_equal(b[rec0], 0);
    assert_int_equal(b[rec0 + 1], 11);
    assert_memory_equal(b + rec0 + 2, "conv.weight", 11);
    assert_int_equal(b[rec0 + 13], NNZ_CODEC_DENSE);
    assert_int_equal(b[rec0 + 25], NNZ_STREAM_HUFFMAN);
    const size_t rec1 = rec0 + 30; /* 2 + 11 name + codec, ndim + 4 dims + CRC + bits, K, mode + 4 sizes */
    assert_int_equal(b[rec1], 0);
    assert_int_equal(b[rec1 + 1], 9);
    assert_memory_equal(b + rec1 + 2, "fc.weight", 9);
    assert_int_equal(b[rec1 + 11], NNZ_CODEC_SPARSE);
    assert_true(b[rec1 + 22] < 128 && b[rec1 + 23] < 128); /* W and G: one byte each */
    expect_hostile(f, 0, 1, 'X', NNZ_ERR_FORMAT, "not a .nnz file");
    expect_hostile(f, 8, 4, 3, NNZ_ERR_UNSUPPORTED, "version 3");
    expect_hostile(f, 12, 4, 0xFFFFFFFFu, NNZ_ERR_FORMAT, "tensors");
    expect_hostile(f, 12, 4, NT + 1, NNZ_ERR_FORMAT, "past the end of the record table");
    expect_hostile(f, 12, 4, NT - 1, NNZ_ERR_FORMAT, "left in the tensor table");
    expect_hostile(f, 16, 8, (uint64_t)1 << 62, NNZ_ERR_FORMAT, "architecture");
    expect_hostile(f, 24, 8, strlen(ARCH) + 1, NNZ_ERR_FORMAT, "compressed architecture");
    expect_hostile(f, 24, 8, 0, NNZ_ERR_FORMAT, "architecture");
    expect_hostile(f, 32, 8, f->size + 1, NNZ_ERR_FORMAT, "truncated");
    expect_hostile(f, 48, 1, 1, NNZ_ERR_FORMAT, "reserved");
    expect_hostile(f, 44, 4, 0xFFFFFFF0u, NNZ_ERR_FORMAT, "past the end");
    expect_hostile(f, 44, 4, table - 1, NNZ_ERR_FORMAT, "runs past the end of the record table");
    expect_hostile(f, 64, 1, 0, NNZ_ERR_FORMAT, "compressed architecture");
    /* names */
    expect_hostile(f, rec0, 1, 3, NNZ_ERR_FORMAT, "impossible name");
    expect_hostile(f, rec0 + 1, 1, 0, NNZ_ERR_FORMAT, "empty");
    expect_hostile(f, rec0 + 1, 1, 200, NNZ_ERR_FORMAT, "overlong");
    expect_hostile(f, rec0 + 2, 1, 0, NNZ_ERR_FORMAT, "NUL");
    expect_hostile(f, rec1, 1, 20, NNZ_ERR_FORMAT, "impossible name");
    /* fields */
    expect_hostile(f, rec0 + 13, 1, 7, NNZ_ERR_FORMAT, "unknown codec");
    expect_hostile(f, rec0 + 14, 1, 5, NNZ_ERR_FORMAT, "dimensions");
    expect_hostile(f, rec0 + 15, 1, 0, NNZ_ERR_FORMAT, "codebook");
    expect_hostile(f, rec0 + 23, 1, 1, NNZ_ERR_FORMAT, "codebook");
    expect_hostile(f, rec0 + 24, 1, 0x7F, NNZ_ERR_FORMAT, "codebook");
    expect_hostile(f, rec0 + 25, 1, 9, NNZ_ERR_FORMAT, "stream mode");
    expect_hostile(f, rec0 + 26, 1, 0x7F, NNZ_ERR_FORMAT, "impossible");
    expect_hostile(f, rec0 + 26, 1, 1, NNZ_ERR_FORMAT, "impossible");
    expect_hostile(f, rec1 + 21, 1, 0, NNZ_ERR_FORMAT, "sparse");
    expect_hostile(f, rec1 + 22, 1, 0x7F, NNZ_ERR_FORMAT, "gap symbols");
    expect_hostile(f, rec1 + 23, 1, 0, NNZ_ERR_FORMAT, "gap symbols");
    /* a number that never ends (every byte a continuation): the table runs out */
    uint8_t *c = malloc(f->size);
    memcpy(c, f->bytes, f->size);
    memset(c + rec0 + 15, 0xFF, table - (rec0 + 15 - (64 + (size_t)get_le(b + 16, 8))));
    fix_header_crc(c, f->size);
    nnz_nf_file nf;
    assert_int_equal(nnz_nf_parse(c, f->size, "var.nnz", &nf), NNZ_ERR_FORMAT);
    assert_non_null(strstr(nnz_last_error(), "var.nnz"));
    free(c);
}

/* Without checksums (the fuzzer's mode), corrupt payloads must still decode safely or fail. */
static void test_corrupt_payload_decodes_safely(void **state) {
    fixture *f = *state;
    uint8_t *b = malloc(f->size);
    int failures = 0, runs = 0;
    for (size_t at = 64; at < f->size; at += 3) {
        memcpy(b, f->bytes, f->size);
        b[at] ^= 0x5A;
        nnz_nf_file nf;
        if (nnz_nf_parse_ex(b, f->size, "c.nnz", false, &nf) != NNZ_OK) continue;
        for (int i = 0; i < nf.n; i++) {
            const nnz_nf_tensor *t = &nf.tensors[i];
            float *out = malloc(((size_t)t->numel + 1) * sizeof *out);
            uint8_t *scratch = malloc(nnz_unpack_scratch_bytes(t) + 1);
            failures += nnz_unpack_tensor(t, out, scratch, "c.nnz") != NNZ_OK;
            runs++;
            free(out);
            free(scratch);
        }
        nnz_nf_free(&nf);
    }
    assert_true(runs > 0 && failures > 0);
    free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decoded_size_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_prefix_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_bit_flip_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_headers_v2, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_payload_decodes_safely, setup, teardown),
        /* version 1 files still load, with every check */
        cmocka_unit_test_setup_teardown(test_roundtrip, setup_v1, teardown),
        cmocka_unit_test_setup_teardown(test_every_prefix_fails, setup_v1, teardown),
        cmocka_unit_test_setup_teardown(test_every_bit_flip_fails, setup_v1, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_headers_v1, setup_v1, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_payload_decodes_safely, setup_v1, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
