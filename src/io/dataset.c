/* nnz_dataset_load: finds a split of an MNIST-style IDX data set or of
 * CIFAR-10 binary batches in a directory, by file name, and loads it as
 * n x h x w x c bytes (NHWC) plus one label byte per image. */
#include "io/io.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define PATH_CAP 4096
#define CIFAR_RECORD 3073
#define CIFAR_TRAIN_BATCHES 5

static bool is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static nnz_status join(char *out, const char *dir, const char *sub, const char *name) {
    int n = sub ? snprintf(out, PATH_CAP, "%s/%s/%s", dir, sub, name) : snprintf(out, PATH_CAP, "%s/%s", dir, name);
    if (n < 0 || n >= PATH_CAP) return nnz_fail(NNZ_ERR_INVALID_ARG, "data path '%s' is too long", dir);
    return NNZ_OK;
}

/* Finds dir/base or dir/base.gz; *found = false when neither exists. */
static nnz_status find_idx(const char *dir, const char *base, char *path, bool *gz, bool *found) {
    char name[64];
    *found = false;
    for (int z = 0; z < 2 && !*found; z++) {
        snprintf(name, sizeof name, "%s%s", base, z ? ".gz" : "");
        NNZ_TRY(join(path, dir, NULL, name));
        if (is_file(path)) { *found = true; *gz = z == 1; }
    }
    return NNZ_OK;
}

/* Reads and validates one IDX file, or only its first `limit` items (limit <= 0: all); on
 * success *buf holds what was read and *idx points into it. A prefix is read without
 * decompressing the rest: the first images of a 47 MB gzip'd set cost a few kB. */
static nnz_status load_idx(const char *path, bool gz, int64_t limit, uint8_t **buf, nnz_idx *idx) {
    size_t size;
    *buf = NULL;
    if (limit > 0) {
        uint8_t *hdr;
        size_t need;
        NNZ_TRY(nnz_read_prefix(path, gz, NNZ_IDX_MAX_HEADER, &hdr, &size));
        nnz_status s = nnz_idx_first_bytes(hdr, size, path, limit, &need);
        nnz_free(hdr);
        NNZ_TRY(s);
        if (need > nnz_size_limit())
            return nnz_fail(NNZ_ERR_FORMAT, "the first %lld items of '%s' take %zu bytes, over the size limit of %zu "
                            "bytes; if the file is genuine, raise NNZ_SIZE_LIMIT", (long long)limit, path, need,
                            nnz_size_limit());
        NNZ_TRY(nnz_read_prefix(path, gz, need, buf, &size));
    } else {
        NNZ_TRY(nnz_read_file(path, gz, nnz_size_limit(), buf, &size));
    }
    nnz_status s = limit > 0 ? nnz_idx_parse_first(*buf, size, path, limit, idx) : nnz_idx_parse(*buf, size, path, idx);
    if (s != NNZ_OK) { nnz_free(*buf); *buf = NULL; }
    return s;
}

