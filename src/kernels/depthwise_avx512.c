/* Depthwise convolution, AVX-512 (16 lanes, k-mask tails). Compiled with target
 * attributes, so the file builds without -mavx512f; only called when nnz_isa_active()
 * is avx512 or above. The body is depthwise_simd.inc; contract in kernels.h. */
#include "kernels/kernels.h"

#include "kernels/simd_avx512.h"

#define DW_NAME(op) nnz_dwconv_##op##_f32_avx512

#define DW_PIX_S1 8 /* 8 accumulators + 10 inputs + 9 weights of 32 registers */
#define DW_PIX_S2 6 /* 6 accumulators + 13 inputs + 9 weights */

#include "depthwise_simd.inc"
