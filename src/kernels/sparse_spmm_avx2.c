/* Sparse x dense kernels, AVX2 + FMA (fp32): the AVX-512 kernels' algorithms
 * (sparse_spmm_avx512.c) at 8 lanes and 16 registers. Compiled with target attributes;
 * only called when nnz_isa_active() is avx2. Format and contract in kernels.h. */
#include "kernels/kernels.h"

#include "kernels/simd_avx2.h"

#include <string.h>

#define ALWAYS_INLINE static inline __attribute__((always_inline)) TARGET

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

/* r[0..8) rows of 8 floats -> r[q] = column q */
ALWAYS_INLINE void transpose8(vec r[8]) {
    vec t[8], s[8];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) { /* s[4h+j], 128-bit lane L: rows 4h..4h+3 of column 4L+j */
        s[4 * h] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], _MM_SHUFFLE(1, 0, 1, 0));
        s[4 * h + 1] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], _MM_SHUFFLE(3, 2, 3, 2));
        s[4 * h + 2] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], _MM_SHUFFLE(1, 0, 1, 0));
        s[4 * h + 3] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        r[j] = _mm256_permute2f128_ps(s[j], s[4 + j], 0x20);
        r[4 + j] = _mm256_permute2f128_ps(s[j], s[4 + j], 0x31);
    }
}

TARGET void nnz_transpose_panel_f32_avx2(const float *src, int64_t ld, int64_t m0, int mrows, int k0, int k1,
                                         float *t) {
    for (int mb = 0; mb < 64; mb += VLEN) {
        const int rm = imax(0, imin(VLEN, mrows - mb));
        for (int kb = k0; kb < k1; kb += VLEN) {
            const int kn = imin(VLEN, k1 - kb);
            const vmask mk = vmask_first(kn);
            vec r[8];
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) r[i] = i < rm ? vmload(mk, src + (m0 + mb + i) * ld + kb) : vzero();
            transpose8(r);
            for (int q = 0; q < kn; q++) _mm256_storeu_ps(t + (int64_t)(kb + q) * 64 + mb, r[q]);
        }
    }
}