static nnz_status load_mnist(const char *img_path, bool img_gz, const char *lbl_path, bool lbl_gz, int limit,
                             nnz_dataset *out) {
    uint8_t *ibuf = NULL, *lbuf = NULL;
    nnz_idx im, lb;
    NNZ_TRY(load_idx(img_path, img_gz, limit, &ibuf, &im));
    nnz_status s = NNZ_OK;
    if (im.ndim != 3 && im.ndim != 4)
        s = nnz_fail(NNZ_ERR_FORMAT, "IDX image file '%s' has %d dimensions; expected 3 (n, h, w) or 4 (n, h, w, c)",
                     img_path, im.ndim);
    for (int i = 0; s == NNZ_OK && i < im.ndim; i++)
        if (im.dims[i] > INT_MAX)
            s = nnz_fail(NNZ_ERR_UNSUPPORTED, "IDX image file '%s': dimension %d is %lld, over nnz's limit of %d",
                         img_path, i, (long long)im.dims[i], INT_MAX);
    /* the labels are read whole (one byte an image): the class count is that of the whole split */
    if (s == NNZ_OK) s = load_idx(lbl_path, lbl_gz, 0, &lbuf, &lb);
    if (s == NNZ_OK && lb.ndim != 1)
        s = nnz_fail(NNZ_ERR_FORMAT, "IDX label file '%s' has %d dimensions; expected 1", lbl_path, lb.ndim);
    if (s == NNZ_OK && lb.file_items != im.file_items)
        s = nnz_fail(NNZ_ERR_FORMAT, "'%s' holds %lld images but '%s' holds %lld labels; the files do not belong "
                     "together", img_path, (long long)im.file_items, lbl_path, (long long)lb.file_items);
    if (s != NNZ_OK) {
        nnz_free(ibuf);
        nnz_free(lbuf);
        return s;
    }
    int n = (int)im.dims[0];
    size_t pixels = (size_t)im.dims[0] * (size_t)im.dims[1] * (size_t)im.dims[2] * (size_t)(im.ndim == 4 ? im.dims[3] : 1);
    /* Keep the file buffers, with the data moved to their start: no second copy. */
    memmove(ibuf, im.data, pixels);
    int max_label = 0;
    for (int64_t i = 0; i < lb.dims[0]; i++)
        if (lb.data[i] > max_label) max_label = lb.data[i];
    memmove(lbuf, lb.data, (size_t)n);
    out->n = n;
    out->h = (int)im.dims[1];
    out->w = (int)im.dims[2];
    out->c = im.ndim == 4 ? (int)im.dims[3] : 1;
    out->num_classes = max_label + 1;
    out->images = ibuf;
    out->labels = lbuf;
    return NNZ_OK;
}

static nnz_status load_cifar(char paths[][PATH_CAP], int nfiles, nnz_dataset *out) {
    size_t records = 0;
    for (int i = 0; i < nfiles; i++) {
        struct stat st;
        if (stat(paths[i], &st) != 0) return nnz_fail(NNZ_ERR_IO, "cannot open '%s': %s", paths[i], strerror(errno));
        records += (size_t)st.st_size / CIFAR_RECORD;
        if (records > INT_MAX)
            return nnz_fail(NNZ_ERR_UNSUPPORTED, "CIFAR-10 batches hold over %d records, nnz's limit", INT_MAX);
    }
    if (records == 0)
        return nnz_fail(NNZ_ERR_FORMAT, "CIFAR-10 batch '%s' holds no complete %d-byte record; re-download it",
                        paths[0], CIFAR_RECORD);
    uint8_t *images = nnz_alloc(records * (CIFAR_RECORD - 1), "CIFAR-10 images");
    uint8_t *labels = nnz_alloc(records, "CIFAR-10 labels");
    nnz_status s = images && labels ? NNZ_OK : NNZ_ERR_NOMEM;
    int count = 0;
    for (int i = 0; s == NNZ_OK && i < nfiles; i++) {
        uint8_t *buf;
        size_t size;
        s = nnz_read_file(paths[i], false, nnz_size_limit(), &buf, &size);
        if (s != NNZ_OK) break;
        s = nnz_cifar_parse(buf, size, paths[i], images, labels, (int)records, &count);
        nnz_free(buf);
    }
    if (s == NNZ_OK && (size_t)count != records)
        s = nnz_fail(NNZ_ERR_FORMAT, "CIFAR-10 batches changed while loading (%d records read, %zu expected)",
                     count, records);
    if (s != NNZ_OK) {
        nnz_free(images);
        nnz_free(labels);
        return s;
    }
    out->n = count;
    out->h = out->w = 32;
    out->c = 3;
    out->num_classes = 10;
    out->images = images;
    out->labels = labels;
    return NNZ_OK;
}

