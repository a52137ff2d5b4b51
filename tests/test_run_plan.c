/* nnz run's per-layer batch planner (src/run/plan.c) on made-up layer tables (budget, latency,
 * optimality against brute force, degenerate cases), the batch-invariant linear kernel, the
 * runner's plans on a packed lenet5 (per-layer logits bit-identical to the fixed plan's at every
 * batch, within the memory budget) and AlexNet's shapes. */
#include "test_util.h"

#include "nn/nn.h"
#include "run/run.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- made-up problems: per layer, bytes per image at its input (the boundary before it) and
 * inside it (a chunk's activations) ---- */
typedef struct {
    int n;
    size_t in[8], inside[8], out_last;
    int calls;
} fake;

static nnz_status fake_bytes(void *ctx, int a, int e, int chunk, int super, size_t *act, size_t *sticky) {
    fake *f = ctx;
    f->calls++;
    size_t most = 0;
    for (int i = a; i <= e; i++) most = f->inside[i] > most ? f->inside[i] : most;
    size_t out = e == f->n - 1 ? f->out_last : f->in[e + 1];
    *act = (a > 0 ? (size_t)super * f->in[a] : (size_t)chunk * f->in[0]) + (size_t)super * out + (size_t)chunk * most;
    *sticky = 1000 + (size_t)chunk * 10;
    return NNZ_OK;
}

/* conv-like layers first (big activations, small weights), fc-like after (big weights) */
static void alexnet_like(fake *f, nnz_plan_layer *L, nnz_plan_problem *p) {
    memset(f, 0, sizeof *f);
    f->n = 5;
    const size_t in[5] = {600000, 300000, 200000, 40000, 16000}, inside[5] = {4000000, 2000000, 1000000, 20000, 20000};
    const size_t wb[5] = {100000, 2000000, 5000000, 150000000, 60000000};
    const double flops[5] = {2e8, 9e8, 4e8, 7.5e7, 3.4e7}, dec[5] = {1e-4, 0.01, 0.02, 0.5, 0.15};
    for (int i = 0; i < 5; i++) {
        f->in[i] = in[i], f->inside[i] = inside[i];
        memset(&L[i], 0, sizeof L[i]);
        snprintf(L[i].name, sizeof L[i].name, "l%d", i);
        L[i].weight_bytes = wb[i], L[i].flops = flops[i], L[i].decode_seconds = dec[i];
        L[i].cut_before = true;
    }
    f->out_last = 4000;
    memset(p, 0, sizeof *p);
    p->n = 5, p->layer = L, p->flop_rate = 5e10, p->byte_rate = 5e9, p->budget = SIZE_MAX, p->fixed_bytes = 20000000;
    p->max_super = 64, p->bytes = fake_bytes, p->ctx = f;
}

/* what a plan needs, recomputed from its stages */
static size_t recompute(const nnz_plan_problem *p, const nnz_plan *pl, double *seconds) {
    size_t w = 0, act = 0, st = 0;
    *seconds = 0;
    assert_int_equal(pl->first[0], 0);
    assert_int_equal(pl->last[pl->n_stages - 1], p->n - 1);
    for (int s = 0; s < pl->n_stages; s++) {
        if (s > 0) assert_int_equal(pl->first[s], pl->last[s - 1] + 1);
        assert_true(pl->chunk[s] >= 1 && pl->chunk[s] <= pl->super);
        size_t a, k, ws = 0;
        assert_int_equal(p->bytes(p->ctx, pl->first[s], pl->last[s], pl->chunk[s], pl->super, &a, &k), NNZ_OK);
        for (int i = pl->first[s]; i <= pl->last[s]; i++) {
            size_t b = p->layer[i].weight_bytes;
            ws = pl->chunk[s] < pl->super ? ws + b : (b > ws ? b : ws);
        }
        w = ws > w ? ws : w, act = a > act ? a : act, st = k > st ? k : st;
        *seconds += nnz_plan_stage_seconds(p, pl->first[s], pl->last[s], pl->chunk[s], pl->super);
    }
    return p->fixed_bytes + w + act + st;
}

static void test_plan_respects_budget(void **state) {
    (void)state;
    fake f;
    nnz_plan_layer L[5];
    nnz_plan_problem p;
    alexnet_like(&f, L, &p);
    nnz_plan free_plan;
    assert_int_equal(nnz_plan_choose(&p, &free_plan), NNZ_OK);
    assert_int_equal(free_plan.super, 64);
    int chunked = 0;
    for (size_t budget = free_plan.bytes; budget > 150000000; budget -= budget / 20) {
        p.budget = budget;
        nnz_plan pl;
        nnz_status s = nnz_plan_choose(&p, &pl);
        if (s == NNZ_ERR_NOMEM) break;
        assert_int_equal(s, NNZ_OK);
        double t;
        size_t need = recompute(&p, &pl, &t);
        assert_true(need <= budget);
        assert_int_equal(need, pl.bytes);
        assert_true(fabs(t - pl.seconds) <= 1e-9 * t);
        assert_true(fabs(pl.images_per_sec - pl.super / pl.seconds) < 1e-6);
        for (int st = 0; st < pl.n_stages; st++) chunked += pl.chunk[st] < pl.super;
        /* never slower than the best fixed batch under the same budget */
        nnz_plan_problem fx = p;
        fx.fixed = true;
        nnz_plan fp;
        if (nnz_plan_choose(&fx, &fp) == NNZ_OK) {
            assert_int_equal(fp.n_stages, 1);
            assert_int_equal(fp.chunk[0], fp.super);
            assert_true(pl.images_per_sec >= fp.images_per_sec * (1 - 1e-12));
            nnz_plan_free(&fp);
        }
        nnz_plan_free(&pl);
    }
    assert_true(chunked > 0); /* some budget made the conv layers run in chunks */
    nnz_plan_free(&free_plan);
}

static void test_plan_matches_brute_force(void **state) {
    (void)state;
    fake f;
    nnz_plan_layer L[5];
    nnz_plan_problem p;
    alexnet_like(&f, L, &p);
    p.n = 3; /* 3 layers: 4 partitions, chunks 1..8 (4 values) each: enumerate */
    f.n = 3;
    f.out_last = 4000;
    p.super = 8;
    p.max_super = 8;
    const int chunks[4] = {1, 2, 4, 8};
    for (size_t budget = 60000000; budget > 20000000; budget -= 2000000) {
        p.budget = budget;
        double best = INFINITY;
        /* partitions of 3 layers: cuts after layer 0 and/or 1 */
        for (int mask = 0; mask < 4; mask++) {
            int first[3], last[3], ns = 0, start = 0;
            for (int i = 0; i < 3; i++)
                if (i == 2 || (mask >> i & 1)) first[ns] = start, last[ns] = i, ns++, start = i + 1;
            int idx[3] = {0, 0, 0};
            for (int combo = 0; combo < 64; combo++) {
                int c = combo, ok = 1;
                for (int s = 0; s < 3; s++) idx[s] = c % 4, c /= 4;
                if (combo >= (1 << (2 * ns))) break;
                nnz_plan pl = {.super = 8, .n_stages = ns, .first = first, .last = last, .chunk = (int[3]){0}};
                for (int s = 0; s < ns; s++) pl.chunk[s] = chunks[idx[s]];
                double t;
                size_t need = recompute(&p, &pl, &t);
                if (need > budget) ok = 0;
                if (ok && t < best) best = t;
            }
        }
        nnz_plan pl;
        nnz_status s = nnz_plan_choose(&p, &pl);
        if (!isfinite(best)) {
            assert_int_equal(s, NNZ_ERR_NOMEM);
            continue;
        }
        assert_int_equal(s, NNZ_OK);
        assert_true(fabs(pl.seconds - best) <= 1e-12 * best);
        nnz_plan_free(&pl);
    }
}

static void test_plan_latency(void **state) {
    (void)state;
    fake f;
    nnz_plan_layer L[5];
    nnz_plan_problem p;
    alexnet_like(&f, L, &p);
    nnz_plan big;
    assert_int_equal(nnz_plan_choose(&p, &big), NNZ_OK);
    /* a latency budget below the unconstrained plan's time: a smaller super-batch, within it */
    p.latency = big.seconds * 0.5;
    nnz_plan pl;
    assert_int_equal(nnz_plan_choose(&p, &pl), NNZ_OK);
    assert_true(pl.seconds <= p.latency);
    assert_true(pl.super < big.super);
    assert_true(pl.images_per_sec <= big.images_per_sec);
    nnz_plan_free(&pl);
    /* below one image's time: refused, naming the fastest */
    p.latency = 1e-6;
    assert_int_equal(nnz_plan_choose(&p, &pl), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "latency budget"));
    assert_non_null(strstr(nnz_last_error(), "takes an estimated"));
    nnz_plan_free(&big);
}

