/* shrink: the exact merge. For every inverted-residual block type of the zoo
 * (expansion 1 and 6, stride 1 and 2, with and without the residual), the merged
 * model equals the activation-removed model in the pad-the-input form (eval mode,
 * random batch-norm statistics) to 1e-5 relative in fp32; with the padding left on
 * the depthwise conv it agrees only away from the border (the problem the form
 * solves); and a whole mbv2-tiny with four blocks removed merges exactly. */
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "shrink/shrink.h"

#define TOL 1e-5

/* Batch-norm parameters and statistics far from the identity, so folding is exercised. */
static void randomize_bn(nnz_model *m, uint64_t seed) {
    for (int i = 0; i < m->n_params; i++) {
        nnz_param *p = &m->params[i];
        if (m->nodes[p->node].op != NNZ_OP_BATCHNORM) continue;
        const char *suffix = strrchr(p->name, '.');
        float lo = -0.5f, hi = 0.5f;                                  /* beta, running_mean */
        if (strcmp(suffix, ".weight") == 0) lo = 0.5f, hi = 1.5f;      /* gamma */
        if (strcmp(suffix, ".running_var") == 0) lo = 0.5f, hi = 2.0f; /* var */
        tu_fill_uniform(nnz_tensor_f32(&p->value), nnz_tensor_numel(&p->value), lo, hi, seed + (uint64_t)i);
    }
}

/* The zoo's mbv2_block, alone: input (h,w,in) -> block -> flatten, so the output is the block's. */
static nnz_model *block_model(int hw, int in, int out, int stride, int expansion, uint64_t seed) {
    nnz_model *m;
    assert_int_equal(nnz_model_create(hw, hw, in, &m), NNZ_OK);
    nnz_block_begin(m);
    nnz_add_conv2d(m, "b.pw1", in * expansion, 1, 1, 0, 1, false);
    nnz_add_batchnorm(m, "b.bn1");
    nnz_add_activation(m, "b.act1", NNZ_OP_RELU6);
    nnz_add_conv2d(m, "b.dw", in * expansion, 3, stride, 1, in * expansion, false);
    nnz_add_batchnorm(m, "b.bn2");
    nnz_add_activation(m, "b.act2", NNZ_OP_RELU6);
    nnz_add_conv2d(m, "b.pw2", out, 1, 1, 0, 1, false);
    nnz_add_batchnorm(m, "b.bn3");
    if (stride == 1 && in == out) nnz_add_residual(m, "b.add", -1);
    nnz_block_end(m);
    nnz_add_flatten(m, "flat");
    if (nnz_model_finalize(m, seed) != NNZ_OK) fail_msg("%s", nnz_last_error());
    randomize_bn(m, seed * 31);
    return m;
}

/* Removes the activations of every block listed (all when list is NULL). */
static nnz_model *removed(const nnz_model *m, const int *list, int nlist) {
    nnz_ir_block *blocks;
    int nb;
    assert_int_equal(nnz_shrink_find_blocks(m, &blocks, &nb), NNZ_OK);
    bool *rm = calloc((size_t)nb, sizeof *rm);
    for (int i = 0; i < nb; i++) rm[i] = list == NULL;
    for (int i = 0; list && i < nlist; i++) rm[list[i]] = true;
    nnz_model *r;
    if (nnz_shrink_remove(m, blocks, nb, rm, &r) != NNZ_OK) fail_msg("%s", nnz_last_error());
    free(rm);
    free(blocks);
    return r;
}

/* The same graph with the activations turned into identities but the padding left on dw. */
static nnz_model *removed_naive(const nnz_model *m) {
    nnz_node *specs = malloc(sizeof *specs * (size_t)m->n_nodes);
    memcpy(specs, m->nodes, sizeof *specs * (size_t)m->n_nodes);
    for (int i = 0; i < m->n_nodes; i++)
        if (specs[i].op == NNZ_OP_RELU6) specs[i].op = NNZ_OP_IDENTITY;
    nnz_model *r;
    assert_int_equal(nnz_shrink_rebuild(m, specs, m->n_nodes, &r), NNZ_OK);
    free(specs);
    return r;
}

static float *predict(nnz_model *m, const float *x, int n) {
    float *y = malloc(sizeof(float) * (size_t)n * (size_t)m->num_classes);
    if (nnz_model_predict(m, x, n, y) != NNZ_OK) fail_msg("%s", nnz_last_error());
    return y;
}

/* max |a-b| / max |b| over indices with want(i) (all when want is NULL) */
static double rel_err(const float *a, const float *b, int64_t n, bool (*want)(int64_t, const void *),
                      const void *ctx) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        if (fabs((double)b[i]) > den) den = fabs((double)b[i]);
        if (want && !want(i, ctx)) continue;
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > num) num = d;
    }
    return num / (den > 0 ? den : 1);
}

