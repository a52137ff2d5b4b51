/* Sparse x dense kernels, AVX-512 (fp32). Compiled with target attributes, so the file builds
 * without -mavx512f; only called when nnz_isa_active() is avx512 or above. Format and
 * contract in kernels.h; threading in sparse_spmm.c. */
#include "kernels/kernels.h"

#include "kernels/simd_avx512.h"

#include <string.h>

#define ALWAYS_INLINE static inline __attribute__((always_inline)) TARGET

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

/* r[0..16) rows of 16 floats -> r[q] = column q (the in-register 16x16 transpose) */
ALWAYS_INLINE void transpose16(vec r[16]) {
    vec t[16];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) { /* r[4i+j], 128-bit lane L: rows 4i..4i+3 of column 4L+j */
        r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        const vec u0 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x44), u1 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xEE);
        const vec u2 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x44);
        const vec u3 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xEE);
        t[j] = _mm512_shuffle_f32x4(u0, u2, 0x88);
        t[4 + j] = _mm512_shuffle_f32x4(u0, u2, 0xDD);
        t[8 + j] = _mm512_shuffle_f32x4(u1, u3, 0x88);
        t[12 + j] = _mm512_shuffle_f32x4(u1, u3, 0xDD);
    }
#pragma GCC unroll 16
    for (int q = 0; q < 16; q++) r[q] = t[q];
}

TARGET void nnz_transpose_panel_f32_avx512(const float *src, int64_t ld, int64_t m0, int mrows, int k0, int k1,
                                           float *t) {
    for (int mb = 0; mb < 64; mb += VLEN) {
        const int rm = imax(0, imin(VLEN, mrows - mb));
        for (int kb = k0; kb < k1; kb += VLEN) {
            const int kn = imin(VLEN, k1 - kb);
            const vmask mk = vmask_first(kn);
            vec r[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++) r[i] = i < rm ? vmload(mk, src + (m0 + mb + i) * ld + kb) : vzero();
            transpose16(r);
            for (int q = 0; q < kn; q++) _mm512_storeu_ps(t + (int64_t)(kb + q) * 64 + mb, r[q]);
        }
    }
}

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
    if (xs) { /* see kernels.h: one sequential pass over X, rows an odd number of lines apart */
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
    nnz_transpose_panel_f32_avx512(X, ldx, m0, mrows, 0, K, xt);
    for (int k = K; k < Kp; k++)
        for (int m = 0; m < PANEL; m++) xt[(int64_t)k * PANEL + m] = 0.0f;

    switch (A->r) {
    case 1: panel_rows(A, 1, 4, mrows, br0, br1, xt, ot); break;
    case 4: panel_rows(A, 4, 4, mrows, br0, br1, xt, ot); break;
    default: panel_rows(A, 8, 2, mrows, br0, br1, xt, ot); break;
    }

    /* back to rows of out, 16 x 16 at a time, adding the base */
    const int i0 = br0 * A->r, i1 = imin(br1 * A->r, A->rows);
    for (int ib = i0; ib < i1; ib += VLEN) {
        const int in = imin(VLEN, i1 - ib);
        const vmask mk = vmask_first(in);
        const vec bv = bias ? vmload(mk, bias + ib) : vzero();
        for (int mb = 0; mb < mrows; mb += VLEN) {
            const int rm = imin(VLEN, mrows - mb);
            vec r[16];
#pragma GCC unroll 16
            for (int q = 0; q < 16; q++) r[q] = q < in ? _mm512_loadu_ps(ot + (int64_t)(ib - i0 + q) * PANEL + mb) : vzero();
            transpose16(r);
            for (int mm = 0; mm < rm; mm++) {
                float *o = out + (m0 + mb + mm) * ldo + ib;
                const vec base = accumulate ? vadd(vmload(mk, o), bv) : bv;
                vmstore(o, mk, vadd(base, r[mm]));
            }
        }
    }
}