static void test_plan_degenerate(void **state) {
    (void)state;
    fake f;
    nnz_plan_layer L[5];
    nnz_plan_problem p;
    alexnet_like(&f, L, &p);
    /* too small a budget: a clear error */
    p.budget = 1000;
    nnz_plan pl;
    assert_int_equal(nnz_plan_choose(&p, &pl), NNZ_ERR_NOMEM);
    assert_non_null(strstr(nnz_last_error(), "no plan fits the memory budget of 1000 bytes"));
    assert_null(pl.first);
    /* one layer */
    p.budget = SIZE_MAX;
    p.n = 1;
    f.n = 1;
    assert_int_equal(nnz_plan_choose(&p, &pl), NNZ_OK);
    assert_int_equal(pl.n_stages, 1);
    assert_int_equal(pl.chunk[0], pl.super);
    nnz_plan_free(&pl);
    /* batch 1 */
    alexnet_like(&f, L, &p);
    p.max_super = 1;
    assert_int_equal(nnz_plan_choose(&p, &pl), NNZ_OK);
    assert_int_equal(pl.super, 1);
    for (int s = 0; s < pl.n_stages; s++) assert_int_equal(pl.chunk[s], 1);
    nnz_plan_free(&pl);
    /* a fixed super-batch is kept */
    alexnet_like(&f, L, &p);
    p.super = 12;
    assert_int_equal(nnz_plan_choose(&p, &pl), NNZ_OK);
    assert_int_equal(pl.super, 12);
    nnz_plan_free(&pl);
    /* no cut allowed: one stage */
    for (int i = 1; i < 5; i++) L[i].cut_before = false;
    p.super = 0;
    assert_int_equal(nnz_plan_choose(&p, &pl), NNZ_OK);
    assert_int_equal(pl.n_stages, 1);
    nnz_plan_free(&pl);
    /* bad problems */
    p.flop_rate = 0;
    assert_int_equal(nnz_plan_choose(&p, &pl), NNZ_ERR_INVALID_ARG);
    assert_int_equal(nnz_plan_choose(NULL, &pl), NNZ_ERR_INVALID_ARG);
}

