/* The dense convolution kernels on the zoo's layer shapes against im2col + OpenBLAS sgemm on
 * the same product, in the same run (alternating, so both see the same machine load):
 *   fwd    out(P,OC) = conv(x, w): nnz_conv_implicit (3x3/5x5) or nnz_gemm_small (1x1)
 *          against nnz_im2col_nhwc + sgemm (1x1: sgemm alone)
 *   wgrad  dw(K,OC) += im2col(x)^T dout: nnz_conv_implicit_wgrad (1x1: nnz_gemm_small_at)
 *          against nnz_im2col_nhwc + sgemm(col^T, dout) (1x1: sgemm alone)
 *   and, where it applies (stride 1, 3x3 and 5x5), the Winograd convolution (nnz_conv_winograd with
 *   its weight transform; nnz_conv_winograd_wgrad), in effective GFLOP/s (the direct FLOPs)
 * One JSON line per shape and kernel: the median and fastest GFLOP/s of each, and their ratios.
 * The kernels run on the NNZ_ISA path; the tile tuning of gemm_small_simd.inc is measured here.
 *   nnz_bench_conv_kernels [--threads 1] [--reps 9] [--shape NAME] */
#include "bench_util.h"
#include <string.h>

#include "kernels/kernels.h"
#include "nnz.h"

typedef struct {
    const char *name;
    int N, H, IC, OC, K, stride, pad;
} conv_shape;

static const conv_shape shapes[] = {
    {"lenet5.conv2", 128, 14, 32, 64, 5, 1, 2},
    {"lenet5.conv2.dgrad", 128, 14, 64, 32, 5, 1, 2}, /* its data gradient as a turned-window conv */
    {"vgg8.conv2", 32, 28, 64, 64, 3, 1, 1},
    {"vgg8.conv4", 32, 14, 128, 128, 3, 1, 1},
    {"vgg8.conv6", 32, 7, 256, 256, 3, 1, 1},
    {"vgg8.conv5.b128", 128, 7, 128, 256, 3, 1, 1}, /* the 7x7 layers at the model's batch */
    {"vgg8.conv6.b128", 128, 7, 256, 256, 3, 1, 1},
    {"vgg8.conv4.b128", 128, 14, 128, 128, 3, 1, 1},
    {"mbv2.b1.pw2", 128, 28, 48, 16, 1, 1, 0},  /* 1x1 projections and expansions at batch 128 */
    {"mbv2.b2.pw1", 128, 14, 24, 144, 1, 1, 0},
    {"mbv2.b2.pw2", 128, 14, 144, 24, 1, 1, 0},
    {"mbv2.b3.pw2", 128, 7, 144, 48, 1, 1, 0},
    {"small.16to24", 128, 28, 16, 24, 3, 1, 1}, /* a merged DepthShrinker block */
    {"small.6to16", 128, 12, 6, 16, 5, 1, 0},   /* classic LeNet's conv2 */
    {"mbv2.stem", 128, 28, 1, 16, 3, 1, 1},     /* the first layer, over the image */
    {"ds.b1.16to24.s2", 128, 28, 16, 24, 3, 2, 1}, /* DepthShrinker's merged stride-2 blocks 1 and 3 */
    {"ds.b3.24to32.s2", 128, 14, 24, 32, 3, 2, 1},
};

static float *filled(size_t n, unsigned seed) {
    float *p = bench_alloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = (float)((i * 2654435761u + seed) % 1000) * 1e-3f - 0.5f;
    return p;
}

