/* pack + run: a zoo model packed to a .nnz file decodes to the quantized weights, the
 * runner computes the same function as the decoded model's forward pass, with and without
 * prefetch, and keeps the process's peak resident memory within the memory budget. */
#include "test_util.h"

#include "nn/nn.h"
#include "pack/pack.h"
#include "io/io.h" /* nnz_data_norm */

#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char dir[512], path[600];
    nnz_model *m;
    nnz_dataset d;
} ctx;

/* Resets the process's peak resident memory (VmHWM) to its current RSS (Linux >= 4.0). */
static void reset_peak_resident(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    assert_non_null(f);
    fputs("5", f);
    assert_int_equal(fclose(f), 0);
}

/* A data set labelled by the decoded model itself: its own accuracy is 100%. */
static void make_data(ctx *c, nnz_model *decoded, int n) {
    nnz_dataset *d = &c->d;
    d->n = n, d->h = decoded->in_h, d->w = decoded->in_w, d->c = decoded->in_c, d->num_classes = 10;
    size_t px = (size_t)d->h * d->w * d->c;
    d->images = malloc((size_t)n * px);
    d->labels = malloc((size_t)n);
    nnz_rng r = nnz_rng_make(77, 1);
    for (size_t i = 0; i < (size_t)n * px; i++) d->images[i] = (uint8_t)nnz_rng_below(&r, 256);
    nnz_eval_result er;
    /* predict with the same normalization as the runner: through nnz_evaluate's batcher */
    memset(d->labels, 0, (size_t)n);
    float *x = malloc(px * sizeof(float)), logits[10];
    float mean[4], std[4];
    nnz_data_norm(d->c, mean, std);
    for (int i = 0; i < n; i++) {
        for (size_t p = 0; p < px; p++) {
            int ch = (int)(p % (size_t)d->c);
            x[p] = ((float)d->images[(size_t)i * px + p] / 255.0f - mean[ch]) / std[ch];
        }
        assert_int_equal(nnz_model_predict(decoded, x, 1, logits), NNZ_OK);
        int best = 0;
        for (int k = 1; k < 10; k++)
            if (logits[k] > logits[best]) best = k;
        d->labels[i] = (uint8_t)best;
    }
    free(x);
    assert_int_equal(nnz_evaluate(decoded, d, 32, 0, &er), NNZ_OK);
    assert_true(er.accuracy > 0.999f);
}

static void pack_zoo(ctx *c, const char *name, float prune) {
    tu_make_temp_dir(c->dir, sizeof c->dir);
    snprintf(c->path, sizeof c->path, "%s/%s.nnz", c->dir, name);
    assert_int_equal(nnz_model_from_zoo(name, 28, 28, 1, 10, 5, &c->m), NNZ_OK);
    /* zero the smallest weights (magnitude pruning) so the sparse path is exercised */
    for (int i = 0; i < c->m->n_params; i++) {
        nnz_param *p = &c->m->params[i];
        if (strstr(p->name, ".weight") && p->value.ndim >= 2) {
            float *v = p->value.data;
            int64_t n = nnz_tensor_numel(&p->value);
            double mean = 0;
            for (int64_t j = 0; j < n; j++) mean += fabsf(v[j]);
            mean /= (double)n;
            for (int64_t j = 0; j < n; j++)
                if (fabsf(v[j]) < prune * mean) v[j] = 0.0f;
        }
    }
    nnz_pack_config cfg;
    nnz_pack_config_init(&cfg);
    nnz_pack_report rep;
    assert_int_equal(nnz_pack(c->m, c->path, &cfg, &rep), NNZ_OK);
    /* >= 5x for lenet5 (4-5 bit indices); mbv2-tiny has many small raw batch-norm tensors */
    assert_true(rep.file_bytes > 0 && rep.file_bytes < rep.fp32_bytes / 2.5);
    nnz_pack_report_free(&rep);
}

static void cleanup(ctx *c) {
    nnz_model_free(c->m);
    free(c->d.images);
    free(c->d.labels);
    unlink(c->path);
    rmdir(c->dir);
}

