/* Sparse layers: which conv (groups == 1) and linear layers run on the sparse kernels, in which
 * format, and why; their masks; keeping the sparse matrices in step with the dense weights.
 *
 * The dense weight is the master copy and its zeros are the mask: a layer is sparse because its
 * weight holds zeros (pruned, or masked at initialization), so checkpoints need nothing new.
 * Training keeps them zero when m->grad_mask is set (the gradients of zero weights are
 * dropped: SGD momentum, weight decay and AdamW then leave them at exactly zero).
 *
 * The choice ("auto"): for each candidate format, the stored elements (kept blocks x block
 * size) divided by the kernel's efficiency relative to the dense GEMM (SPARSE_EFFICIENCY,
 * measured by bench/spmm) estimate its time as a fraction of the dense GEMM's; the fastest
 * estimate wins, and the layer stays dense unless the winner is estimated at least
 * SPARSE_MIN_GAIN times faster. Where the dense layer runs Winograd, dense is Winograd's cost and
 * winograd:16x16 (Winograd over the kept channel blocks) is a candidate too. A forced format
 * ("csr", "bsr:RxC", "winograd:16x16": bsr:16x16 on layers without Winograd) applies to every
 * layer with at least one zero weight; "dense" turns the sparse kernels off. */
#include "nn/nn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Kernel speed per stored element relative to dense fp32 GEMM (OpenBLAS), averaged over the
 * three products of a training step and rounded down: bench/spmm on the project's 2-core
 * AVX-512 machine (docs/BENCHMARKS.md, "Sparse kernels (FP32)") measured about 1.4-1.9 for
 * 16x16/16x32, 1.1 for 8x8/4x4 and 0.45 for CSR at 90% sparsity, and less at 50% (fixed costs). */
static const struct { int r, c; double efficiency; } SPARSE_EFFICIENCY[] = {
    {16, 32, 1.0}, {16, 16, 0.9}, {8, 8, 0.7}, {4, 4, 0.6}, {1, 4, 0.4}, {1, 1, 0.3},
};
#define SPARSE_MIN_GAIN 1.25
/* Convolutions that run Winograd when dense (conv2d.c): their dense time relative to the direct
 * GEMM the efficiencies above are measured against (Winograd ran 1.7-2.7x faster than the implicit
 * GEMM on lenet5's and vgg8's layers, docs/perf-notes.md), and the share of it in the transforms,
 * which a channel-block sparse Winograd layer (format winograd:16x16) still pays while its products
 * shrink to the kept blocks: fitted to vgg8's 90% channel-block layers, whose forward ran 0.75-0.8x
 * the time of BSR 16x16 on the same weights (docs/BENCHMARKS.md, "Sparse Winograd"). */
#define WINOGRAD_DENSE_COST 0.45
#define WINOGRAD_TRANSFORM_SHARE 0.1
#define WINOGRAD_BLOCK_EFFICIENCY 0.9
/* auto leaves smaller weights dense: bench/spmm measured the sparse kernels below dense on
 * mbv2-tiny's 1x1 convolutions (a few nonzeros per row), where the dense path is the
 * packing-free small GEMM */
#define SPARSE_MIN_WEIGHTS 16384

nnz_status nnz_sparse_format_parse(const char *text, nnz_sparse_format *out) {
    nnz_sparse_format f = {.kind = NNZ_SPARSE_AUTO};
    int r = 0, c = 0, used = 0;
    if (!text) return nnz_fail(NNZ_ERR_INVALID_ARG, "no sparse format given");
    if (strcmp(text, "auto") == 0) f.kind = NNZ_SPARSE_AUTO;
    else if (strcmp(text, "dense") == 0) f.kind = NNZ_SPARSE_DENSE;
    else if (strcmp(text, "csr") == 0) f = (nnz_sparse_format){.kind = NNZ_SPARSE_FORCED, .r = 1, .c = 1};
    else if (strcmp(text, "winograd:16x16") == 0)
        f = (nnz_sparse_format){.kind = NNZ_SPARSE_FORCED, .r = NNZ_CHANNEL_BLOCK, .c = NNZ_CHANNEL_BLOCK, .winograd = true};
    else if (sscanf(text, "bsr:%dx%d%n", &r, &c, &used) == 2 && text[used] == '\0' && nnz_sparse_block_supported(r, c))
        f = (nnz_sparse_format){.kind = NNZ_SPARSE_FORCED, .r = r, .c = c};
    else
        return nnz_fail(NNZ_ERR_INVALID_ARG,
                        "unknown sparse format '%s': use auto, dense, csr, bsr:RxC with R in 1,4,8,16,32 and C in "
                        "4,8,16,32 (e.g. bsr:16x16), or winograd:16x16", text);
    *out = f;
    return NNZ_OK;
}

