/* Threads (OpenMP) and the monotonic clock. */
#include "base/base.h"

#include <cblas.h>
#include <omp.h>
#include <time.h>

void nnz_set_threads(int n) {
    if (n <= 0) n = omp_get_num_procs();
    omp_set_num_threads(n);
    openblas_set_num_threads(n); /* OpenBLAS keeps its own count even in its OpenMP build */
}

int nnz_get_threads(void) { return omp_get_max_threads(); }
int nnz_threads(void) { return omp_get_max_threads(); }

double nnz_now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
