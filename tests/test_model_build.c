/* nn: the graph builder and the zoo: shapes, parameter counts and names,
 * initialisation, FLOPs, and the errors of bad graphs. */
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nn.h"

static nnz_model *zoo(const char *name, int h, int w, int c, int classes, uint64_t seed) {
    nnz_model *m = NULL;
    nnz_status s = nnz_model_from_zoo(name, h, w, c, classes, seed, &m);
    if (s != NNZ_OK) fail_msg("%s: %s", name, nnz_last_error());
    return m;
}

static int find_node(const nnz_model *m, const char *name) {
    const int i = nnz_model_find_node(m, name);
    if (i < 0) fail_msg("no node '%s'", name);
    return i;
}

static void assert_shape(const nnz_model *m, const char *name, int h, int w, int c) {
    const nnz_node *n = &m->nodes[find_node(m, name)];
    if (n->h != h || n->w != w || n->c != c)
        fail_msg("%s: shape (%d,%d,%d), expected (%d,%d,%d)", name, n->h, n->w, n->c, h, w, c);
}

static int64_t param_count(const char *name, int h, int w, int c, int classes) {
    nnz_model *m = zoo(name, h, w, c, classes, 1);
    nnz_model_stats st;
    nnz_model_get_stats(m, &st);
    assert_int_equal(st.num_classes, classes);
    nnz_model_free(m);
    return st.params;
}

static void test_mbv2_tiny_structure(void **state) {
    (void)state;
    nnz_model *m = zoo("mbv2-tiny", 28, 28, 1, 10, 1);
    nnz_model_stats st;
    nnz_model_get_stats(m, &st);
    assert_int_equal(st.params, 80266);
    assert_int_equal(m->num_classes, 10);
    assert_shape(m, "stem.act", 28, 28, 16);
    assert_shape(m, "blocks.0.add", 28, 28, 16);
    assert_shape(m, "blocks.1.pw1", 28, 28, 96);
    assert_shape(m, "blocks.1.dw", 14, 14, 96);
    assert_shape(m, "blocks.1.bn3", 14, 14, 24);
    assert_shape(m, "blocks.3.dw", 7, 7, 144);
    assert_shape(m, "blocks.5.bn3", 7, 7, 64);
    assert_shape(m, "head.act", 7, 7, 256);
    assert_shape(m, "pool", 1, 1, 256);
    assert_shape(m, "fc", 1, 1, 10);
    /* residuals only where stride 1 and in == out, fed by the block input */
    assert_int_equal(m->nodes[find_node(m, "blocks.0.add")].skip, find_node(m, "stem.act"));
    assert_int_equal(m->nodes[find_node(m, "blocks.2.add")].skip, find_node(m, "blocks.1.bn3"));
    assert_int_equal(m->nodes[find_node(m, "blocks.4.add")].skip, find_node(m, "blocks.3.bn3"));
    for (int i = 0; i < m->n_nodes; i++) {
        const char *nm = m->nodes[i].name;
        assert_false(strcmp(nm, "blocks.1.add") == 0 || strcmp(nm, "blocks.3.add") == 0 ||
                     strcmp(nm, "blocks.5.add") == 0);
        /* block ids: blocks.<i>.* is block i, the rest none */
        int expect = -1;
        if (strncmp(nm, "blocks.", 7) == 0) expect = nm[7] - '0';
        assert_int_equal(m->nodes[i].block, expect);
    }
    const nnz_node *dw = &m->nodes[find_node(m, "blocks.1.dw")];
    assert_int_equal(dw->groups, 96);
    assert_int_equal(dw->stride, 2);
    /* buffers: running mean + var of every BN */
    int64_t bn_channels = 0;
    for (int i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].op == NNZ_OP_BATCHNORM) bn_channels += m->nodes[i].c;
    assert_int_equal(st.buffers, 2 * bn_channels);
    nnz_model_free(m);
}

