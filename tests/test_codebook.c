/* Codebook training (Deep Compression's trained quantization; src/sparse/share.c, the
 * trainer's codebooks mode, nnz_pack_quantize, nnz pack --finetune-codebook):
 *  - a shared value's gradient is the sum of its weights' gradients: against the sum taken
 *    directly (grouping the weights by value) and against central differences of the loss
 *    when all the weights holding that value move together; zeros and every other
 *    parameter get no gradient; sync keeps copies equal and never lets a value become 0;
 *  - lenet5 on 256 Fashion-MNIST images, pruned and quantized to 2 bits: finetuning keeps
 *    at most 4 distinct nonzero values per tensor, the same zeros, the frozen parameters bit
 *    for bit, lowers the loss on the images it trained on, and packs to a file that decodes
 *    to the finetuned model bit for bit. */
#include "test_util.h"

#include "nn/nn.h"
#include "pack/pack.h"
#include "sparse/sparse.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------- the gradient of a shared value ---------------- */

enum { N = 3, H = 5, W = 5, C = 2, CLASSES = 4 };

/* conv 3x3 (4 channels, bias) -> flatten -> linear (4 classes, bias): smooth in the weights */
static nnz_model *small_model(void) {
    nnz_model *m = NULL;
    assert_int_equal(nnz_model_create(H, W, C, &m), NNZ_OK);
    nnz_add_conv2d(m, "conv", 4, 3, 1, 1, 1, true);
    nnz_add_flatten(m, "flat");
    nnz_add_linear(m, "fc", CLASSES, true);
    assert_int_equal(nnz_model_finalize(m, 3), NNZ_OK);
    assert_int_equal(nnz_model_reserve(m, N), NNZ_OK);
    return m;
}

/* Each weight becomes one of k values (or 0 with probability 1/4), at random. */
static void share_values(nnz_param *p, const float *values, int k, uint64_t seed) {
    nnz_rng r = nnz_rng_make(seed, 1);
    float *w = nnz_tensor_f32(&p->value);
    for (int64_t i = 0; i < nnz_tensor_numel(&p->value); i++) {
        uint32_t u = nnz_rng_below(&r, 4 * (uint32_t)k);
        w[i] = u < (uint32_t)k ? 0.0f : values[u % (uint32_t)k];
    }
}

static double loss_of(nnz_model *m, const float *x, const uint8_t *y) {
    assert_int_equal(nnz_model_forward(m, x, N, true), NNZ_OK);
    const float *z = nnz_model_output(m);
    double sum = 0;
    for (int i = 0; i < N; i++) {
        double mx = z[i * CLASSES], s = 0;
        for (int j = 1; j < CLASSES; j++) mx = fmax(mx, z[i * CLASSES + j]);
        for (int j = 0; j < CLASSES; j++) s += exp(z[i * CLASSES + j] - mx);
        sum += log(s) + mx - z[i * CLASSES + y[i]];
    }
    return sum / N;
}

