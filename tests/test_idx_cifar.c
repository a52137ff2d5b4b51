/* io: IDX (MNIST-style) and CIFAR-10 batch parsing, and nnz_dataset_load on
 * generated directories (good, gzip'd, truncated, hostile) and on the real
 * Fashion-MNIST when it is installed. */
#include "test_util.h"

#include "io/io.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* ---- building files ---- */

/* An IDX file of unsigned bytes: header for dims, body byte i = (i*31 + seed) mod 251. */
static uint8_t *make_idx(int ndim, const uint32_t *dims, uint8_t seed, size_t *len) {
    size_t body = 1;
    for (int i = 0; i < ndim; i++) body *= dims[i];
    size_t header = 4 + 4 * (size_t)ndim;
    uint8_t *b = malloc(header + body);
    b[0] = 0; b[1] = 0; b[2] = 0x08; b[3] = (uint8_t)ndim;
    for (int i = 0; i < ndim; i++) {
        b[4 + 4 * i] = (uint8_t)(dims[i] >> 24);
        b[5 + 4 * i] = (uint8_t)(dims[i] >> 16);
        b[6 + 4 * i] = (uint8_t)(dims[i] >> 8);
        b[7 + 4 * i] = (uint8_t)dims[i];
    }
    for (size_t i = 0; i < body; i++) b[header + i] = (uint8_t)((i * 31 + seed) % 251);
    *len = header + body;
    return b;
}

static void write_gz(const char *path, const void *data, size_t len) {
    gzFile g = gzopen(path, "wb");
    assert_non_null(g);
    if (len) assert_int_equal(gzwrite(g, data, (unsigned)len), (int)len);
    assert_int_equal(gzclose(g), Z_OK);
}

static void put(const char *dir, const char *name, const void *data, size_t len, bool gz) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (gz) write_gz(path, data, len);
    else tu_write_file(path, data, len);
}

