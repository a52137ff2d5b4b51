/* The tensor codec: fp32 weights <-> a .nnz record and its payload.
 *
 * dense:  codebook | index code lengths | 4 index streams            (numel indices)
 * sparse: codebook | index code lengths | gap code lengths | 4 index streams | 4 gap streams
 *         (indices of the nonzeros only; gap symbols as pack.h describes)
 * raw:    numel fp32 values.
 * Code lengths are 4-bit nibbles, the even symbol in the low nibble. A stream whose
 * symbols are all one value is CONST (no bits, the symbol in the record); an empty one
 * is EMPTY. docs/FORMAT.md has the byte-level layout. */
#include "pack/pack.h"

#include <string.h>

#define KMEANS_ITERS 40

/* One symbol stream, encoded. */
typedef struct {
    uint8_t mode, constant;
    int nsym;
    uint8_t lengths[NNZ_HUF_MAX_SYMBOLS];
    uint32_t sizes[4];
    size_t length_bytes, stream_bytes;
    nnz_huf_encoder enc;
} sym_stream;

static nnz_status plan_stream(const uint8_t *sym, int64_t n, int nsym, sym_stream *s) {
    memset(s, 0, sizeof *s);
    s->nsym = nsym;
    if (n == 0) return NNZ_OK; /* EMPTY */
    uint64_t freq[NNZ_HUF_MAX_SYMBOLS] = {0};
    for (int64_t i = 0; i < n; i++) freq[sym[i]]++;
    int used = 0;
    for (int i = 0; i < nsym; i++) used += freq[i] != 0;
    if (used == 1) {
        s->mode = NNZ_STREAM_CONST;
        s->constant = sym[0];
        return NNZ_OK;
    }
    s->mode = NNZ_STREAM_HUFFMAN;
    NNZ_TRY(nnz_huf_lengths(freq, nsym, NNZ_HUF_DEFAULT_BITS, s->lengths));
    nnz_huf_encoder_init(&s->enc, s->lengths, nsym);
    s->length_bytes = ((size_t)nsym + 1) / 2;
    nnz_huf_sizes4(&s->enc, sym, n, s->sizes);
    for (int k = 0; k < 4; k++) s->stream_bytes += s->sizes[k];
    return NNZ_OK;
}

/* Estimated bytes of a stream without building it (for choosing the gap width). */
static size_t stream_cost(const uint64_t *freq, int nsym) {
    uint8_t len[NNZ_HUF_MAX_SYMBOLS];
    int used = 0;
    for (int i = 0; i < nsym; i++) used += freq[i] != 0;
    if (used <= 1) return 0;
    if (nnz_huf_lengths(freq, nsym, NNZ_HUF_DEFAULT_BITS, len) != NNZ_OK) return SIZE_MAX;
    uint64_t bits = 0;
    for (int i = 0; i < nsym; i++) bits += freq[i] * len[i];
    return (size_t)(bits / 8) + 4 + ((size_t)nsym + 1) / 2;
}

static void put_lengths(uint8_t *out, const sym_stream *s) {
    for (int i = 0; i < s->nsym; i += 2)
        out[i / 2] = (uint8_t)(s->lengths[i] | (i + 1 < s->nsym ? s->lengths[i + 1] << 4 : 0));
}

/* Gap symbols of the nonzeros of w with width g (see pack.h); returns the count. sym may be
 * NULL (count only); freq (2^g entries) may be NULL. */
static int64_t gap_symbols(const float *w, int64_t numel, int g, uint8_t *sym, uint64_t *freq) {
    const int64_t S = (1 << g) - 1;
    int64_t n = 0, run = 0;
    for (int64_t i = 0; i < numel; i++) {
        if (w[i] == 0.0f) {
            run++;
            continue;
        }
        int64_t fill = run / S;
        if (freq) freq[S] += (uint64_t)fill;
        if (sym) memset(sym + n, (int)S, (size_t)fill);
        n += fill;
        uint8_t last = (uint8_t)(run % S);
        if (freq) freq[last]++;
        if (sym) sym[n] = last;
        n++;
        run = 0;
    }
    return n;
}