static void test_shared_gradient(void **state) {
    (void)state;
    nnz_model *m = small_model();
    const float conv_v[3] = {-0.31f, 0.12f, 0.27f}, fc_v[4] = {-0.2f, -0.05f, 0.08f, 0.19f};
    const int pw = nnz_model_find_param(m, "conv.weight"), pf = nnz_model_find_param(m, "fc.weight");
    share_values(&m->params[pw], conv_v, 3, 11);
    share_values(&m->params[pf], fc_v, 4, 12);
    float x[N * H * W * C];
    tu_fill_uniform(x, N * H * W * C, -1, 1, 5);
    const uint8_t y[N] = {0, 3, 1};

    nnz_share sh;
    assert_int_equal(nnz_share_init(&sh, m), NNZ_OK);
    assert_int_equal(sh.n, 2);
    /* the backward's raw per-weight gradients */
    loss_of(m, x, y);
    float dlogits[N * CLASSES];
    int correct;
    nnz_softmax_xent(N, CLASSES, nnz_model_output(m), y, 0.0f, dlogits, &correct);
    nnz_model_zero_grad(m);
    assert_int_equal(nnz_model_backward(m, x, N, dlogits), NNZ_OK);
    const int params[2] = {pw, pf};
    const float *vals[2] = {conv_v, fc_v};
    const int ks[2] = {3, 4};
    float *raw[2];
    for (int t = 0; t < 2; t++) {
        const int64_t n = nnz_tensor_numel(&m->params[params[t]].value);
        raw[t] = malloc((size_t)n * sizeof(float));
        memcpy(raw[t], m->params[params[t]].grad, (size_t)n * sizeof(float));
    }
    nnz_share_backward(&sh, m);

    for (int t = 0; t < 2; t++) {
        nnz_param *p = &m->params[params[t]];
        const float *w = nnz_tensor_f32(&p->value);
        const int64_t n = nnz_tensor_numel(&p->value);
        for (int j = 0; j < ks[t]; j++) {
            /* directly: the sum of the gradients of the weights equal to value j */
            double direct = 0;
            int64_t members = 0, first = -1;
            for (int64_t i = 0; i < n; i++)
                if (w[i] == vals[t][j]) {
                    direct += raw[t][i];
                    members++;
                    if (first < 0) first = i;
                }
            assert_true(members > 1);
            const float g = p->grad[first];
            assert_true(fabs((double)g - direct) <= 1e-6 * (fabs(direct) + 1e-3));
            for (int64_t i = 0; i < n; i++)
                if (w[i] == vals[t][j]) assert_true(p->grad[i] == g); /* every copy gets it */
            /* central differences of the loss with every weight holding value j moved together */
            const double h = 1e-3;
            float *wm = nnz_tensor_f32(&p->value); /* the values are > 2h apart: no other weight is touched */
            for (int64_t i = 0; i < n; i++)
                if (wm[i] == vals[t][j]) wm[i] = (float)(vals[t][j] + h);
            const double up = loss_of(m, x, y);
            for (int64_t i = 0; i < n; i++)
                if (wm[i] == (float)(vals[t][j] + h)) wm[i] = (float)(vals[t][j] - h);
            const double down = loss_of(m, x, y);
            for (int64_t i = 0; i < n; i++)
                if (wm[i] == (float)(vals[t][j] - h)) wm[i] = vals[t][j];
            const double fd = (up - down) / (2 * h);
            print_message("%s value %d: sum of %lld gradients %.6f, central difference %.6f\n", p->name, j,
                          (long long)members, (double)g, fd);
            assert_true(fabs(fd - g) <= 2e-3 + 1e-2 * fabs(fd));
        }
        for (int64_t i = 0; i < n; i++)
            if (w[i] == 0.0f) assert_true(p->grad[i] == 0.0f); /* pruned: no gradient */
    }
    /* every other parameter is frozen */
    for (int i = 0; i < m->n_params; i++)
        if (i != pw && i != pf && m->params[i].grad)
            for (int64_t e = 0; e < nnz_tensor_numel(&m->params[i].value); e++)
                assert_true(m->params[i].grad[e] == 0.0f);

    /* sync: copies that drifted apart become the first copy again; a value that hit 0 is FLT_MIN */
    float *wf = nnz_tensor_f32(&m->params[pf].value);
    int64_t a = -1, b = -1, z = -1; /* the first two copies of value 1, the first of value 2 */
    for (int64_t i = 0; i < nnz_tensor_numel(&m->params[pf].value); i++) {
        if (wf[i] == fc_v[1] && a >= 0 && b < 0) b = i;
        if (wf[i] == fc_v[1] && a < 0) a = i;
        if (wf[i] == fc_v[2] && z < 0) z = i;
    }
    assert_true(a >= 0 && b > a && z >= 0);
    wf[b] = 0.5f;
    wf[z] = 0.0f; /* the first copy of value 2 */
    nnz_share_sync(&sh, m);
    float cur[NNZ_SHARE_MAX_VALUES];
    int k = -1;
    for (int t = 0; t < sh.n; t++)
        if (sh.param[t] == pf) k = nnz_share_values(&sh, m, t, cur);
    assert_int_equal(k, 4);
    assert_true(wf[b] == fc_v[1] && cur[1] == fc_v[1]);
    assert_true(cur[2] == FLT_MIN);
    for (int64_t i = 0; i < nnz_tensor_numel(&m->params[pf].value); i++) assert_true(wf[i] != fc_v[2]);

    nnz_share_free(&sh);
    for (int t = 0; t < 2; t++) free(raw[t]);
    nnz_model_free(m);
}

