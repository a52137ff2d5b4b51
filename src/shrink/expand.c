/* Expand-then-Shrink to a given target (shrink.h): the target's dense kxk convolutions
 * become inverted-residual blocks to train, and once those are merged the model goes
 * back to the target's own graph, node for node. */
#include "shrink/shrink.h"

#include <stdlib.h>
#include <string.h>

/* the only node reading node i (as input or skip), -1 when none or several */
static int sole_consumer(const nnz_model *m, int i) {
    int who = -1;
    for (int j = 0; j < m->n_nodes; j++) {
        const nnz_node *n = &m->nodes[j];
        const int uses = (n->input == i) + (n->op == NNZ_OP_ADD && n->skip == i);
        if (!uses) continue;
        if (who >= 0 || uses > 1) return -1;
        who = j;
    }
    return who;
}

/* The batch norm that absorbs the merged conv's bias when target conv i has none: its sole
 * consumer, if that is a batch norm (BN(x + b) = BN(x) with the running mean moved by b). */
static int bias_absorber(const nnz_model *t, int i) {
    const int j = sole_consumer(t, i);
    return j >= 0 && t->nodes[j].op == NNZ_OP_BATCHNORM ? j : -1;
}

bool nnz_shrink_expandable(const nnz_model *t, int i) {
    const nnz_node *n = &t->nodes[i];
    if (n->op != NNZ_OP_CONV2D || n->groups != 1 || n->k < 2 || n->input < 0) return false;
    for (int j = 0; j < t->n_nodes; j++) /* alone in its block: not part of a block to keep */
        if (j != i && n->block >= 0 && t->nodes[j].block == n->block) return false;
    /* room for "<name>.act1" and its parameters' suffixes */
    if (strlen(n->name) + 6 > NNZ_NAME_MAX - 1) return false;
    return n->has_bias || bias_absorber(t, i) >= 0;
}

nnz_status nnz_shrink_expand(const nnz_model *t, int expansion, uint64_t seed, nnz_model **out, int *expanded) {
    *out = NULL;
    if (expanded) *expanded = 0;
    if (!t || !t->finalized) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_shrink_expand: the target is not finalized");
    if (expansion < 1 || expansion > 64)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "the expansion ratio must be between 1 and 64 (got %d)", expansion);
    nnz_node *specs = calloc((size_t)t->n_nodes * 9 + 1, sizeof *specs);
    int *map = malloc(sizeof *map * ((size_t)t->n_nodes + 1)); /* target node -> expanded node */
    if (!specs || !map) {
        free(specs), free(map);
        return nnz_fail(NNZ_ERR_NOMEM, "out of memory expanding the target");
    }
    int next_block = 0, n = 0, count = 0;
    for (int i = 0; i < t->n_nodes; i++) next_block = t->nodes[i].block >= next_block ? t->nodes[i].block + 1 : next_block;
    for (int i = 0; i < t->n_nodes; i++) {
        const nnz_node *c = &t->nodes[i];
        if (!nnz_shrink_expandable(t, i)) {
            specs[n] = *c;
            if (c->input >= 0) specs[n].input = map[c->input];
            if (c->op == NNZ_OP_ADD && c->skip >= 0) specs[n].skip = map[c->skip];
            map[i] = n++;
            continue;
        }
        /* pw1 (IC -> expansion*IC) -> bn1 -> relu6 -> dw kxk (the conv's stride and pad) -> bn2 -> relu6
         * -> pw2 (-> OC) -> bn3 [-> + input when stride 1 and IC = OC]: the zoo's inverted residual */
        const int input = map[c->input], hidden = expansion * c->in_c, block = next_block++;
        static const char *const part[9] = {"pw1", "bn1", "act1", "dw", "bn2", "act2", "pw2", "bn3", "add"};
        const bool residual = c->stride == 1 && c->in_c == c->out_ch;
        for (int p = 0; p < (residual ? 9 : 8); p++) {
            nnz_node *s = &specs[n];
            snprintf(s->name, sizeof s->name, "%.*s.%s", NNZ_NAME_MAX - 6, c->name, part[p]);
            s->input = p == 0 ? input : n - 1;
            s->skip = p == 8 ? input : -1;
            s->block = block;
            s->stride = 1, s->groups = 1, s->k = 1;
            switch (p) {
            case 0: s->op = NNZ_OP_CONV2D, s->out_ch = hidden; break;
            case 3: s->op = NNZ_OP_CONV2D, s->out_ch = hidden, s->k = c->k, s->stride = c->stride, s->pad = c->pad,
                    s->groups = hidden; break;
            case 6: s->op = NNZ_OP_CONV2D, s->out_ch = c->out_ch; break;
            case 2: case 5: s->op = NNZ_OP_RELU6; break;
            case 8: s->op = NNZ_OP_ADD; break;
            default: s->op = NNZ_OP_BATCHNORM, s->eps = 1e-5f, s->momentum = 0.1f; /* nnz_add_batchnorm's */
            }
            n++;
        }
        map[i] = n - 1;
        count++;
    }
    nnz_model *r = NULL;
    nnz_status s = nnz_model_create(t->in_h, t->in_w, t->in_c, &r);
    for (int i = 0; s == NNZ_OK && i < n; i++) nnz_add_node(r, &specs[i]);
    if (s == NNZ_OK) s = nnz_model_finalize(r, seed);
    free(specs), free(map);
    if (s != NNZ_OK) {
        nnz_model_free(r);
        return s;
    }
    r->compute = t->compute;
    if (expanded) *expanded = count;
    *out = r;
    return NNZ_OK;
}

