/* The vector vocabulary the *_simd.inc kernel bodies are written in, for AVX-512
 * (16 lanes, k-mask tails). Included only by the *_avx512.c files, which define
 * their kernel names and tile sizes and then include a body. Functions are compiled
 * with TARGET, so the files build without -mavx512f. */
#ifndef NNZ_SIMD_AVX512_H
#define NNZ_SIMD_AVX512_H

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
#define vsub(a, b) _mm512_sub_ps((a), (b))
#define vmax(a, b) _mm512_max_ps((a), (b))
#define vmin(a, b) _mm512_min_ps((a), (b))
#define vset1(x) _mm512_set1_ps(x)
#define vbcast(p) _mm512_set1_ps(*(p))
#define vload(p) _mm512_loadu_ps(p)
#define vstore(p, v) _mm512_storeu_ps((p), (v))

#endif
