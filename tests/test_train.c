/* train: the data pipeline, checkpoints (round trip, hostile and mismatched
 * files, atomicity), exact resume (a hand-written loop over a model with
 * dropout and batch norm, and nnz_train itself, stopped mid-epoch), the NaN
 * guard, the JSON-lines log, evaluation, the benchmark, and an end-to-end run
 * on real Fashion-MNIST. */
#include "test_util.h"

#include "train/train.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FASHION NNZ_DEFAULT_DATA_DIR

/* ---------- helpers ---------- */

static void path_in(char *buf, size_t len, const char *dir, const char *name) { snprintf(buf, len, "%s/%s", dir, name); }

static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static uint8_t *slurp(const char *path, size_t *size) {
    uint8_t *data = NULL;
    assert_int_equal(nnz_read_file(path, false, (size_t)1 << 30, &data, size), NNZ_OK);
    return data;
}

/* conv -> bn -> relu -> dropout -> flatten -> linear: every kind of state a checkpoint must carry. */
static nnz_model *small_model(uint64_t seed) {
    nnz_model *m = NULL;
    assert_int_equal(nnz_model_create(8, 8, 1, &m), NNZ_OK);
    nnz_add_conv2d(m, "conv", 4, 3, 1, 1, 1, false);
    nnz_add_batchnorm(m, "bn");
    nnz_add_activation(m, "relu", NNZ_OP_RELU);
    nnz_add_dropout(m, "drop", 0.25f);
    nnz_add_flatten(m, "flatten");
    nnz_add_linear(m, "fc", 3, true);
    assert_int_equal(nnz_model_finalize(m, seed), NNZ_OK);
    return m;
}

/* A synthetic data set of n h x w x c images with pixel (i, y, x, ch) = (i*31 + y*7 + x*3 + ch) % 256. */
static void synthetic(nnz_dataset *d, int n, int h, int w, int c, int classes) {
    memset(d, 0, sizeof *d);
    d->n = n, d->h = h, d->w = w, d->c = c, d->num_classes = classes;
    d->images = malloc((size_t)n * h * w * c);
    d->labels = malloc((size_t)n);
    assert_non_null(d->images);
    assert_non_null(d->labels);
    for (int i = 0; i < n; i++) {
        d->labels[i] = (uint8_t)(i % classes);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int ch = 0; ch < c; ch++)
                    d->images[(((size_t)i * h + y) * w + x) * c + ch] = (uint8_t)((i * 31 + y * 7 + x * 3 + ch) % 256);
    }
}

static void synthetic_free(nnz_dataset *d) {
    free(d->images);
    free(d->labels);
}

static void assert_models_equal(const nnz_model *a, const nnz_model *b) {
    assert_int_equal(a->n_params, b->n_params);
    for (int i = 0; i < a->n_params; i++) {
        assert_string_equal(a->params[i].name, b->params[i].name);
        size_t bytes = nnz_tensor_bytes(&a->params[i].value);
        assert_int_equal(bytes, nnz_tensor_bytes(&b->params[i].value));
        if (memcmp(a->params[i].value.data, b->params[i].value.data, bytes) != 0)
            fail_msg("tensor '%s' differs", a->params[i].name);
    }
    assert_true(a->dropout_rng.key == b->dropout_rng.key);
    assert_true(a->dropout_rng.counter == b->dropout_rng.counter);
}

/* ---------- data ---------- */

/* The fixed normalization constants are the Fashion-MNIST training set's statistics. */
static void test_norm_constants_match_fashion_mnist(void **state) {
    (void)state;
    nnz_dataset d;
    assert_int_equal(nnz_dataset_load(FASHION, true, &d), NNZ_OK);
    assert_int_equal(d.c, 1);
    double sum = 0, sq = 0;
    size_t n = (size_t)d.n * d.h * d.w;
    for (size_t i = 0; i < n; i++) {
        double v = d.images[i] / 255.0;
        sum += v;
        sq += v * v;
    }
    double mean = sum / (double)n, sd = sqrt(sq / (double)n - mean * mean);
    float cm[1], cs[1];
    nnz_data_norm(1, cm, cs);
    assert_true(fabs(mean - cm[0]) < 5e-4);
    assert_true(fabs(sd - cs[0]) < 5e-4);
    nnz_dataset_free(&d);
}

static void test_batcher_order_and_normalization(void **state) {
    (void)state;
    nnz_dataset d;
    synthetic(&d, 50, 4, 5, 3, 7);
    nnz_batcher b;
    assert_int_equal(nnz_batcher_init(&b, &d, 40, 8, true, false, 1234), NNZ_OK);
    assert_int_equal(b.n, 40);
    assert_int_equal(nnz_batcher_train_steps(&b), 5);
    assert_int_equal(nnz_batcher_eval_steps(&b), 5);
    /* A permutation of the first 40 images, different per epoch, the same when recomputed. */
    int32_t e0[40], e1[40];
    memcpy(e0, b.order, sizeof e0);
    nnz_batcher_set_epoch(&b, 1);
    memcpy(e1, b.order, sizeof e1);
    int seen[40] = {0}, same = 0;
    for (int i = 0; i < 40; i++) {
        assert_true(e0[i] >= 0 && e0[i] < 40);
        seen[e0[i]]++;
        same += e0[i] == e1[i];
    }
    for (int i = 0; i < 40; i++) assert_int_equal(seen[i], 1);
    assert_true(same < 40);
    nnz_batcher_set_epoch(&b, 0);
    assert_memory_equal(e0, b.order, sizeof e0);

    /* Batch 2 of epoch 0 holds images order[16..24), normalized per channel. */
    float x[8 * 4 * 5 * 3], mean[3], sd[3];
    uint8_t y[8];
    nnz_data_norm(3, mean, sd);
    assert_int_equal(nnz_batcher_fill(&b, 2, x, y), 8);
    for (int k = 0; k < 8; k++) {
        int idx = e0[16 + k];
        assert_int_equal(y[k], d.labels[idx]);
        for (int p = 0; p < 4 * 5 * 3; p++) {
            float want = ((float)d.images[(size_t)idx * 60 + p] / 255.0f - mean[p % 3]) / sd[p % 3];
            assert_true(fabsf(x[k * 60 + p] - want) < 1e-5f);
        }
    }
    assert_int_equal(nnz_batcher_fill(&b, 5, x, y), 0);
    nnz_batcher_free(&b);

    /* Evaluation order: file order, last partial batch kept. */
    assert_int_equal(nnz_batcher_init(&b, &d, 0, 8, false, false, 1), NNZ_OK);
    assert_int_equal(nnz_batcher_eval_steps(&b), 7);
    assert_int_equal(nnz_batcher_fill(&b, 6, x, y), 2);
    assert_int_equal(y[0], d.labels[48]);
    nnz_batcher_free(&b);

    assert_int_equal(nnz_batcher_init(&b, &d, 0, 0, true, false, 1), NNZ_ERR_INVALID_ARG);
    synthetic_free(&d);
}

