/* Sparse x dense kernels, AVX-512 (fp32). Compiled with target attributes, so the file builds
 * without -mavx512f; only called when nnz_isa_active() is avx512 or above. Format and
 * contract in kernels.h; threading in sparse_spmm.c. */
#include "kernels/kernels.h"

#include "kernels/simd_avx512.h"

#include <string.h>

#define ALWAYS_INLINE static inline __attribute__((always_inline)) TARGET

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

/* ---- forward, r = 16 or 32: register tile of MT rows of X x r outputs ----
 * Per block column k: NV = r/16 loads of W (the r values of column k are contiguous),
 * MT broadcasts of X[m,k], MT*NV FMAs; the accumulators live across the block row's whole
 * block list, then base (out and/or bias) is added once. */
#define TILE_MT16 12
#define TILE_MT32 6

ALWAYS_INLINE void tile_block_row(const nnz_bsr *A, const int MT, const int NV, int br, const float *X, int64_t ldx,
                                  const float *bias, bool accumulate, float *out, int64_t ldo) {
    const int r = NV * VLEN, c = A->c;
    vec acc[TILE_MT16][2];
#pragma GCC unroll 12
    for (int i = 0; i < MT; i++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) acc[i][v] = vzero();
    for (int32_t j = A->ptr[br]; j < A->ptr[br + 1]; j++) {
        const int k0 = A->idx[j] * c, kn = imin(c, A->cols - k0);
        const float *w = A->val + (int64_t)j * r * c;
        const float *x = X + k0;
        for (int kk = 0; kk < kn; kk++) {
            vec wv[2];
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++) wv[v] = _mm512_loadu_ps(w + kk * r + v * VLEN);
#pragma GCC unroll 12
            for (int i = 0; i < MT; i++) {
                const vec xb = vbcast(x + i * ldx + kk);
#pragma GCC unroll 2
                for (int v = 0; v < NV; v++) acc[i][v] = vfma(xb, wv[v], acc[i][v]);
            }
        }
    }
    const int oc0 = br * r;
#pragma GCC unroll 2
    for (int v = 0; v < NV; v++) {
        const vmask mk = vmask_first(imax(0, imin(VLEN, A->rows - oc0 - v * VLEN)));
        const vec bv = bias ? vmload(mk, bias + oc0 + v * VLEN) : vzero();
#pragma GCC unroll 12
        for (int i = 0; i < MT; i++) {
            float *o = out + i * ldo + oc0 + v * VLEN;
            const vec base = accumulate ? vadd(vmload(mk, o), bv) : bv;
            vmstore(o, mk, vadd(base, acc[i][v]));
        }
    }
}

ALWAYS_INLINE void tile_rows(const nnz_bsr *A, const int MT, const int NV, int64_t m0, int mrows, int br0, int br1,
                             const float *X, int64_t ldx, const float *bias, bool accumulate, float *out, int64_t ldo) {
    for (int br = br0; br < br1; br++) {
        int m = 0;
        for (; m + MT <= mrows; m += MT)
            tile_block_row(A, MT, NV, br, X + (m0 + m) * ldx, ldx, bias, accumulate, out + (m0 + m) * ldo, ldo);
        for (; m < mrows; m++)
            tile_block_row(A, 1, NV, br, X + (m0 + m) * ldx, ldx, bias, accumulate, out + (m0 + m) * ldo, ldo);
    }
}

TARGET void nnz_spmm_tile_f32_avx512(const nnz_bsr *A, int64_t m0, int mrows, int br0, int br1, const float *X,
                                     int64_t ldx, const float *bias, bool accumulate, float *out, int64_t ldo,
                                     float *xs) {
    if (xs) { /* rows 4 KiB apart share an L1 set: copy them to rows an odd number of lines apart */
        const int64_t lds = nnz_spmm_tile_scratch_ld(A->cols);
        for (int m = 0; m < mrows; m++) memcpy(xs + m * lds, X + (m0 + m) * ldx, (size_t)A->cols * sizeof(float));
        X = xs - m0 * lds;
        ldx = lds;
    }
    if (A->r == 16) tile_rows(A, TILE_MT16, 1, m0, mrows, br0, br1, X, ldx, bias, accumulate, out, ldo);
    else tile_rows(A, TILE_MT32, 2, m0, mrows, br0, br1, X, ldx, bias, accumulate, out, ldo);
}

