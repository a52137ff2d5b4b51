/* Batches from an nnz_dataset: per-epoch shuffle, normalization, augmentation.
 * Every choice is a pure function of (seed, epoch, image index), so a resumed
 * run sees exactly the batches an uninterrupted one would (see io.h). */
#include "io/io.h"

#include <string.h>

void nnz_data_norm(int c, float *mean, float *std) {
    static const float cifar_mean[3] = {0.4914f, 0.4822f, 0.4465f};
    static const float cifar_std[3] = {0.2470f, 0.2435f, 0.2616f};
    for (int i = 0; i < c; i++) {
        if (c == 1) {
            mean[i] = 0.2860f;
            std[i] = 0.3530f;
        } else if (c == 3) {
            mean[i] = cifar_mean[i];
            std[i] = cifar_std[i];
        } else {
            mean[i] = 0.5f;
            std[i] = 0.5f;
        }
    }
}

nnz_status nnz_batcher_init(nnz_batcher *b, const nnz_dataset *d, int limit, int batch, bool shuffle,
                            bool augment, uint64_t seed) {
    memset(b, 0, sizeof *b);
    if (!d || d->n <= 0 || !d->images || !d->labels)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "the data set is empty; check --data");
    if (d->c < 1 || d->c > 4)
        return nnz_fail(NNZ_ERR_UNSUPPORTED, "images with %d channels are not supported (1 to 4)", d->c);
    if (batch < 1) return nnz_fail(NNZ_ERR_INVALID_ARG, "batch size %d must be at least 1", batch);
    if (limit < 0) return nnz_fail(NNZ_ERR_INVALID_ARG, "image limit %d must be >= 0 (0 = all)", limit);
    b->data = d;
    b->n = (limit > 0 && limit < d->n) ? limit : d->n;
    b->batch = batch;
    b->shuffle = shuffle;
    b->augment = augment;
    b->seed = seed;
    nnz_data_norm(d->c, b->mean, b->std);
    b->order = nnz_alloc(sizeof(int32_t) * (size_t)b->n, "the epoch's image order");
    if (!b->order) return NNZ_ERR_NOMEM;
    b->epoch = -1;
    nnz_batcher_set_epoch(b, 0);
    return NNZ_OK;
}

void nnz_batcher_free(nnz_batcher *b) {
    nnz_free(b->order);
    b->order = NULL;
}

void nnz_batcher_set_epoch(nnz_batcher *b, int epoch) {
    if (b->epoch == epoch) return;
    for (int i = 0; i < b->n; i++) b->order[i] = i;
    if (b->shuffle) {
        nnz_rng r = nnz_rng_make(b->seed ^ NNZ_DATA_SHUFFLE_SALT, (uint64_t)epoch);
        nnz_rng_shuffle(&r, b->order, b->n);
    }
    b->epoch = epoch;
}

int64_t nnz_batcher_train_steps(const nnz_batcher *b) {
    if (b->n <= 0) return 0;
    int64_t s = b->n / b->batch;
    return s > 0 ? s : 1;
}

int64_t nnz_batcher_eval_steps(const nnz_batcher *b) { return ((int64_t)b->n + b->batch - 1) / b->batch; }

void nnz_data_image(const nnz_dataset *d, int index, const float *mean, const float *std, bool augment,
                    uint64_t seed, int epoch, float *out) {
    const int H = d->h, W = d->w, C = d->c;
    const uint8_t *img = d->images + (size_t)index * (size_t)H * W * C;
    float scale[4], shift[4];
    for (int c = 0; c < C; c++) {
        scale[c] = 1.0f / (255.0f * std[c]);
        shift[c] = -mean[c] / std[c];
    }
    int dy = 0, dx = 0;
    bool flip = false;
    if (augment) {
        nnz_rng r = nnz_rng_make(nnz_rng_hash(seed ^ NNZ_DATA_AUGMENT_SALT, (uint64_t)epoch), (uint64_t)index);
        dy = (int)nnz_rng_below(&r, 2 * NNZ_DATA_PAD + 1) - NNZ_DATA_PAD;
        dx = (int)nnz_rng_below(&r, 2 * NNZ_DATA_PAD + 1) - NNZ_DATA_PAD;
        flip = nnz_rng_below(&r, 2) == 1;
    }
    /* out(y, x) = padded(y + dy, x' + dx), x' = flipped x; outside the image is pixel 0. */
    for (int y = 0; y < H; y++) {
        int sy = y + dy;
        for (int x = 0; x < W; x++) {
            int sx = (flip ? W - 1 - x : x) + dx;
            float *o = out + ((size_t)y * W + x) * C;
            if (sy < 0 || sy >= H || sx < 0 || sx >= W) {
                for (int c = 0; c < C; c++) o[c] = shift[c];
            } else {
                const uint8_t *p = img + ((size_t)sy * W + sx) * C;
                for (int c = 0; c < C; c++) o[c] = (float)p[c] * scale[c] + shift[c];
            }
        }
    }
}

int nnz_batcher_fill(const nnz_batcher *b, int64_t i, float *x, uint8_t *y) {
    int64_t start = i * b->batch;
    if (i < 0 || start >= b->n) return 0;
    int count = (int)(b->n - start < b->batch ? b->n - start : b->batch);
    const nnz_dataset *d = b->data;
    size_t img = (size_t)d->h * d->w * d->c;
    /* Each image depends only on (seed, epoch, index): the result is the same for any thread count. */
#pragma omp parallel for schedule(static)
    for (int k = 0; k < count; k++) {
        int idx = b->order[start + k];
        nnz_data_image(d, idx, b->mean, b->std, b->augment, b->seed, b->epoch, x + (size_t)k * img);
        y[k] = d->labels[idx];
    }
    return count;
}