/* Augmented images are one of the 5x5 shifts x 2 flips of the zero-padded
 * image, reproducible per (seed, epoch, index), and vary across epochs. */
static void test_augmentation(void **state) {
    (void)state;
    enum { H = 6, W = 7, C = 2 };
    nnz_dataset d;
    synthetic(&d, 20, H, W, C, 3);
    float mean[2], sd[2];
    nnz_data_norm(C, mean, sd);
    float a[H * W * C], b[H * W * C], cand[H * W * C];
    int differs_across_epochs = 0, flips = 0, shifted = 0;
    for (int idx = 0; idx < 20; idx++) {
        nnz_data_image(&d, idx, mean, sd, true, 77, 3, a);
        nnz_data_image(&d, idx, mean, sd, true, 77, 3, b);
        assert_memory_equal(a, b, sizeof a);
        nnz_data_image(&d, idx, mean, sd, true, 77, 4, b);
        differs_across_epochs += memcmp(a, b, sizeof a) != 0;
        int matches = 0;
        for (int flip = 0; flip < 2; flip++)
            for (int dy = -2; dy <= 2; dy++)
                for (int dx = -2; dx <= 2; dx++) {
                    for (int y = 0; y < H; y++)
                        for (int x = 0; x < W; x++)
                            for (int c = 0; c < C; c++) {
                                int sy = y + dy, sx = (flip ? W - 1 - x : x) + dx;
                                float raw = (sy < 0 || sy >= H || sx < 0 || sx >= W)
                                                ? 0.0f
                                                : (float)d.images[(((size_t)idx * H + sy) * W + sx) * C + c];
                                cand[(y * W + x) * C + c] = (raw / 255.0f - mean[c]) / sd[c];
                            }
                    bool eq = true;
                    for (int i = 0; i < H * W * C && eq; i++) eq = fabsf(cand[i] - a[i]) < 1e-5f;
                    if (eq) {
                        matches++;
                        flips += flip;
                        shifted += dy != 0 || dx != 0;
                    }
                }
        assert_int_equal(matches, 1); /* the synthetic pattern makes every candidate distinct */
    }
    assert_true(differs_across_epochs > 10);
    assert_true(flips > 0 && flips < 20);
    assert_true(shifted > 10);
    /* Without augmentation: plain normalization. */
    nnz_data_image(&d, 5, mean, sd, false, 77, 3, a);
    for (int i = 0; i < H * W * C; i++)
        assert_true(fabsf(a[i] - ((float)d.images[5 * H * W * C + i] / 255.0f - mean[i % C]) / sd[i % C]) < 1e-5f);
    synthetic_free(&d);
}

/* ---------- checkpoints ---------- */

static void randomize(nnz_model *m, nnz_optimizer *o, uint64_t seed) {
    for (int i = 0; i < m->n_params; i++) {
        nnz_param *p = &m->params[i];
        int64_t n = nnz_tensor_numel(&p->value);
        tu_fill_uniform(nnz_tensor_f32(&p->value), n, 0.1f, 2.0f, seed + (uint64_t)i);
        if (o && o->state1 && o->state1[i]) tu_fill_uniform(o->state1[i], n, -1, 1, seed + 100 + (uint64_t)i);
        if (o && o->state2 && o->state2[i]) tu_fill_uniform(o->state2[i], n, 0, 1, seed + 200 + (uint64_t)i);
    }
}

static void test_checkpoint_round_trip(void **state) {
    (void)state;
    char dir[256], path[300];
    tu_make_temp_dir(dir, sizeof dir);
    path_in(path, sizeof path, dir, "ck.safetensors");
    nnz_model *m = small_model(5);
    nnz_optimizer o;
    assert_int_equal(nnz_optimizer_init(&o, m, NNZ_OPT_ADAMW, 0.9f, false, 0.05f, false), NNZ_OK);
    randomize(m, &o, 9);
    o.t = 37;
    m->dropout_rng.counter = 123456789012345ull;
    nnz_ckpt_state st = {.step = 4242, .epoch = 3, .seed = 0xFFFFFFFFFFFFFFF1ull};
    assert_int_equal(nnz_checkpoint_save(path, m, &o, &st, "{\"hello\":1}"), NNZ_OK);
    assert_int_equal(count_entries(dir), 1); /* no temporary file left */

    nnz_checkpoint ck;
    assert_int_equal(nnz_checkpoint_open(path, &ck), NNZ_OK);
    assert_int_equal(ck.state.step, 4242);
    assert_int_equal(ck.state.epoch, 3);
    assert_true(ck.state.seed == 0xFFFFFFFFFFFFFFF1ull);
    assert_true(ck.state.dropout_rng_counter == 123456789012345ull);
    assert_string_equal(ck.train_config_json, "{\"hello\":1}");
    assert_string_equal(nnz_st_meta(&ck.file, "format"), "nnz-checkpoint");
    assert_string_equal(nnz_st_meta(&ck.file, "version"), "1");
    char *arch = NULL;
    assert_int_equal(nnz_model_to_json(m, &arch), NNZ_OK);
    assert_string_equal(ck.arch_json, arch);
    free(arch);
    cJSON *oj = cJSON_Parse(ck.optimizer_json);
    assert_non_null(oj);
    assert_string_equal(cJSON_GetObjectItem(oj, "kind")->valuestring, "adamw");
    assert_int_equal((int)cJSON_GetObjectItem(oj, "t")->valuedouble, 37);
    assert_true(fabs(cJSON_GetObjectItem(oj, "weight_decay")->valuedouble - 0.05) < 1e-7);
    cJSON_Delete(oj);
    /* Every parameter and buffer is there as F32 with the parameter's shape; state only for trainables. */
    int n_state = 0;
    for (int i = 0; i < ck.file.n; i++) {
        assert_string_equal(ck.file.tensors[i].dtype, "F32");
        n_state += strncmp(ck.file.tensors[i].name, "optimizer.", 10) == 0;
    }
    int trainable = 0;
    for (int i = 0; i < m->n_params; i++) trainable += m->params[i].trainable;
    assert_int_equal(n_state, 2 * trainable);
    assert_int_equal(ck.file.n, m->n_params + n_state);
    assert_non_null(nnz_st_find(&ck.file, "bn.running_var"));
    assert_non_null(nnz_st_find(&ck.file, "optimizer.state2.fc.weight"));

    nnz_model *m2 = NULL;
    assert_int_equal(nnz_checkpoint_build_model(&ck, &m2), NNZ_OK);
    assert_models_equal(m, m2);
    nnz_optimizer o2;
    assert_int_equal(nnz_optimizer_init(&o2, m2, NNZ_OPT_ADAMW, 0.9f, false, 0.05f, false), NNZ_OK);
    assert_int_equal(nnz_checkpoint_load_optimizer(&ck, m2, &o2), NNZ_OK);
    assert_int_equal(o2.t, 37);
    for (int i = 0; i < m->n_params; i++) {
        size_t bytes = nnz_tensor_bytes(&m->params[i].value);
        if (o.state1[i]) assert_memory_equal(o.state1[i], o2.state1[i], bytes);
        if (o.state2[i]) assert_memory_equal(o.state2[i], o2.state2[i], bytes);
    }
    /* An SGD optimizer cannot take AdamW state. */
    nnz_optimizer o3;
    assert_int_equal(nnz_optimizer_init(&o3, m2, NNZ_OPT_SGD, 0.9f, false, 0.0f, false), NNZ_OK);
    assert_int_equal(nnz_checkpoint_load_optimizer(&ck, m2, &o3), NNZ_ERR_FORMAT);
    assert_non_null(strstr(nnz_last_error(), "adamw"));
    nnz_optimizer_free(&o3);
    nnz_optimizer_free(&o2);
    nnz_model_free(m2);
    nnz_checkpoint_close(&ck);

    /* The model-only form: loads with nnz_checkpoint_load_model, cannot be resumed. */
    assert_int_equal(nnz_checkpoint_save_model(m, path), NNZ_OK);
    assert_int_equal(nnz_checkpoint_load_model(path, &m2), NNZ_OK);
    assert_models_equal(m, m2);
    nnz_model_free(m2);
    assert_int_equal(nnz_checkpoint_open(path, &ck), NNZ_OK);
    assert_null(ck.optimizer_json);
    assert_int_equal(ck.file.n, m->n_params);
    assert_int_equal(nnz_checkpoint_load_optimizer(&ck, m, &o), NNZ_ERR_FORMAT);
    nnz_checkpoint_close(&ck);

    nnz_optimizer_free(&o);
    nnz_model_free(m);
    remove(path);
    rmdir(dir);
}

