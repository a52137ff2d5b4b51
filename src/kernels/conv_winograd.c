/* Winograd convolution F(2x2, 5x5) and F(4x4, 3x3), NHWC: the weight transforms, the drivers
 * (blocks of tiles, threads, the weight gradient's shares) and the ISA choice. Contract in
 * kernels.h; the per-tile transforms in conv_winograd_simd.inc.
 *
 * One dimension, F(m, r) with alpha = m + r - 1 = 6 points 0, 1, -1, 2, -2 and infinity
 * (Lavin & Gray 2016; the Toom-Cook construction of wincnn): y = A^T [(G g) * (B^T d)], where
 * y (m) is the correlation of d (6) with g (r): y_i = sum_k g_k d_{i+k}. A^T[i][j] = p_j^i (the
 * last column e_{m-1}), G[j][k] = p_j^k / prod_{l != j} (p_j - p_l) (the last row e_{r-1}), and
 * B^T solves A^T diag(G g) B^T = the correlation for every g: made exactly with fractions and
 * checked by the same script. Both sizes share B^T (the classic F(4,3) input transform). In two
 * dimensions Y = A^T [U * V] A, U = G w G^T (6x6), V = B^T d B. */
#include "kernels/conv_winograd.h"

#include <omp.h>
#include <string.h>

/* G for F(2,5) (6x5) and F(4,3) (6x3) */
static const float G5[6][5] = {
    {1.0f / 4, 0, 0, 0, 0},
    {-1.0f / 6, -1.0f / 6, -1.0f / 6, -1.0f / 6, -1.0f / 6},
    {-1.0f / 6, 1.0f / 6, -1.0f / 6, 1.0f / 6, -1.0f / 6},
    {1.0f / 24, 1.0f / 12, 1.0f / 6, 1.0f / 3, 2.0f / 3},
    {1.0f / 24, -1.0f / 12, 1.0f / 6, -1.0f / 3, 2.0f / 3},
    {0, 0, 0, 0, 1},
};
static const float G3[6][3] = {
    {1.0f / 4, 0, 0},           {-1.0f / 6, -1.0f / 6, -1.0f / 6}, {-1.0f / 6, 1.0f / 6, -1.0f / 6},
    {1.0f / 24, 1.0f / 12, 1.0f / 6}, {1.0f / 24, -1.0f / 12, 1.0f / 6}, {0, 0, 1},
};

/* A block of tiles: its transformed input and product (36 x T x (C_in + C_out) floats) stay in L2 */
#define WG_BLOCK_FLOATS (192 * 1024)
#define WG_PARALLEL_MIN ((int64_t)1 << 16)

bool nnz_winograd_applies(const nnz_conv_window *g) {
    return g->stride == 1 && g->KH == g->KW && (g->KH == 3 || g->KH == 5) && g->pad < g->KH && g->OH >= 1 &&
           g->OW >= 1 && g->OH == g->H + 2 * g->pad - g->KH + 1 && g->OW == g->W + 2 * g->pad - g->KW + 1;
}

size_t nnz_winograd_weight_floats(int IC, int OC) { return (size_t)WG_E * IC * OC; }

const float *nnz_wg_g(int K) { return K == 5 ? &G5[0][0] : &G3[0][0]; }

typedef struct {
    nnz_wg_input_fn input;
    nnz_wg_output_fn output;
    nnz_wg_grad_fn grad;
    nnz_wg_weight_fn weight;
    nnz_wg_weight_grad_fn weight_grad;
    nnz_wg_block_gemm_fn block_gemm;
    nnz_wg_block_at_fn block_at;
} wg_kernels;

