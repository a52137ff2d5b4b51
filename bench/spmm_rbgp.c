/* The RBGP forward kernel (nnz_spmm_rbgp_f32) against the generic kernels on the SAME mask, in
 * the same run: BSR with the micro-block J_b as its block (nnz_spmm_f32), CSR (BSR 1x1), and
 * OpenBLAS dense sgemm of the whole weight:
 *   out(M,N) = X(M,K) * W(N,K)^T,   W masked by G_o (x) J_r (x) G_i (x) J_b (nnz_rbgp_plan_make
 *   + nnz_rbgp_make, seed 42, the planner's default factors for the shape and sparsity).
 * The four runs alternate per repetition (they see the same machine load); medians, and the
 * minima (on a shared machine other load only adds time, so the minimum is the cleaner one).
 * One thread: times are the process's CPU time (clock_gettime(CLOCK_PROCESS_CPUTIME_ID)), so
 * time-slicing with other processes is not counted; more threads: wall time. One JSON
 * line per (shape, sparsity, kernel): time, actual GFLOP/s (2*nnz*M), effective GFLOP/s
 * (2*M*N*K), and the ratios rbgp/bsr, rbgp/csr, rbgp/dense (speedups: other time / rbgp time).
 *   nnz_bench_spmm_rbgp [--threads 1] [--reps 5] [--shape NAME] [--block RxC] [--sparsity S] [--only K]
 * --only rbgp|bsr|csr|dense runs one kernel (for profiling; the ratios are then meaningless).
 * Shapes: vgg8's conv4 and conv6 weights at batch 8 and 32 (M = batch*H*W) and a 512x4608
 * (3x3, 512 channels) weight at 4x4 spatial. */
#include "bench_util.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/base.h"
#include "kernels/kernels.h"
#include "sparse/sparse.h"

typedef struct {
    const char *name;
    int M, N, K;
} bench_shape;

static const bench_shape shapes[] = {
    {"vgg8.conv4.b8", 8 * 196, 128, 1152},  /* 3x3 128->128 at 14x14 */
    {"vgg8.conv6.b32", 32 * 49, 256, 2304}, /* 3x3 256->256 at 7x7 */
    {"conv512.b32", 32 * 16, 512, 4608},    /* 3x3 512->512 at 4x4 */
};
static const double sparsities[] = {0.75, 0.875, 0.9375};

static void die(const char *what) {
    fprintf(stderr, "spmm_rbgp bench: %s: %s\n", what, nnz_last_error());
    exit(1);
}

/* With one thread: the process's CPU time, which does not count the time other processes held
 * the core (this machine is shared: wall time swings 3x between repetitions); else wall time. */