/* ---- nnz_linear_rows: near the double-precision product, and the same floats for any M ---- */
static void linear_rows_on(nnz_isa isa, void *ctx) {
    (void)isa;
    (void)ctx;
    const int K = 517, N = 37, M = 70;
    float *x = malloc(sizeof(float) * M * K), *w = malloc(sizeof(float) * N * K), b[37];
    float *all = malloc(sizeof(float) * M * N), *part = malloc(sizeof(float) * M * N), *ref = malloc(sizeof(float) * M * N);
    tu_fill_uniform(x, (int64_t)M * K, -1, 1, 3);
    tu_fill_uniform(w, (int64_t)N * K, -1, 1, 4);
    tu_fill_uniform(b, N, -1, 1, 5);
    for (int i = 0; i < M * N; i++) all[i] = NAN; /* beta = 0 overwrites NaNs */
    nnz_linear_rows(M, N, K, x, w, b, all);
    nnz_sgemm_ref(false, true, M, N, K, 1.0f, x, K, w, K, 0.0f, ref, N);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double sum = 0;
            for (int k = 0; k < K; k++) sum += fabs((double)x[i * K + k] * w[j * K + k]);
            assert_true(fabs((double)all[i * N + j] - ((double)ref[i * N + j] + b[j])) <= 2.0 * (K + 2) * 0x1p-24 * (sum + fabs(b[j])));
        }
    /* split the rows any way: the same floats */
    for (int split = 1; split < M; split += 13) {
        nnz_linear_rows(split, N, K, x, w, b, part);
        nnz_linear_rows(M - split, N, K, x + (size_t)split * K, w, b, part + (size_t)split * N);
        assert_memory_equal(part, all, sizeof(float) * M * N);
    }
    for (int i = 0; i < M; i++) {
        nnz_linear_rows(1, N, K, x + (size_t)i * K, w, NULL, part);
        nnz_linear_rows(1, N, K, x + (size_t)i * K, w, b, part + N);
        assert_memory_equal(part + N, all + (size_t)i * N, sizeof(float) * N);
    }
    free(x), free(w), free(all), free(part), free(ref);
}

static void test_linear_rows(void **state) {
    (void)state;
    tu_for_each_isa(linear_rows_on, NULL);
}

/* ---- the runner on a packed lenet5 ---- */
typedef struct {
    char dir[512], path[600];
} packed;

