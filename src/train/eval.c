/* Evaluation: accuracy and mean loss over a data set, in eval mode (batch norm
 * uses its running statistics, dropout is off), batched, in file order. */
#include "train/train.h"

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
    nnz_status s = nnz_model_reserve(m, batch);
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
