/* RBGP forward kernel, AVX2 + FMA (8 lanes): the body is sparse_rbgp_simd.inc; only called
 * when nnz_isa_active() is avx2. Contract in kernels.h. */
#include "kernels/kernels.h"

#include "kernels/simd_avx2.h"

#define RB_NAME nnz_spmm_rbgp_panel_f32_avx2
#define RB_TRANSPOSE nnz_transpose_panel_f32_avx2
#define RB_NVG8 1 /* 8 accumulators of the 16 ymm registers */
#define RB_NVG4 2
#define RB_NVG2 4
#define RB_NVG1 4
#define RB_TILE_NV 2 /* br = 16: vectors per column of W */
#define RB_TILE_MT 6 /* rows of X per register tile */

#include "sparse_rbgp_simd.inc"
