/* bf16 GEMM throughput: nnz_gemm_bf16 (the active ISA path) against oneDNN's bf16 matmul
 * and nnz's fp32 GEMM (nnz_sgemm, OpenBLAS), all in the same run, the contenders taking
 * turns within each repetition so that a noisy neighbour hits them alike. One JSON line per
 * (shape, contender): median time, GFLOP/s, and for nnz the ratios (speed-ups) over oneDNN
 * bf16 and over nnz fp32.
 *
 *   nnz_bench_gemm_bf16 [--threads N (2)] [--shapes square|zoo|all (all)] [--min-reps R (5)]
 *
 * Shapes: square 256..2048, and the training GEMMs of the zoo's lenet5 and vgg8 at batch
 * 128 on 28x28x1 inputs, as src/nn/conv2d.c calls them with im2col (whole batch, one group):
 *   fwd   out (M,OC)  = col (M,K) * W(OC,K)^T      transB
 *   bwd-d dcol (M,K)  = dout (M,OC) * W (OC,K)
 *   bwd-w dW (OC,K)  += dout^T (OC,M) * col (M,K)   transA
 * with M = 128*OH*OW, K = KH*KW*IC. Inputs are uniform in [-1, 1]; nnz and oneDNN get bf16
 * copies, OpenBLAS the fp32 originals. */
#include "bench_util.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "onednn_matmul.h"

typedef struct {
    const char *name;
    bool transA, transB;
    int M, N, K;
} shape;

#define CONV(net, layer, M, OC, K)                                                                       \
    {net "." layer ".fwd", false, true, (M), (OC), (K)}, {net "." layer ".bwd_data", false, false, (M), (K), (OC)}, \
    {net "." layer ".bwd_weight", true, false, (OC), (K), (M)}

static const shape square_shapes[] = {
    {"square256", false, false, 256, 256, 256},
    {"square512", false, false, 512, 512, 512},
    {"square1024", false, false, 1024, 1024, 1024},
    {"square2048", false, false, 2048, 2048, 2048},
};
/* the first conv of each net has no input gradient: its bwd_data is listed for completeness */
static const shape zoo_shapes[] = {
    CONV("lenet5", "conv1", 128 * 28 * 28, 32, 25),  CONV("lenet5", "conv2", 128 * 14 * 14, 64, 800),
    CONV("vgg8", "conv1", 128 * 28 * 28, 64, 9),     CONV("vgg8", "conv2", 128 * 28 * 28, 64, 576),
    CONV("vgg8", "conv3", 128 * 14 * 14, 128, 576),  CONV("vgg8", "conv4", 128 * 14 * 14, 128, 1152),
    CONV("vgg8", "conv5", 128 * 7 * 7, 256, 1152),   CONV("vgg8", "conv6", 128 * 7 * 7, 256, 2304),
};

enum { C_NNZ_BF16, C_NNZ_BF16_F32IN, C_ONEDNN_BF16, C_NNZ_FP32, CONTENDERS };
static const char *const contender_names[CONTENDERS] = {"nnz_bf16", "nnz_bf16_f32in", "onednn_bf16", "nnz_fp32"};

