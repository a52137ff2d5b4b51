/* bf16 block-sparse forward SpMM against its peers, in the same run:
 *   nnz_bf16_bsr   nnz_spmm_bf16: out(M,N) = X(M,K) * W(N,K)^T, X and W bf16, fp32 out, on the
 *                  path the dispatcher picks (printed: amx, avx512bf16 or ref)
 *   nnz_fp32_bsr   nnz_spmm_f32 on the same mask, fp32 X and W
 *   onednn_bf16    oneDNN's dense bf16 matmul of the same (masked, zeros included) W
 * For each block shape and sparsity (a random mask of whole blocks, exactly round((1-s) *
 * blocks) kept), the contenders take turns within each repetition, so a noisy neighbour hits
 * them alike; medians are reported. One JSON line per (block, sparsity): time, actual GFLOP/s
 * (2 * kept weights * M) and effective GFLOP/s (2*M*N*K, the dense-equivalent) of each
 * sparse contender, oneDNN's GFLOP/s, the ratios of the bf16 kernel's time to oneDNN's dense
 * bf16 and to nnz's fp32 BSR (medians), and each contender's fastest run (*_min_ms). --bwd adds backward-data (dX = dout * W; oneDNN: dense
 * dout * W) lines. --wgrad adds the weight gradient: the bf16 SDDMM nnz_sddmm_bf16 (dW at the
 * kept blocks only, = dout(M,N)^T X(M,K)) against nnz_sddmm_f32 and the dense bf16 weight-
 * gradient GEMM, nnz's own (nnz_gemm_bf16, transA) and oneDNN's (nnz_dense_bf16_ms,
 * onednn_bf16_dense_ms; the ratios *_vs_nnz_dense and *_vs_onednn_dense).
 *   nnz_bench_spmm_bf16 [--threads 1] [--reps 5] [--M 256] [--N 1024] [--K 1024] [--bwd] [--wgrad] */
#include "bench_util.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "kernels/kernels.h"
#include "onednn_matmul.h"

static const int blocks[][2] = {{16, 16}, {16, 32}};
static const double sparsities[] = {0.5, 0.75, 0.9, 0.95, 0.98};

static void check(nnz_status st) {
    if (st != NNZ_OK) {
        fprintf(stderr, "nnz_bench_spmm_bf16: %s\n", nnz_last_error());
        exit(1);
    }
}

enum { C_BF16_BSR, C_FP32_BSR, C_ONEDNN, C_NNZ_DENSE, CONTENDERS }; /* C_NNZ_DENSE: --wgrad only */

/* each contender's median and fastest of its reps times (sorts them) */
static void summarize(double t[CONTENDERS][64], int reps, double *med, double *mn) {
    for (int ct = 0; ct < CONTENDERS; ct++) {
        med[ct] = bench_median(t[ct], reps);
        mn[ct] = t[ct][0];
    }
}

/* The weight gradient at one (block, sparsity): dW (N,K) = dout(M,N)^T X(M,K), the SDDMM at the
 * kept blocks (bf16, fp32) against the dense bf16 GEMMs (nnz's, oneDNN's) of every weight */