/* ---- forward, r = 1, 4, 8 (CSR is 1x1): a transposed panel of 64 rows of X ----
 * xt (K', 64) = X[m0.., :]^T with K' = bcols*c rows (padding rows and lanes >= mrows are 0);
 * per nonzero: one broadcast of W, NVG loads of xt row k, NVG FMAs over 16 m each. Results
 * go to ot (rows of the part, 64) and are transposed back into out with the base. */
#define PANEL 64

ALWAYS_INLINE void panel_block_row(const nnz_bsr *A, const int R, const int NVG, int br, int g, const float *xt,
                                   float *ot_row0) {
    const int c = A->c;
    vec acc[8][4];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NVG; v++) acc[i][v] = vzero();
    const float *xg = xt + g * NVG * VLEN;
    for (int32_t j = A->ptr[br]; j < A->ptr[br + 1]; j++) {
        const float *w = A->val + (int64_t)j * R * c;
        const float *xk = xg + (int64_t)A->idx[j] * c * PANEL;
        for (int kk = 0; kk < c; kk++) {
            vec xv[4];
#pragma GCC unroll 4
            for (int v = 0; v < NVG; v++) xv[v] = _mm512_loadu_ps(xk + kk * PANEL + v * VLEN);
#pragma GCC unroll 8
            for (int i = 0; i < R; i++) {
                const vec wb = vbcast(w + kk * R + i);
#pragma GCC unroll 4
                for (int v = 0; v < NVG; v++) acc[i][v] = vfma(wb, xv[v], acc[i][v]);
            }
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NVG; v++) _mm512_storeu_ps(ot_row0 + i * PANEL + g * NVG * VLEN + v * VLEN, acc[i][v]);
}

ALWAYS_INLINE void panel_rows(const nnz_bsr *A, const int R, const int NVG, int mrows, int br0, int br1,
                              const float *xt, float *ot) {
    const int groups = (mrows + NVG * VLEN - 1) / (NVG * VLEN);
    for (int br = br0; br < br1; br++)
        for (int g = 0; g < groups; g++) panel_block_row(A, R, NVG, br, g, xt, ot + (int64_t)(br - br0) * R * PANEL);
}

TARGET void nnz_spmm_panel_f32_avx512(const nnz_bsr *A, int64_t m0, int mrows, int br0, int br1, const float *X,
                                      int64_t ldx, const float *bias, bool accumulate, float *out, int64_t ldo,
                                      float *xt, float *ot) {
    const int K = A->cols, Kp = A->bcols * A->c;
    /* transpose in 16x? strips: rows m of X are read contiguously, xt written with stride PANEL */
    for (int m = 0; m < mrows; m++) {
        const float *x = X + (m0 + m) * ldx;
        for (int k = 0; k < K; k++) xt[(int64_t)k * PANEL + m] = x[k];
    }
    if (mrows < PANEL)
        for (int k = 0; k < K; k++)
            for (int m = mrows; m < PANEL; m++) xt[(int64_t)k * PANEL + m] = 0.0f;
    for (int k = K; k < Kp; k++)
        for (int m = 0; m < PANEL; m++) xt[(int64_t)k * PANEL + m] = 0.0f;

    switch (A->r) {
    case 1: panel_rows(A, 1, 4, mrows, br0, br1, xt, ot); break;
    case 4: panel_rows(A, 4, 4, mrows, br0, br1, xt, ot); break;
    default: panel_rows(A, 8, 2, mrows, br0, br1, xt, ot); break;
    }

    const int i0 = br0 * A->r, i1 = imin(br1 * A->r, A->rows);
    for (int m = 0; m < mrows; m++) {
        float *o = out + (m0 + m) * ldo;
        for (int i = i0; i < i1; i++) {
            const float base = (accumulate ? o[i] : 0.0f) + (bias ? bias[i] : 0.0f);
            o[i] = base + ot[(int64_t)(i - i0) * PANEL + m];
        }
    }
}