static void check_model(const char *name, float prune) {
    ctx c;
    memset(&c, 0, sizeof c);
    pack_zoo(&c, name, prune);
    nnz_model *dec = NULL;
    assert_int_equal(nnz_packed_load_model(c.path, &dec), NNZ_OK);
    /* every decoded tensor: raw ones exact; quantized ones keep zeros and stay near */
    for (int i = 0; i < dec->n_params; i++) {
        const nnz_param *a = &c.m->params[i], *b = &dec->params[i];
        assert_string_equal(a->name, b->name);
        int64_t n = nnz_tensor_numel(&a->value);
        const float *x = a->value.data, *y = b->value.data;
        float amax = 0;
        for (int64_t j = 0; j < n; j++) amax = fmaxf(amax, fabsf(x[j]));
        for (int64_t j = 0; j < n; j++) {
            if (x[j] == 0.0f && prune > 0) assert_true(y[j] == 0.0f);
            assert_true(fabsf(x[j] - y[j]) <= 0.1f * amax + 1e-6f);
        }
    }
    make_data(&c, dec, 96);
    /* the runner, unlimited, with and without prefetch, and with a tight budget */
    for (int mode = 0; mode < 3; mode++) {
        nnz_run_config cfg;
        nnz_run_config_init(&cfg);
        cfg.prefetch = mode != 1;
        if (mode == 2) cfg.batch = 7; /* an odd batch: a short last batch */
        nnz_run_result res;
        assert_int_equal(nnz_run_packed(c.path, &c.d, &cfg, &res), NNZ_OK);
        assert_int_equal(res.n, 96);
        assert_true(res.accuracy >= 0.98f); /* the same function (up to near-ties of the logits) */
        assert_true(res.peak_bytes >= res.peak_weight_bytes + res.peak_act_bytes);
    }
    /* budgets bound the process's peak resident memory (VmHWM, reset before each run so an earlier
     * peak of this test does not count): the batch is the largest whose estimate fits, the run
     * stays within the estimate, a smaller budget gives a smaller batch, a --batch that does not
     * fit is refused naming the largest that does, a too-small budget is a clear error */
    const bool sanitized = getenv("NNZ_SANITIZE") != NULL; /* shadow memory and quarantine are resident */
    nnz_run_config cfg;
    nnz_run_config_init(&cfg);
    /* without prefetch: a given --batch that fails with prefetch is retried without it, so with
     * prefetch on, the largest batch chosen (with prefetch) and the largest given batch that runs
     * (without) differ */
    cfg.prefetch = false;
    nnz_run_result big, small;
    cfg.memory_budget = (size_t)4 << 30;
    reset_peak_resident();
    assert_int_equal(nnz_run_packed(c.path, &c.d, &cfg, &big), NNZ_OK);
    assert_int_equal(big.batch, 96); /* all the images: min(256, 96) */
    assert_true(big.memory_estimate <= cfg.memory_budget);
    assert_true(big.memory_estimate >= big.peak_bytes);
    if (!sanitized) assert_true(big.peak_resident <= big.memory_estimate);
    /* The rest compares budgets a few megabytes apart. Under the sanitizers the resident bytes move
     * by more than that between runs (measured: 7.8 MB less for the second lenet5 run, the shadow
     * memory and quarantine following the allocator), so it runs without them only. */
    if (sanitized) {
        nnz_model_free(dec);
        cleanup(&c);
        return;
    }
    cfg.memory_budget = big.memory_estimate - big.peak_act_bytes / 2;
    reset_peak_resident();
    assert_int_equal(nnz_run_packed(c.path, &c.d, &cfg, &small), NNZ_OK);
    assert_true(small.batch >= 1 && small.batch < big.batch);
    assert_true(small.memory_estimate <= cfg.memory_budget);
    if (!sanitized) assert_true(small.peak_resident <= cfg.memory_budget);
    assert_true(small.accuracy >= 0.98f);
    /* a given batch that does not fit: refused, with the largest that does */
    cfg.batch = big.batch;
    reset_peak_resident();
    assert_int_equal(nnz_run_packed(c.path, &c.d, &cfg, &small), NNZ_ERR_NOMEM);
    const char *why = strstr(nnz_last_error(), "The largest --batch that fits is ");
    assert_non_null(why);
    int fits = atoi(why + strlen("The largest --batch that fits is "));
    assert_true(fits >= 1 && fits < big.batch);
    cfg.batch = 0;
    /* too small for even one image: a clear error */
    cfg.memory_budget = 1000;
    assert_int_equal(nnz_run_packed(c.path, &c.d, &cfg, &small), NNZ_ERR_NOMEM);
    assert_non_null(strstr(nnz_last_error(), "raise --memory-budget"));
    nnz_model_free(dec);
    cleanup(&c);
}

static void test_lenet5_sparse(void **state) {
    (void)state;
    check_model("lenet5", 0.8f);
}

