/* The bf16 GEMM's im2col staging alone: packs every A panel (the AMX layout: 32 rows, 32-k
 * blocks) of a batch's convolution from its im2col source, 1 thread, fp32 input (rounded as it
 * is staged) and the same input already in bf16; best of 5. One JSON line per layer.
 *   nnz_bench_im2col_staging          (the layers: lenet5 conv1/conv2, vgg8 conv2/conv6, batch 128) */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/kernels.h"

static double pack_all(const nnz_bf16_src *src, int M, int K, nnz_bf16 *panel) {
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        const double t0 = omp_get_wtime();
        for (int k0 = 0; k0 < K; k0 += 512) {
            const int kc = K - k0 < 512 ? K - k0 : 512, kc_pad = (kc + 31) / 32 * 32;
            for (int i0 = 0; i0 < M; i0 += 32)
                nnz_bf16_pack_a(src, i0, M - i0 < 32 ? M - i0 : 32, k0, kc, 32, 32, kc_pad, panel);
        }
        const double t = omp_get_wtime() - t0;
        if (t < best) best = t;
    }
    return best;
}

int main(void) {
    static const struct { const char *name; int H, C, k; } layers[] = {
        {"lenet5.conv1", 28, 1, 5}, {"lenet5.conv2", 14, 32, 5}, {"vgg8.conv2", 28, 64, 3}, {"vgg8.conv6", 7, 256, 3}};
    const int N = 128;
    nnz_bf16 *panel = aligned_alloc(64, 32 * 512 * sizeof(nnz_bf16));
    for (size_t l = 0; l < sizeof layers / sizeof layers[0]; l++) {
        const int H = layers[l].H, C = layers[l].C, k = layers[l].k;
        const nnz_conv_window g = {.H = H, .W = H, .KH = k, .KW = k, .stride = 1, .pad = k / 2, .OH = H, .OW = H};
        const size_t n = (size_t)N * H * H * C;
        float *x = malloc(n * sizeof(float));
        nnz_bf16 *xb = malloc(n * sizeof(nnz_bf16));
        if (!x || !xb || !panel) return 1;
        for (size_t i = 0; i < n; i++) x[i] = (float)(i % 97) * 0.01f - 0.5f;
        nnz_cvt_f32_to_bf16((int64_t)n, x, xb);
        const nnz_bf16_src f32 = {.p = x, .f32 = true, .win = &g, .C = C}, b16 = {.p = xb, .win = &g, .C = C};
        const int M = N * H * H, K = k * k * C;
        const double tf = pack_all(&f32, M, K, panel), tb = pack_all(&b16, M, K, panel);
        printf("{\"bench\":\"im2col_staging\",\"layer\":\"%s\",\"M\":%d,\"K\":%d,\"threads\":1,\"f32_ms\":%.3f,"
               "\"bf16_ms\":%.3f,\"f32_ns_per_elem\":%.3f,\"bf16_ns_per_elem\":%.3f}\n",
               layers[l].name, M, K, tf * 1e3, tb * 1e3, tf * 1e9 / ((double)M * K), tb * 1e9 / ((double)M * K));
        free(x);
        free(xb);
    }
    free(panel);
    return 0;
}
