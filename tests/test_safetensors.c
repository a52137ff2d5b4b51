/* io: safetensors writing and reading — round trips, the layout rules of the
 * reference implementation, and hostile headers that must fail cleanly. */
#include "test_util.h"

#include "io/io.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const all_dtypes[] = {"F64", "F32", "F16", "BF16", "F8_E5M2", "F8_E4M3", "I64", "I32",
                                         "I16", "I8",  "U64", "U32", "U16",  "U8",      "BOOL"};
#define N_DTYPES (int)(sizeof all_dtypes / sizeof all_dtypes[0])

static uint8_t *read_all(const char *path, size_t *size) {
    uint8_t *data;
    assert_int_equal(nnz_read_file(path, false, 1 << 24, &data, size), NNZ_OK);
    return data;
}

static uint64_t le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* The rules Hugging Face's reference reader enforces on top of nnz's: header
 * starts with '{', tensors sorted by offset are contiguous from 0 and end at the
 * end of the file. Checked here on the raw bytes with an independent JSON parse. */
static void check_reference_layout(const uint8_t *file, size_t size) {
    uint64_t n = le64(file);
    assert_true(n % 8 == 0);
    assert_true(8 + n <= size);
    assert_int_equal(file[8], '{');
    cJSON *root = cJSON_ParseWithLength((const char *)file + 8, n);
    assert_non_null(root);
    int count = cJSON_GetArraySize(root), k = 0;
    uint64_t(*spans)[2] = calloc((size_t)count + 1, sizeof *spans);
    cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (strcmp(e->string, "__metadata__") == 0) {
            assert_int_equal(k, 0); /* written first */
            continue;
        }
        cJSON *off = cJSON_GetObjectItem(e, "data_offsets");
        spans[k][0] = (uint64_t)cJSON_GetArrayItem(off, 0)->valuedouble;
        spans[k][1] = (uint64_t)cJSON_GetArrayItem(off, 1)->valuedouble;
        k++;
    }
    /* insertion order = offset order, so the spans must chain */
    uint64_t at = 0;
    for (int i = 0; i < k; i++) {
        assert_int_equal(spans[i][0], at);
        at = spans[i][1];
    }
    assert_int_equal(8 + n + at, size);
    free(spans);
    cJSON_Delete(root);
}