#define WG_KERNELS(isa) \
    (wg_kernels) { nnz_wg_input_##isa, nnz_wg_output_##isa, nnz_wg_grad_##isa, nnz_wg_weight_##isa, nnz_wg_weight_grad_##isa, \
                   nnz_wg_block_gemm_##isa, nnz_wg_block_at_##isa }

static wg_kernels pick_kernels(void) {
#if defined(__x86_64__)
    const nnz_isa isa = nnz_isa_active();
    if (isa >= NNZ_ISA_AVX512) return WG_KERNELS(avx512);
    if (isa == NNZ_ISA_AVX2) return WG_KERNELS(avx2);
#endif
    return WG_KERNELS(ref);
}

/* output channels per task of the weight transforms */
#define WG_OC_TASK WG_OC_BLOCK
/* the transforms' kept-block loops index the block lists by oc0 / WG_OC_BLOCK */
_Static_assert(WG_OC_BLOCK == NNZ_CHANNEL_BLOCK, "the weight transforms' tasks are the channel blocks");

void nnz_winograd_weight(int K, int IC, int OC, const float *w, bool turned, float *U) {
    nnz_winograd_weight_blocks(K, IC, OC, w, turned, NULL, U);
}

void nnz_winograd_weight_blocks(int K, int IC, int OC, const float *w, bool turned, const nnz_channel_blocks *kept,
                                float *U) {
    const wg_kernels k = pick_kernels();
    const float *G = nnz_wg_g(K);
    const int tasks = (OC + WG_OC_TASK - 1) / WG_OC_TASK;
#pragma omp parallel for schedule(static) if ((int64_t)IC * OC >= 16384)
    for (int i = 0; i < tasks; i++)
        k.weight(K, G, IC, OC, w, turned, U, i * WG_OC_TASK, i * WG_OC_TASK + WG_OC_TASK < OC ? i * WG_OC_TASK + WG_OC_TASK : OC,
                 kept ? kept->ptr : NULL, kept ? kept->idx : NULL);
}

/* dw (OC,K,K,IC) += G^T dU G: the weight gradient from the transformed one, dU[e][ic][oc], at the
 * kept channel blocks (NULL: all) */
static void weight_grad_from_transformed(int K, int IC, int OC, const float *dU, const nnz_channel_blocks *kept,
                                         float *dw) {
    const wg_kernels k = pick_kernels();
    const float *G = nnz_wg_g(K);
    const int tasks = (OC + WG_OC_TASK - 1) / WG_OC_TASK;
#pragma omp parallel for schedule(static) if ((int64_t)IC * OC >= 16384)
    for (int i = 0; i < tasks; i++)
        k.weight_grad(K, G, IC, OC, dU, dw, i * WG_OC_TASK, i * WG_OC_TASK + WG_OC_TASK < OC ? i * WG_OC_TASK + WG_OC_TASK : OC,
                      kept ? kept->ptr : NULL, kept ? kept->idx : NULL);
}

static nnz_wg_geometry geometry_of(const nnz_conv_window *g) {
    const int m = g->KH == 5 ? 2 : 4;
    return (nnz_wg_geometry){.H = g->H, .W = g->W, .OH = g->OH, .OW = g->OW, .pad = g->pad, .m = m,
                             .tiles_y = (g->OH + m - 1) / m, .tiles_x = (g->OW + m - 1) / m};
}

/* tiles per block, a multiple of 8, for C1 + C2 channels transformed */
static int block_tiles(int C1, int C2) {
    int64_t T = WG_BLOCK_FLOATS / ((int64_t)WG_E * (C1 + C2 > 0 ? C1 + C2 : 1)) / 8 * 8;
    return T < 8 ? 8 : T > 256 ? 256 : (int)T;
}

/* The weight gradient's tiles per block: each block streams the whole dU (36 x IC x OC) once, so it
 * takes WG_WGRAD_BLOCK_FLOATS of transformed tiles (4 MB), not WG_BLOCK_FLOATS: at 8 tiles a block
 * (256 channels in and out) that traffic outweighed the products. bench/conv_kernels.c, batch
 * 128, 2 Zen 4 threads (with per-thread partials then): vgg8's conv6 94 -> 205-212 effective
 * GFLOP/s (the implicit kernel: 130), conv5 143-217 -> 200-246; conv2 (batch 32) 204-215 -> 278-303. */
#define WG_WGRAD_BLOCK_FLOATS (1024 * 1024)
static int wgrad_tiles(int IC, int OC) {
    int64_t T = WG_WGRAD_BLOCK_FLOATS / ((int64_t)WG_E * (IC + OC > 0 ? IC + OC : 1)) / 8 * 8;
    const int least = block_tiles(IC, OC);
    return T < least ? least : T > 256 ? 256 : (int)T;
}

static size_t wgrad_work_floats(int IC, int OC) {
    return (size_t)wgrad_tiles(IC, OC) * (wg_tile_floats(IC) + wg_tile_floats(OC));
}

size_t nnz_conv_winograd_work_floats(int IC, int OC) {
    /* V (tile-major), then the products (element-major, 36*T*OC) or dM (tile-major) */
    return (size_t)block_tiles(IC, OC) * (wg_tile_floats(IC) + wg_tile_floats(OC));
}

#define WG_MAX_THREADS 256

/* The threads of a call and their blocks: the caller's block in work for the first, one block
 * allocated for each further thread, as many as could be allocated (fewer threads compute the same
 * numbers). Inside a parallel region (eval's chunks), or for under WG_PARALLEL_MIN multiply-adds
 * per tile element, the call runs on its thread alone. The region
 * then takes num_threads(n) without an if clause: with clang's libomp, num_threads(1) if (false)
 * leaves its count pushed for the next parallel region, which then runs on one thread, and a
 * threaded OpenBLAS sgemm there waits forever for its second thread (the sanitizer build hung). */
/* a call's threads: its own alone inside a parallel region (eval's chunks) or under
 * WG_PARALLEL_MIN multiply-adds per tile element */
static int call_threads(int64_t madds) {
    return omp_in_parallel() || madds < WG_PARALLEL_MIN ? 1 : omp_get_max_threads();
}

static int take_blocks(float *work, size_t floats, int64_t items, int64_t madds, float *blk[WG_MAX_THREADS]) {
    int want = call_threads(madds);
    if (want > WG_MAX_THREADS) want = WG_MAX_THREADS;
    if (want > items) want = items < 1 ? 1 : (int)items;
    blk[0] = work;
    int n = 1;
    /* a block that cannot be allocated costs a thread, not the call */
    while (n < want && (blk[n] = nnz_alloc(floats * sizeof(float), "Winograd tile block")) != NULL) n++;
    return n;
}

static void give_blocks(int n, float *blk[WG_MAX_THREADS]) {
    for (int i = 1; i < n; i++) nnz_free(blk[i]);
}

void nnz_conv_winograd(const nnz_conv_window *g, int N, int IC, int OC, const float *inp, const float *U,
                       bool accumulate, const nnz_epilogue *ep, float *out, float *work) {
    nnz_conv_winograd_blocks(g, N, IC, OC, inp, U, NULL, accumulate, ep, out, work);
}

void nnz_conv_winograd_blocks(const nnz_conv_window *g, int N, int IC, int OC, const float *inp, const float *U,
                              const nnz_channel_blocks *kept, bool accumulate, const nnz_epilogue *ep, float *out,
                              float *work) {
    const nnz_wg_geometry w = geometry_of(g);
    const int64_t tiles = (int64_t)N * w.tiles_y * w.tiles_x;
    if (tiles <= 0 || OC <= 0) return;
    const wg_kernels k = pick_kernels();
    const int T = block_tiles(IC, OC);
    const int64_t blocks = (tiles + T - 1) / T;
    float *blk[WG_MAX_THREADS];
    /* threads by the dense count, kept blocks or not: the transforms stay whole */
    const int nt = take_blocks(work, nnz_conv_winograd_work_floats(IC, OC), blocks, tiles * IC * OC, blk);
#pragma omp parallel num_threads(nt) /* no if clause: see take_blocks */
    {
        float *V = blk[omp_get_thread_num()], *M = V + T * wg_tile_floats(IC);
#pragma omp for schedule(static)
        for (int64_t b = 0; b < blocks; b++) {
            const int64_t t0 = b * T;
            const int count = tiles - t0 < T ? (int)(tiles - t0) : T;
            k.input(&w, inp, IC, t0, count, kept ? kept->tptr : NULL, V);
            for (int e = 0; e < WG_E; e++)
                if (kept)
                    k.block_gemm(count, IC, OC, V + (int64_t)e * IC, wg_tile_floats(IC), U + (int64_t)e * IC * OC, kept->ptr,
                                 kept->idx, M + (int64_t)e * T * OC);
                else
                    nnz_gemm_small_serial(count, OC, IC, V + (int64_t)e * IC, wg_tile_floats(IC), U + (int64_t)e * IC * OC,
                                          false, NULL, M + (int64_t)e * T * OC);
            k.output(&w, M, OC, t0, count, T, accumulate, ep, out);
        }
    }
    give_blocks(nt, blk);
}

/* The weight gradient's scratch: dU (36 x IC x OC), then one block of transformed tiles (V, dM)
 * that the team shares */
size_t nnz_conv_winograd_wgrad_scratch_floats(int IC, int OC) {
    return (size_t)WG_E * IC * OC + wgrad_work_floats(IC, OC);
}

void nnz_conv_winograd_wgrad(const nnz_conv_window *g, int N, int IC, int OC, const float *inp, const float *dout,
                             float *dw, float *scratch) {
    nnz_conv_winograd_wgrad_blocks(g, N, IC, OC, inp, dout, NULL, dw, scratch);
}

/* A sparse weight gradient's dU (36 x IC x OC) is written at its kept blocks only: their rows of up
 * to 16 output channels are zeroed and read, the rest never touched (zeroing and summing whole
 * partials took most of a 90%-sparse 256-channel layer's weight gradient). */
#define FOR_KEPT_ROW(IC, OC, kept, e, at, len, BODY)                                                             \
    do {                                                                                                        \
        for (int ob_ = 0; ob_ * NNZ_CHANNEL_BLOCK < (OC); ob_++) {                                              \
            const int len = (OC) - ob_ * NNZ_CHANNEL_BLOCK < NNZ_CHANNEL_BLOCK ? (OC) - ob_ * NNZ_CHANNEL_BLOCK   \
                                                                               : NNZ_CHANNEL_BLOCK;             \
            for (int k_ = (kept)->ptr[ob_]; k_ < (kept)->ptr[ob_ + 1]; k_++)                                    \
                for (int ic_ = (kept)->idx[k_] * NNZ_CHANNEL_BLOCK;                                             \
                     ic_ < (IC) && ic_ < ((kept)->idx[k_] + 1) * NNZ_CHANNEL_BLOCK; ic_++) {                   \
                    const size_t at = ((size_t)(e) * (IC) + ic_) * (OC) + (size_t)ob_ * NNZ_CHANNEL_BLOCK;      \
                    BODY;                                                                                       \
                }                                                                                               \
        }                                                                                                       \
    } while (0)

static void kept_rows_zero(int IC, int OC, const nnz_channel_blocks *kept, int e, float *dU) {
    FOR_KEPT_ROW(IC, OC, kept, e, at, len, {
        if (len == NNZ_CHANNEL_BLOCK) memset(dU + at, 0, NNZ_CHANNEL_BLOCK * sizeof(float)); /* inlined stores */
        else memset(dU + at, 0, (size_t)len * sizeof(float));
    });
}

/* dU = sum over the tiles of V[e]^T dM[e], one block of tiles at a time: the team transforms the
 * block's tiles (split by tile), then each thread adds the block's products into its own share of
 * the 36 elements (split by element). One dU, no per-thread partials to zero, stream and sum (a
 * 256-channel layer's are 9.4 MB each), and every element of dU sums its blocks in block order
 * whatever the thread count: the same bits on any number of threads. */
void nnz_conv_winograd_wgrad_blocks(const nnz_conv_window *g, int N, int IC, int OC, const float *inp,
                                    const float *dout, const nnz_channel_blocks *kept, float *dw, float *scratch) {
    const nnz_wg_geometry w = geometry_of(g);
    const int64_t tiles = (int64_t)N * w.tiles_y * w.tiles_x;
    if (tiles <= 0 || IC <= 0 || OC <= 0) return;
    const wg_kernels k = pick_kernels();
    const int T = wgrad_tiles(IC, OC);
    const int64_t blocks = (tiles + T - 1) / T;
    const size_t pe = (size_t)WG_E * IC * OC;
    float *dU = scratch, *V = scratch + pe, *dM = V + (size_t)T * wg_tile_floats(IC);
    const int32_t *used_in = kept ? kept->tptr : NULL, *used_out = kept ? kept->ptr : NULL; /* the blocks transformed */
    int nt = call_threads(tiles * IC * OC);
    if (nt > WG_E) nt = WG_E; /* the products' share is by element */
#pragma omp parallel num_threads(nt) /* no if clause: see take_blocks */
    {
        const int tid = omp_get_thread_num(), team = omp_get_num_threads();
        const int e0 = WG_E * tid / team, e1 = WG_E * (tid + 1) / team;
        for (int e = e0; e < e1; e++) { /* sparse: the kept blocks' rows only */
            if (kept) kept_rows_zero(IC, OC, kept, e, dU);
            else memset(dU + (size_t)e * IC * OC, 0, (size_t)IC * OC * sizeof(float));
        }
        for (int64_t b = 0; b < blocks; b++) {
            const int64_t t0 = b * T;
            const int count = tiles - t0 < T ? (int)(tiles - t0) : T;
            const int a0 = count * tid / team, a1 = count * (tid + 1) / team;
            if (a1 > a0) {
                k.input(&w, inp, IC, t0 + a0, a1 - a0, used_in, V + (size_t)a0 * wg_tile_floats(IC));
                k.grad(&w, dout, OC, t0 + a0, a1 - a0, used_out, dM + (size_t)a0 * wg_tile_floats(OC));
            }
#pragma omp barrier
            /* dU[e] (IC,OC) += V[e]^T (IC,count) * dM[e] (count,OC) */
            for (int e = e0; e < e1; e++)
                if (kept)
                    k.block_at(count, IC, OC, V + (int64_t)e * IC, wg_tile_floats(IC), dM + (int64_t)e * OC,
                               wg_tile_floats(OC), kept->ptr, kept->idx, dU + (size_t)e * IC * OC);
                else
                    nnz_gemm_small_at_serial(count, IC, OC, V + (int64_t)e * IC, wg_tile_floats(IC),
                                             dM + (int64_t)e * OC, wg_tile_floats(OC), dU + (size_t)e * IC * OC);
#pragma omp barrier /* V and dM are the next block's */
        }
    }
    weight_grad_from_transformed(g->KH, IC, OC, dU, kept, dw);
}