static void test_zoo_parameter_counts(void **state) {
    (void)state;
    assert_int_equal(param_count("mlp", 28, 28, 1, 10), 1863690);
    /* lenet5: conv1 5*5*1*32+32, conv2 5*5*32*64+64, fc1 (7*7*64)*512+512, fc2 512*10+10 */
    assert_int_equal(param_count("lenet5", 28, 28, 1, 10), 832 + 51264 + 1606144 + 5130);
    /* vgg8: 3x3 convs without bias + BN (2 per channel); 28 -> 14 -> 7 -> 3 after the pools */
    int64_t vgg = 9 * 1 * 64 + 9 * 64 * 64 + 9 * 64 * 128 + 9 * 128 * 128 + 9 * 128 * 256 + 9 * 256 * 256 +
                  2 * (64 + 64 + 128 + 128 + 256 + 256) + (3 * 3 * 256) * 256 + 256 + 256 * 10 + 10;
    assert_int_equal(param_count("vgg8", 28, 28, 1, 10), vgg);
    /* CIFAR-shaped input: only the stem sees the 3 channels (+2*9*16 weights) */
    assert_int_equal(param_count("mbv2-tiny", 32, 32, 3, 10), 80266 + 2 * 9 * 16);
    assert_int_equal(param_count("mbv2-tiny", 28, 28, 1, 100), 80266 + 90 * 257);
}

static void test_zoo_names_and_errors(void **state) {
    (void)state;
    const char *const *names = nnz_zoo_names();
    int n = 0;
    for (; names[n]; n++) {
        nnz_model *m = NULL;
        assert_int_equal(nnz_zoo_build(names[n], 28, 28, 1, 10, &m), NNZ_OK);
        assert_false(m->finalized);
        nnz_model_free(m);
    }
    assert_int_equal(n, 4);
    nnz_model *m = (nnz_model *)&n;
    assert_int_equal(nnz_model_from_zoo("resnet50", 28, 28, 1, 10, 1, &m), NNZ_ERR_INVALID_ARG);
    assert_null(m);
    assert_non_null(strstr(nnz_last_error(), "resnet50"));
    assert_non_null(strstr(nnz_last_error(), "mbv2-tiny"));
    /* vgg8's three pools need at least 8x8 */
    assert_int_equal(nnz_model_from_zoo("vgg8", 4, 4, 1, 10, 1, &m), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "does not fit"));
    assert_int_equal(nnz_model_from_zoo("mlp", 28, 28, 1, 0, 1, &m), NNZ_ERR_INVALID_ARG);
    assert_int_equal(nnz_model_from_zoo("mlp", 0, 28, 1, 10, 1, &m), NNZ_ERR_INVALID_ARG);
}

static const nnz_param *param(const nnz_model *m, const char *name) {
    int i = nnz_model_find_param(m, name);
    if (i < 0) fail_msg("no parameter '%s'", name);
    return &m->params[i];
}

static void assert_param_shape(const nnz_model *m, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2,
                               int64_t d3) {
    const nnz_param *p = param(m, name);
    int64_t want[4] = {d0, d1, d2, d3};
    assert_int_equal(p->value.ndim, ndim);
    for (int i = 0; i < ndim; i++) assert_int_equal(p->value.shape[i], want[i]);
}

