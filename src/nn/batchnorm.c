/* Batch normalization over the channel axis of (M,C), M = N*H*W (NHWC).
 *
 * Contract (PyTorch's BatchNorm2d, training and eval):
 *   train: mean, var = biased batch statistics; out = (x-mean)*invstd*gamma + beta
 *          with invstd = 1/sqrt(var+eps); running = (1-momentum)*running + momentum*batch,
 *          running_var taking the unbiased variance var*M/(M-1) (the biased one when M == 1,
 *          where PyTorch refuses to train). running_mean/running_var may be NULL (no update).
 *   eval:  the same affine map with the running statistics.
 *   backward (PyTorch's formula): k = sum(dy*(x-mean))*invstd^2/M,
 *          dx = (dy - mean(dy) - (x-mean)*k) * invstd*gamma, dgamma = sum(dy*(x-mean))*invstd,
 *          dbeta = sum(dy); all three accumulated (+=); dinp, dgamma, dbeta may be NULL.
 *
 * Reductions, accurate and deterministic: the rows are cut into groups of
 * BN_GROUP_ROWS, a group into blocks of BN_BLOCK_ROWS that stay in L1. A block's
 * moments come from a corrected two-pass in float (sum; then sum of d and d^2
 * with d = x - block mean), blocks merge into the group in double with Chan's
 * formula, and the groups (computed in parallel) fold in row order. The cut
 * depends only on M, so the numbers are the same for any thread count. A large
 * mean over a small spread (|mean|/std ~ 1e3 at M ~ 1e5) stays accurate to ~1e-6.
 *
 * The group kernels are one body compiled three times (plain, AVX2, AVX-512 via
 * target attributes, no intrinsics), chosen by nnz_isa_active(); the plain one is
 * the reference. Elementwise passes run in parallel over rows, vectorized over
 * channels, on channel tiles of BN_CH_TILE so per-thread coefficients fit on the
 * stack. */
#include "nn/nn.h"

#include <assert.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define BN_BLOCK_ROWS 16
#define BN_GROUP_ROWS NNZ_BN_GROUP_ROWS
#define BN_CH_TILE 256
#define BN_PARALLEL_MIN 32768 /* elements; below this one thread is faster */

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* The forward's pre-activation value, (x - mean)*scale + shift: the one expression the
 * affine pass and the backward's activation mask both use, so the mask the backward
 * recomputes from x is the forward's bit for bit (same operands, same contraction). */
#define BN_AFFINE(x, mean, scale, shift) (((x) - (mean)) * (scale) + (shift))

/* The fused activation's backward mask on the pre-activation v: relu/relu6 pass the gradient
 * where their output y = clamp(v) has 0 < y <= hmax, i.e. where 0 < v <= hmax (NaN: no) */
#define BN_ACT_PASSES(v, hmax) ((v) > 0.0f && (v) <= (hmax))

/* ---- group kernels: x (rows, ld) starting at the tile's first channel, ct <= BN_CH_TILE ---- */

/* mean (ct) and m2 = sum (x-mean)^2 (ct) of the group's rows, in double. */
ALWAYS_INLINE void group_moments_body(const float *x, const float *unused_dy, const float *unused_mean,
                                      const float *unused_affine, float unused_hmax, int64_t ld, int rows, int ct,
                                      double *mean, double *m2) {
    float bsum[BN_CH_TILE], bmean[BN_CH_TILE], bdev[BN_CH_TILE], bdev2[BN_CH_TILE];
    double n = 0.0;
    for (int c = 0; c < ct; c++) mean[c] = m2[c] = 0.0;
    for (int r0 = 0; r0 < rows; r0 += BN_BLOCK_ROWS) {
        const int br = rows - r0 < BN_BLOCK_ROWS ? rows - r0 : BN_BLOCK_ROWS;
        const float *xb = x + (int64_t)r0 * ld;
#pragma omp simd
        for (int c = 0; c < ct; c++) bsum[c] = 0.0f;
        for (int r = 0; r < br; r++) {
            const float *xr = xb + r * ld;
#pragma omp simd
            for (int c = 0; c < ct; c++) bsum[c] += xr[c];
        }
        const float inv = 1.0f / (float)br;
#pragma omp simd
        for (int c = 0; c < ct; c++) {
            bmean[c] = bsum[c] * inv;
            bdev[c] = bdev2[c] = 0.0f;
        }
        for (int r = 0; r < br; r++) {
            const float *xr = xb + r * ld;
#pragma omp simd
            for (int c = 0; c < ct; c++) {
                float d = xr[c] - bmean[c];
                bdev[c] += d;
                bdev2[c] += d * d;
            }
        }
        /* corrected two-pass: the block's exact mean is bmean + bdev/br */
        const double nb = br, nn = n + nb, wb = nb / nn, cross = n * nb / nn;
#pragma omp simd
        for (int c = 0; c < ct; c++) {
            double s1 = bdev[c];
            double bm = (double)bmean[c] + s1 / nb, bm2 = (double)bdev2[c] - s1 * s1 / nb;
            double d = bm - mean[c];
            mean[c] += d * wb;
            m2[c] += bm2 + d * d * cross;
        }
        n = nn;
    }
}

