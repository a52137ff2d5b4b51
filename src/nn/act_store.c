/* Activations stored in bf16 between layers (docs/BF16.md, m->bf16_activations): in a bf16
 * training step an activation buffer is fp32 only while the forward still reads it and again
 * once the backward reads it; in between it is a bf16 copy of half the size. The three lives of
 * every stored buffer, and the backward life of every activation gradient, are laid out in one
 * pool at reserve time, so buffers whose lives do not overlap share memory (vgg8: 29% less
 * than separate buffers, mbv2-tiny 49%), and nothing is given back to the system or faulted in
 * again between steps.
 *
 * The forward's arithmetic is untouched: each node reads its inputs in fp32 (a buffer is
 * narrowed only after its last forward reader, last_fwd_reader, ran). The backward reads the
 * stored values widened back: the conv and linear weight gradients read the values the bf16
 * GEMM rounds them to anyway; batch norms and activations see their inputs rounded to bf16, the
 * scheme's "activations stored in bf16".
 *
 * Timeline: forward turn t is step t, backward turn t is step 2N-1-t. Buffer o lives
 *   fp32 (forward):  [o, last_fwd_reader]
 *   bf16 copy:       [last_fwd_reader, 2N-1-o]       (o's backward turn reads it last)
 *   fp32 (backward): [2N-1-widen_by, 2N-1-o]
 * where widen_by is the latest backward turn that may read it (backward_reads lists what each
 * turn may read, fusions included). A read outside its life is an internal error and aborts
 * (nnz_act_ready) rather than read another buffer's data. Gradient y lives
 *   fp32:            [2N-1-grad_first, 2N-1-grad_last]
 * over the backward turns that touch it (grad_touches), zeroed on its first unless overwritten;
 * the tests compare every gradient bit for bit with separate buffers (m->act_grads_apart). */
#include "kernels/kernels.h"
#include "nn/nn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ACT_FP32 = 0, ACT_BF16, ACT_WIDE };

static int owner_of(const nnz_model *m, int i) { return m->exec[i].act_owner; }

/* The owners node i's training forward reads: itself (written, in place too), its input, an
 * add's other operand, the input of a batch norm deferred into it. -1: none. */
static void forward_reads(const nnz_model *m, int i, int read[4]) {
    const nnz_node *n = &m->nodes[i];
    const nnz_node_exec *ex = &m->exec[i];
    read[0] = owner_of(m, i);
    read[1] = n->input >= 0 ? owner_of(m, n->input) : -1;
    read[2] = n->op == NNZ_OP_ADD && n->skip >= 0 ? owner_of(m, n->skip) : -1;
    read[3] = ex->input_bn >= 0 && m->nodes[ex->input_bn].input >= 0 ? owner_of(m, m->nodes[ex->input_bn].input) : -1;
}

/* The owners node i's backward turn may read (model_exec.c's nnz_model_backward): its input (every
 * turn reads it), its own output (relu, max pool), the input of a batch norm deferred into it, and
 * for a batch norm that runs the backward of the conv p before it (stream_bn_grad): p's output,
 * p's input or that of the batch norm deferred into p, and the input of the batch norm b before p
 * whose backward sums it then makes. -1: none. */
static void backward_reads(const nnz_model *m, int i, int read[8]) {
    const nnz_node *n = &m->nodes[i];
    for (int k = 0; k < 8; k++) read[k] = -1;
    const int dbn = m->exec[i].input_bn;
    read[0] = n->input >= 0 ? owner_of(m, n->input) : -1;
    read[1] = owner_of(m, i);
    read[2] = dbn >= 0 && m->nodes[dbn].input >= 0 ? owner_of(m, m->nodes[dbn].input) : -1;
    if (n->op != NNZ_OP_BATCHNORM || n->input < 0) return;
    const int p = n->input;
    const nnz_node *pn = &m->nodes[p];
    const int pbn = m->exec[p].input_bn, q = pn->input;
    read[3] = owner_of(m, p);
    read[4] = q >= 0 ? owner_of(m, q) : -1;
    read[5] = pbn >= 0 && m->nodes[pbn].input >= 0 ? owner_of(m, m->nodes[pbn].input) : -1;
    if (q < 0) return;
    const int b = m->nodes[q].op == NNZ_OP_BATCHNORM ? q : m->exec[q].fused_into;
    if (b >= 0 && m->nodes[b].op == NNZ_OP_BATCHNORM && m->nodes[b].input >= 0) read[6] = owner_of(m, m->nodes[b].input);
}

