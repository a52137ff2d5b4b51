/* Canonical, length-limited Huffman codes: package-merge lengths, canonical codes,
 * a four-stream encoder, a table-driven four-stream decoder and its bit-by-bit oracle.
 *
 * Bit order: MSB-first. A code of length L is written as its L bits from the most
 * significant; a stream is zero-padded to a whole byte. The decoder keeps a bit
 * position per stream, loads the 8 bytes at its byte offset big-endian, shifts out the
 * bits already used (<= 7), and so has >= 57 valid bits: four lookups of <= 12 bits
 * each per load. The four streams are independent, so their loads and lookups overlap
 * in the CPU (zstd's HUF_decompress4X idea). Near a stream's end the loads go through
 * a zero-padded copy, so nothing outside the stream is ever read. */
#include "pack/pack.h"

#include <stdlib.h>
#include <string.h>

/* ---------------- package-merge ---------------- */

typedef struct {
    uint64_t w;
    int16_t leaf;   /* symbol, or -1 for a package of items 2*child and 2*child+1 of the next level */
    int32_t child;
} pm_item;

static int cmp_leaf(const void *a, const void *b) {
    const pm_item *x = a, *y = b;
    if (x->w != y->w) return x->w < y->w ? -1 : 1;
    return x->leaf - y->leaf;
}

/* Adds one to the length of every leaf under item i of level `level`. */
static void pm_count(pm_item *const *lists, int level, int i, uint8_t *lengths) {
    const pm_item *it = &lists[level][i];
    if (it->leaf >= 0) {
        lengths[it->leaf]++;
        return;
    }
    pm_count(lists, level + 1, 2 * it->child, lengths);
    pm_count(lists, level + 1, 2 * it->child + 1, lengths);
}

nnz_status nnz_huf_lengths(const uint64_t *freq, int nsym, int max_bits, uint8_t *lengths) {
    if (nsym < 0 || nsym > NNZ_HUF_MAX_SYMBOLS || max_bits < 1 || max_bits > NNZ_HUF_MAX_BITS)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "Huffman: %d symbols, limit %d bits: out of range", nsym, max_bits);
    memset(lengths, 0, (size_t)nsym);
    pm_item leaves[NNZ_HUF_MAX_SYMBOLS];
    int n = 0;
    for (int s = 0; s < nsym; s++)
        if (freq[s]) leaves[n++] = (pm_item){freq[s], (int16_t)s, 0};
    if (n == 0) return NNZ_OK;
    if (n == 1) {
        lengths[leaves[0].leaf] = 1;
        return NNZ_OK;
    }
    if (n > (1 << max_bits))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "Huffman: %d symbols do not fit codes of at most %d bits", n, max_bits);
    qsort(leaves, (size_t)n, sizeof *leaves, cmp_leaf);
    /* lists[l] for l = 0 (length 1) .. max_bits-1 (the deepest); each holds at most 2n items */
    pm_item *store = malloc((size_t)max_bits * 2 * (size_t)n * sizeof *store);
    pm_item *lists[NNZ_HUF_MAX_BITS];
    int sizes[NNZ_HUF_MAX_BITS];
    if (!store) return nnz_fail(NNZ_ERR_NOMEM, "out of memory building a Huffman code");
    for (int l = 0; l < max_bits; l++) lists[l] = store + (size_t)l * 2 * n;
    int deep = max_bits - 1;
    memcpy(lists[deep], leaves, (size_t)n * sizeof *leaves);
    sizes[deep] = n;
    for (int l = deep - 1; l >= 0; l--) {
        /* merge the leaves with the packages (pairs) of level l+1, by weight, leaves first on ties */
        int npk = sizes[l + 1] / 2, a = 0, b = 0, k = 0;
        while (a < n || b < npk) {
            uint64_t pw = b < npk ? lists[l + 1][2 * b].w + lists[l + 1][2 * b + 1].w : 0;
            if (b >= npk || (a < n && leaves[a].w <= pw)) lists[l][k++] = leaves[a++];
            else lists[l][k++] = (pm_item){pw, -1, b++};
        }
        sizes[l] = k;
    }
    /* the 2n-2 cheapest items of the top list; each occurrence of a leaf adds one to its length */
    for (int i = 0; i < 2 * n - 2; i++) pm_count(lists, 0, i, lengths);
    free(store);
    return NNZ_OK;
}

/* ---------------- canonical codes ---------------- */

