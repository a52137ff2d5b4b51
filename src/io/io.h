/* io: atomic file writes, bounded file reads, IDX and CIFAR-10 readers,
 * safetensors reading and writing. Every reader is bounds-checked: a corrupt,
 * truncated or hostile file is an nnz_status with a message, never a crash or
 * an over-read; declared sizes are checked against the file size before any
 * allocation. Every writer is atomic (temp file + fsync + rename + fsync dir). */
#ifndef NNZ_IO_H
#define NNZ_IO_H

#include "base/base.h"

/* ---- atomic writes ---- */
typedef struct {
    FILE *f;
    char *tmp_path, *final_path;
    bool failed;
} nnz_atomic_file;
nnz_status nnz_atomic_open(nnz_atomic_file *af, const char *path);
nnz_status nnz_atomic_write(nnz_atomic_file *af, const void *data, size_t len);
/* Flushes, fsyncs, renames over the final path, fsyncs the directory. On any
 * failure the temp file is removed and the old file (if any) is untouched. */
nnz_status nnz_atomic_commit(nnz_atomic_file *af);
void nnz_atomic_abort(nnz_atomic_file *af);

/* Reads a whole file (transparently gunzipping when gz is true) of at most
 * max_bytes bytes after decompression. *data is nnz_alloc'd; free with nnz_free. */
nnz_status nnz_read_file(const char *path, bool gz, size_t max_bytes, uint8_t **data, size_t *size);
#define NNZ_MAX_FILE_BYTES ((size_t)4 << 30)

/* ---- IDX (MNIST-style) ---- */
typedef struct {
    int ndim;
    int64_t dims[4];
    const uint8_t *data;  /* points into the parsed buffer: prod(dims) bytes */
} nnz_idx;
/* Parses an IDX file of unsigned bytes (type 0x08) held in buf[0..len). `name` is for messages. */
nnz_status nnz_idx_parse(const uint8_t *buf, size_t len, const char *name, nnz_idx *out);

/* ---- CIFAR-10 binary batches: records of 1 label byte + 3072 pixel bytes (CHW) ---- */
/* Appends the records of buf[0..len) to images (n,32,32,3 NHWC) and labels, which have room for cap records.
 * *count is the number of records already there on entry and is advanced; nothing is written unless
 * the whole buffer is valid (length a multiple of 3073, every label < 10, enough room). */
nnz_status nnz_cifar_parse(const uint8_t *buf, size_t len, const char *name, uint8_t *images, uint8_t *labels,
                           int cap, int *count);

/* nnz_dataset_load / nnz_dataset_free are public (nnz.h). */

/* ---- safetensors ----
 * 8-byte little-endian header length, a JSON header {name: {dtype, shape,
 * data_offsets}, "__metadata__": {string: string}}, then the data. */
typedef struct {
    char name[128];
    char dtype[8];       /* "F32", "BF16", "U8", "I32", "I64", ... */
    int ndim;
    int64_t shape[NNZ_MAX_DIMS];
    size_t nbytes;
    const void *data;    /* borrowed: into the file buffer (reader) or the caller's memory (writer).
                          * The data section starts 8-byte aligned in files nnz writes, but tensors are
                          * packed back to back (safetensors allows no gaps), so data may be unaligned
                          * for its type: copy it out with memcpy. */
} nnz_st_tensor;

/* Bytes per element of a safetensors dtype name ("F32" -> 4), 0 if unknown. */
size_t nnz_st_dtype_size(const char *dtype);
#define NNZ_ST_MAX_HEADER ((size_t)100 << 20)

typedef struct {
    int n, cap;
    nnz_st_tensor *tensors;
    int n_meta, cap_meta;
    char **meta_keys, **meta_values;
} nnz_st_writer;
void nnz_st_writer_init(nnz_st_writer *w);
/* The data is not copied: it must stay valid until nnz_st_write. */
nnz_status nnz_st_add(nnz_st_writer *w, const char *name, const char *dtype, int ndim, const int64_t *shape,
                      const void *data);
nnz_status nnz_st_set_meta(nnz_st_writer *w, const char *key, const char *value);
nnz_status nnz_st_write(const nnz_st_writer *w, const char *path); /* atomic */
void nnz_st_writer_free(nnz_st_writer *w);

typedef struct {
    uint8_t *buf;        /* owned when loaded from a file */
    size_t size;
    int n;
    nnz_st_tensor *tensors;
    int n_meta;
    char **meta_keys, **meta_values;
} nnz_st_file;
/* Parses buf[0..size) (borrowed; the tensors point into it). */
nnz_status nnz_st_parse(const uint8_t *buf, size_t size, const char *name, nnz_st_file *out);
nnz_status nnz_st_load(const char *path, nnz_st_file *out);
const nnz_st_tensor *nnz_st_find(const nnz_st_file *f, const char *name);
const char *nnz_st_meta(const nnz_st_file *f, const char *key);
void nnz_st_free(nnz_st_file *f);

#endif
