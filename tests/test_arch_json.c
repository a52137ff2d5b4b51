/* nn: the architecture JSON: round trips of the zoo, and hostile input. */
#include "test_util.h"

#include <stdlib.h>
#include <string.h>

#include "nn/nn.h"

static void assert_nodes_equal(const nnz_node *a, const nnz_node *b) {
    assert_int_equal(a->op, b->op);
    assert_string_equal(a->name, b->name);
    assert_int_equal(a->input, b->input);
    assert_int_equal(a->skip, b->skip);
    assert_int_equal(a->block, b->block);
    assert_int_equal(a->out_ch, b->out_ch);
    assert_int_equal(a->k, b->k);
    assert_int_equal(a->stride, b->stride);
    assert_int_equal(a->pad, b->pad);
    assert_int_equal(a->groups, b->groups);
    assert_int_equal(a->has_bias, b->has_bias);
    assert_memory_equal(&a->eps, &b->eps, sizeof a->eps); /* bit-exact floats */
    assert_memory_equal(&a->momentum, &b->momentum, sizeof a->momentum);
    assert_memory_equal(&a->p, &b->p, sizeof a->p);
    assert_int_equal(a->h, b->h);
    assert_int_equal(a->w, b->w);
    assert_int_equal(a->c, b->c);
    assert_int_equal(a->weight, b->weight);
    assert_int_equal(a->bias, b->bias);
    assert_int_equal(a->running_mean, b->running_mean);
    assert_int_equal(a->running_var, b->running_var);
    assert_int_equal(a->flops, b->flops);
}

static void round_trip(const char *name, int h, int w, int c, int classes) {
    nnz_model *a = NULL, *b = NULL;
    assert_int_equal(nnz_model_from_zoo(name, h, w, c, classes, 7, &a), NNZ_OK);
    char *json = NULL, *again = NULL;
    assert_int_equal(nnz_model_to_json(a, &json), NNZ_OK);
    assert_non_null(strstr(json, "\"format\":\"nnz-arch\""));
    if (nnz_model_from_json(json, 7, &b) != NNZ_OK) fail_msg("%s: %s", name, nnz_last_error());
    assert_int_equal(b->in_h, h);
    assert_int_equal(b->in_w, w);
    assert_int_equal(b->in_c, c);
    assert_int_equal(b->num_classes, classes);
    assert_int_equal(a->n_nodes, b->n_nodes);
    for (int i = 0; i < a->n_nodes; i++) assert_nodes_equal(&a->nodes[i], &b->nodes[i]);
    assert_int_equal(a->n_params, b->n_params);
    for (int i = 0; i < a->n_params; i++) { /* same names, shapes and (same seed) values */
        assert_string_equal(a->params[i].name, b->params[i].name);
        assert_int_equal(a->params[i].value.ndim, b->params[i].value.ndim);
        assert_memory_equal(a->params[i].value.shape, b->params[i].value.shape, sizeof a->params[i].value.shape);
        assert_memory_equal(a->params[i].value.data, b->params[i].value.data, nnz_tensor_bytes(&a->params[i].value));
    }
    assert_int_equal(nnz_model_to_json(b, &again), NNZ_OK);
    assert_string_equal(json, again);
    free(json);
    free(again);
    nnz_model_free(a);
    nnz_model_free(b);
}

static void test_zoo_round_trips(void **state) {
    (void)state;
    for (const char *const *n = nnz_zoo_names(); *n; n++) {
        round_trip(*n, 28, 28, 1, 10);
        round_trip(*n, 32, 32, 3, 100);
    }
}

