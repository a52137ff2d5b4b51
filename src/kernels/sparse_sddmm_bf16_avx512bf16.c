/* SDDMM with bf16 inputs, AVX512-BF16 (vdpbf16ps): the per-item kernel over a staged chunk of
 * m. Compiled with target attributes (the file builds without -mavx512bf16); called only when
 * the path applies. Contract in kernels.h ("SDDMM with bf16 inputs"); staging and threading in
 * sparse_sddmm_bf16.c.
 *
 * r >= 16 (register tile over i): dval's block is column-major, so for one kk the r values
 * of i are contiguous: r/16 zmm. A KT x NV tile of accumulators (KT columns kk, NV = r/16)
 * is loaded from dval (lanes masked to the rows inside the matrix, columns past it skipped),
 * then per m-pair p: NV loads of dp (16 i x the pair) and per kk one broadcast of xt's 32-bit
 * pair (X(2p, k), X(2p+1, k)), NV vdpbf16ps; stored back with the same masks.
 * r < 16 (1, 4, 8): too few i for a vector; each position (i, kk) is a dot product of xt's
 * row k and dt's row i over the chunk, 32 m per vdpbf16ps into 16 lane sums, in an IT x 4
 * register tile (IT = 4 for r >= 4, else 1); the lane sums are reduced and added to dval. */
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
    const bf16_pair *dp = (const bf16_pair *)(ch->dp + (int64_t)br * r * 2);
    const int64_t ldp = ch->ldp / 2; /* in pairs */
    for (int kk0 = 0; kk0 < c && col0 + kk0 < A->cols; kk0 += KT) {
        const int nk = imin(KT, A->cols - col0 - kk0); /* columns inside the matrix */
        __m512 acc[16][2];
        const bf16_pair *x[16];
#pragma GCC unroll 16
        for (int t = 0; t < KT; t++) {
            x[t] = (const bf16_pair *)(ch->xt + (int64_t)(col0 + kk0 + t) * ch->ldt);
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++)
                acc[t][v] = _mm512_maskz_loadu_ps(t < nk ? mk[v] : 0, blk + (kk0 + t) * r + v * 16);
        }
        for (int p = 0; p < np; p++) {
            __m512bh dv[2];
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++) dv[v] = (__m512bh)_mm512_loadu_si512(dp + p * ldp + v * 16);
#pragma GCC unroll 16
            for (int t = 0; t < KT; t++) {
                const __m512bh xv = (__m512bh)_mm512_set1_epi32(x[t][p]);
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

ALWAYS_INLINE void block_dots(const nnz_bsr *A, const int IT, const nnz_sddmm_bf16_chunk *ch, int br, int32_t j,
                              float *dval) {
    enum { KT = 4 };
    const int r = A->r, c = A->c, col0 = A->idx[j] * c;
    float *blk = dval + (int64_t)j * r * c;
    for (int ii0 = 0; ii0 < r && br * r + ii0 < A->rows; ii0 += IT)
        for (int kk0 = 0; kk0 < c && col0 + kk0 < A->cols; kk0 += KT) {
            __m512 acc[4][KT];
            const nnz_bf16 *x[KT], *d[4];
#pragma GCC unroll 4
            for (int t = 0; t < KT; t++) x[t] = ch->xt + (int64_t)(col0 + kk0 + t) * ch->ldt;
#pragma GCC unroll 4
            for (int u = 0; u < IT; u++) {
                d[u] = ch->dt + (int64_t)(br * r + ii0 + u) * ch->ldt;
#pragma GCC unroll 4
                for (int t = 0; t < KT; t++) acc[u][t] = _mm512_setzero_ps();
            }
            for (int s = 0; s < ch->mpad; s += 32) {
                __m512bh xv[KT];
#pragma GCC unroll 4
                for (int t = 0; t < KT; t++) xv[t] = (__m512bh)_mm512_loadu_si512(x[t] + s);
#pragma GCC unroll 4
                for (int u = 0; u < IT; u++) {
                    const __m512bh dv = (__m512bh)_mm512_loadu_si512(d[u] + s);
#pragma GCC unroll 4
                    for (int t = 0; t < KT; t++) acc[u][t] = _mm512_dpbf16_ps(acc[u][t], dv, xv[t]);
                }
            }
            const int ni = imin(IT, A->rows - br * r - ii0), nk = imin(KT, A->cols - col0 - kk0);
            for (int u = 0; u < ni; u++)
                for (int t = 0; t < nk; t++) blk[(kk0 + t) * r + ii0 + u] += _mm512_reduce_add_ps(acc[u][t]);
        }
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
        } else if (r >= 4) {
            block_dots(A, 4, ch, br, j, dval);
        } else {
            block_dots(A, 1, ch, br, j, dval);
        }
    }
}
