/* pack: k-means, package-merge Huffman lengths, the four-stream coder (fast decoder
 * against the bit-by-bit oracle and against the input), and the tensor codec on
 * random and adversarial tensors. Decoding must give back exactly what was encoded. */
#include "test_util.h"

#include "pack/pack.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------- Huffman lengths ---------------- */

static void check_complete(const uint8_t *len, int nsym, int max_bits) {
    uint64_t kraft = 0;
    int used = 0;
    for (int i = 0; i < nsym; i++) {
        assert_true(len[i] <= max_bits);
        if (len[i]) kraft += 1ull << (NNZ_HUF_MAX_BITS - len[i]), used++;
    }
    if (used >= 2) assert_int_equal(kraft, 1ull << NNZ_HUF_MAX_BITS);
}

static uint64_t cost(const uint64_t *f, const uint8_t *len, int n) {
    uint64_t c = 0;
    for (int i = 0; i < n; i++) c += f[i] * len[i];
    return c;
}

/* Optimal unlimited Huffman cost (sum of merged weights), the independent yardstick. */
static uint64_t huffman_cost(const uint64_t *f, int n) {
    uint64_t w[256];
    int m = 0;
    for (int i = 0; i < n; i++)
        if (f[i]) w[m++] = f[i];
    uint64_t total = 0;
    while (m > 1) {
        int a = 0, b = 1; /* the two smallest */
        if (w[b] < w[a]) a = 1, b = 0;
        for (int i = 2; i < m; i++) {
            if (w[i] < w[a]) b = a, a = i;
            else if (w[i] < w[b]) b = i;
        }
        uint64_t s = w[a] + w[b];
        total += s;
        int lo = a < b ? a : b, hi = a < b ? b : a;
        w[lo] = s;
        w[hi] = w[--m];
    }
    return total;
}

static void test_lengths_small(void **state) {
    (void)state;
    uint64_t f[4] = {1, 1, 2, 4};
    uint8_t len[8];
    assert_int_equal(nnz_huf_lengths(f, 4, 11, len), NNZ_OK);
    assert_int_equal(len[0], 3);
    assert_int_equal(len[1], 3);
    assert_int_equal(len[2], 2);
    assert_int_equal(len[3], 1);
    /* limited to 2 bits: all four get 2 */
    assert_int_equal(nnz_huf_lengths(f, 4, 2, len), NNZ_OK);
    for (int i = 0; i < 4; i++) assert_int_equal(len[i], 2);
    /* 5 symbols cannot fit 2 bits */
    uint64_t g[5] = {1, 1, 1, 1, 1};
    assert_int_equal(nnz_huf_lengths(g, 5, 2, len), NNZ_ERR_INVALID_ARG);
    /* one used symbol: length 1; none: all 0 */
    uint64_t h[3] = {0, 7, 0};
    assert_int_equal(nnz_huf_lengths(h, 3, 11, len), NNZ_OK);
    assert_int_equal(len[1], 1);
    assert_int_equal(len[0] + len[2], 0);
}

static void test_lengths_random_optimal(void **state) {
    (void)state;
    nnz_rng r = nnz_rng_make(7, 1);
    for (int trial = 0; trial < 200; trial++) {
        int n = 2 + (int)nnz_rng_below(&r, 255);
        uint64_t f[256];
        for (int i = 0; i < n; i++) f[i] = nnz_rng_below(&r, 4) == 0 ? 0 : 1 + nnz_rng_below(&r, 1000);
        f[0] = 1 + f[0], f[1] = 1 + f[1];
        uint8_t len[256];
        assert_int_equal(nnz_huf_lengths(f, n, 12, len), NNZ_OK);
        check_complete(len, n, 12);
        for (int i = 0; i < n; i++) assert_true((f[i] == 0) == (len[i] == 0));
        /* with these frequencies 12 bits never binds: package-merge must equal Huffman */
        int maxl = 0;
        for (int i = 0; i < n; i++) maxl = len[i] > maxl ? len[i] : maxl;
        if (maxl < 12) assert_int_equal(cost(f, len, n), huffman_cost(f, n));
    }
}

static void test_lengths_skewed_256(void **state) {
    (void)state;
    /* Fibonacci-like frequencies make unlimited Huffman codes ~ 40 bits deep: the limit must bind */
    uint64_t f[256];
    uint64_t a = 1, b = 1;
    for (int i = 0; i < 256; i++) {
        f[i] = i < 40 ? a : b + (uint64_t)i;
        uint64_t c = a + b;
        a = b;
        b = c;
        if (i >= 40) b = f[39];
    }
    for (int lim = 8; lim <= 12; lim++) {
        uint8_t len[256];
        assert_int_equal(nnz_huf_lengths(f, 256, lim, len), NNZ_OK);
        check_complete(len, 256, lim);
        int maxl = 0;
        for (int i = 0; i < 256; i++) maxl = len[i] > maxl ? len[i] : maxl;
        assert_int_equal(maxl, lim);
        /* optimal under the limit: no worse than the flat 8-bit code */
        uint8_t flat[256];
        memset(flat, 8, sizeof flat);
        assert_true(cost(f, len, 256) <= cost(f, flat, 256));
    }
}