void nnz_sparse_format_name(const nnz_sparse_format *f, char *buf, size_t len) {
    if (f->kind == NNZ_SPARSE_AUTO) snprintf(buf, len, "auto");
    else if (f->kind == NNZ_SPARSE_DENSE) snprintf(buf, len, "dense");
    else if (f->r == 1 && f->c == 1) snprintf(buf, len, "csr");
    else snprintf(buf, len, "%s:%dx%d", f->winograd ? "winograd" : "bsr", f->r, f->c);
}

void nnz_sparse_plan_format_name(const nnz_sparse_plan *p, char *buf, size_t len) {
    const nnz_sparse_format f = {.kind = p->r ? NNZ_SPARSE_FORCED : NNZ_SPARSE_DENSE, .r = p->r, .c = p->c,
                                 .winograd = p->winograd};
    nnz_sparse_format_name(&f, buf, len);
}

/* A conv node whose dense products run Winograd at the model's precision (conv2d.c decides) */
static bool node_runs_winograd(const nnz_model *m, const nnz_node *n) {
    nnz_conv_shape s;
    if (n->op != NNZ_OP_CONV2D ||
        nnz_conv_shape_init(&s, 1, n->in_h, n->in_w, n->in_c, n->out_ch, n->k, n->k, n->stride, n->pad, n->groups) != NNZ_OK)
        return false;
    s.compute = m->compute;
    s.direct = m->conv_direct;
    return nnz_conv2d_winograd_applies(&s);
}

/* The kept 16x16 (output, input) channel blocks of a conv weight W (OC, taps, IC): a block is kept
 * when any of its weights is nonzero at any tap. kept: nob x nib flags, or NULL; area (or NULL): the
 * weights the kept blocks hold, tail blocks partial; returns the count. */
static int64_t channel_blocks(const nnz_node *n, const float *W, uint8_t *kept, int64_t *area) {
    const int OC = n->out_ch, IC = n->in_c, taps = n->k * n->k, B = NNZ_CHANNEL_BLOCK;
    const int nob = (OC + B - 1) / B, nib = (IC + B - 1) / B;
    int64_t count = 0;
    for (int ob = 0; ob < nob; ob++)
        for (int ib = 0; ib < nib; ib++) {
            bool any = false;
            for (int oc = ob * B; oc < OC && oc < ob * B + B && !any; oc++)
                for (int t = 0; t < taps && !any; t++) {
                    const float *w = W + ((int64_t)oc * taps + t) * IC;
                    for (int ic = ib * B; ic < IC && ic < ib * B + B; ic++)
                        if (w[ic] != 0.0f) {
                            any = true;
                            break;
                        }
                }
            if (kept) kept[ob * nib + ib] = any;
            count += any;
            if (area && any)
                *area += (int64_t)(OC - ob * B < B ? OC - ob * B : B) * (IC - ib * B < B ? IC - ib * B : B) * taps;
        }
    return count;
}

/* The lists of sw->by_out / by_in from W's kept channel blocks */
static nnz_status channel_block_lists(const nnz_node *n, const float *W, nnz_sparse_weight *sw) {
    const int B = NNZ_CHANNEL_BLOCK, nob = (n->out_ch + B - 1) / B, nib = (n->in_c + B - 1) / B;
    uint8_t *kept = nnz_alloc((size_t)nob * nib, "a layer's channel blocks");
    if (!kept) return NNZ_ERR_NOMEM;
    const int64_t nk = channel_blocks(n, W, kept, NULL);
    sw->blocks = nnz_alloc(sizeof(int32_t) * (size_t)(nob + 1 + nib + 1 + 2 * nk), "a layer's channel block lists");
    if (!sw->blocks) {
        nnz_free(kept);
        return NNZ_ERR_NOMEM;
    }
    int32_t *optr = sw->blocks, *oidx = optr + nob + 1, *iptr = oidx + nk, *iidx = iptr + nib + 1;
    optr[0] = iptr[0] = 0;
    for (int ob = 0; ob < nob; ob++) {
        optr[ob + 1] = optr[ob];
        for (int ib = 0; ib < nib; ib++)
            if (kept[ob * nib + ib]) oidx[optr[ob + 1]++] = ib;
    }
    for (int ib = 0; ib < nib; ib++) {
        iptr[ib + 1] = iptr[ib];
        for (int ob = 0; ob < nob; ob++)
            if (kept[ob * nib + ib]) iidx[iptr[ib + 1]++] = ob;
    }
    nnz_free(kept);
    sw->by_out = (nnz_channel_blocks){optr, oidx, iptr, iidx};
    sw->by_in = nnz_channel_blocks_turned(&sw->by_out);
    return NNZ_OK;
}