/* Removes dir and everything in it (one level of subdirectories). */
static void remove_tree(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

#define N_IMG 5
#define IMG_H 4
#define IMG_W 3
static const uint8_t good_labels[N_IMG] = {0, 3, 1, 2, 3};

/* A small MNIST-style split: images (5,4,3), labels 0..3. */
static void put_mnist(const char *dir, const char *prefix, bool gz) {
    uint32_t idims[3] = {N_IMG, IMG_H, IMG_W}, ldims[1] = {N_IMG};
    size_t ilen, llen;
    uint8_t *img = make_idx(3, idims, 7, &ilen);
    uint8_t *lbl = make_idx(1, ldims, 0, &llen);
    memcpy(lbl + 8, good_labels, N_IMG);
    char name[64];
    snprintf(name, sizeof name, "%s-images-idx3-ubyte%s", prefix, gz ? ".gz" : "");
    put(dir, name, img, ilen, gz);
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte%s", prefix, gz ? ".gz" : "");
    put(dir, name, lbl, llen, gz);
    free(img);
    free(lbl);
}

static void check_mnist(const nnz_dataset *d) {
    assert_int_equal(d->n, N_IMG);
    assert_int_equal(d->h, IMG_H);
    assert_int_equal(d->w, IMG_W);
    assert_int_equal(d->c, 1);
    assert_int_equal(d->num_classes, 4);
    assert_memory_equal(d->labels, good_labels, N_IMG);
    for (size_t i = 0; i < N_IMG * IMG_H * IMG_W; i++) assert_int_equal(d->images[i], (i * 31 + 7) % 251);
}

/* ---- IDX ---- */

static void test_idx_good_raw_and_gz(void **state) {
    (void)state;
    char dir[256];
    tu_make_temp_dir(dir, sizeof dir);
    put_mnist(dir, "train", false);
    put_mnist(dir, "t10k", true);
    nnz_dataset d;
    assert_int_equal(nnz_dataset_load(dir, true, &d), NNZ_OK);
    check_mnist(&d);
    nnz_dataset_free(&d);
    assert_null(d.images);
    assert_int_equal(nnz_dataset_load(dir, false, &d), NNZ_OK);
    check_mnist(&d);
    nnz_dataset_free(&d);
    remove_tree(dir);
}

/* Loads dir's train split expecting failure `code` with a message containing every string in want. */
static void expect_load_error(const char *dir, nnz_status code, const char *const *want) {
    nnz_dataset d;
    memset(&d, 0xAB, sizeof d);
    nnz_status s = nnz_dataset_load(dir, true, &d);
    if (s != code) fail_msg("expected status %d, got %d: %s", code, s, nnz_last_error());
    for (; *want; want++)
        if (!strstr(nnz_last_error(), *want)) fail_msg("message '%s' lacks '%s'", nnz_last_error(), *want);
    assert_null(d.images);
    assert_null(d.labels);
}

/* nnz_dataset_load_first reads only the first images: the same as loading all and trimming,
 * for raw and gzip'd files, with the whole split's class count; a truncated tail past the
 * images asked for is not read, one inside them is an error; nnz_dataset_bytes agrees. */
static void test_idx_load_first(void **state) {
    (void)state;
    char dir[256];
    tu_make_temp_dir(dir, sizeof dir);
    put_mnist(dir, "train", false);
    put_mnist(dir, "t10k", true);
    for (int split = 0; split < 2; split++)
        for (int limit = 0; limit <= N_IMG + 1; limit++) {
            nnz_dataset all, first;
            assert_int_equal(nnz_dataset_load(dir, split == 0, &all), NNZ_OK);
            assert_int_equal(nnz_dataset_trim(&all, limit), NNZ_OK);
            assert_int_equal(nnz_dataset_load_first(dir, split == 0, limit, &first), NNZ_OK);
            assert_int_equal(first.n, limit == 0 || limit > N_IMG ? N_IMG : limit);
            assert_int_equal(first.n, all.n);
            assert_int_equal(first.num_classes, 4); /* of the whole split, even when the first labels are 0..3 */
            assert_memory_equal(first.images, all.images, (size_t)first.n * IMG_H * IMG_W);
            assert_memory_equal(first.labels, all.labels, (size_t)first.n);
            size_t bytes = 0;
            int n = 0;
            assert_int_equal(nnz_dataset_bytes(dir, split == 0, limit, &bytes, &n), NNZ_OK);
            assert_int_equal(n, N_IMG);
            size_t held = 16 + (size_t)first.n * IMG_H * IMG_W + 8 + N_IMG;
            assert_true(bytes >= held && bytes <= held + 256);
            nnz_dataset_free(&all);
            nnz_dataset_free(&first);
        }
    /* the first image's class count: labels 0,3,1,2,3 -> 4 classes even for limit 1 (label 0) */
    /* a file cut inside its 4th image: the first 3 load, 4 do not */
    uint32_t dims[3] = {N_IMG, IMG_H, IMG_W};
    size_t len;
    uint8_t *img = make_idx(3, dims, 7, &len);
    for (int gz = 0; gz < 2; gz++) {
        char path[512];
        snprintf(path, sizeof path, "%s/train-images-idx3-ubyte%s", dir, gz ? ".gz" : "");
        unlink(path);
        put(dir, gz ? "train-images-idx3-ubyte.gz" : "train-images-idx3-ubyte", img, 16 + 3 * IMG_H * IMG_W + 5, gz);
        nnz_dataset d;
        assert_int_equal(nnz_dataset_load_first(dir, true, 3, &d), NNZ_OK);
        assert_int_equal(d.n, 3);
        nnz_dataset_free(&d);
        assert_int_equal(nnz_dataset_load_first(dir, true, 4, &d), NNZ_ERR_FORMAT);
        assert_non_null(strstr(nnz_last_error(), "its first 4 images need"));
        assert_int_equal(nnz_dataset_load(dir, true, &d), NNZ_ERR_FORMAT);
        unlink(path);
    }
    free(img);
    remove_tree(dir);
}

static void test_idx_truncated_message(void **state) {
    (void)state;
    char dir[256], path[512], want[700];
    tu_make_temp_dir(dir, sizeof dir);
    put_mnist(dir, "train", false);
    /* cut the image file to 3 whole images and part of a 4th */
    uint32_t dims[3] = {N_IMG, IMG_H, IMG_W};
    size_t len;
    uint8_t *img = make_idx(3, dims, 7, &len);
    put(dir, "train-images-idx3-ubyte", img, 16 + 3 * IMG_H * IMG_W + 5, false);
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte", dir);
    snprintf(want, sizeof want, "truncated IDX file '%s': header says 5 images, file holds 3; re-download or pass --data",
             path);
    nnz_dataset d;
    assert_int_equal(nnz_dataset_load(dir, true, &d), NNZ_ERR_FORMAT);
    assert_string_equal(nnz_last_error(), want);

    /* the same file gzip'd is reported the same way */
    unlink(path);
    put(dir, "train-images-idx3-ubyte.gz", img, 16 + 3 * IMG_H * IMG_W + 5, true);
    const char *gz_want[] = {"truncated IDX file", "train-images-idx3-ubyte.gz", "header says 5 images", "holds 3", NULL};
    expect_load_error(dir, NNZ_ERR_FORMAT, gz_want);

    /* a label file shorter than its header */
    unlink(path);
    put(dir, "train-images-idx3-ubyte", img, len, false);
    uint8_t lbl[8 + 2] = {0, 0, 8, 1, 0, 0, 0, N_IMG, 1, 2};
    put(dir, "train-labels-idx1-ubyte", lbl, sizeof lbl, false);
    const char *lbl_want[] = {"train-labels-idx1-ubyte", "header says 5 labels, file holds 2", NULL};
    expect_load_error(dir, NNZ_ERR_FORMAT, lbl_want);
    free(img);
    remove_tree(dir);
}

static void test_idx_hostile_files(void **state) {
    (void)state;
    char dir[256];
    tu_make_temp_dir(dir, sizeof dir);
    put_mnist(dir, "train", false);
    const char *name = "train-images-idx3-ubyte";
    const char *want_name[] = {name, NULL};

    /* longer than the header says */
    uint32_t dims[3] = {N_IMG, IMG_H, IMG_W};
    size_t len;
    uint8_t *img = make_idx(3, dims, 7, &len);
    uint8_t *longer = calloc(len + 10, 1);
    memcpy(longer, img, len);
    put(dir, name, longer, len + 10, false);
    const char *w_long[] = {name, "10 bytes longer", NULL};
    expect_load_error(dir, NNZ_ERR_FORMAT, w_long);

    /* oversized dims: the product overflows 64 bits */
    uint8_t huge[16] = {0, 0, 8, 3, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
    put(dir, name, huge, sizeof huge, false);
    const char *w_over[] = {name, "overflow", NULL};
    expect_load_error(dir, NNZ_ERR_FORMAT, w_over);
    /* large but representable dims: truncated, and nothing of that size is allocated */
    uint8_t big[16 + 4] = {0, 0, 8, 3, 0x7F, 0xFF, 0xFF, 0xFF, 0, 0, 0x10, 0, 0, 0, 0x10, 0};
    put(dir, name, big, sizeof big, false);
    const char *w_big[] = {name, "header says 2147483647 images, file holds 0", NULL};
    expect_load_error(dir, NNZ_ERR_FORMAT, w_big);
    /* a zero dimension */
    uint8_t zero[16] = {0, 0, 8, 3, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 3};
    put(dir, name, zero, sizeof zero, false);
    const char *w_zero[] = {name, "dimension 0 is 0", NULL};
    expect_load_error(dir, NNZ_ERR_FORMAT, w_zero);

    /* bad magic: a gzip file without the .gz name */
    put(dir, "train-images-idx3-ubyte.gz", img, len, true);
    char gzpath[512], plain[512];
    snprintf(gzpath, sizeof gzpath, "%s/train-images-idx3-ubyte.gz", dir);
    snprintf(plain, sizeof plain, "%s/%s", dir, name);
    assert_int_equal(rename(gzpath, plain), 0);
    const char *w_magic[] = {name, "not an IDX file", NULL};
    expect_load_error(dir, NNZ_ERR_FORMAT, w_magic);

    /* unsupported element type (0x0D = float) and dimension counts */
    uint8_t flt[8 + 4] = {0, 0, 0x0D, 1, 0, 0, 0, 1, 0, 0, 0, 0};
    put(dir, name, flt, sizeof flt, false);
    const char *w_type[] = {name, "0x0d", NULL};
    expect_load_error(dir, NNZ_ERR_UNSUPPORTED, w_type);
    uint8_t nd5[4] = {0, 0, 8, 5}, nd0[4] = {0, 0, 8, 0};
    put(dir, name, nd5, 4, false);
    const char *w_nd[] = {name, "5 dimensions", NULL};
    expect_load_error(dir, NNZ_ERR_FORMAT, w_nd);
    put(dir, name, nd0, 4, false);
    expect_load_error(dir, NNZ_ERR_FORMAT, want_name);
    /* header cut inside the dims */
    put(dir, name, img, 10, false);
    const char *w_hdr[] = {name, "truncated", NULL};
    expect_load_error(dir, NNZ_ERR_FORMAT, w_hdr);

    /* garbage and empty */
    uint8_t garbage[777];
    nnz_rng r = nnz_rng_make(5, 0);
    for (size_t i = 0; i < sizeof garbage; i++) garbage[i] = (uint8_t)nnz_rng_u64(&r);
    garbage[0] = 0x42;
    put(dir, name, garbage, sizeof garbage, false);
    expect_load_error(dir, NNZ_ERR_FORMAT, want_name);
    put(dir, name, "", 0, false);
    const char *w_empty[] = {name, "empty", NULL};
    expect_load_error(dir, NNZ_ERR_FORMAT, w_empty);

    /* image and label counts disagree */
    put(dir, name, img, len, false);
    uint8_t lbl[8 + 4] = {0, 0, 8, 1, 0, 0, 0, 4, 0, 1, 2, 3};
    put(dir, "train-labels-idx1-ubyte", lbl, sizeof lbl, false);
    const char *w_count[] = {name, "5 images", "4 labels", NULL};
    expect_load_error(dir, NNZ_ERR_FORMAT, w_count);
    /* labels with the wrong rank */
    put(dir, "train-labels-idx1-ubyte", img, len, false);
    const char *w_rank[] = {"train-labels-idx1-ubyte", "expected 1", NULL};
    expect_load_error(dir, NNZ_ERR_FORMAT, w_rank);

    free(img);
    free(longer);
    remove_tree(dir);
}

static void test_idx_parse_direct(void **state) {
    (void)state;
    uint32_t dims[4] = {2, 3, 4, 5};
    size_t len;
    uint8_t *b = make_idx(4, dims, 1, &len);
    nnz_idx idx;
    assert_int_equal(nnz_idx_parse(b, len, "x", &idx), NNZ_OK);
    assert_int_equal(idx.ndim, 4);
    assert_int_equal(idx.dims[3], 5);
    assert_ptr_equal(idx.data, b + 20);
    /* every strict prefix is an error, never an over-read */
    for (size_t cut = 0; cut < len; cut++) {
        assert_int_not_equal(nnz_idx_parse(b, cut, "x", &idx), NNZ_OK);
        assert_non_null(strstr(nnz_last_error(), "'x'"));
    }
    free(b);
}

static void test_missing_files_listed(void **state) {
    (void)state;
    char dir[256];
    tu_make_temp_dir(dir, sizeof dir);
    const char *w_none[] = {dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "data_batch_1.bin", "--data", NULL};
    expect_load_error(dir, NNZ_ERR_IO, w_none);
    nnz_dataset d;
    assert_int_equal(nnz_dataset_load(dir, false, &d), NNZ_ERR_IO);
    assert_non_null(strstr(nnz_last_error(), "t10k-images-idx3-ubyte"));
    assert_non_null(strstr(nnz_last_error(), "test_batch.bin"));
    /* only one of the pair */
    uint32_t ld[1] = {3};
    size_t llen;
    uint8_t *lbl = make_idx(1, ld, 0, &llen);
    put(dir, "train-labels-idx1-ubyte.gz", lbl, llen, true);
    const char *w_half[] = {"train-images-idx3-ubyte", "not", NULL};
    expect_load_error(dir, NNZ_ERR_IO, w_half);
    free(lbl);
    char nodir[512];
    snprintf(nodir, sizeof nodir, "%s/absent", dir);
    const char *w_nodir[] = {"absent", "does not exist", NULL};
    expect_load_error(nodir, NNZ_ERR_IO, w_nodir);
    remove_tree(dir);
}

/* ---- CIFAR-10 ---- */

#define REC 3073
/* n records; record r has label labels[r] and pixel (c, p) = (r*13 + c*101 + p) mod 256. */
static uint8_t *make_cifar(int n, const uint8_t *labels) {
    uint8_t *b = malloc((size_t)n * REC);
    for (int r = 0; r < n; r++) {
        b[(size_t)r * REC] = labels[r];
        for (int c = 0; c < 3; c++)
            for (int p = 0; p < 1024; p++) b[(size_t)r * REC + 1 + c * 1024 + p] = (uint8_t)(r * 13 + c * 101 + p);
    }
    return b;
}

static void check_cifar_pixels(const nnz_dataset *d, int first_r, int at, int n) {
    for (int r = 0; r < n; r++)
        for (int y = 0; y < 32; y++)
            for (int x = 0; x < 32; x++)
                for (int c = 0; c < 3; c++) {
                    uint8_t want = (uint8_t)((first_r + r) * 13 + c * 101 + y * 32 + x);
                    assert_int_equal(d->images[(((size_t)(at + r) * 32 + y) * 32 + x) * 3 + c], want);
                }
}

static void test_cifar_good(void **state) {
    (void)state;
    char dir[256], sub[300];
    tu_make_temp_dir(dir, sizeof dir);
    uint8_t test_labels[3] = {9, 0, 4};
    uint8_t *t = make_cifar(3, test_labels);
    put(dir, "test_batch.bin", t, 3 * REC, false);
    nnz_dataset d;
    assert_int_equal(nnz_dataset_load(dir, false, &d), NNZ_OK);
    assert_int_equal(d.n, 3);
    assert_int_equal(d.h, 32);
    assert_int_equal(d.w, 32);
    assert_int_equal(d.c, 3);
    assert_int_equal(d.num_classes, 10);
    assert_memory_equal(d.labels, test_labels, 3);
    check_cifar_pixels(&d, 0, 0, 3);
    nnz_dataset_free(&d);

    /* training batches in the cifar-10-batches-bin/ subdirectory, 1 or 2 records each */
    snprintf(sub, sizeof sub, "%s/cifar-10-batches-bin", dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    uint8_t labels[2] = {7, 2};
    uint8_t *b = make_cifar(2, labels);
    for (int i = 1; i <= 5; i++) {
        char name[32];
        snprintf(name, sizeof name, "data_batch_%d.bin", i);
        put(sub, name, b, (size_t)(i % 2 + 1) * REC, false);
    }
    assert_int_equal(nnz_dataset_load(dir, true, &d), NNZ_OK);
    assert_int_equal(d.n, 2 + 1 + 2 + 1 + 2);
    uint8_t want_labels[8] = {7, 2, 7, 7, 2, 7, 7, 2};
    assert_memory_equal(d.labels, want_labels, 8);
    check_cifar_pixels(&d, 0, 0, 2);
    check_cifar_pixels(&d, 0, 2, 1);
    nnz_dataset_free(&d);
    free(t);
    free(b);
    remove_tree(dir);
}

static void test_cifar_bad(void **state) {
    (void)state;
    char dir[256];
    tu_make_temp_dir(dir, sizeof dir);
    uint8_t labels[2] = {1, 10};
    uint8_t *b = make_cifar(2, labels);
    for (int i = 1; i <= 5; i++) {
        char name[32];
        snprintf(name, sizeof name, "data_batch_%d.bin", i);
        put(dir, name, b, REC, false); /* first record only: valid */
    }
    nnz_dataset d;
    assert_int_equal(nnz_dataset_load(dir, true, &d), NNZ_OK);
    assert_int_equal(d.n, 5);
    nnz_dataset_free(&d);

    put(dir, "data_batch_3.bin", b, 2 * REC, false); /* label 10 */
    const char *w_label[] = {"data_batch_3.bin", "label 10", NULL};
    expect_load_error(dir, NNZ_ERR_FORMAT, w_label);
    put(dir, "data_batch_3.bin", b, REC + 100, false); /* not whole records */
    const char *w_len[] = {"data_batch_3.bin", "3073-byte records", NULL};
    expect_load_error(dir, NNZ_ERR_FORMAT, w_len);
    put(dir, "data_batch_3.bin", b, 0, false);
    const char *w_empty[] = {"data_batch_3.bin", "empty", NULL};
    expect_load_error(dir, NNZ_ERR_FORMAT, w_empty);
    char path[512];
    snprintf(path, sizeof path, "%s/data_batch_4.bin", dir);
    unlink(path);
    const char *w_missing[] = {"data_batch_4.bin", "missing", NULL};
    expect_load_error(dir, NNZ_ERR_IO, w_missing);

    /* direct parse: no room, and nothing written on failure */
    uint8_t img[2 * 3072], lbl[2] = {0xEE, 0xEE};
    int count = 0;
    assert_int_equal(nnz_cifar_parse(b, 2 * REC, "c", img, lbl, 1, &count), NNZ_ERR_FORMAT);
    assert_non_null(strstr(nnz_last_error(), "'c'"));
    assert_int_equal(nnz_cifar_parse(b, 2 * REC, "c", img, lbl, 2, &count), NNZ_ERR_FORMAT); /* label 10 */
    assert_int_equal(count, 0);
    assert_int_equal(lbl[0], 0xEE);
    assert_int_equal(nnz_cifar_parse(b, REC, "c", img, lbl, 2, &count), NNZ_OK);
    assert_int_equal(nnz_cifar_parse(b, REC, "c", img, lbl, 2, &count), NNZ_OK);
    assert_int_equal(count, 2);
    assert_int_equal(nnz_cifar_parse(b, REC, "c", img, lbl, 2, &count), NNZ_ERR_FORMAT);
    free(b);
    remove_tree(dir);
}

/* ---- the real data set ---- */

static void test_real_fashion_mnist(void **state) {
    (void)state;
    struct stat st;
    if (stat(NNZ_DEFAULT_DATA_DIR, &st) != 0) {
        print_message("skipping: %s is absent (install Debian's dataset-fashion-mnist)\n", NNZ_DEFAULT_DATA_DIR);
        skip();
    }
    const int want_n[2] = {10000, 60000};
    for (int train = 0; train < 2; train++) {
        nnz_dataset d;
        nnz_status s = nnz_dataset_load(NULL, train, &d); /* NULL = the default directory */
        if (s != NNZ_OK) fail_msg("%s", nnz_last_error());
        assert_int_equal(d.n, want_n[train]);
        assert_int_equal(d.h, 28);
        assert_int_equal(d.w, 28);
        assert_int_equal(d.c, 1);
        assert_int_equal(d.num_classes, 10);
        /* Fashion-MNIST is balanced: n/10 images per class */
        int per_class[10] = {0};
        for (int i = 0; i < d.n; i++) per_class[d.labels[i]]++;
        for (int k = 0; k < 10; k++) assert_int_equal(per_class[k], d.n / 10);
        /* images are not blank */
        uint64_t sum = 0;
        for (size_t i = 0; i < (size_t)d.n * 784; i++) sum += d.images[i];
        assert_true(sum > (uint64_t)d.n * 784 * 20);
        nnz_dataset_free(&d);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idx_good_raw_and_gz),   cmocka_unit_test(test_idx_truncated_message),
        cmocka_unit_test(test_idx_load_first),
        cmocka_unit_test(test_idx_hostile_files),     cmocka_unit_test(test_idx_parse_direct),
        cmocka_unit_test(test_missing_files_listed),  cmocka_unit_test(test_cifar_good),
        cmocka_unit_test(test_cifar_bad),             cmocka_unit_test(test_real_fashion_mnist),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
