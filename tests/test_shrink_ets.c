/* shrink: Expand-then-Shrink (nnz_shrink_from_scratch) and the model specs it and
 * nnz train take (nnz_model_from_spec). The progressive gate schedule; a zoo name, an
 * architecture .json and a checkpoint's architecture build the same graph, with fresh
 * weights; bad specs are refused. A tiny from-scratch run on Fashion-MNIST (64 images)
 * writes a model whose architecture equals the target built independently here
 * (mbv2-tiny, the run's removed blocks taken out and merged by nnz_shrink_remove and
 * nnz_shrink_merge): the same JSON, layer shapes, parameters and FLOPs; the merged model
 * equals the unmerged activation-free one (the pipeline's exactness check, < 1e-5) and
 * reproduces its accuracy; errors leave no file. */
#include "test_util.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shrink/shrink.h"

#define FASHION NNZ_DEFAULT_DATA_DIR

static void test_scheduled_k(void **state) {
    (void)state;
    /* no warm-up, no ramp: k from the first step */
    for (int64_t s = 0; s < 10; s++) assert_int_equal(nnz_gates_scheduled_k(6, 2, 0, 0, s), 2);
    /* 10 warm-up steps with all 6, then 8 ramp steps down to 2, then 2 */
    const int expect_ramp[8] = {6, 5, 5, 4, 4, 3, 3, 2}; /* 6 - floor(4 * (i+1) / 8) */
    for (int64_t s = 0; s < 10; s++) assert_int_equal(nnz_gates_scheduled_k(6, 2, 10, 8, s), 6);
    for (int i = 0; i < 8; i++) assert_int_equal(nnz_gates_scheduled_k(6, 2, 10, 8, 10 + i), expect_ramp[i]);
    for (int64_t s = 18; s < 30; s++) assert_int_equal(nnz_gates_scheduled_k(6, 2, 10, 8, s), 2);
    /* a ramp shorter than the blocks to remove still ends at k, and never goes below it */
    assert_int_equal(nnz_gates_scheduled_k(6, 1, 0, 2, 0), 4);
    assert_int_equal(nnz_gates_scheduled_k(6, 1, 0, 2, 1), 1);
    for (int64_t s = 0; s < 40; s++) {
        int a = nnz_gates_scheduled_k(6, 1, 5, 17, s), b = nnz_gates_scheduled_k(6, 1, 5, 17, s + 1);
        assert_true(b <= a && b >= 1 && a <= 6); /* monotone */
    }
}

static char *arch_of(const nnz_model *m) {
    char *json = NULL;
    assert_int_equal(nnz_model_to_json(m, &json), NNZ_OK);
    return json;
}

