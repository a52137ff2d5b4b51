/* Benchmark of one layer's three products, sparse against dense, on random data: the weight
 * (rows, cols) gets a random mask at the sparsity (unstructured for CSR, blocks of the format's
 * block for BSR); forward out = X W^T, backward-data dX = dout W and the weight gradient (dense
 * GEMM dout^T X against SDDMM at the kept blocks), each timed as the median of iters runs,
 * dense and sparse alternating so both see the same machine. */
#include "train/train.h"

#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct {
    int rows, cols;
    int64_t m;
    const float *W, *X, *D;
    float *out, *dX, *dW;
    const nnz_spmat *sp;
    float *dval;
} layer_ctx;

/* product p (0 forward, 1 backward-data, 2 weight gradient), dense or sparse */
static nnz_status run_product(const layer_ctx *c, int p, bool sparse) {
    const int R = c->rows, K = c->cols, M = (int)c->m;
    switch (p) {
    case 0:
        if (sparse) return nnz_spmm_f32(c->sp, c->m, c->X, K, NULL, false, c->out, R);
        nnz_sgemm(false, true, M, R, K, 1.0f, c->X, K, c->W, K, 0.0f, c->out, R);
        return NNZ_OK;
    case 1:
        if (sparse) return nnz_spmm_bwd_data_f32(c->sp, c->m, c->D, R, false, c->dX, K);
        nnz_sgemm(false, false, M, K, R, 1.0f, c->D, R, c->W, K, 0.0f, c->dX, K);
        return NNZ_OK;
    default:
        if (sparse) return nnz_sddmm_f32(c->sp, c->m, c->D, R, c->X, K, c->dval);
        nnz_sgemm(true, false, R, K, M, 1.0f, c->D, R, c->X, K, 1.0f, c->dW, K);
        return NNZ_OK;
    }
}

nnz_status nnz_bench_layer(const nnz_layer_bench_config *cfg, nnz_layer_bench_result *out) {
    if (!cfg || !out) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_bench_layer: config and result are required");
    memset(out, 0, sizeof *out);
    const int R = cfg->rows, K = cfg->cols;
    if (R < 1 || K < 1 || cfg->m < 1 || cfg->m > INT32_MAX || cfg->iters < 1 || (int64_t)R * K > (1 << 28))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "layer benchmark: need rows, cols, m, iters >= 1 (got %dx%d, m %lld, "
                        "%d iterations) and at most 2^28 weights", R, K, (long long)cfg->m, cfg->iters);
    if (!(cfg->sparsity >= 0.0f && cfg->sparsity < 1.0f))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "layer benchmark: sparsity %g must be in [0, 1)", cfg->sparsity);
    nnz_sparse_format f;
    NNZ_TRY(nnz_sparse_format_parse(cfg->format ? cfg->format : "bsr:16x16", &f));
    if (f.kind != NNZ_SPARSE_FORCED || f.winograd)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "layer benchmark: give a format, csr or bsr:RxC (not auto, dense or "
                                             "winograd:16x16, which needs a conv: nnz bench --model with --mask channel-block)");
    const size_t nw = (size_t)R * K, nx = (size_t)cfg->m * K, no = (size_t)cfg->m * R;
    float *W = nnz_alloc(nw * 4, "benchmark weight"), *dW = nnz_calloc(nw * 4, "benchmark weight gradient");
    float *X = nnz_alloc(nx * 4, "benchmark input"), *dX = nnz_alloc(nx * 4, "benchmark input gradient");
    float *D = nnz_alloc(no * 4, "benchmark output gradient"), *O = nnz_alloc(no * 4, "benchmark output");
    uint8_t *mask = nnz_alloc(nw, "benchmark mask");
    nnz_spmat sp;
    memset(&sp, 0, sizeof sp);
    float *dval = NULL;
    nnz_status s = W && dW && X && dX && D && O && mask ? NNZ_OK : NNZ_ERR_NOMEM;
    if (s == NNZ_OK) {
        nnz_rng r = nnz_rng_make(cfg->seed, 0x1A7E);
        for (size_t i = 0; i < nw; i++) W[i] = nnz_rng_uniform(&r) - 0.5f;
        for (size_t i = 0; i < nx; i++) X[i] = nnz_rng_uniform(&r) - 0.5f;
        for (size_t i = 0; i < no; i++) D[i] = nnz_rng_uniform(&r) - 0.5f;
        nnz_mask_spec spec = {.kind = f.r == 1 && f.c == 1 ? NNZ_MASK_UNSTRUCTURED : NNZ_MASK_BLOCK,
                              .sparsity = cfg->sparsity, .block_rows = f.r, .block_cols = f.c};
        s = cfg->sparsity > 0.0f ? nnz_mask_make(&spec, R, K, NULL, cfg->seed, mask, NULL) : NNZ_OK;
        if (s == NNZ_OK && cfg->sparsity > 0.0f)
            for (size_t i = 0; i < nw; i++)
                if (!mask[i]) W[i] = 0.0f;
    }
    if (s == NNZ_OK) s = nnz_spmat_from_dense(R, K, W, K, NULL, f.r, f.c, &sp);
    if (s == NNZ_OK && !(dval = nnz_calloc(((size_t)nnz_spmat_val_count(&sp) + 1) * 4, "benchmark SDDMM output")))
        s = NNZ_ERR_NOMEM;
    double *times = s == NNZ_OK ? malloc(sizeof(double) * 6 * (size_t)(cfg->iters + 1)) : NULL;
    if (s == NNZ_OK && !times) s = nnz_fail(NNZ_ERR_NOMEM, "out of memory for benchmark timings");
    const layer_ctx c = {R, K, cfg->m, W, X, D, O, dX, dW, &sp, dval};
    for (int it = 0; s == NNZ_OK && it <= cfg->iters; it++) /* iteration 0 warms up */
        for (int p = 0; p < 3 && s == NNZ_OK; p++)
            for (int sparse = 0; sparse < 2 && s == NNZ_OK; sparse++) {
                double t0 = nnz_now_sec();
                s = run_product(&c, p, sparse);
                times[(size_t)(p * 2 + sparse) * (size_t)(cfg->iters + 1) + (size_t)it] = nnz_now_sec() - t0;
            }
    if (s == NNZ_OK) {
        double med[6];
        for (int k = 0; k < 6; k++) {
            double *t = times + (size_t)k * (size_t)(cfg->iters + 1) + 1;
            qsort(t, (size_t)cfg->iters, sizeof(double), cmp_double);
            med[k] = t[cfg->iters / 2];
        }
        out->nnz = sp.nnz;
        out->nblocks = sp.nblocks;
        for (int p = 0; p < 3; p++) out->dense_seconds[p] = med[2 * p], out->sparse_seconds[p] = med[2 * p + 1];
        out->dense_flops = 2.0 * (double)cfg->m * R * K;
        out->actual_flops = 2.0 * (double)cfg->m * (double)sp.nnz;
    }
    free(times);
    nnz_spmat_free(&sp);
    nnz_free(dval);
    nnz_free(W), nnz_free(dW), nnz_free(X), nnz_free(dX), nnz_free(D), nnz_free(O), nnz_free(mask);
    return s;
}