void nnz_huf_encoder_init(nnz_huf_encoder *e, const uint8_t *lengths, int nsym) {
    memset(e, 0, sizeof *e);
    int count[NNZ_HUF_MAX_BITS + 2] = {0};
    for (int s = 0; s < nsym; s++) count[lengths[s]]++;
    count[0] = 0;
    uint32_t next[NNZ_HUF_MAX_BITS + 2] = {0}, code = 0;
    for (int l = 1; l <= NNZ_HUF_MAX_BITS; l++) {
        code = (code + (uint32_t)count[l - 1]) << 1;
        next[l] = code;
    }
    for (int s = 0; s < nsym; s++) {
        int l = lengths[s];
        e->len[s] = (uint8_t)l;
        if (l) e->code[s] = (uint16_t)next[l]++;
    }
}

nnz_status nnz_huf_decoder_init(nnz_huf_decoder *d, const uint8_t *lengths, int nsym, const char *what) {
    memset(d, 0, sizeof *d);
    if (nsym < 2 || nsym > NNZ_HUF_MAX_SYMBOLS)
        return nnz_fail(NNZ_ERR_FORMAT, "%s: a Huffman alphabet of %d symbols", what, nsym);
    int maxl = 0, used = 0;
    uint64_t kraft = 0; /* in units of 2^-12 */
    for (int s = 0; s < nsym; s++) {
        if (lengths[s] > NNZ_HUF_MAX_BITS)
            return nnz_fail(NNZ_ERR_FORMAT, "%s: Huffman code length %d exceeds %d bits", what, lengths[s],
                            NNZ_HUF_MAX_BITS);
        if (!lengths[s]) continue;
        used++;
        if (lengths[s] > maxl) maxl = lengths[s];
        kraft += (uint64_t)1 << (NNZ_HUF_MAX_BITS - lengths[s]);
    }
    if (used < 2 || kraft != ((uint64_t)1 << NNZ_HUF_MAX_BITS))
        return nnz_fail(NNZ_ERR_FORMAT, "%s: the Huffman code lengths do not form a complete prefix code", what);
    nnz_huf_encoder e;
    nnz_huf_encoder_init(&e, lengths, nsym);
    d->table_log = maxl;
    d->nsym = nsym;
    memcpy(d->len, lengths, (size_t)nsym);
    for (int s = 0; s < nsym; s++) {
        int l = lengths[s];
        if (!l) continue;
        uint32_t first = (uint32_t)e.code[s] << (maxl - l), span = 1u << (maxl - l);
        for (uint32_t i = 0; i < span; i++) d->entry[first + i] = (uint16_t)(s << 4 | l);
    }
    return NNZ_OK;
}

/* ---------------- encoding ---------------- */

static void segment(int64_t n, int k, int64_t *begin, int64_t *end) {
    int64_t q = nnz_huf_quarter(n);
    *begin = q * k < n ? q * k : n;
    *end = q * (k + 1) < n ? q * (k + 1) : n;
}

void nnz_huf_sizes4(const nnz_huf_encoder *e, const uint8_t *sym, int64_t n, uint32_t sizes[4]) {
    for (int k = 0; k < 4; k++) {
        int64_t b, end;
        segment(n, k, &b, &end);
        uint64_t bits = 0;
        for (int64_t i = b; i < end; i++) bits += e->len[sym[i]];
        sizes[k] = (uint32_t)((bits + 7) / 8);
    }
}

void nnz_huf_encode4(const nnz_huf_encoder *e, const uint8_t *sym, int64_t n, uint8_t *out) {
    for (int k = 0; k < 4; k++) {
        int64_t b, end;
        segment(n, k, &b, &end);
        uint64_t acc = 0;
        int nbits = 0;
        for (int64_t i = b; i < end; i++) {
            acc = acc << e->len[sym[i]] | e->code[sym[i]];
            nbits += e->len[sym[i]];
            while (nbits >= 8) {
                nbits -= 8;
                *out++ = (uint8_t)(acc >> nbits);
            }
        }
        if (nbits) *out++ = (uint8_t)(acc << (8 - nbits));
    }
}

/* ---------------- decoding ---------------- */

typedef struct {
    const uint8_t *p;
    uint64_t size, bitpos;
    int64_t at;     /* output index of the next symbol */
    int64_t left;
} stream;

static inline uint64_t load_be64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return __builtin_bswap64(v);
}

