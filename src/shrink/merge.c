/* The exact merge of an activation-free inverted-residual block into one dense
 * convolution (shrink.h; the algebra is in docs/DEPTHSHRINKER.md).
 *
 * With every batch norm folded into its conv (eval statistics: y = s*x + c with
 * s = gamma/sqrt(var+eps), c = beta - s*mean, plus s*bias for a conv bias):
 *   h1 = A1 x + c1                  pw1, (M,IC); also on pw1's padded ring, where x = 0
 *   h2[m] = sum_t Ad[m,t] h1[m](p+t) + c2[m]     dw, unpadded (the pad-the-input form)
 *   out = A3 h2 + c3 (+ x)          pw2, (OC,M)
 * so out = sum_t K_t x(p+t) + B over the zero-padded block input, with
 *   K[o,t,i] = sum_m A3[o,m] Ad[m,t] A1[m,i]
 *   B[o]     = sum_m A3[o,m] (c2[m] + c1[m] sum_t Ad[m,t]) + c3[o]
 * and, for a residual (stride 1, IC = OC), +1 at K[o,centre,o]. */
#include "shrink/shrink.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const float *pval(const nnz_model *m, int idx) { return idx < 0 ? NULL : nnz_tensor_f32(&m->params[idx].value); }

/* The folded affine map of conv node `conv` followed by batch norm `bn`: per output channel o,
 * scale[o] multiplies the conv's weights and shift[o] is the constant added. */
static void fold(const nnz_model *m, int conv, int bn, double *scale, double *shift) {
    const nnz_node *c = &m->nodes[conv], *b = &m->nodes[bn];
    const float *bias = pval(m, c->bias), *gamma = pval(m, b->weight), *beta = pval(m, b->bias);
    const float *mean = pval(m, b->running_mean), *var = pval(m, b->running_var);
    for (int o = 0; o < c->out_ch; o++) {
        double s = (double)gamma[o] / sqrt((double)var[o] + (double)b->eps);
        scale[o] = s;
        shift[o] = (double)beta[o] - s * (double)mean[o] + (bias ? s * (double)bias[o] : 0.0);
    }
}

nnz_status nnz_shrink_merge_block(const nnz_model *m, const nnz_ir_block *b, float *weight, float *bias) {
    const nnz_node *pw1 = &m->nodes[b->pw1], *dw = &m->nodes[b->dw], *pw2 = &m->nodes[b->pw2];
    const int IC = pw1->in_c, M = pw1->out_ch, OC = pw2->out_ch, T = dw->k * dw->k;
    const float *W1 = pval(m, pw1->weight), *Wd = pval(m, dw->weight), *W3 = pval(m, pw2->weight);
    double *s1 = malloc(sizeof(double) * (size_t)M * 4), *s3 = malloc(sizeof(double) * (size_t)OC * 2);
    double *K = calloc((size_t)OC * T * IC, sizeof(double)), *B = calloc((size_t)OC, sizeof(double));
    double *a1 = malloc(sizeof(double) * (size_t)IC);
    nnz_status st = NNZ_OK;
    if (!s1 || !s3 || !K || !B || !a1) {
        st = nnz_fail(NNZ_ERR_NOMEM, "out of memory merging block '%s'", b->name);
        goto done;
    }
    double *c1 = s1 + M, *s2 = c1 + M, *c2 = s2 + M, *c3 = s3 + OC;
    fold(m, b->pw1, b->bn1, s1, c1);
    fold(m, b->dw, b->bn2, s2, c2);
    fold(m, b->pw2, b->bn3, s3, c3);
    for (int o = 0; o < OC; o++) B[o] = c3[o];
    for (int h = 0; h < M; h++) {
        for (int i = 0; i < IC; i++) a1[i] = s1[h] * (double)W1[(size_t)h * IC + i];
        double adsum = 0;
        for (int t = 0; t < T; t++) adsum += s2[h] * (double)Wd[(size_t)h * T + t];
        for (int o = 0; o < OC; o++) {
            const double a3 = s3[o] * (double)W3[(size_t)o * M + h];
            B[o] += a3 * (c2[h] + c1[h] * adsum);
            for (int t = 0; t < T; t++) {
                const double ad = a3 * s2[h] * (double)Wd[(size_t)h * T + t];
                double *k = K + ((size_t)o * T + t) * IC;
                for (int i = 0; i < IC; i++) k[i] += ad * a1[i];
            }
        }
    }
    if (b->add >= 0) { /* the skip: x(p) is the centre tap of the stride-1 window */
        const int centre = (dw->k / 2) * dw->k + dw->k / 2;
        for (int o = 0; o < OC; o++) K[((size_t)o * T + centre) * IC + o] += 1.0;
    }
    for (size_t e = 0; e < (size_t)OC * T * IC; e++) weight[e] = (float)K[e];
    for (int o = 0; o < OC; o++) bias[o] = (float)B[o];
done:
    free(s1);
    free(s3);
    free(K);
    free(B);
    free(a1);
    return st;
}

