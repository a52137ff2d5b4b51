/* Packing op(A) and op(B) into the panels of the blocked bf16 GEMM (layouts in kernels.h),
 * from a stored matrix or from the im2col of an NHWC batch made on the fly,
 * and the plain-C AMX tile used to test the AMX layout on machines without AMX.
 * The loops read the source along its contiguous direction. */
#include "kernels/kernels.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* Each packer first makes the fp32 case a bf16 one: the panel's slice of the source is
 * rounded with nnz_cvt_f32_to_bf16 (vectorized) into a small bf16 copy that is then packed
 * like a bf16 source. The bf16 loops are the two shapes a VNNI pair takes:
 *   interleave: a pair is (row 2p, row 2p+1) of the stored matrix at one column;
 *   gather:     a pair is two adjacent elements of one stored row (read as one 32-bit word). */

typedef uint32_t __attribute__((may_alias)) pair32;              /* two bf16 as one word */
typedef uint32_t __attribute__((may_alias, aligned(2))) pair32u; /* the same, at any even address */

enum { STAGE_MAX = 32 * 512 }; /* the largest panel slice staged: 32 rows/columns x KC 512 */

/* out32[p*stride + j] = lo[j] | hi[j] << 16 for j < n (hi NULL: zeros) */
static void interleave(int n, const nnz_bf16 *lo, const nnz_bf16 *hi, pair32 *out) {
    if (hi) {
#pragma omp simd
        for (int j = 0; j < n; j++) out[j] = (uint32_t)lo[j] | (uint32_t)hi[j] << 16;
    } else {
#pragma omp simd
        for (int j = 0; j < n; j++) out[j] = lo[j];
    }
}

/* out32[p*stride] = the p-th pair of row (kc elements; an odd kc leaves a half pair) */
static void gather(int kc, const nnz_bf16 *row, pair32 *out, int stride) {
    const pair32u *r = (const pair32u *)row;
    int p = 0;
    for (; p < kc / 2; p++) out[(size_t)p * stride] = r[p];
    if (kc & 1) out[(size_t)p * stride] = row[kc - 1];
}

/* rows x cols of a stored fp32 matrix (leading dimension ld), rounded into dense bf16 */
static void stage_f32(const float *x, int64_t ld, int rows, int cols, nnz_bf16 *out) {
    for (int r = 0; r < rows; r++) nnz_cvt_f32_to_bf16(cols, x + r * ld, out + (size_t)r * cols);
}

/* One element of a source, rounded (the block-too-large fallback and the im2col source) */
static nnz_bf16 im2col_at(const nnz_bf16_src *X, int64_t r, int c) {
    const nnz_conv_window *g = X->win;
    int64_t n;
    int oh, ow;
    nnz_conv_pixel(g, r, &n, &oh, &ow);
    const int tap = c / X->C, kh = tap / g->KW, kw = tap % g->KW;
    const int ih = oh * g->stride - g->pad + kh, iw = ow * g->stride - g->pad + kw;
    if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W) return 0;
    const int64_t at = ((n * g->H + ih) * g->W + iw) * X->C + c % X->C;
    return X->f32 ? nnz_bf16_from_f32(((const float *)X->p)[at]) : ((const nnz_bf16 *)X->p)[at];
}

/* n values into out: bf16 copied, fp32 rounded (short runs inline, longer ones by the ISA's
 * vector kernel) */
static inline void copy_run(nnz_cvt_f32_to_bf16_fn cvt, const void *p, int64_t at, int n, nnz_bf16 *out) {
    if (!cvt) {
        memcpy(out, (const nnz_bf16 *)p + at, (size_t)n * sizeof(nnz_bf16));
        return;
    }
    const float *x = (const float *)p + at;
    if (n >= 16) cvt(n, x, out);
    else
        for (int i = 0; i < n; i++) out[i] = nnz_bf16_from_f32(x[i]);
}

/* rows [r0, r0+rows) x columns [c0, c0+cols) of im2col(X) (X->win) into dense bf16.
 * Per row and window row kh, the taps inside the image are one contiguous stretch of the
 * input (KW*C values when the window lies inside), copied in one run; the taps outside are
 * zeros. The pixel advances without divisions. */
