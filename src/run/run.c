/* nnz_run_packed: inference from a .nnz file, decoding layer by layer (run.h). */
#include "run/run.h"
#include "io/io.h" /* the batcher: the same normalization as training and nnz eval */

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN_FLOATS 16 /* each parameter of a layer starts 64-byte aligned in the weight buffer */

typedef struct {
    float *p;
    size_t bytes;
    int refs;
    bool view; /* a window into a super-batch tensor the stage loop owns: never freed here */
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
    act_buf *bufs;             /* per node, [n_nodes] = the model input (or a stage's input) */
    int *buf_of;               /* node -> index into bufs */
    double decode_seconds, wait_seconds;
    /* per-layer plans (staged runs) */
    int stage_in;              /* the node whose output is the running stage's input (-1: the model input) */
    bool held;                 /* the running stage's weights are all decoded, at held_off[node] in wbuf[0] */
    size_t *held_off;          /* per node */
    int *last_use;             /* per node, [n_nodes] = the model input: the last node that reads it */
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

static nnz_status decode_node_at(runner *r, int node, float *base, uint8_t *scratch) {
    int ps[4], k = node_params(&r->m->nodes[node], ps);
    size_t off[4];
    layout_node(r, node, off);
    for (int j = 0; j < k; j++) NNZ_TRY(nnz_unpack_tensor(r->map[ps[j]], base + off[j], scratch, r->path));
    return NNZ_OK;
}

static nnz_status decode_node(runner *r, int node, int slot) {
    NNZ_TRY(decode_node_at(r, node, r->wbuf[slot], r->wscratch[slot]));
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
        if (!r->bufs[b].view) give(r, r->bufs[b].p, r->bufs[b].bytes);
        r->bufs[b].p = NULL;
    }
}

/* Frees what a pass that failed part way still holds (none after a whole pass: every buffer is
 * given back once read), and forgets the tokens a dry run leaves. */
static void drop_buffers(runner *r) {
    const int nn = r->m ? r->m->n_nodes : -1;
    for (int b = 0; b <= nn && r->bufs; b++) {
        if (!r->dry && r->bufs[b].p && !r->bufs[b].view) give(r, r->bufs[b].p, r->bufs[b].bytes);
        r->bufs[b] = (act_buf){0};
    }
}

/* The buffer holding node idx's output (idx -1: the model input); the running stage's input
 * node maps to the input slot. */
static int src_buf(const runner *r, int idx) {
    return idx < 0 || idx == r->stage_in ? r->m->n_nodes : r->buf_of[idx];
}

/* Runs nodes [first, last] on N images whose input (the model input, or the output of node
 * first - 1 = r->stage_in) is in bufs[n_nodes]; node last's output stays in its buffer with one
 * reference (the caller reads and releases it). */
static nnz_status forward_range(runner *r, int first, int last, int N, int *wpos, decode_job *job) {
    nnz_model *m = r->m;
    for (int i = first; i <= last; i++) {
        const nnz_node *n = &m->nodes[i];
        int in_b = src_buf(r, n->input);
        const float *in = r->bufs[in_b].p;
        int ps[4], np = node_params(n, ps);
        const float *w[4] = {NULL, NULL, NULL, NULL};
        if (np && r->held) { /* decoded at the start of the stage */
            size_t off[4];
            layout_node(r, i, off);
            for (int j = 0; j < np; j++) w[j] = r->dry ? NULL : r->wbuf[0] + r->held_off[i] + off[j];
        } else if (np) {
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
        bool in_place = (n->op == NNZ_OP_RELU || n->op == NNZ_OP_RELU6) && r->bufs[in_b].refs == 1 && !r->bufs[in_b].view;
        int64_t count = (int64_t)N * per_image(n);
        if (alias || in_place) {
            out_b = in_b;
        } else {
            r->bufs[i].bytes = (size_t)count * sizeof(float);
            r->bufs[i].p = take(r, r->bufs[i].bytes, n->name);
            if (!r->bufs[i].p) return NNZ_ERR_NOMEM;
            r->bufs[i].refs = 0;
            r->bufs[i].view = false;
        }
        float *out = r->bufs[out_b].p;
        bool compute = !r->dry;
        switch (n->op) {
        case NNZ_OP_CONV2D: {
            /* one image at a time: every image's GEMMs are the same calls whatever the batch, so the
             * logits do not depend on it (OpenBLAS's rows do depend on M; kernels/linear_rows.c) */
            nnz_conv_shape s;
            NNZ_TRY(nnz_conv_shape_init(&s, 1, n->in_h, n->in_w, n->in_c, n->out_ch, n->k, n->k, n->stride, n->pad,
                                        n->groups));
            size_t sb = nnz_conv2d_forward_scratch_floats(&s) * sizeof(float);
            float *scratch = take(r, sb, "conv scratch");
            if (!scratch) return NNZ_ERR_NOMEM;
            const size_t in_pi = (size_t)n->in_h * n->in_w * n->in_c, out_pi = (size_t)per_image(n);
            if (compute)
                for (int img = 0; img < N; img++)
                    nnz_conv2d_forward(&s, in + img * in_pi, w[0], n->bias >= 0 ? w[1] : NULL, out + img * out_pi,
                                       scratch);
            give(r, scratch, sb);
            break;
        }
        case NNZ_OP_LINEAR: /* batch-invariant (kernels/linear_rows.c) */
            if (compute) nnz_linear_rows(N, n->out_ch, n->in_c, in, w[0], n->bias >= 0 ? w[1] : NULL, out);
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
            int sk = src_buf(r, n->skip);
            if (compute) nnz_add_forward(count, in, r->bufs[sk].p, out);
            release(r, sk);
            break;
        }
        case NNZ_OP_IDENTITY: case NNZ_OP_DROPOUT: case NNZ_OP_FLATTEN: break;
        default: return nnz_fail(NNZ_ERR_UNSUPPORTED, "nnz run: op %s is not supported", nnz_op_name(n->op));
        }
        r->buf_of[i] = out_b;
        int uses = i == last ? 1 : r->consumers[i]; /* the range's output is read after the pass */
        r->bufs[out_b].refs += uses;
        if (out_b != in_b) release(r, in_b);
        else r->bufs[out_b].refs--; /* the alias consumed its input's reference */
        if (r->bufs[out_b].refs == 0) { /* nobody reads it */
            if (!r->bufs[out_b].view) give(r, r->bufs[out_b].p, r->bufs[out_b].bytes);
            r->bufs[out_b].p = NULL;
        }
    }
    return NNZ_OK;
}

