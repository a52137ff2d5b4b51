/* fp32 <-> bf16 with AVX-512F/BW integer arithmetic: the same round-to-nearest-even as
 * nnz_bf16_from_f32 (bits + 0x7FFF + bit 16, high half; NaN -> quiet NaN), so bit-identical
 * to it on every input, denormals included. Compiled with target attributes; only called
 * when nnz_isa_active() >= avx512. Tails by k-masks. */
#include "kernels/kernels.h"

#include <immintrin.h>

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl")))

TARGET static inline __m256i round16(__m512 v) {
    const __m512i u = _mm512_castps_si512(v);
    const __m512i abs = _mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF));
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(abs, _mm512_set1_epi32(0x7F800000));
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
    r = _mm512_srli_epi32(r, 16);
    r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x0040));
    return _mm512_cvtepi32_epi16(r);
}

TARGET void nnz_cvt_f32_to_bf16_avx512(int64_t n, const float *x, nnz_bf16 *y) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm256_storeu_si256((__m256i *)(y + i), round16(_mm512_loadu_ps(x + i)));
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        _mm256_mask_storeu_epi16(y + i, m, round16(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

TARGET static inline __m512 widen16(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

TARGET void nnz_cvt_bf16_to_f32_avx512(int64_t n, const nnz_bf16 *x, float *y) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, widen16(_mm256_loadu_si256((const __m256i *)(x + i))));
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(y + i, m, widen16(_mm256_maskz_loadu_epi16(m, x + i)));
    }
}
