/* Evaluation: accuracy and mean loss over a data set, in eval mode (batch norm
 * uses its running statistics, dropout is off), batched, in file order. */
#include "nn/nn.h"

#include <math.h>
#include <string.h>

nnz_status nnz_evaluate(nnz_model *m, const nnz_dataset *d, int batch, int limit, nnz_eval_result *out) {
    if (!m || !d || !out) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_evaluate: model, data and result are required");
    memset(out, 0, sizeof *out);
    if (batch < 1) return nnz_fail(NNZ_ERR_INVALID_ARG, "evaluation batch %d must be at least 1", batch);
    if (d->h != m->in_h || d->w != m->in_w || d->c != m->in_c)
        return nnz_fail(NNZ_ERR_INVALID_ARG,
                        "the data's images are %dx%dx%d but the model takes %dx%dx%d; evaluate it on the data set "
                        "it was trained for",
                        d->h, d->w, d->c, m->in_h, m->in_w, m->in_c);
    if (d->num_classes > m->num_classes)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "the data has %d classes but the model predicts only %d",
                        d->num_classes, m->num_classes);
    nnz_batcher b;
    NNZ_TRY(nnz_batcher_init(&b, d, limit, batch, false, false, 0));
    nnz_status s = nnz_model_reserve_inference(m, batch);
    size_t img = (size_t)d->h * d->w * d->c;
    float *x = s == NNZ_OK ? nnz_alloc(sizeof(float) * img * (size_t)batch, "an evaluation batch") : NULL;
    uint8_t *y = x ? nnz_alloc((size_t)batch, "evaluation labels") : NULL;
    if (s == NNZ_OK && !y) s = NNZ_ERR_NOMEM;
    double loss_sum = 0;
    int64_t correct = 0, seen = 0;
    double t0 = nnz_now_sec();
    for (int64_t i = 0; s == NNZ_OK && i < nnz_batcher_eval_steps(&b); i++) {
        int n = nnz_batcher_fill(&b, i, x, y);
        if ((s = nnz_model_forward(m, x, n, false)) != NNZ_OK) break;
        int ok = 0;
        float loss = nnz_softmax_xent(n, m->num_classes, nnz_model_output(m), y, 0.0f, NULL, &ok);
        loss_sum += (double)loss * n;
        correct += ok;
        seen += n;
    }
    double dt = nnz_now_sec() - t0;
    nnz_free(x);
    nnz_free(y);
    nnz_batcher_free(&b);
    if (s != NNZ_OK) return s;
    out->n = (int)seen;
    out->accuracy = seen ? (float)((double)correct / (double)seen) : 0.0f;
    out->loss = seen ? (float)(loss_sum / (double)seen) : 0.0f;
    out->images_per_sec = dt > 0 ? (double)seen / dt : 0.0;
    if (!isfinite(out->loss))
        return nnz_fail(NNZ_ERR_NUMERIC, "the evaluation loss is not finite: the model's weights hold NaN/Inf");
    return NNZ_OK;
}

/* any conv/linear weight holding a zero (the sparse kernels may run it) */
static bool has_zero_weights(const nnz_model *m) {
    if (m->sparse_format.kind == NNZ_SPARSE_DENSE) return false;
    for (int i = 0; i < m->n_nodes; i++) {
        int rows, cols;
        if (!nnz_node_weight_matrix(&m->nodes[i], &rows, &cols)) continue;
        const float *w = nnz_tensor_f32(&m->params[m->nodes[i].weight].value);
        for (int64_t j = 0; j < (int64_t)rows * cols; j++)
            if (w[j] == 0.0f) return true;
    }
    return false;
}

nnz_status nnz_evaluate_fit(nnz_model *m, const nnz_dataset *d, int limit, size_t budget, int *batch,
                            size_t *estimate) {
    if (!m || !d || !batch || *batch < 1 || budget == 0)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_evaluate_fit: a model, data, a batch >= 1 and a budget are required");
    if (estimate) *estimate = 0;
    nnz_budget_shape sh = {
        .eval_n = limit > 0 && limit < d->n ? limit : d->n,
        .sparse = has_zero_weights(m),
    };
    const int wanted = *batch;
    nnz_mem_need need;
    const size_t peak = nnz_peak_resident_bytes(); /* loading the model and the data */
    if (peak > budget)
        return nnz_fail(NNZ_ERR_NOMEM,
                        "loading the model and the data set already took the process to %zu bytes, over "
                        "--memory-budget %zu; raise --memory-budget",
                        peak, budget);
    int fits = wanted;
    NNZ_TRY(nnz_budget_need(m, wanted, &sh, &need));
    if (need.total > budget) NNZ_TRY(nnz_budget_largest_batch(m, wanted - 1, budget, &sh, &fits));
    if (fits < 1) {
        char what[512];
        nnz_budget_need(m, 1, &sh, &need);
        nnz_budget_describe(&need, what, sizeof what);
        return nnz_fail(NNZ_ERR_NOMEM,
                        "not even a batch of 1 fits --memory-budget %zu: it needs an estimated %s; raise "
                        "--memory-budget, or use fewer --threads",
                        budget, what);
    }
    if (fits != wanted) NNZ_TRY(nnz_budget_need(m, fits, &sh, &need));
    *batch = fits;
    if (estimate) *estimate = need.total > peak ? need.total : peak;
    /* the activations may use what the rest of the estimate leaves, no more */
    nnz_model_set_activation_limit(m, budget - (need.total - need.activations));
    return NNZ_OK;
}
