/* bf16: the vector conversions against the scalar nnz_bf16_from_f32 (special values, ties,
 * overflow to Inf, NaNs, every tail length, and the denormal behaviour of each path, pinned),
 * the packing layouts, the plain-C AMX tile, and every bf16 GEMM path against the double-
 * accumulating oracle nnz_gemm_bf16_ref on odd shapes, every transpose, padded leading
 * dimensions, beta = 0 over NaN, beta = 1, alpha != 1; 1 and 2 threads bit-identical. */
#include "test_util.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

#define UNIT_ROUNDOFF 5.9604644775390625e-8 /* 2^-24 */

static float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static bool is_f32_denormal(uint32_t u) { return (u & 0x7F800000u) == 0 && (u & 0x007FFFFFu) != 0; }

typedef void (*cvt_fn)(int64_t, const float *, nnz_bf16 *);
typedef struct {
    const char *name;
    cvt_fn fn;
    nnz_isa needs;
    bool flushes_denormals;
} cvt_path;
static const cvt_path cvt_paths[] = {
    {"ref", nnz_cvt_f32_to_bf16_ref, NNZ_ISA_REF, false},
    {"avx512", nnz_cvt_f32_to_bf16_avx512, NNZ_ISA_AVX512, false},
    {"avx512bf16", nnz_cvt_f32_to_bf16_avx512bf16, NNZ_ISA_AVX512BF16, true},
};

/* What a path must give for input bits u: the scalar rounding, or +-0 for a denormal on a
 * flushing path. */
static nnz_bf16 expected_bf16(uint32_t u, bool flushes) {
    if (flushes && is_f32_denormal(u)) return (nnz_bf16)((u >> 16) & 0x8000u);
    return nnz_bf16_from_f32(f32_from_bits(u));
}

/* The scalar rounding itself, on hand-checked cases (so the vector paths are compared with
 * something known to be right). */