void nnz_packed_free(nnz_packed *p) {
    if (!p) return;
    nnz_free(p->payload);
    memset(p, 0, sizeof *p);
}

/* Fills the record's common fields. */
static nnz_status init_record(nnz_nf_tensor *r, const char *name, int ndim, const int64_t *shape) {
    memset(r, 0, sizeof *r);
    if (strlen(name) >= NNZ_NF_NAME_MAX)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "tensor name '%s' is longer than %d bytes", name, NNZ_NF_NAME_MAX - 1);
    if (ndim < 0 || ndim > 4) return nnz_fail(NNZ_ERR_INVALID_ARG, "tensor '%s' has %d dimensions (at most 4)", name, ndim);
    strcpy(r->name, name);
    r->ndim = (uint8_t)ndim;
    uint64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || __builtin_mul_overflow(numel, (uint64_t)shape[d], &numel) || numel > NNZ_NF_MAX_NUMEL)
            return nnz_fail(NNZ_ERR_INVALID_ARG, "tensor '%s' is too large for a .nnz file", name);
        r->shape[d] = shape[d];
    }
    r->numel = numel;
    return NNZ_OK;
}

static nnz_status pack_raw(const float *w, nnz_packed *out) {
    nnz_nf_tensor *r = &out->rec;
    r->codec = NNZ_CODEC_RAW_F32;
    r->payload_bytes = r->numel * 4;
    out->payload = nnz_alloc(r->payload_bytes ? r->payload_bytes : 1, "raw tensor payload");
    if (!out->payload) return NNZ_ERR_NOMEM;
    memcpy(out->payload, w, r->payload_bytes); /* little-endian host (x86-64) */
    r->payload = out->payload;
    return NNZ_OK;
}

/* Quantizes vals[0..n) and plans its index stream; idx has n bytes. */
static nnz_status quantize(const char *name, const float *vals, int64_t n, int bits, nnz_codebook *cb, uint8_t *idx,
                           sym_stream *st) {
    NNZ_TRY(nnz_kmeans_quantize(vals, n, bits, KMEANS_ITERS, name, cb, idx));
    return plan_stream(idx, n, cb->k, st);
}

static size_t quant_bytes(const nnz_codebook *cb, const sym_stream *st) {
    return (size_t)cb->k * 4 + st->length_bytes + st->stream_bytes;
}

static void write_stream(uint8_t **at, const sym_stream *st, const uint8_t *sym, int64_t n) {
    if (st->mode != NNZ_STREAM_HUFFMAN) return;
    nnz_huf_encode4(&st->enc, sym, n, *at);
    *at += st->stream_bytes;
}