static void test_round_trip_all_dtypes_and_metadata(void **state) {
    (void)state;
    char dir[256], path[512];
    tu_make_temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/m.safetensors", dir);

    uint8_t payload[4096];
    for (size_t i = 0; i < sizeof payload; i++) payload[i] = (uint8_t)(i * 37 + 11);
    nnz_st_writer w;
    nnz_st_writer_init(&w);
    char names[N_DTYPES][32];
    for (int i = 0; i < N_DTYPES; i++) {
        int64_t shape[3] = {2, i + 1, 3};
        snprintf(names[i], sizeof names[i], "layer.%d.%s", i, all_dtypes[i]);
        assert_int_equal(nnz_st_add(&w, names[i], all_dtypes[i], 3, shape, payload + i * 7), NNZ_OK);
    }
    int64_t zero_shape[2] = {0, 5}, four[4] = {1, 2, 3, 4};
    assert_int_equal(nnz_st_add(&w, "empty", "F32", 2, zero_shape, NULL), NNZ_OK);
    assert_int_equal(nnz_st_add(&w, "scalar", "F32", 0, NULL, payload), NNZ_OK);
    assert_int_equal(nnz_st_add(&w, "w4d \"quoted\"\\ é", "BF16", 4, four, payload + 1), NNZ_OK);
    assert_int_equal(nnz_st_set_meta(&w, "format", "pt"), NNZ_OK);
    assert_int_equal(nnz_st_set_meta(&w, "nnz.note", "line1\nline2\t\"q\" \\ ü \x01"), NNZ_OK);
    assert_int_equal(nnz_st_set_meta(&w, "format", "pt2"), NNZ_OK); /* replaces */
    assert_int_equal(nnz_st_write(&w, path), NNZ_OK);

    size_t size;
    uint8_t *file = read_all(path, &size);
    check_reference_layout(file, size);

    nnz_st_file f;
    assert_int_equal(nnz_st_load(path, &f), NNZ_OK);
    assert_int_equal(f.n, N_DTYPES + 3);
    for (int i = 0; i < w.n; i++) {
        const nnz_st_tensor *want = &w.tensors[i];
        const nnz_st_tensor *got = &f.tensors[i]; /* file order = insertion order */
        assert_string_equal(got->name, want->name);
        assert_ptr_equal(nnz_st_find(&f, want->name), got);
        assert_string_equal(got->dtype, want->dtype);
        assert_int_equal(got->ndim, want->ndim);
        for (int d = 0; d < want->ndim; d++) assert_int_equal(got->shape[d], want->shape[d]);
        assert_int_equal(got->nbytes, want->nbytes);
        if (want->nbytes) assert_memory_equal(got->data, want->data, want->nbytes);
    }
    assert_int_equal(nnz_st_find(&f, "layer.1.F32")->nbytes, 2 * 2 * 3 * 4);
    assert_int_equal(nnz_st_find(&f, "empty")->nbytes, 0);
    assert_int_equal(nnz_st_find(&f, "scalar")->nbytes, 4);
    assert_null(nnz_st_find(&f, "nope"));
    assert_int_equal(f.n_meta, 2);
    assert_string_equal(nnz_st_meta(&f, "format"), "pt2");
    assert_string_equal(nnz_st_meta(&f, "nnz.note"), "line1\nline2\t\"q\" \\ ü \x01");
    assert_null(nnz_st_meta(&f, "absent"));
    nnz_st_free(&f);

    /* deterministic: the same writer gives the same bytes */
    assert_int_equal(nnz_st_write(&w, path), NNZ_OK);
    size_t size2;
    uint8_t *file2 = read_all(path, &size2);
    assert_int_equal(size, size2);
    assert_memory_equal(file, file2, size);
    nnz_free(file);
    nnz_free(file2);
    nnz_st_writer_free(&w);

    /* an empty writer is a valid file */
    nnz_st_writer_init(&w);
    assert_int_equal(nnz_st_write(&w, path), NNZ_OK);
    assert_int_equal(nnz_st_load(path, &f), NNZ_OK);
    assert_int_equal(f.n, 0);
    assert_int_equal(f.n_meta, 0);
    nnz_st_free(&f);
    nnz_st_writer_free(&w);
    unlink(path);
    rmdir(dir);
}

static void test_writer_rejects_bad_input(void **state) {
    (void)state;
    nnz_st_writer w;
    nnz_st_writer_init(&w);
    float x[4] = {0};
    int64_t s1[1] = {4}, s5[5] = {1, 1, 1, 1, 4}, neg[1] = {-1};
    assert_int_equal(nnz_st_add(&w, "a", "F32", 1, s1, x), NNZ_OK);
    assert_int_equal(nnz_st_add(&w, "a", "F32", 1, s1, x), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "twice"));
    assert_int_equal(nnz_st_add(&w, "b", "F31", 1, s1, x), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "F31"));
    assert_int_equal(nnz_st_add(&w, "c", "F32", 5, s5, x), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "dimensions"));
    assert_int_equal(nnz_st_add(&w, "d", "F32", 1, neg, x), NNZ_ERR_INVALID_ARG);
    assert_int_equal(nnz_st_add(&w, "__metadata__", "F32", 1, s1, x), NNZ_ERR_INVALID_ARG);
    assert_int_equal(nnz_st_add(&w, "bad\xff", "F32", 1, s1, x), NNZ_ERR_INVALID_ARG);
    assert_int_equal(nnz_st_add(&w, "", "F32", 1, s1, x), NNZ_ERR_INVALID_ARG);
    assert_int_equal(nnz_st_set_meta(&w, "k", "\xc0\x80"), NNZ_ERR_INVALID_ARG); /* overlong NUL */
    assert_int_equal(w.n, 1);
    assert_int_equal(nnz_st_write(&w, "/nonexistent-nnz-dir/x.safetensors"), NNZ_ERR_IO);
    assert_non_null(strstr(nnz_last_error(), "does not exist"));
    nnz_st_writer_free(&w);
}

