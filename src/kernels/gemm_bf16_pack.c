/* Packing op(A) and op(B) into the panels of the blocked bf16 GEMM (layouts in kernels.h),
 * and the plain-C AMX tile used to test the AMX layout on machines without AMX.
 * The loops read the source along its contiguous direction; `f32` and `KB` are constant
 * in the callers' hot cases, so the compiler specializes the inlined bodies. */
#include "kernels/kernels.h"

#include <float.h>
#include <math.h>
#include <string.h>

static inline nnz_bf16 load_elem(const void *p, int64_t idx, bool f32) {
    return f32 ? nnz_bf16_from_f32(((const float *)p)[idx]) : ((const nnz_bf16 *)p)[idx];
}

static inline void pack_a_body(const nnz_bf16_src *A, int i0, int mr, int k0, int kc, int MR, int KB, int kc_pad,
                               nnz_bf16 *out, bool f32) {
    if (mr < MR || kc < kc_pad) memset(out, 0, (size_t)MR * kc_pad * sizeof(nnz_bf16));
    const int64_t ld = A->ld;
    if (!A->trans) {
        /* row i of op(A) is contiguous in k */
        for (int i = 0; i < mr; i++) {
            const int64_t base = (int64_t)(i0 + i) * ld + k0;
            for (int k = 0; k < kc; k++)
                out[(size_t)(k / KB) * MR * KB + (size_t)i * KB + k % KB] = load_elem(A->p, base + k, f32);
        }
    } else {
        /* op(A)(i,k) = A[k*ld + i]: row k of A holds the panel's rows side by side */
        for (int k = 0; k < kc; k++) {
            const int64_t base = (int64_t)(k0 + k) * ld + i0;
            nnz_bf16 *o = out + (size_t)(k / KB) * MR * KB + k % KB;
            for (int i = 0; i < mr; i++) o[(size_t)i * KB] = load_elem(A->p, base + i, f32);
        }
    }
}

void nnz_bf16_pack_a(const nnz_bf16_src *A, int i0, int mr, int k0, int kc, int MR, int KB, int kc_pad,
                     nnz_bf16 *out) {
    /* the two block sizes in use, as constants */
    if (KB == 2) {
        if (A->f32) pack_a_body(A, i0, mr, k0, kc, MR, 2, kc_pad, out, true);
        else pack_a_body(A, i0, mr, k0, kc, MR, 2, kc_pad, out, false);
    } else if (KB == 32) {
        if (A->f32) pack_a_body(A, i0, mr, k0, kc, MR, 32, kc_pad, out, true);
        else pack_a_body(A, i0, mr, k0, kc, MR, 32, kc_pad, out, false);
    } else {
        pack_a_body(A, i0, mr, k0, kc, MR, KB, kc_pad, out, A->f32);
    }
}

static inline void pack_b_body(const nnz_bf16_src *B, int k0, int kc, int j0, int nr, int NR, int kc_pad,
                               nnz_bf16 *out, bool f32) {
    if (nr < NR || kc < kc_pad) memset(out, 0, (size_t)NR * kc_pad * sizeof(nnz_bf16));
    const int64_t ld = B->ld;
    if (!B->trans) {
        /* row k of op(B) is contiguous in j: interleave rows 2p and 2p+1 */
        for (int k = 0; k < kc; k++) {
            const int64_t base = (int64_t)(k0 + k) * ld + j0;
            nnz_bf16 *o = out + (size_t)(k / 2) * NR * 2 + (k & 1);
            for (int j = 0; j < nr; j++) o[2 * j] = load_elem(B->p, base + j, f32);
        }
    } else {
        /* op(B)(k,j) = B[j*ld + k]: column j is contiguous in k, pairs are adjacent */
        for (int j = 0; j < nr; j++) {
            const int64_t base = (int64_t)(j0 + j) * ld + k0;
            for (int k = 0; k < kc; k++)
                out[(size_t)(k / 2) * NR * 2 + (size_t)j * 2 + (k & 1)] = load_elem(B->p, base + k, f32);
        }
    }
}

void nnz_bf16_pack_b(const nnz_bf16_src *B, int k0, int kc, int j0, int nr, int NR, int kc_pad, nnz_bf16 *out) {
    if (B->f32) pack_b_body(B, k0, kc, j0, nr, NR, kc_pad, out, true);
    else pack_b_body(B, k0, kc, j0, nr, NR, kc_pad, out, false);
}

/* tdpbf16ps works with DAZ and FTZ: denormals in and out are zeros */
static inline float flush(float x) { return fabsf(x) < FLT_MIN ? copysignf(0.0f, x) : x; }

void nnz_bf16_tile_dp_emulated(float *C, int ldc, const nnz_bf16 *A, int lda, const nnz_bf16 *B, int ldb) {
    for (int m = 0; m < 16; m++)
        for (int n = 0; n < 16; n++) {
            float c = flush(C[(size_t)m * ldc + n]);
            for (int p = 0; p < 16; p++)
                for (int e = 0; e < 2; e++) { /* even element of the pair first, then odd */
                    const float a = flush(nnz_bf16_to_f32(A[(size_t)m * lda + 2 * p + e]));
                    const float b = flush(nnz_bf16_to_f32(B[(size_t)p * ldb + 2 * n + e]));
                    const float prod = flush(a * b); /* exact unless it underflows */
                    c = flush(c + prod);
                }
            C[(size_t)m * ldc + n] = c;
        }
}
