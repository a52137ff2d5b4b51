/* libFuzzer target: the checkpoint reader end to end on arbitrary bytes (container,
 * nnz metadata, architecture JSON, every tensor against the architecture, the
 * optimizer state and the training config). The loader reads files, so each input
 * goes through one temp file of this process. */
#include "train/train.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char path[64];

static void remove_temp_file(void) { unlink(path); }

/* Hostile architectures may declare models up to the size policy's limit, and each
 * accepted one is built (weights initialised) per execution: a 256 KiB limit keeps an
 * execution cheap and fuzzes the limit's checks too. NNZ_SIZE_LIMIT set by the caller wins. */
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    setenv("NNZ_SIZE_LIMIT", "256K", 0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!path[0]) {
        /* in memory when the machine has /dev/shm: a disk file costs more than the parse */
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(path, sizeof path, "%s/nnz-fuzz-ckpt-%d.safetensors", dir, (int)getpid());
        atexit(remove_temp_file);
    }
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    if (size) fwrite(data, 1, size, f);
    fclose(f);
    nnz_checkpoint ck;
    if (nnz_checkpoint_open(path, &ck) != NNZ_OK) return 0;
    nnz_model *m = NULL;
    if (nnz_checkpoint_build_model(&ck, &m) == NNZ_OK) {
        nnz_optimizer opt;
        if (nnz_optimizer_init(&opt, m, NNZ_OPT_ADAMW, 0.9f, false, 0.0f, false) == NNZ_OK) {
            (void)nnz_checkpoint_load_optimizer(&ck, m, &opt);
            nnz_optimizer_free(&opt);
        }
        nnz_model_free(m);
    }
    if (ck.train_config_json) {
        nnz_train_config cfg;
        char model[64];
        nnz_train_config_init(&cfg);
        (void)nnz_train_config_from_json(ck.train_config_json, &cfg, model, sizeof model);
    }
    nnz_checkpoint_close(&ck);
    return 0;
}
