/* What every bench program needs beside its kernels: sorting times, their median, and an
 * allocation that exits with nnz's message. Header-only (static functions): each bench is one file. */
#ifndef NNZ_BENCH_UTIL_H
#define NNZ_BENCH_UTIL_H

#include "base/base.h"

#include <stdio.h>
#include <stdlib.h>

static inline int bench_cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* sorts t[0..n) ascending (t[0] is then the fastest) and returns its median */
static inline double bench_median(double *t, int n) {
    qsort(t, (size_t)n, sizeof *t, bench_cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

static inline void *bench_alloc(size_t bytes) {
    void *p = nnz_alloc(bytes, "bench buffer");
    if (!p) {
        fprintf(stderr, "bench: %s\n", nnz_last_error());
        exit(1);
    }
    return p;
}

#endif
