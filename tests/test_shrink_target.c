/* shrink: Expand-then-Shrink to a given target (nnz_shrink_expand, nnz_shrink_to_target,
 * nnz_shrink_train_target). Which convs a target expands (not the first layer, not 1x1, not
 * grouped, not a bias-less conv without a batch norm after it); the expanded graph is the zoo's
 * inverted residual (hidden = expansion x inputs, the conv's stride and padding on the depthwise
 * conv, a residual only for stride 1 with equal channels); with its activations removed, merged
 * and returned to the target's graph it computes the same logits (1e-5 relative, random batch
 * norms, a bias folded into a batch norm); a tiny training run writes exactly the target's
 * architecture, records how it was made, and reproduces its accuracy; bad targets are refused
 * with no file written. */
#include "test_util.h"

#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shrink/shrink.h"

#define FASHION NNZ_DEFAULT_DATA_DIR

/* stem (first layer) 3x3 -> bn -> relu; A: 3x3 stride 1 16->16 no bias -> bn -> relu; B: 3x3
 * stride 2 16->24 with bias -> relu; C: 3x3 24->24 no bias, no bn -> relu; D: 1x1 -> global pool
 * -> linear. A and B expand; stem, C and D do not. */
static nnz_model *target_model(uint64_t seed) {
    nnz_model *m;
    assert_int_equal(nnz_model_create(28, 28, 1, &m), NNZ_OK);
    nnz_add_conv2d(m, "stem", 16, 3, 1, 1, 1, false);
    nnz_add_batchnorm(m, "stem_bn");
    nnz_add_activation(m, "stem_act", NNZ_OP_RELU);
    nnz_add_conv2d(m, "A", 16, 3, 1, 1, 1, false);
    nnz_add_batchnorm(m, "A_bn");
    nnz_add_activation(m, "A_act", NNZ_OP_RELU);
    nnz_add_conv2d(m, "B", 24, 3, 2, 1, 1, true);
    nnz_add_activation(m, "B_act", NNZ_OP_RELU);
    nnz_add_conv2d(m, "C", 24, 3, 1, 1, 1, false);
    nnz_add_activation(m, "C_act", NNZ_OP_RELU);
    nnz_add_conv2d(m, "D", 32, 1, 1, 0, 1, false);
    nnz_add_global_avgpool(m, "pool");
    nnz_add_linear(m, "fc", 10, true);
    if (nnz_model_finalize(m, seed) != NNZ_OK) fail_msg("%s", nnz_last_error());
    return m;
}

static char *arch_of(const nnz_model *m) {
    char *json = NULL;
    assert_int_equal(nnz_model_to_json(m, &json), NNZ_OK);
    return json;
}

static void test_expand_structure(void **state) {
    (void)state;
    nnz_model *t = target_model(1), *e = NULL;
    const bool want[5] = {false, true, true, false, false};
    const char *convs[5] = {"stem", "A", "B", "C", "D"};
    for (int i = 0; i < 5; i++) assert_int_equal(nnz_shrink_expandable(t, nnz_model_find_node(t, convs[i])), want[i]);
    int expanded = 0;
    assert_int_equal(nnz_shrink_expand(t, 2, 7, &e, &expanded), NNZ_OK);
    assert_int_equal(expanded, 2);
    nnz_ir_block *b = NULL;
    int nb = 0;
    assert_int_equal(nnz_shrink_find_blocks(e, &b, &nb), NNZ_OK);
    assert_int_equal(nb, 2);
    assert_string_equal(b[0].name, "A");
    assert_string_equal(b[1].name, "B");
    assert_false(b[0].removed);
    /* A: stride 1, 16 -> 16: a residual; hidden 2 x 16; the conv's window on the depthwise conv */
    assert_true(b[0].add >= 0);
    assert_int_equal(e->nodes[b[0].pw1].out_ch, 32);
    assert_int_equal(e->nodes[b[0].dw].k, 3);
    assert_int_equal(e->nodes[b[0].dw].pad, 1);
    assert_int_equal(e->nodes[b[0].dw].groups, 32);
    assert_int_equal(e->nodes[b[0].act1].op, NNZ_OP_RELU6);
    /* B: stride 2 on the depthwise conv, 16 -> 24, no residual */
    assert_int_equal(b[1].add, -1);
    assert_int_equal(e->nodes[b[1].dw].stride, 2);
    assert_int_equal(e->nodes[b[1].pw2].out_ch, 24);
    /* the rest is the target's: B's output feeds B_act, the block's input is A_act */
    assert_int_equal(e->nodes[nnz_model_find_node(e, "B_act")].input, b[1].last);
    assert_int_equal(b[1].input, nnz_model_find_node(e, "A_act"));
    assert_int_equal(e->nodes[nnz_model_find_node(e, "fc")].out_ch, 10);
    assert_true(nnz_model_find_node(e, "C") >= 0 && nnz_model_find_node(e, "stem") >= 0 && nnz_model_find_node(e, "A") < 0);
    /* refusals */
    nnz_model *x = (nnz_model *)1;
    assert_int_equal(nnz_shrink_expand(t, 0, 7, &x, NULL), NNZ_ERR_INVALID_ARG);
    assert_null(x);
    free(b);
    nnz_model_free(e);
    nnz_model_free(t);
}