static void test_init_refuses(void **state) {
    (void)state;
    /* fresh weights: thousands of distinct values per tensor, nothing to share */
    nnz_model *m = NULL;
    assert_int_equal(nnz_model_from_zoo("lenet5", 28, 28, 1, 10, 1, &m), NNZ_OK);
    nnz_share sh;
    assert_int_equal(nnz_share_init(&sh, m), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "quantize"));
    /* nnz_train refuses codebooks; nnz_train_model refuses checkpoints, masks and weight decay */
    nnz_train_config cfg;
    nnz_train_config_init(&cfg);
    cfg.codebooks = true;
    cfg.model = "lenet5";
    assert_int_equal(nnz_train(&cfg, NULL), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "nnz_train_model"));
    cfg.out_path = "/tmp/x.safetensors";
    assert_int_equal(nnz_train_model(m, &cfg, NULL), NNZ_ERR_INVALID_ARG);
    cfg.out_path = NULL;
    cfg.weight_decay = 1e-4f;
    assert_int_equal(nnz_train_model(m, &cfg, NULL), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "weight decay"));
    nnz_model_free(m);
}

/* ---------------- lenet5: finetuning the codebooks of a pruned, 2-bit model ---------------- */

enum { IMAGES = 256 };

static int64_t count_distinct_nonzero(const float *w, int64_t n, int64_t *zeros) {
    float *v = malloc((size_t)n * sizeof *v);
    int64_t k = 0;
    *zeros = 0;
    for (int64_t i = 0; i < n; i++) {
        if (w[i] == 0.0f) {
            ++*zeros;
            continue;
        }
        int64_t j = 0;
        while (j < k && v[j] != w[i]) j++;
        if (j == k) v[k++] = w[i];
        if (k > 300) break;
    }
    free(v);
    return k;
}

