/* fp32 <-> bf16 vector conversions: the dispatcher and the reference (contract in kernels.h). */
#include "kernels/kernels.h"

#include <string.h>

void nnz_cvt_f32_to_bf16_ref(int64_t n, const float *x, nnz_bf16 *y) {
    for (int64_t i = 0; i < n; i++) y[i] = nnz_bf16_from_f32(x[i]);
}
void nnz_cvt_bf16_to_f32_ref(int64_t n, const nnz_bf16 *x, float *y) {
    for (int64_t i = 0; i < n; i++) y[i] = nnz_bf16_to_f32(x[i]);
}

nnz_cvt_f32_to_bf16_fn nnz_cvt_f32_to_bf16_kernel(void) {
    const nnz_isa isa = nnz_isa_active();
    if (isa >= NNZ_ISA_AVX512BF16) return nnz_cvt_f32_to_bf16_avx512bf16;
    if (isa == NNZ_ISA_AVX512) return nnz_cvt_f32_to_bf16_avx512;
    return nnz_cvt_f32_to_bf16_ref;
}

static void cvt_f32_to_bf16_serial(int64_t n, const float *x, nnz_bf16 *y) { nnz_cvt_f32_to_bf16_kernel()(n, x, y); }

/* Large arrays (a batch's output gradient, a stored activation) in chunks across the threads: one
 * thread converts at the memory speed of one core only. Element by element, so the result is the
 * same; short ones (the packers call it per row) open no parallel region. */
#define CVT_CHUNK (1 << 15)
#define CVT_IN_CHUNKS(n, serial, x, y)                                                  \
    do {                                                                                \
        if ((n) < 4 * CVT_CHUNK) {                                                      \
            serial((n), (x), (y));                                                      \
            break;                                                                      \
        }                                                                               \
        const int64_t chunks_ = ((n) + CVT_CHUNK - 1) / CVT_CHUNK;                      \
        _Pragma("omp parallel for schedule(static)")                                    \
        for (int64_t c_ = 0; c_ < chunks_; c_++) {                                      \
            const int64_t i_ = c_ * CVT_CHUNK;                                          \
            serial((n) - i_ < CVT_CHUNK ? (n) - i_ : CVT_CHUNK, (x) + i_, (y) + i_);    \
        }                                                                               \
    } while (0)

void nnz_cvt_f32_to_bf16(int64_t n, const float *x, nnz_bf16 *y) { CVT_IN_CHUNKS(n, cvt_f32_to_bf16_serial, x, y); }

static void cvt_bf16_to_f32_serial(int64_t n, const nnz_bf16 *x, float *y) {
    if (nnz_isa_active() >= NNZ_ISA_AVX512) nnz_cvt_bf16_to_f32_avx512(n, x, y);
    else nnz_cvt_bf16_to_f32_ref(n, x, y);
}

void nnz_cvt_bf16_to_f32(int64_t n, const nnz_bf16 *x, float *y) { CVT_IN_CHUNKS(n, cvt_bf16_to_f32_serial, x, y); }

/* dst (cols, rows) with ld_dst = bf16(src (rows, cols) with ld_src)^T, rounded as
 * nnz_bf16_from_f32. In 64 x 16 tiles so both sides stay in L1; OpenMP over row tiles
 * (each writes its own columns of dst). */
void nnz_cvt_f32_to_bf16_transposed(int64_t rows, int cols, const float *src, int64_t ld_src, nnz_bf16 *dst,
                                    int64_t ld_dst) {
    const int64_t tiles = (rows + 63) / 64;
#pragma omp parallel for schedule(static) if (rows * cols >= 65536)
    for (int64_t t = 0; t < tiles; t++) {
        const int64_t r0 = t * 64, r1 = r0 + 64 < rows ? r0 + 64 : rows;
        for (int c0 = 0; c0 < cols; c0 += 16) {
            const int c1 = c0 + 16 < cols ? c0 + 16 : cols;
            for (int c = c0; c < c1; c++)
                for (int64_t r = r0; r < r1; r++) dst[(int64_t)c * ld_dst + r] = nnz_bf16_from_f32(src[r * ld_src + c]);
        }
    }
}

void nnz_round_to_bf16(int64_t n, const float *x, float *y) {
    /* nnz_bf16_round without a branch, so that the loop vectorizes */
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        const uint32_t nearest = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u, quiet = (u & 0xFFFF0000u) | 0x00400000u;
        const uint32_t r = (u & 0x7FFFFFFFu) > 0x7F800000u ? quiet : nearest;
        memcpy(&y[i], &r, 4);
    }
}