static void test_merged_back_is_exact(void **state) {
    (void)state;
    nnz_model *t = target_model(1), *e = NULL, *rm = NULL, *merged = NULL, *back = NULL;
    assert_int_equal(nnz_shrink_expand(t, 3, 11, &e, NULL), NNZ_OK);
    tu_randomize_batchnorms(e, 5); /* far from the identity: every fold is exercised */
    nnz_ir_block *b = NULL;
    int nb = 0;
    assert_int_equal(nnz_shrink_find_blocks(e, &b, &nb), NNZ_OK);
    bool all[2] = {true, true};
    assert_int_equal(nnz_shrink_remove(e, b, nb, all, &rm), NNZ_OK);
    int count = 0;
    assert_int_equal(nnz_shrink_merge(rm, &merged, &count), NNZ_OK);
    assert_int_equal(count, 2);
    assert_true(nnz_model_find_node(merged, "A.conv") >= 0);
    if (nnz_shrink_to_target(merged, t, &back) != NNZ_OK) fail_msg("%s", nnz_last_error());
    char *a = arch_of(back), *want = arch_of(t);
    assert_string_equal(a, want); /* the target's graph: A has no bias, A_bn took it */
    const int n = 3;
    float *x = malloc(sizeof(float) * n * 28 * 28), *y0 = malloc(sizeof(float) * n * 10),
          *y1 = malloc(sizeof(float) * n * 10);
    tu_fill_uniform(x, n * 28 * 28, -2.0f, 2.0f, 9);
    assert_int_equal(nnz_model_predict(rm, x, n, y0), NNZ_OK);
    assert_int_equal(nnz_model_predict(back, x, n, y1), NNZ_OK);
    double num = 0, den = 0;
    for (int i = 0; i < n * 10; i++) num = fmax(num, fabs((double)y1[i] - y0[i])), den = fmax(den, fabs((double)y0[i]));
    assert_true(den > 0);
    assert_true(num / den < 1e-5);
    /* the fold is needed: without moving the bias into A_bn the logits differ */
    const int mean = back->nodes[nnz_model_find_node(back, "A_bn")].running_mean;
    float *mu = nnz_tensor_f32(&back->params[mean].value);
    const float *bias = nnz_tensor_f32(&merged->params[nnz_model_find_param(merged, "A.conv.bias")].value);
    for (int o = 0; o < 16; o++) mu[o] += bias[o];
    assert_int_equal(nnz_model_predict(back, x, n, y1), NNZ_OK);
    num = 0;
    for (int i = 0; i < n * 10; i++) num = fmax(num, fabs((double)y1[i] - y0[i]));
    assert_true(num / den > 1e-3);
    free(x), free(y0), free(y1), free(a), free(want), free(b);
    nnz_model_free(back);
    nnz_model_free(merged);
    nnz_model_free(rm);
    nnz_model_free(e);
    nnz_model_free(t);
}

static void tiny(nnz_shrink_config *c) {
    nnz_shrink_config_init(c);
    c->data_dir = FASHION;
    c->train_limit = 64;
    c->test_limit = 32;
    c->batch = 32;
    c->threads = 2;
    c->search_epochs = 2;
    c->finetune_epochs = 1;
    c->expansion = 2;
    c->lr = 0.1f;
    c->warmup = 0.25f;
    c->ramp = 0.25f;
    c->seed = 3;
}