static nnz_status forward(runner *r, int N, int *wpos, decode_job *job) {
    r->stage_in = -1;
    r->held = false;
    return forward_range(r, 0, r->m->n_nodes - 1, N, wpos, job);
}

/* ---- setup ---- */

static void runner_free(runner *r) {
    drop_buffers(r);
    for (int k = 0; k < 2; k++) {
        nnz_free(r->wbuf[k]);
        nnz_free(r->wscratch[k]);
    }
    free(r->map);
    free(r->consumers);
    free(r->wseq);
    free(r->bufs);
    free(r->buf_of);
    free(r->held_off);
    free(r->last_use);
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
    r->held_off = calloc((size_t)nn + 1, sizeof *r->held_off);
    r->last_use = calloc((size_t)nn + 1, sizeof *r->last_use);
    if (!r->map || !r->consumers || !r->wseq || !r->bufs || !r->buf_of || !r->held_off || !r->last_use) {
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
        r->last_use[n->input < 0 ? nn : n->input] = i;
        if (n->op == NNZ_OP_ADD) {
            r->consumers[n->skip < 0 ? nn : n->skip]++;
            r->last_use[n->skip < 0 ? nn : n->skip] = i;
        }
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
    r->stage_in = -1;
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
    drop_buffers(r);
    r->dry = false;
    return s;
}

/* ---- per-layer plans: stages over a super-batch (run.h) ---- */

/* Where a stage's first chunk of images comes from: the data set, one image per batcher step. */
typedef struct {
    const nnz_batcher *bt; /* batch 1; NULL in a dry run */
    int64_t first_image;   /* the super-batch's first image */
    uint8_t *labels;       /* the super-batch's labels */
} feed;

/* The nodes of the stage made of weighted layers [a, e]: from layer a's node (node 0 for the
 * first) to the node before layer e + 1's (the last node for the last). */
static int stage_first_node(const runner *r, int a) { return a == 0 ? 0 : r->wseq[a]; }
static int stage_last_node(const runner *r, int e) { return e == r->n_w - 1 ? r->m->n_nodes - 1 : r->wseq[e + 1] - 1; }

/* floats per image of node's output (-1: the model input) */
static int64_t floats_per_image(const runner *r, int node) {
    return node < 0 ? (int64_t)r->m->in_h * r->m->in_w * r->m->in_c : per_image(&r->m->nodes[node]);
}

/* A stage may begin at node p when the only tensor alive there is node p - 1's output. */
static bool cut_ok(const runner *r, int p) {
    const int nn = r->m->n_nodes;
    for (int j = -1; j < p - 1; j++)
        if (r->last_use[j < 0 ? nn : j] >= p) return false;
    return true;
}

/* run_stage's way out after a failure: what it owns given back (the buffers of the failed pass
 * stay for drop_buffers) */
static nnz_status stage_failed(runner *r, nnz_status s, float *prev, size_t prev_bytes, float *o, size_t ob) {
    if (prev) give(r, prev, prev_bytes);
    if (o) give(r, o, ob);
    r->stage_in = -1;
    r->held = false;
    return s;
}

/* Runs nodes [n0, n1] over cnt images in chunks of b. The input is prev (node n0 - 1's output
 * for the cnt images, counted, freed here, also on failure) or, for n0 = 0, the feed's images a
 * chunk at a time. hold: decode every weighted node of the stage once, first, into wbuf[0] (else each is decoded
 * when it runs, once per chunk). *out gets the stage's output for the cnt images (counted). */
static nnz_status run_stage(runner *r, int n0, int n1, int b, bool hold, int cnt, float *prev, size_t prev_bytes,
                            const feed *fd, float **out, size_t *out_bytes) {
    const int nn = r->m->n_nodes;
    const int64_t in_pi = floats_per_image(r, n0 - 1), out_pi = floats_per_image(r, n1);
    *out = NULL;
    *out_bytes = 0;
    r->held = false;
    if (hold) {
        double t0 = nnz_now_sec();
        size_t at = 0, off[4];
        for (int i = n0; i <= n1; i++) {
            int ps[4];
            if (!node_params(&r->m->nodes[i], ps)) continue;
            r->held_off[i] = at;
            const nnz_status ds = r->dry ? NNZ_OK : decode_node_at(r, i, r->wbuf[0] + at, r->wscratch[0]);
            if (ds != NNZ_OK) return stage_failed(r, ds, prev, prev_bytes, NULL, 0);
            at += layout_node(r, i, off);
        }
        r->wslot_node[0] = -1; /* the slot holds the stage, not one node */
        r->held = true;
        r->decode_seconds += nnz_now_sec() - t0;
        r->wait_seconds += nnz_now_sec() - t0;
    }
    const int nch = (cnt + b - 1) / b;
    float *o = NULL;
    size_t ob = 0;
    if (nch > 1) {
        ob = (size_t)cnt * (size_t)out_pi * sizeof(float);
        if (!(o = take(r, ob, "a stage's output"))) return stage_failed(r, NNZ_ERR_NOMEM, prev, prev_bytes, NULL, 0);
    }
    int wpos = 0;
    decode_job job = {0};
    r->stage_in = n0 - 1;
    for (int c = 0; c < nch; c++) {
        const int at = c * b, n = cnt - at < b ? cnt - at : b;
        act_buf *ib = &r->bufs[nn];
        if (n0 == 0) { /* the chunk's images, normalized */
            ib->bytes = (size_t)n * (size_t)in_pi * sizeof(float);
            if (!(ib->p = take(r, ib->bytes, "an input chunk")))
                return stage_failed(r, NNZ_ERR_NOMEM, prev, prev_bytes, o, ob);
            ib->view = false;
            if (!r->dry)
                for (int k = 0; k < n; k++)
                    nnz_batcher_fill(fd->bt, fd->first_image + at + k, ib->p + (size_t)k * in_pi, fd->labels + at + k);
        } else {
            ib->bytes = 0;
            ib->p = r->dry ? prev : prev + (size_t)at * (size_t)in_pi;
            ib->view = true;
        }
        ib->refs = r->consumers[n0 == 0 ? nn : n0 - 1];
        nnz_status s = forward_range(r, n0, n1, n, &wpos, &job);
        if (s != NNZ_OK) return stage_failed(r, s, prev, prev_bytes, o, ob);
        act_buf *lb = &r->bufs[r->buf_of[n1]];
        if (nch > 1) {
            if (!r->dry) memcpy(o + (size_t)at * out_pi, lb->p, (size_t)n * (size_t)out_pi * sizeof(float));
            release(r, r->buf_of[n1]);
        } else { /* one chunk: its output is the stage's */
            o = lb->p;
            ob = lb->bytes;
            lb->p = NULL;
            lb->refs = 0;
        }
    }
    r->stage_in = -1;
    r->held = false;
    if (prev) give(r, prev, prev_bytes);
    *out = o;
    *out_bytes = ob;
    return NNZ_OK;
}

/* One super-batch of cnt images through the plan's stages; *logits (counted, *lbytes) gets
 * the last stage's output. */
static nnz_status run_super(runner *r, const nnz_plan *p, int cnt, const feed *fd, float **logits, size_t *lbytes) {
    float *prev = NULL;
    size_t pb = 0;
    for (int s = 0; s < p->n_stages; s++) {
        float *o;
        size_t ob;
        NNZ_TRY(run_stage(r, stage_first_node(r, p->first[s]), stage_last_node(r, p->last[s]), p->chunk[s],
                          p->chunk[s] < p->super, cnt, prev, pb, fd, &o, &ob));
        prev = o, pb = ob;
    }
    *logits = prev;
    *lbytes = pb;
    return NNZ_OK;
}

static void dry_reset(runner *r, size_t weights) {
    r->dry = true;
    r->prefetch = false;
    r->weights_bytes = weights;
    r->cur = r->peak = weights;
    r->peak_act = 0;
    memset(r->bufs, 0, (size_t)(r->m->n_nodes + 1) * sizeof *r->bufs);
}

/* nnz_plan_bytes_fn: a dry run of one stage, its input held for the whole super-batch */
static nnz_status stage_bytes(void *ctx, int a, int e, int chunk, int super, size_t *act, size_t *sticky) {
    runner *r = ctx;
    dry_reset(r, 0);
    const int n0 = stage_first_node(r, a), n1 = stage_last_node(r, e);
    size_t pb = 0;
    float *prev = NULL;
    if (n0 > 0) {
        pb = (size_t)super * (size_t)floats_per_image(r, n0 - 1) * sizeof(float);
        prev = take(r, pb, "a stage's input");
    }
    float *o;
    size_t ob;
    nnz_status s = run_stage(r, n0, n1, chunk, chunk < super, super, prev, pb, NULL, &o, &ob);
    drop_buffers(r);
    r->dry = false;
    NNZ_TRY(s);
    *act = r->peak + ((size_t)super + 63) / 64 * 64; /* + the super-batch's labels */
    *sticky = nnz_budget_runtime_range_bytes(r->m, n0, n1, chunk);
    return NNZ_OK;
}

/* The cost model's inputs: each weighted layer decoded once (timed), the rate of streaming the
 * largest conv/linear weight through a batch-1 GEMM, and the rate of a square GEMM. Uses wbuf[0]
 * and wscratch[0] (at least the largest layer). */
static nnz_status calibrate(runner *r, nnz_plan_layer *L, double *flop_rate, double *byte_rate) {
    const nnz_model *m = r->m;
    int big = -1;
    size_t big_n = 0;
    for (int k = 0; k < r->n_w; k++) {
        const int i = r->wseq[k];
        const nnz_node *n = &m->nodes[i];
        size_t off[4];
        memset(&L[k], 0, sizeof L[k]);
        snprintf(L[k].name, sizeof L[k].name, "%s", n->name);
        L[k].weight_bytes = layout_node(r, i, off) * sizeof(float);
        const int from = k == 0 ? 0 : i, to = stage_last_node(r, k);
        for (int j = from; j <= to; j++) L[k].flops += (double)m->nodes[j].flops;
        L[k].cut_before = k == 0 || cut_ok(r, i);
        double t0 = nnz_now_sec();
        NNZ_TRY(decode_node_at(r, i, r->wbuf[0], r->wscratch[0]));
        L[k].decode_seconds = nnz_now_sec() - t0;
        if ((n->op == NNZ_OP_CONV2D || n->op == NNZ_OP_LINEAR) && (size_t)r->map[n->weight]->numel > big_n)
            big = i, big_n = (size_t)r->map[n->weight]->numel;
    }
    *byte_rate = 10e9; /* no conv/linear layer: weights are not streamed through GEMMs */
    if (big >= 0) {
        NNZ_TRY(decode_node_at(r, big, r->wbuf[0], r->wscratch[0]));
        const int rows = m->nodes[big].out_ch, cols = (int)(big_n / (size_t)rows);
        float *x = calloc((size_t)cols, sizeof *x), *y = malloc((size_t)rows * sizeof *y);
        if (!x || !y) {
            free(x), free(y);
            return nnz_fail(NNZ_ERR_NOMEM, "out of memory measuring the weight streaming rate");
        }
        double best = INFINITY;
        for (int rep = 0; rep < 3; rep++) {
            double t0 = nnz_now_sec();
            nnz_gemm(NNZ_F32, false, true, 1, rows, cols, 1.0f, x, cols, r->wbuf[0], cols, 0.0f, y, rows);
            double t = nnz_now_sec() - t0;
            if (t < best) best = t;
        }
        free(x), free(y);
        *byte_rate = (double)big_n * sizeof(float) / (best > 1e-9 ? best : 1e-9);
    }
    /* a d x d x d GEMM in the weight buffer */
    int d = 256;
    while ((size_t)3 * d * d > r->max_wfloats && d > 16) d /= 2;
    float *own = (size_t)3 * d * d > r->max_wfloats ? calloc((size_t)3 * d * d, sizeof(float)) : NULL;
    float *A = own ? own : r->wbuf[0], *B = A + (size_t)d * d, *C = B + (size_t)d * d;
    if (!A) return nnz_fail(NNZ_ERR_NOMEM, "out of memory measuring the GEMM rate");
    for (size_t j = 0; j < (size_t)2 * d * d; j++) A[j] = 0.01f * (float)(j % 7);
    double best = INFINITY;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = nnz_now_sec();
        nnz_gemm(NNZ_F32, false, false, d, d, d, 1.0f, A, d, B, d, 0.0f, C, d);
        double t = nnz_now_sec() - t0;
        if (t < best) best = t;
    }
    free(own);
    *flop_rate = 2.0 * d * d * d / (best > 1e-9 ? best : 1e-9);
    r->wslot_node[0] = -1;
    return NNZ_OK;
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}
#define FNV_START 14695981039346656037ull

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
    /* the runner convolves image by image: the runtime of its own schedule (nn/budget.c) */
    out->runtime = nnz_budget_runtime_range_bytes(c->r->m, 0, c->r->m->n_nodes - 1, batch) +
                   (c->prefetch ? NNZ_BUDGET_THREAD_BYTES : 0);
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
    cfg->max_super = 1024;
    cfg->seed = 1;
}

