/* The Winograd convolution's per-tile transforms, plain C (one lane: NNZ_ISA=ref, or no AVX2). The body is
 * conv_winograd_simd.inc; the convolution's contract is in kernels.h. */
#include "kernels/conv_winograd.h"

#include "kernels/simd_scalar.h"

#define WG_NAME(op) nnz_wg_##op##_ref

#include "epilogue_simd.inc"
#include "conv_winograd_simd.inc"