int main(int argc, char **argv) {
    nnz_prefer_startup_env(argv); /* OpenBLAS on its best kernels, passive OpenMP */
    int threads = 1, reps = 9;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--shape") == 0 && i + 1 < argc) only = argv[++i];
        else {
            fprintf(stderr, "usage: nnz_bench_conv_kernels [--threads 1] [--reps 9] [--shape NAME]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > 99 || threads < 1) {
        fprintf(stderr, "nnz_bench_conv_kernels: --reps must be 1..99 and --threads positive\n");
        return 2;
    }
    bool known = !only;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) known = known || strcmp(only, shapes[s].name) == 0;
    if (!known) {
        fprintf(stderr, "nnz_bench_conv_kernels: unknown --shape '%s'; one of:", only);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) fprintf(stderr, " %s", shapes[s].name);
        fprintf(stderr, "\n");
        return 2;
    }
    nnz_set_threads(threads);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const conv_shape *c = &shapes[s];
        if (only && strcmp(only, c->name) != 0) continue;
        nnz_conv_window g = {.H = c->H, .W = c->H, .KH = c->K, .KW = c->K, .stride = c->stride, .pad = c->pad};
        g.OH = (c->H + 2 * c->pad - c->K) / c->stride + 1;
        g.OW = g.OH;
        const int64_t P = (int64_t)c->N * g.OH * g.OW, K = (int64_t)c->K * c->K * c->IC;
        const bool pointwise = c->K == 1 && c->stride == 1 && c->pad == 0;
        float *x = filled((size_t)c->N * c->H * c->H * c->IC, 1), *w = filled((size_t)K * c->OC, 2);
        float *dout = filled((size_t)P * c->OC, 3), *out = filled((size_t)P * c->OC, 4);
        float *dw = filled((size_t)K * c->OC, 5), *col = pointwise ? NULL : filled((size_t)(P * K), 6);
        float *scratch = pointwise ? NULL : filled(nnz_conv_implicit_wgrad_scratch_floats(&g, c->N, c->IC, c->OC), 7);
        const bool wino = !pointwise && nnz_winograd_applies(&g);
        float *U = wino ? filled(nnz_winograd_weight_floats(c->IC, c->OC), 8) : NULL;
        float *wwork = wino ? filled(nnz_conv_winograd_work_floats(c->IC, c->OC), 9) : NULL;
        float *wscratch = wino ? filled(nnz_conv_winograd_wgrad_scratch_floats(c->IC, c->OC), 10) : NULL;
        const double flops = 2.0 * (double)P * (double)K * c->OC;
        for (int kernel = 0; kernel < 2; kernel++) {
            double tn[99], tb[99], tw[99];
            for (int r = 0; r < reps; r++) {
                double t0 = nnz_now_sec();
                if (kernel == 0 && pointwise) nnz_gemm_small(P, c->OC, (int)K, x, K, w, false, NULL, out);
                else if (kernel == 0) nnz_conv_implicit(&g, c->N, c->IC, c->OC, x, w, false, NULL, out);
                else if (!pointwise) nnz_conv_implicit_wgrad(&g, c->N, c->IC, c->OC, x, dout, dw, scratch);
                else if (!nnz_gemm_small_at(P, (int)K, c->OC, x, K, dout, c->OC, dw)) {
                    fprintf(stderr, "nnz_bench_conv_kernels: no memory for the small GEMM's partials\n");
                    return 1;
                }
                tn[r] = nnz_now_sec() - t0;
                t0 = nnz_now_sec();
                const float *a = x;
                if (!pointwise) {
                    nnz_im2col_nhwc(&g, c->N, c->IC, 0, c->IC, x, col);
                    a = col;
                }
                if (kernel == 0) nnz_sgemm(false, false, (int)P, c->OC, (int)K, 1.0f, a, (int)K, w, c->OC, 0.0f, out, c->OC);
                else nnz_sgemm(true, false, (int)K, c->OC, (int)P, 1.0f, a, (int)K, dout, c->OC, 1.0f, dw, c->OC);
                tb[r] = nnz_now_sec() - t0;
                t0 = nnz_now_sec();
                if (wino && kernel == 0) {
                    nnz_winograd_weight(c->K, c->IC, c->OC, w, false, U);
                    nnz_conv_winograd(&g, c->N, c->IC, c->OC, x, U, false, NULL, out, wwork);
                } else if (wino) {
                    nnz_conv_winograd_wgrad(&g, c->N, c->IC, c->OC, x, dout, dw, wscratch);
                }
                tw[r] = nnz_now_sec() - t0;
            }
            const double mn = bench_median(tn, reps), mb = bench_median(tb, reps), mw = bench_median(tw, reps);
            printf("{\"shape\":\"%s\",\"kernel\":\"%s\",\"isa\":\"%s\",\"threads\":%d,\"openblas_core\":\"%s\","
                   "\"M\":%lld,\"N\":%d,\"K\":%lld,\"nnz_gflops\":%.1f,\"nnz_best_gflops\":%.1f,"
                   "\"im2col_sgemm_gflops\":%.1f,\"im2col_sgemm_best_gflops\":%.1f,\"speedup\":%.2f",
                   c->name, kernel == 0 ? "fwd" : "wgrad", nnz_isa_name(nnz_isa_active()), threads, nnz_blas_core(),
                   (long long)P, c->OC, (long long)K, flops / mn * 1e-9, flops / tn[0] * 1e-9, flops / mb * 1e-9,
                   flops / tb[0] * 1e-9, mb / mn);
            if (wino)
                printf(",\"winograd_effective_gflops\":%.1f,\"winograd_best_effective_gflops\":%.1f,"
                       "\"winograd_vs_nnz\":%.2f", flops / mw * 1e-9, flops / tw[0] * 1e-9, mn / mw);
            printf("}\n");
            fflush(stdout);
        }
        nnz_free(x), nnz_free(w), nnz_free(dout), nnz_free(out), nnz_free(dw), nnz_free(col), nnz_free(scratch);
        nnz_free(U), nnz_free(wwork), nnz_free(wscratch);
    }
    return 0;
}