static void pack_lenet5(packed *pk) {
    tu_make_temp_dir(pk->dir, sizeof pk->dir);
    snprintf(pk->path, sizeof pk->path, "%s/lenet5.nnz", pk->dir);
    nnz_model *m;
    assert_int_equal(nnz_model_from_zoo("lenet5", 28, 28, 1, 10, 3, &m), NNZ_OK);
    nnz_pack_config pc;
    nnz_pack_config_init(&pc);
    assert_int_equal(nnz_pack(m, pk->path, &pc, NULL), NNZ_OK);
    nnz_model_free(m);
}

static void unpack_done(packed *pk) {
    unlink(pk->path);
    rmdir(pk->dir);
}

enum { IMAGES = 40, CLASSES = 10 };

/* Resets the process's peak resident memory (VmHWM) to its current RSS (Linux >= 4.0): a budget
 * bounds the run's peak, not this test program's earlier ones. */
static void reset_peak_resident(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    assert_non_null(f);
    fputs("5", f);
    assert_int_equal(fclose(f), 0);
}

static void run_one(const char *path, nnz_run_plan_kind plan, int batch, size_t budget, float *logits,
                    nnz_run_result *res) {
    nnz_run_config cfg;
    nnz_run_config_init(&cfg);
    cfg.plan = plan;
    cfg.batch = batch;
    cfg.memory_budget = budget;
    cfg.synthetic = IMAGES;
    cfg.logits = logits;
    nnz_status s = nnz_run_packed(path, NULL, &cfg, res);
    if (s != NNZ_OK) fail_msg("plan %d batch %d budget %zu: %s", (int)plan, batch, budget, nnz_last_error());
    assert_int_equal(res->n, IMAGES);
}

static void test_runner_plans_bit_identical(void **state) {
    (void)state;
    packed pk;
    pack_lenet5(&pk);
    float *ref = malloc(sizeof(float) * IMAGES * CLASSES), *got = malloc(sizeof(float) * IMAGES * CLASSES);
    nnz_run_result r0, r;
    run_one(pk.path, NNZ_RUN_PLAN_FIXED, 64, 0, ref, &r0);
    assert_int_equal(r0.plan, NNZ_RUN_PLAN_FIXED);
    for (int i = 0; i < IMAGES * CLASSES; i++) assert_true(isfinite(ref[i]));
    /* every fixed batch, every per-layer super-batch: the same logits, bit for bit */
    const int batches[] = {1, 7, 40};
    for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) {
        run_one(pk.path, NNZ_RUN_PLAN_FIXED, batches[b], 0, got, &r);
        assert_memory_equal(got, ref, sizeof(float) * IMAGES * CLASSES);
        assert_true(r.logits_checksum == r0.logits_checksum);
        run_one(pk.path, NNZ_RUN_PLAN_PER_LAYER, batches[b], 0, got, &r);
        assert_int_equal(r.plan, NNZ_RUN_PLAN_PER_LAYER);
        assert_int_equal(r.batch, batches[b]);
        assert_memory_equal(got, ref, sizeof(float) * IMAGES * CLASSES);
        assert_true(r.accuracy == r0.accuracy);
    }
    /* under budgets that make the planner chunk the convolutions: still the same logits, and the
     * process within the budget. The budgets come down from the unconstrained plan's estimate. */
    nnz_run_config cfg;
    nnz_run_config_init(&cfg);
    cfg.plan = NNZ_RUN_PLAN_PER_LAYER;
    cfg.synthetic = IMAGES;
    cfg.dry_run = true;
    assert_int_equal(nnz_run_packed(pk.path, NULL, &cfg, &r), NNZ_OK);
    assert_int_equal(r.n, 0); /* a dry run runs nothing */
    /* what the plan adds to the resident bytes, in steps of 1/32 down, over the resident bytes of the
     * moment (the sanitizers' shadow memory and quarantine move those by megabytes between runs) */
    const size_t resident = nnz_resident_bytes(), extra = r.memory_estimate > resident ? r.memory_estimate - resident : 0;
    int chunked_runs = 0;
    for (int step = 1; step < 32 && chunked_runs < 1; step++) {
        reset_peak_resident();
        const size_t allowance = extra - extra / 32 * (size_t)step; /* over the resident bytes */
        cfg.memory_budget = nnz_resident_bytes() + allowance;
        nnz_status s = nnz_run_packed(pk.path, NULL, &cfg, &r);
        if (s == NNZ_ERR_NOMEM) {
            assert_non_null(strstr(nnz_last_error(), "--memory-budget"));
            break;
        }
        assert_int_equal(s, NNZ_OK);
        if (r.stages < 2 || !strstr(r.layer_batches, "conv1:")) continue;
        char conv1[32], fc1[32];
        sscanf(strstr(r.layer_batches, "conv1:") + 6, "%31[0-9]", conv1);
        sscanf(strstr(r.layer_batches, "fc1:") + 4, "%31[0-9]", fc1);
        if (atoi(conv1) >= atoi(fc1)) continue;
        reset_peak_resident();
        const size_t budget = nnz_resident_bytes() + allowance;
        run_one(pk.path, NNZ_RUN_PLAN_PER_LAYER, 0, budget, got, &r);
        assert_memory_equal(got, ref, sizeof(float) * IMAGES * CLASSES);
        assert_true(r.memory_estimate <= budget);
        assert_true(r.peak_bytes > 0);
        chunked_runs++;
    }
    /* Under the sanitizers every run's loading grows the resident bytes by megabytes (ASan's
     * quarantine), more than one 1/32 step of the budget, so the step-down can go from "fits
     * whole" to "refused" without a chunked plan in between; the bit-identity above (fixed and
     * per-layer super-batches) still runs there, and this part runs in every plain build. */
    if (!getenv("NNZ_SANITIZE")) assert_true(chunked_runs > 0);
    /* a latency budget nothing meets: refused before running */
    cfg.memory_budget = 0;
    cfg.dry_run = false;
    cfg.latency_budget_ms = 1e-6;
    assert_int_equal(nnz_run_packed(pk.path, NULL, &cfg, &r), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "--latency-budget"));
    cfg.plan = NNZ_RUN_PLAN_FIXED;
    assert_int_equal(nnz_run_packed(pk.path, NULL, &cfg, &r), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "--latency-budget"));
    /* a generous one: met by the estimate */
    cfg.plan = NNZ_RUN_PLAN_PER_LAYER;
    cfg.latency_budget_ms = 60000;
    assert_int_equal(nnz_run_packed(pk.path, NULL, &cfg, &r), NNZ_OK);
    assert_true(r.est_latency_ms > 0 && r.est_latency_ms <= 60000);
    free(ref), free(got);
    unpack_done(&pk);
}

