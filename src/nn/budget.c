/* Memory budgets (--memory-budget of nnz train, nnz eval and nnz run): an estimate of a process's
 * peak resident memory at a batch size, made before the batch's buffers exist, and the largest
 * batch whose estimate fits (nnz_budget_largest). Every term is an upper bound; the activation
 * arena is then capped at what the estimate gave it, so an allocation past the estimate fails with
 * a message instead of growing the process.
 *
 *   resident     measured before the batch's buffers exist (/proc/self/status VmRSS, nnz.h): code
 *                and libraries, the data set, the weights and gradients, the optimizer state, an
 *                open checkpoint, and whatever the allocator kept of freed memory
 *   activations  the model's activation arena at this batch (nnz_model_activation_bytes:
 *                activations, and for training their gradients and pool indices, im2col/bf16
 *                conv scratch)
 *   buffers      what the verb alone holds: for training and evaluation (nnz_budget_need) the float
 *                batch(es), labels, logit gradients and image orders; nnz run (run/run.c) counts
 *                its layer-by-layer runner's buffers itself
 *   runtime      what the libraries touch while running (nnz_budget_runtime_bytes): OpenBLAS's
 *                packing buffers and OpenMP's thread stacks (a constant plus a share per thread,
 *                measured on lenet5/vgg8/mbv2-tiny with 1 and 2 threads and rounded up), the bf16
 *                GEMM's packing or split-K partials (or, emulated, its rounded fp32 operand copies),
 *                threaded OpenBLAS's copy of a tall GEMM's left operand, with masks or pruning the
 *                sparse formats (up to three times the weights) and the sparse kernels' partial sums
 *                and row buffers, and with GMP a magnitude mask's sort (40 bytes per weight of the
 *                largest layer). */
#include "nn/nn.h"

#include <stdio.h>
#include <string.h>

#define MIB ((size_t)1 << 20)
/* OpenBLAS's and OpenMP's runtime memory: measured peaks minus the other terms were at most
 * 9 MiB with 1 thread and 11 MiB with 2 */
#define RUNTIME_BASE (12 * MIB)

static size_t round64(size_t b) { return (b + 63) & ~(size_t)63; }

static size_t weight_bytes(const nnz_model *m) {
    size_t b = 0;
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].trainable) b += (size_t)nnz_tensor_numel(&m->params[i].value) * sizeof(float);
    return b;
}

/* Elements of the largest conv/linear weight matrix. */
static size_t largest_weight_matrix(const nnz_model *m) {
    size_t largest = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        int rows, cols;
        if (nnz_node_weight_matrix(&m->nodes[i], &rows, &cols) && (size_t)rows * cols > largest)
            largest = (size_t)rows * cols;
    }
    return largest;
}

/* The most floats one emulated bf16 GEMM copies (its two operands, rounded), over the layers. */
static size_t bf16_emulation_floats(const nnz_model *m, int batch) {
    size_t most = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        const nnz_node *n = &m->nodes[i];
        if (n->op != NNZ_OP_CONV2D && n->op != NNZ_OP_LINEAR) continue;
        size_t rows = (size_t)batch * (n->op == NNZ_OP_CONV2D ? (size_t)n->h * n->w : 1);
        size_t k = n->op == NNZ_OP_CONV2D ? (size_t)n->k * n->k * (size_t)(n->in_c / (n->groups > 0 ? n->groups : 1))
                                          : (size_t)n->in_c * n->in_h * n->in_w;
        size_t oc = (size_t)n->out_ch;
        size_t f = rows * (k + oc) + oc * k; /* forward, data and weight gradient: rows x (k or oc) + weight */
        if (f > most) most = f;
    }
    return most;
}

