/* How much error bf16 operands add to a Winograd convolution, against the direct convolution
 * with the same bf16 rounding (what nnz's bf16 convs do now): the measurement docs/BF16.md asks
 * for before a bf16 Winograd path can claim the fp32 result. One JSON line per shape and method.
 *
 *   build/nnz_bench_winograd_bf16_error [--images N] [--seed S]
 *
 * Methods, each against the exact convolution (double sums of the fp32 operands):
 *   direct_fp32        fp32 products summed in float, taps then channels
 *   direct_bf16        x and w rounded to bf16, products summed in float (nnz's bf16 convs)
 *   winograd_fp32      V = B^T d B, U = G w G^T, M = sum_c U V, Y = A^T M A, all in float
 *   winograd_bf16_uv   as winograd_fp32 with U and V rounded to bf16 before the 36 channel sums
 *                      (a bf16 GEMM over the transformed operands, fp32 accumulation)
 *   winograd_bf16_all  x and w rounded to bf16 first (bf16 activations and weights), then as
 *                      winograd_bf16_uv
 * Errors, over every output y with exact value e: the largest |y - e| / S and the RMS of
 * (y - e) / S, where S = sum over the window of |x|·|w| (the scale a sum of products is
 * rounded against); and the RMS of (y - e) over the RMS of e. Inputs: x uniform in [0, 1)
 * (post-ReLU activations), w uniform in +-sqrt(6 / fan_in) (He-uniform), zero padding.
 * Plain C on purpose: it measures numbers, not speed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

typedef struct {
    const char *name;
    int H, W, IC, OC, K;
} shape;

static const shape shapes[] = {
    {"lenet5.conv2", 14, 14, 32, 64, 5},
    {"vgg8.conv2", 28, 28, 64, 64, 3},
    {"vgg8.conv4", 14, 14, 128, 128, 3},
    {"vgg8.conv6", 7, 7, 256, 256, 3},
};

/* G (6 x K) for F(2,5) and F(4,3), as src/kernels/conv_winograd.c */
static const double G5[6][5] = {
    {1.0 / 4, 0, 0, 0, 0},
    {-1.0 / 6, -1.0 / 6, -1.0 / 6, -1.0 / 6, -1.0 / 6},
    {-1.0 / 6, 1.0 / 6, -1.0 / 6, 1.0 / 6, -1.0 / 6},
    {1.0 / 24, 1.0 / 12, 1.0 / 6, 1.0 / 3, 2.0 / 3},
    {1.0 / 24, -1.0 / 12, 1.0 / 6, -1.0 / 3, 2.0 / 3},
    {0, 0, 0, 0, 1},
};
static const double G3[6][3] = {
    {1.0 / 4, 0, 0}, {-1.0 / 6, -1.0 / 6, -1.0 / 6}, {-1.0 / 6, 1.0 / 6, -1.0 / 6},
    {1.0 / 24, 1.0 / 12, 1.0 / 6}, {1.0 / 24, -1.0 / 12, 1.0 / 6}, {0, 0, 1},
};
/* B^T (6x6) and A^T (m x 6), the same points */
static const float BT[6][6] = {
    {4, 0, -5, 0, 1, 0}, {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
    {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1},
};
static const float AT4[4][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
static const float AT2[2][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 1}};

static uint64_t rng_state;
static float uniform(float lo, float hi) {
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return lo + (hi - lo) * (float)((rng_state >> 40) * (1.0 / 16777216.0));
}

typedef struct {
    double max_rel, sum_rel2, sum_err2, sum_ref2;
    int64_t n;
} err_acc;

static void err_add(err_acc *a, double y, double e, double scale) {
    const double d = y - e, r = scale > 0 ? d / scale : 0.0;
    if (fabs(r) > a->max_rel) a->max_rel = fabs(r);
    a->sum_rel2 += r * r, a->sum_err2 += d * d, a->sum_ref2 += e * e, a->n++;
}

/* x (N,H,W,IC) at (n, ih, iw, c), 0 outside the image */
static float at(const float *x, const shape *s, int n, int ih, int iw, int c) {
    if (ih < 0 || iw < 0 || ih >= s->H || iw >= s->W) return 0.0f;
    return x[(((size_t)n * s->H + ih) * s->W + iw) * s->IC + c];
}

/* Winograd output (n, all OC) for the tile at (ty, tx), operands optionally rounded */
static void winograd_tile(const shape *s, const float *x, const float *U, int n, int oy, int ox, bool round_v,
                          float *Y /* m*m*OC */) {
    const int K = s->K, m = 6 - K + 1, pad = K / 2;
    float *V = malloc((size_t)36 * s->IC * sizeof(float)), *M = calloc((size_t)36 * s->OC, sizeof(float));
    for (int c = 0; c < s->IC; c++) {
        float d[6][6], t[6][6];
        for (int i = 0; i < 6; i++)
            for (int j = 0; j < 6; j++) d[i][j] = at(x, s, n, oy - pad + i, ox - pad + j, c);
        for (int a = 0; a < 6; a++)
            for (int j = 0; j < 6; j++) {
                float acc = 0.0f;
                for (int i = 0; i < 6; i++) acc += BT[a][i] * d[i][j];
                t[a][j] = acc;
            }
        for (int a = 0; a < 6; a++)
            for (int b = 0; b < 6; b++) {
                float acc = 0.0f;
                for (int j = 0; j < 6; j++) acc += t[a][j] * BT[b][j];
                V[(size_t)(a * 6 + b) * s->IC + c] = round_v ? nnz_bf16_round(acc) : acc;
            }
    }
    for (int e = 0; e < 36; e++)
        for (int c = 0; c < s->IC; c++) {
            const float v = V[(size_t)e * s->IC + c];
            const float *u = U + ((size_t)e * s->IC + c) * s->OC;
            for (int o = 0; o < s->OC; o++) M[(size_t)e * s->OC + o] += u[o] * v;
        }
    for (int o = 0; o < s->OC; o++) {
        float t[4][6];
        for (int i = 0; i < m; i++)
            for (int b = 0; b < 6; b++) {
                float acc = 0.0f;
                for (int a = 0; a < 6; a++) acc += (m == 4 ? AT4[i][a] : AT2[i][a]) * M[(size_t)(a * 6 + b) * s->OC + o];
                t[i][b] = acc;
            }
        for (int i = 0; i < m; i++)
            for (int j = 0; j < m; j++) {
                float acc = 0.0f;
                for (int b = 0; b < 6; b++) acc += t[i][b] * (m == 4 ? AT4[j][b] : AT2[j][b]);
                Y[((size_t)i * m + j) * s->OC + o] = acc;
            }
    }
    free(V), free(M);
}

/* U (36, IC, OC) = G w G^T from w (OC, K, K, IC), in double then float, optionally rounded */
static float *weight_transform(const shape *s, const float *w, bool round_u) {
    const int K = s->K;
    float *U = malloc((size_t)36 * s->IC * s->OC * sizeof(float));
    for (int o = 0; o < s->OC; o++)
        for (int c = 0; c < s->IC; c++)
            for (int a = 0; a < 6; a++)
                for (int b = 0; b < 6; b++) {
                    double acc = 0.0;
                    for (int u = 0; u < K; u++)
                        for (int v = 0; v < K; v++) {
                            const double ga = K == 5 ? G5[a][u] : G3[a][u], gb = K == 5 ? G5[b][v] : G3[b][v];
                            acc += ga * w[(((size_t)o * K + u) * K + v) * s->IC + c] * gb;
                        }
                    const float f = (float)acc;
                    U[((size_t)(a * 6 + b) * s->IC + c) * s->OC + o] = round_u ? nnz_bf16_round(f) : f;
                }
    return U;
}

static void print_line(const shape *s, const char *method, int N, const err_acc *a) {
    printf("{\"shape\":\"%s\",\"method\":\"%s\",\"images\":%d,\"outputs\":%lld,\"max_err_over_scale\":%.3e,"
           "\"rms_err_over_scale\":%.3e,\"rms_err_over_rms_ref\":%.3e}\n",
           s->name, method, N, (long long)a->n, a->max_rel, sqrt(a->sum_rel2 / (double)a->n),
           sqrt(a->sum_err2 / a->sum_ref2));
    fflush(stdout);
}

int main(int argc, char **argv) {
    int N = 2;
    uint64_t seed = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--images") && i + 1 < argc) N = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: %s [--images N] [--seed S]\n", argv[0]);
            return 2;
        }
    }
    if (N < 1) N = 1;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const shape *s = &shapes[si];
        const int K = s->K, m = 6 - K + 1, pad = K / 2;
        const size_t xn = (size_t)N * s->H * s->W * s->IC, wn = (size_t)s->OC * K * K * s->IC;
        float *x = malloc(xn * sizeof(float)), *w = malloc(wn * sizeof(float));
        float *xb = malloc(xn * sizeof(float)), *wb = malloc(wn * sizeof(float));
        rng_state = seed * 0x9E3779B97F4A7C15ULL + si;
        const float a = sqrtf(6.0f / (float)(K * K * s->IC));
        for (size_t i = 0; i < xn; i++) x[i] = uniform(0.0f, 1.0f), xb[i] = nnz_bf16_round(x[i]);
        for (size_t i = 0; i < wn; i++) w[i] = uniform(-a, a), wb[i] = nnz_bf16_round(w[i]);
        float *U32 = weight_transform(s, w, false), *U16 = weight_transform(s, w, true);
        float *U16all = weight_transform(s, wb, true);
        err_acc acc[5];
        memset(acc, 0, sizeof acc);
        float *Y = malloc((size_t)3 * m * m * s->OC * sizeof(float));
        for (int n = 0; n < N; n++)
            for (int oy = 0; oy < s->H; oy += m)
                for (int ox = 0; ox < s->W; ox += m) {
                    winograd_tile(s, x, U32, n, oy, ox, false, Y);
                    winograd_tile(s, x, U16, n, oy, ox, true, Y + (size_t)m * m * s->OC);
                    winograd_tile(s, xb, U16all, n, oy, ox, true, Y + (size_t)2 * m * m * s->OC);
                    for (int i = 0; i < m && oy + i < s->H; i++)
                        for (int j = 0; j < m && ox + j < s->W; j++)
                            for (int o = 0; o < s->OC; o++) {
                                double exact = 0.0, scale = 0.0;
                                float d32 = 0.0f, d16 = 0.0f;
                                for (int c = 0; c < s->IC; c++)
                                    for (int u = 0; u < K; u++)
                                        for (int v = 0; v < K; v++) {
                                            const int ih = oy + i - pad + u, iw = ox + j - pad + v;
                                            const size_t wi = (((size_t)o * K + u) * K + v) * s->IC + c;
                                            const float xv = at(x, s, n, ih, iw, c), xbv = at(xb, s, n, ih, iw, c);
                                            exact += (double)xv * w[wi], scale += fabs((double)xv * w[wi]);
                                            d32 += xv * w[wi], d16 += xbv * wb[wi];
                                        }
                                const size_t yi = ((size_t)i * m + j) * s->OC + o, mm = (size_t)m * m * s->OC;
                                err_add(&acc[0], d32, exact, scale);
                                err_add(&acc[1], d16, exact, scale);
                                err_add(&acc[2], Y[yi], exact, scale);
                                err_add(&acc[3], Y[mm + yi], exact, scale);
                                err_add(&acc[4], Y[2 * mm + yi], exact, scale);
                            }
                }
        static const char *names[] = {"direct_fp32", "direct_bf16", "winograd_fp32", "winograd_bf16_uv",
                                      "winograd_bf16_all"};
        for (int k = 0; k < 5; k++) print_line(s, names[k], N, &acc[k]);
        free(x), free(w), free(xb), free(wb), free(U32), free(U16), free(U16all), free(Y);
    }
    return 0;
}