/* Rewrites src into dst through edit(): the writer sees every tensor and metadata entry. */
typedef void (*edit_fn)(nnz_st_writer *w, const nnz_st_file *f, void *ctx);

static void rewrite(const char *src, const char *dst, const char *skip_tensor, const char *meta_key,
                    const char *meta_value, edit_fn edit, void *ctx) {
    nnz_st_file f;
    assert_int_equal(nnz_st_load(src, &f), NNZ_OK);
    nnz_st_writer w;
    nnz_st_writer_init(&w);
    for (int i = 0; i < f.n; i++) {
        const nnz_st_tensor *t = &f.tensors[i];
        if (skip_tensor && strcmp(t->name, skip_tensor) == 0) continue;
        assert_int_equal(nnz_st_add(&w, t->name, t->dtype, t->ndim, t->shape, t->data), NNZ_OK);
    }
    for (int i = 0; i < f.n_meta; i++) {
        const char *v = f.meta_values[i];
        if (meta_key && strcmp(f.meta_keys[i], meta_key) == 0) {
            if (!meta_value) continue;
            v = meta_value;
        }
        assert_int_equal(nnz_st_set_meta(&w, f.meta_keys[i], v), NNZ_OK);
    }
    if (edit) edit(&w, &f, ctx);
    assert_int_equal(nnz_st_write(&w, dst), NNZ_OK);
    nnz_st_writer_free(&w);
    nnz_st_free(&f);
}

static void add_tensor(nnz_st_writer *w, const nnz_st_file *f, void *ctx) {
    (void)f;
    static const float data[4] = {1, 2, 3, 4};
    int64_t shape[1] = {4};
    assert_int_equal(nnz_st_add(w, (const char *)ctx, "F32", 1, shape, data), NNZ_OK);
}

/* Loads path and expects code, with every needle in the message. */
static void expect_load_error(const char *path, nnz_status code, const char *needle1, const char *needle2) {
    nnz_model *m = (nnz_model *)0x1;
    nnz_status s = nnz_checkpoint_load_model(path, &m);
    if (s != code) fail_msg("expected %s, got %s: %s", nnz_status_name(code), nnz_status_name(s), nnz_last_error());
    assert_null(m);
    if (needle1 && !strstr(nnz_last_error(), needle1)) fail_msg("'%s' not in: %s", needle1, nnz_last_error());
    if (needle2 && !strstr(nnz_last_error(), needle2)) fail_msg("'%s' not in: %s", needle2, nnz_last_error());
}