/* ---- forward, CSR, a few rows of X (M <= 4): per row of W, 16 nonzeros at a time, X
 * gathered at their columns (the row of X stays in L1), one lane-sum per output. Lane l
 * of a row holds its nonzeros l, l+16, ... counted from the row's start, so the sum does
 * not depend on how rows are split among threads. */
TARGET void nnz_spmm_csr_gather_f32_avx512(const nnz_bsr *A, int64_t m0, int mrows, int br0, int br1,
                                           const float *X, int64_t ldx, const float *bias, bool accumulate,
                                           float *out, int64_t ldo) {
    for (int m = 0; m < mrows; m++) {
        const float *x = X + (m0 + m) * ldx;
        float *o = out + (m0 + m) * ldo;
        for (int i = br0; i < br1; i++) {
            const int32_t end = A->ptr[i + 1];
            int32_t j = A->ptr[i];
            vec acc0 = vzero(), acc1 = vzero();
            for (; j + 2 * VLEN <= end; j += 2 * VLEN) {
                const __m512i c0 = _mm512_loadu_si512(A->idx + j), c1 = _mm512_loadu_si512(A->idx + j + VLEN);
                acc0 = vfma(_mm512_loadu_ps(A->val + j), _mm512_i32gather_ps(c0, x, 4), acc0);
                acc1 = vfma(_mm512_loadu_ps(A->val + j + VLEN), _mm512_i32gather_ps(c1, x, 4), acc1);
            }
            for (; j < end; j += VLEN) {
                const vmask mk = vmask_first(imin(VLEN, end - j));
                const __m512i cj = _mm512_maskz_loadu_epi32(mk, A->idx + j);
                acc0 = vfma(vmload(mk, A->val + j), _mm512_mask_i32gather_ps(vzero(), mk, cj, x, 4), acc0);
            }
            const float base = (accumulate ? o[i] : 0.0f) + (bias ? bias[i] : 0.0f);
            o[i] = base + _mm512_reduce_add_ps(vadd(acc0, acc1));
        }
    }
}

/* ---- SDDMM: dval += sum over rows [m0, m0+mrows) of dout(m,row) * X(m,col), per block ----
 * r >= 16: vectors over the block's r rows (contiguous in dout and in dval's column-major
 * block), KG columns at a time; per m: NV loads of dout, KG broadcasts of X, KG*NV FMAs. */
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

/* ---- SDDMM for r = 1, 4, 8 and CSR: transposed panels ----
 * xt (bcols*c, 64) = X[m0.., :]^T and dt (brows*r, 64) = dout[m0.., :]^T, zero-padded (rows
 * past the matrix, lanes past the chunk's rows). Per kept position (i, k): one dot product of
 * dt row i and xt row k, 4 FMAs into a 16-lane vector; the vectors of up to 16 positions of
 * one row i are summed across lanes together (a 4-level tree, 45 ops for 16 sums) and added
 * into dval. Every position's lanes are combined in the same order whichever slot it takes,
 * so the result does not depend on how blocks are split. Positions outside the matrix are
 * skipped. */
#define SD_PANEL 64

ALWAYS_INLINE vec sd_dot(const vec d[4], const float *x) {
    const vec a = vfma(d[1], _mm512_loadu_ps(x + VLEN), _mm512_mul_ps(d[0], _mm512_loadu_ps(x)));
    const vec b = vfma(d[3], _mm512_loadu_ps(x + 3 * VLEN), _mm512_mul_ps(d[2], _mm512_loadu_ps(x + 2 * VLEN)));
    return vadd(a, b);
}

/* lane t of the tree's result holds the sum of slot sd_slot_of_lane[t] */
static const int sd_slot_of_lane[16] = {0, 2, 1, 3, 8, 10, 9, 11, 4, 6, 5, 7, 12, 14, 13, 15};

