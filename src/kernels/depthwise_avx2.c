/* Depthwise convolution, AVX2 + FMA (8 lanes, vmaskmov tails). Compiled with target
 * attributes; only called when nnz_isa_active() is avx2 or above. The body is
 * depthwise_simd.inc; contract in kernels.h. */
#include "kernels/kernels.h"

#include <immintrin.h>

#define TARGET __attribute__((target("avx2,fma")))
#define VLEN 8
typedef __m256 vec;
typedef __m256i vmask;
/* lanes i < r all-ones: compare the lane index against r */
#define vmask_first(r) _mm256_cmpgt_epi32(_mm256_set1_epi32(r), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define vmload(m, p) _mm256_maskload_ps((p), (m))
#define vmstore(p, m, v) _mm256_maskstore_ps((p), (m), (v))
#define vfma(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define vadd(a, b) _mm256_add_ps((a), (b))
#define vzero() _mm256_setzero_ps()
#define DW_NAME(op) nnz_dwconv_##op##_f32_avx2

#include "depthwise_simd.inc"
