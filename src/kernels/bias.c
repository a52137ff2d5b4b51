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

/* Contract: dbias (C) += sum over rows of x (M,C). The rows are cut into BIAS_SLICES slices
 * that depend only on M; each slice is summed in row order in double, and the slices are added
 * in order: the result does not depend on the thread count. Slicing rows rather than columns
 * keeps both threads busy when C is one or two vectors (a conv's 32 or 64 channels). */
#define BIAS_SLICES 16
#define BIAS_CH_TILE 256 /* channels per pass: a slice's partial sums stay on the stack */

static void column_sums(int64_t rows, int C, int c0, int ct, const float *x, double *acc) {
    for (int c = 0; c < ct; c++) acc[c] = 0.0;
    for (int64_t i = 0; i < rows; i++) {
        const float *row = x + i * C + c0;
#pragma omp simd
        for (int c = 0; c < ct; c++) acc[c] += row[c];
    }
}

void nnz_bias_grad_acc(int64_t M, int C, const float *x, float *dbias) {
    const int slices = M * C > 65536 && M >= BIAS_SLICES ? BIAS_SLICES : 1;
    for (int c0 = 0; c0 < C; c0 += BIAS_CH_TILE) {
        const int ct = C - c0 < BIAS_CH_TILE ? C - c0 : BIAS_CH_TILE;
        double part[BIAS_SLICES][BIAS_CH_TILE];
#pragma omp parallel for schedule(static) if (slices > 1)
        for (int sl = 0; sl < slices; sl++) {
            const int64_t r0 = M * sl / slices, r1 = M * (sl + 1) / slices;
            column_sums(r1 - r0, C, c0, ct, x + r0 * C, part[sl]);
        }
        for (int c = 0; c < ct; c++) {
            double sum = 0.0;
            for (int sl = 0; sl < slices; sl++) sum += part[sl][c];
            dbias[c0 + c] += (float)sum;
        }
    }
}
