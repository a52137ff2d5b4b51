/* nnz_run_packed: inference from a .nnz file, decoding layer by layer (run.h). */
#include "run/run.h"
#include "io/io.h" /* the batcher: the same normalization as training and nnz eval */

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN_FLOATS 16 /* each parameter of a layer starts 64-byte aligned in the weight buffer */

typedef struct {
    float *p;
    size_t bytes;
    int refs;
} act_buf;

typedef struct runner runner;

typedef struct {
    runner *r;
    int node, slot;
    nnz_status s;
    char msg[512];
    pthread_t th;
    bool pending;
    double seconds;
} decode_job;

struct runner {
    const char *path;
    nnz_nf_file f;
    nnz_model *m;
    const nnz_nf_tensor **map; /* per parameter */
    int *consumers;            /* per node, and [n_nodes] for the model input */
    int *wseq, n_w;            /* nodes that own parameters, in order */
    size_t max_wfloats, max_scratch;
    bool prefetch;
    float *wbuf[2];
    uint8_t *wscratch[2];
    int wslot_node[2];         /* which node's parameters each slot holds (-1 none) */
    /* accounting */
    bool dry;
    size_t cur, peak, weights_bytes, peak_act;
    act_buf *bufs;             /* per node, [n_nodes] = the model input */
    int *buf_of;               /* node -> index into bufs */
    double decode_seconds, wait_seconds;
};

/* ---- parameters of a node ---- */

static int node_params(const nnz_node *n, int out[4]) {
    int k = 0;
    if (n->weight >= 0) out[k++] = n->weight;
    if (n->bias >= 0) out[k++] = n->bias;
    if (n->running_mean >= 0) out[k++] = n->running_mean;
    if (n->running_var >= 0) out[k++] = n->running_var;
    return k;
}

