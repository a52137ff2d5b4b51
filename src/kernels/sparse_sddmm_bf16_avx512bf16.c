/* SDDMM with bf16 inputs, AVX512-BF16 (vdpbf16ps): the per-item kernel over a staged chunk of
 * m, and the staging of a chunk in m-pairs. Compiled with target attributes (the file builds
 * without -mavx512bf16); called only when the path applies. Contract in kernels.h ("SDDMM
 * with bf16 inputs"); threading in sparse_sddmm_bf16.c.
 *
 * Both operands are staged in m-pairs: xp[p][k] and dp[p][i] are 32-bit words holding the
 * bf16 of rows 2p (low half) and 2p+1 (high half): one vdpbf16ps lane adds both products of a
 * pair. dval's block is column-major ((c kk) x (r i), row stride r).
 * r >= 16 (vector over i): for one kk the r values of i are contiguous: r/16 zmm. A KT x NV
 *   tile of accumulators (KT columns kk, NV = r/16) is loaded from dval (lanes masked to the
 *   rows inside the matrix, columns past it skipped), then per pair p: NV loads of dp and per
 *   kk one broadcast of xp's pair, NV vdpbf16ps; stored back with the same masks.
 * r < 16 (1, 4, 8; vector over kk): the c columns of a block are c contiguous pairs of xp (one
 *   zmm, masked for c < 16; two for c = 32); an r x NV tile of accumulators is gathered from
 *   dval (stride r), then per pair NV loads of xp and per i one broadcast of dp's pair, NV
 *   vdpbf16ps; scattered back. */
#include "kernels/kernels.h"

#include <immintrin.h>

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#define ALWAYS_INLINE static inline __attribute__((always_inline)) TARGET

typedef int32_t __attribute__((may_alias)) bf16_pair;

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

ALWAYS_INLINE void block_wide(const nnz_bsr *A, const int KT, const int NV, const nnz_sddmm_bf16_chunk *ch, int br,
                              int32_t j, float *dval) {
    const int r = A->r, c = A->c, col0 = A->idx[j] * c, np = ch->mpad / 2;
    float *blk = dval + (int64_t)j * r * c;
    __mmask16 mk[2];
#pragma GCC unroll 2
    for (int v = 0; v < NV; v++) {
        const int n = imax(0, imin(16, A->rows - br * r - v * 16));
        mk[v] = (__mmask16)((1u << n) - 1u);
    }
    const bf16_pair *dp = (const bf16_pair *)ch->dp + br * r, *xp = (const bf16_pair *)ch->xp + col0;
    const int64_t ldp = ch->ldp / 2, ldx = ch->ldxp / 2; /* in pairs */
    for (int kk0 = 0; kk0 < c && col0 + kk0 < A->cols; kk0 += KT) {
        const int nk = imin(KT, A->cols - col0 - kk0); /* columns inside the matrix */
        __m512 acc[16][2];
#pragma GCC unroll 16
        for (int t = 0; t < KT; t++)
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++)
                acc[t][v] = _mm512_maskz_loadu_ps(t < nk ? mk[v] : 0, blk + (kk0 + t) * r + v * 16);
        for (int p = 0; p < np; p++) {
            __m512bh dv[2];
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++) dv[v] = (__m512bh)_mm512_loadu_si512(dp + p * ldp + v * 16);
            const bf16_pair *x = xp + p * ldx + kk0;
#pragma GCC unroll 16
            for (int t = 0; t < KT; t++) {
                const __m512bh xv = (__m512bh)_mm512_set1_epi32(x[t]);
#pragma GCC unroll 2
                for (int v = 0; v < NV; v++) acc[t][v] = _mm512_dpbf16_ps(acc[t][v], xv, dv[v]);
            }
        }
#pragma GCC unroll 16
        for (int t = 0; t < KT; t++)
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++)
                _mm512_mask_storeu_ps(blk + (kk0 + t) * r + v * 16, t < nk ? mk[v] : 0, acc[t][v]);
    }
}

ALWAYS_INLINE void block_narrow(const nnz_bsr *A, const int R, const int NV, const nnz_sddmm_bf16_chunk *ch, int br,
                                int32_t j, float *dval) {
    const int c = A->c, col0 = A->idx[j] * c, np = ch->mpad / 2;
    const int nr = imin(R, A->rows - br * R); /* rows inside the matrix */
    float *blk = dval + (int64_t)j * R * c;
    __mmask16 mk[2];
    __m512i off[2];
#pragma GCC unroll 2
    for (int v = 0; v < NV; v++) {
        const int n = imax(0, imin(imin(16, c - v * 16), A->cols - col0 - v * 16)); /* columns inside */
        mk[v] = (__mmask16)((1u << n) - 1u);
        /* lane l: column kk = v*16 + l, at kk*R in the block */
        off[v] = _mm512_mullo_epi32(_mm512_add_epi32(_mm512_set1_epi32(v * 16),
                                                     _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
                                                                       14, 15)),
                                    _mm512_set1_epi32(R));
    }
    __m512 acc[8][2];