static void test_hand_written_json(void **state) {
    (void)state;
    const char *json =
        "{\"format\":\"nnz-arch\",\"version\":1,\"input\":[6,6,2],\"nodes\":["
        "{\"op\":\"conv2d\",\"name\":\"c\",\"input\":-1,\"out_ch\":4,\"k\":3,\"stride\":1,\"pad\":1,\"groups\":2,"
        "\"bias\":false},"
        "{\"op\":\"batchnorm\",\"name\":\"bn\",\"input\":0,\"block\":3,\"eps\":0.001,\"momentum\":0.01},"
        "{\"op\":\"relu6\",\"name\":\"a\",\"input\":1,\"block\":3},"
        "{\"op\":\"add\",\"name\":\"s\",\"input\":2,\"skip\":0},"
        "{\"op\":\"avgpool\",\"name\":\"p\",\"input\":3,\"k\":2,\"stride\":2,\"pad\":0},"
        "{\"op\":\"flatten\",\"name\":\"f\",\"input\":4},"
        "{\"op\":\"dropout\",\"name\":\"d\",\"input\":5,\"p\":0.25},"
        "{\"op\":\"linear\",\"name\":\"fc\",\"input\":6,\"out_features\":3,\"bias\":true}]}";
    nnz_model *m = NULL;
    if (nnz_model_from_json(json, 1, &m) != NNZ_OK) fail_msg("%s", nnz_last_error());
    assert_int_equal(m->n_nodes, 8);
    assert_int_equal(m->nodes[0].groups, 2);
    assert_int_equal(m->nodes[0].block, -1); /* "block" is optional */
    assert_int_equal(m->nodes[1].block, 3);
    assert_float_equal(m->nodes[1].eps, 0.001f, 0);
    assert_float_equal(m->nodes[1].momentum, 0.01f, 0);
    assert_int_equal(m->nodes[3].skip, 0);
    assert_float_equal(m->nodes[6].p, 0.25f, 0);
    assert_int_equal(m->nodes[7].in_c, 3 * 3 * 4);
    assert_int_equal(m->num_classes, 3);
    assert_int_equal(nnz_model_find_param(m, "c.bias"), -1);
    assert_true(nnz_model_find_param(m, "fc.bias") >= 0);
    nnz_model_free(m);
}

typedef struct {
    const char *json;
    const char *expect; /* a part of the message */
} hostile;

#define HEAD "{\"format\":\"nnz-arch\",\"version\":1,\"input\":[8,8,1],\"nodes\":["
#define GAP ",{\"op\":\"global_avgpool\",\"name\":\"g\",\"input\":0}]}"
#define CONV(fields) "{\"op\":\"conv2d\",\"name\":\"c\",\"input\":-1," fields "}"
#define CONV_OK "\"out_ch\":4,\"k\":3,\"stride\":1,\"pad\":1,\"groups\":1,\"bias\":true"

