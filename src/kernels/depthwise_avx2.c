/* Depthwise convolution, AVX2 + FMA (8 lanes, vmaskmov tails). Compiled with target
 * attributes; only called when nnz_isa_active() is avx2 or above. The body is
 * depthwise_simd.inc; contract in kernels.h. */
#include "kernels/kernels.h"

#include "kernels/simd_avx2.h"

#define DW_NAME(op) nnz_dwconv_##op##_f32_avx2

#include "depthwise_simd.inc"
