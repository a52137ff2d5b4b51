/* Finding inverted-residual blocks in a graph by their pattern (shrink.h). */
#include "shrink/shrink.h"

#include <stdlib.h>
#include <string.h>

static bool is_act(nnz_op op) { return op == NNZ_OP_RELU || op == NNZ_OP_RELU6 || op == NNZ_OP_IDENTITY; }

static bool is_pointwise(const nnz_node *n) {
    return n->op == NNZ_OP_CONV2D && n->k == 1 && n->stride == 1 && n->groups == 1;
}

/* Matches the pattern starting at node i (pw1); fills b and returns true on a match. */
static bool match_block(const nnz_model *m, const int *consumers, int i, nnz_ir_block *b) {
    static const int ops[8] = {NNZ_OP_CONV2D, NNZ_OP_BATCHNORM, -1, NNZ_OP_CONV2D,
                               NNZ_OP_BATCHNORM, -1, NNZ_OP_CONV2D, NNZ_OP_BATCHNORM};
    const nnz_node *nd = m->nodes;
    const int id = nd[i].block;
    if (id < 0 || i + 8 > m->n_nodes) return false;
    for (int j = 0; j < 8; j++) {
        const nnz_node *n = &nd[i + j];
        if (n->block != id || (j > 0 && n->input != i + j - 1)) return false;
        if (ops[j] >= 0 ? (int)n->op != ops[j] : !is_act(n->op)) return false;
        if (j < 7 && consumers[i + j] != 1) return false; /* the chain must not branch */
    }
    const nnz_node *pw1 = &nd[i], *dw = &nd[i + 3], *pw2 = &nd[i + 6];
    if (!is_pointwise(pw1) || !is_pointwise(pw2) || pw2->pad != 0) return false;
    if (dw->groups != dw->in_c || dw->out_ch != dw->in_c) return false; /* depthwise */
    memset(b, 0, sizeof *b);
    b->id = id;
    b->input = pw1->input;
    b->pw1 = i, b->bn1 = i + 1, b->act1 = i + 2, b->dw = i + 3, b->bn2 = i + 4, b->act2 = i + 5;
    b->pw2 = i + 6, b->bn3 = i + 7, b->add = -1, b->last = i + 7;
    int next = i + 8;
    if (next < m->n_nodes && nd[next].block == id && nd[next].op == NNZ_OP_ADD && nd[next].input == i + 7 &&
        nd[next].skip == b->input && consumers[i + 7] == 1) {
        b->add = next, b->last = next;
        next++;
    }
    for (int j = 0; j < m->n_nodes; j++) /* nothing else in the block */
        if (nd[j].block == id && (j < i || j >= next)) return false;
    b->removed = nd[b->act1].op == NNZ_OP_IDENTITY && nd[b->act2].op == NNZ_OP_IDENTITY;
    b->mergeable = b->removed && dw->pad == 0;
    const char *dot = strrchr(pw1->name, '.');
    if (dot && dot > pw1->name) snprintf(b->name, sizeof b->name, "%.*s", (int)(dot - pw1->name), pw1->name);
    else snprintf(b->name, sizeof b->name, "block%d", id);
    return true;
}

nnz_status nnz_shrink_find_blocks(const nnz_model *m, nnz_ir_block **out, int *n) {
    *out = NULL;
    *n = 0;
    if (!m || !m->finalized) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_shrink_find_blocks: the model is not finalized");
    int *consumers = calloc((size_t)m->n_nodes, sizeof *consumers);
    nnz_ir_block *blocks = calloc((size_t)m->n_nodes / 8 + 1, sizeof *blocks);
    if (!consumers || !blocks) {
        free(consumers);
        free(blocks);
        return nnz_fail(NNZ_ERR_NOMEM, "out of memory finding the model's blocks");
    }
    for (int i = 0; i < m->n_nodes; i++) {
        const nnz_node *nd = &m->nodes[i];
        if (nd->input >= 0) consumers[nd->input]++;
        if (nd->op == NNZ_OP_ADD && nd->skip >= 0) consumers[nd->skip]++;
    }
    int count = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        /* a block starts at its first node */
        if (m->nodes[i].block < 0 || (i > 0 && m->nodes[i - 1].block == m->nodes[i].block)) continue;
        if (match_block(m, consumers, i, &blocks[count])) count++;
    }
    free(consumers);
    if (!count) {
        free(blocks);
        blocks = NULL;
    }
    *out = blocks;
    *n = count;
    return NNZ_OK;
}

bool nnz_shrink_merge_pays(const nnz_model *m, const nnz_ir_block *b) {
    const int nodes[] = {b->pw1, b->bn1, b->act1, b->dw, b->bn2, b->act2, b->pw2, b->bn3, b->add};
    int64_t block = 0;
    for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++)
        if (nodes[i] >= 0) block += m->nodes[nodes[i]].flops;
    const nnz_node *pw1 = &m->nodes[b->pw1], *dw = &m->nodes[b->dw], *pw2 = &m->nodes[b->pw2];
    const int64_t merged = 2 * (int64_t)dw->k * dw->k * pw1->in_c * pw2->out_ch * pw2->h * pw2->w;
    return merged < block;
}

int nnz_shrink_keep_count(float keep, int n) {
    if (!(keep > 0.0f)) return 0;
    if (keep >= 1.0f) return n;
    int k = (int)((double)keep * n + 0.5);
    return k < 0 ? 0 : (k > n ? n : k);
}