static void test_parameter_names_layouts_flags(void **state) {
    (void)state;
    nnz_model *m = zoo("lenet5", 28, 28, 1, 10, 3);
    assert_param_shape(m, "conv1.weight", 4, 32, 5, 5, 1);
    assert_param_shape(m, "conv2.weight", 4, 64, 5, 5, 32);
    assert_param_shape(m, "conv2.bias", 1, 64, 0, 0, 0);
    assert_param_shape(m, "fc1.weight", 2, 512, 7 * 7 * 64, 0, 0);
    assert_param_shape(m, "fc2.weight", 2, 10, 512, 0, 0);
    assert_int_equal(nnz_model_find_param(m, "conv1.running_mean"), -1);
    assert_int_equal(nnz_model_find_param(m, "nope"), -1);
    assert_int_equal(m->n_params, 8);
    assert_true(param(m, "conv1.bias")->no_decay);
    assert_false(param(m, "conv1.weight")->no_decay);
    nnz_model_free(m);

    m = zoo("mbv2-tiny", 28, 28, 1, 10, 3);
    assert_param_shape(m, "blocks.1.dw.weight", 4, 96, 3, 3, 1);
    assert_param_shape(m, "blocks.1.pw2.weight", 4, 24, 1, 1, 96);
    assert_int_equal(nnz_model_find_param(m, "stem.conv.bias"), -1);
    const char *sfx[4] = {".weight", ".bias", ".running_mean", ".running_var"};
    const float init[4] = {1, 0, 0, 1};
    for (int k = 0; k < 4; k++) {
        char nm[96];
        snprintf(nm, sizeof nm, "blocks.3.bn2%s", sfx[k]);
        const nnz_param *p = param(m, nm);
        assert_int_equal(p->value.shape[0], 144);
        assert_int_equal(p->trainable, k < 2);
        assert_int_equal(p->no_decay, k < 2);
        assert_int_equal(p->grad != NULL, k < 2);
        assert_int_equal(p->node, find_node(m, "blocks.3.bn2"));
        for (int e = 0; e < 144; e++) assert_float_equal(nnz_tensor_f32(&p->value)[e], init[k], 0);
    }
    const nnz_node *bn = &m->nodes[find_node(m, "blocks.3.bn2")];
    assert_string_equal(m->params[bn->running_var].name, "blocks.3.bn2.running_var");
    assert_float_equal(bn->eps, 1e-5f, 0);
    assert_float_equal(bn->momentum, 0.1f, 0);
    nnz_model_free(m);
}

/* U(-b, b) with b = 1/sqrt(fan_in): inside the bound, spread over it, variance b^2/3. */
static void check_uniform(const nnz_param *p, int64_t fan_in) {
    int64_t n = nnz_tensor_numel(&p->value);
    const float *v = nnz_tensor_f32(&p->value);
    double b = 1.0 / sqrt((double)fan_in), mx = 0, sum = 0, sq = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!(fabs(v[i]) <= b)) fail_msg("%s[%lld] = %g outside +-%g", p->name, (long long)i, v[i], b);
        mx = fmax(mx, fabs(v[i]));
        sum += v[i];
        sq += (double)v[i] * v[i];
    }
    assert_true(mx > 0.8 * b);
    if (n >= 10000) { /* enough samples for the moments: 5 sigma bounds */
        double mean = sum / n, var = sq / n;
        assert_true(fabs(mean) < 5 * b / sqrt(3.0 * n));
        assert_true(fabs(var / (b * b / 3) - 1) < 5 * sqrt(0.8 / n));
    }
}

static void test_init_distribution_and_seed(void **state) {
    (void)state;
    nnz_model *a = zoo("lenet5", 28, 28, 1, 10, 11), *b = zoo("lenet5", 28, 28, 1, 10, 11);
    nnz_model *c = zoo("lenet5", 28, 28, 1, 10, 12);
    check_uniform(param(a, "conv1.weight"), 25);
    check_uniform(param(a, "conv1.bias"), 25);
    check_uniform(param(a, "conv2.weight"), 25 * 32);
    check_uniform(param(a, "fc1.weight"), 3136);
    check_uniform(param(a, "fc1.bias"), 3136);
    for (int i = 0; i < a->n_params; i++) {
        size_t bytes = nnz_tensor_bytes(&a->params[i].value);
        assert_memory_equal(a->params[i].value.data, b->params[i].value.data, bytes);
        assert_memory_not_equal(a->params[i].value.data, c->params[i].value.data, bytes);
        for (int64_t e = 0; e < nnz_tensor_numel(&a->params[i].value); e++) assert_float_equal(a->params[i].grad[e], 0, 0);
    }
    nnz_model_free(a);
    nnz_model_free(b);
    nnz_model_free(c);

    nnz_model *m = zoo("mbv2-tiny", 28, 28, 1, 10, 5);
    check_uniform(param(m, "blocks.2.dw.weight"), 9); /* depthwise: fan_in = 1*3*3 */
    check_uniform(param(m, "head.conv.weight"), 64);
    check_uniform(param(m, "fc.weight"), 256);
    /* each tensor has its own stream: two same-shaped tensors differ */
    assert_int_equal(nnz_tensor_numel(&param(m, "blocks.3.dw.weight")->value), 144 * 9);
    assert_memory_not_equal(param(m, "blocks.2.dw.weight")->value.data, param(m, "blocks.3.dw.weight")->value.data,
                            4 * 144 * 9);
    nnz_model_free(m);
}