bool nnz_node_weight_matrix(const nnz_node *n, int *rows, int *cols) {
    if (n->op == NNZ_OP_LINEAR) {
        *rows = n->out_ch, *cols = n->in_c;
        return true;
    }
    if (n->op == NNZ_OP_CONV2D && n->groups == 1) {
        *rows = n->out_ch, *cols = n->k * n->k * n->in_c;
        return true;
    }
    return false;
}

static void sparse_weight_free(nnz_sparse_weight *sw) {
    if (!sw) return;
    nnz_spmat_free(&sw->mat);
    nnz_spmat_turned_free(&sw->turned);
    nnz_free(sw->dval);
    nnz_free(sw->blocks);
    nnz_free(sw);
}

void nnz_model_sparse_clear(nnz_model *m) {
    if (m->sparse)
        for (int i = 0; i < m->n_nodes; i++) sparse_weight_free(m->sparse[i]);
    free(m->sparse);
    free(m->sparse_plan);
    m->sparse = NULL;
    m->sparse_plan = NULL;
    m->sparse_planned = false;
}

/* Decides node i's format into plan (and its reason); r = c = 0: dense. One pass over W
 * (nnz_sparse_measure_ladder counts every candidate block at once): AutoSparse training
 * (m->train_sparse) decides every step from that step's w~, so the decision depends on the
 * weights only, never on earlier steps (a resumed run decides as the uninterrupted one). */
