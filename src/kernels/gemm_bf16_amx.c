/* bf16 GEMM with AMX (tdpbf16ps), and the same path with a plain-C tile in place of the
 * tile instructions (how machines without AMX test its packing and edges). Contract in
 * kernels.h; blocking in gemm_bf16_driver.h.
 *
 * Micro-tile 32x32 fp32 = 2x2 C tiles of 16x16 (tmm0..3). Per 32-k block: two A tiles
 * (16 rows x 32 bf16, tmm4..5) from an MR = 32, KB = 32 A panel (row stride 64 bytes), or from
 * a stored bf16 A in place (its row stride; the driver decides, a_in_place), and
 * two B tiles (K = 32 as 16 VNNI pair-rows x 16 columns, tmm6..7) from the NR = 32 B panel
 * (row stride 128 bytes, the second tile 64 bytes in), then 4 tdpbf16ps. kc is padded to
 * a multiple of 32 and M, N edges to the tile with zeros by the packing. A full 32x32
 * micro-tile with alpha = 1 (every call nnz makes) keeps C in the tiles: loaded as the
 * accumulators when beta = 1 (a denormal in C then counts as zero, as for any tdpbf16ps
 * accumulator), zeroed when beta = 0, stored straight back. Other micro-tiles go through a
 * 32x32 buffer and the real mr x nr corner goes to C with alpha and beta.
 * Tile configuration (palette 1, 8 tiles of 16 rows x 64 bytes) is loaded once per thread
 * and released after; the OS permission is requested in nnz_cpu() (arch_prctl), and this
 * path only runs when nnz_isa_supported(NNZ_ISA_AMX) says it was granted. */
#include "kernels/gemm_bf16_driver.h"

#include <immintrin.h>
#include <string.h>

#define TILE_MR 32
#define TILE_NR 32
#define TILE_K 32
#define A_BLOCK (TILE_MR * TILE_K)  /* elements of A per 32-k block: two 16x32 tiles */
#define B_BLOCK (TILE_K / 2 * TILE_NR * 2) /* elements of B per 32-k block: 16 pair-rows x 64 */

/* the mr x nr corner of the 32x32 buffer into C */
static void store_tile(const float *buf, float *C, int64_t ldc, int mr, int nr, float alpha, float beta) {
    for (int i = 0; i < mr; i++) {
        float *c = C + (size_t)i * ldc;
        const float *t = buf + (size_t)i * TILE_NR;
        if (beta == 0.0f) {
#pragma omp simd
            for (int j = 0; j < nr; j++) c[j] = alpha * t[j];
        } else {
#pragma omp simd
            for (int j = 0; j < nr; j++) c[j] = alpha * t[j] + beta * c[j];
        }
    }
}

/* the micro-tile keeps C in its tiles (see above) */
static bool c_in_tiles(int mr, int nr, float alpha, float beta) {
    return mr == TILE_MR && nr == TILE_NR && alpha == 1.0f && (beta == 0.0f || beta == 1.0f);
}

/* A's 32-k block t of row r is at A + t * a_step + r * a_stride: a packed panel (stride 32, step
 * A_BLOCK) or a stored bf16 matrix read in place (stride lda, step 32): the same tile loads */
static void tile_emulated(int kc_pad, const nnz_bf16 *Ap, int64_t a_stride, int64_t a_step, const nnz_bf16 *Bp,
                          float *C, int64_t ldc, int mr, int nr, float alpha, float beta) {
    float buf[TILE_MR * TILE_NR];
    const bool direct = c_in_tiles(mr, nr, alpha, beta);
    if (direct && beta == 1.0f)
        for (int i = 0; i < TILE_MR; i++) memcpy(buf + i * TILE_NR, C + (size_t)i * ldc, TILE_NR * sizeof(float));
    else
        memset(buf, 0, sizeof buf);
    for (int t = 0; t < kc_pad / TILE_K; t++) {
        const nnz_bf16 *a = Ap + t * a_step, *b = Bp + (size_t)t * B_BLOCK;
        const int lda = (int)a_stride;
        /* the same four tile products, with the same strides, as ukr_amx */
        nnz_bf16_tile_dp_emulated(buf, TILE_NR, a, lda, b, 64);
        nnz_bf16_tile_dp_emulated(buf + 16, TILE_NR, a, lda, b + 32, 64);
        nnz_bf16_tile_dp_emulated(buf + 16 * TILE_NR, TILE_NR, a + 16 * a_stride, lda, b, 64);
        nnz_bf16_tile_dp_emulated(buf + 16 * TILE_NR + 16, TILE_NR, a + 16 * a_stride, lda, b + 32, 64);
    }
    if (direct)
        for (int i = 0; i < TILE_MR; i++) memcpy(C + (size_t)i * ldc, buf + i * TILE_NR, TILE_NR * sizeof(float));
    else
        store_tile(buf, C, ldc, mr, nr, alpha, beta);
}

static void ukr_tile_emulated(int kc_pad, const nnz_bf16 *Ap, const nnz_bf16 *Bp, float *C, int64_t ldc, int mr,
                              int nr, float alpha, float beta) {
    tile_emulated(kc_pad, Ap, 32, A_BLOCK, Bp, C, ldc, mr, nr, alpha, beta);
}

static void ukr_tile_emulated_lda(int kc_pad, const nnz_bf16 *A, int64_t lda, const nnz_bf16 *Bp, float *C,
                                  int64_t ldc, int mr, int nr, float alpha, float beta) {
    tile_emulated(kc_pad, A, lda, TILE_K, Bp, C, ldc, mr, nr, alpha, beta);
}

#include "kernels/amx_tiles.h"

#ifdef HAVE_AMX_INTRINSICS