/* the node whose gradient buffer x's is: aliases (identity, flatten) share their input's */
int nnz_act_grad_owner(const nnz_model *m, int x) {
    while (x >= 0 && nnz_node_is_alias(&m->nodes[x])) x = m->nodes[x].input;
    return x;
}

/* The gradient buffers node i's backward turn may write or read (nnz_model_backward): its own (the
 * dout), its input's and an add's other operand's (written); a max pool's relu's input's (it runs
 * that relu's backward); a batch norm's fused activation's (its dout), and, running the conv p
 * before it (stream_bn_grad), p's (made there when the blocks cannot stream) and p's input's. */
static void grad_touches(const nnz_model *m, int i, int g[8]) {
    const nnz_node *n = &m->nodes[i];
    const nnz_node_exec *ex = &m->exec[i];
    for (int k = 0; k < 8; k++) g[k] = -1;
    g[0] = nnz_act_grad_owner(m, i);
    g[1] = n->input >= 0 ? nnz_act_grad_owner(m, n->input) : -1;
    g[2] = n->op == NNZ_OP_ADD && n->skip >= 0 ? nnz_act_grad_owner(m, n->skip) : -1;
    if (n->op == NNZ_OP_MAXPOOL && ex->pool_relu >= 0 && m->nodes[ex->pool_relu].input >= 0)
        g[3] = nnz_act_grad_owner(m, m->nodes[ex->pool_relu].input);
    if (n->op != NNZ_OP_BATCHNORM) return;
    g[3] = ex->fused_act >= 0 ? nnz_act_grad_owner(m, ex->fused_act) : -1;
    if (n->input < 0) return;
    g[4] = nnz_act_grad_owner(m, n->input);
    const int q = m->nodes[n->input].input;
    g[5] = q >= 0 ? nnz_act_grad_owner(m, q) : -1;
    /* the expansion before a depthwise p (expansion_grad.c, fp32: the batch norm b whose output p
     * reads, and the 1x1 conv before b) takes its gradients here too, and writes that conv's
     * input's; listed whatever the precision, which may change without a new reservation */
    const nnz_node *pn = &m->nodes[n->input];
    const int b = q < 0 ? -1 : m->nodes[q].op == NNZ_OP_BATCHNORM ? q : m->exec[q].fused_into;
    if (pn->op != NNZ_OP_CONV2D || pn->groups != pn->in_c || b < 0 || m->nodes[b].op != NNZ_OP_BATCHNORM ||
        m->nodes[b].input < 0)
        return;
    const int pw = m->nodes[b].input;
    const nnz_node *wn = &m->nodes[pw];
    if (wn->op != NNZ_OP_CONV2D || wn->k != 1 || wn->groups != 1) return;
    g[6] = nnz_act_grad_owner(m, pw);
    g[7] = m->nodes[pw].input >= 0 ? nnz_act_grad_owner(m, m->nodes[pw].input) : -1;
}

bool nnz_grads_pool_wanted(const nnz_model *m) {
    return !m->act_grads_apart && !m->act_identity; /* the gates read the gradients after the backward */
}

bool nnz_act_store_wanted(const nnz_model *m) {
    /* eval then runs in its frames, never over the shared regions, whose lives are training's */
    return m->bf16_activations && m->compute == NNZ_BF16 && !m->act_identity && nnz_eval_uses_frames(m);
}

/* o's buffer may be stored: written by o's own forward, never the output's */
static bool storable(const nnz_model *m, int o) {
    const nnz_node_exec *ex = &m->exec[o];
    if (owner_of(m, o) != o || o == owner_of(m, m->n_nodes - 1)) return false;
    const nnz_node *n = &m->nodes[o];
    /* a deferred batch norm's output is made, if ever, by the conv after it, on its own turn */
    return !(n->op == NNZ_OP_BATCHNORM && ex->deferred_to >= 0) && nnz_node_numel(n) > 0;
}