static nnz_status decide(const nnz_model *m, const nnz_node *n, int rows, int cols, const float *W,
                         nnz_sparse_plan *plan) {
    int64_t ladder[NNZ_SPARSE_LADDER_N];
    NNZ_TRY(nnz_sparse_measure_ladder(rows, cols, W, cols, ladder));
    const double elems = (double)rows * cols;
    plan->density = rows && cols ? (double)ladder[0] / elems : 0.0;
    plan->r = plan->c = 0;
    plan->winograd = false;
    plan->speedup = 1.0;
    const nnz_sparse_format *f = &m->sparse_format;
    if (ladder[0] == (int64_t)rows * cols) {
        snprintf(plan->why, sizeof plan->why, "no zero weights");
        return NNZ_OK;
    }
    if (f->kind == NNZ_SPARSE_DENSE) {
        snprintf(plan->why, sizeof plan->why, "sparse kernels off (--sparse-format dense)");
        return NNZ_OK;
    }
    const bool winograd = node_runs_winograd(m, n);
    const int B = NNZ_CHANNEL_BLOCK;
    /* the kept channel blocks' share of all of them, and the weights they hold */
    int64_t block_area = 0;
    const double block_share = winograd ? (double)channel_blocks(n, W, NULL, &block_area) /
                                              ((double)((n->out_ch + B - 1) / B) * ((n->in_c + B - 1) / B))
                                        : 1.0;
    const double winograd_fill = block_area > 0 ? (double)ladder[0] / (double)block_area : 0.0;
    if (f->kind == NNZ_SPARSE_FORCED) {
        nnz_sparse_stats st;
        NNZ_TRY(nnz_sparse_measure(rows, cols, W, cols, NULL, f->r, f->c, &st));
        plan->r = f->r, plan->c = f->c, plan->block_fill = st.block_fill;
        plan->winograd = f->winograd && winograd;
        if (plan->winograd) plan->block_fill = winograd_fill;
        snprintf(plan->why, sizeof plan->why, f->winograd && !winograd ? "forced (--sparse-format; no Winograd here: bsr)"
                                                                       : "forced (--sparse-format)");
        return NNZ_OK;
    }
    if ((int64_t)rows * cols < SPARSE_MIN_WEIGHTS) {
        snprintf(plan->why, sizeof plan->why, "%.1f%% zeros, but %dx%d is too small for the sparse kernels to pay",
                 100.0 * (1.0 - plan->density), rows, cols);
        return NNZ_OK;
    }
    if (!nnz_sparse_kernels_simd()) {
        snprintf(plan->why, sizeof plan->why, "this CPU has no SIMD sparse kernels (AVX2/AVX-512): dense is faster");
        return NNZ_OK;
    }
    /* times relative to the direct dense GEMM; the dense layer's own is Winograd's where it runs it */
    const double dense = winograd ? WINOGRAD_DENSE_COST : 1.0;
    double best = dense;
    if (winograd) {
        best = WINOGRAD_DENSE_COST *
               (WINOGRAD_TRANSFORM_SHARE + (1.0 - WINOGRAD_TRANSFORM_SHARE) * block_share / WINOGRAD_BLOCK_EFFICIENCY);
        if (best < dense) {
            plan->r = plan->c = B, plan->winograd = true;
            plan->block_fill = winograd_fill;
        } else
            best = dense;
    }
    for (size_t k = 0; k < sizeof SPARSE_EFFICIENCY / sizeof SPARSE_EFFICIENCY[0]; k++) {
        const int r = SPARSE_EFFICIENCY[k].r, c = SPARSE_EFFICIENCY[k].c;
        int64_t nblocks = -1;
        for (int q = 0; q < NNZ_SPARSE_LADDER_N; q++)
            if (NNZ_SPARSE_LADDER[q][0] == r && NNZ_SPARSE_LADDER[q][1] == c) nblocks = ladder[q];
        if (nblocks < 0) { /* a block the ladder does not count */
            nnz_sparse_stats st;
            NNZ_TRY(nnz_sparse_measure(rows, cols, W, cols, NULL, r, c, &st));
            nblocks = st.nblocks;
        }
        const double stored = (double)nblocks * r * c / elems;
        const double t = stored / SPARSE_EFFICIENCY[k].efficiency;
        if (t < best) {
            best = t;
            plan->r = r, plan->c = c, plan->winograd = false;
            plan->block_fill = nblocks ? (double)ladder[0] / ((double)nblocks * r * c) : 0.0;
        }
    }
    char name[24];
    if (best * SPARSE_MIN_GAIN > dense) {
        plan->r = plan->c = 0, plan->winograd = false;
        snprintf(plan->why, sizeof plan->why, "%.1f%% zeros: no sparse format is estimated %.2fx faster than dense%s",
                 100.0 * (1.0 - plan->density), SPARSE_MIN_GAIN, winograd ? " Winograd" : "");
        return NNZ_OK;
    }
    nnz_sparse_plan_format_name(plan, name, sizeof name);
    if (best <= 0) { /* no nonzero at all: no ratio to estimate, the product is skipped */
        plan->speedup = INFINITY;
        snprintf(plan->why, sizeof plan->why, "%s: every weight is zero, so the layer's product is skipped", name);
        return NNZ_OK;
    }
    plan->speedup = dense / best;
    snprintf(plan->why, sizeof plan->why, "%s: block fill %.2f, estimated %.1fx faster than dense%s", name,
             plan->block_fill, plan->speedup, winograd ? " Winograd" : "");
    return NNZ_OK;
}

/* compute NNZ_BF16: which products of the layer run the bf16 sparse kernels, decided per layer
 * from the paths that exist for its block on this CPU (SIMD ones only: the references are
 * single-threaded), written into the layer's reason:
 *   forward, backward-data (on W^T, whose block is c x r) and SDDMM all have one: training and
 *     inference run all three in bf16 (sw->bf16_train);
 *   the forward only: inference runs it in bf16, training stays on the fp32 kernels;
 *   none (CSR, or a CPU without AVX512-BF16): fp32 kernels.
 * The bf16 values are packed when a pass of this plan uses them: a plan made by a training
 * forward (AutoSparse replans every step) leaves forward-only layers unpacked, and the next
 * bf16 eval forward replans (model_exec.c, prepare_sparse). */
