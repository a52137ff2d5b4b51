/* The Winograd convolution's per-tile transforms, AVX2 + FMA (8 lanes). The body is
 * conv_winograd_simd.inc; the convolution's contract is in kernels.h. */
#include "kernels/conv_winograd.h"

#include "kernels/simd_avx2.h"

#define WG_NAME(op) nnz_wg_##op##_avx2

#include "epilogue_simd.inc"
#include "conv_winograd_simd.inc"
