/* fp32 <-> bf16 vector conversions: the dispatcher and the reference (contract in kernels.h). */
#include "kernels/kernels.h"

void nnz_cvt_f32_to_bf16_ref(int64_t n, const float *x, nnz_bf16 *y) {
    for (int64_t i = 0; i < n; i++) y[i] = nnz_bf16_from_f32(x[i]);
}
void nnz_cvt_bf16_to_f32_ref(int64_t n, const nnz_bf16 *x, float *y) {
    for (int64_t i = 0; i < n; i++) y[i] = nnz_bf16_to_f32(x[i]);
}

void nnz_cvt_f32_to_bf16(int64_t n, const float *x, nnz_bf16 *y) {
    const nnz_isa isa = nnz_isa_active();
    if (isa >= NNZ_ISA_AVX512BF16) nnz_cvt_f32_to_bf16_avx512bf16(n, x, y);
    else if (isa == NNZ_ISA_AVX512) nnz_cvt_f32_to_bf16_avx512(n, x, y);
    else nnz_cvt_f32_to_bf16_ref(n, x, y);
}
void nnz_cvt_bf16_to_f32(int64_t n, const nnz_bf16 *x, float *y) {
    if (nnz_isa_active() >= NNZ_ISA_AVX512) nnz_cvt_bf16_to_f32_avx512(n, x, y);
    else nnz_cvt_bf16_to_f32_ref(n, x, y);
}
