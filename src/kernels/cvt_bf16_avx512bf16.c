/* fp32 -> bf16 with VCVTNEPS2BF16 (AVX512-BF16): round to nearest even, NaN -> quiet NaN,
 * and fp32 denormal inputs flushed to +-0 (the instruction ignores MXCSR; measured on AMD
 * Zen 4, and so specified by Intel). Otherwise bit-identical to nnz_bf16_from_f32. Only
 * called when nnz_isa_active() >= avx512bf16. */
#include "kernels/kernels.h"

#include <immintrin.h>

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

TARGET static inline __m256i cvt16(__m512 v) { return (__m256i)_mm512_cvtneps_pbh(v); }

TARGET void nnz_cvt_f32_to_bf16_avx512bf16(int64_t n, const float *x, nnz_bf16 *y) {
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        /* vcvtne2ps2bf16: two vectors per instruction (the second argument fills the low half) */
        const __m512bh r = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i));
        _mm512_storeu_si512((void *)(y + i), (__m512i)r);
    }
    for (; i + 16 <= n; i += 16) _mm256_storeu_si256((__m256i *)(y + i), cvt16(_mm512_loadu_ps(x + i)));
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        _mm256_mask_storeu_epi16(y + i, m, cvt16(_mm512_maskz_loadu_ps(m, x + i)));
    }
}