static void stage_im2col(const nnz_bf16_src *X, int64_t r0, int rows, int c0, int cols, nnz_bf16 *out) {
    const nnz_conv_window *g = X->win;
    const int C = X->C, tap_row = g->KW * C, c1 = c0 + cols;
    const nnz_cvt_f32_to_bf16_fn cvt = X->f32 ? nnz_cvt_f32_to_bf16_kernel() : NULL;
    int64_t n;
    int oh, ow;
    nnz_conv_pixel(g, r0, &n, &oh, &ow);
    for (int r = 0; r < rows; r++) {
        const int64_t img = n * g->H * g->W * C;
        nnz_bf16 *o = out + (size_t)r * cols; /* o[c - c0]: column c */
        const int iw0 = ow * g->stride - g->pad;
        /* the window's columns inside the image: kw in [kw_lo, kw_hi) */
        const int kw_lo = iw0 < 0 ? -iw0 : 0, kw_hi = g->W - iw0 < g->KW ? g->W - iw0 : g->KW;
        for (int kh = c0 / tap_row; kh * tap_row < c1; kh++) {
            const int ih = oh * g->stride - g->pad + kh, base = kh * tap_row;
            /* this window row's columns [base, base + tap_row), clipped to [c0, c1) */
            const int lo = base > c0 ? base : c0, hi = base + tap_row < c1 ? base + tap_row : c1;
            int in_lo = base + kw_lo * C, in_hi = base + kw_hi * C; /* the columns read from the image */
            if (ih < 0 || ih >= g->H || kw_lo >= kw_hi) in_lo = in_hi = lo;
            /* clipped to [lo, hi]: the window may end before the image starts (left padding) or
             * begin after it ends */
            in_lo = in_lo < lo ? lo : in_lo > hi ? hi : in_lo;
            in_hi = in_hi > hi ? hi : in_hi < in_lo ? in_lo : in_hi;
            if (in_lo > lo) memset(o + (lo - c0), 0, (size_t)(in_lo - lo) * sizeof(nnz_bf16));
            if (in_hi > in_lo)
                copy_run(cvt, X->p, img + ((int64_t)ih * g->W + iw0) * C + (in_lo - base), in_hi - in_lo,
                         o + (in_lo - c0));
            if (hi > in_hi) memset(o + (in_hi - c0), 0, (size_t)(hi - in_hi) * sizeof(nnz_bf16));
        }
        if (++ow == g->OW) {
            ow = 0;
            if (++oh == g->OH) oh = 0, n++;
        }
    }
}

void nnz_bf16_pack_a(const nnz_bf16_src *A, int i0, int mr, int k0, int kc, int MR, int KB, int kc_pad,
                     nnz_bf16 *out) {
    if (mr < MR || kc < kc_pad) memset(out, 0, (size_t)MR * kc_pad * sizeof(nnz_bf16));
    /* stored block: (mr, kc) at (i0, k0), or (kc, mr) at (k0, i0) when trans */
    const int rows = A->trans ? kc : mr, cols = A->trans ? mr : kc;
    const int64_t off = A->trans ? (int64_t)k0 * A->ld + i0 : (int64_t)i0 * A->ld + k0;
    nnz_bf16 stage[STAGE_MAX];
    const nnz_bf16 *x;
    int64_t ld;
    const bool fits = (size_t)rows * cols <= STAGE_MAX;
    if (A->win && fits) {
        stage_im2col(A, i0, mr, k0, kc, stage);
        x = stage, ld = kc;
    } else if (!A->f32 && !A->win) {
        x = (const nnz_bf16 *)A->p + off, ld = A->ld;
    } else if (fits) {
        stage_f32((const float *)A->p + off, A->ld, rows, cols, stage);
        x = stage, ld = cols;
    } else { /* a block larger than any kernel asks for: element by element */
        const float *f = (const float *)A->p + off;
        for (int i = 0; i < mr; i++)
            for (int k = 0; k < kc; k++)
                out[(size_t)(k / KB) * MR * KB + (size_t)i * KB + k % KB] =
                    A->win ? im2col_at(A, i0 + i, k0 + k)
                           : nnz_bf16_from_f32(A->trans ? f[k * A->ld + i] : f[i * A->ld + k]);
        return;
    }
    if (KB == 2) {
        pair32 *o = (pair32 *)out;
        if (!A->trans)
            for (int i = 0; i < mr; i++) gather(kc, x + i * ld, o + i, MR);
        else
            for (int k = 0; k < kc; k += 2)
                interleave(mr, x + k * ld, k + 1 < kc ? x + (k + 1) * ld : NULL, o + (size_t)(k / 2) * MR);
    } else if (!A->trans) { /* blocks of KB contiguous k per row */
        for (int i = 0; i < mr; i++)
            for (int k = 0; k < kc; k += KB)
                memcpy(out + (size_t)(k / KB) * MR * KB + (size_t)i * KB, x + i * ld + k,
                       (size_t)(kc - k < KB ? kc - k : KB) * sizeof(nnz_bf16));
    } else {
        for (int k = 0; k < kc; k++) {
            nnz_bf16 *o = out + (size_t)(k / KB) * MR * KB + k % KB;
            for (int i = 0; i < mr; i++) o[(size_t)i * KB] = x[k * ld + i];
        }
    }
}