static void note(const nnz_run_config *cfg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(const nnz_run_config *cfg, const char *fmt, ...) {
    if (!cfg->note) return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    cfg->note(line, cfg->note_user);
}

static const char *mib(size_t b, char *buf, size_t len) {
    if (b == SIZE_MAX) snprintf(buf, len, "unlimited");
    else snprintf(buf, len, "%.1f MiB", (double)b / (1 << 20));
    return buf;
}

/* n random images of the model's input shape; labels random below the classes (at most 256) */
static nnz_status make_synthetic(const nnz_model *m, int n, uint64_t seed, nnz_dataset *d) {
    memset(d, 0, sizeof *d);
    d->n = n, d->h = m->in_h, d->w = m->in_w, d->c = m->in_c;
    d->num_classes = m->num_classes < 256 ? m->num_classes : 256;
    size_t px = (size_t)d->h * d->w * d->c;
    d->images = malloc((size_t)n * px);
    d->labels = malloc((size_t)n);
    if (!d->images || !d->labels) {
        free(d->images), free(d->labels);
        memset(d, 0, sizeof *d);
        return nnz_fail(NNZ_ERR_NOMEM, "out of memory for %d synthetic images of %dx%dx%d", n, m->in_h, m->in_w,
                        m->in_c);
    }
    nnz_rng g = nnz_rng_make(seed, 0x5e17);
    for (size_t i = 0; i < (size_t)n * px; i++) d->images[i] = (uint8_t)nnz_rng_below(&g, 256);
    for (int i = 0; i < n; i++) d->labels[i] = (uint8_t)nnz_rng_below(&g, (uint32_t)d->num_classes);
    return NNZ_OK;
}

static void fixed_batches_text(const runner *r, int batch, char *buf, size_t len) {
    size_t at = 0;
    buf[0] = 0;
    for (int k = 0; k < r->n_w && at < len; k++)
        at += (size_t)snprintf(buf + at, len - at, "%s%s:%d", k ? "," : "", r->m->nodes[r->wseq[k]].name, batch);
}

/* The logits of a batch: accuracy, the checksum, the caller's copy. */
static void take_logits(const runner *r, const nnz_run_config *cfg, const float *lg, int cnt, int first,
                        const uint8_t *labels, int64_t *correct, uint64_t *h) {
    const int nc = r->m->num_classes;
    int c = 0;
    nnz_softmax_xent(cnt, nc, lg, labels, 0, NULL, &c);
    *correct += c;
    *h = fnv1a(*h, lg, (size_t)cnt * nc * sizeof(float));
    if (cfg->logits) memcpy(cfg->logits + (size_t)first * nc, lg, (size_t)cnt * nc * sizeof(float));
}

/* Why stage s runs in chunks of b < S: what the next larger chunk would cost. */
static nnz_status chunk_why(runner *r, const nnz_plan_problem *pb, const nnz_plan *p, int s, char *buf, size_t len) {
    const int b = p->chunk[s], S = p->super, a = p->first[s], e = p->last[s];
    int b2 = 2 * b < S ? 2 * b : S;
    size_t act2, sticky2, w2 = 0;
    NNZ_TRY(stage_bytes(r, a, e, b2, S, &act2, &sticky2));
    for (int i = a; i <= e; i++) {
        size_t lw = pb->layer[i].weight_bytes;
        w2 = b2 < S ? w2 + lw : (lw > w2 ? lw : w2);
    }
    size_t need = pb->fixed_bytes + (w2 > p->weight_bytes ? w2 : p->weight_bytes) +
                  (act2 > p->act_bytes ? act2 : p->act_bytes) + (sticky2 > p->sticky_bytes ? sticky2 : p->sticky_bytes);
    double t2 = p->seconds - nnz_plan_stage_seconds(pb, a, e, b, S) + nnz_plan_stage_seconds(pb, a, e, b2, S);
    char x[32], y[32];
    if (need > pb->budget)
        snprintf(buf, len, "memory: batch %d would need an estimated %s, over the budget of %s", b2,
                 mib(need, x, sizeof x), mib(pb->budget, y, sizeof y));
    else if (pb->latency > 0 && t2 > pb->latency)
        snprintf(buf, len, "latency: batch %d would take an estimated %.1f ms per super-batch, over %.1f ms", b2,
                 t2 * 1e3, pb->latency * 1e3);
    else
        snprintf(buf, len, "batch %d is no faster in the cost model (%.2f vs %.2f ms per super-batch)", b2, t2 * 1e3,
                 p->seconds * 1e3);
    return NNZ_OK;
}

static size_t stage_bytes_held(const nnz_plan_problem *pb, int a, int e) {
    size_t w = 0;
    for (int i = a; i <= e; i++) w += pb->layer[i].weight_bytes;
    return w;
}

static void print_plan(runner *r, const nnz_run_config *cfg, const nnz_plan_problem *pb, const nnz_plan *p) {
    char x[32], y[32];
    note(cfg, "plan: per-layer, super-batch %d in %d stage%s: estimated %.1f images/s, %.1f ms per super-batch "
              "(%.1f ms of it decoding), peak %s (budget %s)",
         p->super, p->n_stages, p->n_stages == 1 ? "" : "s", p->images_per_sec, p->seconds * 1e3,
         p->decode_seconds * 1e3, mib(p->bytes, x, sizeof x), mib(pb->budget, y, sizeof y));
    note(cfg, "plan: cost model: GEMMs at %.1f GFLOP/s, weights streamed at %.1f GB/s, each layer's decode timed",
         pb->flop_rate / 1e9, pb->byte_rate / 1e9);
    for (int s = 0; s < p->n_stages; s++) {
        const int b = p->chunk[s];
        char why[200];
        if (b == p->super)
            snprintf(why, sizeof why, "the whole super-batch: weights streamed layer by layer, each decoded once "
                                      "and read once per super-batch");
        else if (chunk_why(r, pb, p, s, why, sizeof why) != NNZ_OK)
            snprintf(why, sizeof why, "(no estimate)");
        for (int k = p->first[s]; k <= p->last[s]; k++) {
            const nnz_plan_layer *l = &pb->layer[k];
            note(cfg, "plan:   %-14s batch %-5d stage %d  weights %9s  decode %7.2f ms  %8.1f MFLOP/image%s%s", l->name,
                 b, s + 1, mib(l->weight_bytes, x, sizeof x), l->decode_seconds * 1e3, l->flops / 1e6,
                 k == p->first[s] ? "  " : "", k == p->first[s] ? why : "");
        }
        if (b < p->super)
            note(cfg, "plan:   stage %d holds its %s of decoded weights over %d chunks of %d", s + 1,
                 mib(stage_bytes_held(pb, p->first[s], p->last[s]), x, sizeof x), (p->super + b - 1) / b, b);
    }
}

/* The per-layer plan: choose it (run.h), print it, run the images super-batch by super-batch. */
static nnz_status run_planned(runner *r, const nnz_dataset *d, int images, const nnz_run_config *cfg, size_t resident,
                              size_t loaded_peak, nnz_plan_problem *pb, nnz_run_result *out) {
    const size_t budget = cfg->memory_budget ? cfg->memory_budget : SIZE_MAX;
    const size_t scratch = round_up(r->max_scratch);
    pb->budget = budget;
    pb->fixed_bytes = resident + round64((size_t)images * sizeof(int32_t)) + scratch;
    pb->latency = cfg->latency_budget_ms / 1e3;
    pb->super = cfg->batch;
    pb->max_super = cfg->batch ? cfg->batch : (cfg->max_super < images ? cfg->max_super : images);
    if (pb->max_super < 1) pb->max_super = 1;
    pb->bytes = stage_bytes;
    pb->ctx = r;
    nnz_plan p;
    nnz_status s = nnz_plan_choose(pb, &p);
    if (s == NNZ_ERR_NOMEM) {
        char why[600];
        snprintf(why, sizeof why, "%s", nnz_last_error());
        return nnz_fail(s, "not even a super-batch of 1 fits --memory-budget %zu: %s (of it %zu resident: code, "
                           "libraries, the data set, the compressed model); raise --memory-budget, or use fewer --threads",
                        cfg->memory_budget, why, resident);
    }
    if (s == NNZ_ERR_INVALID_ARG && pb->latency > 0) {
        char why[600];
        snprintf(why, sizeof why, "%s", nnz_last_error());
        return nnz_fail(s, "--latency-budget %g ms cannot be met: %s; raise --latency-budget (or --memory-budget)",
                        cfg->latency_budget_ms, why);
    }
    NNZ_TRY(s);
    print_plan(r, cfg, pb, &p);
    {   /* the best fixed batch the same model gives, for comparison */
        nnz_plan_problem fx = *pb;
        fx.fixed = true;
        fx.super = 0;
        fx.max_super = pb->max_super < 256 ? pb->max_super : 256;
        nnz_plan fp;
        if (nnz_plan_choose(&fx, &fp) == NNZ_OK) {
            note(cfg, "plan: the best fixed batch in the same model: %d, estimated %.1f images/s (per-layer: %.2fx)",
                 fp.super, fp.images_per_sec, p.images_per_sec / fp.images_per_sec);
            nnz_plan_free(&fp);
        } else {
            note(cfg, "plan: no fixed batch fits in the same model");
        }
    }
    out->batch = p.super;
    out->stages = p.n_stages;
    out->est_images_per_sec = p.images_per_sec;
    out->est_latency_ms = p.seconds * 1e3;
    out->memory_estimate = p.bytes > loaded_peak ? p.bytes : loaded_peak;
    {
        size_t at = 0;
        for (int st = 0; st < p.n_stages; st++)
            for (int k = p.first[st]; k <= p.last[st] && at < sizeof out->layer_batches; k++)
                at += (size_t)snprintf(out->layer_batches + at, sizeof out->layer_batches - at, "%s%s:%d",
                                       at ? "," : "", pb->layer[k].name, p.chunk[st]);
    }
    if (cfg->dry_run) {
        nnz_plan_free(&p);
        return NNZ_OK;
    }
    /* the weight buffer: the plan's (it may hold a whole stage) */
    const size_t wfloats = (p.weight_bytes + sizeof(float) - 1) / sizeof(float);
    if (wfloats > r->max_wfloats) {
        nnz_free(r->wbuf[0]);
        if (!(r->wbuf[0] = nnz_alloc(wfloats * sizeof(float) + 1, "decoded weights"))) {
            nnz_plan_free(&p);
            return NNZ_ERR_NOMEM;
        }
    }
    const size_t wbytes = (wfloats > r->max_wfloats ? wfloats : r->max_wfloats) * sizeof(float) + scratch;
    /* the counted peak of the plan: a dry run of a whole super-batch */
    dry_reset(r, wbytes);
    float *lg;
    size_t lb;
    s = run_super(r, &p, p.super, NULL, &lg, &lb);
    drop_buffers(r);
    r->dry = false;
    const size_t planned_peak = r->peak;
    if (s != NNZ_OK) {
        nnz_plan_free(&p);
        return s;
    }
    r->weights_bytes = wbytes;
    r->cur = r->peak = wbytes;
    r->peak_act = 0;
    r->decode_seconds = r->wait_seconds = 0;
    r->wslot_node[0] = r->wslot_node[1] = -1;
    nnz_batcher bt;
    if ((s = nnz_batcher_init(&bt, d, images, 1, false, false, 0))) {
        nnz_plan_free(&p);
        return s;
    }
    uint8_t *labels = malloc((size_t)p.super);
    if (!labels) s = nnz_fail(NNZ_ERR_NOMEM, "out of memory for labels");
    int64_t correct = 0;
    uint64_t h = FNV_START;
    double t0 = nnz_now_sec();
    for (int first = 0; first < images && s == NNZ_OK; first += p.super) {
        const int cnt = images - first < p.super ? images - first : p.super;
        double tb = nnz_now_sec();
        feed fd = {.bt = &bt, .first_image = first, .labels = labels};
        if ((s = run_super(r, &p, cnt, &fd, &lg, &lb))) break;
        take_logits(r, cfg, lg, cnt, first, labels, &correct, &h);
        give(r, lg, lb);
        double lat = (nnz_now_sec() - tb) * 1e3;
        if (lat > out->max_latency_ms) out->max_latency_ms = lat;
        out->n += cnt;
    }
    out->seconds = nnz_now_sec() - t0;
    free(labels);
    nnz_batcher_free(&bt);
    nnz_plan_free(&p);
    if (s != NNZ_OK) return s;
    out->accuracy = out->n ? (float)correct / (float)out->n : 0;
    out->images_per_sec = out->seconds > 0 ? out->n / out->seconds : 0;
    out->logits_checksum = h;
    out->decode_seconds = r->wait_seconds;
    out->peak_bytes = r->peak;
    out->peak_weight_bytes = r->weights_bytes;
    out->peak_act_bytes = r->peak_act;
    if (r->peak > planned_peak)
        return nnz_fail(NNZ_ERR_NOMEM, "internal: the run held %zu counted bytes, more than the %zu its plan gave",
                        r->peak, planned_peak);
    return NNZ_OK;
}

nnz_status nnz_run_packed(const char *path, const nnz_dataset *d, const nnz_run_config *cfg_in, nnz_run_result *out) {
    memset(out, 0, sizeof *out);
    nnz_run_config cfg;
    if (cfg_in) cfg = *cfg_in;
    else nnz_run_config_init(&cfg);
    if (!path || (!d && cfg.synthetic <= 0))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_run_packed: a path and a data set (or synthetic images) are needed");
    if (cfg.batch < 0 || cfg.limit < 0 || cfg.synthetic < 0)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "batch, limit and synthetic must be >= 0");
    if (!(cfg.latency_budget_ms >= 0) || cfg.latency_budget_ms > 1e9)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "latency budget %g ms must be a number of milliseconds >= 0 (0 = none)",
                        cfg.latency_budget_ms);
    if (cfg.plan != NNZ_RUN_PLAN_FIXED && cfg.plan != NNZ_RUN_PLAN_PER_LAYER)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "unknown plan %d", (int)cfg.plan);
    if (cfg.max_super < 1) cfg.max_super = 1024;
    const size_t budget = cfg.memory_budget ? cfg.memory_budget : SIZE_MAX;
    if (cfg.memory_budget) NNZ_TRY(check_file_budget(path, cfg.memory_budget));
    runner r;
    NNZ_TRY(runner_open(&r, path));
    nnz_status s = NNZ_OK;
    nnz_model *m = r.m;
    nnz_dataset syn = {0};
    nnz_plan_layer *L = NULL;
    if (cfg.synthetic > 0) {
        if ((s = make_synthetic(m, cfg.synthetic, cfg.seed, &syn))) goto done;
        d = &syn;
    }
    if (d->h != m->in_h || d->w != m->in_w || d->c != m->in_c) {
        s = nnz_fail(NNZ_ERR_INVALID_ARG, "'%s' expects %dx%dx%d images; the data set has %dx%dx%d", path, m->in_h,
                     m->in_w, m->in_c, d->h, d->w, d->c);
        goto done;
    }
    out->plan = cfg.plan;
    out->budget = cfg.memory_budget;
    out->file_bytes = r.f.size;
    out->stages = 1;
    int images = cfg.limit && cfg.limit < d->n ? cfg.limit : d->n;
    /* rounded up to a MiB: two processes measure a few kilobytes apart, and the largest batch one
     * names (or a plan one prints) should still fit in the next */
    const size_t resident = (nnz_resident_bytes() + ((size_t)1 << 20) - 1) & ~(((size_t)1 << 20) - 1),
                 loaded_peak = nnz_peak_resident_bytes();
    if (cfg.memory_budget && loaded_peak > budget) {
        s = nnz_fail(NNZ_ERR_NOMEM,
                     "loading the data set and '%s' already took the process to %zu bytes, over --memory-budget %zu; "
                     "raise --memory-budget",
                     path, loaded_peak, budget);
        goto done;
    }
    /* the cost model: needed by a per-layer plan and by a latency budget */
    nnz_plan_problem pb = {.n = r.n_w};
    const bool per_layer = cfg.plan == NNZ_RUN_PLAN_PER_LAYER && r.n_w > 0;
    if ((per_layer || cfg.latency_budget_ms > 0) && r.n_w > 0) {
        const size_t least = resident + r.max_wfloats * sizeof(float) + round_up(r.max_scratch) +
                             nnz_budget_runtime_range_bytes(m, 0, -1, 1);
        if (least > budget) {
            char x[32];
            s = nnz_fail(NNZ_ERR_NOMEM,
                         "not even a batch of 1 fits --memory-budget %zu: '%s' needs at least %zu bytes (%zu "
                         "resident, %s for the largest layer's decoded weights, the libraries' runtime) before any "
                         "activation; raise --memory-budget",
                         cfg.memory_budget, path, least, resident, mib(r.max_wfloats * sizeof(float), x, sizeof x));
            goto done;
        }
        L = calloc((size_t)r.n_w, sizeof *L);
        r.wbuf[0] = nnz_alloc(r.max_wfloats * sizeof(float) + 1, "decoded weights");
        r.wscratch[0] = nnz_alloc(round_up(r.max_scratch) + 1, "gap symbols");
        if (!L || !r.wbuf[0] || !r.wscratch[0]) {
            s = nnz_fail(NNZ_ERR_NOMEM, "out of memory for the decoded weights");
            goto done;
        }
        double t0 = nnz_now_sec();
        if ((s = calibrate(&r, L, &pb.flop_rate, &pb.byte_rate))) goto done;
        out->calibrate_seconds = nnz_now_sec() - t0;
        pb.layer = L;
    }
    if (per_layer) {
        s = run_planned(&r, d, images, &cfg, resident, loaded_peak, &pb, out);
        out->peak_resident = nnz_peak_resident_bytes();
        goto done;
    }
    out->plan = NNZ_RUN_PLAN_FIXED;
    if (r.wbuf[0]) { /* the fixed schedule allocates its own buffers */
        nnz_free(r.wbuf[0]);
        nnz_free(r.wscratch[0]);
        r.wbuf[0] = NULL;
        r.wscratch[0] = NULL;
    }
    /* choose prefetch and batch under the budget */
    int max_batch = cfg.batch ? cfg.batch : (cfg.memory_budget ? 256 : 64);
    if (!cfg.batch && max_batch > images && images > 0) max_batch = images;
    if (cfg.latency_budget_ms > 0 && r.n_w > 0) { /* the largest batch whose estimated time fits */
        const double lat = cfg.latency_budget_ms / 1e3;
        int fits = 0;
        for (int b = 1; b <= max_batch; b++)
            if (nnz_plan_stage_seconds(&pb, 0, r.n_w - 1, b, b) <= lat) fits = b;
        const int want = cfg.batch ? cfg.batch : 1;
        if (fits < want) {
            s = nnz_fail(NNZ_ERR_INVALID_ARG,
                         "--latency-budget %g ms cannot be met: a batch of %d takes an estimated %.3f ms (decoding "
                         "every layer once and computing the batch)%s; raise --latency-budget",
                         cfg.latency_budget_ms, want, nnz_plan_stage_seconds(&pb, 0, r.n_w - 1, want, want) * 1e3,
                         fits ? ", pass a smaller --batch" : "");
            goto done;
        }
        if (!cfg.batch) max_batch = fits;
    }
    run_need_ctx nc = {.r = &r, .prefetch = cfg.prefetch, .images = images, .resident = resident};
    nnz_mem_need need;
    char what[600];
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
    out->batch = batch;
    fixed_batches_text(&r, batch, out->layer_batches, sizeof out->layer_batches);
    if (pb.layer) {
        out->est_latency_ms = nnz_plan_stage_seconds(&pb, 0, r.n_w - 1, batch, batch) * 1e3;
        out->est_images_per_sec = batch / (out->est_latency_ms / 1e3);
    }
    out->prefetch = prefetch;
    out->memory_estimate = need.total > loaded_peak ? need.total : loaded_peak;

    if (cfg.dry_run) goto done;
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
    uint64_t h = FNV_START;
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
        double tb = nnz_now_sec();
        int cnt = nnz_batcher_fill(&bt, st, r.bufs[nn].p, labels);
        if ((s = forward(&r, cnt, &wpos, &job))) break;
        act_buf *lb = &r.bufs[r.buf_of[nn - 1]];
        take_logits(&r, &cfg, lb->p, cnt, (int)(st * batch), labels, &correct, &h);
        release(&r, r.buf_of[nn - 1]);
        double lat = (nnz_now_sec() - tb) * 1e3;
        if (lat > out->max_latency_ms) out->max_latency_ms = lat;
        out->n += cnt;
    }
    nnz_status js = job_wait(&job, &r); /* the prefetch of a batch that will not come */
    if (s == NNZ_OK) s = js;
    out->seconds = nnz_now_sec() - t0;
    free(labels);
    nnz_batcher_free(&bt);
    if (s != NNZ_OK) goto done;
    out->accuracy = out->n ? (float)correct / (float)out->n : 0;
    out->logits_checksum = h;
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
    free(L);
    nnz_dataset_free(&syn);
    runner_free(&r);
    return s;
}