/* every node sharing y's gradient buffer finds it at p */
static void point_grad(nnz_model *m, int y, float *p) {
    for (int i = y; i < m->n_nodes; i++)
        if (nnz_act_grad_owner(m, i) == y) m->dact[i] = p;
}

/* every node sharing o's buffer reads it at p from now on */
static void point(nnz_model *m, int o, float *p) {
    for (int i = o; i < m->n_nodes; i++)
        if (owner_of(m, i) == o) m->act[i] = p;
}

typedef struct {
    int start, end; /* inclusive steps */
    size_t bytes, offset;
    int owner, kind; /* 0 fp32 forward, 1 bf16, 2 fp32 backward, 3 gradient */
} life;

static int by_start(const void *a, const void *b) {
    const life *x = a, *y = b;
    if (x->start != y->start) return x->start < y->start ? -1 : 1;
    return x->bytes > y->bytes ? -1 : x->bytes < y->bytes; /* larger first: fewer holes */
}

/* First fit among the placed lives of its own end of the pool (bf16 copies from the top, fp32
 * regions from the bottom): the lowest offset from that end clear of every one that overlaps in
 * time. The bf16 copies live long and nest (the first made is the last read), so from the top
 * they stack without holes; the short fp32 lives recycle the bottom. */
static bool top(const life *l) { return l->kind == 1; }

static size_t place(life *l, int placed) {
    size_t off = 0;
    for (bool moved = true; moved;) {
        moved = false;
        for (int k = 0; k < placed; k++) {
            const life *q = &l[k];
            if (top(q) != top(&l[placed]) || q->end < l[placed].start || q->start > l[placed].end) continue;
            if (off < q->offset + q->bytes && q->offset < off + l[placed].bytes) off = q->offset + q->bytes, moved = true;
        }
    }
    return off;
}

static size_t round64(size_t b) { return (b + 63) & ~(size_t)63; }

/* which activation buffers are stored in bf16, and their lives */
static void plan_stored(nnz_model *m) {
    const int nn = m->n_nodes;
    /* reader[c] = the latest node reading c's buffer, per owner c */
    for (int i = 0; i < nn; i++) {
        int read[4];
        forward_reads(m, i, read);
        for (int k = 0; k < 4; k++)
            if (read[k] >= 0 && m->exec[read[k]].last_fwd_reader < i) m->exec[read[k]].last_fwd_reader = i;
    }
    /* widen_by: the latest backward turn that may read o */
    for (int i = 0; i < nn; i++) {
        int read[8];
        backward_reads(m, i, read);
        for (int k = 0; k < 8; k++)
            if (read[k] >= 0 && m->exec[read[k]].widen_by < i) m->exec[read[k]].widen_by = i;
    }
    for (int o = 0; o < nn; o++) m->exec[o].stored = storable(m, o) && m->exec[o].widen_by >= 0;
}

/* the gradient buffers: each lives from the first backward turn touching it to the last */
static void plan_grads(nnz_model *m) {
    const int nn = m->n_nodes;
    for (int i = nn - 1; i >= 0; i--) {
        int g[8];
        grad_touches(m, i, g);
        for (int k = 0; k < 8; k++) {
            if (g[k] < 0) continue;
            nnz_node_exec *ey = &m->exec[g[k]];
            if (ey->grad_first < i) ey->grad_first = i;
            if (ey->grad_last < 0 || ey->grad_last > i) ey->grad_last = i;
        }
    }
    for (int y = 0; y < nn - 1; y++) { /* not the output's: the caller's dlogits are copied into it first */
        const nnz_node *n = &m->nodes[y];
        nnz_node_exec *ey = &m->exec[y];
        ey->grad_pooled = nnz_act_grad_owner(m, y) == y && ey->grad_first >= 0 &&
                          !(n->op == NNZ_OP_BATCHNORM && ey->fused_act >= 0) && nnz_node_numel(n) > 0;
    }
}