static const hostile cases[] = {
    {"", "not valid JSON"},
    {"{", "not valid JSON"},
    {"{\"format\":\"nnz-arch\",} ", "not valid JSON"},
    {"[1,2,3]", "top level"},
    {"null", "top level"},
    {"{\"format\":\"safetensors\",\"version\":1}", "'format'"},
    {"{\"format\":7}", "'format'"},
    {"{\"format\":\"nnz-arch\"}", "'version'"},
    {"{\"format\":\"nnz-arch\",\"version\":1.5}", "'version'"},
    {"{\"format\":\"nnz-arch\",\"version\":2,\"input\":[8,8,1],\"nodes\":[]}", "upgrade"},
    {"{\"format\":\"nnz-arch\",\"version\":1,\"input\":[8,8],\"nodes\":[]}", "'input'"},
    {"{\"format\":\"nnz-arch\",\"version\":1,\"input\":[8,8,0],\"nodes\":[]}", "'input'"},
    {"{\"format\":\"nnz-arch\",\"version\":1,\"input\":[8,8,\"1\"],\"nodes\":[]}", "'input'"},
    {"{\"format\":\"nnz-arch\",\"version\":1,\"input\":[8,8,1e300],\"nodes\":[]}", "'input'"},
    {"{\"format\":\"nnz-arch\",\"version\":1,\"input\":[8,8,1],\"nodes\":[]}", "'nodes'"},
    {"{\"format\":\"nnz-arch\",\"version\":1,\"input\":[8,8,1],\"nodes\":{}}", "'nodes'"},
    {"{\"format\":\"nnz-arch\",\"version\":1,\"input\":[8,8,1],\"nodes\":[1]}", "not an object"},
    {"{\"format\":\"nnz-arch\",\"version\":1,\"input\":[8,8,1],\"nodes\":[{}],\"extra\":1}", "unknown field 'extra'"},
    {"{\"format\":\"nnz-arch\",\"version\":1,\"version\":1,\"input\":[8,8,1],\"nodes\":[{}]}", "twice"},
    {HEAD "{\"name\":\"x\",\"input\":-1}]}", "'op'"},
    {HEAD "{\"op\":\"conv3d\",\"name\":\"x\",\"input\":-1}]}", "unknown op 'conv3d'"},
    {HEAD "{\"op\":\"relu\",\"input\":-1}]}", "'name'"},
    {HEAD "{\"op\":\"relu\",\"name\":7,\"input\":-1}]}", "'name'"},
    {HEAD "{\"op\":\"relu\",\"name\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"input\":-1}]}",
     "longer than"},
    {HEAD "{\"op\":\"relu\",\"name\":\"a b\",\"input\":-1}]}", "bad name"},
    {HEAD "{\"op\":\"relu\",\"name\":\"\",\"input\":-1}]}", "bad name"},
    {HEAD "{\"op\":\"relu\",\"name\":\"r\"}]}", "'input'"},
    {HEAD "{\"op\":\"relu\",\"name\":\"r\",\"input\":0}]}", "'input'"},
    {HEAD "{\"op\":\"relu\",\"name\":\"r\",\"input\":-2}]}", "'input'"},
    {HEAD "{\"op\":\"relu\",\"name\":\"r\",\"input\":null}]}", "'input'"},
    {HEAD "{\"op\":\"relu\",\"name\":\"r\",\"input\":-1,\"block\":-5}]}", "'block'"},
    {HEAD "{\"op\":\"relu\",\"name\":\"r\",\"input\":-1,\"k\":3}]}", "unknown field 'k'"},
    {HEAD "{\"op\":\"relu\",\"name\":\"r\",\"input\":-1,\"input\":-1}]}", "twice"},
    {HEAD CONV("\"out_ch\":4,\"k\":3,\"stride\":1,\"pad\":1,\"groups\":1") GAP, "missing field 'bias'"},
    {HEAD CONV("\"out_ch\":4,\"k\":3,\"stride\":1,\"pad\":1,\"groups\":1,\"bias\":1") GAP, "true or false"},
    {HEAD CONV("\"out_ch\":4.5,\"k\":3,\"stride\":1,\"pad\":1,\"groups\":1,\"bias\":true") GAP, "integer"},
    {HEAD CONV("\"out_ch\":\"4\",\"k\":3,\"stride\":1,\"pad\":1,\"groups\":1,\"bias\":true") GAP, "integer"},
    {HEAD CONV("\"out_ch\":1e10,\"k\":3,\"stride\":1,\"pad\":1,\"groups\":1,\"bias\":true") GAP, "integer"},
    {HEAD CONV("\"out_ch\":2000000,\"k\":3,\"stride\":1,\"pad\":1,\"groups\":1,\"bias\":true") GAP, "output channels"},
    {HEAD CONV("\"out_ch\":4,\"k\":-3,\"stride\":1,\"pad\":1,\"groups\":1,\"bias\":true") GAP, "kernel -3"},
    {HEAD CONV("\"out_ch\":4,\"k\":3,\"stride\":0,\"pad\":1,\"groups\":1,\"bias\":true") GAP, "stride 0"},
    {HEAD CONV("\"out_ch\":4,\"k\":30,\"stride\":1,\"pad\":1,\"groups\":1,\"bias\":true") GAP, "does not fit"},
    {HEAD CONV("\"out_ch\":4,\"k\":3,\"stride\":1,\"pad\":1,\"groups\":3,\"bias\":true") GAP, "divisible by groups"},
    {HEAD CONV("\"out_ch\":4,\"k\":3,\"stride\":1,\"pad\":1,\"groups\":0,\"bias\":true") GAP, "groups 0"},
    {HEAD CONV(CONV_OK ",\"p\":0.5") GAP, "unknown field 'p'"},
    {HEAD CONV(CONV_OK) "]}", "end the model"},
    {HEAD CONV(CONV_OK) ",{\"op\":\"linear\",\"name\":\"fc\",\"input\":0,\"out_features\":3,\"bias\":true}]}",
     "add a flatten"},
    {HEAD CONV(CONV_OK) ",{\"op\":\"add\",\"name\":\"s\",\"input\":0,\"skip\":-1}" GAP, "differ in shape"},
    {HEAD CONV(CONV_OK) ",{\"op\":\"add\",\"name\":\"s\",\"input\":0}" GAP, "missing field 'skip'"},
    {HEAD CONV(CONV_OK) ",{\"op\":\"add\",\"name\":\"s\",\"input\":0,\"skip\":1}" GAP, "earlier node"},
    {HEAD CONV(CONV_OK) ",{\"op\":\"relu\",\"name\":\"c\",\"input\":0}" GAP, "used twice"},
    {HEAD "{\"op\":\"batchnorm\",\"name\":\"b\",\"input\":-1,\"eps\":0,\"momentum\":0.1}" GAP, "eps"},
    {HEAD "{\"op\":\"batchnorm\",\"name\":\"b\",\"input\":-1,\"eps\":1e-5,\"momentum\":1e300}" GAP, "finite number"},
    {HEAD "{\"op\":\"batchnorm\",\"name\":\"b\",\"input\":-1,\"eps\":1e-5}" GAP, "missing field 'momentum'"},
    {HEAD "{\"op\":\"dropout\",\"name\":\"d\",\"input\":-1,\"p\":-0.1}" GAP, "[0,1)"},
    {HEAD "{\"op\":\"maxpool\",\"name\":\"p\",\"input\":-1,\"k\":2,\"stride\":2,\"pad\":2}" GAP, "more than half"},
    /* too many parameters: 8*8*1 -> 2^20 -> 2^20 features */
    {HEAD "{\"op\":\"flatten\",\"name\":\"f\",\"input\":-1},"
          "{\"op\":\"linear\",\"name\":\"a\",\"input\":0,\"out_features\":1048576,\"bias\":true},"
          "{\"op\":\"linear\",\"name\":\"b\",\"input\":1,\"out_features\":1048576,\"bias\":true}]}",
     "too large"},
    /* activations too large: 1x1 input padded to a huge map */
    {"{\"format\":\"nnz-arch\",\"version\":1,\"input\":[32768,32768,1],\"nodes\":[" CONV(CONV_OK) GAP, "too large"},
};