/* sdy = sum g, sdyx = sum g*(x-mean) over the group's rows (ct each), in double, where
 * g = dy, or with affine (the fused activation's scale, then shift, ct each): g = dy where
 * the pre-activation passes (BN_ACT_PASSES), else 0. With gout: also gout = g·ga per element
 * (rows, ld), written as dx_rows writes it with mean_dy = k = 0, so bit for bit the same. */
ALWAYS_INLINE void group_grad_sums_body(const float *x, const float *dy, const float *mean, const float *affine,
                                        float hmax, int64_t ld, int rows, int ct, double *sdy, double *sdyx,
                                        const float *ga, float *gout) {
    float bdy[BN_CH_TILE], bdyx[BN_CH_TILE];
    for (int c = 0; c < ct; c++) sdy[c] = sdyx[c] = 0.0;
    for (int r0 = 0; r0 < rows; r0 += BN_BLOCK_ROWS) {
        const int br = rows - r0 < BN_BLOCK_ROWS ? rows - r0 : BN_BLOCK_ROWS;
#pragma omp simd
        for (int c = 0; c < ct; c++) bdy[c] = bdyx[c] = 0.0f;
        for (int r = 0; r < br; r++) {
            const float *xr = x + (int64_t)(r0 + r) * ld, *gr = dy + (int64_t)(r0 + r) * ld;
            if (affine) {
                const float *scale = affine, *shift = affine + ct;
#pragma omp simd
                for (int c = 0; c < ct; c++) {
                    const float v = BN_AFFINE(xr[c], mean[c], scale[c], shift[c]);
                    const float g = BN_ACT_PASSES(v, hmax) ? gr[c] : 0.0f;
                    bdy[c] += g;
                    bdyx[c] += g * (xr[c] - mean[c]);
                    if (gout) gout[(int64_t)(r0 + r) * ld + c] = (g - 0.0f - (xr[c] - mean[c]) * 0.0f) * ga[c];
                }
            } else {
#pragma omp simd
                for (int c = 0; c < ct; c++) {
                    bdy[c] += gr[c];
                    bdyx[c] += gr[c] * (xr[c] - mean[c]);
                    if (gout) gout[(int64_t)(r0 + r) * ld + c] = (gr[c] - 0.0f - (xr[c] - mean[c]) * 0.0f) * ga[c];
                }
            }
        }
#pragma omp simd
        for (int c = 0; c < ct; c++) {
            sdy[c] += bdy[c];
            sdyx[c] += bdyx[c];
        }
    }
}

/* ---- row kernels: rows [0, rows) of a (rows, ld) block at the tile's first channel ---- */

/* out = clamp((x - mean)*scale + shift, lo, hi): the forward's affine and fused activation */
ALWAYS_INLINE void affine_rows_body(const float *x, int64_t ld, int rows, int ct, const float *mean,
                                    const float *scale, const float *shift, float lo, float hi, float *out) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + r * ld;
        float *o = out + r * ld;
#pragma omp simd
        for (int c = 0; c < ct; c++) {
            const float v = BN_AFFINE(xr[c], mean[c], scale[c], shift[c]);
            o[c] = v < lo ? lo : (v > hi ? hi : v); /* the fused relu/relu6; NaN passes */
        }
    }
}

/* dinp (+)= (g - mean_dy - (x - mean)*k) * a, g = dy masked by the pre-activation when affine
 * (scale, then shift) is given */
ALWAYS_INLINE void dx_rows_body(const float *x, const float *dy, const float *affine, float hmax, int64_t ld,
                                int rows, int ct, const float *mean, const float *mean_dy, const float *k,
                                const float *a, bool accumulate, float *dinp) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + r * ld, *gr = dy + r * ld;
        float *d = dinp + r * ld;
        if (affine) {
            const float *scale = affine, *shift = affine + ct;
            if (accumulate) {
#pragma omp simd
                for (int c = 0; c < ct; c++) {
                    const float v = BN_AFFINE(xr[c], mean[c], scale[c], shift[c]);
                    const float g = BN_ACT_PASSES(v, hmax) ? gr[c] : 0.0f;
                    d[c] += (g - mean_dy[c] - (xr[c] - mean[c]) * k[c]) * a[c];
                }
            } else {
#pragma omp simd
                for (int c = 0; c < ct; c++) {
                    const float v = BN_AFFINE(xr[c], mean[c], scale[c], shift[c]);
                    const float g = BN_ACT_PASSES(v, hmax) ? gr[c] : 0.0f;
                    d[c] = (g - mean_dy[c] - (xr[c] - mean[c]) * k[c]) * a[c];
                }
            }
        } else if (accumulate) {
#pragma omp simd
            for (int c = 0; c < ct; c++) d[c] += (gr[c] - mean_dy[c] - (xr[c] - mean[c]) * k[c]) * a[c];
        } else {
#pragma omp simd
            for (int c = 0; c < ct; c++) d[c] = (gr[c] - mean_dy[c] - (xr[c] - mean[c]) * k[c]) * a[c];
        }
    }
}

typedef void (*affine_rows_fn)(const float *x, int64_t ld, int rows, int ct, const float *mean, const float *scale,
                               const float *shift, float lo, float hi, float *out);
