/* pack: Deep Compression's codecs and the packer.
 *
 *  - k-means weight sharing (kmeans.c): per tensor, at most 2^bits shared values
 *    (the codebook), linear initialization over [min, max], Lloyd iterations in 1-D
 *    over the sorted values; deterministic.
 *  - canonical, length-limited Huffman codes (huffman.c): lengths by package-merge
 *    (optimal under the limit), MSB-first canonical codes, a table-driven decoder over
 *    FOUR interleaved bitstreams (as zstd's HUF_decompress4X) with a bit-by-bit
 *    reference decoder as its oracle.
 *  - the tensor codec (codec.c): a weight tensor becomes a codebook, Huffman-coded
 *    codebook indices and, for pruned tensors, Huffman-coded relative position gaps
 *    with filler entries (docs/FORMAT.md, ".nnz compressed models").
 *  - the packer (packer.c): checkpoint -> .nnz file, and .nnz -> model.
 */
#ifndef NNZ_PACK_H
#define NNZ_PACK_H

#include "io/io.h"

/* ===================== k-means weight sharing ===================== */

#define NNZ_KMEANS_MAX_K 256
typedef struct {
    int k;                               /* number of shared values, 1..256 (0 for no values) */
    float value[NNZ_KMEANS_MAX_K];       /* ascending, distinct */
} nnz_codebook;

/* Clusters x[0..n) into at most 2^bits (bits 1..8) shared values and writes the index of
 * each value's nearest centroid (ties: the lower one) into idx[0..n). Linear init: centroid
 * j = min + (max - min) * j / (K-1); then Lloyd iterations (at most max_iters, stops when no
 * cluster boundary moves). A centroid whose cluster is empty is moved: the cluster with the
 * largest squared error is split at its mean (so a few far-out values, which stretch the linear
 * init, do not leave most centroids unused); centroids that end with no member are dropped, so
 * cb->k <= 2^bits.
 * When x holds at most 2^bits distinct values the codebook is exactly those values (lossless).
 * NNZ_ERR_NUMERIC on NaN/Inf (naming `what`). Deterministic. */
nnz_status nnz_kmeans_quantize(const float *x, int64_t n, int bits, int max_iters, const char *what,
                               nnz_codebook *cb, uint8_t *idx);

/* ===================== Huffman codes ===================== */

#define NNZ_HUF_MAX_BITS 12       /* hard limit of the format and the decoder */
#define NNZ_HUF_DEFAULT_BITS 11   /* what the packer asks for (zstd's default) */
#define NNZ_HUF_MAX_SYMBOLS 256

/* Optimal code lengths under max_bits (1..12) by package-merge, for the nsym (<= 256)
 * frequencies; unused symbols (freq 0) get length 0. With one used symbol it gets length 1;
 * with two or more the lengths satisfy Kraft's equality (a complete code).
 * INVALID_ARG when more than 2^max_bits symbols are used. */
nnz_status nnz_huf_lengths(const uint64_t *freq, int nsym, int max_bits, uint8_t *lengths);

typedef struct {
    uint16_t code[NNZ_HUF_MAX_SYMBOLS];  /* canonical code, MSB-first, len bits */
    uint8_t len[NNZ_HUF_MAX_SYMBOLS];
} nnz_huf_encoder;
/* Canonical codes from lengths: shorter codes first, within a length ascending symbols. */
void nnz_huf_encoder_init(nnz_huf_encoder *e, const uint8_t *lengths, int nsym);

typedef struct {
    int table_log;                            /* the longest code length, 1..12 */
    uint16_t entry[1 << NNZ_HUF_MAX_BITS];    /* (symbol << 4) | length, indexed by the next table_log bits */
    uint8_t len[NNZ_HUF_MAX_SYMBOLS];
    int nsym;
} nnz_huf_decoder;
/* FORMAT error (naming `what`) unless the lengths (each 0..12) form a complete prefix code
 * of at least two symbols. */
nnz_status nnz_huf_decoder_init(nnz_huf_decoder *d, const uint8_t *lengths, int nsym, const char *what);

/* Four streams: symbols [0, q), [q, 2q), [2q, 3q), [3q, n) with q = ceil(n/4) go to streams
 * 0..3, each MSB-first, zero-padded to a whole byte, back to back in out. */