static void test_checkpoint_errors(void **state) {
    (void)state;
    char dir[256], good[300], bad[300];
    tu_make_temp_dir(dir, sizeof dir);
    path_in(good, sizeof good, dir, "good.safetensors");
    path_in(bad, sizeof bad, dir, "bad.safetensors");
    nnz_model *m = small_model(3);
    nnz_ckpt_state st = {.step = 1, .epoch = 0, .seed = 3};
    assert_int_equal(nnz_checkpoint_save(good, m, NULL, &st, NULL), NNZ_OK);

    expect_load_error("/nonexistent/ck.safetensors", NNZ_ERR_IO, "/nonexistent/ck.safetensors", NULL);

    /* A plain safetensors file, no nnz metadata. */
    nnz_st_writer w;
    nnz_st_writer_init(&w);
    int64_t shape[1] = {2};
    float two[2] = {1, 2};
    assert_int_equal(nnz_st_add(&w, "x", "F32", 1, shape, two), NNZ_OK);
    assert_int_equal(nnz_st_write(&w, bad), NNZ_OK);
    nnz_st_writer_free(&w);
    expect_load_error(bad, NNZ_ERR_FORMAT, "not an nnz checkpoint", NULL);

    rewrite(good, bad, "fc.weight", NULL, NULL, NULL, NULL);
    expect_load_error(bad, NNZ_ERR_FORMAT, "lacks the tensor 'fc.weight'", bad);
    rewrite(good, bad, "bn.running_mean", NULL, NULL, NULL, NULL);
    expect_load_error(bad, NNZ_ERR_FORMAT, "bn.running_mean", NULL);
    rewrite(good, bad, NULL, NULL, NULL, add_tensor, "stranger");
    expect_load_error(bad, NNZ_ERR_FORMAT, "'stranger'", "does not declare");
    rewrite(good, bad, NULL, "version", "2", NULL, NULL);
    expect_load_error(bad, NNZ_ERR_UNSUPPORTED, "version 2", NULL);
    rewrite(good, bad, NULL, "arch", NULL, NULL, NULL);
    expect_load_error(bad, NNZ_ERR_FORMAT, "arch", NULL);
    rewrite(good, bad, NULL, "arch", "{\"not\": \"an architecture\"", NULL, NULL);
    nnz_model *mm = NULL;
    assert_int_not_equal(nnz_checkpoint_load_model(bad, &mm), NNZ_OK);
    assert_null(mm);
    rewrite(good, bad, NULL, "step", "-5", NULL, NULL);
    expect_load_error(bad, NNZ_ERR_FORMAT, "step", NULL);
    rewrite(good, bad, NULL, "dropout_rng_counter", "12abc", NULL, NULL);
    expect_load_error(bad, NNZ_ERR_FORMAT, "dropout_rng_counter", NULL);

    /* Wrong shape and wrong dtype for fc.bias (3 floats): re-add it with another description. */
    {
        nnz_st_file f;
        assert_int_equal(nnz_st_load(good, &f), NNZ_OK);
        for (int variant = 0; variant < 2; variant++) {
            nnz_st_writer_init(&w);
            for (int i = 0; i < f.n; i++) {
                const nnz_st_tensor *t = &f.tensors[i];
                if (strcmp(t->name, "fc.bias") == 0) {
                    static const int32_t ints[3] = {1, 2, 3};
                    static const float four[4] = {1, 2, 3, 4};
                    int64_t s3[1] = {3}, s4[1] = {4};
                    if (variant == 0) assert_int_equal(nnz_st_add(&w, t->name, "F32", 1, s4, four), NNZ_OK);
                    else assert_int_equal(nnz_st_add(&w, t->name, "I32", 1, s3, ints), NNZ_OK);
                } else {
                    assert_int_equal(nnz_st_add(&w, t->name, t->dtype, t->ndim, t->shape, t->data), NNZ_OK);
                }
            }
            for (int i = 0; i < f.n_meta; i++)
                assert_int_equal(nnz_st_set_meta(&w, f.meta_keys[i], f.meta_values[i]), NNZ_OK);
            assert_int_equal(nnz_st_write(&w, bad), NNZ_OK);
            nnz_st_writer_free(&w);
            if (variant == 0) expect_load_error(bad, NNZ_ERR_FORMAT, "fc.bias", "shape (4) but the architecture needs (3)");
            else expect_load_error(bad, NNZ_ERR_FORMAT, "fc.bias", "dtype I32");
        }
        nnz_st_free(&f);
    }

    /* Truncated at a sample of lengths: always a clean error. */
    size_t size = 0;
    uint8_t *bytes = slurp(good, &size);
    for (size_t cut = 0; cut < size; cut += size / 97 + 1) {
        tu_write_file(bad, bytes, cut);
        mm = NULL;
        assert_int_not_equal(nnz_checkpoint_load_model(bad, &mm), NNZ_OK);
        assert_null(mm);
    }
    nnz_free(bytes);

    nnz_model_free(m);
    remove(good);
    remove(bad);
    rmdir(dir);
}

/* A save that fails (the target is a directory) reports it and leaves no temporary file. */
static void test_failed_save_leaves_nothing(void **state) {
    (void)state;
    char dir[256], target[300];
    tu_make_temp_dir(dir, sizeof dir);
    path_in(target, sizeof target, dir, "ck.safetensors");
    assert_int_equal(mkdir(target, 0755), 0);
    nnz_model *m = small_model(1);
    assert_int_equal(nnz_checkpoint_save_model(m, target), NNZ_ERR_IO);
    assert_non_null(strstr(nnz_last_error(), "ck.safetensors"));
    assert_int_equal(count_entries(dir), 1);
    nnz_model_free(m);
    rmdir(target);
    rmdir(dir);
}

/* ---------- exact resume, by hand: dropout + batch norm + AdamW ---------- */

static void train_steps(nnz_model *m, nnz_optimizer *o, nnz_batcher *b, int64_t from, int64_t to, float *losses) {
    int64_t spe = nnz_batcher_train_steps(b);
    float x[8 * 8 * 8];
    uint8_t y[8];
    float dl[8 * 3];
    for (int64_t s = from; s < to; s++) {
        nnz_batcher_set_epoch(b, (int)(s / spe));
        int n = nnz_batcher_fill(b, s % spe, x, y);
        assert_int_equal(nnz_model_forward(m, x, n, true), NNZ_OK);
        losses[s] = nnz_softmax_xent(n, 3, nnz_model_output(m), y, 0.1f, dl, NULL);
        nnz_model_zero_grad(m);
        assert_int_equal(nnz_model_backward(m, x, n, dl), NNZ_OK);
        nnz_optimizer_step(o, m, 0.01f);
    }
}

static void test_resume_by_hand_is_bitwise(void **state) {
    (void)state;
    char dir[256], path[300];
    tu_make_temp_dir(dir, sizeof dir);
    path_in(path, sizeof path, dir, "mid.safetensors");
    nnz_dataset d;
    synthetic(&d, 44, 8, 8, 1, 3);
    enum { STEPS = 12, HALF = 7 }; /* 5 steps per epoch: stops mid-epoch 2 */
    float straight[STEPS], resumed[STEPS];

    nnz_model *a = small_model(11);
    assert_int_equal(nnz_model_reserve(a, 8), NNZ_OK);
    nnz_optimizer oa;
    assert_int_equal(nnz_optimizer_init(&oa, a, NNZ_OPT_ADAMW, 0.9f, false, 0.05f, false), NNZ_OK);
    nnz_batcher ba;
    assert_int_equal(nnz_batcher_init(&ba, &d, 0, 8, true, true, 11), NNZ_OK);
    assert_int_equal(nnz_batcher_train_steps(&ba), 5);
    train_steps(a, &oa, &ba, 0, STEPS, straight);

    nnz_model *b = small_model(11);
    assert_int_equal(nnz_model_reserve(b, 8), NNZ_OK);
    nnz_optimizer ob;
    assert_int_equal(nnz_optimizer_init(&ob, b, NNZ_OPT_ADAMW, 0.9f, false, 0.05f, false), NNZ_OK);
    nnz_batcher bb;
    assert_int_equal(nnz_batcher_init(&bb, &d, 0, 8, true, true, 11), NNZ_OK);
    train_steps(b, &ob, &bb, 0, HALF, resumed);
    nnz_ckpt_state st = {.step = HALF, .epoch = 1, .seed = 11};
    assert_int_equal(nnz_checkpoint_save(path, b, &ob, &st, NULL), NNZ_OK);
    nnz_optimizer_free(&ob);
    nnz_model_free(b);
    nnz_batcher_free(&bb);

    nnz_checkpoint ck;
    assert_int_equal(nnz_checkpoint_open(path, &ck), NNZ_OK);
    nnz_model *c = NULL;
    assert_int_equal(nnz_checkpoint_build_model(&ck, &c), NNZ_OK);
    assert_int_equal(nnz_model_reserve(c, 8), NNZ_OK);
    nnz_optimizer oc;
    assert_int_equal(nnz_optimizer_init(&oc, c, NNZ_OPT_ADAMW, 0.9f, false, 0.05f, false), NNZ_OK);
    assert_int_equal(nnz_checkpoint_load_optimizer(&ck, c, &oc), NNZ_OK);
    nnz_batcher bc;
    assert_int_equal(nnz_batcher_init(&bc, &d, 0, 8, true, true, 11), NNZ_OK);
    train_steps(c, &oc, &bc, (int64_t)ck.state.step, STEPS, resumed);
    nnz_checkpoint_close(&ck);

    assert_memory_equal(straight, resumed, sizeof straight);
    assert_models_equal(a, c);
    assert_true(a->dropout_rng.counter > 0); /* dropout did draw */

    nnz_batcher_free(&ba);
    nnz_batcher_free(&bc);
    nnz_optimizer_free(&oa);
    nnz_optimizer_free(&oc);
    nnz_model_free(a);
    nnz_model_free(c);
    synthetic_free(&d);
    remove(path);
    rmdir(dir);
}

