/* The backward of an expansion: a bias-free 1x1 conv (x -> z), a training batch norm with its
 * fused activation (z -> y), and a depthwise conv that is y's only reader, taken from the
 * depthwise conv's data gradient dy image by image, so that the expanded gradients dy and dz
 * (the widest tensors of an inverted-residual block) are never stored.
 *
 * The batch norm's data gradient is dz = a·g - a·mean_dy - a·k·(z - mean) (g: dy masked by the
 * activation; a = invstd·gamma; mean_dy, k from the batch's sums). With b = a·(k·mean - mean_dy)
 * and e = a·k (per channel) that is dz = a·g + b - e·z, and z = x·W1ᵀ (W1: (C, IC)), so
 *   dW1 = Σ (a·g)ᵀx + b ⊗ Σx - e ⊙ (W1 · XᵀX)
 *   dx  = (a·g)·W1 + b·W1 - x·(W1ᵀ diag(e) W1).
 * The terms with a·g need only the image in cache; the rest needs the batch's sums and the small
 * IC x IC products, and is added after the last image. The same gradients as the layers in turn,
 * up to rounding (the products are summed in another order and z is x·W1ᵀ again), so
 * m->exact_grad turns this off (model_exec.c). Per-image and per-slot partials are folded in a
 * fixed order: the result does not depend on the thread count. */
#include "nn/nn.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

struct nnz_expansion_grad {
    int N, P, C, IC, slots;
    const float *x, *w1;
    float *dw1, *dx;
    bool accumulate;
    const float *gamma, *invstd, *mean;
    float *dgamma, *dbeta;
    nnz_bn_grad_sums gs; /* the batch norm's input, statistics and mask */
    float *a;            /* (C): invstd·gamma */
    double *sums;        /* per image: Σ g (C), Σ g·(z - mean) (C) */
    float *gx;           /* per slot: Σ (a·g)ᵀ x (C, IC) */
    float *xx;           /* per slot: Σ xᵀ x (IC, IC) */
    double *sx;          /* per slot: Σ x (IC) */
    float *buf;          /* per thread: a·g of one image (P, C), then Σx over it (IC) */
    double *tot;         /* the end's: Σ g, Σ g·(z - mean) (C each), Σ x (IC), a row of sums (IC) */
    float *f;            /* the end's: mean_dy, k, a, b, e (C each), Σ gx (C, IC), Σ xx, the dx map (IC, IC), b·W1 (IC) */
};

void nnz_expansion_grad_free(nnz_expansion_grad *e) {
    if (!e) return;
    nnz_batchnorm_grad_sums_free(&e->gs);
    free(e->a), free(e->sums), free(e->gx), free(e->xx), free(e->sx), free(e->buf), free(e->tot), free(e->f);
    free(e);
}

nnz_expansion_grad *nnz_expansion_grad_begin(const nnz_expansion_grad_args *g) {
    nnz_expansion_grad *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    const int C = g->C, IC = g->IC;
    *e = (nnz_expansion_grad){.N = g->N, .P = g->P, .C = C, .IC = IC, .slots = g->slots, .x = g->x, .w1 = g->w1,
                              .dw1 = g->dw1, .dx = g->dx, .accumulate = g->accumulate, .gamma = g->gamma,
                              .invstd = g->save_invstd, .mean = g->save_mean, .dgamma = g->dgamma,
                              .dbeta = g->dbeta};
    const bool sums_ok = nnz_batchnorm_grad_sums_begin(g->N * g->P, C, g->z, g->act, g->gamma, g->beta, g->save_mean,
                                                       g->save_invstd, false, &e->gs);
    e->a = malloc((size_t)C * sizeof(float));
    e->sums = malloc((size_t)g->N * 2 * C * sizeof(double));
    e->gx = calloc((size_t)g->slots * C * IC, sizeof(float));
    e->xx = calloc((size_t)g->slots * IC * IC, sizeof(float));
    e->sx = calloc((size_t)g->slots * IC, sizeof(double));
    e->buf = malloc((size_t)omp_get_max_threads() * ((size_t)g->P * C + IC) * sizeof(float));
    e->tot = malloc(((size_t)2 * C + 2 * (size_t)IC) * sizeof(double));
    e->f = malloc(((size_t)5 * C + (size_t)C * IC + 2 * (size_t)IC * IC + IC) * sizeof(float));
    if (!sums_ok || !e->a || !e->sums || !e->gx || !e->xx || !e->sx || !e->buf || !e->tot || !e->f) {
        nnz_expansion_grad_free(e);
        return NULL;
    }
    for (int c = 0; c < C; c++) e->a[c] = g->save_invstd[c] * g->gamma[c]; /* as nnz_batchnorm_grad_coefs */
    return e;
}