/* ---- AlexNet's shapes (graph only: no weights) ---- */
static void test_alexnet_shapes(void **state) {
    (void)state;
    nnz_model *m;
    assert_int_equal(nnz_zoo_build("alexnet", 224, 224, 3, 1000, &m), NNZ_OK);
    m->graph_only = true;
    assert_int_equal(nnz_model_finalize(m, 0), NNZ_OK);
    static const struct {
        const char *name;
        int h, w, c;
    } want[] = {{"conv1", 55, 55, 96},   {"pool1", 27, 27, 96},  {"conv2", 27, 27, 256}, {"pool2", 13, 13, 256},
                {"conv3", 13, 13, 384},  {"conv4", 13, 13, 384}, {"conv5", 13, 13, 256}, {"pool5", 6, 6, 256},
                {"flatten", 1, 1, 9216}, {"fc6", 1, 1, 4096},    {"fc7", 1, 1, 4096},    {"fc8", 1, 1, 1000}};
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        int found = 0;
        for (int i = 0; i < m->n_nodes; i++) {
            const nnz_node *n = &m->nodes[i];
            if (strcmp(n->name, want[k].name)) continue;
            found = 1;
            if (n->h != want[k].h || n->w != want[k].w || n->c != want[k].c)
                fail_msg("%s is %dx%dx%d, want %dx%dx%d", n->name, n->h, n->w, n->c, want[k].h, want[k].w, want[k].c);
        }
        assert_true(found);
    }
    int64_t params = 0;
    for (int i = 0; i < m->n_params; i++) params += nnz_tensor_numel(&m->params[i].value);
    assert_int_equal(params, 62378344); /* conv 3,747,200 + fc 58,631,144 */
    assert_int_equal(m->num_classes, 1000);
    nnz_model_free(m);
    /* not among the trainable zoo's names, and too small an input is refused */
    for (const char *const *n = nnz_zoo_names(); *n; n++) assert_string_not_equal(*n, "alexnet");
    assert_int_equal(nnz_model_from_zoo("alexnet", 28, 28, 1, 10, 1, &m), NNZ_ERR_INVALID_ARG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_respects_budget), cmocka_unit_test(test_plan_matches_brute_force),
        cmocka_unit_test(test_plan_latency),         cmocka_unit_test(test_plan_degenerate),
        cmocka_unit_test(test_linear_rows),          cmocka_unit_test(test_runner_plans_bit_identical),
        cmocka_unit_test(test_alexnet_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
