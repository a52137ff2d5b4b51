/* Benchmark: training-step and inference throughput on random data.
 * A training step is forward (train mode) + loss + zero_grad + backward + an
 * SGD step, as in nnz_train. Warm-up iterations (first-touch page faults,
 * thread start-up, caches) are excluded; the rate is the median of timed runs,
 * the protocol of bench/torch_bench.py (the peer), so both sides are measured
 * alike. GFLOP/s count forward = 1x the model's dense forward FLOPs and a
 * training step = 3x. The model is restored to its original weights, buffers and
 * dropout counter afterwards. */
#include "train/train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BENCH_WARMUP 2
#define BENCH_MAX_RUNS 1000

void nnz_bench_config_init(nnz_bench_config *c) {
    *c = (nnz_bench_config){.batch = 128, .runs = 5, .iters = 0, .min_time = 0.3, .seed = 42};
}

static nnz_status one_step(nnz_model *m, const float *x, const uint8_t *y, float *dlogits, int n, bool train,
                           nnz_optimizer *opt) {
    NNZ_TRY(nnz_model_forward(m, x, n, train));
    if (!train) return NNZ_OK;
    nnz_softmax_xent(n, m->num_classes, nnz_model_output(m), y, 0.0f, dlogits, NULL);
    nnz_model_zero_grad(m);
    NNZ_TRY(nnz_model_backward(m, x, n, dlogits));
    nnz_optimizer_step(opt, m, 1e-4f);
    return NNZ_OK;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Warm-up, then c->runs timed runs; *rate = the median run's images/s (the mean of the middle
 * two for an even count, as Python's statistics.median), *iters = steps per run. */
static nnz_status time_runs(nnz_model *m, const float *x, const uint8_t *y, float *dlogits,
                            const nnz_bench_config *c, bool train, nnz_optimizer *opt, double *rate, int *iters) {
    double t0 = nnz_now_sec();
    for (int it = 0; it < BENCH_WARMUP; it++) NNZ_TRY(one_step(m, x, y, dlogits, c->batch, train, opt));
    const double per = (nnz_now_sec() - t0) / BENCH_WARMUP;
    double want = c->iters > 0 ? c->iters : c->min_time / (per > 1e-9 ? per : 1e-9);
    *iters = want < 1 ? 1 : want > 1e6 ? 1000000 : (int)ceil(want);
    double rates[BENCH_MAX_RUNS];
    if (train && c->per_layer) NNZ_TRY(nnz_model_profile(m, true)); /* the timed steps only */
    for (int r = 0; r < c->runs; r++) {
        t0 = nnz_now_sec();
        for (int it = 0; it < *iters; it++) NNZ_TRY(one_step(m, x, y, dlogits, c->batch, train, opt));
        const double dt = nnz_now_sec() - t0;
        rates[r] = dt > 0 ? (double)c->batch * *iters / dt : 0;
    }
    if (train && c->per_layer) NNZ_TRY(nnz_model_profile(m, false));
    qsort(rates, (size_t)c->runs, sizeof rates[0], cmp_double);
    *rate = c->runs % 2 ? rates[c->runs / 2] : 0.5 * (rates[c->runs / 2 - 1] + rates[c->runs / 2]);
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

nnz_status nnz_bench_model(nnz_model *m, const nnz_bench_config *c, nnz_bench_result *out) {
    if (!m || !c || !out) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_bench_model: model, config and result are required");
    memset(out, 0, sizeof *out);
    const int batch = c->batch;
    const uint64_t seed = c->seed;
    if (batch < 1 || c->runs < 1 || c->runs > BENCH_MAX_RUNS || c->iters < 0 || !(c->min_time >= 0))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "benchmark batch (%d) and runs (%d, at most %d) must be at least 1, "
                        "iterations (%d) and the minimum run time (%g s) at least 0", batch, c->runs, BENCH_MAX_RUNS,
                        c->iters, c->min_time);
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

    double train_rate = 0, infer_rate = 0;
    s = time_runs(m, x, y, dlogits, c, true, &opt, &train_rate, &out->train_iters);
    /* Inference runs on the model's own weights: the training steps above filled a pruned
       checkpoint's zeros (no gradient mask keeps them), and the sparse kernels run on zeros. */
    restore_weights(m, saved, dropout_saved);
    if (s == NNZ_OK) s = time_runs(m, x, y, dlogits, c, false, NULL, &infer_rate, &out->infer_iters);
    restore_weights(m, saved, dropout_saved);
    if (s != NNZ_OK) goto done;

    out->batch = batch;
    out->runs = c->runs;
    out->threads = nnz_get_threads();
    out->train_images_per_sec = train_rate;
    out->infer_images_per_sec = infer_rate;
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