/* ---------- nnz_train ---------- */

typedef struct {
    float loss[64];
    int64_t last_step;
    int64_t stop_at; /* return false at this step (0 = never) */
    int epoch_ends;
} recorder;

static bool record(const nnz_progress *p, void *user) {
    recorder *r = user;
    if (p->epoch_end) {
        r->epoch_ends++;
        assert_true(p->test_accuracy >= 0 && p->test_accuracy <= 1);
        return true;
    }
    assert_true(p->step >= 1 && p->step <= 64);
    r->loss[p->step - 1] = p->loss;
    r->last_step = p->step;
    return p->step != r->stop_at;
}

static void base_config(nnz_train_config *c, recorder *r) {
    nnz_train_config_init(c);
    c->model = "mbv2-tiny";
    c->data_dir = FASHION;
    c->epochs = 2;
    c->batch = 8;
    c->train_limit = 44; /* 5 steps per epoch (the last 4 images are dropped) */
    c->test_limit = 24;
    c->optimizer = NNZ_OPT_ADAMW;
    c->label_smoothing = 0.1f;
    c->augment = true;
    c->warmup_epochs = 0.5f;
    c->seed = 2024;
    c->threads = 2;
    c->log_every = 1;
    c->progress = record;
    c->progress_user = r;
}

static void test_train_resume_mid_epoch_is_bitwise(void **state) {
    (void)state;
    char dir[256], p_straight[300], p_resumed[300], log_path[300];
    tu_make_temp_dir(dir, sizeof dir);
    path_in(p_straight, sizeof p_straight, dir, "straight.safetensors");
    path_in(p_resumed, sizeof p_resumed, dir, "resumed.safetensors");
    path_in(log_path, sizeof log_path, dir, "run.jsonl");

    recorder r1 = {0}, r2 = {0};
    nnz_train_config c;
    nnz_train_result res;
    base_config(&c, &r1);
    c.out_path = p_straight;
    assert_int_equal(nnz_train(&c, &res), NNZ_OK);
    assert_int_equal(res.steps, 10);
    assert_int_equal(r1.last_step, 10);
    assert_int_equal(r1.epoch_ends, 2);
    assert_true(res.test_accuracy >= 0);

    /* Interrupted at step 7 (mid-epoch 2): the callback's false saves and stops. */
    base_config(&c, &r2);
    c.out_path = p_resumed;
    c.log_path = log_path;
    r2.stop_at = 7;
    assert_int_equal(nnz_train(&c, &res), NNZ_ERR_INTERRUPTED);
    assert_non_null(strstr(nnz_last_error(), "--resume"));
    assert_int_equal(r2.last_step, 7);
    nnz_checkpoint ck;
    assert_int_equal(nnz_checkpoint_open(p_resumed, &ck), NNZ_OK);
    assert_int_equal(ck.state.step, 7);
    assert_int_equal(ck.state.epoch, 1);
    nnz_checkpoint_close(&ck);

    /* Resume with a config that only names the file: the rest comes from the checkpoint. */
    nnz_train_config_init(&c);
    c.resume_path = p_resumed;
    c.out_path = p_resumed;
    c.log_path = log_path;
    c.data_dir = FASHION;
    c.epochs = 0;
    c.test_limit = 24;
    c.threads = 2;
    c.log_every = 1;
    c.progress = record;
    c.progress_user = &r2;
    r2.stop_at = 0;
    assert_int_equal(nnz_train(&c, &res), NNZ_OK);
    assert_int_equal(res.steps, 10);
    assert_int_equal(r2.last_step, 10);
    assert_memory_equal(r1.loss, r2.loss, 10 * sizeof(float));

    nnz_model *a = NULL, *b = NULL;
    assert_int_equal(nnz_checkpoint_load_model(p_straight, &a), NNZ_OK);
    assert_int_equal(nnz_checkpoint_load_model(p_resumed, &b), NNZ_OK);
    assert_models_equal(a, b);
    nnz_model_free(a);
    nnz_model_free(b);

    /* The log: 10 step records and 2 epoch records over the two processes, all valid JSON. */
    FILE *f = fopen(log_path, "r");
    assert_non_null(f);
    char line[1024];
    int steps = 0, epochs = 0;
    while (fgets(line, sizeof line, f)) {
        cJSON *j = cJSON_Parse(line);
        assert_non_null(j);
        const char *type = cJSON_GetObjectItem(j, "type")->valuestring;
        const char *keys[] = {"epoch", "step", "loss", "accuracy", "lr", "images_per_sec", "elapsed"};
        for (int k = 0; k < 7; k++) assert_true(cJSON_IsNumber(cJSON_GetObjectItem(j, keys[k])));
        if (strcmp(type, "step") == 0) {
            steps++;
            assert_int_equal((int)cJSON_GetObjectItem(j, "step")->valuedouble, steps);
            assert_true((float)cJSON_GetObjectItem(j, "loss")->valuedouble == r1.loss[steps - 1]);
        } else {
            assert_string_equal(type, "epoch");
            epochs++;
            double acc = cJSON_GetObjectItem(j, "test_accuracy")->valuedouble;
            assert_true(acc >= 0 && acc <= 1);
        }
        cJSON_Delete(j);
    }
    fclose(f);
    assert_int_equal(steps, 10);
    assert_int_equal(epochs, 2);

    /* Resuming a finished run with no more epochs trains nothing and still reports. */
    r2.last_step = 0;
    assert_int_equal(nnz_train(&c, &res), NNZ_OK);
    assert_int_equal(r2.last_step, 0);
    assert_int_equal(res.steps, 10);

    remove(p_straight);
    remove(p_resumed);
    remove(log_path);
    rmdir(dir);
}