/* A file made of a header string (padded to its given length) and data bytes. */
static uint8_t *make_file(const char *header, size_t data_len, size_t *size) {
    size_t n = strlen(header);
    *size = 8 + n + data_len;
    uint8_t *b = calloc(*size, 1);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(b + 8, header, n);
    for (size_t i = 0; i < data_len; i++) b[8 + n + i] = (uint8_t)i;
    return b;
}

/* Parses header + data_len bytes; expects `code` and a message naming the file and containing want. */
static void expect_bad(const char *header, size_t data_len, nnz_status code, const char *want) {
    size_t size;
    uint8_t *b = make_file(header, data_len, &size);
    nnz_st_file f;
    nnz_status s = nnz_st_parse(b, size, "hostile.st", &f);
    if (s != code) fail_msg("header %s: expected status %d, got %d (%s)", header, code, s, nnz_last_error());
    if (!strstr(nnz_last_error(), "hostile.st") || !strstr(nnz_last_error(), want))
        fail_msg("header %s: message '%s' lacks the file name or '%s'", header, nnz_last_error(), want);
    assert_int_equal(f.n, 0);
    assert_null(f.tensors);
    free(b);
}

static void test_hostile_headers(void **state) {
    (void)state;
    /* the good baseline, so that each case below fails for its own reason */
    size_t size;
    uint8_t *b = make_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, &size);
    nnz_st_file f;
    assert_int_equal(nnz_st_parse(b, size, "ok", &f), NNZ_OK);
    assert_int_equal(f.n, 1);
    nnz_st_free(&f);
    free(b);

    /* header sizes: huge, over the limit, past the end, too small */
    uint8_t raw[16] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, '{', '}'};
    assert_int_equal(nnz_st_parse(raw, sizeof raw, "hostile.st", &f), NNZ_ERR_FORMAT);
    assert_non_null(strstr(nnz_last_error(), "limit"));
    uint64_t over = NNZ_ST_MAX_HEADER + 1;
    for (int i = 0; i < 8; i++) raw[i] = (uint8_t)(over >> (8 * i));
    assert_int_equal(nnz_st_parse(raw, sizeof raw, "hostile.st", &f), NNZ_ERR_FORMAT);
    assert_non_null(strstr(nnz_last_error(), "limit"));
    memset(raw, 0, 8);
    raw[0] = 9; /* 9 > 16 - 8 */
    assert_int_equal(nnz_st_parse(raw, sizeof raw, "hostile.st", &f), NNZ_ERR_FORMAT);
    assert_non_null(strstr(nnz_last_error(), "truncated"));
    assert_int_equal(nnz_st_parse(raw, 5, "hostile.st", &f), NNZ_ERR_FORMAT);
    assert_non_null(strstr(nnz_last_error(), "too short"));

    /* not a JSON object */
    expect_bad("[1,2,3]", 0, NNZ_ERR_FORMAT, "start with '{'");
    expect_bad("{\"a\":", 0, NNZ_ERR_FORMAT, "not valid JSON");
    expect_bad("{}  x", 0, NNZ_ERR_FORMAT, "after the JSON");
    expect_bad("{\"a\":[1]}", 0, NNZ_ERR_FORMAT, "not a JSON object");
    /* fields */
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, NNZ_ERR_FORMAT, "data_offsets");
    expect_bad("{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, NNZ_ERR_UNSUPPORTED, "Q4");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,2],\"data_offsets\":[0,8]}}", 8, NNZ_ERR_UNSUPPORTED,
               "at most 4");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, NNZ_ERR_FORMAT, "shape[0]");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8, NNZ_ERR_FORMAT, "shape[0]");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8, NNZ_ERR_FORMAT, "shape[0]");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,8]}}", 8,
               NNZ_ERR_FORMAT, "overflow");
    expect_bad("{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,1073741824],\"data_offsets\":[0,8]}}", 8,
               NNZ_ERR_FORMAT, "overflow");
    /* offsets */
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 7, NNZ_ERR_FORMAT, "truncated");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 8, NNZ_ERR_FORMAT, "holds 8");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,1e300]}}", 8, NNZ_ERR_FORMAT, "data_offsets");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, NNZ_ERR_FORMAT, "data_offsets");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,9]}}", 8, NNZ_ERR_FORMAT, "data_offsets");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, NNZ_ERR_FORMAT, "span 8");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[6,10]}}", 16, NNZ_ERR_FORMAT, "overlap");
    expect_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
               "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[1,3]}}", 16, NNZ_ERR_FORMAT, "overlap");
    expect_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
               "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", 8, NNZ_ERR_FORMAT, "twice");
    /* metadata */
    expect_bad("{\"__metadata__\":{\"k\":1}}", 0, NNZ_ERR_FORMAT, "not a string");
    expect_bad("{\"__metadata__\":{\"k\":{\"x\":\"y\"}}}", 0, NNZ_ERR_FORMAT, "not a string");
    expect_bad("{\"__metadata__\":[\"k\"]}", 0, NNZ_ERR_FORMAT, "__metadata__");
    expect_bad("{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0, NNZ_ERR_FORMAT, "twice");
    expect_bad("{\"__metadata__\":{},\"__metadata__\":{}}", 0, NNZ_ERR_FORMAT, "twice");
    /* zero-size tensors anywhere in range overlap nothing; trailing spaces are fine */
    b = make_file("{\"z\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[2,2]},"
                  "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}   ", 4, &size);
    assert_int_equal(nnz_st_parse(b, size, "ok", &f), NNZ_OK);
    assert_int_equal(f.n, 2);
    assert_int_equal(nnz_st_find(&f, "z")->nbytes, 0);
    assert_int_equal(((const uint8_t *)nnz_st_find(&f, "a")->data)[3], 3);
    nnz_st_free(&f);
    free(b);
}