void nnz_bf16_pack_b(const nnz_bf16_src *B, int k0, int kc, int j0, int nr, int NR, int kc_pad, nnz_bf16 *out) {
    if (nr < NR || kc < kc_pad) memset(out, 0, (size_t)NR * kc_pad * sizeof(nnz_bf16));
    /* stored block: (kc, nr) at (k0, j0), or (nr, kc) at (j0, k0) when trans */
    const int rows = B->trans ? nr : kc, cols = B->trans ? kc : nr;
    const int64_t off = B->trans ? (int64_t)j0 * B->ld + k0 : (int64_t)k0 * B->ld + j0;
    nnz_bf16 stage[STAGE_MAX];
    const nnz_bf16 *x;
    int64_t ld;
    const bool fits = (size_t)rows * cols <= STAGE_MAX;
    if (B->win && fits) {
        stage_im2col(B, k0, kc, j0, nr, stage);
        x = stage, ld = nr;
    } else if (!B->f32 && !B->win) {
        x = (const nnz_bf16 *)B->p + off, ld = B->ld;
    } else if (fits) {
        stage_f32((const float *)B->p + off, B->ld, rows, cols, stage);
        x = stage, ld = cols;
    } else {
        const float *f = (const float *)B->p + off;
        for (int k = 0; k < kc; k++)
            for (int j = 0; j < nr; j++)
                out[(size_t)(k / 2) * NR * 2 + (size_t)j * 2 + (k & 1)] =
                    B->win ? im2col_at(B, k0 + k, j0 + j)
                           : nnz_bf16_from_f32(B->trans ? f[j * B->ld + k] : f[k * B->ld + j]);
        return;
    }
    pair32 *o = (pair32 *)out;
    if (!B->trans)
        for (int k = 0; k < kc; k += 2)
            interleave(nr, x + k * ld, k + 1 < kc ? x + (k + 1) * ld : NULL, o + (size_t)(k / 2) * NR);
    else
        for (int j = 0; j < nr; j++) gather(kc, x + j * ld, o + j, NR);
}

/* tdpbf16ps works with DAZ and FTZ: denormals in and out are zeros */
static inline float flush(float x) { return fabsf(x) < FLT_MIN ? copysignf(0.0f, x) : x; }

void nnz_bf16_tile_dp_emulated(float *C, int ldc, const nnz_bf16 *A, int lda, const nnz_bf16 *B, int ldb) {
    for (int m = 0; m < 16; m++)
        for (int n = 0; n < 16; n++) {
            float c = flush(C[(size_t)m * ldc + n]);
            for (int p = 0; p < 16; p++)
                for (int e = 0; e < 2; e++) { /* even element of the pair first, then odd */
                    const float a = flush(nnz_bf16_to_f32(A[(size_t)m * lda + 2 * p + e]));
                    const float b = flush(nnz_bf16_to_f32(B[(size_t)p * ldb + 2 * n + e]));
                    const float prod = flush(a * b); /* exact unless it underflows */
                    c = flush(c + prod);
                }
            C[(size_t)m * ldc + n] = c;
        }
}
