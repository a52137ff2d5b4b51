/* Softmax cross-entropy with label smoothing, PyTorch's definition:
 *   t = (1-s) onehot(label) + s/C,  loss_i = -sum_c t_c log softmax(z_i)_c,
 *   loss = mean_i loss_i,  dloss/dz_i = (softmax(z_i) - t) / N.
 * Rows are shifted by their maximum before exp (log-sum-exp), and the math is
 * done in double: N*C is small (a batch of class scores), accuracy is free.
 * A label >= C is a caller's bug (the data readers check labels): the loss is
 * NaN (so training stops on it) and that row's dlogits are zero, rather than an
 * out-of-bounds read. */
#include "nn/nn.h"

#include <assert.h>
#include <math.h>

float nnz_softmax_xent(int N, int C, const float *logits, const uint8_t *labels, float smoothing, float *dlogits,
                       int *correct) {
    assert(N > 0 && C > 0);
    const double s = smoothing, off = s / C, on = 1.0 - s + off;
    double total = 0.0;
    int hits = 0;
    bool bad_label = false;
    for (int i = 0; i < N; i++) {
        const float *z = logits + (int64_t)i * C;
        const int y = labels[i];
        if (y >= C) {
            bad_label = true;
            if (dlogits)
                for (int c = 0; c < C; c++) dlogits[(int64_t)i * C + c] = 0.0f;
            continue;
        }
        int best = 0;
        for (int c = 1; c < C; c++)
            if (z[c] > z[best]) best = c; /* strict: the first maximum wins */
        hits += best == y;
        const double zmax = z[best];
        double sum = 0.0, zsum = 0.0;
        for (int c = 0; c < C; c++) {
            sum += exp((double)z[c] - zmax);
            zsum += (double)z[c] - zmax;
        }
        const double lse = log(sum);
        /* -sum_c t_c (z_c - zmax - lse) with sum_c t_c = 1 */
        total += lse - (1.0 - s) * ((double)z[y] - zmax) - off * zsum;
        if (dlogits) {
            float *g = dlogits + (int64_t)i * C;
            for (int c = 0; c < C; c++) {
                const double p = exp((double)z[c] - zmax - lse);
                g[c] = (float)((p - (c == y ? on : off)) / N);
            }
        }
    }
    if (correct) *correct = hits;
    if (bad_label) return NAN;
    return (float)(total / N);
}
