/* Bias broadcast and bias gradient over a row-major (M,C) matrix (conv/linear outputs). */
#include "kernels/kernels.h"

#include <stdlib.h>

/* Contract: x (M,C) row-major; every row becomes bias (overwrites, NaNs included). */
void nnz_bias_fill_rows(int64_t M, int C, const float *bias, float *x) {
#pragma omp parallel for schedule(static) if (M * C > 65536)
    for (int64_t i = 0; i < M; i++) {
        float *row = x + i * C;
#pragma omp simd
        for (int c = 0; c < C; c++) row[c] = bias[c];
    }
}

/* Contract: dbias (C) += sum over rows of x (M,C). Each column is summed in row order in
 * double, and threads split the columns, so the result does not depend on the thread count. */
#define BIAS_COLS_PER_TASK 64
void nnz_bias_grad_acc(int64_t M, int C, const float *x, float *dbias) {
    int tasks = (C + BIAS_COLS_PER_TASK - 1) / BIAS_COLS_PER_TASK;
#pragma omp parallel for schedule(static) if (M * C > 65536)
    for (int t = 0; t < tasks; t++) {
        int c0 = t * BIAS_COLS_PER_TASK, c1 = c0 + BIAS_COLS_PER_TASK < C ? c0 + BIAS_COLS_PER_TASK : C;
        double acc[BIAS_COLS_PER_TASK] = {0};
        for (int64_t i = 0; i < M; i++) {
            const float *row = x + i * C + c0;
#pragma omp simd
            for (int c = 0; c < c1 - c0; c++) acc[c] += row[c];
        }
        for (int c = c0; c < c1; c++) dbias[c] += (float)acc[c - c0];
    }
}