/* threaded OpenBLAS's copy of the largest left GEMM operand of nodes [first, last] at batch */
static size_t operand_copy_bytes(const nnz_model *m, int first, int last, int batch) {
    size_t most = 0;
    for (int i = first; i <= last; i++) {
        const nnz_node *n = &m->nodes[i];
        size_t b = 0;
        if (n->op == NNZ_OP_CONV2D) { /* nnz run convolves one image at a time */
            nnz_conv_shape s;
            if (nnz_conv_shape_init(&s, 1, n->in_h, n->in_w, n->in_c, n->out_ch, n->k, n->k, n->stride, n->pad,
                                    n->groups) == NNZ_OK)
                b = nnz_conv2d_forward_scratch_floats(&s) * sizeof(float);
        } else if (n->op == NNZ_OP_LINEAR) {
            b = (size_t)batch * n->in_h * n->in_w * n->in_c * sizeof(float);
        }
        if (b > most) most = b;
    }
    return most;
}

size_t nnz_budget_runtime_range_bytes(const nnz_model *m, int first, int last, int batch) {
    const size_t threads = (size_t)nnz_threads();
    size_t b = RUNTIME_BASE + threads * NNZ_BUDGET_THREAD_BYTES;
    if (threads > 1) b += operand_copy_bytes(m, first, last, batch);
    return b;
}

size_t nnz_budget_runtime_bytes(const nnz_model *m, int batch, bool sparse, bool pruning) {
    const size_t threads = (size_t)nnz_threads();
    size_t b = RUNTIME_BASE + threads * NNZ_BUDGET_THREAD_BYTES;
    if (threads > 1) {
        /* threaded OpenBLAS packs a tall GEMM's whole left operand (up to about the im2col columns
         * of a chunk, or a linear layer's batch of inputs) into its per-thread buffers */
        size_t most = nnz_model_conv_scratch_bytes(m, batch);
        for (int i = 0; i < m->n_nodes; i++) {
            const nnz_node *n = &m->nodes[i];
            size_t in = (size_t)batch * n->in_h * n->in_w * n->in_c * sizeof(float);
            if (n->op == NNZ_OP_LINEAR && in > most) most = in;
        }
        b += most;
    }
    if (m->compute == NNZ_BF16) {
        if (nnz_gemm_bf16_has_native())
            b += round64(nnz_gemm_bf16_native_bytes((int)threads)); /* packing, or a split K's partials */
        else
            b += bf16_emulation_floats(m, batch) * sizeof(float) + 2 * 64;
    }
    if (sparse) {
        /* the sparse formats: W, W^T and the turned-window copy of a conv's data gradient (each at
         * most the weights); one call at a time, the buffer-free SDDMM's 8 partial sums of the
         * largest layer's values and each thread's im2col rows (SpMM's and SDDMM's, 512 KB each) */
        b += 3 * weight_bytes(m) + 8 * largest_weight_matrix(m) * sizeof(float) + threads * 2 * MIB;
    }
    if (sparse && m->compute == NNZ_BF16) { /* the bf16 SDDMM's staging, the largest layer's (one call at a time) */
        size_t most = 0;
        for (int i = 0; i < m->n_nodes; i++) {
            int rows, cols;
            if (nnz_node_weight_matrix(&m->nodes[i], &rows, &cols) && nnz_sddmm_bf16_staging_bytes(rows, cols) > most)
                most = nnz_sddmm_bf16_staging_bytes(rows, cols);
        }
        b += most;
    }
    if (pruning) {
        /* making a magnitude mask of the largest layer (GMP's pruning steps): 16-byte scored
         * candidates, the sort's copy of them and the mask byte, per weight */
        b += 40 * largest_weight_matrix(m);
    }
    return b;
}

nnz_status nnz_budget_largest(int most, size_t budget, nnz_budget_need_fn need, void *ctx, int *batch) {
    *batch = 0;
    int lo = 0, hi = most; /* need(lo) fits (lo = 0: none known), need(hi + 1) does not */
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        size_t total = 0;
        NNZ_TRY(need(ctx, mid, &total));
        if (total <= budget) lo = mid;
        else hi = mid - 1;
    }
    *batch = lo;
    return NNZ_OK;
}

nnz_status nnz_budget_need(nnz_model *m, int batch, const nnz_budget_shape *sh, nnz_mem_need *out) {
    memset(out, 0, sizeof *out);
    NNZ_TRY(nnz_model_activation_bytes(m, batch, sh->train, &out->activations));
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