typedef void (*dx_rows_fn)(const float *x, const float *dy, const float *affine, float hmax, int64_t ld, int rows, int ct,
                           const float *mean, const float *mean_dy, const float *k, const float *a, bool accumulate,
                           float *dinp);

#define ROW_KERNELS(suffix, attr)                                                                                  \
    attr static void affine_rows_##suffix(const float *x, int64_t ld, int rows, int ct, const float *mean,         \
                                          const float *scale, const float *shift, float lo, float hi, float *out) { \
        affine_rows_body(x, ld, rows, ct, mean, scale, shift, lo, hi, out);                                        \
    }                                                                                                              \
    attr static void dx_rows_##suffix(const float *x, const float *dy, const float *affine, float hmax,           \
                                      int64_t ld, int rows, int ct, const float *mean, const float *mean_dy,       \
                                      const float *k, const float *a, bool accumulate, float *dinp) {              \
        dx_rows_body(x, dy, affine, hmax, ld, rows, ct, mean, mean_dy, k, a, accumulate, dinp);                    \
    }

typedef void (*group_kernel)(const float *x, const float *dy, const float *mean, const float *affine, float hmax,
                             int64_t ld, int rows, int ct, double *out1, double *out2);

static void group_moments_ref(const float *x, const float *dy, const float *mean, const float *affine, float hmax, int64_t ld, int rows, int ct, double *o1, double *o2) {
    group_moments_body(x, dy, mean, affine, hmax, ld, rows, ct, o1, o2);
}
static void group_grad_sums_ref(const float *x, const float *dy, const float *mean, const float *affine, float hmax, int64_t ld, int rows, int ct, double *o1, double *o2) {
    group_grad_sums_body(x, dy, mean, affine, hmax, ld, rows, ct, o1, o2, NULL, NULL);
}

/* the grad sums and g·a in one pass (nnz_batchnorm_grad_block) */
typedef void (*grad_sums_scaled_fn)(const float *x, const float *dy, const float *mean, const float *affine,
                                    float hmax, int64_t ld, int rows, int ct, double *o1, double *o2, const float *a,
                                    float *out);
#define GRAD_SUMS_SCALED(suffix, attr)                                                                             \
    attr static void grad_sums_scaled_##suffix(const float *x, const float *dy, const float *mean,                 \
                                               const float *affine, float hmax, int64_t ld, int rows, int ct,      \
                                               double *o1, double *o2, const float *a, float *out) {               \
        group_grad_sums_body(x, dy, mean, affine, hmax, ld, rows, ct, o1, o2, a, out);                             \
    }
GRAD_SUMS_SCALED(ref, )

#if defined(__x86_64__)
#define TARGET_AVX2 __attribute__((target("avx2,fma")))
#define TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")))
TARGET_AVX2 static void group_moments_f32_avx2(const float *x, const float *dy, const float *mean, const float *affine, float hmax, int64_t ld, int rows, int ct, double *o1, double *o2) {
    group_moments_body(x, dy, mean, affine, hmax, ld, rows, ct, o1, o2);
}
TARGET_AVX2 static void group_grad_sums_f32_avx2(const float *x, const float *dy, const float *mean, const float *affine, float hmax, int64_t ld, int rows, int ct, double *o1, double *o2) {
    group_grad_sums_body(x, dy, mean, affine, hmax, ld, rows, ct, o1, o2, NULL, NULL);
}
TARGET_AVX512 static void group_moments_f32_avx512(const float *x, const float *dy, const float *mean, const float *affine, float hmax, int64_t ld, int rows, int ct, double *o1, double *o2) {
    group_moments_body(x, dy, mean, affine, hmax, ld, rows, ct, o1, o2);
}
TARGET_AVX512 static void group_grad_sums_f32_avx512(const float *x, const float *dy, const float *mean, const float *affine, float hmax, int64_t ld, int rows, int ct, double *o1, double *o2) {
    group_grad_sums_body(x, dy, mean, affine, hmax, ld, rows, ct, o1, o2, NULL, NULL);
}
#endif

ROW_KERNELS(ref, )
#if defined(__x86_64__)
ROW_KERNELS(f32_avx2, TARGET_AVX2)
ROW_KERNELS(f32_avx512, TARGET_AVX512)
GRAD_SUMS_SCALED(f32_avx2, TARGET_AVX2)
GRAD_SUMS_SCALED(f32_avx512, TARGET_AVX512)
#endif

static grad_sums_scaled_fn pick_grad_sums_scaled(void) {
#if defined(__x86_64__)
    nnz_isa isa = nnz_isa_active();
    if (isa >= NNZ_ISA_AVX512) return grad_sums_scaled_f32_avx512;
    if (isa >= NNZ_ISA_AVX2) return grad_sums_scaled_f32_avx2;
#endif
    return grad_sums_scaled_ref;
}

static affine_rows_fn pick_affine_rows(void) {
#if defined(__x86_64__)
    nnz_isa isa = nnz_isa_active();
    if (isa >= NNZ_ISA_AVX512) return affine_rows_f32_avx512;
    if (isa >= NNZ_ISA_AVX2) return affine_rows_f32_avx2;
#endif
    return affine_rows_ref;
}