nnz_status nnz_shrink_to_target(const nnz_model *merged, const nnz_model *t, nnz_model **out) {
    *out = NULL;
    nnz_model *r = NULL;
    NNZ_TRY(nnz_model_create(t->in_h, t->in_w, t->in_c, &r));
    for (int i = 0; i < t->n_nodes; i++) nnz_add_node(r, &t->nodes[i]);
    nnz_status s = nnz_model_finalize(r, 0);
    char name[NNZ_NAME_MAX + 24];
    /* every parameter from the node of the same name, or for an expanded conv T from "T.conv" */
    for (int i = 0; s == NNZ_OK && i < r->n_params; i++) {
        nnz_param *p = &r->params[i];
        const char *node = r->nodes[p->node].name;
        const bool was_expanded = nnz_model_find_node(merged, node) < 0;
        if (was_expanded) snprintf(name, sizeof name, "%s.conv%s", node, p->name + strlen(node));
        else snprintf(name, sizeof name, "%s", p->name);
        const int j = nnz_model_find_param(merged, name);
        if (j < 0) {
            s = nnz_fail(NNZ_ERR_INVALID_ARG, "the merged model has no parameter '%s' for the target's '%s'", name,
                         p->name);
            break;
        }
        const nnz_tensor *src = &merged->params[j].value;
        if (nnz_tensor_numel(src) != nnz_tensor_numel(&p->value))
            s = nnz_fail(NNZ_ERR_INVALID_ARG, "the merged '%s' does not have the target's shape", name);
        else
            memcpy(p->value.data, src->data, nnz_tensor_bytes(&p->value));
    }
    /* a bias the target's conv lacks goes into the batch norm after it: BN(x + b) is BN(x) with mean - b */
    for (int i = 0; s == NNZ_OK && i < t->n_nodes; i++) {
        const nnz_node *c = &t->nodes[i];
        if (c->op != NNZ_OP_CONV2D || c->has_bias || nnz_model_find_node(merged, c->name) >= 0) continue;
        snprintf(name, sizeof name, "%s.conv.bias", c->name);
        const int j = nnz_model_find_param(merged, name), bn = bias_absorber(t, i);
        if (j < 0 || bn < 0) {
            s = nnz_fail(NNZ_ERR_INVALID_ARG, "the merged bias of '%s' has no batch norm to go into", c->name);
            break;
        }
        const float *b = nnz_tensor_f32(&merged->params[j].value);
        float *mean = nnz_tensor_f32(&r->params[r->nodes[bn].running_mean].value);
        for (int o = 0; o < c->out_ch; o++) mean[o] -= b[o];
    }
    if (s != NNZ_OK) {
        nnz_model_free(r);
        return s;
    }
    r->compute = merged->compute;
    r->dropout_rng = merged->dropout_rng;
    *out = r;
    return NNZ_OK;
}
