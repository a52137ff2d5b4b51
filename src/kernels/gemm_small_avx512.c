/* Small-K GEMM, AVX-512 (16 lanes, k-mask tails). Compiled with target
 * attributes, so the file builds without -mavx512f; only called when nnz_isa_active()
 * is avx512 or above. The body is gemm_small_simd.inc; contract in kernels.h. */
#include "kernels/kernels.h"

#include "kernels/simd_avx512.h"

#define GS_NAME(op) nnz_gemm_small_##op##_f32_avx512

#define GS_MR 4 /* accumulators: GS_MR*GS_NV, plus GS_NV of B and one of A */
#define GS_NV 4
#define GS_TALL_MR 8 /* 32 registers: 8 x 2 accumulators, 2 of B, 1 of A */

#include "gemm_small_simd.inc"