/* ---- SDDMM: dval += sum over rows [m0, m0+mrows) of dout(m,row) * X(m,col), per block ----
 * r >= 16: vectors over the block's r rows (contiguous in dout and in dval's column-major
 * block), KG columns at a time; per m: NV loads of dout, KG broadcasts of X, KG*NV FMAs.
 * r < 16, c >= 4: vectors over the block's c columns (contiguous in X), R rows; the sums
 * are added into the column-major block lane by lane. CSR: 16 nonzeros of a row at a time,
 * X gathered at their columns. */
ALWAYS_INLINE void sddmm_colvec(const nnz_bsr *A, const int NV, const int KG, int64_t m0, int mrows, int32_t j,
                                int br, int kk0, const float *dout, int64_t ldd, const float *X, int64_t ldx,
                                float *dval) {
    const int r = NV * VLEN, oc0 = br * r, k0 = A->idx[j] * A->c + kk0;
    vmask mk[2];
    vec acc[16][2];
#pragma GCC unroll 2
    for (int v = 0; v < NV; v++) mk[v] = vmask_first(imax(0, imin(VLEN, A->rows - oc0 - v * VLEN)));
#pragma GCC unroll 16
    for (int q = 0; q < KG; q++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) acc[q][v] = vzero();
    for (int m = 0; m < mrows; m++) {
        const float *d = dout + (m0 + m) * ldd + oc0, *x = X + (m0 + m) * ldx + k0;
        vec dv[2];
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) dv[v] = vmload(mk[v], d + v * VLEN);
#pragma GCC unroll 16
        for (int q = 0; q < KG; q++) {
            const vec xb = vbcast(x + q);
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++) acc[q][v] = vfma(xb, dv[v], acc[q][v]);
        }
    }
    float *o = dval + (int64_t)j * r * A->c + (int64_t)kk0 * r;
#pragma GCC unroll 16
    for (int q = 0; q < KG; q++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) {
            float *p = o + q * r + v * VLEN;
            vmstore(p, mk[v], vadd(vmload(mk[v], p), acc[q][v]));
        }
}

ALWAYS_INLINE void sddmm_block_wide(const nnz_bsr *A, const int NV, const int KG, int64_t m0, int mrows, int32_t j,
                                    int br, const float *dout, int64_t ldd, const float *X, int64_t ldx, float *dval) {
    const int kn = imin(A->c, A->cols - A->idx[j] * A->c);
    int kk = 0;
    for (; kk + KG <= kn; kk += KG) sddmm_colvec(A, NV, KG, m0, mrows, j, br, kk, dout, ldd, X, ldx, dval);
    for (; kk < kn; kk++) sddmm_colvec(A, NV, 1, m0, mrows, j, br, kk, dout, ldd, X, ldx, dval);
}

/* R rows (R <= 8) of a block with c >= 4, vectors over c (two when c = 32) */
ALWAYS_INLINE void sddmm_rowvec(const nnz_bsr *A, const int R, int ii0, int64_t m0, int mrows, int32_t j, int br,
                                const float *dout, int64_t ldd, const float *X, int64_t ldx, float *dval) {
    const int r = A->r, c = A->c, k0 = A->idx[j] * c, kn = imin(c, A->cols - k0), oc = br * r + ii0;
    const int nv = (c + VLEN - 1) / VLEN;
    vmask mk[2] = {vmask_first(imin(VLEN, kn)), vmask_first(imax(0, imin(VLEN, kn - VLEN)))};
    vec acc[8][2];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) acc[i][0] = acc[i][1] = vzero();
    for (int m = 0; m < mrows; m++) {
        const float *d = dout + (m0 + m) * ldd + oc, *x = X + (m0 + m) * ldx + k0;
        const vec x0 = vmload(mk[0], x), x1 = vmload(mk[1], x + VLEN);
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) {
            const vec db = vbcast(d + i);
            acc[i][0] = vfma(db, x0, acc[i][0]);
            if (nv > 1) acc[i][1] = vfma(db, x1, acc[i][1]);
        }
    }
    float *o = dval + (int64_t)j * r * c;
    float lanes[2 * VLEN];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
        _mm512_storeu_ps(lanes, acc[i][0]);
        _mm512_storeu_ps(lanes + VLEN, acc[i][1]);
        for (int kk = 0; kk < kn; kk++) o[kk * r + ii0 + i] += lanes[kk];
    }
}

