/* bf16 GEMM with AVX512-BF16 (vdpbf16ps): the blocked driver (gemm_bf16_driver.h) with a
 * 14x32 micro-kernel. Contract in kernels.h.
 *
 * Micro-kernel: 28 fp32 accumulators (14 rows x 2 vectors of 16 columns) stay in zmm
 * registers; per k-pair it loads 2 vectors of B (32 columns x 2 bf16, VNNI order) and, per
 * row, broadcasts one 32-bit pair of A: 28 vdpbf16ps, 64 flops each, on 3 loads + 14
 * broadcasts. 28 + 2 + 1 = 31 of the 32 registers. Each accumulator adds, per pair, the
 * even then the odd product, rounding each time (vdpbf16ps's order).
 * Edges: A and B panels are zero-padded, rows >= mr are not stored, columns >= nr are
 * masked; alpha and beta are applied at the store (beta = 0 never reads C). */
#include "kernels/gemm_bf16_driver.h"

#include <immintrin.h>

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

#define UK_MR 14
#define UK_NR 32

typedef int32_t __attribute__((may_alias)) bf16_pair; /* two bf16 of A read as one word */

TARGET static void ukr_14x32(int kc_pad, const nnz_bf16 *Ap, const nnz_bf16 *Bp, float *C, int64_t ldc, int mr,
                             int nr, float alpha, float beta) {
    __m512 c0[UK_MR], c1[UK_MR];
#pragma GCC unroll 14
    for (int i = 0; i < UK_MR; i++) c0[i] = c1[i] = _mm512_setzero_ps();
    const bf16_pair *a = (const bf16_pair *)Ap;
    for (int p = 0; p < kc_pad / 2; p++) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512(Bp + (size_t)p * 2 * UK_NR);
        const __m512bh b1 = (__m512bh)_mm512_loadu_si512(Bp + (size_t)p * 2 * UK_NR + UK_NR);
#pragma GCC unroll 14
        for (int i = 0; i < UK_MR; i++) {
            const __m512bh ai = (__m512bh)_mm512_set1_epi32(a[(size_t)p * UK_MR + i]);
            c0[i] = _mm512_dpbf16_ps(c0[i], ai, b0);
            c1[i] = _mm512_dpbf16_ps(c1[i], ai, b1);
        }
    }
    const __mmask16 m0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1u);
    const __mmask16 m1 = nr >= 32 ? 0xFFFF : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1u) : 0;
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 14
    for (int i = 0; i < UK_MR; i++) {
        if (i >= mr) break;
        float *ci = C + (size_t)i * ldc;
        __m512 r0 = _mm512_mul_ps(c0[i], va), r1 = _mm512_mul_ps(c1[i], va);
        if (beta != 0.0f) {
            r0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m0, ci), vb, r0);
            r1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m1, ci + 16), vb, r1);
        }
        _mm512_mask_storeu_ps(ci, m0, r0);
        _mm512_mask_storeu_ps(ci + 16, m1, r1);
    }
}

/* KC 512: a B micro-panel is 32 KiB (L1), A's MC x KC block 224 KiB (L2), B's KC x NC
 * block 3 MiB (L3). Measured on Zen 4, 1 thread, 1024^3: KC 256 -> 512 gave +10%. */
static const nnz_bf16_kernel kernel_14x32 = {
    .MR = UK_MR, .NR = UK_NR, .KB = 2, .KC = 512, .MC = 14 * 16, .NC = 32 * 96, .ukr = ukr_14x32,
};

size_t nnz_gemm_bf16_avx512bf16_bytes(int threads) { return nnz_gemm_bf16_blocked_bytes(&kernel_14x32, threads); }

bool nnz_gemm_bf16_avx512bf16_src(int M, int N, int K, float alpha, const nnz_bf16_src *A, const nnz_bf16_src *B,
                                  float beta, float *C, int ldc) {
    return nnz_gemm_bf16_blocked(&kernel_14x32, M, N, K, alpha, A, B, beta, C, ldc);
}

bool nnz_gemm_bf16_avx512bf16(bool transA, bool transB, int M, int N, int K, float alpha, const void *A, int lda,
                              const void *B, int ldb, bool f32in, float beta, float *C, int ldc) {
    const nnz_bf16_src a = {.p = A, .ld = lda, .trans = transA, .f32 = f32in}, b = {.p = B, .ld = ldb, .trans = transB, .f32 = f32in};
    return nnz_gemm_bf16_avx512bf16_src(M, N, K, alpha, &a, &b, beta, C, ldc);
}