typedef struct { int oh, ow, c, in_hw, stride; bool border; } where_ctx;
/* Output element i of an image-major (n,oh,ow,c) tensor: is its 3x3 window (pad 1) partly outside the input? */
static bool on_border(int64_t i, const void *p) {
    const where_ctx *w = p;
    int64_t pix = (i / w->c) % ((int64_t)w->oh * w->ow);
    int r = (int)(pix / w->ow), q = (int)(pix % w->ow);
    int r0 = r * w->stride - 1, q0 = q * w->stride - 1;
    bool border = r0 < 0 || q0 < 0 || r0 + 2 >= w->in_hw || q0 + 2 >= w->in_hw;
    return border == w->border;
}

typedef struct { int hw, in, out, stride, expansion; } block_case;

static void check_block(const block_case *bc, uint64_t seed) {
    const int n = 3;
    nnz_model *orig = block_model(bc->hw, bc->in, bc->out, bc->stride, bc->expansion, seed);
    nnz_model *rem = removed(orig, NULL, 0);
    nnz_model *merged;
    int count = 0;
    if (nnz_shrink_merge(rem, &merged, &count) != NNZ_OK) fail_msg("%s", nnz_last_error());
    assert_int_equal(count, 1);
    /* one conv (+ flatten) is all that is left */
    assert_int_equal(merged->n_nodes, 2);
    assert_int_equal(merged->nodes[0].op, NNZ_OP_CONV2D);
    assert_int_equal(merged->nodes[0].groups, 1);
    assert_int_equal(merged->nodes[0].stride, bc->stride);

    int64_t in_numel = (int64_t)n * bc->hw * bc->hw * bc->in;
    float *x = malloc(sizeof(float) * (size_t)in_numel);
    tu_fill_uniform(x, in_numel, -2.0f, 2.0f, seed + 7);
    float *want = predict(rem, x, n), *got = predict(merged, x, n);
    int64_t out_numel = (int64_t)n * rem->num_classes;
    double err = rel_err(got, want, out_numel, NULL, NULL);
    if (err > TOL)
        fail_msg("block %dx%d in %d out %d stride %d expansion %d: merged vs removed rel err %.3g > %g", bc->hw,
                 bc->hw, bc->in, bc->out, bc->stride, bc->expansion, err, TOL);

    /* the padding problem: with dw padding the intermediate, only the interior agrees */
    nnz_model *naive = removed_naive(orig);
    float *nv = predict(naive, x, n);
    const nnz_node *last_bn = &rem->nodes[rem->n_nodes - 2];
    where_ctx w = {last_bn->h, last_bn->w, last_bn->c, bc->hw, bc->stride, false};
    double inner = rel_err(got, nv, out_numel, on_border, &w);
    w.border = true;
    double border = rel_err(got, nv, out_numel, on_border, &w);
    if (inner > TOL) fail_msg("interior differs from the naive removal: %.3g", inner);
    if (border < 1e-3)
        fail_msg("the border should differ from the naive removal (bn1's bias is padded), got %.3g", border);

    free(x), free(want), free(got), free(nv);
    nnz_model_free(orig), nnz_model_free(rem), nnz_model_free(merged), nnz_model_free(naive);
}