static void bench_shape(const shape *s, int threads, int min_reps) {
    const size_t na = (size_t)s->M * s->K, nb = (size_t)s->K * s->N, nc = (size_t)s->M * s->N;
    float *Af = nnz_alloc(na * 4, "A"), *Bf = nnz_alloc(nb * 4, "B"), *C[CONTENDERS];
    nnz_bf16 *Ab = nnz_alloc(na * 2, "A bf16"), *Bb = nnz_alloc(nb * 2, "B bf16");
    for (int c = 0; c < CONTENDERS; c++) C[c] = nnz_alloc(nc * 4, "C");
    if (!Af || !Bf || !Ab || !Bb) {
        fprintf(stderr, "nnz_bench_gemm_bf16: %s\n", nnz_last_error());
        exit(1);
    }
    nnz_rng r = nnz_rng_make(1, 0);
    for (size_t i = 0; i < na; i++) Af[i] = 2.0f * nnz_rng_uniform(&r) - 1.0f;
    for (size_t i = 0; i < nb; i++) Bf[i] = 2.0f * nnz_rng_uniform(&r) - 1.0f;
    nnz_cvt_f32_to_bf16((int64_t)na, Af, Ab);
    nnz_cvt_f32_to_bf16((int64_t)nb, Bf, Bb);
    const int lda = s->transA ? s->M : s->K, ldb = s->transB ? s->K : s->N;
    onednn_matmul dn;
    onednn_init(&dn, s->M, s->N, s->K, s->transA, s->transB, Ab, Bb, C[C_ONEDNN_BF16]);

    const double flop = 2.0 * s->M * s->N * s->K;
    enum { MAX_REPS = 50 };
    double t[CONTENDERS][MAX_REPS];
    int reps = 0;
    double spent = 0;
    /* rep 0 is a warm-up (page faults, oneDNN's kernel generation), not counted */
    for (int rep = -1; rep < MAX_REPS && (rep < min_reps || spent < 1.0); rep++) {
        for (int c = 0; c < CONTENDERS; c++) {
            const double t0 = nnz_now_sec();
            switch (c) {
            case C_NNZ_BF16:
                nnz_gemm_bf16(s->transA, s->transB, s->M, s->N, s->K, 1.0f, Ab, lda, Bb, ldb, 0.0f, C[c], s->N);
                break;
            case C_NNZ_BF16_F32IN:
                nnz_gemm_bf16_f32in(s->transA, s->transB, s->M, s->N, s->K, 1.0f, Af, lda, Bf, ldb, 0.0f, C[c], s->N);
                break;
            case C_ONEDNN_BF16: onednn_run(&dn); break;
            case C_NNZ_FP32:
                nnz_sgemm(s->transA, s->transB, s->M, s->N, s->K, 1.0f, Af, lda, Bf, ldb, 0.0f, C[c], s->N);
                break;
            }
            const double dt = nnz_now_sec() - t0;
            if (rep >= 0) t[c][rep] = dt, spent += dt;
        }
        if (rep >= 0) reps = rep + 1;
    }
    double med[CONTENDERS];
    for (int c = 0; c < CONTENDERS; c++) {
        qsort(t[c], (size_t)reps, sizeof(double), bench_cmp_double);
        med[c] = reps % 2 ? t[c][reps / 2] : 0.5 * (t[c][reps / 2 - 1] + t[c][reps / 2]);
    }
    /* nnz's bf16 result against oneDNN's (the same bf16 inputs; only summation order differs) */
    double diff = 0, scale = 0;
    for (size_t i = 0; i < nc; i++) {
        diff = fmax(diff, fabs((double)C[C_NNZ_BF16][i] - C[C_ONEDNN_BF16][i]));
        scale = fmax(scale, fabs((double)C[C_ONEDNN_BF16][i]));
    }
    for (int c = 0; c < CONTENDERS; c++) {
        printf("{\"bench\":\"gemm_bf16\",\"shape\":\"%s\",\"M\":%d,\"N\":%d,\"K\":%d,\"transA\":%d,\"transB\":%d,"
               "\"impl\":\"%s\",\"path\":\"%s\",\"threads\":%d,\"reps\":%d,\"median_ms\":%.4f,\"gflops\":%.1f",
               s->name, s->M, s->N, s->K, s->transA, s->transB, contender_names[c],
               c <= C_NNZ_BF16_F32IN ? nnz_isa_name(nnz_isa_active()) : c == C_ONEDNN_BF16 ? "onednn" : "openblas",
               threads, reps, 1e3 * med[c], flop / med[c] * 1e-9);
        if (c <= C_NNZ_BF16_F32IN)
            printf(",\"vs_onednn_bf16\":%.3f,\"vs_nnz_fp32\":%.3f", med[C_ONEDNN_BF16] / med[c], med[C_NNZ_FP32] / med[c]);
        if (c == C_NNZ_BF16) printf(",\"max_rel_diff_vs_onednn\":%.2e", scale > 0 ? diff / scale : diff);
        printf("}\n");
        fflush(stdout);
    }
    onednn_fini(&dn);
    nnz_free(Af), nnz_free(Bf), nnz_free(Ab), nnz_free(Bb);
    for (int c = 0; c < CONTENDERS; c++) nnz_free(C[c]);
}

int main(int argc, char **argv) {
    nnz_prefer_startup_env(argv);
    int threads = 2, min_reps = 5;
    const char *which = "all";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--shapes") && i + 1 < argc) which = argv[++i];
        else if (!strcmp(argv[i], "--min-reps") && i + 1 < argc) min_reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--threads N] [--shapes square|zoo|all] [--min-reps R]\n", argv[0]);
            return 2;
        }
    }
    nnz_set_threads(threads);
    if (strcmp(which, "zoo") != 0)
        for (size_t i = 0; i < sizeof square_shapes / sizeof square_shapes[0]; i++)
            bench_shape(&square_shapes[i], threads, min_reps);
    if (strcmp(which, "square") != 0)
        for (size_t i = 0; i < sizeof zoo_shapes / sizeof zoo_shapes[0]; i++)
            bench_shape(&zoo_shapes[i], threads, min_reps);
    return 0;
}