/* ---- forward, r = 16 or 32: MT rows of X x r outputs, NV = r/8 vectors (12 accumulators) ---- */
ALWAYS_INLINE void tile_block_row(const nnz_bsr *A, const int MT, const int NV, int br, const float *X, int64_t ldx,
                                  const float *bias, bool accumulate, float *out, int64_t ldo) {
    const int r = NV * VLEN, c = A->c;
    vec acc[6][4];
#pragma GCC unroll 6
    for (int i = 0; i < MT; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[i][v] = vzero();
    for (int32_t j = A->ptr[br]; j < A->ptr[br + 1]; j++) {
        const int k0 = A->idx[j] * c, kn = imin(c, A->cols - k0);
        const float *w = A->val + (int64_t)j * r * c;
        const float *x = X + k0;
        for (int kk = 0; kk < kn; kk++) {
            vec wv[4];
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) wv[v] = _mm256_loadu_ps(w + kk * r + v * VLEN);
#pragma GCC unroll 6
            for (int i = 0; i < MT; i++) {
                const vec xb = vbcast(x + i * ldx + kk);
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) acc[i][v] = vfma(xb, wv[v], acc[i][v]);
            }
        }
    }
    const int oc0 = br * r;
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) {
        const vmask mk = vmask_first(A->rows - oc0 - v * VLEN);
        const vec bv = bias ? vmload(mk, bias + oc0 + v * VLEN) : vzero();
#pragma GCC unroll 6
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

TARGET void nnz_spmm_tile_f32_avx2(const nnz_bsr *A, int64_t m0, int mrows, int br0, int br1, const float *X,
                                   int64_t ldx, const float *bias, bool accumulate, float *out, int64_t ldo,
                                   float *xs) {
    if (xs) { /* see kernels.h (nnz_spmm_tile_scratch_ld) */
        const int64_t lds = nnz_spmm_tile_scratch_ld(A->cols);
        for (int m = 0; m < mrows; m++) memcpy(xs + m * lds, X + (m0 + m) * ldx, (size_t)A->cols * sizeof(float));
        X = xs - m0 * lds;
        ldx = lds;
    }
    if (A->r == 16) tile_rows(A, 6, 2, m0, mrows, br0, br1, X, ldx, bias, accumulate, out, ldo);
    else tile_rows(A, 3, 4, m0, mrows, br0, br1, X, ldx, bias, accumulate, out, ldo);
}

/* ---- forward, r = 1, 4, 8 (CSR is 1x1): transposed 64-row panel, R x NVG accumulators ---- */
#define PANEL 64

ALWAYS_INLINE void panel_block_row(const nnz_bsr *A, const int R, const int NVG, int br, int g, const float *xt,
                                   float *ot_row0) {
    const int c = A->c;
    vec acc[8][8];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++)
#pragma GCC unroll 8
        for (int v = 0; v < NVG; v++) acc[i][v] = vzero();
    const float *xg = xt + g * NVG * VLEN;
    for (int32_t j = A->ptr[br]; j < A->ptr[br + 1]; j++) {
        const float *w = A->val + (int64_t)j * R * c;
        const float *xk = xg + (int64_t)A->idx[j] * c * PANEL;
        for (int kk = 0; kk < c; kk++) {
#pragma GCC unroll 8
            for (int i = 0; i < R; i++) {
                const vec wb = vbcast(w + kk * R + i);
#pragma GCC unroll 8
                for (int v = 0; v < NVG; v++)
                    acc[i][v] = vfma(wb, _mm256_loadu_ps(xk + kk * PANEL + v * VLEN), acc[i][v]);
            }
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < R; i++)
#pragma GCC unroll 8
        for (int v = 0; v < NVG; v++) _mm256_storeu_ps(ot_row0 + i * PANEL + g * NVG * VLEN + v * VLEN, acc[i][v]);
}

ALWAYS_INLINE void panel_rows(const nnz_bsr *A, const int R, const int NVG, int mrows, int br0, int br1,
                              const float *xt, float *ot) {
    const int groups = (mrows + NVG * VLEN - 1) / (NVG * VLEN);
    for (int br = br0; br < br1; br++)
        for (int g = 0; g < groups; g++) panel_block_row(A, R, NVG, br, g, xt, ot + (int64_t)(br - br0) * R * PANEL);
}

TARGET void nnz_spmm_panel_f32_avx2(const nnz_bsr *A, int64_t m0, int mrows, int br0, int br1, const float *X,
                                    int64_t ldx, const float *bias, bool accumulate, float *out, int64_t ldo,
                                    float *xt, float *ot) {
    const int K = A->cols, Kp = A->bcols * A->c;
    nnz_transpose_panel_f32_avx2(X, ldx, m0, mrows, 0, K, xt);
    for (int k = K; k < Kp; k++)
        for (int m = 0; m < PANEL; m++) xt[(int64_t)k * PANEL + m] = 0.0f;
    switch (A->r) {
    case 1: panel_rows(A, 1, 8, mrows, br0, br1, xt, ot); break;
    case 4: panel_rows(A, 4, 2, mrows, br0, br1, xt, ot); break;
    default: panel_rows(A, 8, 1, mrows, br0, br1, xt, ot); break;
    }
    const int i0 = br0 * A->r, i1 = imin(br1 * A->r, A->rows);
    for (int ib = i0; ib < i1; ib += VLEN) {
        const int in = imin(VLEN, i1 - ib);
        const vmask mk = vmask_first(in);
        const vec bv = bias ? vmload(mk, bias + ib) : vzero();
        for (int mb = 0; mb < mrows; mb += VLEN) {
            const int rm = imin(VLEN, mrows - mb);
            vec r[8];
#pragma GCC unroll 8
            for (int q = 0; q < 8; q++) r[q] = q < in ? _mm256_loadu_ps(ot + (int64_t)(ib - i0 + q) * PANEL + mb) : vzero();
            transpose8(r);
            for (int mm = 0; mm < rm; mm++) {
                float *o = out + (m0 + mb + mm) * ldo + ib;
                const vec base = accumulate ? vadd(vmload(mk, o), bv) : bv;
                vmstore(o, mk, vadd(base, r[mm]));
            }
        }
    }
}

/* ---- SDDMM, r >= 16: NV = r/8 vectors of dout x KG columns (12 accumulators) ---- */
ALWAYS_INLINE void sddmm_colvec(const nnz_bsr *A, const int NV, const int KG, int64_t m0, int mrows, int32_t j,
                                int br, int kk0, const float *dout, int64_t ldd, const float *X, int64_t ldx,
                                float *dval) {
    const int r = NV * VLEN, oc0 = br * r, k0 = A->idx[j] * A->c + kk0;
    vmask mk[4];
    vec acc[6][4];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) mk[v] = vmask_first(A->rows - oc0 - v * VLEN);
#pragma GCC unroll 6
    for (int q = 0; q < KG; q++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[q][v] = vzero();
    for (int m = 0; m < mrows; m++) {
        const float *d = dout + (m0 + m) * ldd + oc0, *x = X + (m0 + m) * ldx + k0;
        vec dv[4];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) dv[v] = vmload(mk[v], d + v * VLEN);
#pragma GCC unroll 6
        for (int q = 0; q < KG; q++) {
            const vec xb = vbcast(x + q);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[q][v] = vfma(xb, dv[v], acc[q][v]);
        }
    }
    float *o = dval + (int64_t)j * r * A->c + (int64_t)kk0 * r;
#pragma GCC unroll 6
    for (int q = 0; q < KG; q++)
#pragma GCC unroll 4
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

static int block_row_of(const nnz_bsr *A, int32_t j0) { /* last br with ptr[br] <= j0 */
    int lo = 0, hi = A->brows - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (A->ptr[mid] <= j0) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

TARGET void nnz_sddmm_blocks_f32_avx2(const nnz_bsr *A, int64_t m0, int mrows, int32_t j0, int32_t j1,
                                      const float *dout, int64_t ldd, const float *X, int64_t ldx, float *dval) {
    if (j0 >= j1) return;
    int br = block_row_of(A, j0);
    for (int32_t j = j0; j < j1; j++) {
        while (A->ptr[br + 1] <= j) br++;
        if (A->r == 32) sddmm_block_wide(A, 4, 3, m0, mrows, j, br, dout, ldd, X, ldx, dval);
        else sddmm_block_wide(A, 2, 6, m0, mrows, j, br, dout, ldd, X, ldx, dval);
    }
}

/* ---- SDDMM, r = 1, 4, 8 and CSR: 64-long dots of transposed panels, 8 reduced at once ----
 * Every position's lanes are added in the same order whichever slot it takes. */
ALWAYS_INLINE vec sd_reduce8(const vec a[8]) {
    const vec h0 = _mm256_hadd_ps(a[0], a[1]), h1 = _mm256_hadd_ps(a[2], a[3]);
    const vec h2 = _mm256_hadd_ps(a[4], a[5]), h3 = _mm256_hadd_ps(a[6], a[7]);
    const vec g0 = _mm256_hadd_ps(h0, h1), g1 = _mm256_hadd_ps(h2, h3);
    return vadd(_mm256_permute2f128_ps(g0, g1, 0x20), _mm256_permute2f128_ps(g0, g1, 0x31));
}

ALWAYS_INLINE void sd_flush(const float *drow, int n, const float *const *xrow, float *const *dst) {
    vec acc[8];
#pragma GCC unroll 8
    for (int q = 0; q < 8; q++) {
        acc[q] = vzero();
        if (q < n)
#pragma GCC unroll 8
            for (int v = 0; v < 8; v++)
                acc[q] = vfma(_mm256_loadu_ps(drow + v * VLEN), _mm256_loadu_ps(xrow[q] + v * VLEN), acc[q]);
    }
    float sums[8];
    _mm256_storeu_ps(sums, sd_reduce8(acc));
    for (int q = 0; q < n; q++) *dst[q] += sums[q];
}

TARGET void nnz_sddmm_panel_f32_avx2(const nnz_bsr *A, int32_t j0, int32_t j1, const float *xt, const float *dt,
                                     float *dval) {
    if (j0 >= j1) return;
    const int r = A->r, c = A->c;
    const float *xrow[8];
    float *dst[8];
    for (int br = block_row_of(A, j0); br < A->brows && A->ptr[br] < j1; br++) {
        const int32_t jlo = A->ptr[br] > j0 ? A->ptr[br] : j0, jhi = A->ptr[br + 1] < j1 ? A->ptr[br + 1] : j1;
        const int rn = imin(r, A->rows - br * r);
        for (int ii = 0; ii < rn; ii++) {
            const float *drow = dt + (int64_t)(br * r + ii) * PANEL;
            int n = 0;
            for (int32_t j = jlo; j < jhi; j++) {
                const int k0 = A->idx[j] * c, kn = imin(c, A->cols - k0);
                float *o = dval + (int64_t)j * r * c + ii;
                for (int kk = 0; kk < kn; kk++) {
                    xrow[n] = xt + (int64_t)(k0 + kk) * PANEL;
                    dst[n] = o + kk * r;
                    if (++n == 8) {
                        sd_flush(drow, 8, xrow, dst);
                        n = 0;
                    }
                }
            }
            if (n) sd_flush(drow, n, xrow, dst);
        }
    }
}

#undef ALWAYS_INLINE