static void test_model_spec(void **state) {
    (void)state;
    char dir[256], path[512], ckpt[512];
    tu_make_temp_dir(dir, sizeof dir);
    nnz_model *zoo = NULL, *m = NULL;
    assert_int_equal(nnz_model_from_spec("mbv2-tiny", 28, 28, 1, 10, 7, &zoo), NNZ_OK);
    char *want = arch_of(zoo);
    /* an architecture file */
    snprintf(path, sizeof path, "%s/arch.json", dir);
    tu_write_file(path, want, strlen(want));
    assert_int_equal(nnz_model_from_spec(path, 28, 28, 1, 10, 7, &m), NNZ_OK);
    char *got = arch_of(m);
    assert_string_equal(got, want);
    /* same seed, same fresh weights as the zoo's */
    for (int i = 0; i < m->n_params; i++)
        tu_assert_same_values(nnz_tensor_f32(&m->params[i].value), nnz_tensor_f32(&zoo->params[i].value),
                              nnz_tensor_numel(&m->params[i].value));
    free(got);
    nnz_model_free(m);
    /* a checkpoint: its architecture, not its weights */
    snprintf(ckpt, sizeof ckpt, "%s/m.safetensors", dir);
    nnz_model *trained = NULL;
    assert_int_equal(nnz_model_from_spec("mbv2-tiny", 28, 28, 1, 10, 99, &trained), NNZ_OK);
    assert_int_equal(nnz_checkpoint_save_model(trained, ckpt), NNZ_OK);
    assert_int_equal(nnz_model_from_spec(ckpt, 28, 28, 1, 10, 7, &m), NNZ_OK);
    got = arch_of(m);
    assert_string_equal(got, want);
    tu_assert_same_values(nnz_tensor_f32(&m->params[0].value), nnz_tensor_f32(&zoo->params[0].value),
                          nnz_tensor_numel(&m->params[0].value));
    assert_true(memcmp(nnz_tensor_f32(&m->params[0].value), nnz_tensor_f32(&trained->params[0].value),
                       sizeof(float) * (size_t)nnz_tensor_numel(&m->params[0].value)) != 0);
    free(got);
    nnz_model_free(m);
    nnz_model_free(trained);
    /* refusals */
    m = (nnz_model *)1;
    assert_int_equal(nnz_model_from_spec("mbv3", 28, 28, 1, 10, 7, &m), NNZ_ERR_INVALID_ARG);
    assert_null(m);
    assert_non_null(strstr(nnz_last_error(), "unknown model 'mbv3'"));
    assert_int_equal(nnz_model_from_spec(path, 32, 32, 3, 10, 7, &m), NNZ_ERR_INVALID_ARG); /* CIFAR shape */
    assert_non_null(strstr(nnz_last_error(), "takes 28x28x1 images"));
    assert_int_equal(nnz_model_from_spec(path, 28, 28, 1, 100, 7, &m), NNZ_ERR_INVALID_ARG); /* classes */
    snprintf(path, sizeof path, "%s/bad.json", dir);
    tu_write_file(path, "{\"format\":\"nnz-arch\"", 20);
    assert_int_equal(nnz_model_from_spec(path, 28, 28, 1, 10, 7, &m), NNZ_ERR_FORMAT);
    assert_non_null(strstr(nnz_last_error(), "bad.json"));
    snprintf(path, sizeof path, "%s/notackpt.safetensors", dir);
    tu_write_file(path, "hello", 5);
    assert_int_not_equal(nnz_model_from_spec(path, 28, 28, 1, 10, 7, &m), NNZ_OK);
    assert_non_null(strstr(nnz_last_error(), "notackpt.safetensors"));
    assert_int_equal(nnz_model_from_spec(dir, 28, 28, 1, 10, 7, &m), NNZ_ERR_INVALID_ARG); /* a directory */
    assert_null(m);
    free(want);
    nnz_model_free(zoo);
}

static void tiny(nnz_shrink_config *c) {
    nnz_shrink_config_init(c);
    c->data_dir = FASHION;
    c->train_limit = 64; /* 2 steps an epoch: 1 of warm-up, 1 of ramp, 2 with k */
    c->test_limit = 32;
    c->batch = 32;
    c->threads = 2;
    c->search_epochs = 2;
    c->finetune_epochs = 1;
    c->keep = 0.5f;
    c->lr = 0.1f;
    c->warmup = 0.25f;
    c->ramp = 0.25f;
    c->seed = 3;
}

/* the names of the blocks the run's record says were merged */
static int merged_blocks(const char *path, char names[][NNZ_NAME_MAX], int max) {
    nnz_checkpoint ck;
    assert_int_equal(nnz_checkpoint_open(path, &ck), NNZ_OK);
    cJSON *j = cJSON_Parse(nnz_st_meta(&ck.file, NNZ_SHRINK_META));
    nnz_checkpoint_close(&ck);
    assert_non_null(j);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "from_scratch")));
    const cJSON *b, *blocks = cJSON_GetObjectItemCaseSensitive(j, "blocks");
    int n = 0;
    cJSON_ArrayForEach(b, blocks) {
        if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(b, "merged"))) continue;
        assert_true(n < max);
        snprintf(names[n++], NNZ_NAME_MAX, "%s", cJSON_GetObjectItemCaseSensitive(b, "name")->valuestring);
    }
    cJSON_Delete(j);
    return n;
}