/* input 4x4x2 -> conv 3x3 (3, pad 1, bias) -> bn -> relu -> add(bn) -> maxpool 2/2
 * -> dw conv 3x3 pad 1 -> global avg pool -> linear 5 */
static void test_flops_and_shapes_of_small_graph(void **state) {
    (void)state;
    nnz_model *m;
    assert_int_equal(nnz_model_create(4, 4, 2, &m), NNZ_OK);
    assert_int_equal(nnz_add_conv2d(m, "c", 3, 3, 1, 1, 1, true), 0);
    int bn = nnz_add_batchnorm(m, "bn");
    nnz_add_activation(m, "r", NNZ_OP_RELU);
    nnz_add_residual(m, "res", bn);
    nnz_add_pool(m, "mp", NNZ_OP_MAXPOOL, 2, 2, 0);
    nnz_add_conv2d(m, "dw", 3, 3, 1, 1, 3, false);
    nnz_add_global_avgpool(m, "gap");
    assert_int_equal(nnz_add_linear(m, "fc", 5, true), 7);
    assert_int_equal(nnz_model_finalize(m, 1), NNZ_OK);
    int64_t want[8] = {
        2 * (4 * 4 * 3) * (2 * 3 * 3), /* conv: 2 per MAC, (IC/groups)*k*k MACs per output */
        2 * 48,                        /* bn: one multiply-add per element */
        0,                             /* relu */
        48,                            /* add */
        0,                             /* maxpool */
        2 * (2 * 2 * 3) * (1 * 3 * 3), /* depthwise */
        2 * 2 * 3,                     /* global average: one add per input */
        2 * 3 * 5,                     /* linear */
    };
    int64_t total = 0;
    for (int i = 0; i < 8; i++) {
        assert_int_equal(m->nodes[i].flops, want[i]);
        total += want[i];
    }
    nnz_model_stats st;
    nnz_model_get_stats(m, &st);
    assert_int_equal(st.flops, total);
    assert_int_equal(st.layers, 8);
    assert_int_equal(st.params, (3 * 3 * 3 * 2 + 3) + 2 * 3 + 3 * 3 * 3 + (5 * 3 + 5));
    assert_int_equal(st.buffers, 6);
    assert_shape(m, "mp", 2, 2, 3);
    assert_shape(m, "gap", 1, 1, 3);
    assert_int_equal(m->nodes[7].in_c, 3);
    assert_int_equal(m->num_classes, 5);

    char buf[4096];
    nnz_model_summary(m, buf, sizeof buf);
    assert_non_null(strstr(buf, "res"));
    assert_non_null(strstr(buf, "global_avgpool"));
    assert_non_null(strstr(buf, "(2,2,3)"));
    char tiny[20];
    memset(tiny, 'x', sizeof tiny);
    nnz_model_summary(m, tiny, 10); /* cut, terminated, nothing written past len */
    assert_int_equal(strlen(tiny), 9);
    assert_int_equal(tiny[10], 'x');

    /* flatten keeps (h,w,c) as features; avgpool counts k*k adds per output */
    nnz_model_free(m);
    assert_int_equal(nnz_model_create(6, 6, 2, &m), NNZ_OK);
    nnz_add_pool(m, "ap", NNZ_OP_AVGPOOL, 3, 2, 1);
    nnz_add_flatten(m, "f");
    nnz_add_dropout(m, "d", 0.5f);
    nnz_add_linear(m, "fc", 4, false);
    assert_int_equal(nnz_model_finalize(m, 1), NNZ_OK);
    assert_shape(m, "ap", 3, 3, 2);
    assert_int_equal(m->nodes[0].flops, 3 * 3 * 2 * 9);
    assert_shape(m, "f", 1, 1, 18);
    assert_int_equal(nnz_model_find_param(m, "fc.bias"), -1);
    assert_int_equal(m->nodes[3].bias, -1);
    nnz_model_free(m);
}