/* Looks for the CIFAR-10 files of the split in dir and dir/cifar-10-batches-bin. */
static nnz_status find_cifar(const char *dir, bool train, char paths[][PATH_CAP], int *nfiles) {
    static const char *const subs[2] = {NULL, "cifar-10-batches-bin"};
    *nfiles = 0;
    for (int k = 0; k < 2; k++) {
        char name[32];
        snprintf(name, sizeof name, "%s", train ? "data_batch_1.bin" : "test_batch.bin");
        NNZ_TRY(join(paths[0], dir, subs[k], name));
        if (!is_file(paths[0])) continue;
        int want = train ? CIFAR_TRAIN_BATCHES : 1;
        for (int b = 2; b <= want; b++) {
            snprintf(name, sizeof name, "data_batch_%d.bin", b);
            NNZ_TRY(join(paths[b - 1], dir, subs[k], name));
            if (!is_file(paths[b - 1]))
                return nnz_fail(NNZ_ERR_IO, "CIFAR-10 training batch '%s' is missing (found data_batch_1.bin next "
                                "to it); re-download the data set", paths[b - 1]);
        }
        *nfiles = want;
        return NNZ_OK;
    }
    return NNZ_OK;
}

nnz_status nnz_dataset_load(const char *dir, bool train, nnz_dataset *out) {
    return nnz_dataset_load_first(dir, train, 0, out);
}

nnz_status nnz_dataset_load_first(const char *dir, bool train, int limit, nnz_dataset *out) {
    memset(out, 0, sizeof *out);
    if (!dir || !*dir) dir = NNZ_DEFAULT_DATA_DIR;
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return nnz_fail(NNZ_ERR_IO, "data directory '%s' does not exist%s; pass --data DIR", dir,
                        strcmp(dir, NNZ_DEFAULT_DATA_DIR) == 0 ? " (install Debian's dataset-fashion-mnist)" : "");
    const char *prefix = train ? "train" : "t10k";
    char img_base[48], lbl_base[48];
    snprintf(img_base, sizeof img_base, "%s-images-idx3-ubyte", prefix);
    snprintf(lbl_base, sizeof lbl_base, "%s-labels-idx1-ubyte", prefix);
    char img_path[PATH_CAP], lbl_path[PATH_CAP];
    bool img_gz = false, lbl_gz = false, have_img, have_lbl;
    NNZ_TRY(find_idx(dir, img_base, img_path, &img_gz, &have_img));
    NNZ_TRY(find_idx(dir, lbl_base, lbl_path, &lbl_gz, &have_lbl));
    if (have_img && have_lbl) return load_mnist(img_path, img_gz, lbl_path, lbl_gz, limit, out);
    if (have_img || have_lbl)
        return nnz_fail(NNZ_ERR_IO, "'%s' has %s but not %s[.gz]; re-download the data set", dir,
                        have_img ? img_base : lbl_base, have_img ? lbl_base : img_base);

    char(*paths)[PATH_CAP] = nnz_alloc(sizeof(char[CIFAR_TRAIN_BATCHES][PATH_CAP]), "CIFAR-10 paths");
    if (!paths) return NNZ_ERR_NOMEM;
    int nfiles;
    nnz_status s = find_cifar(dir, train, paths, &nfiles);
    if (s == NNZ_OK && nfiles > 0) s = load_cifar(paths, nfiles, out);
    if (s == NNZ_OK && nfiles > 0) s = nnz_dataset_trim(out, limit); /* CIFAR is small: read, then trim */
    nnz_free(paths);
    if (s != NNZ_OK || nfiles > 0) return s;

    return nnz_fail(NNZ_ERR_IO, "no %s data found in '%s': looked for %s + %s (MNIST-style IDX, optionally .gz) and "
                    "for %s (CIFAR-10 binary, also under cifar-10-batches-bin/); pass --data DIR",
                    train ? "training" : "test", dir, img_base, lbl_base,
                    train ? "data_batch_1.bin..data_batch_5.bin" : "test_batch.bin");
}

/* From an IDX file's header: its item count, and the bytes that load_idx holds for its
 * first `limit` items (limit <= 0: all). */
static nnz_status idx_held_bytes(const char *path, bool gz, int64_t limit, size_t *bytes, int64_t *items) {
    uint8_t *hdr;
    size_t len;
    NNZ_TRY(nnz_read_prefix(path, gz, NNZ_IDX_MAX_HEADER, &hdr, &len));
    nnz_status s = nnz_idx_first_bytes(hdr, len, path, limit > 0 ? limit : -1, bytes);
    if (s == NNZ_OK) *items = (int64_t)hdr[4] << 24 | (int64_t)hdr[5] << 16 | hdr[6] << 8 | hdr[7];
    nnz_free(hdr);
    *bytes += 64; /* the file buffer: one byte past, 64-byte rounding */
    return s;
}

