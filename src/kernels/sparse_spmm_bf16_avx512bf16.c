/* Sparse x dense, bf16 operands, AVX512-BF16 (vdpbf16ps): the per-item kernel. Compiled with
 * target attributes (the file builds without -mavx512bf16); called only when the path applies
 * (kernels.h, "sparse kernels (bf16)"; threading in sparse_spmm_bf16.c).
 *
 * Per block row: an MT x r register tile of fp32 accumulators (MT rows of X, r outputs in
 * r/16 zmm; r < 16: one zmm, lanes >= r unused) over the block row's whole block list. Per
 * k-pair of a block: NV loads of W (r 32-bit pairs, VNNI order, contiguous), and per row one
 * broadcast of the row's 32-bit bf16 pair of X from the zero-padded scratch, NV vdpbf16ps.
 * Then base (out and/or bias) + acc, stored with the rows-bound lane mask. */
#include "kernels/kernels.h"

#include <immintrin.h>

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#define ALWAYS_INLINE static inline __attribute__((always_inline)) TARGET

#define MT16 12 /* 12 x 1 accumulators (r <= 16) */
#define MT32 6  /* 6 x 2 (r = 32) */

typedef int32_t __attribute__((may_alias)) bf16_pair;

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

ALWAYS_INLINE void block_row(const nnz_bsr *A, const int MT, const int NV, int br, const nnz_bf16 *xs, int64_t lds,
                             const float *bias, bool accumulate, float *out, int64_t ldo) {
    const int r = A->r, c = A->c, np = c / 2;
    const __mmask16 lanes = r >= 16 ? 0xFFFF : (__mmask16)((1u << r) - 1u);
    __m512 acc[MT16][2];
#pragma GCC unroll 12
    for (int i = 0; i < MT; i++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) acc[i][v] = _mm512_setzero_ps();
    const int64_t ldp = lds / 2; /* scratch row stride in pairs */
    for (int32_t j = A->ptr[br]; j < A->ptr[br + 1]; j++) {
        const bf16_pair *x = (const bf16_pair *)(xs + (int64_t)A->idx[j] * c);
        const bf16_pair *w = (const bf16_pair *)(A->val_bf16 + (int64_t)j * r * c);
        for (int p = 0; p < np; p++) {
            __m512bh wv[2];
            if (NV == 1) wv[0] = (__m512bh)_mm512_maskz_loadu_epi32(lanes, w + p * r);
            else
#pragma GCC unroll 2
                for (int v = 0; v < NV; v++) wv[v] = (__m512bh)_mm512_loadu_si512(w + p * r + v * 16);
#pragma GCC unroll 12
            for (int i = 0; i < MT; i++) {
                const __m512bh xb = (__m512bh)_mm512_set1_epi32(x[i * ldp + p]);
#pragma GCC unroll 2
                for (int v = 0; v < NV; v++) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], xb, wv[v]);
            }
        }
    }
    const int oc0 = br * r;
#pragma GCC unroll 2
    for (int v = 0; v < NV; v++) {
        const int n = imax(0, imin(imin(16, r), A->rows - oc0 - v * 16));
        const __mmask16 mk = (__mmask16)((1u << n) - 1u);
        const __m512 bv = bias ? _mm512_maskz_loadu_ps(mk, bias + oc0 + v * 16) : _mm512_setzero_ps();
#pragma GCC unroll 12
        for (int i = 0; i < MT; i++) {
            float *o = out + i * ldo + oc0 + v * 16;
            const __m512 base = accumulate ? _mm512_add_ps(_mm512_maskz_loadu_ps(mk, o), bv) : bv;
            _mm512_mask_storeu_ps(o, mk, _mm512_add_ps(base, acc[i][v]));
        }
    }
}

ALWAYS_INLINE void rows_nv(const nnz_bsr *A, const int MT, const int NV, int mrows, int br0, int br1,
                           const nnz_bf16 *xs, int64_t lds, const float *bias, bool accumulate, float *out,
                           int64_t ldo) {
    for (int br = br0; br < br1; br++) {
        int m = 0;
        for (; m + MT <= mrows; m += MT)
            block_row(A, MT, NV, br, xs + m * lds, lds, bias, accumulate, out + m * ldo, ldo);
        for (; m < mrows; m++) block_row(A, 1, NV, br, xs + m * lds, lds, bias, accumulate, out + m * ldo, ldo);
    }
}

TARGET void nnz_spmm_bsr_bf16_avx512bf16(const nnz_bsr *A, int64_t m0, int mrows, int br0, int br1,
                                         const nnz_bf16_src *X, const float *bias, bool accumulate, float *out,
                                         int64_t ldo, nnz_bf16 *xs) {
    nnz_spmm_bf16_stage_x(A, X, m0, mrows, mrows, xs);
    const int64_t lds = nnz_spmm_bf16_scratch_ld(A);
    out += m0 * ldo;
    if (A->r == 32) rows_nv(A, MT32, 2, mrows, br0, br1, xs, lds, bias, accumulate, out, ldo);
    else rows_nv(A, MT16, 1, mrows, br0, br1, xs, lds, bias, accumulate, out, ldo);
}