nnz_status nnz_pack_tensor(const char *name, const float *w, int ndim, const int64_t *shape, int bits,
                           nnz_layout layout, nnz_packed *out) {
    memset(out, 0, sizeof *out);
    NNZ_TRY(init_record(&out->rec, name, ndim, shape));
    nnz_nf_tensor *r = &out->rec;
    const int64_t numel = (int64_t)r->numel;
    if (bits < 0 || bits > 8) return nnz_fail(NNZ_ERR_INVALID_ARG, "tensor '%s': bits must be 1..8 (0 = raw), got %d", name, bits);
    if (bits == 0 || numel == 0) return pack_raw(w, out);

    int64_t nz = 0;
    for (int64_t i = 0; i < numel; i++) nz += w[i] != 0.0f;
    bool try_dense = layout != NNZ_LAYOUT_SPARSE && (layout == NNZ_LAYOUT_DENSE || nz == numel || 2 * nz > numel);
    bool try_sparse = layout != NNZ_LAYOUT_DENSE && (layout == NNZ_LAYOUT_SPARSE || nz < numel);

    nnz_status s = NNZ_OK;
    uint8_t *didx = NULL, *sidx = NULL, *gsym = NULL;
    float *vals = NULL;
    nnz_codebook dcb, scb;
    sym_stream dst, sst, gst;
    size_t dense_bytes = SIZE_MAX, sparse_bytes = SIZE_MAX;
    int best_g = 0;
    int64_t ngaps = 0;
    if (try_dense) {
        didx = nnz_alloc((size_t)numel, "dense indices");
        if (!didx) { s = NNZ_ERR_NOMEM; goto done; }
        if ((s = quantize(name, w, numel, bits, &dcb, didx, &dst))) goto done;
        dense_bytes = quant_bytes(&dcb, &dst);
    }
    if (try_sparse) {
        vals = nnz_alloc((size_t)(nz ? nz : 1) * sizeof *vals, "nonzero values");
        sidx = nnz_alloc((size_t)(nz ? nz : 1), "sparse indices");
        if (!vals || !sidx) { s = NNZ_ERR_NOMEM; goto done; }
        for (int64_t i = 0, j = 0; i < numel; i++)
            if (w[i] != 0.0f) vals[j++] = w[i];
        if ((s = quantize(name, vals, nz, bits, &scb, sidx, &sst))) goto done;
        /* the gap width with the fewest coded bytes */
        size_t best = SIZE_MAX;
        for (int g = 1; g <= NNZ_GAP_MAX_BITS; g++) {
            uint64_t freq[NNZ_HUF_MAX_SYMBOLS] = {0};
            gap_symbols(w, numel, g, NULL, freq);
            size_t c = stream_cost(freq, 1 << g);
            if (c < best) best = c, best_g = g;
        }
        ngaps = gap_symbols(w, numel, best_g, NULL, NULL);
        gsym = nnz_alloc((size_t)(ngaps ? ngaps : 1), "gap symbols");
        if (!gsym) { s = NNZ_ERR_NOMEM; goto done; }
        gap_symbols(w, numel, best_g, gsym, NULL);
        if ((s = plan_stream(gsym, ngaps, 1 << best_g, &gst))) goto done;
        sparse_bytes = quant_bytes(&scb, &sst) + gst.length_bytes + gst.stream_bytes;
    }

    bool sparse = sparse_bytes < dense_bytes;
    if (try_dense && try_sparse) {
        /* an already-quantized tensor (codebook training) packs exactly: when only one layout
         * reproduces every value, it wins (a sparse codebook of 2^bits values plus the zeros
         * needs 2^bits + 1 dense values) */
        bool dense_exact = true, sparse_exact = true;
        for (int64_t i = 0; i < numel && dense_exact; i++) dense_exact = dcb.value[didx[i]] == w[i];
        for (int64_t j = 0; j < nz && sparse_exact; j++) sparse_exact = scb.value[sidx[j]] == vals[j];
        if (dense_exact != sparse_exact) sparse = sparse_exact;
    }
    const nnz_codebook *cb = sparse ? &scb : &dcb;
    const sym_stream *ist = sparse ? &sst : &dst;
    const uint8_t *isym = sparse ? sidx : didx;
    r->codec = sparse ? NNZ_CODEC_SPARSE : NNZ_CODEC_DENSE;
    r->bits = (uint8_t)bits;
    r->codebook_size = (uint32_t)cb->k;
    r->nnz = (uint64_t)(sparse ? nz : numel);
    r->idx_mode = ist->mode;
    r->idx_const = ist->constant;
    memcpy(r->idx_stream_bytes, ist->sizes, sizeof ist->sizes);
    if (sparse) {
        r->gap_bits = (uint8_t)best_g;
        r->n_gaps = (uint64_t)ngaps;
        r->gap_mode = gst.mode;
        r->gap_const = gst.constant;
        memcpy(r->gap_stream_bytes, gst.sizes, sizeof gst.sizes);
    }
    r->payload_bytes = sparse ? sparse_bytes : dense_bytes;
    out->payload = nnz_alloc(r->payload_bytes ? r->payload_bytes : 1, "packed tensor payload");
    if (!out->payload) { s = NNZ_ERR_NOMEM; goto done; }
    uint8_t *at = out->payload;
    memcpy(at, cb->value, (size_t)cb->k * 4);
    at += (size_t)cb->k * 4;
    if (ist->mode == NNZ_STREAM_HUFFMAN) put_lengths(at, ist), at += ist->length_bytes;
    if (sparse && gst.mode == NNZ_STREAM_HUFFMAN) put_lengths(at, &gst), at += gst.length_bytes;
    write_stream(&at, ist, isym, (int64_t)r->nnz);
    if (sparse) write_stream(&at, &gst, gsym, ngaps);
    r->payload = out->payload;
    /* quantization error, over every element (pruned zeros stay exact in the sparse layout) */
    double se = 0;
    for (int64_t i = 0, j = 0; i < numel; i++) {
        double q;
        if (sparse) q = w[i] == 0.0f ? 0.0 : cb->value[sidx[j++]];
        else q = cb->value[didx[i]];
        se += (q - w[i]) * (q - w[i]);
    }
    out->sq_error = se;
done:
    nnz_free(didx);
    nnz_free(sidx);
    nnz_free(gsym);
    nnz_free(vals);
    if (s != NNZ_OK) nnz_packed_free(out);
    return s;
}