nnz_status nnz_shrink_merge(const nnz_model *m, nnz_model **out, int *merged) {
    *out = NULL;
    if (merged) *merged = 0;
    nnz_ir_block *blocks = NULL;
    int nb = 0;
    NNZ_TRY(nnz_shrink_find_blocks(m, &blocks, &nb));
    int *owner = malloc(sizeof *owner * (size_t)m->n_nodes); /* node -> its mergeable block, or -1 */
    int *map = malloc(sizeof *map * (size_t)m->n_nodes);     /* old node -> new node */
    nnz_node *specs = malloc(sizeof *specs * (size_t)m->n_nodes);
    if (!owner || !map || !specs) {
        free(blocks), free(owner), free(map), free(specs);
        return nnz_fail(NNZ_ERR_NOMEM, "out of memory merging the graph");
    }
    for (int i = 0; i < m->n_nodes; i++) owner[i] = -1;
    int count = 0;
    for (int bi = 0; bi < nb; bi++) {
        if (!blocks[bi].mergeable) continue;
        for (int i = blocks[bi].pw1; i <= blocks[bi].last; i++) owner[i] = bi;
        count++;
    }
    int n = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        const nnz_node *nd = &m->nodes[i];
        if (owner[i] >= 0) {
            const nnz_ir_block *b = &blocks[owner[i]];
            if (i == b->pw1) { /* the block becomes one conv where it started */
                const nnz_node *dw = &m->nodes[b->dw];
                nnz_node c;
                memset(&c, 0, sizeof c);
                c.op = NNZ_OP_CONV2D;
                snprintf(c.name, sizeof c.name, "%.*s.conv", NNZ_NAME_MAX - 6, b->name);
                c.input = b->input < 0 ? -1 : map[b->input];
                c.skip = -1;
                c.block = b->id;
                c.out_ch = m->nodes[b->pw2].out_ch;
                c.k = dw->k, c.stride = dw->stride, c.pad = nd->pad, c.groups = 1;
                c.has_bias = true;
                specs[n++] = c;
            }
            map[i] = n - 1;
            continue;
        }
        specs[n] = *nd;
        if (nd->input >= 0) specs[n].input = map[nd->input];
        if (nd->op == NNZ_OP_ADD && nd->skip >= 0) specs[n].skip = map[nd->skip];
        map[i] = n++;
    }
    nnz_model *r = NULL;
    nnz_status s = nnz_shrink_rebuild(m, specs, n, &r);
    for (int bi = 0; s == NNZ_OK && bi < nb; bi++) {
        if (!blocks[bi].mergeable) continue;
        const nnz_node *c = &r->nodes[map[blocks[bi].pw1]];
        s = nnz_shrink_merge_block(m, &blocks[bi], nnz_tensor_f32(&r->params[c->weight].value),
                                   nnz_tensor_f32(&r->params[c->bias].value));
    }
    free(blocks), free(owner), free(map), free(specs);
    if (s != NNZ_OK) {
        nnz_model_free(r);
        return s;
    }
    if (merged) *merged = count;
    *out = r;
    return NNZ_OK;
}
