/* Small-K GEMM, AVX2 + FMA (8 lanes, vmaskmov tails). Compiled with target
 * attributes; only called when nnz_isa_active() is avx2 or above. The body is
 * gemm_small_simd.inc; contract in kernels.h. */
#include "kernels/kernels.h"

#include "kernels/simd_avx2.h"

#define GS_NAME(op) nnz_gemm_small_##op##_f32_avx2

#define GS_MR 4 /* accumulators: GS_MR*GS_NV, plus GS_NV of B and one of A */
#define GS_NV 2

#include "gemm_small_simd.inc"