/* ---------------- the four-stream coder ---------------- */

static void roundtrip_symbols(const uint8_t *sym, int64_t n, int nsym) {
    uint64_t f[256] = {0};
    for (int64_t i = 0; i < n; i++) f[sym[i]]++;
    int used = 0;
    for (int i = 0; i < nsym; i++) used += f[i] != 0;
    if (used < 2) return; /* CONST / EMPTY streams are the codec's business */
    uint8_t len[256];
    assert_int_equal(nnz_huf_lengths(f, nsym, NNZ_HUF_DEFAULT_BITS, len), NNZ_OK);
    nnz_huf_encoder e;
    nnz_huf_encoder_init(&e, len, nsym);
    uint32_t sizes[4];
    nnz_huf_sizes4(&e, sym, n, sizes);
    size_t total = (size_t)sizes[0] + sizes[1] + sizes[2] + sizes[3];
    uint8_t *buf = malloc(total + 1);
    nnz_huf_encode4(&e, sym, n, buf);
    nnz_huf_decoder d;
    assert_int_equal(nnz_huf_decoder_init(&d, len, nsym, "test"), NNZ_OK);
    uint8_t *out = malloc((size_t)n + 1), *ref = malloc((size_t)n + 1);
    float *outf = malloc(((size_t)n + 1) * sizeof *outf);
    float cbk[256];
    for (int i = 0; i < 256; i++) cbk[i] = (float)i * 0.5f - 3.0f;
    assert_int_equal(nnz_huf_decode4(&d, buf, sizes, out, n, "test"), NNZ_OK);
    assert_int_equal(nnz_huf_decode4_ref(&d, buf, sizes, ref, n, "test"), NNZ_OK);
    assert_int_equal(nnz_huf_decode4_f32(&d, buf, sizes, cbk, outf, n, "test"), NNZ_OK);
    assert_memory_equal(out, sym, (size_t)n);
    assert_memory_equal(ref, sym, (size_t)n);
    for (int64_t i = 0; i < n; i++) assert_true(outf[i] == cbk[sym[i]]);
    /* one byte short: an error, not an over-read (ASan watches the exact-size copy) */
    for (int k = 0; k < 4; k++) {
        if (!sizes[k]) continue;
        uint32_t s2[4];
        memcpy(s2, sizes, sizeof s2);
        s2[k]--;
        uint8_t *tight = malloc(total);
        memcpy(tight, buf, total - 1 > 0 ? total - 1 : 0);
        /* rebuild back-to-back streams without the last byte of stream k */
        size_t off = 0, o2 = 0;
        for (int j = 0; j < 4; j++) {
            memcpy(tight + o2, buf + off, s2[j]);
            off += sizes[j];
            o2 += s2[j];
        }
        assert_int_equal(nnz_huf_decode4(&d, tight, s2, out, n, "test"), NNZ_ERR_FORMAT);
        assert_int_equal(nnz_huf_decode4_ref(&d, tight, s2, ref, n, "test"), NNZ_ERR_FORMAT);
        free(tight);
    }
    free(buf);
    free(out);
    free(ref);
    free(outf);
}

static void test_streams_roundtrip(void **state) {
    (void)state;
    nnz_rng r = nnz_rng_make(11, 2);
    const int64_t sizes[] = {2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 127, 1000, 4099, 100003};
    const int nsyms[] = {2, 3, 16, 32, 200, 256};
    for (size_t a = 0; a < sizeof sizes / sizeof *sizes; a++)
        for (size_t b = 0; b < sizeof nsyms / sizeof *nsyms; b++) {
            int64_t n = sizes[a];
            int ns = nsyms[b];
            uint8_t *sym = malloc((size_t)n);
            /* geometric-ish: small symbols frequent */
            for (int64_t i = 0; i < n; i++) {
                uint32_t v = nnz_rng_below(&r, (uint32_t)ns);
                sym[i] = (uint8_t)(nnz_rng_below(&r, 2) ? v : v / 4);
            }
            sym[0] = 0;
            sym[n - 1] = (uint8_t)(ns - 1);
            roundtrip_symbols(sym, n, ns);
            free(sym);
        }
}

