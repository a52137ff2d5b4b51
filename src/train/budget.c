/* Memory budgets (--memory-budget for nnz train and nnz eval): an estimate of the process's
 * peak resident memory at a batch size, made before the batch's buffers exist.
 *
 * need(batch) = resident  measured now (/proc/self/status VmRSS): code and libraries, the data
 *                         set, the weights and gradients, the optimizer state, an open checkpoint,
 *                         and whatever the allocator kept of freed memory
 *             + activations  the model's activation arena at this batch (nnz_model_activation_bytes:
 *                         activations, their gradients, pool indices, im2col/bf16 conv scratch)
 *             + buffers   the float batch(es), labels, logit gradients, the image orders
 *             + runtime   what the libraries touch while running (nn/budget.c, shared with nnz run:
 *                         OpenBLAS and OpenMP, threaded OpenBLAS's operand copies, bf16 packing,
 *                         the sparse formats, GMP's mask sort).
 * Every term is an upper bound; the activation arena is then capped at what the estimate gave
 * it, so an allocation past the estimate fails with a message instead of growing the process. */
#include "train/train.h"

#include <stdio.h>
#include <string.h>

static size_t round64(size_t b) { return (b + 63) & ~(size_t)63; }

nnz_status nnz_budget_need(nnz_model *m, int batch, const nnz_budget_shape *sh, nnz_mem_need *out) {
    memset(out, 0, sizeof *out);
    NNZ_TRY(nnz_model_activation_bytes(m, batch, &out->activations));
    /* measured after the probe: whatever the allocator kept of it counts */
    out->resident = nnz_resident_bytes();
    const size_t img = (size_t)m->in_h * m->in_w * m->in_c * sizeof(float);
    const size_t b = (size_t)batch;
    size_t buf = round64(b * img) + round64(b) + round64((size_t)sh->eval_n * 4); /* evaluation */
    if (sh->train)
        buf += round64(b * img) + round64(b) + round64(b * (size_t)m->num_classes * sizeof(float)) +
               round64((size_t)sh->train_n * 4);
    out->buffers = buf;
    out->runtime = nnz_budget_runtime_bytes(m, batch, sh->sparse, sh->pruning);
    out->total = out->resident + out->activations + out->buffers + out->runtime;
    return NNZ_OK;
}

typedef struct {
    nnz_model *m;
    const nnz_budget_shape *sh;
} need_ctx;

static nnz_status need_total(void *ctx, int batch, size_t *total) {
    need_ctx *c = ctx;
    nnz_mem_need need;
    NNZ_TRY(nnz_budget_need(c->m, batch, c->sh, &need));
    *total = need.total;
    return NNZ_OK;
}

nnz_status nnz_budget_largest_batch(nnz_model *m, int most, size_t budget, const nnz_budget_shape *sh, int *batch) {
    need_ctx c = {m, sh};
    return nnz_budget_largest(most, budget, need_total, &c, batch);
}

void nnz_budget_describe(const nnz_mem_need *n, char *buf, size_t len) {
    snprintf(buf, len,
             "%zu bytes: %zu resident before the batch (code, libraries, data set, weights, gradients, optimizer "
             "state), %zu for activations and scratch, %zu for the batch buffers, %zu for the BLAS/OpenMP runtime",
             n->total, n->resident, n->activations, n->buffers, n->runtime);
}