ALWAYS_INLINE vec sd_reduce16(const vec a[16]) {
    vec b[8], c[4], d[2];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) /* 256-bit halves: low half a_i, high half a_{i+8} */
        b[i] = vadd(_mm512_shuffle_f32x4(a[i], a[i + 8], 0x44), _mm512_shuffle_f32x4(a[i], a[i + 8], 0xEE));
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) /* 128-bit lanes: a_i, a_{i+8}, a_{i+4}, a_{i+12} */
        c[i] = vadd(_mm512_shuffle_f32x4(b[i], b[i + 4], 0x88), _mm512_shuffle_f32x4(b[i], b[i + 4], 0xDD));
#pragma GCC unroll 2
    for (int i = 0; i < 2; i++)
        d[i] = vadd(_mm512_shuffle_ps(c[i], c[i + 2], _MM_SHUFFLE(1, 0, 1, 0)),
                    _mm512_shuffle_ps(c[i], c[i + 2], _MM_SHUFFLE(3, 2, 3, 2)));
    return vadd(_mm512_shuffle_ps(d[0], d[1], _MM_SHUFFLE(2, 0, 2, 0)),
                _mm512_shuffle_ps(d[0], d[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

/* n <= 16 positions of one row: xrow[q] (xt rows), dst[q] (dval entries) */
ALWAYS_INLINE void sd_flush(const vec d[4], int n, const float *const *xrow, float *const *dst) {
    vec acc[16];
#pragma GCC unroll 16
    for (int q = 0; q < 16; q++) acc[q] = q < n ? sd_dot(d, xrow[q]) : vzero();
    float sums[16];
    _mm512_storeu_ps(sums, sd_reduce16(acc));
    for (int t = 0; t < 16; t++)
        if (sd_slot_of_lane[t] < n) *dst[sd_slot_of_lane[t]] += sums[t];
}

TARGET void nnz_sddmm_panel_f32_avx512(const nnz_bsr *A, int32_t j0, int32_t j1, const float *xt, const float *dt,
                                       float *dval) {
    if (j0 >= j1) return;
    int lo = 0, hi = A->brows - 1; /* the block row holding j0: last br with ptr[br] <= j0 */
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (A->ptr[mid] <= j0) lo = mid;
        else hi = mid - 1;
    }
    const int r = A->r, c = A->c;
    const float *xrow[16];
    float *dst[16];
    for (int br = lo; br < A->brows && A->ptr[br] < j1; br++) {
        const int32_t jlo = A->ptr[br] > j0 ? A->ptr[br] : j0, jhi = A->ptr[br + 1] < j1 ? A->ptr[br + 1] : j1;
        const int rn = imin(r, A->rows - br * r);
        for (int ii = 0; ii < rn; ii++) {
            const float *drow = dt + (int64_t)(br * r + ii) * SD_PANEL;
            vec d[4];
            for (int v = 0; v < 4; v++) d[v] = _mm512_loadu_ps(drow + v * VLEN);
            int n = 0;
            for (int32_t j = jlo; j < jhi; j++) {
                const int k0 = A->idx[j] * c, kn = imin(c, A->cols - k0);
                float *o = dval + (int64_t)j * r * c + ii;
                for (int kk = 0; kk < kn; kk++) {
                    xrow[n] = xt + (int64_t)(k0 + kk) * SD_PANEL;
                    dst[n] = o + kk * r;
                    if (++n == 16) {
                        sd_flush(d, 16, xrow, dst);
                        n = 0;
                    }
                }
            }
            if (n) sd_flush(d, n, xrow, dst);
        }
    }
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
    for (int32_t j = j0; j < j1; j++) {
        while (A->ptr[br + 1] <= j) br++;
        if (A->r == 32) sddmm_block_wide(A, 2, 8, m0, mrows, j, br, dout, ldd, X, ldx, dval);
        else sddmm_block_wide(A, 1, 16, m0, mrows, j, br, dout, ldd, X, ldx, dval);
    }
}

#undef ALWAYS_INLINE
