/* RBGP forward kernel, AVX-512 (16 lanes): the body is sparse_rbgp_simd.inc; only called
 * when nnz_isa_active() >= avx512. Contract in kernels.h. */
#include "kernels/kernels.h"

#include "kernels/simd_avx512.h"

#define RB_NAME nnz_spmm_rbgp_panel_f32_avx512
#define RB_TRANSPOSE nnz_transpose_panel_f32_avx512
#define RB_NVG8 2 /* 16 accumulators */
#define RB_NVG4 4
#define RB_NVG2 4
#define RB_NVG1 4
#define RB_TILE_NV 1 /* br = 16: vectors per column of W */
#define RB_TILE_MT 12 /* rows of X per register tile */

#include "sparse_rbgp_simd.inc"