void nnz_act_store_plan(nnz_model *m, bool training) {
    const int nn = m->n_nodes;
    for (int i = 0; i < nn; i++) {
        nnz_node_exec *ex = &m->exec[i];
        ex->last_fwd_reader = -1, ex->widen_by = -1, ex->act_state = ACT_FP32, ex->stored = false;
        ex->grad_first = ex->grad_last = -1, ex->grad_pooled = false;
        ex->fwd_buf = ex->bwd_buf = NULL, ex->bf16_buf = NULL;
    }
    m->act_stored_n = 0;
    m->act_layout_wanted = m->act_layout_stored = training && nnz_act_store_wanted(m);
    m->grad_layout_wanted = training && nnz_grads_pool_wanted(m);
    if (m->act_layout_stored) plan_stored(m);
    if (m->grad_layout_wanted) plan_grads(m);
}

/* Places the k lives (first fit, by start; bf16 copies from the top end, fp32 from the bottom) and
 * returns the pool's bytes: at every step, what both ends hold together (lives start at steps).
 * The top's offsets are then made from the pool's start. */
static size_t lay_out(life *l, int k) {
    qsort(l, (size_t)k, sizeof *l, by_start);
    for (int i = 0; i < k; i++) l[i].offset = place(l, i);
    size_t pool_bytes = 0;
    for (int i = 0; i < k; i++) {
        const int t = l[i].start;
        size_t lo = 0, hi = 0;
        for (int j = 0; j < k; j++) {
            if (l[j].start > t || l[j].end < t) continue;
            size_t *end = top(&l[j]) ? &hi : &lo;
            if (l[j].offset + l[j].bytes > *end) *end = l[j].offset + l[j].bytes;
        }
        if (lo + hi > pool_bytes) pool_bytes = lo + hi;
    }
    for (int i = 0; i < k; i++)
        if (top(&l[i])) l[i].offset = pool_bytes - l[i].offset - l[i].bytes;
    return pool_bytes;
}

nnz_status nnz_act_store_layout(nnz_model *m, int batch) {
    const int nn = m->n_nodes;
    if (!m->act_layout_stored && !m->grad_layout_wanted) return NNZ_OK;
    int k = 0;
    life *l = calloc((size_t)4 * nn + 1, sizeof *l);
    if (!l) return nnz_fail(NNZ_ERR_NOMEM, "out of memory planning the stored activations");
    for (int o = 0; o < nn; o++) {
        const nnz_node_exec *ex = &m->exec[o];
        if (!ex->stored) continue;
        const nnz_node *n = &m->nodes[o];
        const size_t f = (size_t)batch * nnz_node_numel(n);
        const int bwd_end = 2 * nn - 1 - o;
        l[k++] = (life){.start = o, .end = ex->last_fwd_reader, .bytes = round64(f * sizeof(float)), .owner = o, .kind = 0};
        l[k++] = (life){.start = ex->last_fwd_reader, .end = bwd_end, .bytes = round64(f * sizeof(nnz_bf16)), .owner = o,
                        .kind = 1};
        l[k++] = (life){.start = 2 * nn - 1 - ex->widen_by, .end = bwd_end, .bytes = round64(f * sizeof(float)), .owner = o,
                        .kind = 2};
    }
    for (int y = 0; y < nn; y++) {
        const nnz_node_exec *ey = &m->exec[y];
        if (!ey->grad_pooled) continue;
        const nnz_node *n = &m->nodes[y];
        l[k++] = (life){.start = 2 * nn - 1 - ey->grad_first, .end = 2 * nn - 1 - ey->grad_last,
                        .bytes = round64((size_t)batch * nnz_node_numel(n) * sizeof(float)), .owner = y, .kind = 3};
    }
    const size_t pool_bytes = lay_out(l, k);
    /* what the activations cost without it: their plain fp32 buffers, and the gradients pooled alone */
    size_t plain_bytes = 0;
    if (m->act_layout_stored) {
        life *g = calloc((size_t)k + 1, sizeof *g);
        if (!g) {
            free(l);
            return nnz_fail(NNZ_ERR_NOMEM, "out of memory planning the stored activations");
        }
        int kg = 0;
        for (int i = 0; i < k; i++) {
            if (l[i].kind == 0) plain_bytes += l[i].bytes;
            if (l[i].kind == 3) g[kg++] = l[i];
        }
        plain_bytes += lay_out(g, kg);
        free(g);
    }
    if (m->act_layout_stored && pool_bytes >= plain_bytes) {
        /* the fp32 lives overlap too much (one layer dominates): the activations stay plain */
        free(l);
        m->act_layout_stored = false;
        for (int o = 0; o < nn; o++) {
            nnz_node_exec *ex = &m->exec[o];
            if (!ex->stored) continue;
            const nnz_node *n = &m->nodes[o];
            float *buf = nnz_arena_alloc(&m->act_arena, (size_t)batch * nnz_node_numel(n) * sizeof(float), n->name);
            if (!buf) return NNZ_ERR_NOMEM;
            point(m, o, buf);
            ex->stored = false;
        }
        return nnz_act_store_layout(m, batch); /* the gradients alone */
    }
    unsigned char *pool = k ? nnz_arena_alloc(&m->act_arena, pool_bytes, "activations stored in bf16 (shared pool)") : NULL;
    if (k && !pool) {
        free(l);
        return NNZ_ERR_NOMEM;
    }
    for (int i = 0; i < k; i++) {
        nnz_node_exec *ex = &m->exec[l[i].owner];
        void *p = pool + l[i].offset;
        if (l[i].kind == 0) ex->fwd_buf = p;
        else if (l[i].kind == 1) ex->bf16_buf = p;
        else if (l[i].kind == 2) ex->bwd_buf = p;
        else point_grad(m, l[i].owner, p);
    }
    free(l);
    for (int i = 0; i < nn; i++) /* the forward's pointers until a step moves them */
        if (m->exec[owner_of(m, i)].stored) m->act[i] = m->exec[owner_of(m, i)].fwd_buf;
    return NNZ_OK;
}