static nnz_status plan_bf16(nnz_sparse_weight *sw, nnz_sparse_plan *plan, bool train) {
    const size_t len = strlen(plan->why);
    nnz_spmat *mat = &sw->mat;
    /* the paths take the orientations' shapes; val_bf16 is only checked by applies(), so ask
     * with a stand-in pointer before deciding to pack */
    nnz_bsr fwd = mat->fwd, tr = mat->tr;
    uint16_t stand_in = 0;
    fwd.val_bf16 = tr.val_bf16 = &stand_in;
    const nnz_spmm_bf16_path pf = nnz_spmm_bf16_path_for(&fwd), pb = nnz_spmm_bf16_path_for(&tr),
                             pw = nnz_sddmm_bf16_path_for(&mat->fwd);
    if (pf == NNZ_SPMM_BF16_REF) {
        snprintf(plan->why + len, sizeof plan->why - len, "; fp32 kernels (no bf16 SpMM for it here)");
        return NNZ_OK;
    }
    sw->bf16_train = pb != NNZ_SPMM_BF16_REF && pw != NNZ_SPMM_BF16_REF;
    /* On an AMX host the bf16 backward-data (no AMX kernel: W^T's blocks need a second tile
     * configuration) runs on avx512bf16, and the whole step measured slower than the fp32 sparse
     * kernels there (Sapphire Rapids, vgg8, 90% 16x32 blocks: 0.4-0.65x, docs/BENCHMARKS.md) */
    const bool amx_host_slow = sw->bf16_train && nnz_isa_active() == NNZ_ISA_AMX && pb != NNZ_SPMM_BF16_AMX;
    if (amx_host_slow) sw->bf16_train = false;
    if (amx_host_slow)
        snprintf(plan->why + len, sizeof plan->why - len, "; inference fwd in bf16 (%s), training fp32 (on AMX the "
                 "bf16 backward-data runs on %s, slower than the fp32 kernels)", nnz_spmm_bf16_path_name(pf),
                 nnz_spmm_bf16_path_name(pb));
    else if (sw->bf16_train)
        snprintf(plan->why + len, sizeof plan->why - len, "; bf16 training and inference (fwd %s, bwd-data %s, "
                 "SDDMM %s)", nnz_spmm_bf16_path_name(pf), nnz_spmm_bf16_path_name(pb), nnz_spmm_bf16_path_name(pw));
    else
        snprintf(plan->why + len, sizeof plan->why - len, "; inference fwd in bf16 (%s), training fp32 (no bf16 %s "
                 "for it here)", nnz_spmm_bf16_path_name(pf), pb == NNZ_SPMM_BF16_REF ? "backward-data" : "SDDMM");
    if (sw->bf16_train || !train) NNZ_TRY(nnz_spmat_pack_bf16(mat));
    return NNZ_OK;
}

/* Node i's decision and, when sparse, its matrix. */
static nnz_status plan_node(nnz_model *m, int i, bool train) {
    const nnz_node *n = &m->nodes[i];
    nnz_sparse_plan *plan = &m->sparse_plan[i];
    int rows, cols;
    if (!nnz_node_weight_matrix(n, &rows, &cols)) return NNZ_OK;
    const float *W = nnz_tensor_f32(&m->params[n->weight].value);
    NNZ_TRY(decide(m, n, rows, cols, W, plan));
    if (!plan->r) return NNZ_OK;
    nnz_sparse_weight *sw = nnz_calloc(sizeof *sw, "a sparse layer");
    if (!sw) return NNZ_ERR_NOMEM;
    m->sparse[i] = sw;
    if (plan->winograd) { /* the dense weight's kept blocks: no sparse matrix, no values to refresh */
        nnz_sparse_plan_format_name(plan, sw->format, sizeof sw->format);
        return channel_block_lists(n, W, sw);
    }
    NNZ_TRY(nnz_spmat_from_dense(rows, cols, W, cols, NULL, plan->r, plan->c, &sw->mat));
    sw->dval = nnz_alloc((size_t)(nnz_spmat_val_count(&sw->mat) ? nnz_spmat_val_count(&sw->mat) : 1) * sizeof(float),
                         "a sparse layer's gradient");
    if (!sw->dval) return NNZ_ERR_NOMEM;
    /* the turned matrix's blocks are c x r: only c >= 16 runs on nnz_spmm_conv_f32's register tiles */
    if (train && n->op == NNZ_OP_CONV2D && n->stride == 1 && n->pad < n->k && plan->c >= 16) {
        const nnz_status st = nnz_spmat_turned_build(&sw->mat, n->k * n->k, n->in_c, &sw->turned);
        if (st != NNZ_OK && st != NNZ_ERR_UNSUPPORTED) return st; /* unsupported: col2im's data gradient */
    }
    nnz_sparse_plan_format_name(plan, sw->format, sizeof sw->format);
    if (m->compute == NNZ_BF16) NNZ_TRY(plan_bf16(sw, plan, train));
    return NNZ_OK;
}

