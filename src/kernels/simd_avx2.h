/* The vector vocabulary the *_simd.inc kernel bodies are written in, for AVX2 + FMA
 * (8 lanes, vmaskmov tails). Included only by the *_avx2.c files, which define their
 * kernel names and tile sizes and then include a body. */
#ifndef NNZ_SIMD_AVX2_H
#define NNZ_SIMD_AVX2_H

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
#define vsub(a, b) _mm256_sub_ps((a), (b))
#define vmax(a, b) _mm256_max_ps((a), (b))
#define vmin(a, b) _mm256_min_ps((a), (b))
#define vset1(x) _mm256_set1_ps(x)
#define vbcast(p) _mm256_broadcast_ss(p)
#define vload(p) _mm256_loadu_ps(p)
#define vstore(p, v) _mm256_storeu_ps((p), (v))

#endif