void nnz_act_store_begin(nnz_model *m, int n) {
    if (!m->act_layout_stored) return;
    for (int o = 0; o < m->n_nodes; o++) {
        nnz_node_exec *ex = &m->exec[o];
        if (!ex->stored) continue;
        ex->act_state = ACT_FP32;
        point(m, o, ex->fwd_buf);
    }
    m->act_stored_n = n;
    m->act_turn = -1;
}

static int64_t stored_floats(const nnz_model *m, int o) {
    const nnz_node *n = &m->nodes[o];
    return (int64_t)m->act_stored_n * nnz_node_numel(n);
}

void nnz_act_store_after_forward(nnz_model *m, int t) {
    if (!m->act_layout_stored || t < 0) return;
    for (int o = 0; o < m->n_nodes; o++) {
        nnz_node_exec *ex = &m->exec[o];
        if (!ex->stored || ex->last_fwd_reader != t) continue;
        nnz_cvt_f32_to_bf16(stored_floats(m, o), ex->fwd_buf, ex->bf16_buf); /* the GEMM packers' rounding */
        ex->act_state = ACT_BF16;
        point(m, o, NULL); /* the fp32 region is another buffer's from now on */
    }
}

void nnz_act_store_turn(nnz_model *m, int t, int n) {
    m->act_turn = t;
    if (!m->grad_layout_wanted) return;
    for (int y = 0; y < m->n_nodes; y++) { /* a pooled gradient's first turn: it holds another buffer's data */
        const nnz_node_exec *ey = &m->exec[y];
        if (ey->grad_pooled && ey->grad_first == t && !ey->grad_written) {
            const nnz_node *nd = &m->nodes[y];
            nnz_zero_floats((int64_t)n * nd->h * nd->w * nd->c, m->dact[y]);
        }
    }
}

float *nnz_act_ready(nnz_model *m, int idx) {
    if (!m->act_layout_stored) return m->act[idx];
    const int o = owner_of(m, idx);
    nnz_node_exec *ex = &m->exec[o];
    if (!ex->stored) return m->act[idx];
    if (m->act_turn > ex->widen_by || m->act_turn < o || ex->act_state == ACT_FP32) {
        /* outside the life planned for it: the region may hold another buffer by now */
        fprintf(stderr, "nnz: internal error: the backward turn of node %d read the stored activations of '%s' "
                        "outside their planned life (%d..%d)\n", m->act_turn, m->nodes[o].name, o, ex->widen_by);
        abort();
    }
    if (ex->act_state == ACT_BF16) {
        nnz_cvt_bf16_to_f32(stored_floats(m, o), ex->bf16_buf, ex->bwd_buf); /* exact */
        ex->act_state = ACT_WIDE;
        point(m, o, ex->bwd_buf);
    }
    return m->act[idx];
}