nnz_status nnz_model_sparse_plan(nnz_model *m, bool train) {
    nnz_model_sparse_clear(m);
    m->sparse = calloc((size_t)m->n_nodes, sizeof *m->sparse);
    m->sparse_plan = calloc((size_t)m->n_nodes, sizeof *m->sparse_plan);
    if (!m->sparse || !m->sparse_plan) return nnz_fail(NNZ_ERR_NOMEM, "out of memory planning sparse layers");
    for (int i = 0; i < m->n_nodes; i++) NNZ_TRY(plan_node(m, i, train));
    m->sparse_planned = true;
    m->sparse_planned_train = train;
    return NNZ_OK;
}

void nnz_model_sparse_refresh(nnz_model *m) {
    if (!m->sparse) return;
    for (int i = 0; i < m->n_nodes; i++)
        if (m->sparse[i] && !m->sparse[i]->blocks) {
            const nnz_node *n = &m->nodes[i];
            nnz_spmat_load_values(&m->sparse[i]->mat, nnz_tensor_f32(&m->params[n->weight].value),
                                  m->sparse[i]->mat.fwd.cols, NULL);
        }
}

void nnz_model_mask_grads(nnz_model *m) {
    for (int i = 0; i < m->n_nodes; i++) {
        const nnz_node *n = &m->nodes[i];
        if (n->op != NNZ_OP_CONV2D && n->op != NNZ_OP_LINEAR) continue;
        const nnz_param *p = &m->params[n->weight];
        const float *W = nnz_tensor_f32(&p->value);
        const int64_t count = nnz_tensor_numel(&p->value);
        for (int64_t k = 0; k < count; k++)
            if (W[k] == 0.0f) p->grad[k] = 0.0f;
    }
}

nnz_status nnz_model_set_sparse_format(nnz_model *m, const char *format) {
    nnz_sparse_format f;
    NNZ_TRY(nnz_sparse_format_parse(format, &f));
    m->sparse_format = f;
    m->sparse_planned = false;
    return NNZ_OK;
}

nnz_status nnz_model_apply_mask(nnz_model *m, const char *layer, const uint8_t *mask, int64_t n) {
    char name[NNZ_NAME_MAX + 16];
    snprintf(name, sizeof name, "%s.weight", layer ? layer : "");
    const int w = nnz_model_find_param(m, name);
    if (w < 0 || (m->nodes[m->params[w].node].op != NNZ_OP_CONV2D && m->nodes[m->params[w].node].op != NNZ_OP_LINEAR))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "no conv or linear layer named '%s'", layer ? layer : "(null)");
    nnz_tensor *t = &m->params[w].value;
    if (!mask || n != nnz_tensor_numel(t))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "the mask for '%s' has %lld entries, its weight %lld", layer,
                        (long long)n, (long long)nnz_tensor_numel(t));
    float *W = nnz_tensor_f32(t);
    for (int64_t k = 0; k < n; k++)
        if (!mask[k]) W[k] = 0.0f;
    m->sparse_planned = false;
    return NNZ_OK;
}

void nnz_model_set_grad_mask(nnz_model *m, bool on) { m->grad_mask = on; }

nnz_status nnz_model_sparse_summary(nnz_model *m, char *buf, size_t len, int *with_zeros) {
    if (!m->sparse_planned) NNZ_TRY(nnz_model_sparse_plan(m, false));
    if (with_zeros) *with_zeros = 0;
    size_t k = 0;
    buf[0] = '\0';
    for (int i = 0; i < m->n_nodes && k < len; i++) {
        int rows, cols;
        if (!nnz_node_weight_matrix(&m->nodes[i], &rows, &cols)) continue;
        const nnz_sparse_plan *p = &m->sparse_plan[i];
        if (with_zeros && p->density < 1.0) (*with_zeros)++;
        char fmt[24];
        nnz_sparse_plan_format_name(p, fmt, sizeof fmt);
        int w = snprintf(buf + k, len - k, "%-16s %5.1f%% zeros  %-14s %s\n", m->nodes[i].name,
                         100.0 * (1.0 - p->density), fmt, p->why);
        if (w < 0) break;
        k += (size_t)w;
    }
    return NNZ_OK;
}
