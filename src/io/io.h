/* io: atomic file writes, bounded file reads, IDX and CIFAR-10 readers, the
 * batcher (normalized, shuffled, augmented float batches of a data set),
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
    char *tmp_path, *final_path, *dir_path; /* dir_path: made at open, so commit allocates nothing */
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
/* The first `bytes` bytes of a file (after decompression when gz), or the whole file when it is
 * shorter: *size tells. For reading a header, or the first records of a large data set. */
nnz_status nnz_read_prefix(const char *path, bool gz, size_t bytes, uint8_t **data, size_t *size);

/* ---- IDX (MNIST-style) ---- */
typedef struct {
    int ndim;
    int64_t dims[4];
    const uint8_t *data;  /* points into the parsed buffer: prod(dims) bytes */
    int64_t file_items;   /* dims[0] as the header declares it (nnz_idx_parse_first may keep fewer) */
} nnz_idx;
/* Parses an IDX file of unsigned bytes (type 0x08) held in buf[0..len). `name` is for messages. */
nnz_status nnz_idx_parse(const uint8_t *buf, size_t len, const char *name, nnz_idx *out);
/* The same on a prefix of the file: keeps the first min(max_items, declared) items, which
 * buf must hold in full; bytes past them are not looked at. max_items >= 1. */
nnz_status nnz_idx_parse_first(const uint8_t *buf, size_t len, const char *name, int64_t max_items, nnz_idx *out);
#define NNZ_IDX_MAX_HEADER 20
/* From a header (hdr[0..len), at least its 4 + 4 ndim bytes): the bytes that the header and
 * the first min(max_items, declared) items take (max_items < 0: all). FORMAT error on a bad header. */
nnz_status nnz_idx_first_bytes(const uint8_t *hdr, size_t len, const char *name, int64_t max_items, size_t *bytes);

/* ---- CIFAR-10 binary batches: records of 1 label byte + 3072 pixel bytes (CHW) ---- */
/* Appends the records of buf[0..len) to images (n,32,32,3 NHWC) and labels, which have room for cap records.
 * *count is the number of records already there on entry and is advanced; nothing is written unless
 * the whole buffer is valid (length a multiple of 3073, every label < 10, enough room). */
nnz_status nnz_cifar_parse(const uint8_t *buf, size_t len, const char *name, uint8_t *images, uint8_t *labels,
                           int cap, int *count);

/* nnz_dataset_load / nnz_dataset_free are public (nnz.h). */

/* ---- batches from an nnz_dataset (batcher.c) ----
 *
 * Normalization: x = (pixel/255 - mean[c]) / std[c], with fixed per-channel
 * constants chosen by the channel count, so training, evaluation and every
 * later verb agree without storing them:
 *   1 channel  (Fashion-MNIST): mean 0.2860, std 0.3530 (the Fashion-MNIST
 *              training set's statistics; tests/test_train.c recomputes them);
 *   3 channels (CIFAR-10):      mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616);
 *   otherwise:                  mean 0.5, std 0.5.
 *
 * Order: epoch e visits the first `limit` images in the permutation drawn by
 * nnz_rng_shuffle from nnz_rng_make(seed ^ NNZ_DATA_SHUFFLE_SALT, e), so the
 * order of any epoch is a pure function of (seed, e): a resumed run recomputes
 * it and skips the batches already done. Training drops the last incomplete
 * batch (it would give batch norm a tiny, noisy batch); evaluation keeps it.
 *
 * Augmentation (optional): random crop with 2-pixel zero padding (pixel value
 * 0 before normalization, as torchvision's RandomCrop(padding=2)) and a
 * horizontal flip with probability 1/2, drawn from
 * nnz_rng_make(nnz_rng_hash(seed ^ NNZ_DATA_AUGMENT_SALT, e), image index):
 * reproducible per (epoch, image), independent of batch size and threads. */
#define NNZ_DATA_SHUFFLE_SALT 0x53485546464C4531ull
#define NNZ_DATA_AUGMENT_SALT 0x4155474D454E5431ull
#define NNZ_DATA_PAD 2

typedef struct {
    const nnz_dataset *data;
    int n;               /* images used: min(limit, data->n) */
    int batch;
    bool augment, shuffle;
    uint64_t seed;
    int epoch;           /* the epoch `order` was drawn for */
    int32_t *order;      /* (n) image indices of the current epoch */
    float mean[4], std[4];
} nnz_batcher;

/* limit 0 = all images. shuffle=false visits images in file order (evaluation). */
nnz_status nnz_batcher_init(nnz_batcher *b, const nnz_dataset *d, int limit, int batch, bool shuffle,
                            bool augment, uint64_t seed);
void nnz_batcher_free(nnz_batcher *b);
/* Draws the order of epoch e (cheap; call at each epoch start, or on resume). */
void nnz_batcher_set_epoch(nnz_batcher *b, int epoch);
/* Training batches per epoch: floor(n / batch), at least 1 when n > 0. */
int64_t nnz_batcher_train_steps(const nnz_batcher *b);
/* Evaluation batches: ceil(n / batch). */
int64_t nnz_batcher_eval_steps(const nnz_batcher *b);
/* Batch i of the current epoch: x (count, h, w, c) normalized floats, y (count)
 * labels; returns count (0 past the end). x must hold batch*h*w*c floats. */