static dx_rows_fn pick_dx_rows(void) {
#if defined(__x86_64__)
    nnz_isa isa = nnz_isa_active();
    if (isa >= NNZ_ISA_AVX512) return dx_rows_f32_avx512;
    if (isa >= NNZ_ISA_AVX2) return dx_rows_f32_avx2;
#endif
    return dx_rows_ref;
}

static group_kernel pick_moments(void) {
#if defined(__x86_64__)
    nnz_isa isa = nnz_isa_active();
    if (isa >= NNZ_ISA_AVX512) return group_moments_f32_avx512;
    if (isa >= NNZ_ISA_AVX2) return group_moments_f32_avx2;
#endif
    return group_moments_ref;
}

static group_kernel pick_grad_sums(void) {
#if defined(__x86_64__)
    nnz_isa isa = nnz_isa_active();
    if (isa >= NNZ_ISA_AVX512) return group_grad_sums_f32_avx512;
    if (isa >= NNZ_ISA_AVX2) return group_grad_sums_f32_avx2;
#endif
    return group_grad_sums_ref;
}

/* ---- the group driver ---- */

/* Folds group g (rows nb, results r1, r2) into the running totals, in row order.
 * Moments merge with Chan's formula; plain sums add. */
static void fold_group(bool moments, double *n, int ct, double nb, const double *r1, const double *r2, double *t1,
                       double *t2) {
    if (moments) {
        const double nn = *n + nb, wb = nb / nn, cross = *n * nb / nn;
        for (int c = 0; c < ct; c++) {
            double d = r1[c] - t1[c];
            t1[c] += d * wb;
            t2[c] += r2[c] + d * d * cross;
        }
        *n = nn;
    } else {
        for (int c = 0; c < ct; c++) {
            t1[c] += r1[c];
            t2[c] += r2[c];
        }
    }
}

/* Reduces channels [c0, c0+ct) over all M rows into t1, t2 (ct doubles each); affine (the
 * tile's scale and shift, or NULL) goes to the kernel as it is.
 * part: 2*ct doubles per group, or NULL to run the groups one by one (same numbers). */
static void reduce_tile(group_kernel kernel, bool moments, int M, int C, int c0, int ct, const float *x,
                        const float *dy, const float *mean, const float *affine, float hmax, double *part, double *t1,
                        double *t2) {
    const int groups = (M + BN_GROUP_ROWS - 1) / BN_GROUP_ROWS;
    const float *xt = x + c0, *dyt = dy ? dy + c0 : NULL, *mt = mean ? mean + c0 : NULL;
    double n = 0.0;
    for (int c = 0; c < ct; c++) t1[c] = t2[c] = 0.0;
    if (part) {
#pragma omp parallel for schedule(static) if ((int64_t)M * ct >= BN_PARALLEL_MIN)
        for (int g = 0; g < groups; g++) {
            const int64_t r0 = (int64_t)g * BN_GROUP_ROWS;
            const int rows = M - r0 < BN_GROUP_ROWS ? (int)(M - r0) : BN_GROUP_ROWS;
            kernel(xt + r0 * C, dyt ? dyt + r0 * C : NULL, mt, affine, hmax, C, rows, ct, part + (int64_t)g * 2 * ct,
                   part + (int64_t)g * 2 * ct + ct);
        }
        for (int g = 0; g < groups; g++) {
            const int rows = M - g * BN_GROUP_ROWS < BN_GROUP_ROWS ? M - g * BN_GROUP_ROWS : BN_GROUP_ROWS;
            fold_group(moments, &n, ct, rows, part + (int64_t)g * 2 * ct, part + (int64_t)g * 2 * ct + ct, t1, t2);
        }
    } else {
        double r1[BN_CH_TILE], r2[BN_CH_TILE];
        for (int g = 0; g < groups; g++) {
            const int64_t r0 = (int64_t)g * BN_GROUP_ROWS;
            const int rows = M - r0 < BN_GROUP_ROWS ? (int)(M - r0) : BN_GROUP_ROWS;
            kernel(xt + r0 * C, dyt ? dyt + r0 * C : NULL, mt, affine, hmax, C, rows, ct, r1, r2);
            fold_group(moments, &n, ct, rows, r1, r2, t1, t2);
        }
    }
}

/* Scratch for the per-group partial results; NULL (no error recorded) makes the
 * reduction serial rather than fail: these functions cannot return a status. */
static double *alloc_part(int M, int C) {
    const int groups = (M + BN_GROUP_ROWS - 1) / BN_GROUP_ROWS;
    if (groups <= 1 || (int64_t)M * C < BN_PARALLEL_MIN) return NULL;
    const int ct = C < BN_CH_TILE ? C : BN_CH_TILE;
    return malloc((size_t)groups * 2 * (size_t)ct * sizeof(double));
}

/* out = (x - mean)*scale + shift over channels [c0, c0+ct); mean, scale, shift are
 * per channel (ct). Subtracting the mean first keeps a large |mean|/std accurate. */
