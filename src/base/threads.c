/* Threads (OpenMP) and the monotonic clock. */
#include "base/base.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <time.h>

void nnz_set_threads(int n) {
    if (n <= 0) n = omp_get_num_procs();
    omp_set_num_threads(n);
    omp_set_max_active_levels(1); /* kernels called inside nnz's parallel regions run single-threaded */
    openblas_set_num_threads(n); /* OpenBLAS keeps its own count even in its OpenMP build */
}

int nnz_get_threads(void) { return omp_get_max_threads(); }
int nnz_threads(void) { return omp_get_max_threads(); }

double nnz_now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

bool nnz_omp_all_ok(bool ok, int *failed) {
    if (!ok) {
#pragma omp atomic write
        *failed = 1;
    }
#pragma omp barrier
    int stop;
#pragma omp atomic read
    stop = *failed;
    return !stop;
}
