/* Measures this machine's fp32 peak: independent FMA chains (AVX-512 if the CPU has it,
 * else AVX2) on every thread; prints one JSON line. The yardstick for GFLOP/s figures. */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "nnz.h"

#define CHAINS 12

__attribute__((target("avx512f"))) static float fma_chains_avx512(long iters) {
    __m512 acc[CHAINS], b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    for (int k = 0; k < CHAINS; k++) acc[k] = _mm512_set1_ps((float)k);
    for (long i = 0; i < iters; i++)
#pragma GCC unroll 12
        for (int k = 0; k < CHAINS; k++) acc[k] = _mm512_fmadd_ps(acc[k], b, c);
    __m512 s = acc[0];
    for (int k = 1; k < CHAINS; k++) s = _mm512_add_ps(s, acc[k]);
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma"))) static float fma_chains_avx2(long iters) {
    __m256 acc[CHAINS], b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    for (int k = 0; k < CHAINS; k++) acc[k] = _mm256_set1_ps((float)k);
    for (long i = 0; i < iters; i++)
#pragma GCC unroll 12
        for (int k = 0; k < CHAINS; k++) acc[k] = _mm256_fmadd_ps(acc[k], b, c);
    float out[8], s = 0;
    for (int k = 1; k < CHAINS; k++) acc[0] = _mm256_add_ps(acc[0], acc[k]);
    _mm256_storeu_ps(out, acc[0]);
    for (int i = 0; i < 8; i++) s += out[i];
    return s;
}

int main(int argc, char **argv) {
    nnz_prefer_startup_env(argv); /* OpenBLAS on its best kernels, passive OpenMP */
    int threads = argc > 1 ? atoi(argv[1]) : 0;
    nnz_set_threads(threads);
    int wide = nnz_isa_supported(NNZ_ISA_AVX512);
    int lanes = wide ? 16 : 8;
    long iters = 50 * 1000 * 1000;
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = omp_get_wtime();
        float sink = 0;
#pragma omp parallel reduction(+ : sink)
        sink += wide ? fma_chains_avx512(iters) : fma_chains_avx2(iters);
        double t = omp_get_wtime() - t0;
        double gflops = 2.0 * lanes * CHAINS * (double)iters * nnz_get_threads() / t * 1e-9;
        if (gflops > best) best = gflops;
        if (sink == 12345.0f) puts("");  /* keep the result alive */
    }
    printf("{\"impl\":\"peak\",\"isa\":\"%s\",\"threads\":%d,\"fp32_gflops\":%.1f}\n", wide ? "avx512" : "avx2",
           nnz_get_threads(), best);
    return 0;
}