static void test_truncated_at_every_byte(void **state) {
    (void)state;
    char dir[256], path[512];
    tu_make_temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/small.safetensors", dir);
    nnz_st_writer w;
    nnz_st_writer_init(&w);
    float x[6] = {1, 2, 3, 4, 5, 6};
    uint8_t y[3] = {7, 8, 9};
    int64_t s23[2] = {2, 3}, s3[1] = {3};
    assert_int_equal(nnz_st_add(&w, "x", "F32", 2, s23, x), NNZ_OK);
    assert_int_equal(nnz_st_add(&w, "y", "U8", 1, s3, y), NNZ_OK);
    assert_int_equal(nnz_st_set_meta(&w, "epoch", "3"), NNZ_OK);
    assert_int_equal(nnz_st_write(&w, path), NNZ_OK);
    nnz_st_writer_free(&w);
    size_t size;
    uint8_t *file = read_all(path, &size);
    /* each prefix in an exactly sized heap block, so any over-read is caught by ASan */
    for (size_t cut = 0; cut < size; cut++) {
        uint8_t *p = malloc(cut ? cut : 1);
        memcpy(p, file, cut);
        nnz_st_file f;
        nnz_status s = nnz_st_parse(p, cut, "cut.st", &f);
        if (s == NNZ_OK) fail_msg("prefix of %zu of %zu bytes parsed", cut, size);
        assert_non_null(strstr(nnz_last_error(), "cut.st"));
        free(p);
    }
    /* and every single-byte corruption parses or fails, never crashes */
    for (size_t i = 0; i < size; i++) {
        uint8_t *p = malloc(size);
        memcpy(p, file, size);
        p[i] ^= 0x5A;
        nnz_st_file f;
        if (nnz_st_parse(p, size, "flip.st", &f) == NNZ_OK) {
            for (int t = 0; t < f.n; t++) {
                const uint8_t *d = f.tensors[t].data;
                assert_true(d >= p && d + f.tensors[t].nbytes <= p + size);
            }
            nnz_st_free(&f);
        }
        free(p);
    }
    nnz_free(file);
    nnz_st_file f;
    char missing[600];
    snprintf(missing, sizeof missing, "%s/absent.safetensors", dir);
    assert_int_equal(nnz_st_load(missing, &f), NNZ_ERR_IO);
    assert_non_null(strstr(nnz_last_error(), "absent.safetensors"));
    unlink(path);
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_all_dtypes_and_metadata),
        cmocka_unit_test(test_writer_rejects_bad_input),
        cmocka_unit_test(test_hostile_headers),
        cmocka_unit_test(test_truncated_at_every_byte),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