static void test_train_rejects_bad_config(void **state) {
    (void)state;
    nnz_train_config c;
    nnz_train_result res;
    nnz_train_config_init(&c);
    c.epochs = 0;
    assert_int_equal(nnz_train(&c, &res), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "epochs"));
    nnz_train_config_init(&c);
    c.lr = -1;
    assert_int_equal(nnz_train(&c, &res), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "learning rate"));
    nnz_train_config_init(&c);
    c.label_smoothing = 1.5f;
    assert_int_equal(nnz_train(&c, &res), NNZ_ERR_INVALID_ARG);
    nnz_train_config_init(&c);
    c.checkpoint_every = -1;
    assert_int_equal(nnz_train(&c, &res), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "--checkpoint-every"));
    nnz_train_config_init(&c);
    c.out_path = "/nonexistent-dir/x.safetensors";
    assert_int_equal(nnz_train(&c, &res), NNZ_ERR_IO);
    assert_non_null(strstr(nnz_last_error(), "/nonexistent-dir"));
    nnz_train_config_init(&c);
    c.model = "resnet9000";
    c.train_limit = 10;
    assert_int_equal(nnz_train(&c, &res), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "resnet9000"));
    nnz_train_config_init(&c);
    c.data_dir = "/nonexistent-data";
    assert_int_not_equal(nnz_train(&c, &res), NNZ_OK);
    assert_non_null(strstr(nnz_last_error(), "/nonexistent-data"));
}

/* A diverging run stops with NNZ_ERR_NUMERIC and does not overwrite the good checkpoint. */
static void test_train_nan_stops_and_keeps_checkpoint(void **state) {
    (void)state;
    char dir[256], path[300];
    tu_make_temp_dir(dir, sizeof dir);
    path_in(path, sizeof path, dir, "ck.safetensors");
    nnz_train_config c;
    nnz_train_result res;
    nnz_train_config_init(&c);
    c.model = "mlp";
    c.epochs = 1;
    c.batch = 32;
    c.train_limit = 64;
    c.test_limit = 32;
    c.out_path = path;
    assert_int_equal(nnz_train(&c, &res), NNZ_OK);
    size_t before_size, after_size;
    uint8_t *before = slurp(path, &before_size);

    c.epochs = 3;
    c.train_limit = 1024;
    c.lr = 1e30f;
    c.schedule = NNZ_SCHED_CONSTANT;
    c.optimizer = NNZ_OPT_SGD;
    c.momentum = 0;
    assert_int_equal(nnz_train(&c, &res), NNZ_ERR_NUMERIC);
    assert_non_null(strstr(nnz_last_error(), "--lr"));
    assert_non_null(strstr(nnz_last_error(), "is unchanged"));
    uint8_t *after = slurp(path, &after_size);
    assert_int_equal(before_size, after_size);
    assert_memory_equal(before, after, before_size);
    assert_int_equal(count_entries(dir), 1);
    nnz_free(before);
    nnz_free(after);

    /* With a checkpoint every step, the file is the last one whose weights are all finite, and the
     * message names its step. */
    c.checkpoint_every = 1;
    assert_int_equal(nnz_train(&c, &res), NNZ_ERR_NUMERIC);
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", nnz_last_error());
    const char *kept = strstr(msg, "last good checkpoint");
    assert_non_null(kept);
    nnz_checkpoint ck;
    assert_int_equal(nnz_checkpoint_open(path, &ck), NNZ_OK);
    char want[64];
    snprintf(want, sizeof want, "(step %lld)", (long long)ck.state.step);
    assert_true(ck.state.step >= 1);
    assert_non_null(strstr(kept, want));
    nnz_model *m = NULL;
    assert_int_equal(nnz_checkpoint_build_model(&ck, &m), NNZ_OK);
    for (int i = 0; i < m->n_params; i++)
        for (int64_t j = 0; j < nnz_tensor_numel(&m->params[i].value); j++)
            assert_true(isfinite(nnz_tensor_f32(&m->params[i].value)[j]));
    nnz_model_free(m);
    nnz_checkpoint_close(&ck);
    assert_int_equal(count_entries(dir), 1);

    /* A non-finite optimizer state (poisoned by hand) turns a weight infinite while the loss is still
     * finite: that step's checkpoint is not written, and the message names the weight. */
    nnz_train_config_init(&c);
    c.model = "mlp";
    c.epochs = 1;
    c.batch = 32;
    c.train_limit = 64;
    c.test_limit = 32;
    c.out_path = path;
    assert_int_equal(nnz_train(&c, &res), NNZ_OK); /* SGD with momentum: it has a state to poison */
    assert_int_equal(nnz_checkpoint_open(path, &ck), NNZ_OK);
    assert_int_equal(nnz_checkpoint_build_model(&ck, &m), NNZ_OK);
    nnz_optimizer opt;
    assert_int_equal(nnz_optimizer_init(&opt, m, NNZ_OPT_SGD, 0.9f, false, 0.0f, false), NNZ_OK);
    assert_int_equal(nnz_checkpoint_load_optimizer(&ck, m, &opt), NNZ_OK);
    const int fc1 = nnz_model_find_param(m, "fc1.weight");
    assert_true(fc1 >= 0);
    opt.state1[fc1][0] = INFINITY;
    assert_int_equal(nnz_checkpoint_save(path, m, &opt, &ck.state, ck.train_config_json), NNZ_OK);
    const int64_t poisoned_step = ck.state.step;
    nnz_optimizer_free(&opt);
    nnz_model_free(m);
    nnz_checkpoint_close(&ck);
    before = slurp(path, &before_size);
    nnz_train_config_init(&c);
    c.resume_path = path;
    c.out_path = path;
    c.epochs = 2;
    c.test_limit = 32;
    c.checkpoint_every = 1;
    assert_int_equal(nnz_train(&c, &res), NNZ_ERR_NUMERIC);
    assert_non_null(strstr(nnz_last_error(), "'fc1.weight'"));
    snprintf(want, sizeof want, "at step %lld", (long long)poisoned_step + 1);
    assert_non_null(strstr(nnz_last_error(), want));
    assert_non_null(strstr(nnz_last_error(), "is unchanged"));
    after = slurp(path, &after_size);
    assert_int_equal(before_size, after_size);
    assert_memory_equal(before, after, before_size);
    assert_int_equal(count_entries(dir), 1);
    nnz_free(before);
    nnz_free(after);
    remove(path);
    rmdir(dir);
}