static size_t round_up(size_t v) { return (v + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS; }

/* Offsets of the node's parameters in a weight buffer; returns the floats used. */
static size_t layout_node(const runner *r, int node, size_t off[4]) {
    int ps[4], k = node_params(&r->m->nodes[node], ps);
    size_t at = 0;
    for (int j = 0; j < k; j++) {
        off[j] = at;
        at += round_up((size_t)r->map[ps[j]]->numel);
    }
    return at;
}

static nnz_status decode_node(runner *r, int node, int slot) {
    int ps[4], k = node_params(&r->m->nodes[node], ps);
    size_t off[4];
    layout_node(r, node, off);
    for (int j = 0; j < k; j++)
        NNZ_TRY(nnz_unpack_tensor(r->map[ps[j]], r->wbuf[slot] + off[j], r->wscratch[slot], r->path));
    r->wslot_node[slot] = node;
    return NNZ_OK;
}

static void *job_main(void *arg) {
    decode_job *j = arg;
    double t0 = nnz_now_sec();
    j->s = decode_node(j->r, j->node, j->slot);
    if (j->s != NNZ_OK) snprintf(j->msg, sizeof j->msg, "%s", nnz_last_error());
    j->seconds = nnz_now_sec() - t0;
    return NULL;
}

static nnz_status job_start(decode_job *j, runner *r, int node, int slot) {
    *j = (decode_job){.r = r, .node = node, .slot = slot};
    if (pthread_create(&j->th, NULL, job_main, j) != 0) {
        /* no thread: decode here, same result */
        job_main(j);
        return j->s == NNZ_OK ? NNZ_OK : nnz_fail(j->s, "%s", j->msg);
    }
    j->pending = true;
    return NNZ_OK;
}

static nnz_status job_wait(decode_job *j, runner *r) {
    if (!j->pending) return NNZ_OK;
    double t0 = nnz_now_sec();
    pthread_join(j->th, NULL);
    r->wait_seconds += nnz_now_sec() - t0;
    r->decode_seconds += j->seconds;
    j->pending = false;
    if (j->s != NNZ_OK) return nnz_fail(j->s, "%s", j->msg);
    return NNZ_OK;
}

/* ---- counted memory ---- */

static void *take(runner *r, size_t bytes, const char *what) {
    r->cur += bytes;
    if (r->cur > r->peak) r->peak = r->cur;
    if (r->cur - r->weights_bytes > r->peak_act) r->peak_act = r->cur - r->weights_bytes;
    if (r->dry) return (void *)(uintptr_t)64; /* a non-NULL token: nothing is touched in a dry run */
    void *p = nnz_alloc(bytes ? bytes : 1, what);
    if (!p) r->cur -= bytes;
    return p;
}

static void give(runner *r, void *p, size_t bytes) {
    r->cur -= bytes;
    if (!r->dry) nnz_free(p);
}

/* ---- one forward pass over N images ---- */

static int64_t per_image(const nnz_node *n) { return (int64_t)n->h * n->w * n->c; }

static void release(runner *r, int b) {
    if (--r->bufs[b].refs == 0) {
        give(r, r->bufs[b].p, r->bufs[b].bytes);
        r->bufs[b].p = NULL;
    }
}

/* Runs the graph on x (already in bufs[n_nodes]); the logits stay in the last node's buffer. */
static nnz_status forward(runner *r, int N, int *wpos, decode_job *job) {
    nnz_model *m = r->m;
    const int nn = m->n_nodes;
    for (int i = 0; i < nn; i++) {
        const nnz_node *n = &m->nodes[i];
        int in_b = n->input < 0 ? nn : r->buf_of[n->input];
        const float *in = r->bufs[in_b].p;
        int ps[4], np = node_params(n, ps);
        const float *w[4] = {NULL, NULL, NULL, NULL};
        if (np) {
            /* this node's parameters: from the prefetch slot, or decoded now */
            int slot = 0;
            if (r->prefetch) {
                NNZ_TRY(job_wait(job, r));
                slot = r->wslot_node[0] == i ? 0 : 1;
            }
            if (r->wslot_node[slot] != i && !r->dry) {
                double t0 = nnz_now_sec();
                NNZ_TRY(decode_node(r, i, slot));
                r->decode_seconds += nnz_now_sec() - t0;
                r->wait_seconds += nnz_now_sec() - t0;
            }
            size_t off[4];
            layout_node(r, i, off);
            for (int j = 0; j < np; j++) w[j] = r->dry ? NULL : r->wbuf[slot] + off[j];
            *wpos = (*wpos + 1) % r->n_w;
            if (r->prefetch && !r->dry) { /* the next weighted node (of the next batch after the last) */
                int next = r->wseq[*wpos];
                r->wslot_node[1 - slot] = -1;
                NNZ_TRY(job_start(job, r, next, 1 - slot));
            }
        }
        /* the output buffer: an alias of the input, in place, or new */
        int out_b = i;
        bool alias = n->op == NNZ_OP_IDENTITY || n->op == NNZ_OP_DROPOUT || n->op == NNZ_OP_FLATTEN;
        bool in_place = (n->op == NNZ_OP_RELU || n->op == NNZ_OP_RELU6) && r->bufs[in_b].refs == 1;
        int64_t count = (int64_t)N * per_image(n);
        if (alias || in_place) {
            out_b = in_b;
        } else {
            r->bufs[i].bytes = (size_t)count * sizeof(float);
            r->bufs[i].p = take(r, r->bufs[i].bytes, n->name);
            if (!r->bufs[i].p) return NNZ_ERR_NOMEM;
            r->bufs[i].refs = 0;
        }
        float *out = r->bufs[out_b].p;
        bool compute = !r->dry;
        switch (n->op) {
        case NNZ_OP_CONV2D: {
            nnz_conv_shape s;
            NNZ_TRY(nnz_conv_shape_init(&s, N, n->in_h, n->in_w, n->in_c, n->out_ch, n->k, n->k, n->stride, n->pad,
                                        n->groups));
            size_t sb = nnz_conv2d_scratch_floats(&s) * sizeof(float);
            float *scratch = take(r, sb, "conv scratch");
            if (!scratch) return NNZ_ERR_NOMEM;
            if (compute) nnz_conv2d_forward(&s, in, w[0], n->bias >= 0 ? w[1] : NULL, out, scratch);
            give(r, scratch, sb);
            break;
        }
        case NNZ_OP_LINEAR:
            if (compute) nnz_linear_forward(NNZ_F32, N, n->in_c, n->out_ch, in, w[0], n->bias >= 0 ? w[1] : NULL, out);
            break;
        case NNZ_OP_BATCHNORM:
            if (compute)
                nnz_batchnorm_forward_eval(N * n->h * n->w, n->c, in, w[0], w[1], w[2], w[3], n->eps, out);
            break;
        case NNZ_OP_RELU: if (compute) nnz_relu_forward(count, in, out); break;
        case NNZ_OP_RELU6: if (compute) nnz_relu6_forward(count, in, out); break;
        case NNZ_OP_MAXPOOL:
        case NNZ_OP_AVGPOOL: {
            nnz_pool_shape s;
            NNZ_TRY(nnz_pool_shape_init(&s, N, n->in_h, n->in_w, n->in_c, n->k, n->stride, n->pad));
            if (n->op == NNZ_OP_AVGPOOL) {
                if (compute) nnz_avgpool_forward(&s, in, out);
                break;
            }
            size_t ab = (size_t)count * sizeof(int32_t);
            int32_t *argmax = take(r, ab, "maxpool argmax");
            if (!argmax) return NNZ_ERR_NOMEM;
            if (compute) nnz_maxpool_forward(&s, in, out, argmax);
            give(r, argmax, ab);
            break;
        }
        case NNZ_OP_GLOBAL_AVGPOOL:
            if (compute) nnz_global_avgpool_forward(N, n->in_h * n->in_w, n->c, in, out);
            break;
        case NNZ_OP_ADD: {
            int sk = n->skip < 0 ? nn : r->buf_of[n->skip];
            if (compute) nnz_add_forward(count, in, r->bufs[sk].p, out);
            release(r, sk);
            break;
        }
        case NNZ_OP_IDENTITY: case NNZ_OP_DROPOUT: case NNZ_OP_FLATTEN: break;
        default: return nnz_fail(NNZ_ERR_UNSUPPORTED, "nnz run: op %s is not supported", nnz_op_name(n->op));
        }
        r->buf_of[i] = out_b;
        int uses = i == nn - 1 ? 1 : r->consumers[i]; /* the logits are read after the pass */
        r->bufs[out_b].refs += uses;
        if (out_b != in_b) release(r, in_b);
        else r->bufs[out_b].refs--; /* the alias consumed its input's reference */
        if (r->bufs[out_b].refs == 0) { /* nobody reads it */
            give(r, r->bufs[out_b].p, r->bufs[out_b].bytes);
            r->bufs[out_b].p = NULL;
        }
    }
    return NNZ_OK;
}

/* ---- setup ---- */

static void runner_free(runner *r) {
    for (int k = 0; k < 2; k++) {
        nnz_free(r->wbuf[k]);
        nnz_free(r->wscratch[k]);
    }
    free(r->map);
    free(r->consumers);
    free(r->wseq);
    free(r->bufs);
    free(r->buf_of);
    nnz_model_free(r->m);
    nnz_nf_free(&r->f);
    memset(r, 0, sizeof *r);
}

static nnz_status runner_open(runner *r, const char *path) {
    memset(r, 0, sizeof *r);
    r->path = path;
    NNZ_TRY(nnz_nf_load(path, &r->f));
    nnz_status s = nnz_model_graph_from_json(r->f.arch_json, &r->m); /* no weights: they are decoded per layer */
    if (s != NNZ_OK) {
        char why[600];
        snprintf(why, sizeof why, "%s", nnz_last_error());
        nnz_nf_free(&r->f);
        return nnz_fail(s, "'%s': %s", path, why);
    }
    const int nn = r->m->n_nodes;
    r->map = calloc((size_t)r->m->n_params + 1, sizeof *r->map);
    r->consumers = calloc((size_t)nn + 1, sizeof *r->consumers);
    r->wseq = calloc((size_t)nn + 1, sizeof *r->wseq);
    r->bufs = calloc((size_t)nn + 1, sizeof *r->bufs);
    r->buf_of = calloc((size_t)nn + 1, sizeof *r->buf_of);
    if (!r->map || !r->consumers || !r->wseq || !r->bufs || !r->buf_of) {
        runner_free(r);
        return nnz_fail(NNZ_ERR_NOMEM, "out of memory opening '%s'", path);
    }
    if ((s = nnz_pack_match_model(&r->f, r->m, path, r->map))) {
        runner_free(r);
        return s;
    }
    for (int i = 0; i < nn; i++) {
        const nnz_node *n = &r->m->nodes[i];
        r->consumers[n->input < 0 ? nn : n->input]++;
        if (n->op == NNZ_OP_ADD) r->consumers[n->skip < 0 ? nn : n->skip]++;
        int ps[4];
        if (node_params(n, ps)) {
            r->wseq[r->n_w++] = i;
            size_t off[4], fl = layout_node(r, i, off), sc = 0;
            for (int j = 0, k = node_params(n, ps); j < k; j++) {
                size_t b = nnz_unpack_scratch_bytes(r->map[ps[j]]);
                sc = b > sc ? b : sc;
            }
            r->max_wfloats = fl > r->max_wfloats ? fl : r->max_wfloats;
            r->max_scratch = sc > r->max_scratch ? sc : r->max_scratch;
        }
    }
    r->wslot_node[0] = r->wslot_node[1] = -1;
    return NNZ_OK;
}

static size_t weight_bytes(const runner *r, bool prefetch) {
    size_t one = r->max_wfloats * sizeof(float) + round_up(r->max_scratch);
    return r->n_w ? (prefetch ? 2 : 1) * one : 0;
}

/* The peak bytes of a pass over N images (a dry run of the same schedule). */
static nnz_status plan(runner *r, int N, bool prefetch, size_t *peak, size_t *acts) {
    r->dry = true;
    r->prefetch = prefetch;
    r->weights_bytes = weight_bytes(r, prefetch);
    r->cur = r->peak = r->weights_bytes;
    r->peak_act = 0;
    const int nn = r->m->n_nodes;
    memset(r->bufs, 0, (size_t)(nn + 1) * sizeof *r->bufs);
    r->bufs[nn].bytes = (size_t)N * r->m->in_h * r->m->in_w * r->m->in_c * sizeof(float);
    r->bufs[nn].p = take(r, r->bufs[nn].bytes, "input");
    r->bufs[nn].refs = r->consumers[nn];
    int wpos = 0;
    decode_job job = {0};
    nnz_status s = forward(r, N, &wpos, &job);
    *peak = r->peak;
    *acts = r->peak_act;
    r->dry = false;
    return s;
}

/* ---- the process's memory (--memory-budget: the peak resident bytes) ---- */

/* need(batch) = resident  measured after the compressed file is loaded (VmRSS): code, libraries,
 *                         the data set, the compressed file, the model graph
 *             + activations  the counted peak of the schedule (plan): decoded-weight buffers (two
 *                         with prefetch) and their decoding scratch, the input batch, activations,
 *                         conv/pool scratch; exact, by a dry run of the same schedule
 *             + buffers   the labels of a batch and the image order (the batcher)
 *             + runtime   nn/budget.c's BLAS/OpenMP allowance at this batch and thread count (with
 *                         threaded OpenBLAS's copy of the largest left GEMM operand), plus one
 *                         thread's share for the decoding thread when prefetching */
typedef struct {
    runner *r;
    bool prefetch;
    int images;
    size_t resident;
} run_need_ctx;

static size_t round64(size_t b) { return (b + 63) & ~(size_t)63; }

static nnz_status run_need(run_need_ctx *c, int batch, nnz_mem_need *out) {
    memset(out, 0, sizeof *out);
    size_t peak, acts;
    NNZ_TRY(plan(c->r, batch, c->prefetch, &peak, &acts));
    out->resident = c->resident;
    out->activations = peak;
    out->buffers = round64((size_t)batch) + round64((size_t)c->images * sizeof(int32_t));
    out->runtime = nnz_budget_runtime_bytes(c->r->m, batch, false, false) + (c->prefetch ? NNZ_BUDGET_THREAD_BYTES : 0);
    out->total = out->resident + out->activations + out->buffers + out->runtime;
    return NNZ_OK;
}

static nnz_status run_need_total(void *ctx, int batch, size_t *total) {
    nnz_mem_need n;
    NNZ_TRY(run_need(ctx, batch, &n));
    *total = n.total;
    return NNZ_OK;
}

static void describe(const runner *r, bool prefetch, const nnz_mem_need *n, char *buf, size_t len) {
    size_t w = weight_bytes(r, prefetch);
    snprintf(buf, len,
             "%zu bytes: %zu resident before the batch (code, libraries, the data set, the compressed model), %zu for "
             "decoded weights (%s), %zu for activations and scratch, %zu for labels and the image order, %zu for the "
             "BLAS/OpenMP runtime at %d thread%s",
             n->total, n->resident, w, prefetch ? "two layers: prefetch" : "one layer", n->activations - w, n->buffers,
             n->runtime, nnz_threads(), nnz_threads() == 1 ? "" : "s");
}

/* Before loading: the compressed file is read whole into memory. */
static nnz_status check_file_budget(const char *path, size_t budget) {
    FILE *f = fopen(path, "rb");
    if (!f) return NNZ_OK; /* nnz_nf_load says why */
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    fclose(f);
    const size_t peak = nnz_peak_resident_bytes(), now = nnz_resident_bytes();
    if (peak > budget)
        return nnz_fail(NNZ_ERR_NOMEM,
                        "loading the data set already took the process to %zu bytes, over --memory-budget %zu; "
                        "raise --memory-budget (or pass a smaller --limit)",
                        peak, budget);
    size_t need = now + (size_t)(size > 0 ? size : 0) + ((size_t)1 << 20);
    if (need > budget)
        return nnz_fail(NNZ_ERR_NOMEM,
                        "loading '%s' (%ld bytes) takes the process to about %zu bytes (%zu already resident: code, "
                        "libraries, the data set), over --memory-budget %zu; raise --memory-budget",
                        path, size, need, now, budget);
    return NNZ_OK;
}

void nnz_run_config_init(nnz_run_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->prefetch = true;
}

nnz_status nnz_run_packed(const char *path, const nnz_dataset *d, const nnz_run_config *cfg_in, nnz_run_result *out) {
    memset(out, 0, sizeof *out);
    nnz_run_config cfg;
    if (cfg_in) cfg = *cfg_in;
    else nnz_run_config_init(&cfg);
    if (!path || !d) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_run_packed: path and data set are needed");
    if (cfg.batch < 0 || cfg.limit < 0) return nnz_fail(NNZ_ERR_INVALID_ARG, "batch and limit must be >= 0");
    const size_t budget = cfg.memory_budget ? cfg.memory_budget : SIZE_MAX;
    if (cfg.memory_budget) NNZ_TRY(check_file_budget(path, cfg.memory_budget));
    runner r;
    NNZ_TRY(runner_open(&r, path));
    nnz_status s = NNZ_OK;
    nnz_model *m = r.m;
    if (d->h != m->in_h || d->w != m->in_w || d->c != m->in_c) {
        s = nnz_fail(NNZ_ERR_INVALID_ARG, "'%s' expects %dx%dx%d images; the data set has %dx%dx%d", path, m->in_h,
                     m->in_w, m->in_c, d->h, d->w, d->c);
        runner_free(&r);
        return s;
    }
    /* choose prefetch and batch under the budget */
    int images = cfg.limit && cfg.limit < d->n ? cfg.limit : d->n;
    int max_batch = cfg.batch ? cfg.batch : (cfg.memory_budget ? 256 : 64);
    if (!cfg.batch && max_batch > images && images > 0) max_batch = images;
    run_need_ctx nc = {.r = &r, .prefetch = cfg.prefetch, .images = images, .resident = nnz_resident_bytes()};
    const size_t loaded_peak = nnz_peak_resident_bytes();
    nnz_mem_need need;
    char what[600];
    if (cfg.memory_budget && loaded_peak > budget) {
        s = nnz_fail(NNZ_ERR_NOMEM,
                     "loading the data set and '%s' already took the process to %zu bytes, over --memory-budget %zu; "
                     "raise --memory-budget",
                     path, loaded_peak, budget);
        goto done;
    }
    int batch = 0;
    for (int attempt = 0; attempt < 2 && !batch; attempt++) {
        if (cfg.batch) { /* this batch or none */
            if ((s = run_need(&nc, cfg.batch, &need))) goto done;
            if (need.total <= budget) batch = cfg.batch;
        } else if ((s = nnz_budget_largest(max_batch, budget, run_need_total, &nc, &batch))) {
            goto done;
        }
        if (!batch && nc.prefetch) nc.prefetch = false; /* a second weight buffer may be what does not fit */
        else break;
    }
    if (!batch) {
        int fits = 0; /* without prefetch, the most that fits */
        if (cfg.batch > 1 && (s = nnz_budget_largest(cfg.batch - 1, budget, run_need_total, &nc, &fits))) goto done;
        if ((s = run_need(&nc, cfg.batch ? cfg.batch : 1, &need))) goto done;
        describe(&r, false, &need, what, sizeof what);
        if (fits > 0)
            s = nnz_fail(NNZ_ERR_NOMEM,
                         "--batch %d does not fit --memory-budget %zu: '%s' needs an estimated %s. The largest --batch "
                         "that fits is %d; pass it (or leave --batch out to let nnz run choose), or raise "
                         "--memory-budget",
                         cfg.batch, cfg.memory_budget, path, what, fits);
        else
            s = nnz_fail(NNZ_ERR_NOMEM,
                         "not even a batch of 1 fits --memory-budget %zu: '%s' needs an estimated %s; raise "
                         "--memory-budget, or use fewer --threads",
                         cfg.memory_budget, path, what);
        goto done;
    }
    const bool prefetch = nc.prefetch;
    if ((s = run_need(&nc, batch, &need))) goto done;
    size_t planned_peak = need.activations;
    out->budget = cfg.memory_budget;
    out->batch = batch;
    out->prefetch = prefetch;
    out->file_bytes = r.f.size;
    out->memory_estimate = need.total > loaded_peak ? need.total : loaded_peak;

    /* run */
    r.prefetch = prefetch;
    r.weights_bytes = weight_bytes(&r, prefetch);
    r.cur = r.peak = 0;
    r.peak_act = 0;
    for (int k = 0; k < (prefetch ? 2 : 1) && r.n_w; k++) {
        r.wbuf[k] = nnz_alloc(r.max_wfloats * sizeof(float) + 1, "decoded weights");
        r.wscratch[k] = nnz_alloc(round_up(r.max_scratch) + 1, "gap symbols");
        if (!r.wbuf[k] || !r.wscratch[k]) {
            s = NNZ_ERR_NOMEM;
            goto done;
        }
    }
    r.cur = r.peak = r.weights_bytes;
    nnz_batcher bt;
    if ((s = nnz_batcher_init(&bt, d, images, batch, false, false, 0))) goto done;
    uint8_t *labels = malloc((size_t)batch);
    int64_t steps = nnz_batcher_eval_steps(&bt), correct = 0;
    const int nn = m->n_nodes;
    decode_job job = {0};
    int wpos = 0;
    double t0 = nnz_now_sec();
    if (!labels) s = nnz_fail(NNZ_ERR_NOMEM, "out of memory for labels");
    for (int64_t st = 0; st < steps && s == NNZ_OK; st++) {
        r.bufs[nn].bytes = (size_t)batch * m->in_h * m->in_w * m->in_c * sizeof(float);
        r.bufs[nn].p = take(&r, r.bufs[nn].bytes, "input batch");
        if (!r.bufs[nn].p) {
            s = NNZ_ERR_NOMEM;
            break;
        }
        r.bufs[nn].refs = r.consumers[nn];
        int cnt = nnz_batcher_fill(&bt, st, r.bufs[nn].p, labels);
        if ((s = forward(&r, cnt, &wpos, &job))) break;
        act_buf *lb = &r.bufs[r.buf_of[nn - 1]];
        int c = 0;
        nnz_softmax_xent(cnt, m->num_classes, lb->p, labels, 0, NULL, &c);
        correct += c;
        release(&r, r.buf_of[nn - 1]);
        out->n += cnt;
    }
    nnz_status js = job_wait(&job, &r); /* the prefetch of a batch that will not come */
    if (s == NNZ_OK) s = js;
    out->seconds = nnz_now_sec() - t0;
    free(labels);
    nnz_batcher_free(&bt);
    if (s != NNZ_OK) goto done;
    out->accuracy = out->n ? (float)correct / (float)out->n : 0;
    out->images_per_sec = out->seconds > 0 ? out->n / out->seconds : 0;
    out->decode_seconds = r.wait_seconds;
    out->peak_bytes = r.peak;
    out->peak_weight_bytes = r.weights_bytes;
    out->peak_act_bytes = r.peak_act;
    out->peak_resident = nnz_peak_resident_bytes();
    if (r.peak > planned_peak)
        s = nnz_fail(NNZ_ERR_NOMEM, "internal: the run held %zu counted bytes, more than the %zu its plan gave", r.peak,
                     planned_peak);
done:
    runner_free(&r);
    return s;
}