#pragma GCC unroll 8
    for (int u = 0; u < R; u++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++)
            acc[u][v] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), u < nr ? mk[v] : 0, off[v], blk + u, 4);
    const bf16_pair *dp = (const bf16_pair *)ch->dp + br * R, *xp = (const bf16_pair *)ch->xp + col0;
    const int64_t ldp = ch->ldp / 2, ldx = ch->ldxp / 2; /* in pairs */
    const __mmask16 lanes = c >= 16 ? 0xFFFF : (__mmask16)((1u << c) - 1u);
    for (int p = 0; p < np; p++) {
        __m512bh xv[2];
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) xv[v] = (__m512bh)_mm512_maskz_loadu_epi32(lanes, xp + p * ldx + v * 16);
        const bf16_pair *d = dp + p * ldp;
#pragma GCC unroll 8
        for (int u = 0; u < R; u++) {
            const __m512bh dv = (__m512bh)_mm512_set1_epi32(d[u]);
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++) acc[u][v] = _mm512_dpbf16_ps(acc[u][v], dv, xv[v]);
        }
    }
#pragma GCC unroll 8
    for (int u = 0; u < R; u++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) _mm512_mask_i32scatter_ps(blk + u, u < nr ? mk[v] : 0, off[v], acc[u][v], 4);
}

TARGET void nnz_sddmm_bsr_bf16_avx512bf16(const nnz_bsr *A, const nnz_sddmm_bf16_chunk *ch, int32_t j0, int32_t j1,
                                          float *dval) {
    if (j0 >= j1) return;
    const int r = A->r, c = A->c;
    int br = nnz_bsr_block_row_of(A, j0);
    for (int32_t j = j0; j < j1; j++) {
        while (A->ptr[br + 1] <= j) br++;
        if (r == 32) {
            if (c >= 8) block_wide(A, 8, 2, ch, br, j, dval);
            else block_wide(A, 4, 2, ch, br, j, dval);
        } else if (r == 16) {
            if (c >= 16) block_wide(A, 16, 1, ch, br, j, dval);
            else if (c == 8) block_wide(A, 8, 1, ch, br, j, dval);
            else block_wide(A, 4, 1, ch, br, j, dval);
        } else if (r == 8) {
            if (c == 32) block_narrow(A, 8, 2, ch, br, j, dval);
            else block_narrow(A, 8, 1, ch, br, j, dval);
        } else if (r == 4) {
            if (c == 32) block_narrow(A, 4, 2, ch, br, j, dval);
            else block_narrow(A, 4, 1, ch, br, j, dval);
        } else {
            if (c == 32) block_narrow(A, 1, 2, ch, br, j, dval);
            else block_narrow(A, 1, 1, ch, br, j, dval);
        }
    }
}

/* the 16 values at p (masked to m) as bf16 in the low half of each 32-bit lane, rounded as
 * nnz_bf16_from_f32 (bits + 0x7FFF + bit 16, high half; NaN quieted): bit-identical to it */
ALWAYS_INLINE __m512i round_lo(const float *p, __mmask16 m) {
    const __m512i u = _mm512_castps_si512(_mm512_maskz_loadu_ps(m, p));
    const __m512i abs = _mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF));
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(abs, _mm512_set1_epi32(0x7F800000));
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
    return _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x0040));
}

ALWAYS_INLINE __m512i widen_lo(const nnz_bf16 *p, __mmask16 m) {
    return _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p));
}

TARGET void nnz_sddmm_bf16_stage_pairs_avx512(const nnz_bf16_src *src, int64_t m0, int mrows, int p0, int p1, int n,
                                              nnz_bf16 *out, int64_t ldo) {
    const int full = n / 16 * 16;
    const __mmask16 tail = (__mmask16)((1u << (n - full)) - 1u);
    for (int p = p0; p < p1; p++) {
        const int m = 2 * p;
        int32_t *o = (int32_t *)(out + (int64_t)p * ldo);
        if (m >= mrows) { /* past the chunk's rows: zeros */
            for (int i = 0; i < n; i += 16)
                _mm512_mask_storeu_epi32(o + i, i < full ? 0xFFFF : tail, _mm512_setzero_si512());
            continue;
        }
        const bool have1 = m + 1 < mrows;
        if (src->f32) {
            const float *r0 = (const float *)src->p + (m0 + m) * src->ld, *r1 = r0 + src->ld;
            int i = 0;
            for (; i < full; i += 16) {
                const __m512i hi = have1 ? round_lo(r1 + i, 0xFFFF) : _mm512_setzero_si512();
                _mm512_storeu_si512(o + i, _mm512_or_si512(round_lo(r0 + i, 0xFFFF), _mm512_slli_epi32(hi, 16)));
            }
            if (i < n) {
                const __m512i hi = have1 ? round_lo(r1 + i, tail) : _mm512_setzero_si512();
                _mm512_mask_storeu_epi32(o + i, tail, _mm512_or_si512(round_lo(r0 + i, tail), _mm512_slli_epi32(hi, 16)));
            }
        } else {
            const nnz_bf16 *r0 = (const nnz_bf16 *)src->p + (m0 + m) * src->ld, *r1 = r0 + src->ld;
            for (int i = 0; i < n; i += 16) {
                const __mmask16 mk = i < full ? 0xFFFF : tail;
                const __m512i hi = have1 ? widen_lo(r1 + i, mk) : _mm512_setzero_si512();
                _mm512_mask_storeu_epi32(o + i, mk, _mm512_or_si512(widen_lo(r0 + i, mk), _mm512_slli_epi32(hi, 16)));
            }
        }
    }
}
