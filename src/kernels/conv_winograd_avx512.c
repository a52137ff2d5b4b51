/* The Winograd convolution's per-tile transforms, AVX-512 (16 lanes). The body is
 * conv_winograd_simd.inc; the convolution's contract is in kernels.h. */
#include "kernels/conv_winograd.h"

#include "kernels/simd_avx512.h"

#define WG_NAME(op) nnz_wg_##op##_avx512

#include "epilogue_simd.inc"
#include "conv_winograd_simd.inc"
