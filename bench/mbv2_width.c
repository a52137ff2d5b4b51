/* The channel-pruned baseline of the DepthShrinker comparison (docs/BENCHMARKS.md):
 * writes a fresh checkpoint of mbv2-tiny with every convolution's channel count scaled
 * by a width multiplier W (rounded to a multiple of 4, at least 4; the classifier keeps
 * its classes), with zeroed SGD state and the training recipe of the base model, so
 *   nnz_mbv2_width 0.5 w.safetensors && nnz train --resume w.safetensors --epochs 5
 * trains it from scratch exactly like `nnz train --model mbv2-tiny` would.
 * usage: nnz_mbv2_width W OUT [SEED]   (Fashion-MNIST-sized: 28x28x1, 10 classes) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/train.h"

static int scaled(int c, double w) {
    int r = (int)lround(c * w / 4.0) * 4;
    return r < 4 ? 4 : r;
}

int main(int argc, char **argv) {
    nnz_prefer_startup_env(argv); /* OpenBLAS on its best kernels, passive OpenMP */
    if (argc < 3) {
        fprintf(stderr, "usage: %s W OUT [SEED]\n", argv[0]);
        return 2;
    }
    const double w = atof(argv[1]);
    const uint64_t seed = argc > 3 ? strtoull(argv[3], NULL, 10) : 42;
    if (!(w > 0 && w <= 4)) {
        fprintf(stderr, "width multiplier %s must be in (0, 4]\n", argv[1]);
        return 2;
    }
    nnz_model *full = NULL, *m = NULL;
    if (nnz_zoo_build("mbv2-tiny", 28, 28, 1, 10, &full) != NNZ_OK) goto fail;
    if (nnz_model_create(28, 28, 1, &m) != NNZ_OK) goto fail;
    for (int i = 0; i < full->n_nodes; i++) {
        nnz_node n = full->nodes[i];
        if (n.op == NNZ_OP_CONV2D) {
            bool depthwise = n.groups > 1 && n.groups == n.out_ch;
            n.out_ch = scaled(n.out_ch, w);
            if (depthwise) n.groups = n.out_ch;
        }
        nnz_add_node(m, &n);
    }
    if (nnz_model_finalize(m, seed) != NNZ_OK) goto fail;

    nnz_train_config cfg; /* scripts/depthshrinker's base recipe */
    nnz_train_config_init(&cfg);
    cfg.lr = 0.1f;
    cfg.nesterov = true;
    cfg.label_smoothing = 0.1f;
    cfg.warmup_epochs = 0.5f;
    cfg.weight_decay = 5e-4f;
    cfg.epochs = 3;
    cfg.step_size_epochs = 1;
    cfg.seed = seed;
    char *config = NULL;
    nnz_optimizer opt;
    if (nnz_optimizer_init(&opt, m, NNZ_OPT_SGD, cfg.momentum, cfg.nesterov, cfg.weight_decay, false) != NNZ_OK)
        goto fail;
    if (nnz_train_config_to_json(&cfg, &config) != NNZ_OK) goto fail;
    nnz_ckpt_state st = {.seed = seed};
    nnz_status s = nnz_checkpoint_save(argv[2], m, &opt, &st, config);
    free(config);
    nnz_optimizer_free(&opt);
    if (s != NNZ_OK) goto fail;
    nnz_model_stats ms;
    nnz_model_get_stats(m, &ms);
    printf("mbv2-tiny x%g: %lld parameters, %.2f MFLOPs per image -> %s\n", w, (long long)ms.params,
           (double)ms.flops / 1e6, argv[2]);
    nnz_model_free(full);
    nnz_model_free(m);
    return 0;
fail:
    fprintf(stderr, "nnz_mbv2_width: %s\n", nnz_last_error());
    nnz_model_free(full);
    nnz_model_free(m);
    return 1;
}