static void test_mbv2_dense(void **state) {
    (void)state;
    check_model("mbv2-tiny", 0.0f); /* batch norm, relu6, depthwise, residual adds */
}

/* Batch-norm folding: mbv2-tiny with random batch-norm statistics and a conv bias-free graph,
 * pruned zeros in some weights: the folded model has no batch norm after a conv, each folded conv
 * has a bias, zeros stay zeros, and its eval-mode logits equal the original's to 1e-5 relative;
 * packed, it is smaller than the unfolded file and loads as the folded architecture. lenet5 has
 * no batch norm: nothing is folded, the same parameters come out. */
static void test_fold_batchnorm(void **state) {
    (void)state;
    nnz_model *m = NULL, *f = NULL;
    assert_int_equal(nnz_model_from_zoo("mbv2-tiny", 28, 28, 1, 10, 5, &m), NNZ_OK);
    nnz_rng r = nnz_rng_make(9, 9);
    int bns = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        const nnz_node *n = &m->nodes[i];
        if (n->op != NNZ_OP_BATCHNORM) continue;
        bns++;
        float *g = m->params[n->weight].value.data, *b = m->params[n->bias].value.data;
        float *mu = m->params[n->running_mean].value.data, *var = m->params[n->running_var].value.data;
        for (int c = 0; c < n->c; c++) {
            g[c] = 0.5f + (float)nnz_rng_below(&r, 1000) / 1000.0f;
            b[c] = ((float)nnz_rng_below(&r, 1000) - 500.0f) / 2000.0f;
            mu[c] = ((float)nnz_rng_below(&r, 1000) - 500.0f) / 5000.0f;
            var[c] = 0.2f + (float)nnz_rng_below(&r, 1000) / 500.0f;
        }
    }
    nnz_param *pw = &m->params[nnz_model_find_param(m, "blocks.1.pw1.weight")];
    for (int64_t j = 0; j < nnz_tensor_numel(&pw->value); j += 3) ((float *)pw->value.data)[j] = 0.0f;
    int folded = -1;
    assert_int_equal(nnz_pack_fold_batchnorm(m, &f, &folded), NNZ_OK);
    assert_true(bns > 10);
    assert_int_equal(folded, bns); /* every batch norm of mbv2-tiny follows a conv */
    assert_int_equal(f->n_nodes, m->n_nodes - bns);
    for (int i = 0; i < f->n_nodes; i++) {
        assert_true(f->nodes[i].op != NNZ_OP_BATCHNORM);
        if (f->nodes[i].op == NNZ_OP_CONV2D) assert_true(f->nodes[i].bias >= 0);
    }
    const nnz_param *fpw = &f->params[nnz_model_find_param(f, "blocks.1.pw1.weight")];
    for (int64_t j = 0; j < nnz_tensor_numel(&fpw->value); j++)
        assert_true((((const float *)fpw->value.data)[j] == 0.0f) == (((const float *)pw->value.data)[j] == 0.0f));
    const int n = 8, px = 28 * 28;
    float *x = malloc(sizeof(float) * (size_t)n * px), la[80], lb[80];
    for (int i = 0; i < n * px; i++) x[i] = ((float)nnz_rng_below(&r, 2000) - 1000.0f) / 1000.0f;
    assert_int_equal(nnz_model_predict(m, x, n, la), NNZ_OK);
    assert_int_equal(nnz_model_predict(f, x, n, lb), NNZ_OK);
    float amax = 0;
    for (int i = 0; i < 10 * n; i++) amax = fmaxf(amax, fabsf(la[i]));
    for (int i = 0; i < 10 * n; i++) assert_true(fabsf(la[i] - lb[i]) <= 1e-5f * amax);
    /* packed: folded smaller than unfolded; the folded file loads as the folded graph */
    ctx c;
    memset(&c, 0, sizeof c);
    tu_make_temp_dir(c.dir, sizeof c.dir);
    snprintf(c.path, sizeof c.path, "%s/f.nnz", c.dir);
    nnz_pack_report ra, rb;
    assert_int_equal(nnz_pack(m, c.path, NULL, &ra), NNZ_OK);
    assert_int_equal(nnz_pack(f, c.path, NULL, &rb), NNZ_OK);
    assert_true(rb.file_bytes < ra.file_bytes * 3 / 4);
    assert_int_equal(rb.n, ra.n - 4 * bns + (folded - 0)); /* four tensors per batch norm out, a bias in */
    nnz_pack_report_free(&ra);
    nnz_pack_report_free(&rb);
    nnz_model *dec = NULL;
    assert_int_equal(nnz_packed_load_model(c.path, &dec), NNZ_OK);
    assert_int_equal(dec->n_nodes, f->n_nodes);
    nnz_model_free(dec);
    /* a nearly dead channel (running variance 1e-8: scale ~10^4) would make its folded weights
     * outliers of the tensor: that conv keeps its batch norm, the others still fold, and the
     * model computes the same function */
    const int dw = m->params[nnz_model_find_param(m, "blocks.2.dw.weight")].node;
    int dw_bn = -1;
    for (int i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].input == dw) dw_bn = i;
    assert_true(dw_bn >= 0 && m->nodes[dw_bn].op == NNZ_OP_BATCHNORM);
    ((float *)m->params[m->nodes[dw_bn].running_var].value.data)[3] = 1e-8f;
    nnz_model *g = NULL;
    assert_int_equal(nnz_pack_fold_batchnorm(m, &g, &folded), NNZ_OK);
    assert_int_equal(folded, bns - 1);
    assert_int_equal(g->n_nodes, m->n_nodes - bns + 1);
    int kept = 0;
    for (int i = 0; i < g->n_nodes; i++) kept += g->nodes[i].op == NNZ_OP_BATCHNORM;
    assert_int_equal(kept, 1);
    assert_true(nnz_model_find_param(g, "blocks.2.dw.bias") < 0); /* left as it was: no bias */
    assert_int_equal(nnz_model_predict(m, x, n, la), NNZ_OK);
    assert_int_equal(nnz_model_predict(g, x, n, lb), NNZ_OK);
    amax = 0;
    for (int i = 0; i < 10 * n; i++) amax = fmaxf(amax, fabsf(la[i]));
    for (int i = 0; i < 10 * n; i++) assert_true(fabsf(la[i] - lb[i]) <= 1e-5f * amax);
    nnz_model_free(g);
    /* no batch norm: nothing folded */
    nnz_model *l = NULL, *lf = NULL;
    assert_int_equal(nnz_model_from_zoo("lenet5", 28, 28, 1, 10, 5, &l), NNZ_OK);
    assert_int_equal(nnz_pack_fold_batchnorm(l, &lf, &folded), NNZ_OK);
    assert_int_equal(folded, 0);
    assert_int_equal(lf->n_params, l->n_params);
    for (int i = 0; i < l->n_params; i++)
        assert_memory_equal(lf->params[i].value.data, l->params[i].value.data, nnz_tensor_bytes(&l->params[i].value));
    nnz_model_free(l), nnz_model_free(lf);
    free(x);
    nnz_model_free(f);
    c.m = m;
    cleanup(&c);
}