ALWAYS_INLINE void sddmm_block_narrow(const nnz_bsr *A, const int R, int64_t m0, int mrows, int32_t j, int br,
                                      const float *dout, int64_t ldd, const float *X, int64_t ldx, float *dval) {
    const int rn = imin(R, A->rows - br * R);
    if (rn == R) sddmm_rowvec(A, R, 0, m0, mrows, j, br, dout, ldd, X, ldx, dval);
    else
        for (int ii = 0; ii < rn; ii++) sddmm_rowvec(A, 1, ii, m0, mrows, j, br, dout, ldd, X, ldx, dval);
}

/* CSR: nonzeros [j, j+n) of row br, n <= 16 */
ALWAYS_INLINE void sddmm_csr_segment(const nnz_bsr *A, int64_t m0, int mrows, int32_t j, int n, int br,
                                     const float *dout, int64_t ldd, const float *X, int64_t ldx, float *dval) {
    const vmask mk = vmask_first(n);
    const __m512i cols = _mm512_maskz_loadu_epi32(mk, A->idx + j);
    vec acc0 = vzero(), acc1 = vzero();
    int m = 0;
    for (; m + 2 <= mrows; m += 2) { /* two chains: the gather's latency */
        const float *x0 = X + (m0 + m) * ldx, *x1 = x0 + ldx;
        const vec g0 = _mm512_mask_i32gather_ps(vzero(), mk, cols, x0, 4);
        const vec g1 = _mm512_mask_i32gather_ps(vzero(), mk, cols, x1, 4);
        acc0 = vfma(vbcast(dout + (m0 + m) * ldd + br), g0, acc0);
        acc1 = vfma(vbcast(dout + (m0 + m + 1) * ldd + br), g1, acc1);
    }
    if (m < mrows) {
        const vec g0 = _mm512_mask_i32gather_ps(vzero(), mk, cols, X + (m0 + m) * ldx, 4);
        acc0 = vfma(vbcast(dout + (m0 + m) * ldd + br), g0, acc0);
    }
    float *o = dval + j;
    vmstore(o, mk, vadd(vmload(mk, o), vadd(acc0, acc1)));
}

TARGET void nnz_sddmm_blocks_f32_avx512(const nnz_bsr *A, int64_t m0, int mrows, int32_t j0, int32_t j1,
                                        const float *dout, int64_t ldd, const float *X, int64_t ldx, float *dval) {
    if (j0 >= j1) return;
    int lo = 0, hi = A->brows - 1; /* the block row holding j0: last br with ptr[br] <= j0 */
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (A->ptr[mid] <= j0) lo = mid;
        else hi = mid - 1;
    }
    int br = lo;
    const bool csr = A->r == 1 && A->c == 1;
    for (int32_t j = j0; j < j1;) {
        while (A->ptr[br + 1] <= j) br++;
        if (csr) {
            const int n = imin(VLEN, imin(j1, A->ptr[br + 1]) - j);
            sddmm_csr_segment(A, m0, mrows, j, n, br, dout, ldd, X, ldx, dval);
            j += n;
            continue;
        }
        switch (A->r) {
        case 32: sddmm_block_wide(A, 2, 8, m0, mrows, j, br, dout, ldd, X, ldx, dval); break;
        case 16: sddmm_block_wide(A, 1, 16, m0, mrows, j, br, dout, ldd, X, ldx, dval); break;
        case 8: sddmm_block_narrow(A, 8, m0, mrows, j, br, dout, ldd, X, ldx, dval); break;
        case 4: sddmm_block_narrow(A, 4, m0, mrows, j, br, dout, ldd, X, ldx, dval); break;
        default: sddmm_block_narrow(A, 1, m0, mrows, j, br, dout, ldd, X, ldx, dval); break;
        }
        j++;
    }
}

#undef ALWAYS_INLINE