/* The 64 bits starting at byte `at` of the stream, zero beyond its end. */
static inline uint64_t load_safe(const stream *s, uint64_t at) {
    if (at + 8 <= s->size) return load_be64(s->p + at);
    uint8_t tmp[8] = {0};
    if (at < s->size) memcpy(tmp, s->p + at, (size_t)(s->size - at));
    return load_be64(tmp);
}

static nnz_status setup(const uint8_t *in, const uint32_t sizes[4], int64_t n, stream st[4], const char *what) {
    uint64_t off = 0;
    for (int k = 0; k < 4; k++) {
        int64_t b, end;
        segment(n, k, &b, &end);
        st[k] = (stream){in + off, sizes[k], 0, b, end - b};
        off += sizes[k];
        /* every code is >= 1 bit: a stream shorter than its symbol count in bits is corrupt */
        if ((uint64_t)st[k].left > st[k].size * 8)
            return nnz_fail(NNZ_ERR_FORMAT, "%s: Huffman stream %d holds %u bytes, too few for %lld symbols", what, k,
                            sizes[k], (long long)st[k].left);
    }
    return NNZ_OK;
}

static nnz_status finish(const stream st[4], const char *what) {
    for (int k = 0; k < 4; k++)
        if ((st[k].bitpos + 7) / 8 != st[k].size)
            return nnz_fail(NNZ_ERR_FORMAT, "%s: Huffman stream %d is corrupt (decoding used %llu of its %llu bits)",
                            what, k, (unsigned long long)st[k].bitpos, (unsigned long long)st[k].size * 8);
    return NNZ_OK;
}

/* The multi-symbol table of d (2^table_log entries; "the fast loop" below): the first symbol,
 * then up to two more while their codes fit in the bits left (looked up with those bits at the
 * top, zeros below: a code that fits is decided by them alone). */
static void build_multi(const nnz_huf_decoder *d, uint32_t *T3) {
    const int maxl = d->table_log;
    const uint32_t mask = (1u << maxl) - 1;
    for (uint32_t v = 0; v <= mask; v++) {
        uint32_t syms = 0, used = 0, count = 0;
        while (count < 3) {
            uint32_t e = d->entry[(v << used) & mask], l = e & 15;
            if (count > 0 && used + l > (uint32_t)maxl) break;
            syms |= (e >> 4) << (8 * count);
            used += l;
            count++;
        }
        T3[v] = syms | used << 24 | count << 28;
    }
}

/* ---- the fast loop ----
 *
 * Multi-symbol table (zstd's HUF_decompress4X2 idea, one step further): T3[v] for the
 * next table_log bits v holds the first symbol and up to two more, as long as their codes
 * fit in those bits:
 *   bits 0..23 symbols 0, 1, 2 (zero where absent), 24..27 bits consumed, 28..29 count (1..3).
 * One lookup gives one to three symbols; the entry is stored whole (a 32-bit store: the three
 * symbol bytes and one byte of junk that a later store or the tail overwrites), the output
 * advances by the count. A 64-bit big-endian load at the stream's byte
 * offset, shifted by its bit offset (<= 7), holds >= 57 valid bits: NL lookups of <= table_log
 * bits each, with NL * table_log <= 57 (NL = 4 at 12 bits, 5 at 11, 6 at 9, 7 at 8).
 *
 * A batch of iterations runs with no checks at all: each stream must have, before every
 * iteration, 3*NL + 1 output slots left in its segment (the stores stay inside it) and 8 bytes
 * readable at its next load (each iteration moves at most NL*table_log bits). The batch length
 * is the minimum over the streams of what their state allows; batches repeat until it is 0
 * (each iteration makes at least NL symbols of progress). Then a one-symbol-at-a-time tail with
 * zero-padded loads and a bounds check per symbol.
 *
 * Building T3 costs about as much as decoding a few times 2^table_log symbols, so it is built
 * (on the stack, per call) only for at least MULTI_MIN_SYMBOLS << table_log symbols; shorter
 * streams run the same batches on the one-symbol table d->entry (NL lookups of one symbol per
 * load, NL output slots per iteration). */
#define MULTI_MIN_SYMBOLS 8

static int64_t safe_iters(const stream st[4], int nl, int table_log, int slots) {
    int64_t it = INT64_MAX;
    for (int k = 0; k < 4; k++) {
        int64_t m = st[k].left / slots;
        if (st[k].size < 8 || st[k].bitpos > 8 * (st[k].size - 8)) return 0;
        int64_t by = (int64_t)((8 * (st[k].size - 8) - st[k].bitpos) / (uint64_t)(nl * table_log)) + 1;
        m = by < m ? by : m;
        it = m < it ? m : it;
    }
    return it;
}

