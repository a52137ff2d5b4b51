/* Magnitude pruning for the compressed-model benchmarks (no retraining): zeroes the
 * given fraction of smallest-magnitude weights of every conv/linear weight tensor with
 * at least MIN_WEIGHTS elements, and saves a model-only checkpoint.
 *
 *   nnz_prune_magnitude IN.safetensors OUT.safetensors FRACTION [MIN_WEIGHTS (1000)]
 *
 * Sparse models proper come from training with pruning (AutoSparse / GMP); this only
 * exercises the sparse path of nnz pack on a real checkpoint. */
#include "nn/nn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    nnz_prefer_startup_env(argv); /* OpenBLAS on its best kernels, passive OpenMP */
    if (argc < 4) {
        fprintf(stderr, "usage: nnz_prune_magnitude IN.safetensors OUT.safetensors FRACTION [MIN_WEIGHTS]\n");
        return 2;
    }
    double frac = atof(argv[3]);
    long min_w = argc > 4 ? atol(argv[4]) : 1000;
    nnz_model *m = NULL;
    if (nnz_checkpoint_load_model(argv[1], &m) != NNZ_OK) {
        fprintf(stderr, "nnz_prune_magnitude: %s\n", nnz_last_error());
        return 1;
    }
    for (int i = 0; i < m->n_params; i++) {
        nnz_param *p = &m->params[i];
        const nnz_node *n = &m->nodes[p->node];
        if (n->weight != i || (n->op != NNZ_OP_CONV2D && n->op != NNZ_OP_LINEAR)) continue;
        int64_t cnt = nnz_tensor_numel(&p->value);
        if (cnt < min_w) continue;
        float *v = p->value.data, *mag = malloc((size_t)cnt * sizeof *mag);
        for (int64_t j = 0; j < cnt; j++) mag[j] = fabsf(v[j]);
        qsort(mag, (size_t)cnt, sizeof *mag, cmp_float);
        int64_t k = (int64_t)(frac * (double)cnt);
        float thr = k > 0 ? mag[k - 1] : -1.0f;
        int64_t zeroed = 0;
        for (int64_t j = 0; j < cnt && zeroed < k; j++)
            if (fabsf(v[j]) <= thr) v[j] = 0.0f, zeroed++;
        printf("%-24s %9lld weights, %5.1f%% zeroed\n", p->name, (long long)cnt, 100.0 * (double)zeroed / (double)cnt);
        free(mag);
    }
    if (nnz_checkpoint_save_model(m, argv[2]) != NNZ_OK) {
        fprintf(stderr, "nnz_prune_magnitude: %s\n", nnz_last_error());
        return 1;
    }
    nnz_model_free(m);
    return 0;
}
