/* Benchmark: training-step and inference throughput on random data.
 * A training step is forward (train mode) + loss + zero_grad + backward + an
 * SGD step, as in nnz_train. Warm-up iterations (first-touch page faults,
 * thread start-up, caches) are excluded. GFLOP/s count forward = 1x the model's
 * dense forward FLOPs and a training step = 3x. The model is restored to its
 * original weights, buffers and dropout counter afterwards. */
#include "train/train.h"

#include <string.h>

#define BENCH_WARMUP 2

static nnz_status time_loop(nnz_model *m, const float *x, const uint8_t *y, float *dlogits, int n, int iters,
                            bool train, nnz_optimizer *opt, double *seconds) {
    double t0 = 0;
    for (int it = 0; it < BENCH_WARMUP + iters; it++) {
        if (it == BENCH_WARMUP) t0 = nnz_now_sec();
        NNZ_TRY(nnz_model_forward(m, x, n, train));
        if (!train) continue;
        nnz_softmax_xent(n, m->num_classes, nnz_model_output(m), y, 0.0f, dlogits, NULL);
        nnz_model_zero_grad(m);
        NNZ_TRY(nnz_model_backward(m, x, n, dlogits));
        nnz_optimizer_step(opt, m, 1e-4f);
    }
    *seconds = nnz_now_sec() - t0;
    return NNZ_OK;
}

/* Puts back the weights and buffers saved before the timed loops; the next forward replans. */
static void restore_weights(nnz_model *m, const float *saved, nnz_rng dropout_saved) {
    size_t off = 0;
    for (int i = 0; i < m->n_params; i++) {
        size_t n = (size_t)nnz_tensor_numel(&m->params[i].value);
        memcpy(m->params[i].value.data, saved + off, n * sizeof(float));
        off += n;
    }
    m->dropout_rng = dropout_saved;
    m->sparse_planned = false;
    nnz_model_zero_grad(m);
}

nnz_status nnz_bench_model(nnz_model *m, int batch, int iters, uint64_t seed, nnz_bench_result *out) {
    if (!m || !out) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_bench_model: model and result are required");
    memset(out, 0, sizeof *out);
    if (batch < 1 || iters < 1)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "benchmark batch (%d) and iterations (%d) must be at least 1", batch,
                        iters);
    nnz_model_stats st;
    nnz_model_get_stats(m, &st);
    size_t img = (size_t)m->in_h * m->in_w * m->in_c, xs;
    if (!nnz_mul_size(img, (size_t)batch, &xs))
        return nnz_fail(NNZ_ERR_NOMEM, "benchmark batch %d is too large", batch);
    size_t total = 0;
    for (int i = 0; i < m->n_params; i++) total += (size_t)nnz_tensor_numel(&m->params[i].value);

    float *x = nnz_alloc(sizeof(float) * xs, "the benchmark batch");
    uint8_t *y = nnz_alloc((size_t)batch, "the benchmark labels");
    float *dlogits = nnz_alloc(sizeof(float) * (size_t)batch * (size_t)m->num_classes, "the benchmark gradients");
    float *saved = nnz_alloc(sizeof(float) * (total ? total : 1), "a copy of the weights");
    nnz_optimizer opt;
    memset(&opt, 0, sizeof opt);
    nnz_status s = (x && y && dlogits && saved) ? NNZ_OK : NNZ_ERR_NOMEM;
    if (s != NNZ_OK) goto done;
    nnz_rng r = nnz_rng_make(seed, 0xBE7C);
    for (size_t i = 0; i < xs; i++) x[i] = nnz_rng_normal(&r);
    for (int i = 0; i < batch; i++) y[i] = (uint8_t)nnz_rng_below(&r, (uint32_t)m->num_classes);
    /* Save the weights and buffers: the training steps change them. */
    size_t off = 0;
    for (int i = 0; i < m->n_params; i++) {
        size_t n = (size_t)nnz_tensor_numel(&m->params[i].value);
        memcpy(saved + off, m->params[i].value.data, n * sizeof(float));
        off += n;
    }
    nnz_rng dropout_saved = m->dropout_rng;
    if ((s = nnz_model_reserve(m, batch)) != NNZ_OK) goto done;
    if ((s = nnz_optimizer_init(&opt, m, NNZ_OPT_SGD, 0.9f, false, 0.0f, false)) != NNZ_OK) goto done;

    double t_train = 0, t_infer = 0;
    s = time_loop(m, x, y, dlogits, batch, iters, true, &opt, &t_train);
    /* Inference runs on the model's own weights: the training steps above filled a pruned
       checkpoint's zeros (no gradient mask keeps them), and the sparse kernels run on zeros. */
    restore_weights(m, saved, dropout_saved);
    if (s == NNZ_OK) s = time_loop(m, x, y, dlogits, batch, iters, false, NULL, &t_infer);
    restore_weights(m, saved, dropout_saved);
    if (s != NNZ_OK) goto done;

    double images = (double)batch * iters;
    out->batch = batch;
    out->iters = iters;
    out->threads = nnz_get_threads();
    out->train_images_per_sec = t_train > 0 ? images / t_train : 0;
    out->infer_images_per_sec = t_infer > 0 ? images / t_infer : 0;
    out->train_gflops = out->train_images_per_sec * 3.0 * (double)st.flops * 1e-9;
    out->infer_gflops = out->infer_images_per_sec * (double)st.flops * 1e-9;
done:
    nnz_optimizer_free(&opt);
    nnz_free(x);
    nnz_free(y);
    nnz_free(dlogits);
    nnz_free(saved);
    return s;
}