static void test_config_json_round_trip(void **state) {
    (void)state;
    nnz_train_config a, b;
    nnz_train_config_init(&a);
    a.model = "vgg8";
    a.epochs = 7;
    a.batch = 33;
    a.lr = 0.0123f;
    a.momentum = 0.8f;
    a.nesterov = true;
    a.weight_decay = 1e-4f;
    a.decay_bn_and_bias = true;
    a.optimizer = NNZ_OPT_ADAMW;
    a.schedule = NNZ_SCHED_ONECYCLE;
    a.warmup_epochs = 0.3f;
    a.step_size_epochs = 2;
    a.step_gamma = 0.5f;
    a.label_smoothing = 0.1f;
    a.augment = true;
    a.seed = 18446744073709551557ull;
    a.train_limit = 999;
    a.precision = NNZ_BF16;
    char *json = NULL;
    assert_int_equal(nnz_train_config_to_json(&a, &json), NNZ_OK);
    nnz_train_config_init(&b);
    b.epochs = 0;
    char model[64];
    assert_int_equal(nnz_train_config_from_json(json, &b, model, sizeof model), NNZ_OK);
    assert_string_equal(b.model, "vgg8");
    assert_int_equal(b.epochs, 7);
    assert_int_equal(b.batch, 33);
    assert_true(b.lr == a.lr && b.momentum == a.momentum && b.weight_decay == a.weight_decay);
    assert_true(b.nesterov && b.decay_bn_and_bias && b.augment);
    assert_int_equal(b.optimizer, NNZ_OPT_ADAMW);
    assert_int_equal(b.schedule, NNZ_SCHED_ONECYCLE);
    assert_true(b.warmup_epochs == a.warmup_epochs && b.step_gamma == a.step_gamma);
    assert_true(b.label_smoothing == a.label_smoothing);
    assert_int_equal(b.step_size_epochs, 2);
    assert_true(b.seed == a.seed);
    assert_int_equal(b.train_limit, 999);
    assert_int_equal(b.precision, NNZ_BF16);
    /* A checkpoint from before bf16 training has no "precision": fp32; a bad one is an error. */
    char *old = strdup(json), *p = strstr(old, ",\"precision\":\"bf16\"");
    assert_non_null(p);
    memmove(p, p + strlen(",\"precision\":\"bf16\""), strlen(p + strlen(",\"precision\":\"bf16\"")) + 1);
    assert_int_equal(nnz_train_config_from_json(old, &b, model, sizeof model), NNZ_OK);
    assert_int_equal(b.precision, NNZ_F32);
    free(old);
    char *bad = strdup(json);
    memcpy(strstr(bad, "\"bf16\""), "\"fp16\"", 6);
    assert_int_equal(nnz_train_config_from_json(bad, &b, model, sizeof model), NNZ_ERR_FORMAT);
    assert_non_null(strstr(nnz_last_error(), "precision"));
    free(bad);
    /* --mask-block is recorded ("mask_block": "RxC") only when given, and read back */
    {
        nnz_train_config mc = a, md;
        mc.mask = (nnz_mask_spec){.kind = NNZ_MASK_RBGP, .sparsity = 0.875f, .block_rows = 2, .block_cols = 8};
        char *mj = NULL;
        assert_int_equal(nnz_train_config_to_json(&mc, &mj), NNZ_OK);
        assert_non_null(strstr(mj, "\"mask_block\":\"2x8\""));
        nnz_train_config_init(&md);
        assert_int_equal(nnz_train_config_from_json(mj, &md, model, sizeof model), NNZ_OK);
        assert_int_equal(md.mask.kind, NNZ_MASK_RBGP);
        assert_true(md.mask.sparsity == 0.875f);
        assert_int_equal(md.mask.block_rows, 2);
        assert_int_equal(md.mask.block_cols, 8);
        char *mbad = strdup(mj);
        memcpy(strstr(mbad, "\"2x8\""), "\"2y8\"", 5);
        assert_int_equal(nnz_train_config_from_json(mbad, &md, model, sizeof model), NNZ_ERR_FORMAT);
        assert_non_null(strstr(nnz_last_error(), "mask_block"));
        free(mbad), free(mj);
        mc.mask.block_rows = mc.mask.block_cols = 0; /* not given: not written, 0 (the default) read */
        assert_int_equal(nnz_train_config_to_json(&mc, &mj), NNZ_OK);
        assert_null(strstr(mj, "mask_block"));
        assert_int_equal(nnz_train_config_from_json(mj, &md, model, sizeof model), NNZ_OK);
        assert_int_equal(md.mask.block_rows, 0);
        free(mj);
    }
    /* A caller's non-zero epochs wins (extending a run). */
    b.epochs = 12;
    assert_int_equal(nnz_train_config_from_json(json, &b, model, sizeof model), NNZ_OK);
    assert_int_equal(b.epochs, 12);
    free(json);
    assert_int_equal(nnz_train_config_from_json("{\"model\":\"mlp\"}", &b, model, sizeof model), NNZ_ERR_FORMAT);
    assert_int_equal(nnz_train_config_from_json("[1,2", &b, model, sizeof model), NNZ_ERR_FORMAT);
    assert_int_equal(b.epochs, 12); /* untouched on failure */
}

/* ---------- evaluation and benchmark ---------- */

static void test_evaluate_matches_predict(void **state) {
    (void)state;
    nnz_dataset d;
    synthetic(&d, 37, 8, 8, 1, 3);
    nnz_model *m = small_model(4);
    nnz_eval_result er;
    assert_int_equal(nnz_evaluate(m, &d, 10, 0, &er), NNZ_OK);
    assert_int_equal(er.n, 37);
    /* Independently: normalize, predict one image at a time, count argmax hits, average the loss. */
    float mean[1], sd[1], x[64], logits[3];
    nnz_data_norm(1, mean, sd);
    int correct = 0;
    double loss = 0;
    for (int i = 0; i < 37; i++) {
        for (int p = 0; p < 64; p++) x[p] = ((float)d.images[i * 64 + p] / 255.0f - mean[0]) / sd[0];
        assert_int_equal(nnz_model_predict(m, x, 1, logits), NNZ_OK);
        int best = 0;
        for (int k = 1; k < 3; k++)
            if (logits[k] > logits[best]) best = k;
        correct += best == d.labels[i];
        double mx = fmax(logits[0], fmax(logits[1], logits[2])), se = 0;
        for (int k = 0; k < 3; k++) se += exp(logits[k] - mx);
        loss += log(se) + mx - logits[d.labels[i]];
    }
    assert_true(fabs(er.accuracy - correct / 37.0) < 1e-6);
    assert_true(fabs(er.loss - loss / 37.0) < 1e-4 * fmax(1.0, loss / 37.0));
    assert_int_equal(nnz_evaluate(m, &d, 10, 12, &er), NNZ_OK);
    assert_int_equal(er.n, 12);
    nnz_dataset wrong;
    synthetic(&wrong, 4, 9, 8, 1, 3);
    assert_int_equal(nnz_evaluate(m, &wrong, 10, 0, &er), NNZ_ERR_INVALID_ARG);
    synthetic_free(&wrong);
    nnz_model_free(m);
    synthetic_free(&d);
}