static void affine_tile(int M, int C, int c0, int ct, const float *x, const float *mean, const float *scale,
                        const float *shift, float lo, float hi, float *out) {
    const affine_rows_fn fn = pick_affine_rows();
    const int blocks = (M + BN_BLOCK_ROWS - 1) / BN_BLOCK_ROWS;
#pragma omp parallel for schedule(static) if ((int64_t)M * ct >= BN_PARALLEL_MIN)
    for (int b = 0; b < blocks; b++) {
        const int64_t r0 = (int64_t)b * BN_BLOCK_ROWS;
        const int rows = M - r0 < BN_BLOCK_ROWS ? (int)(M - r0) : BN_BLOCK_ROWS;
        fn(x + r0 * C + c0, C, rows, ct, mean, scale, shift, lo, hi, out + r0 * C + c0);
    }
}

/* The clamp of the fused activation, and its backward mask 0 < y <= hmax. */
static void act_bounds(nnz_op act, float *lo, float *hi, float *hmax) {
    switch (act) {
    case NNZ_OP_RELU: *lo = 0.0f, *hi = INFINITY, *hmax = INFINITY; break;
    case NNZ_OP_RELU6: *lo = 0.0f, *hi = 6.0f, *hmax = nextafterf(6.0f, 0.0f); break; /* y < 6 */
    default: assert(act == NNZ_OP_IDENTITY); *lo = -INFINITY, *hi = INFINITY, *hmax = INFINITY; break;
    }
}

/* ---- public entry points ---- */

/* Channels [c0, c0+ct) from their moments over M rows: save_mean, save_invstd, the running
 * statistics, and scale = invstd*gamma */
static void train_stats_tile(int M, int c0, int ct, const double *mean, const double *m2, const float *gamma,
                             float *running_mean, float *running_var, float momentum, float eps, float *save_mean,
                             float *save_invstd, float *scale) {
    for (int c = 0; c < ct; c++) {
        const int ch = c0 + c;
        const double var = m2[c] / M;
        const float invstd = (float)(1.0 / sqrt(var + (double)eps));
        save_mean[ch] = (float)mean[c];
        save_invstd[ch] = invstd;
        scale[c] = invstd * gamma[ch];
        if (running_mean) running_mean[ch] = (float)((1.0 - momentum) * running_mean[ch] + momentum * mean[c]);
        if (running_var) {
            const double unbiased = M > 1 ? m2[c] / (M - 1) : var;
            running_var[ch] = (float)((1.0 - momentum) * running_var[ch] + momentum * unbiased);
        }
    }
}

void nnz_batchnorm_forward_train_act(int M, int C, const float *inp, const float *gamma, const float *beta,
                                     float *running_mean, float *running_var, float momentum, float eps, nnz_op act,
                                     float *out, float *save_mean, float *save_invstd) {
    assert(M > 0 && C > 0);
    float lo, hi, hmax;
    act_bounds(act, &lo, &hi, &hmax);
    group_kernel kernel = pick_moments();
    double *part = alloc_part(M, C);
    for (int c0 = 0; c0 < C; c0 += BN_CH_TILE) {
        const int ct = C - c0 < BN_CH_TILE ? C - c0 : BN_CH_TILE;
        double mean[BN_CH_TILE], m2[BN_CH_TILE];
        float scale[BN_CH_TILE];
        reduce_tile(kernel, true, M, C, c0, ct, inp, NULL, NULL, NULL, 0.0f, part, mean, m2);
        train_stats_tile(M, c0, ct, mean, m2, gamma, running_mean, running_var, momentum, eps, save_mean, save_invstd,
                         scale);
        if (out) affine_tile(M, C, c0, ct, inp, save_mean + c0, scale, beta + c0, lo, hi, out);
    }
    free(part);
}

bool nnz_batchnorm_moments_begin(int M, int C, nnz_bn_moments *mo) {
    *mo = (nnz_bn_moments){.M = M, .C = C};
    if (M < 1 || C < 1 || C > BN_CH_TILE) return false;
    const int groups = (M + BN_GROUP_ROWS - 1) / BN_GROUP_ROWS;
    mo->part = malloc((size_t)groups * 2 * (size_t)C * sizeof(double));
    return mo->part != NULL;
}

void nnz_batchnorm_moments_rows(const void *ctx, int64_t r0, int rows, const float *x) {
    const nnz_bn_moments *mo = ctx;
    const group_kernel kernel = pick_moments();
    assert(r0 % BN_GROUP_ROWS == 0 && (rows % BN_GROUP_ROWS == 0 || r0 + rows == mo->M));
    for (int64_t g0 = 0; g0 < rows; g0 += BN_GROUP_ROWS) {
        const int n = rows - g0 < BN_GROUP_ROWS ? (int)(rows - g0) : BN_GROUP_ROWS;
        double *p = mo->part + (r0 + g0) / BN_GROUP_ROWS * 2 * mo->C;
        kernel(x + g0 * mo->C, NULL, NULL, NULL, 0.0f, mo->C, n, mo->C, p, p + mo->C);
    }
}