static bool cpu_clock;
static double now(void) {
    if (!cpu_clock) return nnz_now_sec();
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void fill(float *x, int64_t n, uint64_t seed) {
    nnz_rng g = nnz_rng_make(seed, 1);
    for (int64_t i = 0; i < n; i++) x[i] = 2.0f * nnz_rng_uniform(&g) - 1.0f;
}

enum { K_RBGP, K_BSR, K_CSR, K_DENSE, NK };
static const char *const knames[NK] = {"rbgp", "bsr", "csr", "dense"};

int main(int argc, char **argv) {
    nnz_prefer_startup_env(argv); /* OpenBLAS on its best kernels, passive OpenMP */
    int threads = 1, reps = 5, br = 4, bc = 4;
    const char *only = NULL, *only_kernel = NULL;
    double only_s = 0.0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--shape") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(argv[i], "--sparsity") && i + 1 < argc) only_s = atof(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) only_kernel = argv[++i];
        else if (!strcmp(argv[i], "--block") && i + 1 < argc && sscanf(argv[i + 1], "%dx%d", &br, &bc) == 2) i++;
        else {
            fprintf(stderr, "usage: %s [--threads N] [--reps N] [--shape NAME] [--block RxC] [--sparsity S] [--only KERNEL]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    if (reps > 64) reps = 64;
    if (!nnz_sparse_block_supported(br, bc)) {
        fprintf(stderr, "spmm_rbgp bench: --block %dx%d: the BSR kernels need r in {1,4,8,16,32}, c in {4,8,16,32}\n", br, bc);
        return 2;
    }
    nnz_set_threads(threads);
    threads = nnz_get_threads();
    cpu_clock = threads == 1;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const bench_shape *sh = &shapes[si];
        if (only && strcmp(only, sh->name)) continue;
        const int64_t M = sh->M, N = sh->N, K = sh->K;
        float *X = bench_alloc((size_t)(M * K) * 4), *W = bench_alloc((size_t)(N * K) * 4), *out = bench_alloc((size_t)(M * N) * 4);
        float *Wm = bench_alloc((size_t)(N * K) * 4);
        uint8_t *mask = bench_alloc((size_t)(N * K));
        fill(X, M * K, 1), fill(W, N * K, 2);
        for (size_t p = 0; p < sizeof sparsities / sizeof sparsities[0]; p++) {
            if (only_s > 0 && (only_s < sparsities[p] - 1e-9 || only_s > sparsities[p] + 1e-9)) continue;
            nnz_mask_spec spec = {.kind = NNZ_MASK_RBGP, .sparsity = (float)sparsities[p], .block_rows = br, .block_cols = bc};
            nnz_rbgp_plan plan;
            nnz_rbgp rb;
            if (nnz_rbgp_plan_make((int)N, (int)K, &spec, &plan) != NNZ_OK) die("plan");
            if (nnz_rbgp_make(&plan, 42, 16, &rb) != NNZ_OK) die("graphs");
            nnz_rbgp_expand(&rb, mask);
            int64_t nnz = 0;
            for (int64_t i = 0; i < N * K; i++) Wm[i] = mask[i] ? W[i] : 0.0f, nnz += mask[i];
            const nnz_rbgp_geom geom = {.rows = (int)N, .cols = (int)K, .br = plan.br, .bc = plan.bc, .mi = plan.mi,
                                        .ni = plan.ni, .dli = plan.dli, .rr = plan.rr, .rc = plan.rc, .mo = plan.mo,
                                        .no = plan.no, .dlo = plan.dlo};
            nnz_rbgp_mat A;
            nnz_spmat bsr, csr;
            if (nnz_rbgp_mat_pack(&geom, rb.go.adj, rb.gi.adj, W, K, &A) != NNZ_OK) die("pack");
            if (nnz_spmat_from_dense((int)N, (int)K, W, K, mask, br, bc, &bsr) != NNZ_OK) die("bsr");
            if (nnz_spmat_from_dense((int)N, (int)K, W, K, mask, 1, 1, &csr) != NNZ_OK) die("csr");
            double t[NK][64];
            for (int rep = -1; rep < reps; rep++) /* rep -1 warms up */
                for (int k = 0; k < NK; k++) {
                    if (only_kernel && strcmp(only_kernel, knames[k])) continue;
                    const double t0 = now();
                    nnz_status st = NNZ_OK;
                    switch (k) {
                    case K_RBGP: st = nnz_spmm_rbgp_f32(&A, M, X, K, NULL, false, out, N); break;
                    case K_BSR: st = nnz_spmm_f32(&bsr, M, X, K, NULL, false, out, N); break;
                    case K_CSR: st = nnz_spmm_f32(&csr, M, X, K, NULL, false, out, N); break;
                    default: nnz_sgemm(false, true, (int)M, (int)N, (int)K, 1.0f, X, (int)K, Wm, (int)K, 0.0f, out, (int)N);
                    }
                    if (st != NNZ_OK) die(knames[k]);
                    if (rep >= 0) t[k][rep] = now() - t0;
                }
            double med[NK], mn[NK];
            for (int k = 0; k < NK; k++) {
                mn[k] = t[k][0];
                for (int i = 1; i < reps; i++) mn[k] = t[k][i] < mn[k] ? t[k][i] : mn[k];
                med[k] = bench_median(t[k], reps);
            }
            const double eff = 2.0 * M * (double)N * K, act = 2.0 * (double)nnz * M;
            for (int k = 0; k < NK; k++)
                if (!only_kernel || !strcmp(only_kernel, knames[k]))
                printf("{\"bench\":\"spmm_rbgp\",\"kernel\":\"%s\",\"shape\":\"%s\",\"M\":%lld,\"N\":%lld,\"K\":%lld,"
                       "\"block\":\"%dx%d\",\"factors\":\"G_o %dx%d dl %d, J_r %dx%d, G_i %dx%d dl %d\","
                       "\"sparsity\":%.4f,\"actual_sparsity\":%.4f,\"threads\":%d,\"clock\":\"%s\",\"isa\":\"%s\",\"time_ms\":%.4f,"
                       "\"gflops_actual\":%.2f,\"gflops_effective\":%.2f,\"rbgp_speedup\":%.3f,\"time_min_ms\":%.4f,"
                       "\"rbgp_speedup_min\":%.3f}\n",
                       knames[k], sh->name, (long long)M, (long long)N, (long long)K, br, bc, plan.mo, plan.no, plan.dlo,
                       plan.rr, plan.rc, plan.mi, plan.ni, plan.dli, sparsities[p], 1.0 - (double)nnz / ((double)N * K),
                       threads, cpu_clock ? "cpu" : "wall", nnz_isa_name(nnz_isa_active()), med[k] * 1e3, (k == K_DENSE ? eff : act) / med[k] * 1e-9,
                       eff / med[k] * 1e-9, only_kernel ? 0.0 : med[k] / med[K_RBGP], mn[k] * 1e3,
                       only_kernel ? 0.0 : mn[k] / mn[K_RBGP]); /* --only: no ratios (0) */
            fflush(stdout);
            nnz_rbgp_mat_free(&A);
            nnz_spmat_free(&bsr);
            nnz_spmat_free(&csr);
            nnz_rbgp_free(&rb);
        }
        nnz_free(X), nnz_free(W), nnz_free(out), nnz_free(Wm), nnz_free(mask);
    }
    return 0;
}
