/* The Winograd convolution's per-tile transforms, one set per ISA (private to the
 * conv_winograd*.c files; the contract of the convolution is in kernels.h, the matrices in
 * conv_winograd.c). A tile is m x m output pixels of one image, read from a 6x6 input window:
 * m = 2 for 5x5 kernels (F(2x2, 5x5)), m = 4 for 3x3 (F(4x4, 3x3)). */
#ifndef NNZ_CONV_WINOGRAD_H
#define NNZ_CONV_WINOGRAD_H

#include "kernels/kernels.h"

#define WG_E 36 /* elements of a 6x6 transformed tile */
#define WG_OC_BLOCK 16 /* output channels per call of the weight transforms, at most */

/* The transforms' layout (V, dM): tile-major, each tile's 36 x C values in one run, element e of
 * the block's tile t at t*wg_tile_floats(C) + e*C. Element-major (V[e][t][c]) was 7-10% slower:
 * its stores go to 36 planes at once. The GEMMs then read rows a tile apart; one cache line more
 * than 36*C floats keeps those rows out of a few L1 sets (36*64 floats is 144 lines, 16 sets apart:
 * a block's rows of one element thrashed 4 sets' ways, the weight gradient 10% slower). */
static inline int64_t wg_tile_floats(int C) { return (int64_t)WG_E * C + 16; }

/* G (6 x K, row-major) of F(2,5) (K = 5) or F(4,3) (K = 3): U = G w G^T */
const float *nnz_wg_g(int K);

typedef struct {
    int H, W;             /* the input's spatial size */
    int OH, OW, pad;      /* the output's, and the padding (stride 1) */
    int m;                /* output pixels per tile side: 2 or 4 */
    int tiles_y, tiles_x; /* tiles per image: ceil(OH/m) x ceil(OW/m) */
} nnz_wg_geometry;

/* V = B^T d B of tiles [t0, t0+count) of x (N,H,W,C), tile-major (wg_tile_floats); used (NULL: all):
 * block lists (nnz_channel_blocks' ptr or tptr) whose non-empty entries are the 16-channel blocks
 * made, the others left as they were (nothing reads them) */
typedef void (*nnz_wg_input_fn)(const nnz_wg_geometry *w, const float *x, int C, int64_t t0, int count,
                                const int32_t *used, float *V);
/* out (N,OH,OW,C) = (accumulate ? out : 0) + A^T M A, then ep (NULL: none), for those tiles; M
 * element-major in a block of T tiles: M[(e*T + t)*C + c] */
typedef void (*nnz_wg_output_fn)(const nnz_wg_geometry *w, const float *M, int C, int64_t t0, int count, int T,
                                 bool accumulate, const nnz_epilogue *ep, float *out);
/* dM = A dY A^T of those tiles of dy (N,OH,OW,C), laid out as V; used as above */
typedef void (*nnz_wg_grad_fn)(const nnz_wg_geometry *w, const float *dy, int C, int64_t t0, int count,
                               const int32_t *used, float *dM);

/* U = G w G^T (turned: of the data gradient's weight) for output channels [oc0, oc1) (at most
 * WG_OC_BLOCK, oc0 a multiple of it), as nnz_winograd_weight; G (6,K); ptr/idx (nnz_channel_blocks)
 * non-NULL: the kept blocks only */
typedef void (*nnz_wg_weight_fn)(int K, const float *G, int IC, int OC, const float *w, bool turned, float *U,
                                 int oc0, int oc1, const int32_t *ptr, const int32_t *idx);
/* dw (OC,K,K,IC) += G^T dU G for output channels [oc0, oc1) (at most WG_OC_BLOCK, oc0 a multiple of
 * it); ptr/idx (nnz_channel_blocks) non-NULL: at the kept blocks only (dU elsewhere is not read) */
typedef void (*nnz_wg_weight_grad_fn)(int K, const float *G, int IC, int OC, const float *dU, float *dw, int oc0,
                                      int oc1, const int32_t *ptr, const int32_t *idx);

/* M (count x OC, row stride OC) = V (count x IC, row stride ldv) * U (IC x OC, row stride OC) over the
 * kept channel blocks only (nnz_channel_blocks ptr/idx, by output block); a block keeping none: 0 */
typedef void (*nnz_wg_block_gemm_fn)(int count, int IC, int OC, const float *V, int64_t ldv, const float *U,
                                     const int32_t *ptr, const int32_t *idx, float *M);
/* D (IC x OC, row stride OC) += V (count x IC, ldv)^T * dM (count x OC, ldm) at the kept blocks only */
typedef void (*nnz_wg_block_at_fn)(int count, int IC, int OC, const float *V, int64_t ldv, const float *dM,
                                   int64_t ldm, const int32_t *ptr, const int32_t *idx, float *D);

#define NNZ_WG_DECLARE(isa)                                                                                            \
    void nnz_wg_input_##isa(const nnz_wg_geometry *w, const float *x, int C, int64_t t0, int count,                  \
                            const int32_t *used, float *V);                                                           \
    void nnz_wg_output_##isa(const nnz_wg_geometry *w, const float *M, int C, int64_t t0, int count, int T,           \
                             bool accumulate, const nnz_epilogue *ep, float *out);                                     \
    void nnz_wg_grad_##isa(const nnz_wg_geometry *w, const float *dy, int C, int64_t t0, int count,                   \
                           const int32_t *used, float *dM);                                                           \
    void nnz_wg_weight_##isa(int K, const float *G, int IC, int OC, const float *w, bool turned, float *U, int oc0,    \
                             int oc1, const int32_t *ptr, const int32_t *idx);                                         \
    void nnz_wg_weight_grad_##isa(int K, const float *G, int IC, int OC, const float *dU, float *dw, int oc0, int oc1,  \
                                  const int32_t *ptr, const int32_t *idx);                                             \
    void nnz_wg_block_gemm_##isa(int count, int IC, int OC, const float *V, int64_t ldv, const float *U,              \
                                 const int32_t *ptr, const int32_t *idx, float *M);                                   \
    void nnz_wg_block_at_##isa(int count, int IC, int OC, const float *V, int64_t ldv, const float *dM, int64_t ldm,  \
                               const int32_t *ptr, const int32_t *idx, float *D);
NNZ_WG_DECLARE(ref)
NNZ_WG_DECLARE(avx2)
NNZ_WG_DECLARE(avx512)

#endif