void nnz_batchnorm_forward_train_moments(nnz_bn_moments *mo, const float *inp, const float *gamma,
                                         const float *beta, float *running_mean, float *running_var, float momentum,
                                         float eps, nnz_op act, float *out, float *save_mean, float *save_invstd) {
    const int M = mo->M, C = mo->C, groups = (M + BN_GROUP_ROWS - 1) / BN_GROUP_ROWS;
    float lo, hi, hmax, scale[BN_CH_TILE];
    act_bounds(act, &lo, &hi, &hmax);
    double mean[BN_CH_TILE], m2[BN_CH_TILE], n = 0.0;
    for (int c = 0; c < C; c++) mean[c] = m2[c] = 0.0;
    for (int g = 0; g < groups; g++) /* in row order, as reduce_tile */
        fold_group(true, &n, C, M - g * BN_GROUP_ROWS < BN_GROUP_ROWS ? M - g * BN_GROUP_ROWS : BN_GROUP_ROWS,
                   mo->part + (int64_t)g * 2 * C, mo->part + (int64_t)g * 2 * C + C, mean, m2);
    train_stats_tile(M, 0, C, mean, m2, gamma, running_mean, running_var, momentum, eps, save_mean, save_invstd, scale);
    if (out) affine_tile(M, C, 0, C, inp, save_mean, scale, beta, lo, hi, out);
    free(mo->part);
    mo->part = NULL;
}

/* channels [c0, c0+ct) of a: scale = invstd*gamma (as the training forward rounds it) */
static void apply_scale(const nnz_bn_apply *a, int c0, int ct, float *scale) {
    for (int c = 0; c < ct; c++) scale[c] = a->invstd[c0 + c] * a->gamma[c0 + c];
}

void nnz_batchnorm_apply_rows(const void *ctx, int64_t rows, const float *x, float *out) {
    const nnz_bn_apply *a = ctx;
    float lo, hi, hmax, scale[BN_CH_TILE];
    act_bounds(a->act, &lo, &hi, &hmax);
    assert(rows <= INT32_MAX);
    const affine_rows_fn fn = pick_affine_rows();
    for (int c0 = 0; c0 < a->C; c0 += BN_CH_TILE) {
        const int ct = a->C - c0 < BN_CH_TILE ? a->C - c0 : BN_CH_TILE;
        apply_scale(a, c0, ct, scale);
        fn(x + c0, a->C, (int)rows, ct, a->mean + c0, scale, a->shift + c0, lo, hi, out + c0);
    }
}

void nnz_batchnorm_apply(int M, const nnz_bn_apply *a, const float *x, float *out) {
    float lo, hi, hmax, scale[BN_CH_TILE];
    act_bounds(a->act, &lo, &hi, &hmax);
    for (int c0 = 0; c0 < a->C; c0 += BN_CH_TILE) {
        const int ct = a->C - c0 < BN_CH_TILE ? a->C - c0 : BN_CH_TILE;
        apply_scale(a, c0, ct, scale);
        affine_tile(M, a->C, c0, ct, x, a->mean + c0, scale, a->shift + c0, lo, hi, out);
    }
}

void nnz_batchnorm_forward_train(int M, int C, const float *inp, const float *gamma, const float *beta,
                                 float *running_mean, float *running_var, float momentum, float eps, float *out,
                                 float *save_mean, float *save_invstd) {
    nnz_batchnorm_forward_train_act(M, C, inp, gamma, beta, running_mean, running_var, momentum, eps,
                                    NNZ_OP_IDENTITY, out, save_mean, save_invstd);
}

void nnz_batchnorm_eval_coeffs(int C, const float *gamma, const float *running_var, float eps, float *scale) {
    for (int ch = 0; ch < C; ch++) {
        const float invstd = (float)(1.0 / sqrt((double)running_var[ch] + (double)eps));
        scale[ch] = invstd * gamma[ch];
    }
}

void nnz_batchnorm_forward_eval_act(int M, int C, const float *inp, const float *gamma, const float *beta,
                                    const float *running_mean, const float *running_var, float eps, nnz_op act,
                                    float *out) {
    assert(M > 0 && C > 0);
    float lo, hi, hmax;
    act_bounds(act, &lo, &hi, &hmax);
    for (int c0 = 0; c0 < C; c0 += BN_CH_TILE) {
        const int ct = C - c0 < BN_CH_TILE ? C - c0 : BN_CH_TILE;
        float scale[BN_CH_TILE];
        nnz_batchnorm_eval_coeffs(ct, gamma + c0, running_var + c0, eps, scale);
        affine_tile(M, C, c0, ct, inp, running_mean + c0, scale, beta + c0, lo, hi, out);
    }
}

void nnz_batchnorm_forward_eval(int M, int C, const float *inp, const float *gamma, const float *beta,
                                const float *running_mean, const float *running_var, float eps, float *out) {
    nnz_batchnorm_forward_eval_act(M, C, inp, gamma, beta, running_mean, running_var, eps, NNZ_OP_IDENTITY, out);
}

/* Channels [c0, c0+ct): the sums over all M rows (dgamma, dbeta accumulate) and the data
 * gradient's coefficients, dinp = (g - mean_dy - (x - mean)*k) * a with g = dout masked by the
 * pre-activation when affine (the tile's scale then shift, as the forward rounds them) is made */
/* the activation's mask from the pre-activation, recomputed from x with the forward's scale
 * (invstd*gamma, as the forward rounds it) and shift: no read of the forward's output */
static void mask_affine(int c0, int ct, const float *gamma, const float *beta, const float *save_invstd,
                        float *affine) {
    for (int c = 0; c < ct; c++) affine[c] = save_invstd[c0 + c] * gamma[c0 + c], affine[ct + c] = beta[c0 + c];
}