int nnz_batcher_fill(const nnz_batcher *b, int64_t i, float *x, uint8_t *y);
/* The normalization constants described above, for c channels (c <= 4). */
void nnz_data_norm(int c, float *mean, float *std);
/* Normalizes (and, when augment, crops/flips with the rng of (seed, epoch, index))
 * one image (h,w,c bytes) into out (h,w,c floats). */
void nnz_data_image(const nnz_dataset *d, int index, const float *mean, const float *std, bool augment,
                    uint64_t seed, int epoch, float *out);

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

/* ---- .nnz compressed models (docs/FORMAT.md, ".nnz compressed models") ----
 * Version 2 (written): a 64-byte header, the zlib-compressed architecture JSON, compact
 * variable-length tensor records (front-coded names, LEB128 numbers; offsets and sizes
 * derived), then each tensor's payload (4-byte aligned; 64 from 4 KiB), each with its own
 * CRC32. Version 1 (read; written only on request): the JSON as is, fixed 256-byte records,
 * 64-byte-aligned payloads. The container knows the payload's section sizes (codebook, code
 * lengths, streams), not the codecs. */
#define NNZ_NF_MAGIC "NNZPACK1"
#define NNZ_NF_VERSION 2u
#define NNZ_NF_V2_BIG 4096          /* v2: payloads of this many bytes or more are 64-byte aligned */
#define NNZ_NF_V2_RECORD_MAX 256    /* v2: room for the longest record (2 + 95 name + 2 + 4 dims of <= 5 + 4 CRC + 3 + 1 + 10 + 2 * 21 bytes) */
#define NNZ_NF_HEADER_BYTES 64
#define NNZ_NF_RECORD_BYTES 256
#define NNZ_NF_NAME_MAX 96
#define NNZ_NF_ALIGN 64
#define NNZ_NF_MAX_TENSORS 65536
#define NNZ_NF_MAX_ARCH_BYTES ((size_t)16 << 20)
#define NNZ_NF_MAX_NUMEL ((uint64_t)1 << 34)
#define NNZ_NF_MAX_CODE_BITS 12     /* longest Huffman code the format allows */

enum { NNZ_CODEC_RAW_F32 = 0, NNZ_CODEC_DENSE = 1, NNZ_CODEC_SPARSE = 2 };
/* How a symbol stream is stored: nothing (no symbols), one symbol repeated (no bits), Huffman. */
enum { NNZ_STREAM_EMPTY = 0, NNZ_STREAM_CONST = 1, NNZ_STREAM_HUFFMAN = 2 };

typedef struct {
    char name[NNZ_NF_NAME_MAX];      /* NUL-terminated */
    uint8_t codec;                   /* NNZ_CODEC_* */
    uint8_t ndim;                    /* 0..4 */
    uint8_t bits;                    /* k-means bits (1..8); 0 for raw */
    uint8_t gap_bits;                /* sparse: 1..8; else 0 */
    uint8_t idx_mode, gap_mode;      /* NNZ_STREAM_* */
    uint8_t idx_const, gap_const;    /* the symbol of a CONST stream */
    uint32_t codebook_size;          /* shared values (<= 2^bits); 0 for raw */
    uint32_t crc32;                  /* zlib crc32 of the payload */
    int64_t shape[4];
    uint64_t numel;                  /* product of shape (1 for ndim 0) */
    uint64_t nnz;                    /* coded weights: numel (dense), nonzeros (sparse), 0 raw */
    uint64_t n_gaps;                 /* gap symbols (nonzeros + fillers); sparse only */
    uint64_t payload_offset, payload_bytes;
    uint32_t idx_stream_bytes[4], gap_stream_bytes[4];
    const uint8_t *payload;          /* reader: into the file buffer; writer: the caller's bytes */
} nnz_nf_tensor;

/* Payload section sizes implied by a record (docs/FORMAT.md): codebook floats, index code
 * lengths (4 bits per symbol), gap code lengths, index streams, gap streams. */
typedef struct { size_t codebook, idx_lengths, gap_lengths, idx_streams, gap_streams, total; } nnz_nf_sections;
/* FORMAT error (naming file and tensor) when the record is inconsistent. */
nnz_status nnz_nf_record_sections(const nnz_nf_tensor *t, const char *file, nnz_nf_sections *out);

typedef struct {
    uint8_t *buf;       /* owned when loaded from a file */
    size_t size;
    char *arch_json;    /* NUL-terminated copy */
    int n;
    nnz_nf_tensor *tensors;
} nnz_nf_file;
/* Parses buf[0..size) (borrowed): header, JSON, records, payload bounds, alignment and every
 * payload's CRC32. */
nnz_status nnz_nf_parse(const uint8_t *buf, size_t size, const char *name, nnz_nf_file *out);
/* verify_crc false skips the checksums (the fuzz target, to reach the checks behind them). */
nnz_status nnz_nf_parse_ex(const uint8_t *buf, size_t size, const char *name, bool verify_crc, nnz_nf_file *out);
nnz_status nnz_nf_load(const char *path, nnz_nf_file *out);
const nnz_nf_tensor *nnz_nf_find(const nnz_nf_file *f, const char *name);
void nnz_nf_free(nnz_nf_file *f);
/* Writes a .nnz file (version 2) atomically; fills each record's payload_offset and crc32 from
 * its payload. */
nnz_status nnz_nf_write(const char *path, const char *arch_json, nnz_nf_tensor *tensors, int n);
/* The same in a given version (1 or 2): the tests keep version 1 files readable. */
nnz_status nnz_nf_write_version(const char *path, const char *arch_json, nnz_nf_tensor *tensors, int n,
                                unsigned version);

#endif
