/* Sparse fp32 kernels against OpenBLAS dense sgemm on the same product, in the same run:
 *   fwd       out(M,N) = X(M,K) * W(N,K)^T         dense: sgemm(X, W^T)
 *   bwd_data  dX(M,K)  = dout(M,N) * W(N,K)         dense: sgemm(dout, W)
 *   sddmm     dW(N,K) += dout^T X at W's blocks     dense: sgemm(dout^T, X), the full dW
 * For each shape, format (CSR: random element mask; BSR rxc: random mask of whole blocks)
 * and sparsity, dense and sparse runs alternate (so both see the same machine load) and the
 * medians are reported: one JSON line per measurement with actual GFLOP/s (2*nnz*M) and
 * effective GFLOP/s (2*M*N*K, the dense-equivalent) and the speedup over dense.
 *   nnz_bench_spmm [--threads 2] [--reps 7] [--quick] [--shape NAME] [--block RxC] [--kernel K]
 * --quick: the 1024x1024 shape, fwd only; --shape/--block/--kernel: only those. */
#include "bench_util.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "kernels/kernels.h"

typedef struct {
    const char *name;
    int M, N, K; /* X (M,K), W (N,K) */
} bench_shape;

static const bench_shape shapes[] = {
    {"fc1024", 256, 1024, 1024},            /* the 1024x1024 weight, N=256 */
    {"fc1024.m1", 1, 1024, 1024},          /* batch-1 inference of the same layer */
    {"vgg8.conv2.b32", 32 * 784, 64, 576},  /* 3x3 64->64 at 28x28, im2col */
    {"vgg8.conv4.b32", 32 * 196, 128, 1152}, /* 3x3 128->128 at 14x14 */
    {"vgg8.conv6.b32", 32 * 49, 256, 2304},  /* 3x3 256->256 at 7x7 */
    {"mbv2.b2.pw1.b32", 32 * 196, 144, 24}, /* 1x1 24->144 at 14x14 */
    {"mbv2.head.b32", 32 * 49, 256, 64},    /* 1x1 64->256 at 7x7 */
};
static const double sparsities[] = {0.5, 0.75, 0.9, 0.95, 0.98};

typedef enum { K_FWD, K_BWD, K_SDDMM } kernel_kind;
static const char *const kernel_names[] = {"fwd", "bwd_data", "sddmm"};

/* exactly round((1-s) * units) of `units` kept (blocks for BSR, elements for CSR) */
static uint8_t *make_mask(int N, int K, int r, int c, double s, uint64_t seed) {
    const int brows = (N + r - 1) / r, bcols = (K + c - 1) / c;
    const int units = brows * bcols;
    int32_t *perm = bench_alloc((size_t)units * sizeof(int32_t));
    for (int i = 0; i < units; i++) perm[i] = i;
    nnz_rng g = nnz_rng_make(seed, 3);
    nnz_rng_shuffle(&g, perm, units);
    int keep = (int)((1.0 - s) * units + 0.5);
    if (keep < 1) keep = 1; /* small weights at coarse blocks: actual_sparsity says what was measured */
    uint8_t *mask = calloc((size_t)N * K, 1);
    if (!mask) exit(1);
    for (int u = 0; u < keep; u++) {
        const int br = perm[u] / bcols, bc = perm[u] % bcols;
        for (int i = br * r; i < (br + 1) * r && i < N; i++)
            for (int k = bc * c; k < (bc + 1) * c && k < K; k++) mask[(int64_t)i * K + k] = 1;
    }
    nnz_free(perm);
    return mask;
}

typedef struct {
    const bench_shape *sh;
    float *X, *W, *dout, *out, *dX, *dW;
} operands;

static void run_dense(kernel_kind k, const operands *o) {
    const int M = o->sh->M, N = o->sh->N, K = o->sh->K;
    switch (k) {
    case K_FWD: nnz_sgemm(false, true, M, N, K, 1.0f, o->X, K, o->W, K, 0.0f, o->out, N); break;
    case K_BWD: nnz_sgemm(false, false, M, K, N, 1.0f, o->dout, N, o->W, K, 0.0f, o->dX, K); break;
    case K_SDDMM: nnz_sgemm(true, false, N, K, M, 1.0f, o->dout, N, o->X, K, 1.0f, o->dW, K); break;
    }
}

static void run_sparse(kernel_kind k, const operands *o, const nnz_spmat *s, float *dval) {
    const int M = o->sh->M, N = o->sh->N, K = o->sh->K;
    nnz_status st = NNZ_OK;
    switch (k) {
    case K_FWD: st = nnz_spmm_f32(s, M, o->X, K, NULL, false, o->out, N); break;
    case K_BWD: st = nnz_spmm_bwd_data_f32(s, M, o->dout, N, false, o->dX, K); break;
    case K_SDDMM: st = nnz_sddmm_f32(s, M, o->dout, N, o->X, K, dval); break;
    }
    if (st != NNZ_OK) {
        fprintf(stderr, "spmm bench: %s\n", nnz_last_error());
        exit(1);
    }
}

