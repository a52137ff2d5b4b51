/* Depthwise convolution, AVX-512 (16 lanes, k-mask tails). Compiled with target
 * attributes, so the file builds without -mavx512f; only called when nnz_isa_active()
 * is avx512 or above. The body is depthwise_simd.inc; contract in kernels.h. */
#include "kernels/kernels.h"

#include <immintrin.h>

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define VLEN 16
typedef __m512 vec;
typedef __mmask16 vmask;
/* r in [0,16]: (1 << 16) - 1 is all lanes */
#define vmask_first(r) ((__mmask16)((1u << (r)) - 1u))
#define vmload(m, p) _mm512_maskz_loadu_ps((m), (p))
#define vmstore(p, m, v) _mm512_mask_storeu_ps((p), (m), (v))
#define vfma(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define vadd(a, b) _mm512_add_ps((a), (b))
#define vzero() _mm512_setzero_ps()
#define DW_NAME(op) nnz_dwconv_##op##_f32_avx512

#include "depthwise_simd.inc"