static void wgrad_line(const nnz_spmat *s, const uint8_t *mask, int M, int N, int K, int r, int c, double sparsity,
                       int threads, int reps, const float *X, const float *D, const nnz_bf16 *Xb, const nnz_bf16 *Db,
                       float **out) {
    const int64_t nv = nnz_spmat_val_count(s);
    float *dv = bench_alloc((size_t)(nv ? nv : 1) * 4), *dv32 = bench_alloc((size_t)(nv ? nv : 1) * 4);
    onednn_matmul dn;
    onednn_init(&dn, N, K, M, true, false, (void *)Db, (void *)Xb, out[C_ONEDNN]);
    double t[CONTENDERS][64];
    for (int rep = -1; rep < reps; rep++)
        for (int ct = 0; ct < CONTENDERS; ct++) {
            if (ct == C_BF16_BSR) memset(dv, 0, (size_t)nv * 4);
            if (ct == C_FP32_BSR) memset(dv32, 0, (size_t)nv * 4);
            const double t0 = nnz_now_sec();
            switch (ct) {
            case C_BF16_BSR: check(nnz_sddmm_bf16(s, M, Db, N, Xb, K, dv)); break;
            case C_FP32_BSR: check(nnz_sddmm_f32(s, M, D, N, X, K, dv32)); break;
            case C_ONEDNN: onednn_run(&dn); break;
            case C_NNZ_DENSE: nnz_gemm_bf16(true, false, N, K, M, 1.0f, Db, N, Xb, K, 0.0f, out[ct], K); break;
            }
            if (rep >= 0) t[ct][rep] = nnz_now_sec() - t0;
        }
    onednn_fini(&dn);
    double med[CONTENDERS], mn[CONTENDERS];
    summarize(t, reps, med, mn);
    /* the SDDMM against oneDNN's dense gradient at the kept positions (same bf16 numbers) */
    nnz_spmat_scatter_values(s, dv, false, out[C_BF16_BSR], K);
    double diff = 0, scale = 0;
    for (int64_t i = 0; i < (int64_t)N * K; i++) {
        scale = fmax(scale, fabs((double)out[C_ONEDNN][i]));
        if (mask[i]) diff = fmax(diff, fabs((double)out[C_BF16_BSR][i] - out[C_ONEDNN][i]));
    }
    const double eff = 2.0 * M * (double)N * K, act = 2.0 * (double)s->nnz * M;
    printf("{\"bench\":\"spmm_bf16\",\"kernel\":\"wgrad\",\"block\":\"%dx%d\",\"M\":%d,\"N\":%d,\"K\":%d,"
           "\"sparsity\":%.2f,\"actual_sparsity\":%.4f,\"threads\":%d,\"reps\":%d,\"path\":\"%s\","
           "\"bf16_bsr_ms\":%.4f,\"fp32_bsr_ms\":%.4f,\"nnz_dense_bf16_ms\":%.4f,\"onednn_bf16_dense_ms\":%.4f,"
           "\"bf16_bsr_gflops_actual\":%.2f,\"bf16_bsr_gflops_effective\":%.2f,"
           "\"fp32_bsr_gflops_actual\":%.2f,\"nnz_dense_bf16_gflops\":%.2f,\"onednn_bf16_gflops\":%.2f,"
           "\"bf16_bsr_vs_onednn_dense\":%.3f,\"bf16_bsr_vs_nnz_dense\":%.3f,\"bf16_bsr_vs_fp32_bsr\":%.3f,"
           "\"max_rel_diff_vs_onednn\":%.2e,\"bf16_bsr_min_ms\":%.4f,\"fp32_bsr_min_ms\":%.4f,"
           "\"nnz_dense_bf16_min_ms\":%.4f,\"onednn_bf16_dense_min_ms\":%.4f}\n",
           r, c, M, N, K, sparsity, 1.0 - (double)s->nnz / ((double)N * K), threads, reps,
           nnz_spmm_bf16_path_name(nnz_sddmm_bf16_path_for(&s->fwd)), med[C_BF16_BSR] * 1e3, med[C_FP32_BSR] * 1e3,
           med[C_NNZ_DENSE] * 1e3, med[C_ONEDNN] * 1e3, act / med[C_BF16_BSR] * 1e-9, eff / med[C_BF16_BSR] * 1e-9,
           act / med[C_FP32_BSR] * 1e-9, eff / med[C_NNZ_DENSE] * 1e-9, eff / med[C_ONEDNN] * 1e-9,
           med[C_ONEDNN] / med[C_BF16_BSR], med[C_NNZ_DENSE] / med[C_BF16_BSR], med[C_FP32_BSR] / med[C_BF16_BSR],
           scale > 0 ? diff / scale : diff, mn[C_BF16_BSR] * 1e3, mn[C_FP32_BSR] * 1e3, mn[C_NNZ_DENSE] * 1e3,
           mn[C_ONEDNN] * 1e3);
    fflush(stdout);
    nnz_free(dv), nnz_free(dv32);
}