/* Builds input -> conv(4) and lets add() append more; returns finalize's status. */
typedef void (*graph_fn)(nnz_model *m);
static nnz_status try_graph(graph_fn add, const char *expect) {
    nnz_model *m;
    assert_int_equal(nnz_model_create(8, 8, 4, &m), NNZ_OK);
    add(m);
    nnz_status s = nnz_model_finalize(m, 1);
    if (s == NNZ_OK) fail_msg("graph expected to fail with '%s' was accepted", expect);
    if (!strstr(nnz_last_error(), expect)) fail_msg("error '%s' does not mention '%s'", nnz_last_error(), expect);
    assert_false(m->finalized);
    assert_int_equal(m->n_params, 0);
    nnz_model_free(m);
    return s;
}

static void g_add_shapes(nnz_model *m) {
    int c = nnz_add_conv2d(m, "c", 4, 3, 1, 1, 1, false);
    nnz_add_conv2d(m, "c2", 8, 3, 1, 1, 1, false);
    nnz_add_residual(m, "add", c);
    nnz_add_global_avgpool(m, "g");
}
static void g_add_spatial(nnz_model *m) {
    nnz_add_conv2d(m, "c", 4, 3, 2, 1, 1, false);
    nnz_add_residual(m, "add", -1); /* 4x4x4 + the 8x8x4 input */
    nnz_add_global_avgpool(m, "g");
}
static void g_linear_after_conv(nnz_model *m) {
    nnz_add_conv2d(m, "c", 4, 3, 1, 1, 1, false);
    nnz_add_linear(m, "fc", 10, true);
}
static void g_groups(nnz_model *m) {
    nnz_add_conv2d(m, "c", 6, 3, 1, 1, 4, false); /* 4 in, 6 out, groups 4 */
    nnz_add_global_avgpool(m, "g");
}
static void g_groups_in(nnz_model *m) {
    nnz_add_conv2d(m, "c", 6, 3, 1, 1, 3, false); /* 4 in not divisible by 3 */
    nnz_add_global_avgpool(m, "g");
}
static void g_forward_ref(nnz_model *m) {
    nnz_node n;
    memset(&n, 0, sizeof n);
    n.op = NNZ_OP_RELU;
    strcpy(n.name, "r");
    n.input = 0; /* there is no node 0 yet */
    n.block = -1;
    assert_int_equal(nnz_add_node(m, &n), -1);
}
static void g_skip_ref(nnz_model *m) {
    nnz_add_global_avgpool(m, "g");
    nnz_add_residual(m, "add", 5);
}
static void g_dup(nnz_model *m) {
    nnz_add_conv2d(m, "c", 4, 3, 1, 1, 1, false);
    nnz_add_activation(m, "c", NNZ_OP_RELU);
    nnz_add_global_avgpool(m, "g");
}
static void g_empty(nnz_model *m) { (void)m; }
static void g_spatial_end(nnz_model *m) { nnz_add_conv2d(m, "c", 4, 3, 1, 1, 1, false); }
static void g_kernel_too_big(nnz_model *m) {
    nnz_add_conv2d(m, "c", 4, 11, 1, 1, 1, false);
    nnz_add_global_avgpool(m, "g");
}
static void g_pool_pad(nnz_model *m) {
    nnz_add_pool(m, "p", NNZ_OP_MAXPOOL, 2, 2, 2);
    nnz_add_global_avgpool(m, "g");
}
static void g_bad_name(nnz_model *m) {
    nnz_add_global_avgpool(m, "has space");
}
static void g_long_name(nnz_model *m) {
    char name[200];
    memset(name, 'a', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    nnz_add_global_avgpool(m, name);
}
static void g_null_name(nnz_model *m) { nnz_add_global_avgpool(m, NULL); }
static void g_dropout_p(nnz_model *m) {
    nnz_add_global_avgpool(m, "g");
    nnz_add_dropout(m, "d", 1.0f);
}
static void g_zero_out(nnz_model *m) {
    nnz_add_global_avgpool(m, "g");
    nnz_add_linear(m, "fc", 0, true);
}
static void g_open_block(nnz_model *m) {
    nnz_block_begin(m);
    nnz_add_global_avgpool(m, "g");
}
static void g_nested_block(nnz_model *m) {
    nnz_block_begin(m);
    nnz_block_begin(m);
    nnz_add_global_avgpool(m, "g");
    nnz_block_end(m);
}
static void g_wrong_activation(nnz_model *m) {
    nnz_add_global_avgpool(m, "g");
    nnz_add_activation(m, "a", NNZ_OP_LINEAR);
}
/* The first error is the one reported, whatever follows. */
static void g_first_error_wins(nnz_model *m) {
    nnz_add_conv2d(m, "c", 4, 0, 1, 0, 1, false); /* kernel 0 */
    nnz_add_global_avgpool(m, "g");
    nnz_add_linear(m, "fc", -5, true);
}

static void test_bad_graphs_fail_clearly(void **state) {
    (void)state;
    try_graph(g_add_shapes, "differ in shape");
    try_graph(g_add_spatial, "(model input)");
    try_graph(g_linear_after_conv, "add a flatten or global_avgpool");
    try_graph(g_groups, "divisible by groups");
    try_graph(g_groups_in, "divisible by groups");
    try_graph(g_forward_ref, "earlier node");
    try_graph(g_skip_ref, "earlier node");
    try_graph(g_dup, "used twice");
    try_graph(g_empty, "no nodes");
    try_graph(g_spatial_end, "end the model");
    try_graph(g_kernel_too_big, "does not fit");
    try_graph(g_pool_pad, "more than half");
    try_graph(g_bad_name, "bad name");
    try_graph(g_long_name, "bad name");
    try_graph(g_null_name, "bad name");
    try_graph(g_dropout_p, "[0,1)");
    try_graph(g_zero_out, "output channels");
    try_graph(g_open_block, "not ended");
    try_graph(g_nested_block, "do not nest");
    try_graph(g_wrong_activation, "not relu");
    try_graph(g_first_error_wins, "kernel 0");
}

static void test_builder_lifecycle(void **state) {
    (void)state;
    nnz_model *m = NULL;
    assert_int_equal(nnz_model_create(1, 1, 0, &m), NNZ_ERR_INVALID_ARG);
    assert_null(m);
    assert_int_equal(nnz_model_create(1 << 16, 1, 1, &m), NNZ_ERR_INVALID_ARG);
    assert_int_equal(nnz_model_create(2, 2, 3, &m), NNZ_OK);
    nnz_add_flatten(m, "f");
    nnz_add_linear(m, "fc", 2, true);
    assert_int_equal(nnz_model_finalize(m, 1), NNZ_OK);
    assert_int_equal(nnz_model_finalize(m, 1), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "already finalized"));
    assert_int_equal(nnz_add_activation(m, "r", NNZ_OP_RELU), -1);
    nnz_model_free(m);
    nnz_model_free(NULL);

    /* nnz_add_node honours input; blocks number from 0 */
    assert_int_equal(nnz_model_create(4, 4, 2, &m), NNZ_OK);
    nnz_block_begin(m);
    int a = nnz_add_conv2d(m, "a", 2, 1, 1, 0, 1, false);
    nnz_block_end(m);
    nnz_block_begin(m);
    nnz_add_activation(m, "r", NNZ_OP_RELU6);
    nnz_block_end(m);
    nnz_node n;
    memset(&n, 0xff, sizeof n); /* garbage in the fields that do not apply */
    n.op = NNZ_OP_ADD;
    strcpy(n.name, "sum");
    n.input = -1;
    n.skip = a;
    n.block = 7;
    assert_int_equal(nnz_add_node(m, &n), 2);
    nnz_add_global_avgpool(m, "g");
    assert_int_equal(nnz_model_finalize(m, 1), NNZ_OK);
    assert_int_equal(m->nodes[0].block, 0);
    assert_int_equal(m->nodes[1].block, 1);
    const nnz_node *s = &m->nodes[2];
    assert_int_equal(s->input, -1);
    assert_int_equal(s->skip, 0);
    assert_int_equal(s->block, 7);
    assert_int_equal(s->out_ch, 0);
    assert_int_equal(s->k, 0);
    assert_false(s->has_bias);
    assert_float_equal(s->p, 0, 0);
    assert_int_equal(s->weight, -1);
    nnz_model_free(m);
}