/* Channels [c0, c0+ct) from the sums over M rows: dgamma, dbeta (accumulate; may be NULL) and the
 * data gradient's coefficients mean_dy, k, a (ct each) */
static void grad_coefs(int M, int c0, int ct, const double *sdy, const double *sdyx, const float *gamma,
                       const float *save_invstd, float *dgamma, float *dbeta, float *mean_dy, float *k, float *a) {
    for (int c = 0; c < ct; c++) {
        const int ch = c0 + c;
        const double invstd = save_invstd[ch];
        if (dgamma) dgamma[ch] += (float)(sdyx[c] * invstd);
        if (dbeta) dbeta[ch] += (float)sdy[c];
        mean_dy[c] = (float)(sdy[c] / M);
        k[c] = (float)(sdyx[c] * invstd * invstd / M);
        a[c] = save_invstd[ch] * gamma[ch];
    }
}

/* given: the tile's per-group sums made already (nnz_bn_grad_sums: one tile), or NULL to make them */
static void backward_tile(int M, int C, int c0, int ct, const float *inp, const float *dout, bool masked,
                          float hmax, const float *gamma, const float *beta, const float *save_mean,
                          const float *save_invstd, double *part, const double *given, float *dgamma, float *dbeta,
                          float *affine, float *mean_dy, float *k, float *a) {
    double sdy[BN_CH_TILE], sdyx[BN_CH_TILE];
    if (masked) mask_affine(c0, ct, gamma, beta, save_invstd, affine);
    if (given) { /* in row order, as reduce_tile */
        double n = 0.0;
        for (int c = 0; c < ct; c++) sdy[c] = sdyx[c] = 0.0;
        for (int g = 0; g < (M + BN_GROUP_ROWS - 1) / BN_GROUP_ROWS; g++)
            fold_group(false, &n, ct, M - g * BN_GROUP_ROWS < BN_GROUP_ROWS ? M - g * BN_GROUP_ROWS : BN_GROUP_ROWS,
                       given + (int64_t)g * 2 * ct, given + (int64_t)g * 2 * ct + ct, sdy, sdyx);
    } else {
        reduce_tile(pick_grad_sums(), false, M, C, c0, ct, inp, dout, save_mean, masked ? affine : NULL, hmax, part,
                    sdy, sdyx);
    }
    grad_coefs(M, c0, ct, sdy, sdyx, gamma, save_invstd, dgamma, dbeta, mean_dy, k, a);
}

void nnz_batchnorm_backward_act(int M, int C, const float *inp, nnz_op act, const float *gamma, const float *beta,
                                const float *save_mean, const float *save_invstd, const float *dout, float *dinp,
                                bool accumulate, float *dgamma, float *dbeta) {
    assert(M > 0 && C > 0);
    float lo, hi, hmax;
    act_bounds(act, &lo, &hi, &hmax);
    const bool masked = act != NNZ_OP_IDENTITY;
    const dx_rows_fn dx_fn = pick_dx_rows();
    double *part = alloc_part(M, C);
    for (int c0 = 0; c0 < C; c0 += BN_CH_TILE) {
        const int ct = C - c0 < BN_CH_TILE ? C - c0 : BN_CH_TILE;
        float mean_dy[BN_CH_TILE], k[BN_CH_TILE], a[BN_CH_TILE], affine[2 * BN_CH_TILE];
        backward_tile(M, C, c0, ct, inp, dout, masked, hmax, gamma, beta, save_mean, save_invstd, part, NULL, dgamma,
                      dbeta, affine, mean_dy, k, a);
        if (!dinp) continue;
        const float *mt = save_mean + c0, *af = masked ? affine : NULL;
        const int blocks = (M + BN_BLOCK_ROWS - 1) / BN_BLOCK_ROWS;
#pragma omp parallel for schedule(static) if ((int64_t)M * ct >= BN_PARALLEL_MIN)
        for (int b = 0; b < blocks; b++) {
            const int64_t o = (int64_t)b * BN_BLOCK_ROWS * C + c0;
            const int rows = M - (int64_t)b * BN_BLOCK_ROWS < BN_BLOCK_ROWS ? (int)(M - (int64_t)b * BN_BLOCK_ROWS)
                                                                              : BN_BLOCK_ROWS;
            dx_fn(inp + o, dout + o, af, hmax, C, rows, ct, mt, mean_dy, k, a, accumulate, dinp + o);
        }
    }
    free(part);
}

bool nnz_batchnorm_grad_sums_begin(int M, int C, const float *inp, nnz_op act, const float *gamma, const float *beta,
                                   const float *save_mean, const float *save_invstd, bool groups,
                                   nnz_bn_grad_sums *gs) {
    float lo, hi;
    *gs = (nnz_bn_grad_sums){.M = M, .C = C, .inp = inp, .mean = save_mean};
    act_bounds(act, &lo, &hi, &gs->hmax);
    if (M < 1 || C < 1 || C > BN_CH_TILE) return false;
    const int n_groups = (M + BN_GROUP_ROWS - 1) / BN_GROUP_ROWS;
    gs->part = groups ? malloc((size_t)n_groups * 2 * (size_t)C * sizeof(double)) : NULL;
    gs->affine = act != NNZ_OP_IDENTITY ? malloc((size_t)2 * C * sizeof(float)) : NULL;
    if ((groups && !gs->part) || (act != NNZ_OP_IDENTITY && !gs->affine)) {
        nnz_batchnorm_grad_sums_free(gs);
        return false;
    }
    if (gs->affine) mask_affine(0, C, gamma, beta, save_invstd, gs->affine);
    return true;
}