static void test_train_target(void **state) {
    (void)state;
    char dir[256], spec[512], out[512];
    tu_make_temp_dir(dir, sizeof dir);
    snprintf(spec, sizeof spec, "%s/target.json", dir);
    snprintf(out, sizeof out, "%s/t.safetensors", dir);
    nnz_model *t = target_model(1);
    char *want = arch_of(t);
    tu_write_file(spec, want, strlen(want));
    nnz_shrink_config cfg;
    tiny(&cfg);
    nnz_shrink_result res;
    if (nnz_shrink_train_target(spec, out, &cfg, &res) != NNZ_OK) fail_msg("%s", nnz_last_error());
    assert_int_equal(res.blocks, 2);
    assert_int_equal(res.kept, 0);
    assert_int_equal(res.merged, 2);
    assert_true(res.merge_error < 1e-5f);
    assert_true(res.acc_merged == res.acc_finetuned);
    nnz_model_stats st;
    nnz_model_get_stats(t, &st);
    assert_int_equal(res.flops_after, st.flops);
    assert_int_equal(res.params_after, st.params);
    nnz_model *e = NULL; /* "before" is the expanded network that was trained */
    assert_int_equal(nnz_shrink_expand(t, 2, 0, &e, NULL), NNZ_OK);
    nnz_model_stats se;
    nnz_model_get_stats(e, &se);
    assert_int_equal(res.flops_before, se.flops);
    assert_int_equal(res.params_before, se.params);
    assert_true(se.flops != st.flops);
    nnz_model_free(e);

    nnz_model *got = NULL;
    assert_int_equal(nnz_checkpoint_load_model(out, &got), NNZ_OK);
    char *a = arch_of(got);
    assert_string_equal(a, want);
    nnz_dataset test;
    assert_int_equal(nnz_dataset_load_first(FASHION, false, cfg.test_limit, &test), NNZ_OK);
    nnz_eval_result er;
    assert_int_equal(nnz_evaluate(got, &test, cfg.batch, cfg.test_limit, &er), NNZ_OK);
    assert_true(er.accuracy == res.acc_merged);
    nnz_dataset_free(&test);

    /* the record */
    nnz_checkpoint ck;
    assert_int_equal(nnz_checkpoint_open(out, &ck), NNZ_OK);
    cJSON *j = cJSON_Parse(nnz_st_meta(&ck.file, NNZ_SHRINK_META));
    nnz_checkpoint_close(&ck);
    assert_non_null(j);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "to_target")));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "from_scratch")));
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(j, "expansion")->valueint, 2);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "blocks")), 2);
    cJSON_Delete(j);
    char text[2048];
    assert_int_equal(nnz_shrink_describe(out, text, sizeof text), NNZ_OK);
    assert_non_null(strstr(text, "Expand-then-Shrink to the target"));
    assert_non_null(strstr(text, "merged, one dense conv each: A"));
    free(a);
    free(want);
    nnz_model_free(got);
    nnz_model_free(t);
}

static void test_train_target_errors(void **state) {
    (void)state;
    char dir[256], out[512];
    tu_make_temp_dir(dir, sizeof dir);
    snprintf(out, sizeof out, "%s/x.safetensors", dir);
    nnz_shrink_config cfg;
    tiny(&cfg);
    assert_int_equal(nnz_shrink_train_target("mlp", out, &cfg, NULL), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "no convolution to expand"));
    cfg.cost_aware = true;
    assert_int_equal(nnz_shrink_train_target("lenet5", out, &cfg, NULL), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "cost-aware"));
    tiny(&cfg);
    cfg.distill = true;
    assert_int_equal(nnz_shrink_train_target("lenet5", out, &cfg, NULL), NNZ_ERR_INVALID_ARG);
    tiny(&cfg);
    cfg.expansion = 0;
    assert_int_equal(nnz_shrink_train_target("lenet5", out, &cfg, NULL), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "expansion"));
    assert_int_not_equal(access(out, F_OK), 0); /* nothing written */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expand_structure),
        cmocka_unit_test(test_merged_back_is_exact),
        cmocka_unit_test(test_train_target),
        cmocka_unit_test(test_train_target_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