static void test_op_names(void **state) {
    (void)state;
    for (int i = 0; i < NNZ_OP_COUNT; i++) {
        const char *nm = nnz_op_name((nnz_op)i);
        assert_true(strlen(nm) > 0);
        assert_int_equal(nnz_op_from_name(nm), i);
    }
    assert_string_equal(nnz_op_name(NNZ_OP_CONV2D), "conv2d");
    assert_string_equal(nnz_op_name(NNZ_OP_GLOBAL_AVGPOOL), "global_avgpool");
    assert_int_equal(nnz_op_from_name("Conv2d"), -1);
    assert_int_equal(nnz_op_from_name(""), -1);
    assert_int_equal(nnz_op_from_name(NULL), -1);
    assert_string_equal(nnz_op_name(NNZ_OP_COUNT), "unknown");
}

/* The size policy: a model needing more than NNZ_SIZE_LIMIT bytes of weights or of
 * activations per image is refused before its parameters are allocated. */
static void test_size_limit(void **state) {
    (void)state;
    nnz_model *m = NULL;
    assert_int_equal(nnz_model_from_zoo("vgg8", 28, 28, 1, 10, 1, &m), NNZ_OK);
    nnz_model_stats st;
    nnz_model_get_stats(m, &st);
    size_t weights = 4 * (size_t)(st.params + st.buffers), act = 0;
    for (int i = 0; i < m->n_nodes; i++) act += 4 * (size_t)m->nodes[i].h * m->nodes[i].w * m->nodes[i].c;
    nnz_model_free(m);
    size_t need = weights > act ? weights : act;
    char text[32];
    snprintf(text, sizeof text, "%zu", need);
    setenv("NNZ_SIZE_LIMIT", text, 1);
    assert_int_equal(nnz_model_from_zoo("vgg8", 28, 28, 1, 10, 1, &m), NNZ_OK);
    nnz_model_free(m);
    snprintf(text, sizeof text, "%zu", need - 1);
    setenv("NNZ_SIZE_LIMIT", text, 1);
    m = NULL;
    assert_int_equal(nnz_model_from_zoo("vgg8", 28, 28, 1, 10, 1, &m), NNZ_ERR_INVALID_ARG);
    assert_null(m);
    assert_non_null(strstr(nnz_last_error(), "NNZ_SIZE_LIMIT"));
    /* a hostile architecture: 8 GB of activations per image from a few bytes of JSON */
    unsetenv("NNZ_SIZE_LIMIT");
    const char *json = "{\"format\":\"nnz-arch\",\"version\":1,\"input\":[32768,32768,1],\"nodes\":["
                       "{\"op\":\"relu\",\"name\":\"r\",\"input\":-1,\"block\":-1},"
                       "{\"op\":\"global_avgpool\",\"name\":\"g\",\"input\":0,\"block\":-1}]}";
    assert_int_equal(nnz_model_from_json(json, 1, &m), NNZ_ERR_FORMAT);
    assert_null(m);
    assert_non_null(strstr(nnz_last_error(), "NNZ_SIZE_LIMIT"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mbv2_tiny_structure),
        cmocka_unit_test(test_zoo_parameter_counts),
        cmocka_unit_test(test_zoo_names_and_errors),
        cmocka_unit_test(test_parameter_names_layouts_flags),
        cmocka_unit_test(test_init_distribution_and_seed),
        cmocka_unit_test(test_flops_and_shapes_of_small_graph),
        cmocka_unit_test(test_bad_graphs_fail_clearly),
        cmocka_unit_test(test_builder_lifecycle),
        cmocka_unit_test(test_op_names),
        cmocka_unit_test(test_size_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