static void test_every_block_type(void **state) {
    (void)state;
    static const block_case cases[] = {
        {8, 16, 16, 1, 1}, /* mbv2-tiny block 0: expansion 1, residual */
        {7, 4, 4, 1, 1},   /* expansion 1, residual, odd size */
        {7, 4, 6, 2, 1},   /* expansion 1, stride 2 */
        {8, 4, 6, 1, 1},   /* expansion 1, stride 1, in != out: no residual */
        {8, 4, 4, 1, 6},   /* expansion 6, residual */
        {7, 4, 6, 2, 6},   /* expansion 6, stride 2, odd size */
        {8, 4, 6, 2, 6},   /* expansion 6, stride 2, even size */
        {6, 5, 8, 1, 6},   /* expansion 6, stride 1, no residual (as mbv2-tiny block 5) */
        {14, 24, 24, 1, 6} /* mbv2-tiny block 2's shape */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_block(&cases[i], 100 + i);
}

/* a whole mbv2-tiny, blocks 0 (expansion 1), 1 (stride 2), 2 (residual) and 5 removed and merged */
static void test_mbv2_tiny(void **state) {
    (void)state;
    nnz_model *orig;
    assert_int_equal(nnz_model_from_zoo("mbv2-tiny", 28, 28, 1, 10, 5, &orig), NNZ_OK);
    randomize_bn(orig, 77);
    nnz_ir_block *blocks;
    int nb;
    assert_int_equal(nnz_shrink_find_blocks(orig, &blocks, &nb), NNZ_OK);
    assert_int_equal(nb, 6);
    assert_string_equal(blocks[3].name, "blocks.3");
    assert_true(blocks[0].add >= 0 && blocks[1].add < 0 && blocks[5].add < 0);
    /* --cost-aware: merging pays for every block but the expansion-1 blocks.0 (656 -> 2,304
     * multiply-adds per pixel; blocks.2 24 -> 24 at expansion 6: 8,208 -> 5,184) */
    for (int i = 0; i < nb; i++)
        if (nnz_shrink_merge_pays(orig, &blocks[i]) != (i != 0))
            fail_msg("merge_pays(%s) should be %s", blocks[i].name, i != 0 ? "true" : "false");
    free(blocks);
    const int list[] = {0, 1, 2, 5};
    nnz_model *rem = removed(orig, list, 4), *merged;
    int count = 0;
    assert_int_equal(nnz_shrink_merge(rem, &merged, &count), NNZ_OK);
    assert_int_equal(count, 4);
    assert_int_equal(merged->n_nodes, rem->n_nodes - 30); /* 9, 8, 9 and 8 nodes -> 1 each */
    assert_true(nnz_model_find_param(merged, "blocks.1.conv.weight") >= 0);
    assert_true(nnz_model_find_param(merged, "blocks.3.pw1.weight") >= 0);
    const int n = 5;
    float *x = malloc(sizeof(float) * n * 28 * 28);
    tu_fill_uniform(x, n * 28 * 28, -2.0f, 2.0f, 9);
    float *want = predict(rem, x, n), *got = predict(merged, x, n);
    double err = rel_err(got, want, n * 10, NULL, NULL);
    if (err > TOL) fail_msg("mbv2-tiny merged vs removed logits: rel err %.3g > %g", err, TOL);
    /* the merged model survives the architecture JSON */
    char *json;
    assert_int_equal(nnz_model_to_json(merged, &json), NNZ_OK);
    nnz_model *back;
    assert_int_equal(nnz_model_from_json(json, 1, &back), NNZ_OK);
    assert_int_equal(back->n_nodes, merged->n_nodes);
    free(json);
    nnz_model_free(back);
    free(x), free(want), free(got);
    nnz_model_free(orig), nnz_model_free(rem), nnz_model_free(merged);
}

/* blocks that are not removed, or removed with the padding still on dw, are left alone */
static void test_only_mergeable(void **state) {
    (void)state;
    nnz_model *orig = block_model(8, 4, 4, 1, 6, 3), *merged;
    int count = -1;
    assert_int_equal(nnz_shrink_merge(orig, &merged, &count), NNZ_OK);
    assert_int_equal(count, 0);
    assert_int_equal(merged->n_nodes, orig->n_nodes);
    nnz_model_free(merged);
    nnz_model *naive = removed_naive(orig);
    nnz_ir_block *blocks;
    int nb;
    assert_int_equal(nnz_shrink_find_blocks(naive, &blocks, &nb), NNZ_OK);
    assert_int_equal(nb, 1);
    assert_true(blocks[0].removed && !blocks[0].mergeable);
    free(blocks);
    assert_int_equal(nnz_shrink_merge(naive, &merged, &count), NNZ_OK);
    assert_int_equal(count, 0);
    nnz_model_free(merged);
    nnz_model_free(naive);
    nnz_model_free(orig);
    /* no blocks at all */
    nnz_model *lenet;
    assert_int_equal(nnz_model_from_zoo("lenet5", 28, 28, 1, 10, 1, &lenet), NNZ_OK);
    assert_int_equal(nnz_shrink_find_blocks(lenet, &blocks, &nb), NNZ_OK);
    assert_int_equal(nb, 0);
    assert_null(blocks);
    nnz_model_free(lenet);
}

static void test_keep_count(void **state) {
    (void)state;
    assert_int_equal(nnz_shrink_keep_count(0.8f, 6), 5);
    assert_int_equal(nnz_shrink_keep_count(0.6f, 6), 4);
    assert_int_equal(nnz_shrink_keep_count(0.4f, 6), 2);
    assert_int_equal(nnz_shrink_keep_count(0.2f, 6), 1);
    assert_int_equal(nnz_shrink_keep_count(0.5f, 6), 3);
    assert_int_equal(nnz_shrink_keep_count(0.25f, 6), 2); /* halves up */
    assert_int_equal(nnz_shrink_keep_count(0.0f, 6), 0);
    assert_int_equal(nnz_shrink_keep_count(1.0f, 6), 6);
    assert_int_equal(nnz_shrink_keep_count(0.05f, 6), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_block_type),
        cmocka_unit_test(test_mbv2_tiny),
        cmocka_unit_test(test_only_mergeable),
        cmocka_unit_test(test_keep_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