void nnz_batchnorm_grad_sums_rows(const void *ctx, int64_t r0, int rows, const float *dout) {
    const nnz_bn_grad_sums *gs = ctx;
    const group_kernel kernel = pick_grad_sums();
    const int C = gs->C;
    assert(r0 % BN_GROUP_ROWS == 0 && (rows % BN_GROUP_ROWS == 0 || r0 + rows == gs->M));
    for (int64_t g0 = 0; g0 < rows; g0 += BN_GROUP_ROWS) {
        const int n = rows - g0 < BN_GROUP_ROWS ? (int)(rows - g0) : BN_GROUP_ROWS;
        double *p = gs->part + (r0 + g0) / BN_GROUP_ROWS * 2 * C;
        kernel(gs->inp + (r0 + g0) * C, dout + g0 * C, gs->mean, gs->affine, gs->hmax, C, n, C, p, p + C);
    }
}

void nnz_batchnorm_grad_block(const nnz_bn_grad_sums *gs, const float *a, int64_t r0, int rows, const float *dy,
                              double *s1, double *s2, float *out) {
    const int C = gs->C;
    /* one pass: the sums and (g - 0 - (x - mean)*0) * a = g*a */
    pick_grad_sums_scaled()(gs->inp + r0 * C, dy, gs->mean, gs->affine, gs->hmax, C, rows, C, s1, s2, a, out);
}

void nnz_batchnorm_grad_coefs(int M, int C, const double *sdy, const double *sdyx, const float *gamma,
                              const float *save_invstd, float *dgamma, float *dbeta, float *mean_dy, float *k,
                              float *a) {
    grad_coefs(M, 0, C, sdy, sdyx, gamma, save_invstd, dgamma, dbeta, mean_dy, k, a);
}

void nnz_batchnorm_grad_sums_free(nnz_bn_grad_sums *gs) {
    free(gs->part), free(gs->affine);
    gs->part = NULL, gs->affine = NULL;
}

bool nnz_batchnorm_backward_begin(int M, int C, const float *inp, nnz_op act, const float *gamma, const float *beta,
                                  const float *save_mean, const float *save_invstd, const float *dout, float *dgamma,
                                  float *dbeta, const nnz_bn_grad_sums *sums, nnz_bn_grad *g) {
    assert(M > 0 && C > 0);
    assert(!sums || (sums->M == M && sums->C == C && sums->part));
    float lo, hi;
    *g = (nnz_bn_grad){.C = C, .inp = inp, .dout = dout, .mean = save_mean, .masked = act != NNZ_OP_IDENTITY};
    act_bounds(act, &lo, &hi, &g->hmax);
    g->coef = malloc((size_t)5 * C * sizeof(float));
    if (!g->coef) return false;
    double *part = sums ? NULL : alloc_part(M, C);
    for (int c0 = 0; c0 < C; c0 += BN_CH_TILE) {
        const int ct = C - c0 < BN_CH_TILE ? C - c0 : BN_CH_TILE;
        backward_tile(M, C, c0, ct, inp, dout, g->masked, g->hmax, gamma, beta, save_mean, save_invstd, part,
                      sums ? sums->part : NULL, dgamma, dbeta, g->coef + 2 * c0, g->coef + 2 * C + c0,
                      g->coef + 3 * C + c0, g->coef + 4 * C + c0);
    }
    free(part);
    return true;
}

void nnz_batchnorm_backward_rows(const void *ctx, int64_t r0, int rows, float *out) {
    const nnz_bn_grad *g = ctx;
    const int C = g->C;
    const dx_rows_fn dx_fn = pick_dx_rows();
    for (int c0 = 0; c0 < C; c0 += BN_CH_TILE) {
        const int ct = C - c0 < BN_CH_TILE ? C - c0 : BN_CH_TILE;
        const int64_t o = r0 * C + c0;
        dx_fn(g->inp + o, g->dout + o, g->masked ? g->coef + 2 * c0 : NULL, g->hmax, C, rows, ct, g->mean + c0,
              g->coef + 2 * C + c0, g->coef + 3 * C + c0, g->coef + 4 * C + c0, false, out + c0);
    }
}

void nnz_batchnorm_backward_end(nnz_bn_grad *g) {
    free(g->coef);
    g->coef = NULL;
}

void nnz_batchnorm_backward(int M, int C, const float *inp, const float *gamma, const float *save_mean,
                            const float *save_invstd, const float *dout, float *dinp, float *dgamma, float *dbeta) {
    nnz_batchnorm_backward_act(M, C, inp, NNZ_OP_IDENTITY, gamma, NULL, save_mean, save_invstd, dout, dinp, true,
                               dgamma, dbeta);
}