nnz_status nnz_dataset_bytes(const char *dir, bool train, int limit, size_t *bytes, int *n) {
    *bytes = 0;
    if (n) *n = 0;
    if (!dir || !*dir) dir = NNZ_DEFAULT_DATA_DIR;
    const char *prefix = train ? "train" : "t10k";
    char img_base[48], lbl_base[48], img_path[PATH_CAP], lbl_path[PATH_CAP];
    snprintf(img_base, sizeof img_base, "%s-images-idx3-ubyte", prefix);
    snprintf(lbl_base, sizeof lbl_base, "%s-labels-idx1-ubyte", prefix);
    bool img_gz = false, lbl_gz = false, have_img = false, have_lbl = false;
    NNZ_TRY(find_idx(dir, img_base, img_path, &img_gz, &have_img));
    NNZ_TRY(find_idx(dir, lbl_base, lbl_path, &lbl_gz, &have_lbl));
    if (have_img && have_lbl) {
        size_t ib, lb;
        int64_t ni, nl;
        NNZ_TRY(idx_held_bytes(img_path, img_gz, limit, &ib, &ni));
        NNZ_TRY(idx_held_bytes(lbl_path, lbl_gz, 0, &lb, &nl)); /* labels are read whole */
        *bytes = ib + lb;
        if (n) *n = ni > INT_MAX ? INT_MAX : (int)ni;
        return NNZ_OK;
    }
    char(*paths)[PATH_CAP] = nnz_alloc(sizeof(char[CIFAR_TRAIN_BATCHES][PATH_CAP]), "CIFAR-10 paths");
    if (!paths) return NNZ_ERR_NOMEM;
    int nfiles = 0;
    nnz_status s = have_img || have_lbl ? NNZ_ERR_IO : find_cifar(dir, train, paths, &nfiles);
    size_t records = 0, largest = 0;
    for (int i = 0; s == NNZ_OK && i < nfiles; i++) {
        struct stat st;
        if (stat(paths[i], &st) != 0) s = nnz_fail(NNZ_ERR_IO, "cannot open '%s': %s", paths[i], strerror(errno));
        else {
            records += (size_t)st.st_size / CIFAR_RECORD;
            if ((size_t)st.st_size > largest) largest = (size_t)st.st_size;
        }
    }
    nnz_free(paths);
    if (s == NNZ_OK && nfiles > 0) {
        *bytes = records * CIFAR_RECORD + largest + 3 * 64; /* images + labels + the file being read */
        if (n) *n = records > INT_MAX ? INT_MAX : (int)records;
        return NNZ_OK;
    }
    if (s != NNZ_OK && s != NNZ_ERR_IO) return s;
    nnz_dataset d; /* no data found: the loader's message */
    s = nnz_dataset_load(dir, train, &d);
    if (s == NNZ_OK) { /* cannot happen: the loader looks where this looked */
        nnz_dataset_free(&d);
        return nnz_fail(NNZ_ERR_IO, "the data set in '%s' changed while it was being looked at", dir);
    }
    return s;
}

nnz_status nnz_dataset_trim(nnz_dataset *d, int n) {
    if (!d || n <= 0 || n >= d->n) return NNZ_OK;
    const size_t img = (size_t)d->h * d->w * d->c;
    uint8_t *images = nnz_alloc((size_t)n * img, "the kept images");
    uint8_t *labels = images ? nnz_alloc((size_t)n, "the kept labels") : NULL;
    if (!labels) {
        nnz_free(images);
        return NNZ_ERR_NOMEM;
    }
    memcpy(images, d->images, (size_t)n * img);
    memcpy(labels, d->labels, (size_t)n);
    nnz_free(d->images);
    nnz_free(d->labels);
    d->images = images;
    d->labels = labels;
    d->n = n;
    return NNZ_OK;
}

void nnz_dataset_free(nnz_dataset *d) {
    if (!d) return;
    nnz_free(d->images);
    nnz_free(d->labels);
    memset(d, 0, sizeof *d);
}