static void test_scalar_rounding(void **state) {
    (void)state;
    static const uint32_t cases[][2] = {
        {0x3F800000, 0x3F80}, /* 1 */
        {0x3F808000, 0x3F80}, /* tie, even below: stays */
        {0x3F818000, 0x3F82}, /* tie, odd below: up */
        {0x3F808001, 0x3F81}, /* just above the tie */
        {0xBF818000, 0xBF82}, /* negative tie */
        {0x7F7FFFFF, 0x7F80}, /* FLT_MAX rounds to +Inf */
        {0x7F7F8000, 0x7F80}, /* tie at the largest bf16 (odd): to Inf */
        {0x7F7F7FFF, 0x7F7F}, /* below the tie: largest finite bf16 */
        {0xFF7FFFFF, 0xFF80}, /* to -Inf */
        {0x7F800000, 0x7F80}, {0xFF800000, 0xFF80}, /* +-Inf */
        {0x00000000, 0x0000}, {0x80000000, 0x8000}, /* +-0 */
        {0x7FC00000, 0x7FC0}, {0x7F800001, 0x7FC0}, /* quiet NaN; a signalling NaN whose payload is
                                                       all in the low half must not become Inf */
        {0xFF800001, 0xFFC0}, {0x7FFFFFFF, 0x7FFF}, {0xFFA00000, 0xFFE0},
        {0x007FFFFF, 0x0080}, /* largest denormal rounds up to the smallest normal */
        {0x00018000, 0x0002}, /* denormal tie, odd below: up */
        {0x00008000, 0x0000}, /* denormal tie, even below: down to 0 */
        {0x80000001, 0x8000}, /* tiny negative denormal: -0 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (nnz_bf16_from_f32(f32_from_bits(cases[i][0])) != cases[i][1])
            fail_msg("nnz_bf16_from_f32(0x%08x) = 0x%04x, want 0x%04x", cases[i][0],
                     nnz_bf16_from_f32(f32_from_bits(cases[i][0])), cases[i][1]);
}

static void check_cvt_path(const cvt_path *p, const uint32_t *in, int64_t n) {
    nnz_bf16 *out = malloc((size_t)(n + 1) * sizeof(nnz_bf16));
    assert_non_null(out);
    out[n] = 0xABCD; /* guard: no write past n */
    p->fn(n, (const float *)in, out);
    for (int64_t i = 0; i < n; i++) {
        const nnz_bf16 want = expected_bf16(in[i], p->flushes_denormals);
        if (out[i] != want)
            fail_msg("cvt %s: 0x%08x -> 0x%04x, want 0x%04x", p->name, in[i], out[i], want);
    }
    assert_int_equal(out[n], 0xABCD);
    free(out);
}

/* Every path against the scalar on special values, on every tail length 0..70, and on
 * 2^20 random bit patterns (all exponents, so denormals, NaNs and ties turn up). */
static void test_cvt_f32_to_bf16_paths(void **state) {
    (void)state;
    static const uint32_t special[] = {
        0x3F800000, 0x3F808000, 0x3F818000, 0x3F808001, 0xBF818000, 0x7F7FFFFF, 0x7F7F8000, 0x7F7F7FFF,
        0xFF7FFFFF, 0x7F800000, 0xFF800000, 0x00000000, 0x80000000, 0x7FC00000, 0x7F800001, 0xFF800001,
        0x7FFFFFFF, 0xFFA00000, 0x007FFFFF, 0x00018000, 0x00008000, 0x80000001, 0x00800000, 0x00800001,
        0x807FFFFF, 0x00400000, 0x00010000, 0x3380FFFF};
    enum { RANDOM = 1 << 20 };
    uint32_t *rnd = malloc(RANDOM * sizeof(uint32_t));
    assert_non_null(rnd);
    nnz_rng r = nnz_rng_make(3, 0);
    for (int i = 0; i < RANDOM; i++) {
        uint32_t u = (uint32_t)nnz_rng_u64(&r);
        if (i % 8 == 0) u &= 0x807FFFFFu;         /* a denormal (or zero) */
        if (i % 8 == 1) u = (u & 0xFFFF0000u) | 0x8000u; /* an exact tie */
        if (i % 8 == 2) u |= 0x7F800000u;         /* Inf or NaN */
        rnd[i] = u;
    }
    for (size_t p = 0; p < sizeof cvt_paths / sizeof cvt_paths[0]; p++) {
        if (!nnz_isa_supported(cvt_paths[p].needs)) continue;
        check_cvt_path(&cvt_paths[p], special, sizeof special / sizeof special[0]);
        for (int64_t n = 0; n <= 70; n++) check_cvt_path(&cvt_paths[p], rnd + 1000 + n, n);
        check_cvt_path(&cvt_paths[p], rnd, RANDOM);
    }
    free(rnd);
}

/* Pinned: what each path does with an fp32 denormal (the measured behaviour documented in
 * kernels.h), and that the dispatcher picks the path of the active ISA. */
static void cvt_dispatch_isa(nnz_isa isa, void *ctx) {
    (void)ctx;
    const float in[3] = {f32_from_bits(0x007FFFFF), f32_from_bits(0x80018000), 1.0f};
    nnz_bf16 out[3];
    nnz_cvt_f32_to_bf16(3, in, out);
    if (isa >= NNZ_ISA_AVX512BF16) { /* VCVTNEPS2BF16 flushes, sign kept */
        assert_int_equal(out[0], 0x0000);
        assert_int_equal(out[1], 0x8000);
    } else { /* integer rounding: the largest denormal rounds up to FLT_MIN, a tie goes to even */
        assert_int_equal(out[0], 0x0080);
        assert_int_equal(out[1], 0x8002);
    }
    assert_int_equal(out[2], 0x3F80);
    /* a large array runs in chunks on the threads: the same bits as the path in one call */
    enum { BIG = 300001 };
    uint32_t *x = malloc(BIG * 4);
    nnz_bf16 *y = malloc(BIG * 2), *z = malloc(BIG * 2);
    assert_true(x && y && z);
    nnz_rng r = nnz_rng_make(5, 0);
    for (int i = 0; i < BIG; i++) x[i] = (uint32_t)nnz_rng_u64(&r);
    const int saved = nnz_get_threads();
    nnz_set_threads(2);
    nnz_cvt_f32_to_bf16(BIG, (const float *)x, y);
    nnz_set_threads(saved);
    if (isa >= NNZ_ISA_AVX512BF16) nnz_cvt_f32_to_bf16_avx512bf16(BIG, (const float *)x, z);
    else if (isa == NNZ_ISA_AVX512) nnz_cvt_f32_to_bf16_avx512(BIG, (const float *)x, z);
    else nnz_cvt_f32_to_bf16_ref(BIG, (const float *)x, z);
    assert_memory_equal(y, z, BIG * 2);
    free(x), free(y), free(z);
}

static void test_cvt_denormals_pinned(void **state) {
    (void)state;
    tu_for_each_isa(cvt_dispatch_isa, NULL);
}

/* bf16 -> fp32 is exact: all 65536 patterns, on the reference and the AVX-512 path, and
 * through the dispatcher on every ISA, with odd lengths for the tails, and a large array in chunks. */
static void widen_isa(nnz_isa isa, void *ctx) {
    (void)isa, (void)ctx;
    nnz_bf16 *in = malloc(65536 * sizeof(nnz_bf16));
    float *out = malloc(65537 * sizeof(float));
    assert_non_null(in);
    assert_non_null(out);
    for (int i = 0; i < 65536; i++) in[i] = (nnz_bf16)i;
    for (int pass = 0; pass < 3; pass++) {
        const int64_t n = pass == 0 ? 65536 : 65536 - 17 * pass;
        out[n] = -7.0f;
        if (pass == 0) nnz_cvt_bf16_to_f32(n, in, out);
        else if (pass == 1) nnz_cvt_bf16_to_f32_ref(n, in, out);
        else if (nnz_isa_supported(NNZ_ISA_AVX512)) nnz_cvt_bf16_to_f32_avx512(n, in, out);
        else nnz_cvt_bf16_to_f32_ref(n, in, out);
        for (int64_t i = 0; i < n; i++)
            if (bits_of(out[i]) != (uint32_t)in[i] << 16)
                fail_msg("bf16 0x%04x widened to 0x%08x (pass %d)", in[i], bits_of(out[i]), pass);
        assert_true(out[n] == -7.0f);
    }
    free(in);
    free(out);
    /* a large array (every pattern three times and a tail) runs in chunks on the threads */
    enum { BIG = 3 * 65536 + 5 };
    nnz_bf16 *bin = malloc(BIG * sizeof(nnz_bf16));
    float *bout = malloc((BIG + 1) * sizeof(float));
    assert_non_null(bin);
    assert_non_null(bout);
    for (int i = 0; i < BIG; i++) bin[i] = (nnz_bf16)(i * 7 + 3);
    bout[BIG] = -7.0f;
    const int saved = nnz_threads();
    nnz_set_threads(2);
    nnz_cvt_bf16_to_f32(BIG, bin, bout);
    nnz_set_threads(saved);
    for (int i = 0; i < BIG; i++)
        if (bits_of(bout[i]) != (uint32_t)bin[i] << 16) fail_msg("large array: bf16 0x%04x at %d widened to 0x%08x", bin[i], i, bits_of(bout[i]));
    assert_true(bout[BIG] == -7.0f);
    free(bin);
    free(bout);
}

static void test_cvt_bf16_to_f32(void **state) {
    (void)state;
    tu_for_each_isa(widen_isa, NULL);
}

/* nnz_round_to_bf16 (the small GEMM's staging at bf16 compute) is nnz_bf16_round bit for bit:
 * the special values above and 2^16 random bit patterns, into another array and in place. */
static void test_round_to_bf16(void **state) {
    (void)state;
    enum { N = 1 << 16 };
    static const uint32_t special[] = {0x3F808000, 0x3F818000, 0x7F7FFFFF, 0x7F7F8000, 0xFF800000, 0x80000000,
                                       0x7FC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0x007FFFFF, 0x00018000,
                                       0x00008000, 0x80000001};
    const int ns = (int)(sizeof special / sizeof special[0]);
    uint32_t *in = malloc(N * sizeof(uint32_t)), *out = malloc((N + 1) * sizeof(uint32_t));
    assert_non_null(in);
    assert_non_null(out);
    uint64_t r = 88172645463325252ull;
    for (int i = 0; i < N; i++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        in[i] = i < ns ? special[i] : (uint32_t)r;
    }
    out[N] = 0xABCD1234u; /* guard */
    nnz_round_to_bf16(N, (const float *)in, (float *)out);
    for (int i = 0; i < N; i++) {
        const float want = nnz_bf16_round(f32_from_bits(in[i]));
        uint32_t w;
        memcpy(&w, &want, 4);
        if (out[i] != w) fail_msg("round 0x%08x -> 0x%08x, want 0x%08x", in[i], out[i], w);
    }
    assert_int_equal(out[N], 0xABCD1234u);
    nnz_round_to_bf16(N, (const float *)in, (float *)in); /* in place */
    assert_memory_equal(in, out, N * sizeof(uint32_t));
    free(in);
    free(out);
}

/* ---- packing ---- */

/* op(X)(r,c) of a source, as the packers must read it */
static nnz_bf16 src_at(const nnz_bf16_src *s, int r, int c) {
    const int64_t idx = s->trans ? (int64_t)c * s->ld + r : (int64_t)r * s->ld + c;
    return s->f32 ? nnz_bf16_from_f32(((const float *)s->p)[idx]) : ((const nnz_bf16 *)s->p)[idx];
}

/* Both packers, every (trans, f32) pair, KB = 2 and 32, offsets into the source, partial
 * panels: every element of the panel, padding included (must be +0). */
static void test_packing_layouts(void **state) {
    (void)state;
    enum { R = 70, Cc = 90 }; /* op(X) is (R, Cc); stored with ld = 95 or 75 */
    float *xf = malloc(sizeof(float) * 100 * 100);
    nnz_bf16 *xb = malloc(sizeof(nnz_bf16) * 100 * 100), *out = malloc(sizeof(nnz_bf16) * 64 * 128);
    assert_non_null(xf);
    assert_non_null(xb);
    assert_non_null(out);
    tu_fill_uniform(xf, 100 * 100, -3, 3, 41);
    for (int i = 0; i < 100 * 100; i++) xb[i] = (nnz_bf16)(bits_of(xf[i]) >> 16); /* truncated: any bits */
    for (int f32 = 0; f32 < 2; f32++)
        for (int trans = 0; trans < 2; trans++) {
            const nnz_bf16_src s = {.p = f32 ? (const void *)xf : (const void *)xb, .ld = trans ? R + 5 : Cc + 5, .trans = trans, .f32 = f32};
            static const int akb[][4] = {/* MR, KB, mr, kc */ {14, 2, 14, 64}, {14, 2, 9, 37},
                                         {32, 32, 32, 64}, {32, 32, 17, 33}, {32, 32, 3, 1}};
            for (size_t t = 0; t < sizeof akb / sizeof akb[0]; t++) {
                const int MR = akb[t][0], KB = akb[t][1], mr = akb[t][2], kc = akb[t][3];
                const int kc_pad = (kc + KB - 1) / KB * KB, i0 = 5, k0 = 3;
                memset(out, 0x5A, sizeof(nnz_bf16) * MR * kc_pad);
                nnz_bf16_pack_a(&s, i0, mr, k0, kc, MR, KB, kc_pad, out);
                for (int i = 0; i < MR; i++)
                    for (int k = 0; k < kc_pad; k++) {
                        const nnz_bf16 want = (i < mr && k < kc) ? src_at(&s, i0 + i, k0 + k) : 0;
                        const nnz_bf16 got = out[(size_t)(k / KB) * MR * KB + (size_t)i * KB + k % KB];
                        if (got != want)
                            fail_msg("pack_a f32=%d trans=%d MR=%d KB=%d mr=%d kc=%d: (%d,%d) = 0x%04x, want 0x%04x",
                                     f32, trans, MR, KB, mr, kc, i, k, got, want);
                    }
            }
            static const int bkb[][4] = {/* NR, nr, kc, kc_pad */ {32, 32, 64, 64}, {32, 19, 7, 8},
                                         {32, 5, 33, 64}, {48, 48, 1, 2}};
            const nnz_bf16_src sb = {.p = s.p, .ld = trans ? Cc + 5 : R + 5, .trans = trans, .f32 = f32}; /* op(B) is (Cc?, ...) */
            for (size_t t = 0; t < sizeof bkb / sizeof bkb[0]; t++) {
                const int NR = bkb[t][0], nr = bkb[t][1], kc = bkb[t][2], kc_pad = bkb[t][3], k0 = 2, j0 = 6;
                memset(out, 0x5A, sizeof(nnz_bf16) * NR * kc_pad);
                nnz_bf16_pack_b(&sb, k0, kc, j0, nr, NR, kc_pad, out);
                for (int k = 0; k < kc_pad; k++)
                    for (int j = 0; j < NR; j++) {
                        const nnz_bf16 want = (j < nr && k < kc) ? src_at(&sb, k0 + k, j0 + j) : 0;
                        const nnz_bf16 got = out[(size_t)(k / 2) * NR * 2 + (size_t)j * 2 + k % 2];
                        if (got != want)
                            fail_msg("pack_b f32=%d trans=%d NR=%d nr=%d kc=%d: (%d,%d) = 0x%04x, want 0x%04x",
                                     f32, trans, NR, nr, kc, k, j, got, want);
                    }
            }
        }
    free(xf);
    free(xb);
    free(out);
}

/* The plain-C AMX tile: against a double sum on ordinary numbers, and its DAZ/FTZ and
 * rounding-per-add rules on hand-made cases. */
static void test_tile_emulator(void **state) {
    (void)state;
    nnz_bf16 A[16 * 32], B[16 * 32];
    float C[16 * 20], a[16 * 32], b[16 * 32];
    tu_fill_uniform(a, 16 * 32, -1, 1, 51);
    tu_fill_uniform(b, 16 * 32, -1, 1, 52);
    nnz_cvt_f32_to_bf16_ref(16 * 32, a, A);
    nnz_cvt_f32_to_bf16_ref(16 * 32, b, B);
    tu_fill_uniform(C, 16 * 20, -1, 1, 53);
    float C0[16 * 20];
    memcpy(C0, C, sizeof C);
    nnz_bf16_tile_dp_emulated(C, 20, A, 32, B, 32);
    for (int m = 0; m < 16; m++)
        for (int n = 0; n < 20; n++) {
            if (n >= 16) { /* outside the tile: untouched */
                assert_true(C[m * 20 + n] == C0[m * 20 + n]);
                continue;
            }
            double s = C0[m * 20 + n], sa = fabs(s);
            for (int k = 0; k < 32; k++) { /* B row k/2 holds the pair (k even, k odd) of column n */
                const double p = (double)nnz_bf16_to_f32(A[m * 32 + k]) * nnz_bf16_to_f32(B[(k / 2) * 32 + 2 * n + k % 2]);
                s += p;
                sa += fabs(p);
            }
            assert_true(fabs(C[m * 20 + n] - s) <= 33 * UNIT_ROUNDOFF * sa);
        }
    /* hand-made: row 0 only */
    memset(A, 0, sizeof A);
    memset(B, 0, sizeof B);
    memset(C, 0, sizeof C);
    A[0] = 0x0040; /* bf16 denormal 2^-127 ... */
    B[0] = 0x7F00; /* ... times 2^127: 1 exactly, but a denormal input counts as 0 */
    A[2] = 0x2000; /* 2^-63 ... */
    B[32] = 0x1FC0; /* (pair-row 1, column 0, even) ... times 1.5*2^-64 = 1.5*2^-127: a denormal
                       product, flushed */
    nnz_bf16_tile_dp_emulated(C, 20, A, 32, B, 32);
    assert_true(C[0] == 0.0f);
    /* 1 + 2^-24 + 2^-24: each add rounds to even (a fused sum would give 1 + 2^-23) */
    memset(A, 0, sizeof A);
    memset(B, 0, sizeof B);
    C[0] = 1.0f;
    A[0] = A[1] = 0x3380; /* 2^-24 */
    B[0] = B[1] = 0x3F80;
    nnz_bf16_tile_dp_emulated(C, 20, A, 32, B, 32);
    assert_true(C[0] == 1.0f);
    /* a denormal accumulator counts as zero */
    memset(A, 0, sizeof A);
    C[0] = f32_from_bits(0x00000100);
    nnz_bf16_tile_dp_emulated(C, 20, A, 32, B, 32);
    assert_true(C[0] == 0.0f && !signbit(C[0]));
}

/* ---- GEMM ---- */

typedef enum { VIA_DISPATCH, VIA_EMULATED, VIA_AVX512BF16, VIA_AMX, VIA_AMX_EMULATED } gemm_via;
static const char *const via_names[] = {"dispatch", "emulated", "avx512bf16", "amx", "amx_emulated"};

static void run_gemm(gemm_via via, bool f32in, bool tA, bool tB, int M, int N, int K, float alpha, const void *A,
                     int lda, const void *B, int ldb, float beta, float *C, int ldc) {
    switch (via) {
    case VIA_DISPATCH:
        if (f32in) nnz_gemm_bf16_f32in(tA, tB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        else nnz_gemm_bf16(tA, tB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    case VIA_EMULATED: nnz_gemm_bf16_emulated(tA, tB, M, N, K, alpha, A, lda, B, ldb, f32in, beta, C, ldc); return;
    case VIA_AVX512BF16:
        assert_true(nnz_gemm_bf16_avx512bf16(tA, tB, M, N, K, alpha, A, lda, B, ldb, f32in, beta, C, ldc));
        return;
    case VIA_AMX: assert_true(nnz_gemm_bf16_amx(tA, tB, M, N, K, alpha, A, lda, B, ldb, f32in, beta, C, ldc)); return;
    case VIA_AMX_EMULATED:
        assert_true(nnz_gemm_bf16_amx_emulated(tA, tB, M, N, K, alpha, A, lda, B, ldb, f32in, beta, C, ldc));
        return;
    }
}

/* One case: op(A) (M,K), op(B) (K,N), leading dimensions padded by `pad`, C (M, N+pad)
 * whose padding columns must stay untouched.
 * Tolerance per element: the path sums K exact products in fp32 (vdpbf16ps and
 * tdpbf16ps round after every add; the emulation's BLAS in some order), so its error is
 * at most (K-1)*u*sum|a*b| (u = 2^-24, the standard bound on a float sum); the store adds
 * roundings for alpha and beta once per K block (512 deep), bounded together by
 * another K*u. So |err| <= 2K*u*(|alpha|*sum|a*b| + |beta*c|) = K*2^-23*(...), plus 1e-30
 * for sums that the DAZ/FTZ paths lose below 2^-126 (K*2^-126 < 1e-33 here). Inputs in
 * [-1,1] that are not bf16 numbers: a path that did not round (f32in) or rounded wrongly
 * is off by ~2^-9 relative, a wrong element by O(1): both far outside. */
static void gemm_case(gemm_via via, bool f32in, bool tA, bool tB, int M, int N, int K, int pad, float alpha,
                      float beta) {
    const int lda = (tA ? M : K) + pad, ldb = (tB ? K : N) + pad, ldc = N + pad;
    const size_t na = (size_t)(tA ? K : M) * lda, nb = (size_t)(tB ? N : K) * ldb, nc = (size_t)M * ldc;
    float *Af = malloc(na * 4 + 4), *Bf = malloc(nb * 4 + 4), *C = malloc(nc * 4), *R = malloc(nc * 4);
    float *S = malloc(nc * 4);
    nnz_bf16 *Ab = malloc(na * 2 + 2), *Bb = malloc(nb * 2 + 2), *Aabs = malloc(na * 2 + 2), *Babs = malloc(nb * 2 + 2);
    assert_true(Af && Bf && C && R && S && Ab && Bb && Aabs && Babs);
    tu_fill_uniform(Af, (int64_t)na, -1, 1, 100 + M);
    tu_fill_uniform(Bf, (int64_t)nb, -1, 1, 200 + N);
    nnz_cvt_f32_to_bf16_ref((int64_t)na, Af, Ab);
    nnz_cvt_f32_to_bf16_ref((int64_t)nb, Bf, Bb);
    for (size_t i = 0; i < na; i++) Aabs[i] = Ab[i] & 0x7FFF;
    for (size_t i = 0; i < nb; i++) Babs[i] = Bb[i] & 0x7FFF;
    tu_fill_uniform(C, (int64_t)nc, -1, 1, 300 + K);
    if (beta == 0.0f)
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = NAN; /* must be overwritten */
    memcpy(R, C, nc * 4);
    for (size_t i = 0; i < nc; i++) S[i] = beta == 0.0f ? 0.0f : fabsf(beta * C[i]);
    nnz_gemm_bf16_ref(tA, tB, M, N, K, fabsf(alpha), Aabs, lda, Babs, ldb, 1.0f, S, ldc);
    nnz_gemm_bf16_ref(tA, tB, M, N, K, alpha, Ab, lda, Bb, ldb, beta, R, ldc);
    run_gemm(via, f32in, tA, tB, M, N, K, alpha, f32in ? (const void *)Af : (const void *)Ab, lda,
             f32in ? (const void *)Bf : (const void *)Bb, ldb, beta, C, ldc);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < ldc; j++) {
            const size_t e = (size_t)i * ldc + j;
            if (j >= N) { /* padding: bit-identical to what was there */
                if (bits_of(C[e]) != bits_of(R[e])) fail_msg("%s wrote C(%d,%d) past N=%d", via_names[via], i, j, N);
                continue;
            }
            const double tol = 2.0 * K * UNIT_ROUNDOFF * S[e] + 1e-30;
            if (!(fabs((double)C[e] - (double)R[e]) <= tol))
                fail_msg("bf16 gemm via %s (isa %s) f32in=%d tA=%d tB=%d M=%d N=%d K=%d pad=%d alpha=%g beta=%g: "
                         "C(%d,%d) = %.9g, oracle %.9g (tol %g)",
                         via_names[via], nnz_isa_name(nnz_isa_active()), f32in, tA, tB, M, N, K, pad, alpha, beta,
                         i, j, C[e], R[e], tol);
        }
    free(Af), free(Bf), free(C), free(R), free(S), free(Ab), free(Bb), free(Aabs), free(Babs);
}

/* M, N, K off every multiple of 14/16/32, K odd and 1, M or N = 1, K past one K block
 * (512), M past one M block (224 for avx512bf16, 256 for AMX), N past one N
 * blocks (2048 for AMX, 3072 for avx512bf16), K split into 2 and 4 groups. */
static const int gemm_shapes[][3] = {{1, 1, 1},    {1, 37, 5},    {37, 1, 9},    {13, 17, 1},  {15, 33, 31},
                                     {29, 47, 63}, {64, 64, 64},  {33, 31, 65},  {100, 70, 257}, {45, 90, 521},
                                     {300, 20, 6}, {3, 3100, 3},
                                     /* few tasks and a long K: K is split into groups */
                                     {5, 7, 2500}, {33, 9, 4099}};
static const float alpha_beta[][2] = {{1.0f, 0.0f}, {1.0f, 1.0f}, {-0.5f, 0.75f}};

static void gemm_all_cases(gemm_via via) {
    for (size_t s = 0; s < sizeof gemm_shapes / sizeof gemm_shapes[0]; s++)
        for (int f32in = 0; f32in < 2; f32in++)
            for (int t = 0; t < 4; t++)
                for (size_t ab = 0; ab < sizeof alpha_beta / sizeof alpha_beta[0]; ab++) {
                    /* the plain-C tiles are slow: one (alpha, beta) per case, in rotation */
                    if (via == VIA_AMX_EMULATED && ab != (s + (size_t)t + (size_t)f32in) % 3) continue;
                    gemm_case(via, f32in, t & 1, t >> 1, gemm_shapes[s][0], gemm_shapes[s][1], gemm_shapes[s][2],
                              (int)(s + ab) % 3 == 0 ? 0 : 3, alpha_beta[ab][0], alpha_beta[ab][1]);
                }
}

/* The dispatchers on every ISA (ref, avx2, avx512 reach the emulation), K = 0 and alpha = 0
 * (C = beta*C, NaN overwritten when beta = 0). */
static void gemm_dispatch_isa(nnz_isa isa, void *ctx) {
    (void)isa, (void)ctx;
    gemm_all_cases(VIA_DISPATCH);
    float C[6] = {NAN, NAN, NAN, 2, 2, 2};
    nnz_gemm_bf16(false, false, 1, 3, 0, 1.0f, NULL, 1, NULL, 3, 0.0f, C, 3);
    nnz_gemm_bf16_f32in(false, false, 1, 3, 0, 1.0f, NULL, 1, NULL, 3, 0.5f, C + 3, 3);
    for (int i = 0; i < 6; i++) assert_true(C[i] == (i < 3 ? 0.0f : 1.0f));
}

static void test_gemm_dispatch_all_isas(void **state) {
    (void)state;
    tu_for_each_isa(gemm_dispatch_isa, NULL);
}

static void test_gemm_paths_direct(void **state) {
    (void)state;
    gemm_all_cases(VIA_EMULATED);
    gemm_all_cases(VIA_AMX_EMULATED); /* the AMX packing and edges, tiles in plain C */
    if (nnz_isa_supported(NNZ_ISA_AVX512BF16)) gemm_all_cases(VIA_AVX512BF16);
    if (nnz_isa_supported(NNZ_ISA_AMX)) gemm_all_cases(VIA_AMX);
    else assert_false(nnz_gemm_bf16_amx(false, false, 1, 1, 1, 1.0f, NULL, 1, NULL, 1, false, 0.0f, NULL, 1));
}

/* Pinned: bf16 denormal inputs on each path. 2^-127 (bf16 0x0040) * 2^127 = 1 exactly: the
 * emulation keeps it; vdpbf16ps and tdpbf16ps (and the tile emulator) take the denormal
 * as 0. */
static void test_gemm_denormal_inputs(void **state) {
    (void)state;
    const nnz_bf16 A[2] = {0x0040, 0x3F80}, B[2] = {0x7F00, 0x0000};
    float c;
    nnz_gemm_bf16_ref(false, false, 1, 1, 2, 1.0f, A, 2, B, 1, 0.0f, &c, 1);
    assert_true(c == 1.0f);
    nnz_gemm_bf16_emulated(false, false, 1, 1, 2, 1.0f, A, 2, B, 1, false, 0.0f, &c, 1);
    assert_true(c == 1.0f);
    assert_true(nnz_gemm_bf16_amx_emulated(false, false, 1, 1, 2, 1.0f, A, 2, B, 1, false, 0.0f, &c, 1));
    assert_true(c == 0.0f);
    if (nnz_isa_supported(NNZ_ISA_AVX512BF16)) {
        assert_true(nnz_gemm_bf16_avx512bf16(false, false, 1, 1, 2, 1.0f, A, 2, B, 1, false, 0.0f, &c, 1));
        assert_true(c == 0.0f);
    }
    if (nnz_isa_supported(NNZ_ISA_AMX)) {
        assert_true(nnz_gemm_bf16_amx(false, false, 1, 1, 2, 1.0f, A, 2, B, 1, false, 0.0f, &c, 1));
        assert_true(c == 0.0f);
    }
}

/* 1 and 2 (or 3) threads give the same bits, on shapes split into several tasks and K blocks. */
static void test_gemm_thread_independent(void **state) {
    (void)state;
    enum { M = 700, N = 300, K = 600 };
    float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N);
    float *C1 = malloc(sizeof(float) * M * N), *C2 = malloc(sizeof(float) * M * N);
    float *Bw = malloc(sizeof(float) * 3100 * K), *Cw1 = malloc(sizeof(float) * 100 * 3100),
          *Cw2 = malloc(sizeof(float) * 100 * 3100);
    assert_true(A && B && C1 && C2 && Bw && Cw1 && Cw2);
    tu_fill_uniform(A, M * K, -1, 1, 61);
    tu_fill_uniform(B, K * N, -1, 1, 62);
    tu_fill_uniform(Bw, 3100 * K, -1, 1, 63);
    const int saved = nnz_get_threads();
    for (int via = VIA_EMULATED; via <= VIA_AMX_EMULATED; via++) {
        if (via == VIA_AVX512BF16 && !nnz_isa_supported(NNZ_ISA_AVX512BF16)) continue;
        if (via == VIA_AMX && !nnz_isa_supported(NNZ_ISA_AMX)) continue;
        if (via == VIA_EMULATED) continue; /* OpenBLAS's threading is its own */
        const int m = via == VIA_AMX_EMULATED ? 70 : M; /* the tile emulator is slow */
        nnz_set_threads(1);
        run_gemm(via, true, false, true, m, N, K, 1.0f, A, K, B, K, 0.0f, C1, N);
        nnz_set_threads(2);
        run_gemm(via, true, false, true, m, N, K, 1.0f, A, K, B, K, 0.0f, C2, N);
        if (memcmp(C1, C2, sizeof(float) * m * N) != 0) fail_msg("%s: 1 and 2 threads differ", via_names[via]);
        /* a K split into groups (M*N = 20 x 10 is one task; K = 9000 = 8 groups of ~1125) */
        nnz_set_threads(1);
        run_gemm(via, true, true, false, 20, 10, 9000, 1.0f, A, 20, B, 10, 0.0f, C1, 10);
        nnz_set_threads(2);
        run_gemm(via, true, true, false, 20, 10, 9000, 1.0f, A, 20, B, 10, 0.0f, C2, 10);
        if (memcmp(C1, C2, sizeof(float) * 20 * 10) != 0)
            fail_msg("%s: 1 and 2 threads differ on a split K", via_names[via]);
        /* one M block: each of 3 threads packs its own B panels; N over NC (two N blocks, the
         * second of fewer panels) and K = 512 + 88 (a shorter last K block) */
        const int nw = via == VIA_AMX_EMULATED ? 2100 : 3100, mw = via == VIA_AMX_EMULATED ? 16 : 100;
        nnz_set_threads(1);
        run_gemm(via, true, false, true, mw, nw, K, 1.0f, A, K, Bw, K, 0.0f, Cw1, nw);
        nnz_set_threads(3);
        run_gemm(via, true, false, true, mw, nw, K, 1.0f, A, K, Bw, K, 0.0f, Cw2, nw);
        if (memcmp(Cw1, Cw2, sizeof(float) * mw * nw) != 0)
            fail_msg("%s: 1 and 3 threads differ on one M block", via_names[via]);
    }
    nnz_set_threads(saved);
    free(A), free(B), free(C1), free(C2), free(Bw), free(Cw1), free(Cw2);
}

/* A bf16 A read in place (AMX, a_in_place) must stop where the matrix does: an A whose rows hold
 * NaN past K (ld > K), with K not a multiple of 32 (a short last K block): read in place past
 * its end, a NaN meets B's zero padding and C holds NaN. M is not a multiple of 32 and A is
 * allocated to its last row, so an edge panel read in place reads past the allocation (what
 * the sanitizer build catches; its rows would not be stored). Also 1 and 3 threads on one M
 * block of bf16 A (in place on every full panel), bit for bit. */
static void test_gemm_a_in_place_bounds(void **state) {
    (void)state;
    enum { M = 45, N = 70, K = 561, LDA = K + 40 };
    nnz_bf16 *A = malloc(sizeof(nnz_bf16) * (size_t)M * LDA), *B = malloc(sizeof(nnz_bf16) * (size_t)K * N);
    float *Af = malloc(sizeof(float) * (size_t)M * K), *Bf = malloc(sizeof(float) * (size_t)K * N);
    float *C1 = malloc(sizeof(float) * M * N), *C3 = malloc(sizeof(float) * M * N);
    assert_true(A && B && Af && Bf && C1 && C3);
    tu_fill_uniform(Af, (int64_t)M * K, -1, 1, 71);
    tu_fill_uniform(Bf, (int64_t)K * N, -1, 1, 72);
    const nnz_bf16 qnan = 0x7FC0;
    for (size_t i = 0; i < (size_t)M * LDA; i++) A[i] = qnan;
    for (int i = 0; i < M; i++) nnz_cvt_f32_to_bf16_ref(K, Af + (size_t)i * K, A + (size_t)i * LDA);
    nnz_cvt_f32_to_bf16_ref((int64_t)K * N, Bf, B);
    const int saved = nnz_get_threads();
    for (int via = VIA_DISPATCH; via <= VIA_AMX_EMULATED; via++) {
        if (via == VIA_AVX512BF16 && !nnz_isa_supported(NNZ_ISA_AVX512BF16)) continue;
        if (via == VIA_AMX && !nnz_isa_supported(NNZ_ISA_AMX)) continue;
        nnz_set_threads(1);
        run_gemm(via, false, false, false, M, N, K, 1.0f, A, LDA, B, N, 0.0f, C1, N);
        for (int i = 0; i < M * N; i++)
            if (!isfinite(C1[i])) fail_msg("%s: C[%d] = %g: A was read past its rows or columns", via_names[via], i, C1[i]);
        if (via == VIA_EMULATED) continue; /* OpenBLAS's threading is its own */
        nnz_set_threads(3);
        run_gemm(via, false, false, false, M, N, K, 1.0f, A, LDA, B, N, 0.0f, C3, N);
        if (memcmp(C1, C3, sizeof(float) * M * N) != 0) fail_msg("%s: 1 and 3 threads differ on a bf16 A", via_names[via]);
    }
    nnz_set_threads(saved);
    free(A), free(B), free(Af), free(Bf), free(C1), free(C3);
}

/* ---- the im2col source ---- */

typedef bool (*src_path)(int, int, int, float, const nnz_bf16_src *, const nnz_bf16_src *, float, float *, int);

/* On one path: the convolution's forward (im2col (M,K) * W^T) and weight gradient
 * (dout^T (OC,M) * im2col (M,K)) with the im2col source must give the same bits as the same
 * path over the im2col matrix made (nnz_im2col_nhwc, rounded): the same packed numbers in the
 * same order. Inputs in [-1,1] hold no denormals, where the roundings could differ. */
static void im2col_source_case(src_path path, const char *name, const nnz_conv_window *g, int N, int IC, int OC) {
    const int K = g->KH * g->KW * IC, M = N * g->OH * g->OW;
    const size_t in_n = (size_t)N * g->H * g->W * IC;
    float *in = malloc(in_n * 4), *colf = malloc((size_t)M * K * 4), *dout = malloc((size_t)M * OC * 4);
    float *c1 = malloc((size_t)M * OC * 4), *c2 = malloc((size_t)M * OC * 4), *w = malloc((size_t)OC * K * 4);
    float *d1 = malloc((size_t)OC * K * 4), *d2 = malloc((size_t)OC * K * 4);
    nnz_bf16 *col = malloc((size_t)M * K * 2), *wb = malloc((size_t)OC * K * 2), *db = malloc((size_t)M * OC * 2);
    assert_true(in && colf && dout && c1 && c2 && w && d1 && d2 && col && wb && db);
    tu_fill_uniform(in, (int64_t)in_n, -1, 1, 71 + IC);
    tu_fill_uniform(w, (int64_t)OC * K, -1, 1, 72 + OC);
    tu_fill_uniform(dout, (int64_t)M * OC, -1, 1, 73 + M);
    nnz_im2col_nhwc(g, N, IC, 0, IC, in, colf);
    nnz_cvt_f32_to_bf16_ref((int64_t)M * K, colf, col);
    nnz_cvt_f32_to_bf16_ref((int64_t)OC * K, w, wb);
    nnz_cvt_f32_to_bf16_ref((int64_t)M * OC, dout, db);
    nnz_bf16 *inb = malloc(in_n * 2);
    assert_non_null(inb);
    nnz_cvt_f32_to_bf16_ref((int64_t)in_n, in, inb);
    const nnz_bf16_src win = {.p = in, .f32 = true, .win = g, .C = IC}, made = {.p = col, .ld = K};
    const nnz_bf16_src winb = {.p = inb, .win = g, .C = IC}; /* the input already in bf16 */
    const nnz_bf16_src wt = {.p = wb, .ld = K, .trans = true}, dt = {.p = db, .ld = OC, .trans = true};
    assert_true(path(M, OC, K, 1.0f, &win, &wt, 0.0f, c1, OC));
    assert_true(path(M, OC, K, 1.0f, &made, &wt, 0.0f, c2, OC));
    if (memcmp(c1, c2, (size_t)M * OC * 4) != 0)
        fail_msg("%s: forward over the im2col source differs (H=%d KH=%d stride=%d pad=%d IC=%d)", name, g->H, g->KH,
                 g->stride, g->pad, IC);
    assert_true(path(M, OC, K, 1.0f, &winb, &wt, 0.0f, c1, OC));
    if (memcmp(c1, c2, (size_t)M * OC * 4) != 0)
        fail_msg("%s: forward over the bf16 im2col source differs (H=%d KH=%d stride=%d pad=%d IC=%d)", name, g->H,
                 g->KH, g->stride, g->pad, IC);
    tu_fill_uniform(d1, (int64_t)OC * K, -1, 1, 74);
    memcpy(d2, d1, (size_t)OC * K * 4);
    assert_true(path(OC, K, M, 1.0f, &dt, &win, 1.0f, d1, K));
    assert_true(path(OC, K, M, 1.0f, &dt, &made, 1.0f, d2, K));
    if (memcmp(d1, d2, (size_t)OC * K * 4) != 0)
        fail_msg("%s: weight gradient over the im2col source differs (H=%d KH=%d stride=%d pad=%d IC=%d)", name,
                 g->H, g->KH, g->stride, g->pad, IC);
    tu_fill_uniform(d1, (int64_t)OC * K, -1, 1, 74);
    assert_true(path(OC, K, M, 1.0f, &dt, &winb, 1.0f, d1, K));
    if (memcmp(d1, d2, (size_t)OC * K * 4) != 0)
        fail_msg("%s: weight gradient over the bf16 im2col source differs (H=%d KH=%d stride=%d pad=%d IC=%d)", name,
                 g->H, g->KH, g->stride, g->pad, IC);
    /* and the made matrix is right: one element against the oracle */
    float r;
    nnz_gemm_bf16_ref(false, true, 1, 1, K, 1.0f, col + (size_t)(M - 1) * K, K, wb + (size_t)(OC - 1) * K, K, 0.0f,
                      &r, 1);
    assert_true(fabsf(c1[(size_t)M * OC - 1] - r) <= 2.0f * K * (float)UNIT_ROUNDOFF * K + 1e-30f);
    free(in), free(inb), free(colf), free(dout), free(c1), free(c2), free(w), free(d1), free(d2), free(col), free(wb),
        free(db);
}

static void test_gemm_im2col_source(void **state) {
    (void)state;
    /* IC 1 (runs of one channel), 3, 20 (runs past 16); padding, stride 2, a 1x1; M past a
     * block and K past one K block (5*5*24 = 600), a long K split into groups (wgrad, M = 4096),
     * column windows narrower than a window row (64 channels) */
    static const struct { int H, KH, stride, pad, IC, OC, N; } cases[] = {
        {7, 3, 1, 1, 1, 5, 2}, {9, 5, 2, 2, 3, 17, 3}, {6, 3, 1, 0, 20, 33, 2},
        {5, 1, 1, 0, 7, 9, 4}, {8, 5, 1, 2, 24, 40, 1}, {16, 3, 1, 1, 2, 6, 16},
        /* 64 channels: a 32-column panel of B can end inside a window row's left padding; with
         * W = 7, pixel 511 (the last row of a full 512 x 32 staging block) has ow = 0 there, so a
         * write past the row is a write past the block (the sanitizer build catches it) */
        {6, 3, 1, 1, 64, 8, 13},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nnz_conv_window g = {.H = cases[i].H, .W = cases[i].H + 1, .KH = cases[i].KH, .KW = cases[i].KH,
                             .stride = cases[i].stride, .pad = cases[i].pad};
        g.OH = (g.H + 2 * g.pad - g.KH) / g.stride + 1;
        g.OW = (g.W + 2 * g.pad - g.KW) / g.stride + 1;
        im2col_source_case(nnz_gemm_bf16_amx_emulated_src, "amx_emulated", &g, cases[i].N, cases[i].IC, cases[i].OC);
        if (nnz_isa_supported(NNZ_ISA_AVX512BF16))
            im2col_source_case(nnz_gemm_bf16_avx512bf16_src, "avx512bf16", &g, cases[i].N, cases[i].IC, cases[i].OC);
        if (nnz_isa_supported(NNZ_ISA_AMX))
            im2col_source_case(nnz_gemm_bf16_amx_src, "amx", &g, cases[i].N, cases[i].IC, cases[i].OC);
    }
    /* no native path below AVX512-BF16: the caller is told so, C untouched */
    float c = 7.0f;
    const nnz_bf16 one = 0x3F80;
    const nnz_bf16_src a = {.p = &one, .ld = 1}, b = {.p = &one, .ld = 1};
    nnz_isa_set(NNZ_ISA_AVX512);
    assert_false(nnz_gemm_bf16_src(1, 1, 1, 1.0f, &a, &b, 0.0f, &c, 1));
    assert_true(c == 7.0f);
    nnz_isa_set(nnz_isa_best());
    if (nnz_isa_supported(NNZ_ISA_AVX512BF16)) {
        assert_true(nnz_gemm_bf16_src(1, 1, 1, 1.0f, &a, &b, 0.0f, &c, 1));
        assert_true(c == 1.0f);
    }
}

/* The transposing conversion: dst(c, r) = bf16(src(r, c)) on odd shapes, padded leading
 * dimensions, a denormal kept (the scalar rounding), and dst's padding left untouched. */
static void test_cvt_transposed(void **state) {
    (void)state;
    static const int shapes[][2] = {{1, 1}, {70, 5}, {63, 17}, {129, 33}, {64, 16}, {3, 64}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const int rows = shapes[t][0], cols = shapes[t][1];
        const int64_t ld_src = cols + 3, ld_dst = rows + 5;
        float *src = malloc(sizeof(float) * (size_t)(rows * ld_src));
        nnz_bf16 *dst = malloc(sizeof(nnz_bf16) * (size_t)(cols * ld_dst));
        assert_non_null(src);
        assert_non_null(dst);
        nnz_rng r = nnz_rng_make(t, 3);
        for (int64_t i = 0; i < rows * ld_src; i++) src[i] = nnz_rng_normal(&r);
        src[0] = 1e-40f; /* a denormal: the scalar rounding keeps it */
        for (int64_t i = 0; i < cols * ld_dst; i++) dst[i] = 0xABCD;
        nnz_cvt_f32_to_bf16_transposed(rows, cols, src, ld_src, dst, ld_dst);
        for (int c = 0; c < cols; c++)
            for (int64_t i = 0; i < ld_dst; i++) {
                const nnz_bf16 want = i < rows ? nnz_bf16_from_f32(src[i * ld_src + c]) : 0xABCD;
                if (dst[c * ld_dst + i] != want)
                    fail_msg("transposed %dx%d: dst[%d][%lld] = 0x%04x, want 0x%04x", rows, cols, c, (long long)i,
                             dst[c * ld_dst + i], want);
            }
        free(src);
        free(dst);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalar_rounding),
        cmocka_unit_test(test_cvt_f32_to_bf16_paths),
        cmocka_unit_test(test_cvt_denormals_pinned),
        cmocka_unit_test(test_cvt_bf16_to_f32),
        cmocka_unit_test(test_cvt_transposed),
        cmocka_unit_test(test_round_to_bf16),
        cmocka_unit_test(test_packing_layouts),
        cmocka_unit_test(test_tile_emulator),
        cmocka_unit_test(test_gemm_dispatch_all_isas),
        cmocka_unit_test(test_gemm_paths_direct),
        cmocka_unit_test(test_gemm_denormal_inputs),
        cmocka_unit_test(test_gemm_thread_independent),
        cmocka_unit_test(test_gemm_a_in_place_bounds),
        cmocka_unit_test(test_gemm_im2col_source),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