/* ---------------- decoding ---------------- */

size_t nnz_unpack_scratch_bytes(const nnz_nf_tensor *t) {
    /* sparse: the gap symbols, then the codebook indices of the nonzeros */
    return t->codec == NNZ_CODEC_SPARSE ? (size_t)t->n_gaps + (size_t)t->nnz : 0;
}

static void get_lengths(const uint8_t *in, int nsym, uint8_t *len) {
    for (int i = 0; i < nsym; i++) len[i] = (in[i / 2] >> (4 * (i & 1))) & 15;
}

nnz_status nnz_unpack_tensor(const nnz_nf_tensor *t, float *out, uint8_t *scratch, const char *file) {
    char what[NNZ_NF_NAME_MAX + 300];
    snprintf(what, sizeof what, "'%s', tensor '%s'", file ? file : "?", t->name);
    nnz_nf_sections sec;
    NNZ_TRY(nnz_nf_record_sections(t, file, &sec));
    const uint8_t *p = t->payload;
    if (t->codec == NNZ_CODEC_RAW_F32) {
        memcpy(out, p, (size_t)t->numel * 4);
        return NNZ_OK;
    }
    float cb[NNZ_HUF_MAX_SYMBOLS] = {0};
    memcpy(cb, p, sec.codebook);
    for (uint32_t i = 0; i < t->codebook_size; i++)
        if (cb[i] != cb[i]) return nnz_fail(NNZ_ERR_FORMAT, "%s: the codebook holds a NaN", what);
    const uint8_t *idx_len = p + sec.codebook, *gap_len = idx_len + sec.idx_lengths;
    const uint8_t *idx_streams = gap_len + sec.gap_lengths, *gap_streams = idx_streams + sec.idx_streams;
    const int64_t nnz = (int64_t)t->nnz;
    if (t->codec == NNZ_CODEC_DENSE) { /* every value, straight to floats */
        if (t->idx_mode == NNZ_STREAM_CONST) {
            for (int64_t i = 0; i < nnz; i++) out[i] = cb[t->idx_const];
        } else if (t->idx_mode == NNZ_STREAM_HUFFMAN) {
            uint8_t len[NNZ_HUF_MAX_SYMBOLS];
            get_lengths(idx_len, (int)t->codebook_size, len);
            nnz_huf_decoder d;
            NNZ_TRY(nnz_huf_decoder_init(&d, len, (int)t->codebook_size, what));
            NNZ_TRY(nnz_huf_decode4_f32(&d, idx_streams, t->idx_stream_bytes, cb, out, nnz, what));
        }
        return NNZ_OK;
    }

    /* sparse: gap symbols into scratch[0, ng), the nonzeros' indices into scratch[ng, ng + nnz);
     * the gaps checked in one branch-free pass; then one forward pass writes zeros and values */
    const int64_t ng = (int64_t)t->n_gaps, numel = (int64_t)t->numel;
    const int S = (1 << t->gap_bits) - 1;
    uint8_t *gap = scratch, *idx = scratch + ng;
    if (t->gap_mode == NNZ_STREAM_CONST) {
        memset(gap, t->gap_const, (size_t)ng);
    } else if (t->gap_mode == NNZ_STREAM_HUFFMAN) {
        uint8_t len[NNZ_HUF_MAX_SYMBOLS];
        get_lengths(gap_len, 1 << t->gap_bits, len);
        nnz_huf_decoder d;
        NNZ_TRY(nnz_huf_decoder_init(&d, len, 1 << t->gap_bits, what));
        NNZ_TRY(nnz_huf_decode4(&d, gap_streams, t->gap_stream_bytes, gap, ng, what));
    }
    if (t->idx_mode == NNZ_STREAM_CONST) {
        memset(idx, t->idx_const, (size_t)nnz);
    } else if (t->idx_mode == NNZ_STREAM_HUFFMAN) {
        uint8_t len[NNZ_HUF_MAX_SYMBOLS];
        get_lengths(idx_len, (int)t->codebook_size, len);
        nnz_huf_decoder d;
        NNZ_TRY(nnz_huf_decoder_init(&d, len, (int)t->codebook_size, what));
        NNZ_TRY(nnz_huf_decode4(&d, idx_streams, t->idx_stream_bytes, idx, nnz, what));
    }
    int64_t span = 0, fillers = 0;
    int over = 0;
    for (int64_t i = 0; i < ng; i++) {
        int s = gap[i], f = s == S;
        over |= s > S;
        fillers += f;
        span += s + 1 - f; /* a filler: S positions; else s zeros and the weight */
    }
    if (over) return nnz_fail(NNZ_ERR_FORMAT, "%s: a gap symbol exceeds %d", what, S);
    const int64_t weights = ng - fillers;
    if (weights != nnz || span > numel)
        return nnz_fail(NNZ_ERR_FORMAT, "%s: the gaps place %lld weights over %lld positions; the record says %lld of %lld",
                        what, (long long)weights, (long long)span, (long long)nnz, (long long)numel);
    /* codebook indices past the codebook (a corrupt stream) read cb's zero padding */
    int64_t w = 0, j = 0, i = 0;
    /* 32 zeros stored whatever the run (later writes overwrite the extra ones), a memset for
     * the rest of a longer run, then the weight; while 32 positions stay inside out */
    static const float zeros32[32] = {0};
    for (; i < ng && w + 32 <= numel; i++) {
        int s = gap[i], z = s == S ? S : s;
        memcpy(out + w, zeros32, sizeof zeros32);
        if (z > 32) memset(out + w + 32, 0, (size_t)(z - 32) * sizeof *out);
        if (s == S) {
            w += S;
            continue;
        }
        out[w + s] = cb[idx[j++]];
        w += s + 1;
    }
    for (; i < ng; i++) {
        int s = gap[i];
        memset(out + w, 0, (size_t)(s == S ? S : s) * sizeof *out);
        if (s == S) {
            w += S;
            continue;
        }
        out[w + s] = cb[idx[j++]];
        w += s + 1;
    }
    memset(out + w, 0, (size_t)(numel - w) * sizeof *out); /* trailing zeros */
    return NNZ_OK;
}