static void test_streams_skewed_long_codes(void **state) {
    (void)state;
    /* 256 symbols, frequencies 2^-k-ish: the limit binds, 11-bit codes appear */
    int64_t n = 200000;
    uint8_t *sym = malloc((size_t)n);
    nnz_rng r = nnz_rng_make(3, 3);
    for (int64_t i = 0; i < n; i++) {
        int s = 0;
        while (s < 255 && nnz_rng_below(&r, 2)) s++;
        sym[i] = (uint8_t)s;
    }
    for (int s = 0; s < 256; s++) sym[s * 7] = (uint8_t)s; /* every symbol present */
    roundtrip_symbols(sym, n, 256);
    free(sym);
}

static void test_streams_corrupt(void **state) {
    (void)state;
    int64_t n = 5000;
    uint8_t *sym = malloc((size_t)n);
    nnz_rng r = nnz_rng_make(5, 5);
    for (int64_t i = 0; i < n; i++) sym[i] = (uint8_t)nnz_rng_below(&r, 40);
    uint64_t f[40] = {0};
    for (int64_t i = 0; i < n; i++) f[sym[i]]++;
    uint8_t len[40];
    assert_int_equal(nnz_huf_lengths(f, 40, 11, len), NNZ_OK);
    nnz_huf_encoder e;
    nnz_huf_encoder_init(&e, len, 40);
    uint32_t sizes[4];
    nnz_huf_sizes4(&e, sym, n, sizes);
    size_t total = (size_t)sizes[0] + sizes[1] + sizes[2] + sizes[3];
    uint8_t *buf = malloc(total);
    nnz_huf_encode4(&e, sym, n, buf);
    nnz_huf_decoder d;
    assert_int_equal(nnz_huf_decoder_init(&d, len, 40, "t"), NNZ_OK);
    uint8_t *out = malloc((size_t)n), *ref = malloc((size_t)n);
    int errors = 0;
    for (size_t bit = 0; bit < total * 8; bit += 13) {
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        nnz_status s1 = nnz_huf_decode4(&d, buf, sizes, out, n, "t");
        nnz_status s2 = nnz_huf_decode4_ref(&d, buf, sizes, ref, n, "t");
        assert_int_equal(s1, s2); /* the fast path agrees with the oracle, even on garbage */
        if (s1 == NNZ_OK) assert_memory_equal(out, ref, (size_t)n);
        errors += s1 != NNZ_OK;
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    assert_true(errors > 0);
    /* incomplete and over-full code lengths are refused */
    uint8_t bad[3] = {1, 2, 0};
    assert_int_equal(nnz_huf_decoder_init(&d, bad, 3, "t"), NNZ_ERR_FORMAT);
    uint8_t over[3] = {1, 1, 1};
    assert_int_equal(nnz_huf_decoder_init(&d, over, 3, "t"), NNZ_ERR_FORMAT);
    uint8_t toolong[2] = {1, 13};
    assert_int_equal(nnz_huf_decoder_init(&d, toolong, 2, "t"), NNZ_ERR_FORMAT);
    free(sym);
    free(buf);
    free(out);
    free(ref);
}

/* The table decoder, the float decoder and the oracle on the same input: all fail, or all
 * succeed with the same symbols. Returns whether they succeeded. The streams are copied to an
 * exact-size buffer (ASan watches it) and the outputs get no slack. */
static bool decoders_agree(const nnz_huf_decoder *d, const uint8_t *buf, const uint32_t sizes[4], int64_t n) {
    size_t total = (size_t)sizes[0] + sizes[1] + sizes[2] + sizes[3];
    uint8_t *in = malloc(total ? total : 1);
    memcpy(in, buf, total);
    uint8_t *out = malloc((size_t)n + 1), *ref = malloc((size_t)n + 1);
    float *outf = malloc(((size_t)n + 1) * sizeof *outf), cbk[256];
    for (int i = 0; i < 256; i++) cbk[i] = (float)i * 0.25f + 1.0f;
    nnz_status a = nnz_huf_decode4(d, in, sizes, out, n, "t");
    nnz_status b = nnz_huf_decode4_ref(d, in, sizes, ref, n, "t");
    nnz_status c = nnz_huf_decode4_f32(d, in, sizes, cbk, outf, n, "t");
    assert_int_equal(a, b);
    assert_int_equal(c, b);
    if (a == NNZ_OK) {
        assert_memory_equal(out, ref, (size_t)n);
        for (int64_t i = 0; i < n; i++) assert_true(outf[i] == cbk[ref[i]]);
    } else {
        assert_int_equal(a, NNZ_ERR_FORMAT);
    }
    free(in);
    free(out);
    free(ref);
    free(outf);
    return a == NNZ_OK;
}

/* Encodes sym[0..n) with the given lengths and checks the decoders give it back; then every
 * truncation of one stream (by 1, by half, to nothing) and one symbol too many must fail. */
static void roundtrip_with_lengths(const uint8_t *len, int nsym, const uint8_t *sym, int64_t n) {
    nnz_huf_encoder e;
    nnz_huf_encoder_init(&e, len, nsym);
    nnz_huf_decoder d;
    assert_int_equal(nnz_huf_decoder_init(&d, len, nsym, "t"), NNZ_OK);
    uint32_t sizes[4];
    nnz_huf_sizes4(&e, sym, n, sizes);
    size_t total = (size_t)sizes[0] + sizes[1] + sizes[2] + sizes[3];
    uint8_t *buf = malloc(total + 1);
    nnz_huf_encode4(&e, sym, n, buf);
    uint8_t *out = malloc((size_t)n + 1);
    assert_true(decoders_agree(&d, buf, sizes, n));
    assert_int_equal(nnz_huf_decode4(&d, buf, sizes, out, n, "t"), NNZ_OK);
    assert_memory_equal(out, sym, (size_t)n);
    for (int k = 0; k < 4; k++) {
        const uint32_t cut[3] = {1, sizes[k] / 2, sizes[k]};
        for (int c = 0; c < 3; c++) {
            if (!cut[c] || cut[c] > sizes[k]) continue;
            uint32_t s2[4];
            memcpy(s2, sizes, sizeof s2);
            s2[k] -= cut[c];
            uint8_t *tight = malloc(total + 1);
            size_t off = 0, o2 = 0;
            for (int j = 0; j < 4; j++) {
                memcpy(tight + o2, buf + off, s2[j]);
                off += sizes[j];
                o2 += s2[j];
            }
            assert_false(decoders_agree(&d, tight, s2, n));
            free(tight);
        }
    }
    /* a symbol too many per stream: it may decode from the zero padding; the decoders agree */
    if (n % 4 == 0) decoders_agree(&d, buf, sizes, n + 4);
    free(buf);
    free(out);
}

/* Every longest code length 1..12: the lengths 1, 2, ..., L-1, L, L (a complete code with one
 * code of each length and two of the longest), symbols drawn so that each appears, at sizes
 * around the fast loop's batch bounds. */
static void test_streams_every_code_length(void **state) {
    (void)state;
    nnz_rng r = nnz_rng_make(21, 1);
    const int64_t sizes[] = {1, 4, 29, 64, 113, 4096, 30011, 70001}; /* the last one-symbol and multi-symbol batches */
    for (int L = 1; L <= NNZ_HUF_MAX_BITS; L++) {
        uint8_t len[13];
        int nsym = L + 1;
        for (int i = 0; i < L; i++) len[i] = (uint8_t)(i + 1);
        len[L] = (uint8_t)L;
        for (size_t a = 0; a < sizeof sizes / sizeof *sizes; a++) {
            int64_t n = sizes[a];
            uint8_t *sym = malloc((size_t)n);
            for (int64_t i = 0; i < n; i++) {
                /* half the time the skewed distribution the code is for, else uniform (long codes) */
                int s = 0;
                if (nnz_rng_below(&r, 2)) while (s < L && nnz_rng_below(&r, 2)) s++;
                else s = (int)nnz_rng_below(&r, (uint32_t)nsym);
                sym[i] = (uint8_t)s;
            }
            for (int i = 0; i < nsym && i < n; i++) sym[(i * 7919) % n] = (uint8_t)i;
            roundtrip_with_lengths(len, nsym, sym, n);
            free(sym);
        }
    }
    /* flat codes: 256 symbols of 8 bits, 2 of 1 bit; and only the longest codes in use */
    uint8_t flat[256];
    memset(flat, 8, sizeof flat);
    int64_t n = 5003;
    uint8_t *sym = malloc((size_t)n);
    for (int64_t i = 0; i < n; i++) sym[i] = (uint8_t)nnz_rng_below(&r, 256);
    roundtrip_with_lengths(flat, 256, sym, n);
    uint8_t two[2] = {1, 1};
    for (int64_t i = 0; i < n; i++) sym[i] = (uint8_t)nnz_rng_below(&r, 2);
    roundtrip_with_lengths(two, 2, sym, n);
    /* 12-bit codes only: 255 symbols of 12 bits would not be complete; lengths 1,2,...,11,12,12
     * with the stream made of the two 12-bit symbols alone */
    uint8_t deep[13];
    for (int i = 0; i < 12; i++) deep[i] = (uint8_t)(i + 1);
    deep[12] = 12;
    for (int64_t i = 0; i < n; i++) sym[i] = (uint8_t)(11 + nnz_rng_below(&r, 2));
    roundtrip_with_lengths(deep, 13, sym, n);
    free(sym);
}

/* Random bytes as streams, under random complete codes, random symbol counts and sizes:
 * the fast paths agree with the oracle on success and on failure. */
static void test_streams_random_garbage(void **state) {
    (void)state;
    nnz_rng r = nnz_rng_make(22, 2);
    int ok = 0, bad = 0;
    for (int trial = 0; trial < 3000; trial++) {
        int nsym = 2 + (int)nnz_rng_below(&r, 255);
        uint64_t f[256];
        for (int i = 0; i < nsym; i++) f[i] = nnz_rng_below(&r, 4) ? 1 + nnz_rng_below(&r, 1000) : 0;
        f[0] = f[0] ? f[0] : 1, f[1] = f[1] ? f[1] : 1;
        uint8_t len[256];
        int maxb = 1 + (int)nnz_rng_below(&r, NNZ_HUF_MAX_BITS);
        if (nnz_huf_lengths(f, nsym, maxb, len) != NNZ_OK) continue; /* too many symbols for the limit */
        nnz_huf_decoder d;
        assert_int_equal(nnz_huf_decoder_init(&d, len, nsym, "t"), NNZ_OK);
        uint32_t sizes[4];
        size_t total = 0;
        for (int k = 0; k < 4; k++) total += sizes[k] = nnz_rng_below(&r, 3) ? nnz_rng_below(&r, 200) : nnz_rng_below(&r, 12);
        int64_t n = (int64_t)nnz_rng_below(&r, 8 * (uint32_t)total / 2 + 8);
        uint8_t *buf = malloc(total + 1);
        for (size_t i = 0; i < total; i++) buf[i] = (uint8_t)nnz_rng_below(&r, 256);
        if (decoders_agree(&d, buf, sizes, n)) ok++;
        else bad++;
        free(buf);
    }
    assert_true(bad > 0);
    (void)ok;
}

/* One used symbol is a CONST stream, never a Huffman code: the decoder refuses it. */
static void test_decoder_single_symbol(void **state) {
    (void)state;
    nnz_huf_decoder d;
    uint8_t one[1] = {1}, lone[4] = {0, 1, 0, 0}, none[4] = {0};
    assert_int_equal(nnz_huf_decoder_init(&d, one, 1, "t"), NNZ_ERR_FORMAT);
    assert_int_equal(nnz_huf_decoder_init(&d, lone, 4, "t"), NNZ_ERR_FORMAT);
    assert_int_equal(nnz_huf_decoder_init(&d, none, 4, "t"), NNZ_ERR_FORMAT);
    uint8_t len[256];
    uint64_t f[256] = {0};
    f[7] = 100;
    assert_int_equal(nnz_huf_lengths(f, 256, 11, len), NNZ_OK);
    assert_int_equal(len[7], 1);
    assert_int_equal(nnz_huf_decoder_init(&d, len, 256, "t"), NNZ_ERR_FORMAT);
}

/* ---------------- k-means ---------------- */

static void test_kmeans_exact_when_few_values(void **state) {
    (void)state;
    float x[1000];
    const float vals[5] = {-1.5f, 0.25f, 0.2500001f, 3.0f, 1e-30f};
    for (int i = 0; i < 1000; i++) x[i] = vals[(i * 7) % 5];
    nnz_codebook cb;
    uint8_t idx[1000];
    assert_int_equal(nnz_kmeans_quantize(x, 1000, 3, 40, "x", &cb, idx), NNZ_OK);
    assert_int_equal(cb.k, 5);
    for (int i = 0; i < 1000; i++) assert_true(cb.value[idx[i]] == x[i]);
    /* one value */
    for (int i = 0; i < 1000; i++) x[i] = 0.75f;
    assert_int_equal(nnz_kmeans_quantize(x, 1000, 2, 40, "x", &cb, idx), NNZ_OK);
    assert_int_equal(cb.k, 1);
    assert_true(cb.value[0] == 0.75f);
    x[3] = NAN;
    assert_int_equal(nnz_kmeans_quantize(x, 1000, 2, 40, "x", &cb, idx), NNZ_ERR_NUMERIC);
    assert_non_null(strstr(nnz_last_error(), "'x'"));
}

static void test_kmeans_nearest_and_deterministic(void **state) {
    (void)state;
    int64_t n = 50000;
    float *x = malloc((size_t)n * sizeof *x);
    tu_fill_uniform(x, n, -1.0f, 1.0f, 99);
    for (int64_t i = 0; i < n; i += 3) x[i] = x[i] * x[i] * x[i]; /* non-uniform */
    for (int bits = 1; bits <= 8; bits++) {
        nnz_codebook a, b;
        uint8_t *ia = malloc((size_t)n), *ib = malloc((size_t)n);
        assert_int_equal(nnz_kmeans_quantize(x, n, bits, 40, "x", &a, ia), NNZ_OK);
        assert_int_equal(nnz_kmeans_quantize(x, n, bits, 40, "x", &b, ib), NNZ_OK);
        assert_int_equal(a.k, b.k);
        assert_memory_equal(a.value, b.value, (size_t)a.k * sizeof(float));
        assert_memory_equal(ia, ib, (size_t)n);
        assert_true(a.k >= 2 && a.k <= (1 << bits));
        for (int j = 1; j < a.k; j++) assert_true(a.value[j] > a.value[j - 1]);
        double se = 0;
        for (int64_t i = 0; i < n; i++) {
            double e = fabs((double)a.value[ia[i]] - x[i]);
            for (int j = 0; j < a.k; j++) assert_true(e <= fabs((double)a.value[j] - x[i]));
            se += e * e;
        }
        /* error falls with the bits: at 8 bits the rms error is below 1% of the range */
        if (bits == 8) assert_true(sqrt(se / (double)n) < 0.01);
        free(ia);
        free(ib);
    }
    free(x);
}

/* A few far-out values stretch the linear initialization over [min, max]: without moving the
 * centroids it leaves empty, the bulk of the values shares one or two of them (the weights of a
 * sparse-trained mbv2-tiny layer: 145 nonzeros in [-13, 20], most within 0.2 of zero). */
static void test_kmeans_heavy_tails(void **state) {
    (void)state;
    enum { N = 1000 };
    float x[N];
    tu_fill_uniform(x, N, -0.2f, 0.2f, 7);
    x[10] = -13.3f;
    x[500] = 20.1f;
    x[700] = 8.7f;
    nnz_codebook cb;
    uint8_t idx[N];
    assert_int_equal(nnz_kmeans_quantize(x, N, 5, 40, "x", &cb, idx), NNZ_OK);
    assert_int_equal(cb.k, 32); /* every centroid in use */
    double se = 0;
    for (int i = 0; i < N; i++) {
        double e = fabs((double)cb.value[idx[i]] - x[i]);
        for (int j = 0; j < cb.k; j++) assert_true(e <= fabs((double)cb.value[j] - x[i])); /* nearest */
        se += e * e;
    }
    /* 29 centroids for 997 values in [-0.2, 0.2]: spacing about 0.014, rms error below 0.01 (one
     * cluster around zero for all of them would give about 0.1) */
    assert_true(sqrt(se / N) < 0.01);
    /* the outliers keep a centroid of their own: they are stored exactly */
    assert_true(cb.value[idx[10]] == x[10] && cb.value[idx[500]] == x[500] && cb.value[idx[700]] == x[700]);
}

/* ---------------- the tensor codec ---------------- */

/* Packs w, checks the record with the container's rules, unpacks, and checks that every
 * decoded value is the codebook value nearest the input, zeros exact in the sparse layout. */
static nnz_nf_tensor pack_unpack(const float *w, int ndim, const int64_t *shape, int bits, nnz_layout layout,
                                 float *out) {
    nnz_packed p;
    assert_int_equal(nnz_pack_tensor("t", w, ndim, shape, bits, layout, &p), NNZ_OK);
    nnz_nf_sections sec;
    assert_int_equal(nnz_nf_record_sections(&p.rec, "f", &sec), NNZ_OK);
    assert_int_equal(sec.total, p.rec.payload_bytes);
    int64_t numel = (int64_t)p.rec.numel;
    uint8_t *scratch = malloc(nnz_unpack_scratch_bytes(&p.rec) + 1);
    for (int64_t i = 0; i < numel; i++) out[i] = NAN;
    assert_int_equal(nnz_unpack_tensor(&p.rec, out, scratch, "f"), NNZ_OK);
    const float *cb = (const float *)p.payload;
    int k = (int)p.rec.codebook_size;
    for (int64_t i = 0; i < numel; i++) {
        if (p.rec.codec == NNZ_CODEC_RAW_F32) {
            assert_true(out[i] == w[i]);
            continue;
        }
        if (p.rec.codec == NNZ_CODEC_SPARSE && w[i] == 0.0f) {
            assert_true(out[i] == 0.0f);
            continue;
        }
        double e = fabs((double)out[i] - w[i]);
        bool in_cb = false;
        for (int j = 0; j < k; j++) {
            in_cb |= out[i] == cb[j];
            assert_true(e <= fabs((double)cb[j] - w[i]));
        }
        assert_true(in_cb);
    }
    nnz_nf_tensor rec = p.rec;
    rec.payload = NULL;
    free(scratch);
    nnz_packed_free(&p);
    return rec;
}

static void test_codec_dense_and_sparse(void **state) {
    (void)state;
    int64_t shape[4] = {64, 3, 3, 32};
    int64_t n = 64 * 3 * 3 * 32;
    float *w = malloc((size_t)n * sizeof *w), *out = malloc((size_t)n * sizeof *out);
    tu_fill_uniform(w, n, -0.5f, 0.5f, 4);
    nnz_nf_tensor r = pack_unpack(w, 4, shape, 5, NNZ_LAYOUT_AUTO, out);
    assert_int_equal(r.codec, NNZ_CODEC_DENSE);
    assert_true(r.payload_bytes < (uint64_t)n * 5 / 8 + 300); /* ~ entropy of 5-bit indices */
    /* prune 90% (magnitude): the sparse layout wins and zeros stay exact */
    for (int64_t i = 0; i < n; i++)
        if (fabsf(w[i]) < 0.45f) w[i] = 0.0f;
    r = pack_unpack(w, 4, shape, 4, NNZ_LAYOUT_AUTO, out);
    assert_int_equal(r.codec, NNZ_CODEC_SPARSE);
    assert_true(r.payload_bytes < (uint64_t)n / 4);
    /* forced layouts work on the same data */
    r = pack_unpack(w, 4, shape, 4, NNZ_LAYOUT_DENSE, out);
    assert_int_equal(r.codec, NNZ_CODEC_DENSE);
    for (int bits = 1; bits <= 8; bits++) {
        r = pack_unpack(w, 4, shape, bits, NNZ_LAYOUT_SPARSE, out);
        assert_int_equal(r.codec, NNZ_CODEC_SPARSE);
    }
    r = pack_unpack(w, 4, shape, 0, NNZ_LAYOUT_AUTO, out);
    assert_int_equal(r.codec, NNZ_CODEC_RAW_F32);
    free(w);
    free(out);
}

/* An already-quantized tensor (codebook training's output): 2^bits distinct nonzero values and
 * 30% zeros. The dense layout is smaller but needs 2^bits + 1 values; AUTO takes the sparse one,
 * which reproduces every value. */
static void test_codec_exact_layout_wins(void **state) {
    (void)state;
    int64_t shape[1] = {20000};
    const int64_t n = shape[0];
    float *w = malloc((size_t)n * sizeof *w), *out = malloc((size_t)n * sizeof *out);
    tu_fill_uniform(w, n, 0.0f, 1.0f, 9);
    const float v[4] = {-0.3f, -0.1f, 0.05f, 0.2f};
    for (int64_t i = 0; i < n; i++) w[i] = w[i] < 0.3f ? 0.0f : v[(int)(w[i] * 1000) % 4];
    nnz_packed d, sp;
    assert_int_equal(nnz_pack_tensor("t", w, 1, shape, 2, NNZ_LAYOUT_DENSE, &d), NNZ_OK);
    assert_int_equal(nnz_pack_tensor("t", w, 1, shape, 2, NNZ_LAYOUT_SPARSE, &sp), NNZ_OK);
    assert_true(d.rec.payload_bytes < sp.rec.payload_bytes); /* size alone would pick dense */
    assert_true(d.sq_error > 0 && sp.sq_error == 0);
    nnz_packed_free(&d);
    nnz_packed_free(&sp);
    nnz_nf_tensor r = pack_unpack(w, 1, shape, 2, NNZ_LAYOUT_AUTO, out);
    assert_int_equal(r.codec, NNZ_CODEC_SPARSE);
    tu_assert_same_values(out, w, n);
    /* when both are exact (no zeros), size decides as before: dense */
    for (int64_t i = 0; i < n; i++)
        if (w[i] == 0.0f) w[i] = v[i % 4];
    r = pack_unpack(w, 1, shape, 2, NNZ_LAYOUT_AUTO, out);
    assert_int_equal(r.codec, NNZ_CODEC_DENSE);
    tu_assert_same_values(out, w, n);
    free(w);
    free(out);
}

static void test_codec_adversarial(void **state) {
    (void)state;
    int64_t big = 1 << 20;
    float *w = calloc((size_t)big, sizeof *w), *out = malloc((size_t)big * sizeof *out);
    int64_t shape1[1] = {big};
    /* all zero: sparse with no symbols at all */
    nnz_nf_tensor r = pack_unpack(w, 1, shape1, 4, NNZ_LAYOUT_AUTO, out);
    assert_int_equal(r.codec, NNZ_CODEC_SPARSE);
    assert_int_equal(r.nnz, 0);
    assert_int_equal(r.payload_bytes, 0);
    /* one nonzero at the very end of 2^20 - 1 zeros: fillers carry the gap */
    w[big - 1] = 0.125f;
    r = pack_unpack(w, 1, shape1, 4, NNZ_LAYOUT_AUTO, out);
    assert_int_equal(r.codec, NNZ_CODEC_SPARSE);
    assert_true(out[big - 1] == 0.125f);
    assert_true(r.n_gaps > 1000);
    assert_true(r.payload_bytes < (uint64_t)big / 1000); /* ~ one bit per 255-zero filler */
    w[0] = -2.0f; /* nonzeros at both ends */
    r = pack_unpack(w, 1, shape1, 2, NNZ_LAYOUT_SPARSE, out);
    assert_true(out[0] == -2.0f && out[big - 1] == 0.125f);
    w[big - 1] = 0.0f; /* only at the start: 2^20 - 1 trailing zeros are implied */
    r = pack_unpack(w, 1, shape1, 2, NNZ_LAYOUT_SPARSE, out);
    assert_true(out[0] == -2.0f);
    assert_int_equal(r.n_gaps, 1);
    /* all equal nonzero: CONST index stream, lossless */
    for (int64_t i = 0; i < 1000; i++) w[i] = 0.3f;
    int64_t s1000[1] = {1000};
    r = pack_unpack(w, 1, s1000, 3, NNZ_LAYOUT_AUTO, out);
    assert_int_equal(r.codec, NNZ_CODEC_DENSE);
    assert_int_equal(r.idx_mode, NNZ_STREAM_CONST);
    for (int i = 0; i < 1000; i++) assert_true(out[i] == 0.3f);
    /* a single element; a scalar (ndim 0); an empty tensor */
    int64_t s1[1] = {1}, s0[2] = {0, 5};
    w[0] = 1.5f;
    r = pack_unpack(w, 1, s1, 4, NNZ_LAYOUT_AUTO, out);
    assert_true(out[0] == 1.5f);
    r = pack_unpack(w, 0, s1, 4, NNZ_LAYOUT_AUTO, out);
    assert_int_equal(r.numel, 1);
    r = pack_unpack(w, 2, s0, 4, NNZ_LAYOUT_AUTO, out);
    assert_int_equal(r.numel, 0);
    assert_int_equal(r.codec, NNZ_CODEC_RAW_F32);
    /* 256 distinct values at 8 bits, skewed so that index codes hit the length limit: lossless */
    int64_t n = 300000;
    nnz_rng rng = nnz_rng_make(8, 8);
    for (int64_t i = 0; i < n; i++) {
        int s = 0;
        while (s < 255 && nnz_rng_below(&rng, 2)) s++;
        w[i] = (float)s - 100.0f; /* includes exact zeros: the sparse layout drops symbol 100 */
    }
    for (int s = 0; s < 256; s++) w[s * 3] = (float)s - 100.0f;
    int64_t sn[1] = {n};
    for (int lay = 0; lay < 3; lay++) {
        r = pack_unpack(w, 1, sn, 8, (nnz_layout)lay, out);
        for (int64_t i = 0; i < n; i++) assert_true(out[i] == w[i]);
    }
    /* bad input */
    nnz_packed p;
    w[5] = INFINITY;
    assert_int_equal(nnz_pack_tensor("inf", w, 1, sn, 4, NNZ_LAYOUT_AUTO, &p), NNZ_ERR_NUMERIC);
    assert_int_equal(nnz_pack_tensor("b", w, 1, sn, 9, NNZ_LAYOUT_AUTO, &p), NNZ_ERR_INVALID_ARG);
    free(w);
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lengths_small),
        cmocka_unit_test(test_lengths_random_optimal),
        cmocka_unit_test(test_lengths_skewed_256),
        cmocka_unit_test(test_streams_roundtrip),
        cmocka_unit_test(test_streams_skewed_long_codes),
        cmocka_unit_test(test_streams_corrupt),
        cmocka_unit_test(test_streams_every_code_length),
        cmocka_unit_test(test_streams_random_garbage),
        cmocka_unit_test(test_decoder_single_symbol),
        cmocka_unit_test(test_kmeans_exact_when_few_values),
        cmocka_unit_test(test_kmeans_nearest_and_deterministic),
        cmocka_unit_test(test_kmeans_heavy_tails),
        cmocka_unit_test(test_codec_dense_and_sparse),
        cmocka_unit_test(test_codec_exact_layout_wins),
        cmocka_unit_test(test_codec_adversarial),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