static inline int64_t nnz_huf_quarter(int64_t n) { return (n + 3) / 4; }
/* Exact encoded size of the four streams. */
void nnz_huf_sizes4(const nnz_huf_encoder *e, const uint8_t *sym, int64_t n, uint32_t sizes[4]);
/* Writes the streams (sum of nnz_huf_sizes4 bytes) into out. Every symbol must have a code. */
void nnz_huf_encode4(const nnz_huf_encoder *e, const uint8_t *sym, int64_t n, uint8_t *out);
/* Decodes n symbols from the four streams (sizes[k] bytes each, back to back in in); FORMAT
 * error when a stream is too short or is not consumed to its last byte. Never reads outside
 * in[0, sum sizes). The fast path: a 64-bit big-endian load per stream gives four symbols. */
nnz_status nnz_huf_decode4(const nnz_huf_decoder *d, const uint8_t *in, const uint32_t sizes[4], uint8_t *out,
                           int64_t n, const char *what);
/* The same, producing codebook[symbol] as floats (no symbol buffer): dense tensors. */
nnz_status nnz_huf_decode4_f32(const nnz_huf_decoder *d, const uint8_t *in, const uint32_t sizes[4],
                               const float *codebook, float *out, int64_t n, const char *what);
/* The oracle: bit by bit, walking the canonical code. Same contract as nnz_huf_decode4. */
nnz_status nnz_huf_decode4_ref(const nnz_huf_decoder *d, const uint8_t *in, const uint32_t sizes[4], uint8_t *out,
                               int64_t n, const char *what);

/* ===================== tensor codec ===================== */

/* Gap symbols: a nonzero preceded by d zeros (since the previous nonzero, or the start) is
 * written as floor(d / S) filler symbols S = 2^gap_bits - 1 (each: "skip S positions, no
 * weight") and then the symbol d mod S (< S). Trailing zeros are implied by numel. */
#define NNZ_GAP_MAX_BITS 8

typedef struct {
    nnz_nf_tensor rec;     /* the container record (name, shape, codec, sizes, ...); rec.payload = payload */
    uint8_t *payload;      /* nnz_alloc'd, rec.payload_bytes bytes */
    double sq_error;       /* sum of squared quantization errors */
} nnz_packed;

typedef enum { NNZ_LAYOUT_AUTO = 0, NNZ_LAYOUT_DENSE, NNZ_LAYOUT_SPARSE } nnz_layout;

/* Encodes w[0..numel) (shape/ndim for the record) with k-means to `bits` (1..8) and Huffman
 * codes. AUTO: sparse (gaps + indices of the nonzeros) when w has exact zeros and that is
 * smaller, else dense; but when only one of the two reproduces every value of w exactly, that
 * one (an already-quantized tensor, e.g. after codebook training, packs without loss: 2^bits
 * nonzero values and zeros fit the sparse codebook, not the dense one). bits 0 stores raw
 * fp32. Free with nnz_packed_free. */
nnz_status nnz_pack_tensor(const char *name, const float *w, int ndim, const int64_t *shape, int bits,
                           nnz_layout layout, nnz_packed *out);
void nnz_packed_free(nnz_packed *p);

/* Bytes of scratch nnz_unpack_tensor needs for record t (sparse tensors: the gap symbols and
 * the nonzeros' codebook indices). */
size_t nnz_unpack_scratch_bytes(const nnz_nf_tensor *t);
/* Decodes record t (whose payload was checked by nnz_nf_parse) into out[0..numel). */
nnz_status nnz_unpack_tensor(const nnz_nf_tensor *t, float *out, uint8_t *scratch, const char *file);

/* ===================== the packer ===================== */

/* Per-layer report of nnz_pack_model. */
typedef struct {
    char name[NNZ_NF_NAME_MAX];
    int codec, bits, gap_bits, codebook;
    int64_t numel, nnz;
    size_t fp32_bytes, packed_bytes;
    double rmse;
} nnz_pack_layer_report;

/* Checks that f's tensors are exactly m's parameters with their shapes; map[i] = the
 * record of m->params[i]. FORMAT error naming path otherwise. */
nnz_status nnz_pack_match_model(const nnz_nf_file *f, const nnz_model *m, const char *path, const nnz_nf_tensor **map);

#endif