/* A as in tile_emulated */
TARGET_AMX static inline void tile_amx(int kc_pad, const nnz_bf16 *Ap, int64_t a_stride, int64_t a_step,
                                       const nnz_bf16 *Bp, float *C, int64_t ldc, int mr, int nr, float alpha,
                                       float beta) {
    float buf[TILE_MR * TILE_NR] __attribute__((aligned(64)));
    const bool direct = c_in_tiles(mr, nr, alpha, beta);
    const int64_t stride = ldc * (int64_t)sizeof(float);
    if (direct && beta == 1.0f) {
        _tile_loadd(0, C, stride);
        _tile_loadd(1, C + 16, stride);
        _tile_loadd(2, C + 16 * ldc, stride);
        _tile_loadd(3, C + 16 * ldc + 16, stride);
    } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    }
    for (int t = 0; t < kc_pad / TILE_K; t++) {
        const nnz_bf16 *a = Ap + t * a_step, *b = Bp + (size_t)t * B_BLOCK;
        _tile_loadd(4, a, a_stride * 2);                 /* A rows 0..15 */
        _tile_loadd(5, a + 16 * a_stride, a_stride * 2); /* A rows 16..31 */
        _tile_loadd(6, b, 128);          /* B columns 0..15 */
        _tile_loadd(7, b + 32, 128);     /* B columns 16..31 */
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    if (direct) {
        _tile_stored(0, C, stride);
        _tile_stored(1, C + 16, stride);
        _tile_stored(2, C + 16 * ldc, stride);
        _tile_stored(3, C + 16 * ldc + 16, stride);
        return;
    }
    _tile_stored(0, buf, TILE_NR * 4);
    _tile_stored(1, buf + 16, TILE_NR * 4);
    _tile_stored(2, buf + 16 * TILE_NR, TILE_NR * 4);
    _tile_stored(3, buf + 16 * TILE_NR + 16, TILE_NR * 4);
    store_tile(buf, C, ldc, mr, nr, alpha, beta);
}

TARGET_AMX static void ukr_amx(int kc_pad, const nnz_bf16 *Ap, const nnz_bf16 *Bp, float *C, int64_t ldc, int mr,
                               int nr, float alpha, float beta) {
    tile_amx(kc_pad, Ap, 32, A_BLOCK, Bp, C, ldc, mr, nr, alpha, beta);
}

TARGET_AMX static void ukr_amx_lda(int kc_pad, const nnz_bf16 *A, int64_t lda, const nnz_bf16 *Bp, float *C,
                                   int64_t ldc, int mr, int nr, float alpha, float beta) {
    tile_amx(kc_pad, A, lda, TILE_K, Bp, C, ldc, mr, nr, alpha, beta);
}
#endif

/* KC 512: 32 KiB per A or B micro-panel (16 tile loads each); MC 256 rows of A (256 KiB) in L2 */
#define AMX_BLOCKS .MR = TILE_MR, .NR = TILE_NR, .KB = TILE_K, .KC = 512, .MC = 256, .NC = 32 * 64

size_t nnz_gemm_bf16_amx_bytes(int threads) {
    static const nnz_bf16_kernel blocks = {AMX_BLOCKS};
    return nnz_gemm_bf16_blocked_bytes(&blocks, threads);
}

bool nnz_gemm_bf16_amx_emulated_src(int M, int N, int K, float alpha, const nnz_bf16_src *A,
                                    const nnz_bf16_src *B, float beta, float *C, int ldc) {
    static const nnz_bf16_kernel kern = {AMX_BLOCKS, .ukr = ukr_tile_emulated, .ukr_lda = ukr_tile_emulated_lda};
    return nnz_gemm_bf16_blocked(&kern, M, N, K, alpha, A, B, beta, C, ldc);
}

bool nnz_gemm_bf16_amx_src(int M, int N, int K, float alpha, const nnz_bf16_src *A, const nnz_bf16_src *B,
                           float beta, float *C, int ldc) {
#ifdef HAVE_AMX_INTRINSICS
    if (!nnz_isa_supported(NNZ_ISA_AMX)) return false;
    static const nnz_bf16_kernel kern = {AMX_BLOCKS, .ukr = ukr_amx, .ukr_lda = ukr_amx_lda, .thread_enter = nnz_amx_tiles_enter,
                                         .thread_leave = nnz_amx_tiles_leave};
    return nnz_gemm_bf16_blocked(&kern, M, N, K, alpha, A, B, beta, C, ldc);
#else
    (void)M, (void)N, (void)K, (void)alpha, (void)A, (void)B, (void)beta, (void)C, (void)ldc;
    return false;
#endif
}

bool nnz_gemm_bf16_amx_emulated(bool transA, bool transB, int M, int N, int K, float alpha, const void *A,
                                int lda, const void *B, int ldb, bool f32in, float beta, float *C, int ldc) {
    const nnz_bf16_src a = {.p = A, .ld = lda, .trans = transA, .f32 = f32in}, b = {.p = B, .ld = ldb, .trans = transB, .f32 = f32in};
    return nnz_gemm_bf16_amx_emulated_src(M, N, K, alpha, &a, &b, beta, C, ldc);
}

bool nnz_gemm_bf16_amx(bool transA, bool transB, int M, int N, int K, float alpha, const void *A, int lda,
                       const void *B, int ldb, bool f32in, float beta, float *C, int ldc) {
    const nnz_bf16_src a = {.p = A, .ld = lda, .trans = transA, .f32 = f32in}, b = {.p = B, .ld = ldb, .trans = transB, .f32 = f32in};
    return nnz_gemm_bf16_amx_src(M, N, K, alpha, &a, &b, beta, C, ldc);
}