static void measure(kernel_kind k, const operands *o, const nnz_spmat *s, float *dval, const char *format, int r,
                    int c, double sparsity, int reps, int threads) {
    double td[64], ts[64];
    run_dense(k, o); /* warm up both */
    run_sparse(k, o, s, dval);
    for (int i = 0; i < reps; i++) {
        double t0 = nnz_now_sec();
        run_dense(k, o);
        double t1 = nnz_now_sec();
        run_sparse(k, o, s, dval);
        double t2 = nnz_now_sec();
        td[i] = t1 - t0, ts[i] = t2 - t1;
    }
    double tdmin = td[0], tsmin = ts[0];
    for (int i = 1; i < reps; i++) tdmin = td[i] < tdmin ? td[i] : tdmin, tsmin = ts[i] < tsmin ? ts[i] : tsmin;
    const double tdm = bench_median(td, reps), tsm = bench_median(ts, reps);
    const bench_shape *sh = o->sh;
    const double eff = 2.0 * sh->M * (double)sh->N * sh->K, act = 2.0 * (double)s->nnz * sh->M;
    printf("{\"bench\":\"spmm\",\"kernel\":\"%s\",\"format\":\"%s\",\"block\":\"%dx%d\",\"shape\":\"%s\",\"M\":%d,"
           "\"N\":%d,\"K\":%d,\"sparsity\":%.2f,\"actual_sparsity\":%.4f,\"threads\":%d,\"time_ms\":%.6f,"
           "\"dense_ms\":%.6f,\"gflops_actual\":%.2f,\"gflops_effective\":%.2f,\"dense_gflops\":%.2f,"
           "\"speedup_vs_dense\":%.3f,\"time_min_ms\":%.6f,\"dense_min_ms\":%.6f}\n",
           kernel_names[k], format, r, c, sh->name, sh->M, sh->N, sh->K, sparsity,
           1.0 - (double)s->nnz / ((double)sh->N * sh->K), threads, tsm * 1e3, tdm * 1e3, act / tsm * 1e-9,
           eff / tsm * 1e-9, eff / tdm * 1e-9, tdm / tsm, tsmin * 1e3, tdmin * 1e3);
    fflush(stdout);
}

static void fill(float *x, int64_t n, uint64_t seed) {
    nnz_rng g = nnz_rng_make(seed, 1);
    for (int64_t i = 0; i < n; i++) x[i] = 2.0f * nnz_rng_uniform(&g) - 1.0f;
}

int main(int argc, char **argv) {
    nnz_prefer_startup_env(argv); /* OpenBLAS on its best kernels, passive OpenMP */
    int threads = 2, reps = 7, quick = 0;
    const char *only = NULL, *only_block = NULL, *only_kernel = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--shape") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(argv[i], "--block") && i + 1 < argc) only_block = argv[++i];
        else if (!strcmp(argv[i], "--kernel") && i + 1 < argc) only_kernel = argv[++i];
        else if (!strcmp(argv[i], "--quick")) quick = 1;
        else {
            fprintf(stderr, "usage: %s [--threads N] [--reps N] [--quick] [--shape NAME] [--block RxC] [--kernel fwd|bwd_data|sddmm]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    if (reps > 64) reps = 64;
    nnz_set_threads(threads);
    threads = nnz_get_threads();
    /* formats: CSR and BSR 16x16 everywhere; the other blocks on the 1024x1024 shape */
    static const int all_blocks[][2] = {{1, 1}, {16, 16}, {1, 4}, {4, 4}, {8, 8}, {16, 32}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const bench_shape *sh = &shapes[si];
        if (only && strcmp(only, sh->name)) continue;
        if (quick && si > 0) break;
        operands o = {.sh = sh};
        const int64_t M = sh->M, N = sh->N, K = sh->K;
        o.X = bench_alloc((size_t)(M * K) * 4), o.W = bench_alloc((size_t)(N * K) * 4), o.dout = bench_alloc((size_t)(M * N) * 4);
        o.out = bench_alloc((size_t)(M * N) * 4), o.dX = bench_alloc((size_t)(M * K) * 4), o.dW = bench_alloc((size_t)(N * K) * 4);
        fill(o.X, M * K, 1), fill(o.W, N * K, 2), fill(o.dout, M * N, 3), fill(o.dW, N * K, 4);
        const int nformats = si == 0 ? 6 : 2;
        for (int f = 0; f < nformats; f++) {
            const int r = all_blocks[f][0], c = all_blocks[f][1];
            const bool csr = r == 1 && c == 1;
            char bname[16];
            snprintf(bname, sizeof bname, "%dx%d", r, c);
            if (only_block && strcmp(only_block, bname)) continue;
            for (size_t p = 0; p < sizeof sparsities / sizeof sparsities[0]; p++) {
                uint8_t *mask = make_mask(sh->N, sh->K, r, c, sparsities[p], 100 + p);
                nnz_spmat s;
                if (nnz_spmat_from_dense(sh->N, sh->K, o.W, K, mask, r, c, &s) != NNZ_OK) {
                    fprintf(stderr, "spmm bench: %s\n", nnz_last_error());
                    return 1;
                }
                float *dval = bench_alloc((size_t)nnz_spmat_val_count(&s) * 4 + 64);
                memset(dval, 0, (size_t)nnz_spmat_val_count(&s) * 4);
                for (int k = 0; k < (quick ? 1 : 3); k++) {
                    if (only_kernel && strcmp(only_kernel, kernel_names[k])) continue;
                    measure((kernel_kind)k, &o, &s, dval, csr ? "csr" : "bsr", r, c, sparsities[p], reps, threads);
                }
                nnz_free(dval);
                nnz_spmat_free(&s);
                free(mask);
            }
        }
        nnz_free(o.X), nnz_free(o.W), nnz_free(o.dout), nnz_free(o.out), nnz_free(o.dX), nnz_free(o.dW);
    }
    return 0;
}
