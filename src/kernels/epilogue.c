/* The per-channel epilogue (batch-norm affine + relu/relu6 clamp); contract in kernels.h.
 * Two loops, so that each vectorizes without per-element tests: the full affine + clamp
 * (missing sub/mul/add replaced by 0/1/0 vectors), and the clamp alone. Compiled for
 * AVX-512 too (target attribute), chosen by nnz_isa_active(). */
#include "kernels/kernels.h"

#define EP_TILE 256

#define ALWAYS_INLINE static inline __attribute__((always_inline))

ALWAYS_INLINE void epilogue_body(int64_t M, int C, const float *sub, const float *mul, const float *add, float lo,
                                 float hi, float *x) {
    for (int64_t r = 0; r < M; r++) {
        float *row = x + r * C;
        if (mul) {
#pragma omp simd
            for (int c = 0; c < C; c++) {
                const float v = (row[c] - sub[c]) * mul[c] + add[c];
                row[c] = v < lo ? lo : (v > hi ? hi : v);
            }
        } else {
#pragma omp simd
            for (int c = 0; c < C; c++) {
                const float v = row[c];
                row[c] = v < lo ? lo : (v > hi ? hi : v);
            }
        }
    }
}

static void epilogue_ref(int64_t M, int C, const float *sub, const float *mul, const float *add, float lo, float hi,
                         float *x) {
    epilogue_body(M, C, sub, mul, add, lo, hi, x);
}

#if defined(__x86_64__)
__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma"))) static void
epilogue_f32_avx512(int64_t M, int C, const float *sub, const float *mul, const float *add, float lo, float hi,
                    float *x) {
    epilogue_body(M, C, sub, mul, add, lo, hi, x);
}
__attribute__((target("avx2,fma"))) static void epilogue_f32_avx2(int64_t M, int C, const float *sub,
                                                                  const float *mul, const float *add, float lo,
                                                                  float hi, float *x) {
    epilogue_body(M, C, sub, mul, add, lo, hi, x);
}
#endif

void nnz_epilogue_apply(int64_t M, int C, const nnz_epilogue *ep, float *x) {
    void (*fn)(int64_t, int, const float *, const float *, const float *, float, float, float *) = epilogue_ref;
#if defined(__x86_64__)
    const nnz_isa isa = nnz_isa_active();
    if (isa >= NNZ_ISA_AVX512) fn = epilogue_f32_avx512;
    else if (isa >= NNZ_ISA_AVX2) fn = epilogue_f32_avx2;
#endif
    if (!ep->sub && !ep->mul && !ep->add) {
        fn(M, C, NULL, NULL, NULL, ep->lo, ep->hi, x);
        return;
    }
    /* the affine loop needs all three: fill the missing ones per channel tile */
    float zero[EP_TILE], one[EP_TILE];
    for (int c = 0; c < EP_TILE; c++) zero[c] = 0.0f, one[c] = 1.0f;
    for (int c0 = 0; c0 < C; c0 += EP_TILE) {
        const int ct = C - c0 < EP_TILE ? C - c0 : EP_TILE;
        if (ct == C) {
            fn(M, C, ep->sub ? ep->sub : zero, ep->mul ? ep->mul : one, ep->add ? ep->add : zero, ep->lo, ep->hi, x);
            return;
        }
        /* wide rows: one channel tile at a time, as a (M, ct) block with row stride C */
        for (int64_t r = 0; r < M; r++)
            fn(1, ct, ep->sub ? ep->sub + c0 : zero, ep->mul ? ep->mul + c0 : one, ep->add ? ep->add + c0 : zero,
               ep->lo, ep->hi, x + r * C + c0);
    }
}