static void test_from_scratch_reaches_target(void **state) {
    (void)state;
    char dir[256], out[512];
    tu_make_temp_dir(dir, sizeof dir);
    snprintf(out, sizeof out, "%s/ets.safetensors", dir);
    nnz_shrink_config cfg;
    tiny(&cfg);
    nnz_shrink_result res;
    if (nnz_shrink_from_scratch("mbv2-tiny", out, &cfg, &res) != NNZ_OK) fail_msg("%s", nnz_last_error());
    assert_int_equal(res.blocks, 6);
    assert_int_equal(res.kept, 3);
    assert_int_equal(res.merged, 3);
    assert_true(res.merge_error < 1e-5f); /* merged == unmerged without activations, on a test batch */
    assert_true(res.acc_merged == res.acc_finetuned);

    /* the target, built here: mbv2-tiny with the removed blocks taken out and merged */
    char names[6][NNZ_NAME_MAX];
    const int n_merged = merged_blocks(out, names, 6);
    assert_int_equal(n_merged, 3);
    nnz_model *expanded = NULL, *removed = NULL, *target = NULL, *got = NULL;
    assert_int_equal(nnz_model_from_zoo("mbv2-tiny", 28, 28, 1, 10, 0, &expanded), NNZ_OK);
    nnz_ir_block *blocks = NULL;
    int nb = 0;
    assert_int_equal(nnz_shrink_find_blocks(expanded, &blocks, &nb), NNZ_OK);
    assert_int_equal(nb, 6);
    bool remove[6] = {false};
    for (int i = 0; i < nb; i++)
        for (int j = 0; j < n_merged; j++) remove[i] |= strcmp(blocks[i].name, names[j]) == 0;
    assert_int_equal(nnz_shrink_remove(expanded, blocks, nb, remove, &removed), NNZ_OK);
    int merged = 0;
    assert_int_equal(nnz_shrink_merge(removed, &target, &merged), NNZ_OK);
    assert_int_equal(merged, 3);

    assert_int_equal(nnz_checkpoint_load_model(out, &got), NNZ_OK);
    char *a = arch_of(got), *b = arch_of(target);
    assert_string_equal(a, b);
    nnz_model_stats sg, st, se;
    nnz_model_get_stats(got, &sg);
    nnz_model_get_stats(target, &st);
    nnz_model_get_stats(expanded, &se);
    assert_int_equal(sg.flops, st.flops);
    assert_int_equal(sg.params, st.params);
    assert_int_equal(sg.layers, st.layers);
    assert_int_equal(res.flops_after, st.flops);
    assert_int_equal(res.flops_before, se.flops);
    assert_true(st.layers < se.layers);
    for (int i = 0; i < got->n_nodes; i++) { /* every layer's output shape */
        assert_string_equal(got->nodes[i].name, target->nodes[i].name);
        assert_int_equal(got->nodes[i].h, target->nodes[i].h);
        assert_int_equal(got->nodes[i].w, target->nodes[i].w);
        assert_int_equal(got->nodes[i].c, target->nodes[i].c);
    }
    for (int i = 0; i < got->n_params; i++) assert_int_equal(nnz_tensor_numel(&got->params[i].value), nnz_tensor_numel(&target->params[i].value));

    /* the saved model reproduces the reported accuracy */
    nnz_dataset test;
    assert_int_equal(nnz_dataset_load_first(FASHION, false, cfg.test_limit, &test), NNZ_OK);
    nnz_eval_result er;
    assert_int_equal(nnz_evaluate(got, &test, cfg.batch, cfg.test_limit, &er), NNZ_OK);
    assert_true(er.accuracy == res.acc_merged);
    nnz_dataset_free(&test);

    /* the direct baseline trains this architecture: nnz_model_from_spec of the output is the target */
    nnz_model *direct = NULL;
    assert_int_equal(nnz_model_from_spec(out, 28, 28, 1, 10, 5, &direct), NNZ_OK);
    char *c = arch_of(direct);
    assert_string_equal(c, b);
    free(a);
    free(b);
    free(c);
    free(blocks);
    nnz_model_free(direct);
    nnz_model_free(got);
    nnz_model_free(target);
    nnz_model_free(removed);
    nnz_model_free(expanded);
}

static void test_from_scratch_errors(void **state) {
    (void)state;
    char dir[256], out[512];
    tu_make_temp_dir(dir, sizeof dir);
    snprintf(out, sizeof out, "%s/x.safetensors", dir);
    nnz_shrink_config cfg;
    tiny(&cfg);
    cfg.distill = true;
    assert_int_equal(nnz_shrink_from_scratch("mbv2-tiny", out, &cfg, NULL), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "teacher"));
    tiny(&cfg);
    cfg.warmup = 0.75f;
    cfg.ramp = 0.5f;
    assert_int_equal(nnz_shrink_from_scratch("mbv2-tiny", out, &cfg, NULL), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "warm-up"));
    tiny(&cfg);
    assert_int_equal(nnz_shrink_from_scratch("mlp", out, &cfg, NULL), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "no inverted-residual blocks"));
    assert_int_equal(nnz_shrink_from_scratch("mbv3", out, &cfg, NULL), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "unknown model"));
    assert_int_not_equal(access(out, F_OK), 0); /* nothing written */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scheduled_k),
        cmocka_unit_test(test_model_spec),
        cmocka_unit_test(test_from_scratch_reaches_target),
        cmocka_unit_test(test_from_scratch_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