static void test_errors(void **state) {
    (void)state;
    nnz_model *m = NULL;
    assert_int_equal(nnz_packed_load_model("/nonexistent.nnz", &m), NNZ_ERR_IO);
    assert_false(nnz_is_packed_file("/nonexistent.nnz"));
    ctx c;
    memset(&c, 0, sizeof c);
    pack_zoo(&c, "mlp", 0.0f);
    assert_true(nnz_is_packed_file(c.path));
    /* an override naming nothing is refused; bits out of range too */
    nnz_pack_config cfg;
    nnz_pack_config_init(&cfg);
    const char *names[1] = {"nosuchlayer"};
    int bits[1] = {3};
    cfg.n_overrides = 1, cfg.override_names = names, cfg.override_bits = bits;
    assert_int_equal(nnz_pack(c.m, c.path, &cfg, NULL), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "nosuchlayer"));
    nnz_pack_config_init(&cfg);
    cfg.conv_bits = 9;
    assert_int_equal(nnz_pack(c.m, c.path, &cfg, NULL), NNZ_ERR_INVALID_ARG);
    /* the earlier file is untouched by the failed packs */
    assert_int_equal(nnz_packed_load_model(c.path, &m), NNZ_OK);
    nnz_model_free(m);
    cleanup(&c);
}

int main(void) {
#ifdef __GLIBC__
    /* as nnz's CLI does under --memory-budget: freed buffers go back to the system at once */
    mallopt(M_MMAP_THRESHOLD, 256 << 10);
    mallopt(M_TRIM_THRESHOLD, 1 << 20);
#endif
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lenet5_sparse),
        cmocka_unit_test(test_mbv2_dense),
        cmocka_unit_test(test_fold_batchnorm),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