static inline void store3_u8(uint8_t *out, int64_t at, uint32_t e, const float *cbk) {
    (void)cbk;
    memcpy(out + at, &e, 4);
}
static inline void store1_u8(uint8_t *out, int64_t at, uint32_t e, const float *cbk) {
    (void)cbk;
    out[at] = (uint8_t)e;
}
static inline void store1_f32(float *out, int64_t at, uint32_t e, const float *cbk) { out[at] = cbk[e & 255]; }
static inline void store3_f32(float *out, int64_t at, uint32_t e, const float *cbk) {
    out[at] = cbk[e & 255];
    out[at + 1] = cbk[(e >> 8) & 255];
    out[at + 2] = cbk[(e >> 16) & 255];
}

/* one to three symbols from the multi-symbol table */
#define LOOKUP3(k, STORE)                                     \
    do {                                                 \
        uint32_t e = T3[v##k >> drop];                   \
        STORE(out, o##k, e, cbk);                        \
        v##k <<= (e >> 24) & 15;                         \
        bp##k += (e >> 24) & 15;                         \
        o##k += e >> 28;                                 \
    } while (0)
/* one symbol from the one-symbol table: (symbol << 4) | length */
#define LOOKUP1(k, STORE)                                     \
    do {                                                      \
        uint32_t e = T1[v##k >> drop];                        \
        STORE(out, o##k, (e >> 4) | 1u << 28, cbk);           \
        v##k <<= e & 15;                                      \
        bp##k += e & 15;                                      \
        o##k += 1;                                            \
    } while (0)

/* One batch of `it` iterations of NL lookups on each of the four streams. */
#define DEFINE_BATCH(NAME, OUT_T, STORE, NL, LOOKUP)                                                     \
    static void NAME(const uint32_t *T3, const uint16_t *T1, int drop, stream st[4], OUT_T *out,            \
                     const float *cbk, int64_t it) {                                                       \
        (void)T1, (void)T3;                                                                                \
        const uint8_t *p0 = st[0].p, *p1 = st[1].p, *p2 = st[2].p, *p3 = st[3].p;                          \
        uint64_t bp0 = st[0].bitpos, bp1 = st[1].bitpos, bp2 = st[2].bitpos, bp3 = st[3].bitpos;           \
        int64_t o0 = st[0].at, o1 = st[1].at, o2 = st[2].at, o3 = st[3].at;                                \
        for (int64_t i = 0; i < it; i++) {                                                                 \
            uint64_t v0 = load_be64(p0 + (bp0 >> 3)) << (bp0 & 7);                                         \
            uint64_t v1 = load_be64(p1 + (bp1 >> 3)) << (bp1 & 7);                                         \
            uint64_t v2 = load_be64(p2 + (bp2 >> 3)) << (bp2 & 7);                                         \
            uint64_t v3 = load_be64(p3 + (bp3 >> 3)) << (bp3 & 7);                                         \
            for (int l = 0; l < NL; l++) {                                                                 \
                LOOKUP(0, STORE);                                                                          \
                LOOKUP(1, STORE);                                                                          \
                LOOKUP(2, STORE);                                                                          \
                LOOKUP(3, STORE);                                                                          \
            }                                                                                              \
        }                                                                                                  \
        st[0].bitpos = bp0, st[1].bitpos = bp1, st[2].bitpos = bp2, st[3].bitpos = bp3;                   \
        st[0].left -= o0 - st[0].at, st[1].left -= o1 - st[1].at;                                          \
        st[2].left -= o2 - st[2].at, st[3].left -= o3 - st[3].at;                                          \
        st[0].at = o0, st[1].at = o1, st[2].at = o2, st[3].at = o3;                                        \
    }


DEFINE_BATCH(batch_u8_4, uint8_t, store3_u8, 4, LOOKUP3)
DEFINE_BATCH(batch1_u8_4, uint8_t, store1_u8, 4, LOOKUP1)
DEFINE_BATCH(batch_u8_5, uint8_t, store3_u8, 5, LOOKUP3)
DEFINE_BATCH(batch1_u8_5, uint8_t, store1_u8, 5, LOOKUP1)
DEFINE_BATCH(batch_u8_6, uint8_t, store3_u8, 6, LOOKUP3)
DEFINE_BATCH(batch1_u8_6, uint8_t, store1_u8, 6, LOOKUP1)
DEFINE_BATCH(batch_u8_7, uint8_t, store3_u8, 7, LOOKUP3)
DEFINE_BATCH(batch1_u8_7, uint8_t, store1_u8, 7, LOOKUP1)

DEFINE_BATCH(batch_f32_4, float, store3_f32, 4, LOOKUP3)
DEFINE_BATCH(batch1_f32_4, float, store1_f32, 4, LOOKUP1)
DEFINE_BATCH(batch_f32_5, float, store3_f32, 5, LOOKUP3)
DEFINE_BATCH(batch1_f32_5, float, store1_f32, 5, LOOKUP1)
DEFINE_BATCH(batch_f32_6, float, store3_f32, 6, LOOKUP3)
DEFINE_BATCH(batch1_f32_6, float, store1_f32, 6, LOOKUP1)
DEFINE_BATCH(batch_f32_7, float, store3_f32, 7, LOOKUP3)
DEFINE_BATCH(batch1_f32_7, float, store1_f32, 7, LOOKUP1)

/* Lookups per 64-bit load for a table of table_log bits: floor(57 / table_log), 4..7. */
static int lookups_per_load(int table_log) {
    int nl = 57 / table_log;
    return nl < 4 ? 4 : nl > 7 ? 7 : nl;
}

/* The tail, per stream, through the one-symbol table: check-free NL-symbol steps while a
 * 64-bit load stays inside the stream and NL symbols are left; then the last (at most 16)
 * bytes copied into a zero-padded buffer and decoded one symbol at a time, each checked
 * against the stream's end; a longer remainder (fewer than NL symbols over many bytes: a
 * corrupt stream) goes through zero-padded loads from the stream itself. */
#define DECODE_TAIL(STORE1)                                                                                  \
    for (int k = 0; k < 4; k++) {                                                                            \
        stream *q = &st[k];                                                                                  \
        while (q->left >= nl && q->size >= 8 && q->bitpos <= 8 * (q->size - 8)) {                            \
            uint64_t v = load_be64(q->p + (q->bitpos >> 3)) << (q->bitpos & 7);                              \
            for (int l = 0; l < nl; l++) {                                                                   \
                uint16_t e = T[v >> drop];                                                                   \
                STORE1(q->at, e >> 4);                                                                       \
                v <<= e & 15;                                                                                \
                q->bitpos += e & 15;                                                                         \
                q->at++;                                                                                     \
            }                                                                                                \
            q->left -= nl;                                                                                   \
        }                                                                                                    \
        if (q->left > 0 && q->size - (q->bitpos >> 3) <= 16) {                                               \
            uint8_t pad[24] = {0};                                                                           \
            const uint64_t from = q->bitpos >> 3, end = 8 * (q->size - from);                               \
            memcpy(pad, q->p + from, (size_t)(q->size - from));                                              \
            uint64_t b = q->bitpos - 8 * from;                                                               \
            for (; q->left > 0; q->left--, q->at++) {                                                        \
                uint16_t e = T[(load_be64(pad + (b >> 3)) << (b & 7)) >> drop];                              \
                b += e & 15;                                                                                 \
                if (b > end)                                                                                 \
                    return nnz_fail(NNZ_ERR_FORMAT, "%s: Huffman stream %d ends in the middle of a code", what, k); \
                STORE1(q->at, e >> 4);                                                                       \
            }                                                                                                \
            q->bitpos = 8 * from + b;                                                                        \
        }                                                                                                    \
        for (; q->left > 0; q->left--, q->at++) {                                                            \
            uint64_t v = load_safe(q, q->bitpos >> 3) << (q->bitpos & 7);                                    \
            uint16_t e = T[v >> drop];                                                                       \
            q->bitpos += e & 15;                                                                             \
            if (q->bitpos > q->size * 8)                                                                     \
                return nnz_fail(NNZ_ERR_FORMAT, "%s: Huffman stream %d ends in the middle of a code", what, k); \
            STORE1(q->at, e >> 4);                                                                           \
        }                                                                                                    \
    }                                                                                                        \
    return finish(st, what);

#define STORE1_U8(at, s) out[at] = (uint8_t)(s)
#define STORE1_F32(at, s) out[at] = cbk[s]

/* The batches, then the tail; T3 (2^table_log entries of scratch) is built when the stream is
 * long enough. */
#define DECODE_BODY(SUFFIX, STORE1, CBK)                                                                     \
    const uint16_t *T = d->entry;                                                                            \
    const int drop = 64 - d->table_log, nl = lookups_per_load(d->table_log);                                 \
    const bool multi = n >= (int64_t)MULTI_MIN_SYMBOLS << d->table_log;                                     \
    if (multi) build_multi(d, T3);                                                                           \
    for (int64_t it; (it = safe_iters(st, nl, d->table_log, multi ? 3 * nl + 1 : nl)) > 0;) {               \
        switch (nl + (multi ? 0 : 10)) {                                                                     \
        case 4: batch_##SUFFIX##_4(T3, T, drop, st, out, CBK, it); break;                                    \
        case 5: batch_##SUFFIX##_5(T3, T, drop, st, out, CBK, it); break;                                    \
        case 6: batch_##SUFFIX##_6(T3, T, drop, st, out, CBK, it); break;                                    \
        case 7: batch_##SUFFIX##_7(T3, T, drop, st, out, CBK, it); break;                                    \
        case 14: batch1_##SUFFIX##_4(T3, T, drop, st, out, CBK, it); break;                                  \
        case 15: batch1_##SUFFIX##_5(T3, T, drop, st, out, CBK, it); break;                                  \
        case 16: batch1_##SUFFIX##_6(T3, T, drop, st, out, CBK, it); break;                                  \
        default: batch1_##SUFFIX##_7(T3, T, drop, st, out, CBK, it); break;                                  \
        }                                                                                                    \
    }                                                                                                        \
    DECODE_TAIL(STORE1)

nnz_status nnz_huf_decode4(const nnz_huf_decoder *d, const uint8_t *in, const uint32_t sizes[4], uint8_t *out,
                           int64_t n, const char *what) {
    stream st[4];
    NNZ_TRY(setup(in, sizes, n, st, what));
    uint32_t T3[1 << NNZ_HUF_MAX_BITS];
    DECODE_BODY(u8, STORE1_U8, NULL)
}

nnz_status nnz_huf_decode4_f32(const nnz_huf_decoder *d, const uint8_t *in, const uint32_t sizes[4],
                               const float *codebook, float *out, int64_t n, const char *what) {
    /* symbols past the codebook (a corrupt table) read zeros, never outside the array */
    float cbk[NNZ_HUF_MAX_SYMBOLS] = {0};
    memcpy(cbk, codebook, (size_t)d->nsym * sizeof *cbk);
    stream st[4];
    NNZ_TRY(setup(in, sizes, n, st, what));
    uint32_t T3[1 << NNZ_HUF_MAX_BITS];
    DECODE_BODY(f32, STORE1_F32, cbk)
}

nnz_status nnz_huf_decode4_ref(const nnz_huf_decoder *d, const uint8_t *in, const uint32_t sizes[4], uint8_t *out,
                               int64_t n, const char *what) {
    stream st[4];
    NNZ_TRY(setup(in, sizes, n, st, what));
    /* canonical decoding: first code and symbol offset of each length */
    int count[NNZ_HUF_MAX_BITS + 1] = {0};
    for (int s = 0; s < d->nsym; s++) count[d->len[s]]++;
    count[0] = 0;
    int sorted[NNZ_HUF_MAX_SYMBOLS], offset[NNZ_HUF_MAX_BITS + 2] = {0};
    for (int l = 1; l <= NNZ_HUF_MAX_BITS; l++) offset[l + 1] = offset[l] + count[l];
    int fill[NNZ_HUF_MAX_BITS + 2];
    memcpy(fill, offset, sizeof fill);
    for (int s = 0; s < d->nsym; s++)
        if (d->len[s]) sorted[fill[d->len[s]]++] = s;
    for (int k = 0; k < 4; k++) {
        uint8_t *o = out + st[k].at;
        for (int64_t i = 0; i < st[k].left; i++) {
            uint32_t code = 0, first = 0;
            int l = 1;
            for (;; l++) {
                if (l > NNZ_HUF_MAX_BITS || st[k].bitpos >= st[k].size * 8)
                    return nnz_fail(NNZ_ERR_FORMAT, "%s: Huffman stream %d ends in the middle of a code", what, k);
                uint64_t bp = st[k].bitpos++;
                code = code << 1 | ((st[k].p[bp >> 3] >> (7 - (bp & 7))) & 1u);
                if (code - first < (uint32_t)count[l]) break;
                first = (first + (uint32_t)count[l]) << 1;
            }
            o[i] = (uint8_t)sorted[offset[l] + (int)(code - first)];
        }
    }
    return finish(st, what);
}