void nnz_expansion_grad_image(const void *ctx, int slot, int n, const float *dy) {
    const nnz_expansion_grad *e = ctx;
    const int P = e->P, C = e->C, IC = e->IC;
    float *ag = e->buf + (size_t)omp_get_thread_num() * ((size_t)P * C + IC);
    const float *x = e->x + (int64_t)n * P * IC;
    nnz_batchnorm_grad_block(&e->gs, e->a, (int64_t)n * P, P, dy, e->sums + (int64_t)n * 2 * C,
                             e->sums + (int64_t)n * 2 * C + C, ag);
    /* into this image's slot, on this thread (a nested nnz_gemm_small runs on it alone too) */
    nnz_gemm_small_at_serial(P, C, IC, ag, C, x, IC, e->gx + (size_t)slot * C * IC);
    nnz_gemm_small_at_serial(P, IC, IC, x, IC, x, IC, e->xx + (size_t)slot * IC * IC);
    float *s = ag + (size_t)P * C; /* the image's Σx in float, added to the slot's in double */
    for (int i = 0; i < IC; i++) s[i] = 0.0f;
    for (int p = 0; p < P; p++)
#pragma omp simd
        for (int i = 0; i < IC; i++) s[i] += x[(int64_t)p * IC + i];
    double *sx = e->sx + (size_t)slot * IC;
    for (int i = 0; i < IC; i++) sx[i] += s[i];
    if (e->dx) nnz_gemm_small(P, IC, C, ag, C, e->w1, e->accumulate, NULL, e->dx + (int64_t)n * P * IC);
}

void nnz_expansion_grad_end(nnz_expansion_grad *e) {
    const int C = e->C, IC = e->IC, M = e->N * e->P;
    double *sdy = e->tot, *sdyx = sdy + C, *sx = sdyx + C;
    float *mean_dy = e->f, *k = mean_dy + C, *a = k + C, *b = a + C, *ee = b + C, *gx = ee + C, *xx = gx + (size_t)C * IC;
    float *mx = xx + (size_t)IC * IC, *bw = mx + (size_t)IC * IC;
    memset(sdy, 0, ((size_t)2 * C + IC) * sizeof(double));
    for (int n = 0; n < e->N; n++) /* in image order */
        for (int c = 0; c < C; c++) sdy[c] += e->sums[(int64_t)n * 2 * C + c], sdyx[c] += e->sums[(int64_t)n * 2 * C + C + c];
    nnz_batchnorm_grad_coefs(M, C, sdy, sdyx, e->gamma, e->invstd, e->dgamma, e->dbeta, mean_dy, k, a);
    for (int c = 0; c < C; c++) b[c] = a[c] * (k[c] * e->mean[c] - mean_dy[c]), ee[c] = a[c] * k[c];
    memset(gx, 0, ((size_t)C * IC + (size_t)IC * IC) * sizeof(float));
    for (int sl = 0; sl < e->slots; sl++) { /* in slot order; simd: the buffers do not overlap */
        const float *sgx = e->gx + (size_t)sl * C * IC, *sxx = e->xx + (size_t)sl * IC * IC;
        const double *ssx = e->sx + (size_t)sl * IC;
#pragma omp simd
        for (size_t i = 0; i < (size_t)C * IC; i++) gx[i] += sgx[i];
#pragma omp simd
        for (size_t i = 0; i < (size_t)IC * IC; i++) xx[i] += sxx[i];
#pragma omp simd
        for (int i = 0; i < IC; i++) sx[i] += ssx[i];
    }
    /* dW1 += Σ(a·g)ᵀx + b ⊗ Σx - e ⊙ (W1·XᵀX). The sums run over j (then c, below) in ascending
     * order for each output, as plain loops would; the loops are turned so the inner one runs
     * along a row (i) and vectorizes, acc holding the row's sums. */
    double *acc = sx + IC;
    for (int c = 0; c < C; c++) {
        const float *w1c = e->w1 + (size_t)c * IC;
        for (int i = 0; i < IC; i++) acc[i] = 0.0;
        for (int j = 0; j < IC; j++) {
            const double wj = w1c[j];
            const float *xxj = xx + (size_t)j * IC;
#pragma omp simd
            for (int i = 0; i < IC; i++) acc[i] += wj * xxj[i];
        }
        float *dw = e->dw1 + (size_t)c * IC;
        const float *gxc = gx + (size_t)c * IC;
#pragma omp simd
        for (int i = 0; i < IC; i++) dw[i] += (float)(gxc[i] + b[c] * sx[i] - ee[c] * acc[i]);
    }
    if (e->dx) {
        /* dx += b·W1 - x·(W1ᵀ diag(e) W1): one pass over the block input's width */
        for (int i = 0; i < IC; i++) acc[i] = 0.0;
        for (int c = 0; c < C; c++) {
            const double bc = b[c];
            const float *w1c = e->w1 + (size_t)c * IC;
#pragma omp simd
            for (int i = 0; i < IC; i++) acc[i] += bc * w1c[i];
        }
        for (int i = 0; i < IC; i++) bw[i] = (float)acc[i];
        for (int j = 0; j < IC; j++) {
            for (int i = 0; i < IC; i++) acc[i] = 0.0;
            for (int c = 0; c < C; c++) {
                const float *w1c = e->w1 + (size_t)c * IC;
                const double wje = (double)w1c[j] * ee[c];
#pragma omp simd
                for (int i = 0; i < IC; i++) acc[i] += wje * w1c[i];
            }
            for (int i = 0; i < IC; i++) mx[(size_t)j * IC + i] = (float)-acc[i];
        }
        const nnz_epilogue ep = {.add = bw, .lo = -INFINITY, .hi = INFINITY};
        nnz_gemm_small(M, IC, IC, e->x, IC, mx, true, &ep, e->dx);
    }
    nnz_expansion_grad_free(e);
}