int main(int argc, char **argv) {
    nnz_prefer_startup_env(argv);
    int threads = 1, reps = 5, M = 256, N = 1024, K = 1024, bwd = 0, wgrad = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--M") && i + 1 < argc) M = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--N") && i + 1 < argc) N = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--K") && i + 1 < argc) K = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--bwd")) bwd = 1;
        else if (!strcmp(argv[i], "--wgrad")) wgrad = 1;
        else {
            fprintf(stderr, "usage: %s [--threads N (1)] [--reps R (5)] [--M 256] [--N 1024] [--K 1024] [--bwd] [--wgrad]\n",
                    argv[0]);
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    if (reps > 64) reps = 64;
    if (M < 1 || N < 1 || K < 1) {
        fprintf(stderr, "nnz_bench_spmm_bf16: M, N, K must be >= 1\n");
        return 2;
    }
    nnz_set_threads(threads);
    threads = nnz_get_threads();
    float *W = bench_alloc((size_t)N * K * 4), *Wm = bench_alloc((size_t)N * K * 4), *X = bench_alloc((size_t)M * K * 4);
    float *D = bench_alloc((size_t)M * N * 4);
    nnz_bf16 *Wb = bench_alloc((size_t)N * K * 2), *Xb = bench_alloc((size_t)M * K * 2), *Db = bench_alloc((size_t)M * N * 2);
    int64_t out_n = (int64_t)M * (N > K ? N : K);
    if (out_n < (int64_t)N * K) out_n = (int64_t)N * K; /* the dense weight gradient */
    float *out[CONTENDERS];
    for (int c = 0; c < CONTENDERS; c++) out[c] = bench_alloc((size_t)out_n * 4);
    nnz_rng g = nnz_rng_make(1, 0);
    for (int64_t i = 0; i < (int64_t)N * K; i++) W[i] = 2.0f * nnz_rng_uniform(&g) - 1.0f;
    for (int64_t i = 0; i < (int64_t)M * K; i++) X[i] = 2.0f * nnz_rng_uniform(&g) - 1.0f;
    for (int64_t i = 0; i < (int64_t)M * N; i++) D[i] = 2.0f * nnz_rng_uniform(&g) - 1.0f;
    nnz_cvt_f32_to_bf16((int64_t)M * K, X, Xb);
    nnz_cvt_f32_to_bf16((int64_t)M * N, D, Db);

    for (size_t bi = 0; bi < sizeof blocks / sizeof blocks[0]; bi++)
        for (size_t si = 0; si < sizeof sparsities / sizeof sparsities[0]; si++) {
            const int r = blocks[bi][0], c = blocks[bi][1];
            const int brows = (N + r - 1) / r, bcols = (K + c - 1) / c, units = brows * bcols;
            int32_t *perm = bench_alloc((size_t)units * sizeof(int32_t));
            for (int u = 0; u < units; u++) perm[u] = u;
            nnz_rng pg = nnz_rng_make(100 + si, 3);
            nnz_rng_shuffle(&pg, perm, units);
            int keep = (int)((1.0 - sparsities[si]) * units + 0.5);
            if (keep < 1) keep = 1;
            uint8_t *mask = calloc((size_t)N * K, 1);
            if (!mask) return 1;
            for (int u = 0; u < keep; u++) {
                const int br = perm[u] / bcols, bc = perm[u] % bcols;
                for (int i = br * r; i < (br + 1) * r && i < N; i++)
                    for (int k = bc * c; k < (bc + 1) * c && k < K; k++) mask[(int64_t)i * K + k] = 1;
            }
            nnz_free(perm);
            for (int64_t i = 0; i < (int64_t)N * K; i++) Wm[i] = mask[i] ? W[i] : 0.0f;
            nnz_cvt_f32_to_bf16((int64_t)N * K, Wm, Wb);
            nnz_spmat s;
            check(nnz_spmat_from_dense(N, K, W, K, mask, r, c, &s));
            check(nnz_spmat_pack_bf16(&s));
            for (int kind = 0; kind < 2 + wgrad; kind++) {
                if (kind == 1 && !bwd) continue;
                if (kind == 2) {
                    wgrad_line(&s, mask, M, N, K, r, c, sparsities[si], threads, reps, X, D, Xb, Db, out);
                    continue;
                }
                /* fwd: out (M,N) = X * Wm^T; bwd_data: dX (M,K) = dout * Wm */
                const bool b = kind == 1;
                const int on = b ? K : N, ok = b ? N : K;
                onednn_matmul dn;
                onednn_init(&dn, M, on, ok, false, !b, b ? Db : Xb, Wb, out[C_ONEDNN]);
                double t[CONTENDERS][64];
                for (int rep = -1; rep < reps; rep++) /* rep -1: warm-up */
                    for (int ct = 0; ct < CONTENDERS; ct++) {
                        const double t0 = nnz_now_sec();
                        switch (ct) {
                        case C_BF16_BSR:
                            check(b ? nnz_spmm_bwd_data_bf16(&s, M, Db, N, false, out[ct], K)
                                    : nnz_spmm_bf16(&s, M, Xb, K, NULL, false, out[ct], N));
                            break;
                        case C_FP32_BSR:
                            check(b ? nnz_spmm_bwd_data_f32(&s, M, D, N, false, out[ct], K)
                                    : nnz_spmm_f32(&s, M, X, K, NULL, false, out[ct], N));
                            break;
                        case C_ONEDNN: onednn_run(&dn); break;
                        default: break; /* C_NNZ_DENSE: --wgrad only */
                        }
                        if (rep >= 0) t[ct][rep] = nnz_now_sec() - t0;
                    }
                onednn_fini(&dn);
                double med[CONTENDERS], mn[CONTENDERS];
                summarize(t, reps, med, mn);
                /* the bf16 kernel against oneDNN on the same bf16 numbers (only sum order differs) */
                double diff = 0, scale = 0;
                for (int64_t i = 0; i < (int64_t)M * on; i++) {
                    diff = fmax(diff, fabs((double)out[C_BF16_BSR][i] - out[C_ONEDNN][i]));
                    scale = fmax(scale, fabs((double)out[C_ONEDNN][i]));
                }
                const double eff = 2.0 * M * (double)N * K, act = 2.0 * (double)s.nnz * M;
                const nnz_spmm_bf16_path path = nnz_spmm_bf16_path_for(b ? &s.tr : &s.fwd);
                printf("{\"bench\":\"spmm_bf16\",\"kernel\":\"%s\",\"block\":\"%dx%d\",\"M\":%d,\"N\":%d,\"K\":%d,"
                       "\"sparsity\":%.2f,\"actual_sparsity\":%.4f,\"threads\":%d,\"reps\":%d,\"path\":\"%s\","
                       "\"bf16_bsr_ms\":%.4f,\"fp32_bsr_ms\":%.4f,\"onednn_bf16_dense_ms\":%.4f,"
                       "\"bf16_bsr_gflops_actual\":%.2f,\"bf16_bsr_gflops_effective\":%.2f,"
                       "\"fp32_bsr_gflops_actual\":%.2f,\"fp32_bsr_gflops_effective\":%.2f,\"onednn_bf16_gflops\":%.2f,"
                       "\"bf16_bsr_vs_onednn_dense\":%.3f,\"bf16_bsr_vs_fp32_bsr\":%.3f,\"max_rel_diff_vs_onednn\":%.2e,"
                       "\"bf16_bsr_min_ms\":%.4f,\"fp32_bsr_min_ms\":%.4f,\"onednn_bf16_dense_min_ms\":%.4f}\n",
                       b ? "bwd_data" : "fwd", r, c, M, N, K, sparsities[si], 1.0 - (double)s.nnz / ((double)N * K),
                       threads, reps, nnz_spmm_bf16_path_name(path), med[C_BF16_BSR] * 1e3, med[C_FP32_BSR] * 1e3,
                       med[C_ONEDNN] * 1e3, act / med[C_BF16_BSR] * 1e-9, eff / med[C_BF16_BSR] * 1e-9,
                       act / med[C_FP32_BSR] * 1e-9, eff / med[C_FP32_BSR] * 1e-9, eff / med[C_ONEDNN] * 1e-9,
                       med[C_ONEDNN] / med[C_BF16_BSR], med[C_FP32_BSR] / med[C_BF16_BSR],
                       scale > 0 ? diff / scale : diff, mn[C_BF16_BSR] * 1e3, mn[C_FP32_BSR] * 1e3, mn[C_ONEDNN] * 1e3);
                fflush(stdout);
            }
            nnz_spmat_free(&s);
            free(mask);
        }
    nnz_free(W), nnz_free(Wm), nnz_free(X), nnz_free(D), nnz_free(Wb), nnz_free(Xb), nnz_free(Db);
    for (int c = 0; c < CONTENDERS; c++) nnz_free(out[c]);
    return 0;
}