static void test_lenet5_finetune(void **state) {
    (void)state;
    nnz_set_threads(2);
    nnz_model *m = NULL;
    assert_int_equal(nnz_model_from_zoo("lenet5", 28, 28, 1, 10, 7, &m), NNZ_OK);
    /* a model that knows something: 2 quick epochs on the images */
    nnz_train_config tc;
    nnz_train_config_init(&tc);
    tc.epochs = 2;
    tc.batch = 32;
    tc.lr = 0.05f;
    tc.train_limit = IMAGES;
    tc.test_limit = 64;
    tc.threads = 2;
    nnz_train_result res;
    assert_int_equal(nnz_train_model(m, &tc, &res), NNZ_OK);
    /* prune the larger half of fc1 and conv2 by magnitude: zeros for the sparse layout */
    for (int i = 0; i < m->n_params; i++) {
        nnz_param *p = &m->params[i];
        if (strcmp(p->name, "fc1.weight") && strcmp(p->name, "conv2.weight")) continue;
        float *w = nnz_tensor_f32(&p->value);
        const int64_t n = nnz_tensor_numel(&p->value);
        double mean = 0;
        for (int64_t e = 0; e < n; e++) mean += fabsf(w[e]);
        mean /= (double)n;
        for (int64_t e = 0; e < n; e++)
            if (fabsf(w[e]) < 1.2 * mean) w[e] = 0.0f;
    }
    const int np = m->n_params;
    assert_true(np > 0 && np < 64);
    float *before[64], *quant[64];
    for (int i = 0; i < np; i++) {
        const size_t bytes = (size_t)nnz_tensor_numel(&m->params[i].value) * sizeof(float);
        before[i] = malloc(bytes);
        memcpy(before[i], m->params[i].value.data, bytes);
    }
    nnz_pack_config pc;
    nnz_pack_config_init(&pc);
    pc.conv_bits = pc.linear_bits = 2;
    assert_int_equal(nnz_pack_quantize(m, &pc), NNZ_OK);
    int quantized = 0;
    for (int i = 0; i < np; i++) {
        nnz_param *p = &m->params[i];
        const int64_t n = nnz_tensor_numel(&p->value);
        quant[i] = malloc((size_t)n * sizeof(float));
        memcpy(quant[i], p->value.data, (size_t)n * sizeof(float));
        if (!strstr(p->name, ".weight")) {
            tu_assert_same_values(quant[i], before[i], n); /* biases stay raw */
            continue;
        }
        int64_t zeros, zeros0 = 0;
        assert_true(count_distinct_nonzero(quant[i], n, &zeros) <= 4);
        for (int64_t e = 0; e < n; e++) zeros0 += before[i][e] == 0.0f;
        if (zeros0 * 2 > n) /* a pruned tensor: the sparse layout keeps exactly its zeros */
            for (int64_t e = 0; e < n; e++) assert_true((quant[i][e] == 0.0f) == (before[i][e] == 0.0f));
        quantized++;
    }
    assert_int_equal(quantized, 4);

    nnz_dataset train;
    assert_int_equal(nnz_dataset_load_first(NNZ_DEFAULT_DATA_DIR, true, IMAGES, &train), NNZ_OK);
    nnz_eval_result e0, e1;
    assert_int_equal(nnz_evaluate(m, &train, 128, 0, &e0), NNZ_OK);

    nnz_train_config_init(&tc);
    tc.codebooks = true;
    tc.epochs = 2;
    tc.batch = 32;
    tc.train_limit = IMAGES;
    tc.test_limit = 64;
    tc.optimizer = NNZ_OPT_ADAMW; /* as nnz pack; lr 0: NNZ_CODEBOOK_DEFAULT_LR */
    tc.weight_decay = 0.0f;
    tc.threads = 2;
    assert_int_equal(nnz_train_model(m, &tc, &res), NNZ_OK);
    assert_int_equal(res.steps, 2 * IMAGES / 32);
    assert_int_equal(nnz_evaluate(m, &train, 128, 0, &e1), NNZ_OK);
    print_message("loss on the %d training images: %.4f quantized, %.4f after codebook finetuning (accuracy %.2f%% "
                  "-> %.2f%%)\n",
                  IMAGES, e0.loss, e1.loss, 100.0 * e0.accuracy, 100.0 * e1.accuracy);
    assert_true(e1.loss < e0.loss);

    bool moved = false;
    for (int i = 0; i < np; i++) {
        nnz_param *p = &m->params[i];
        const float *w = nnz_tensor_f32(&p->value);
        const int64_t n = nnz_tensor_numel(&p->value);
        if (!strstr(p->name, ".weight")) {
            tu_assert_same_values(w, quant[i], n); /* frozen */
            continue;
        }
        int64_t zeros;
        assert_true(count_distinct_nonzero(w, n, &zeros) <= 4);
        float qv[8], fv[8]; /* the same assignment: weights that shared a value still share one */
        int k = 0;
        for (int64_t e = 0; e < n; e++) {
            assert_true((w[e] == 0.0f) == (quant[i][e] == 0.0f)); /* the same zeros */
            if (quant[i][e] == 0.0f) continue;
            int j = 0;
            while (j < k && qv[j] != quant[i][e]) j++;
            if (j == k) {
                assert_true(k < 4);
                qv[k] = quant[i][e], fv[k] = w[e], k++;
            }
            assert_true(w[e] == fv[j]);
            moved |= w[e] != quant[i][e];
        }
    }
    assert_true(moved);

    /* the packed file decodes to the finetuned model bit for bit */
    char dir[512], path[600];
    tu_make_temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/l5.nnz", dir);
    assert_int_equal(nnz_pack(m, path, &pc, NULL), NNZ_OK);
    nnz_model *d = NULL;
    assert_int_equal(nnz_packed_load_model(path, &d), NNZ_OK);
    assert_int_equal(d->n_params, np);
    for (int i = 0; i < np; i++)
        tu_assert_same_values(d->params[i].value.data, m->params[i].value.data,
                              nnz_tensor_numel(&m->params[i].value));
    nnz_model_free(d);
    unlink(path);
    rmdir(dir);

    for (int i = 0; i < np; i++) free(before[i]), free(quant[i]);
    nnz_dataset_free(&train);
    nnz_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_gradient),
        cmocka_unit_test(test_init_refuses),
        cmocka_unit_test(test_lenet5_finetune),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
