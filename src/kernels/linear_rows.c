/* nnz_linear_rows: a linear layer's product whose every output is the same float for any number of
 * rows and any row position (kernels.h). OpenBLAS's sgemm is not like that: its tiles sum edge rows
 * in another order than full ones, and it picks paths by M (measured with Debian's 0.3.21: a
 * (M,512)x(512,10) product gives row 1 differently at M = 1..3, 4..120 and >= 121), so a run's
 * logits would depend on its batch sizes. nnz run's per-layer plans run a layer at several batch
 * sizes and promise the fixed plan's logits bit for bit; its linear layers use this.
 *
 * Contract: out (M, N) = in (M, K) . w (N, K)^T (+ bias (N), added last), row-major, lda = K,
 * ldo = N, beta = 0 (out is overwritten, NaNs in it included). Each output is
 *     s = sum over 16 lanes l of (sum over k = l mod 16, in increasing k, of in[k] * w[k]),
 * the lanes added pairwise (0+8, 1+9, ... then 0+4, ...), then + bias: the same operations whatever
 * M, the row's index and the thread count. Threads split the outputs N in blocks of 8 weight rows
 * (a block stays in L2 while every input row passes it: each weight is read from memory once per
 * call, as in a GEMM). The ISA variants may differ from each other in the last bits (the compiler
 * may contract differently), never between calls of one variant. */
#include "kernels/kernels.h"

#define LANES 16
#define WBLOCK 8

#define LINEAR_ROWS_BODY                                                                                       \
    _Pragma("omp parallel for schedule(static)") for (int jb = 0; jb < N; jb += WBLOCK) {                      \
        const int je = jb + WBLOCK < N ? jb + WBLOCK : N;                                                      \
        for (int i = 0; i < M; i++) {                                                                          \
            const float *x = in + (size_t)i * K;                                                               \
            for (int j = jb; j < je; j++) {                                                                    \
                const float *wr = w + (size_t)j * K;                                                           \
                float acc[LANES];                                                                              \
                for (int l = 0; l < LANES; l++) acc[l] = 0.0f;                                                 \
                int k = 0;                                                                                     \
                for (; k + LANES <= K; k += LANES)                                                             \
                    for (int l = 0; l < LANES; l++) acc[l] += x[k + l] * wr[k + l];                            \
                for (int l = 0; k + l < K; l++) acc[l] += x[k + l] * wr[k + l];                                \
                for (int h = LANES / 2; h > 0; h /= 2)                                                         \
                    for (int l = 0; l < h; l++) acc[l] += acc[l + h];                                          \
                out[(size_t)i * N + j] = bias ? acc[0] + bias[j] : acc[0];                                     \
            }                                                                                                  \
        }                                                                                                      \
    }

void nnz_linear_rows_ref(int M, int N, int K, const float *in, const float *w, const float *bias, float *out) {
    LINEAR_ROWS_BODY
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) static void linear_rows_avx2(int M, int N, int K, const float *in, const float *w,
                                                             const float *bias, float *out) {
    LINEAR_ROWS_BODY
}
#endif

void nnz_linear_rows(int M, int N, int K, const float *in, const float *w, const float *bias, float *out) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (nnz_isa_active() >= NNZ_ISA_AVX2) {
        linear_rows_avx2(M, N, K, in, w, bias, out);
        return;
    }
#endif
    nnz_linear_rows_ref(M, N, K, in, w, bias, out);
}
