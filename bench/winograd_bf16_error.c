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
 *   winograd_fp32_nnz  nnz's own kernel (nnz_conv_winograd): checks this file's transforms
 *   winograd23_fp32, winograd23_bf16_uv   3x3 windows only: the same with F(2x2,3x3) (points
 *                      0, 1, -1, infinity), smaller tiles that amplify less and save less
 * Errors, over every output y with exact value e: the largest |y - e| / S and the RMS of
 * (y - e) / S, where S = sum over the window of |x|·|w| (the scale a sum of products is
 * rounded against); and the RMS of (y - e) over the RMS of e. Inputs: x uniform in [0, 1)
 * (post-ReLU activations), w uniform in +-sqrt(6 / fan_in) (He-uniform), zero padding.
 * Plain C on purpose: it measures numbers, not speed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "kernels/conv_winograd.h"
#include "kernels/kernels.h"

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

/* B^T (6x6) and A^T (m x 6), the same points */
static const float BT[6][6] = {
    {4, 0, -5, 0, 1, 0}, {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
    {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1},
};
static const float AT4[4][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
static const float AT2[2][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 1}};

static float uniform(nnz_rng *r, float lo, float hi) { return lo + (hi - lo) * nnz_rng_uniform(r); }

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

/* One transform set: F(m, 3 or 5) over alpha = m + K - 1 points; matrices row-major */
typedef struct {
    int alpha, m;
    const float *bt;  /* alpha x alpha */
    const float *at;  /* m x alpha */
    const float *g;   /* alpha x K */
} wg_set;

/* F(2,3) over the points 0, 1, -1, infinity (Lavin & Gray's F(2x2,3x3)) */
static const float BT23[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
static const float AT23[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
static const float G23[4][3] = {{1, 0, 0}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f}, {0, 0, 1}};

/* Winograd output (n, all OC) for the tile at (oy, ox): Y (m, m, OC); V optionally rounded */
static void winograd_tile(const shape *s, const wg_set *ws, const float *x, const float *U, int n, int oy, int ox,
                          bool round_v, float *Y) {
    const int al = ws->alpha, m = ws->m, E = al * al, pad = s->K / 2;
    float *V = bench_alloc((size_t)E * s->IC * sizeof(float)), *M = bench_alloc((size_t)E * s->OC * sizeof(float));
    memset(M, 0, (size_t)E * s->OC * sizeof(float));
    for (int c = 0; c < s->IC; c++) {
        float d[6][6], t[6][6];
        for (int i = 0; i < al; i++)
            for (int j = 0; j < al; j++) d[i][j] = at(x, s, n, oy - pad + i, ox - pad + j, c);
        for (int a = 0; a < al; a++)
            for (int j = 0; j < al; j++) {
                float acc = 0.0f;
                for (int i = 0; i < al; i++) acc += ws->bt[a * al + i] * d[i][j];
                t[a][j] = acc;
            }
        for (int a = 0; a < al; a++)
            for (int b = 0; b < al; b++) {
                float acc = 0.0f;
                for (int j = 0; j < al; j++) acc += t[a][j] * ws->bt[b * al + j];
                V[(size_t)(a * al + b) * s->IC + c] = round_v ? nnz_bf16_round(acc) : acc;
            }
    }
    for (int e = 0; e < E; e++)
        for (int c = 0; c < s->IC; c++) {
            const float v = V[(size_t)e * s->IC + c];
            const float *u = U + ((size_t)e * s->IC + c) * s->OC;
            for (int o = 0; o < s->OC; o++) M[(size_t)e * s->OC + o] += u[o] * v;
        }
    for (int o = 0; o < s->OC; o++) {
        float t[4][6];
        for (int i = 0; i < m; i++)
            for (int b = 0; b < al; b++) {
                float acc = 0.0f;
                for (int a = 0; a < al; a++) acc += ws->at[i * al + a] * M[(size_t)(a * al + b) * s->OC + o];
                t[i][b] = acc;
            }
        for (int i = 0; i < m; i++)
            for (int j = 0; j < m; j++) {
                float acc = 0.0f;
                for (int b = 0; b < al; b++) acc += t[i][b] * ws->at[j * al + b];
                Y[((size_t)i * m + j) * s->OC + o] = acc;
            }
    }
    nnz_free(V), nnz_free(M);
}

/* U (alpha^2, IC, OC) = G w G^T from w (OC, K, K, IC), in double then float, optionally rounded */
static float *weight_transform(const shape *s, const wg_set *ws, const float *w, bool round_u) {
    const int K = s->K, al = ws->alpha;
    float *U = bench_alloc((size_t)al * al * s->IC * s->OC * sizeof(float));
    for (int o = 0; o < s->OC; o++)
        for (int c = 0; c < s->IC; c++)
            for (int a = 0; a < al; a++)
                for (int b = 0; b < al; b++) {
                    double acc = 0.0;
                    for (int u = 0; u < K; u++)
                        for (int v = 0; v < K; v++)
                            acc += (double)ws->g[a * K + u] * w[(((size_t)o * K + u) * K + v) * s->IC + c] *
                                   ws->g[b * K + v];
                    const float f = (float)acc;
                    U[((size_t)(a * al + b) * s->IC + c) * s->OC + o] = round_u ? nnz_bf16_round(f) : f;
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
        const int K = s->K, pad = K / 2;
        const size_t xn = (size_t)N * s->H * s->W * s->IC, wn = (size_t)s->OC * K * K * s->IC;
        float *x = bench_alloc(xn * sizeof(float)), *w = bench_alloc(wn * sizeof(float));
        float *xb = bench_alloc(xn * sizeof(float)), *wb = bench_alloc(wn * sizeof(float));
        nnz_rng rng = nnz_rng_make(seed, si);
        const float a = sqrtf(6.0f / (float)(K * K * s->IC));
        for (size_t i = 0; i < xn; i++) x[i] = uniform(&rng, 0.0f, 1.0f), xb[i] = nnz_bf16_round(x[i]);
        for (size_t i = 0; i < wn; i++) w[i] = uniform(&rng, -a, a), wb[i] = nnz_bf16_round(w[i]);
        /* nnz's own fp32 Winograd on the same batch: its error should be winograd_fp32's, which
         * checks that this file's plain-C transforms are the library's */
        const nnz_conv_window g = {.H = s->H, .W = s->W, .KH = K, .KW = K, .stride = 1, .pad = pad, .OH = s->H, .OW = s->W};
        float *lib = bench_alloc((size_t)N * s->H * s->W * s->OC * sizeof(float));
        {
            float *U = bench_alloc(nnz_winograd_weight_floats(s->IC, s->OC) * sizeof(float));
            float *work = bench_alloc(nnz_conv_winograd_work_floats(s->IC, s->OC) * sizeof(float));
            nnz_winograd_weight(K, s->IC, s->OC, w, false, U);
            nnz_conv_winograd(&g, N, s->IC, s->OC, x, U, false, NULL, lib, work);
            nnz_free(U), nnz_free(work);
        }
        /* the set nnz runs for this window, and for 3x3 also F(2,3) */
        const wg_set big = {6, 6 - K + 1, &BT[0][0], K == 5 ? &AT2[0][0] : &AT4[0][0], nnz_wg_g(K)};
        const wg_set small = {4, 2, &BT23[0][0], &AT23[0][0], &G23[0][0]};
        const int nsets = K == 3 ? 2 : 1;
        const wg_set *sets[2] = {&big, &small};
        enum { D32, D16, W32, W16UV, W16ALL, NNZ32, S32, S16UV, METHODS };
        err_acc acc[METHODS];
        memset(acc, 0, sizeof acc);
        for (int si2 = 0; si2 < nsets; si2++) {
            const wg_set *ws = sets[si2];
            const int mm = ws->m;
            float *U32 = weight_transform(s, ws, w, false), *U16 = weight_transform(s, ws, w, true);
            float *U16all = weight_transform(s, ws, wb, true);
            float *Y = bench_alloc((size_t)3 * mm * mm * s->OC * sizeof(float));
            const size_t ym = (size_t)mm * mm * s->OC;
            for (int n = 0; n < N; n++)
                for (int oy = 0; oy < s->H; oy += mm)
                    for (int ox = 0; ox < s->W; ox += mm) {
                        winograd_tile(s, ws, x, U32, n, oy, ox, false, Y);
                        winograd_tile(s, ws, x, U16, n, oy, ox, true, Y + ym);
                        if (si2 == 0) winograd_tile(s, ws, xb, U16all, n, oy, ox, true, Y + 2 * ym);
                        for (int i = 0; i < mm && oy + i < s->H; i++)
                            for (int j = 0; j < mm && ox + j < s->W; j++)
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
                                    const size_t yi = ((size_t)i * mm + j) * s->OC + o;
                                    if (si2 == 0) {
                                        err_add(&acc[D32], d32, exact, scale);
                                        err_add(&acc[D16], d16, exact, scale);
                                        err_add(&acc[W32], Y[yi], exact, scale);
                                        err_add(&acc[W16UV], Y[ym + yi], exact, scale);
                                        err_add(&acc[W16ALL], Y[2 * ym + yi], exact, scale);
                                        err_add(&acc[NNZ32], lib[(((size_t)n * s->H + oy + i) * s->W + ox + j) * s->OC + o],
                                                exact, scale);
                                    } else {
                                        err_add(&acc[S32], Y[yi], exact, scale);
                                        err_add(&acc[S16UV], Y[ym + yi], exact, scale);
                                    }
                                }
                    }
            nnz_free(U32), nnz_free(U16), nnz_free(U16all), nnz_free(Y);
        }
        static const char *names[] = {"direct_fp32",       "direct_bf16",       "winograd_fp32",   "winograd_bf16_uv",
                                      "winograd_bf16_all", "winograd_fp32_nnz", "winograd23_fp32", "winograd23_bf16_uv"};
        for (int k = 0; k < (nsets == 2 ? METHODS : S32); k++) print_line(s, names[k], N, &acc[k]);
        nnz_free(x), nnz_free(w), nnz_free(xb), nnz_free(wb), nnz_free(lib);
    }
    return 0;
}
