/* An AlexNet .nnz for the per-layer batch planner experiment (scripts/alexnet-planner): the zoo's
 * alexnet (224x224x3, 1000 classes, random weights from the seed), each conv/linear weight pruned by
 * magnitude to Deep Compression's per-layer density (Han et al. 2016, Table 4: weights kept conv1
 * 84%, conv2 38%, conv3 35%, conv4 37%, conv5 37%, fc6 9%, fc7 9%, fc8 25%), then nnz_pack at the
 * paper's bits (conv 8, fc 5). Random weights, so only sizes and speeds mean anything.
 *
 *   nnz_alexnet_pack OUT.nnz [SEED (1)]
 *
 * Prints one line per layer (kept fraction) and the file size. The threshold of a layer is its
 * exact (1 - kept) quantile of |w| (a sorted copy of the layer's magnitudes). */
#include "nn/nn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

static const struct {
    const char *name;
    double kept;
} density[] = {{"conv1", 0.84}, {"conv2", 0.38}, {"conv3", 0.35}, {"conv4", 0.37},
               {"conv5", 0.37}, {"fc6", 0.09},   {"fc7", 0.09},   {"fc8", 0.25}};

int main(int argc, char **argv) {
    nnz_prefer_startup_env(argv); /* OpenBLAS on its best kernels, passive OpenMP */
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: nnz_alexnet_pack OUT.nnz [SEED]\n");
        return 2;
    }
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
    nnz_model *m = NULL;
    if (nnz_model_from_zoo("alexnet", 224, 224, 3, 1000, seed, &m) != NNZ_OK) {
        fprintf(stderr, "nnz_alexnet_pack: %s\n", nnz_last_error());
        return 1;
    }
    for (size_t d = 0; d < sizeof density / sizeof density[0]; d++) {
        int node = -1;
        for (int i = 0; i < m->n_nodes; i++)
            if (strcmp(m->nodes[i].name, density[d].name) == 0) node = i;
        if (node < 0 || m->nodes[node].weight < 0) {
            fprintf(stderr, "nnz_alexnet_pack: no layer %s\n", density[d].name);
            return 1;
        }
        nnz_param *p = &m->params[m->nodes[node].weight];
        const int64_t cnt = nnz_tensor_numel(&p->value);
        float *v = p->value.data, *mag = malloc((size_t)cnt * sizeof *mag);
        if (!mag) {
            fprintf(stderr, "nnz_alexnet_pack: out of memory\n");
            return 1;
        }
        for (int64_t j = 0; j < cnt; j++) mag[j] = fabsf(v[j]);
        qsort(mag, (size_t)cnt, sizeof *mag, cmp_float);
        const int64_t zero = cnt - (int64_t)llround(density[d].kept * (double)cnt);
        const float thr = zero > 0 ? mag[zero - 1] : -1.0f;
        int64_t zeroed = 0;
        for (int64_t j = 0; j < cnt && zeroed < zero; j++)
            if (fabsf(v[j]) <= thr) v[j] = 0.0f, zeroed++;
        printf("%-6s %9lld weights, %5.1f%% kept\n", density[d].name, (long long)cnt,
               100.0 * (double)(cnt - zeroed) / (double)cnt);
        free(mag);
    }
    nnz_pack_config pc;
    nnz_pack_config_init(&pc);
    pc.conv_bits = 8;
    pc.linear_bits = 5;
    nnz_pack_report rep;
    if (nnz_pack(m, argv[1], &pc, &rep) != NNZ_OK) {
        fprintf(stderr, "nnz_alexnet_pack: %s\n", nnz_last_error());
        return 1;
    }
    printf("%s: %lld bytes (fp32 %lld bytes, %.1fx smaller)\n", argv[1], (long long)rep.file_bytes,
           (long long)rep.fp32_bytes, (double)rep.fp32_bytes / (double)rep.file_bytes);
    nnz_pack_report_free(&rep);
    nnz_model_free(m);
    return 0;
}