static void test_hostile_json(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nnz_model *m = (nnz_model *)&m;
        nnz_status s = nnz_model_from_json(cases[i].json, 1, &m);
        if (s == NNZ_OK) fail_msg("case %zu accepted: %s", i, cases[i].json);
        assert_true(s == NNZ_ERR_FORMAT || s == NNZ_ERR_UNSUPPORTED);
        assert_null(m);
        if (!strstr(nnz_last_error(), cases[i].expect))
            fail_msg("case %zu: error '%s' does not mention '%s'", i, nnz_last_error(), cases[i].expect);
    }
    nnz_model *m;
    assert_int_equal(nnz_model_from_json(NULL, 1, &m), NNZ_ERR_INVALID_ARG);
    assert_int_equal(nnz_model_to_json(NULL, NULL), NNZ_ERR_INVALID_ARG);
}

static void test_deep_nesting(void **state) {
    (void)state;
    size_t depth = 100000;
    char *s = malloc(2 * depth + 1);
    assert_non_null(s);
    memset(s, '[', depth);
    memset(s + depth, ']', depth);
    s[2 * depth] = '\0';
    nnz_model *m;
    assert_int_equal(nnz_model_from_json(s, 1, &m), NNZ_ERR_FORMAT);
    free(s);
}

/* Seeded mutations of every zoo JSON: never a crash; what is accepted is a
 * consistent model that writes back to JSON which reads back the same. */
static void test_mutations_never_crash(void **state) {
    (void)state;
    static const char alphabet[] = "{}[],:\"0123456789-.e truefalsnul\\";
    nnz_rng r = nnz_rng_make(2024, 1);
    int accepted = 0, total = 0;
    for (const char *const *n = nnz_zoo_names(); *n; n++) {
        nnz_model *base;
        char *json;
        assert_int_equal(nnz_model_from_zoo(*n, 16, 16, 1, 10, 1, &base), NNZ_OK);
        assert_int_equal(nnz_model_to_json(base, &json), NNZ_OK);
        nnz_model_free(base);
        size_t len = strlen(json);
        char *mut = malloc(len + 1);
        for (int t = 0; t < 300; t++) {
            memcpy(mut, json, len + 1);
            int edits = 1 + (int)nnz_rng_below(&r, 3);
            for (int e = 0; e < edits; e++) {
                size_t at = nnz_rng_below(&r, (uint32_t)len);
                if (nnz_rng_below(&r, 4) == 0) { /* delete a span */
                    size_t span = 1 + nnz_rng_below(&r, 8);
                    size_t cur = strlen(mut);
                    if (at + span > cur) span = cur - at;
                    memmove(mut + at, mut + at + span, cur - at - span + 1);
                } else if (at < strlen(mut)) {
                    mut[at] = alphabet[nnz_rng_below(&r, sizeof alphabet - 1)];
                }
            }
            nnz_model *m = NULL;
            total++;
            if (nnz_model_from_json(mut, 1, &m) == NNZ_OK) {
                accepted++;
                char *j2, *j3;
                nnz_model *m2;
                assert_int_equal(nnz_model_to_json(m, &j2), NNZ_OK);
                assert_int_equal(nnz_model_from_json(j2, 1, &m2), NNZ_OK);
                assert_int_equal(nnz_model_to_json(m2, &j3), NNZ_OK);
                assert_string_equal(j2, j3);
                free(j2);
                free(j3);
                nnz_model_free(m2);
                nnz_model_free(m);
            } else {
                assert_null(m);
                assert_true(strlen(nnz_last_error()) > 0);
            }
        }
        free(mut);
        free(json);
    }
    assert_true(accepted > 0 && accepted < total);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zoo_round_trips),
        cmocka_unit_test(test_hand_written_json),
        cmocka_unit_test(test_hostile_json),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_mutations_never_crash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
