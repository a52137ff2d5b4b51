/* Threads (OpenMP) and the monotonic clock. */
#include "base/base.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

void nnz_set_threads(int n) {
    if (n <= 0) n = omp_get_num_procs();
    omp_set_num_threads(n);
    omp_set_max_active_levels(1); /* kernels called inside nnz's parallel regions run single-threaded */
    openblas_set_num_threads(n); /* OpenBLAS keeps its own count even in its OpenMP build */
}

int nnz_get_threads(void) { return omp_get_max_threads(); }
int nnz_threads(void) { return omp_get_max_threads(); }

void nnz_threads_prefer_passive(char **argv) {
    if (!argv || !argv[0] || getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
    if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
    /* the link's target first: under valgrind (and other loaders) /proc/self/exe itself is
     * the loader, while readlink gives the program; the link is the fallback */
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        execv(self, argv);
    }
    execv("/proc/self/exe", argv); /* returns only on failure: go on with the default policy */
    unsetenv("OMP_WAIT_POLICY");
}

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