static void test_bench_restores_weights(void **state) {
    (void)state;
    nnz_model *m = small_model(8), *ref = small_model(8);
    nnz_bench_result br;
    nnz_bench_config bc;
    nnz_bench_config_init(&bc);
    bc.batch = 16, bc.iters = 3, bc.runs = 4, bc.seed = 1;
    assert_int_equal(nnz_bench_model(m, &bc, &br), NNZ_OK);
    assert_true(br.train_images_per_sec > 0 && br.infer_images_per_sec > 0);
    assert_true(br.train_gflops > 0 && br.infer_gflops > 0);
    nnz_model_stats st;
    nnz_model_get_stats(m, &st);
    /* GFLOP/s is images/s times FLOPs: 3x forward for training. */
    assert_true(fabs(br.infer_gflops - br.infer_images_per_sec * st.flops * 1e-9) <= 1e-9 * br.infer_gflops + 1e-12);
    assert_true(fabs(br.train_gflops - br.train_images_per_sec * 3.0 * st.flops * 1e-9) <=
                1e-9 * br.train_gflops + 1e-12);
    assert_int_equal(br.batch, 16);
    assert_int_equal(br.runs, 4);
    assert_int_equal(br.train_iters, 3);
    assert_int_equal(br.infer_iters, 3);
    assert_models_equal(m, ref);
    /* iters 0: as many steps as last min_time at the warm-up's pace; a min_time of 0 gives one
     * step, half a second many (a step of this model takes well under a millisecond) */
    bc.iters = 0, bc.runs = 1, bc.min_time = 0.0;
    assert_int_equal(nnz_bench_model(m, &bc, &br), NNZ_OK);
    assert_int_equal(br.train_iters, 1);
    assert_int_equal(br.infer_iters, 1);
    bc.min_time = 0.5;
    assert_int_equal(nnz_bench_model(m, &bc, &br), NNZ_OK);
    assert_true(br.train_iters > 1 && br.infer_iters > 1);
    assert_models_equal(m, ref);
    bc.batch = 0;
    assert_int_equal(nnz_bench_model(m, &bc, &br), NNZ_ERR_INVALID_ARG);
    bc.batch = 16, bc.runs = 0;
    assert_int_equal(nnz_bench_model(m, &bc, &br), NNZ_ERR_INVALID_ARG);
    bc.runs = 1, bc.iters = -1;
    assert_int_equal(nnz_bench_model(m, &bc, &br), NNZ_ERR_INVALID_ARG);
    nnz_model_free(m);
    nnz_model_free(ref);
}

/* A pruned model without a gradient mask (an AutoSparse or GMP checkpoint): the timed training
 * steps fill its zeros, but the inference loop must run on its own weights, zeros and sparse
 * kernels included (it ran dense on the trained copy before). lenet5's fc1 at 95% zeros: the
 * inference forwards plan it sparse at 5% density; the weights end as they started. */
static void test_bench_infers_on_the_pruned_weights(void **state) {
    (void)state;
    nnz_model *m = NULL;
    assert_int_equal(nnz_model_from_zoo("lenet5", 28, 28, 1, 10, 7, &m), NNZ_OK);
    int fc1 = -1;
    for (int i = 0; i < m->n_nodes; i++)
        if (strcmp(m->nodes[i].name, "fc1") == 0) fc1 = i;
    assert_true(fc1 >= 0);
    nnz_param *w = &m->params[m->nodes[fc1].weight];
    float *W = nnz_tensor_f32(&w->value);
    const int64_t n = nnz_tensor_numel(&w->value);
    for (int64_t i = 0; i < n; i++)
        if (i % 20) W[i] = 0.0f;
    float *before = malloc((size_t)n * sizeof(float));
    assert_non_null(before);
    memcpy(before, W, (size_t)n * sizeof(float));
    nnz_bench_result br;
    nnz_bench_config bc;
    nnz_bench_config_init(&bc);
    bc.batch = 16, bc.iters = 3, bc.runs = 1, bc.seed = 1;
    assert_int_equal(nnz_bench_model(m, &bc, &br), NNZ_OK);
    /* the plan of the last (inference) forward: fc1 on a sparse format, made from its 5% nonzeros */
    assert_non_null(m->sparse_plan);
    assert_true(m->sparse_plan[fc1].r > 0);
    assert_true(fabs(m->sparse_plan[fc1].density - 0.05) < 1e-3);
    assert_memory_equal(before, W, (size_t)n * sizeof(float));
    free(before);
    nnz_model_free(m);
}

/* ---------- end to end on real data ---------- */

static void test_lenet5_fashion_mnist_end_to_end(void **state) {
    (void)state;
    nnz_train_config c;
    nnz_train_result res;
    nnz_train_config_init(&c);
    c.model = "lenet5";
    c.epochs = 1;
    c.batch = 32;
    c.optimizer = NNZ_OPT_ADAMW;
    c.train_limit = 2000;
    c.test_limit = 1000;
    c.seed = 1;
    double t0 = nnz_now_sec();
    assert_int_equal(nnz_train(&c, &res), NNZ_OK);
    print_message("lenet5, 2000 images, 1 epoch: test accuracy %.2f%%, %.0f images/s, %.1f s\n",
                  100.0 * res.test_accuracy, res.train_images_per_sec, nnz_now_sec() - t0);
    assert_int_equal(res.steps, 62);
    assert_true(res.test_accuracy > 0.70f);
    assert_true(res.train_loss > 0 && isfinite(res.train_loss));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_norm_constants_match_fashion_mnist),
        cmocka_unit_test(test_batcher_order_and_normalization),
        cmocka_unit_test(test_augmentation),
        cmocka_unit_test(test_checkpoint_round_trip),
        cmocka_unit_test(test_checkpoint_errors),
        cmocka_unit_test(test_failed_save_leaves_nothing),
        cmocka_unit_test(test_resume_by_hand_is_bitwise),
        cmocka_unit_test(test_config_json_round_trip),
        cmocka_unit_test(test_evaluate_matches_predict),
        cmocka_unit_test(test_bench_restores_weights),
        cmocka_unit_test(test_bench_infers_on_the_pruned_weights),
        cmocka_unit_test(test_train_rejects_bad_config),
        cmocka_unit_test(test_train_nan_stops_and_keeps_checkpoint),
        cmocka_unit_test(test_train_resume_mid_epoch_is_bitwise),
        cmocka_unit_test(test_lenet5_fashion_mnist_end_to_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
