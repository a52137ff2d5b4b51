/* Allocation failures: every buffer a training step, an eval forward, a reserve or a checkpoint
 * save allocates is made to fail in turn, alone and with every allocation after it (this program
 * links with -Wl,--wrap=malloc,...: the wrappers below fail the k-th allocation made by nnz's own
 * code after arming; OpenBLAS, libgomp and libc allocate past them). Each run must end either in
 * a clean NNZ_ERR_NOMEM (with a message; a failed save keeps the old file, and no temporary one),
 * or, where the code has a fallback for that buffer, in the results of a run without the failure
 * (assert_close says how close). Either way the model must be left usable: the next step without
 * failures gives the reference's results bit for bit, and the sanitizer build finds no leak.
 * Without this the fallbacks after a failed allocation would never run. */
#include "nn/nn.h"
#include "test_util.h"

#include <dirent.h>
#include <errno.h>
#include <execinfo.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

/* ---- the wrappers ---- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
int __real_posix_memalign(void **p, size_t align, size_t n);

static bool counting;     /* count_bytes: the bytes asked for, failing nothing */
static size_t counted;
static long arm_at = -1;  /* the index (from arming) of the first allocation to fail; -1: none fails */
static bool arm_persist;  /* every allocation from arm_at on fails, not only that one */
static long seen, failed; /* allocations since arming, and how many of them failed */

static bool should_fail_bytes(size_t n) {
    if (__atomic_load_n(&counting, __ATOMIC_RELAXED)) __atomic_fetch_add(&counted, n, __ATOMIC_RELAXED);
    if (__atomic_load_n(&arm_at, __ATOMIC_RELAXED) < 0) return false;
    const long k = __atomic_fetch_add(&seen, 1, __ATOMIC_RELAXED);
    if (k < arm_at || (!arm_persist && k > arm_at)) return false;
    __atomic_fetch_add(&failed, 1, __ATOMIC_RELAXED);
    /* TRACE_ALLOC=k: the call stack of the k-th allocation when it fails (addr2line names it) */
    const char *trace = getenv("TRACE_ALLOC");
    if (trace && atol(trace) == k) {
        void *bt[16];
        backtrace_symbols_fd(bt, backtrace(bt, 16), 2);
    }
    return true;
}

void *__wrap_malloc(size_t n) {
    if (should_fail_bytes(n)) return NULL;
    return __real_malloc(n);
}

void *__wrap_calloc(size_t k, size_t n) {
    if (should_fail_bytes(k * n)) return NULL;
    return __real_calloc(k, n);
}

void *__wrap_realloc(void *p, size_t n) {
    if (should_fail_bytes(n)) return NULL;
    return __real_realloc(p, n);
}

int __wrap_posix_memalign(void **p, size_t align, size_t n) {
    if (should_fail_bytes(n)) return ENOMEM;
    return __real_posix_memalign(p, align, n);
}

static void arm(long k, bool persist) {
    seen = failed = 0;
    arm_persist = persist;
    __atomic_store_n(&arm_at, k, __ATOMIC_SEQ_CST);
}

static long disarm(void) {
    __atomic_store_n(&arm_at, -1, __ATOMIC_SEQ_CST);
    return failed;
}

/* ---- helpers ---- */

enum { MB = 4, MAX_TRIES = 4000 };

/* Under the sanitizers (NNZ_SANITIZE, set by make test-sanitize) the kernels run some 50 times
 * slower: there the big models' steps fail one allocation at a time only, with the same checks,
 * and the runs of every failure path (first steps, eval, files) use lenet5 and smaller files. */
static bool quick;

static nnz_model *zoo(const char *name, nnz_dtype precision) {
    nnz_model *m = NULL;
    if (nnz_model_from_zoo(name, 28, 28, 1, 10, 5, &m) != NNZ_OK) fail_msg("%s: %s", name, nnz_last_error());
    tu_randomize_batchnorms(m, 50);
    assert_int_equal(nnz_model_set_precision(m, precision), NNZ_OK);
    return m;
}

typedef struct {
    float *logits; /* MB x 10 */
    float **grads; /* per parameter, NULL where it has none */
    int n;         /* parameters */
    bool train;    /* grads hold a backward's gradients (else only the logits count) */
} step_result;

static step_result result_of(const nnz_model *m, bool train) {
    step_result r = {tu_falloc(MB * 10), calloc((size_t)m->n_params, sizeof(float *)), m->n_params, train};
    assert_non_null(r.grads);
    memcpy(r.logits, nnz_model_output(m), MB * 10 * sizeof(float));
    for (int i = 0; i < m->n_params; i++) {
        const nnz_param *p = &m->params[i];
        if (!p->grad || !train) continue;
        const size_t n = (size_t)nnz_tensor_numel(&p->value);
        r.grads[i] = tu_falloc(n);
        memcpy(r.grads[i], p->grad, n * sizeof(float));
    }
    return r;
}

static void result_free(step_result *r) {
    for (int i = 0; i < r->n; i++) free(r->grads[i]);
    free(r->grads);
    free(r->logits);
}

static double max_abs(const float *a, size_t n) {
    double big = 0.0;
    for (size_t i = 0; i < n; i++) big = fabs(a[i]) > big ? fabs(a[i]) : big;
    return big;
}

static double max_diff(const float *a, const float *b, size_t n) {
    double d = 0.0;
    for (size_t i = 0; i < n; i++) d = fabs((double)a[i] - b[i]) > d ? fabs((double)a[i] - b[i]) : d;
    return d;
}

static double worst; /* the largest error a fallback's results showed (reported) */

/* One result a fallback gave (got) against the reference's (want):
 * - tol 0: bit for bit;
 * - a reference that is zero up to rounding (its largest element under `zero` of scale, 1e-6 in
 *   fp32 and 1e-3 in bf16: the bias of a batch norm whose output feeds only a 1x1 conv and another
 *   batch norm, whose exact gradient is 0) must stay that small;
 * - bf16 steps (truth: the same step in fp32): no farther from the fp32 result than 3 times the
 *   reference is. A changed summation order moves later roundings to bf16 by a step, so a
 *   fallback moves a gradient by about as much as bf16 does (measured: at most 1.4 times);
 * - else within tol of the reference's largest element, as test_fusion compares the fused plan
 *   with the unfused one. */
static void assert_close(const float *got, const float *want, const float *truth, size_t n, double tol, double scale,
                         double zero, const char *what, long k, const char *name) {
    if (tol == 0.0) {
        if (memcmp(got, want, n * sizeof(float)) != 0)
            fail_msg("%s (allocation %ld): %s differs from the reference", what, k, name);
    } else if (max_abs(want, n) < zero * scale) {
        if (!(max_abs(got, n) < zero * scale))
            fail_msg("%s (allocation %ld): %s: %g, the reference's under %g", what, k, name, max_abs(got, n),
                     zero * scale);
    } else if (truth) {
        const double d = max_diff(got, truth, n), ref = max_diff(want, truth, n);
        worst = d / ref > worst ? d / ref : worst;
        if (!(d <= 3.0 * ref))
            fail_msg("%s (allocation %ld): %s is %g from the fp32 step, the reference %g", what, k, name, d, ref);
    } else {
        const double e = max_diff(got, want, n) / max_abs(want, n);
        worst = e > worst ? e : worst;
        if (!(e <= tol)) fail_msg("%s (allocation %ld): %s off by %g of its largest element", what, k, name, e);
    }
}

/* The logits and (ref->train) every gradient, each by assert_close; scale: the largest gradient
 * element of the reference (for the logits, their largest). */
static void assert_same_step(const nnz_model *m, const step_result *ref, const step_result *truth, double tol,
                             const char *what, long k) {
    const double zero = truth ? 1e-3 : 1e-6;
    assert_close(nnz_model_output(m), ref->logits, truth ? truth->logits : NULL, MB * 10, tol,
                 max_abs(ref->logits, MB * 10), zero, what, k, "the logits");
    double scale = 0.0;
    for (int i = 0; i < m->n_params && ref->train; i++)
        if (ref->grads[i]) {
            const double big = max_abs(ref->grads[i], (size_t)nnz_tensor_numel(&m->params[i].value));
            scale = big > scale ? big : scale;
        }
    for (int i = 0; i < m->n_params && ref->train; i++) {
        const nnz_param *p = &m->params[i];
        if (!p->grad) continue;
        char name[NNZ_NAME_MAX + 32];
        snprintf(name, sizeof name, "the gradient of %s", p->name);
        assert_close(p->grad, ref->grads[i], truth ? truth->grads[i] : NULL, (size_t)nnz_tensor_numel(&p->value),
                     tol, scale, zero, what, k, name);
    }
}

static nnz_status train_step(nnz_model *m, const float *x, const float *dl) {
    nnz_model_zero_grad(m);
    nnz_status s = nnz_model_forward(m, x, MB, true);
    return s != NNZ_OK ? s : nnz_model_backward(m, x, MB, dl);
}

static void assert_clean_failure(nnz_status s, const char *what, long k) {
    if (s != NNZ_ERR_NOMEM) fail_msg("%s (allocation %ld): status %d, not NNZ_ERR_NOMEM: %s", what, k, (int)s,
                                     nnz_last_error());
    if (!strstr(nnz_last_error(), "memory")) fail_msg("%s (allocation %ld): message '%s'", what, k, nnz_last_error());
}

typedef struct {
    long errors, fallbacks, tries; /* tries: the allocations the run makes */
    bool done;                     /* a run with no failure was reached */
} outcome;

/* A training step with the k-th allocation failing (persist: and every one after it), for
 * every k the step reaches; the model reserved beforehand, as the trainer does. fallback_tol:
 * how far a fallback may be from the fused plan (it runs the unfused arithmetic). */
static outcome train_steps_failing(nnz_model *m, bool persist, double fallback_tol, const char *what) {
    float *x = tu_falloc((size_t)MB * 784), dl[MB * 10];
    tu_fill_uniform(x, MB * 784, 0.0f, 20.0f, 11);
    tu_fill_uniform(dl, MB * 10, -1.0f, 1.0f, 12);
    step_result truth = {0}; /* bf16: the same step in fp32 */
    const bool bf16 = m->compute == NNZ_BF16;
    if (bf16) {
        assert_int_equal(nnz_model_set_precision(m, NNZ_F32), NNZ_OK);
        assert_int_equal(train_step(m, x, dl), NNZ_OK);
        truth = result_of(m, true);
        assert_int_equal(nnz_model_set_precision(m, NNZ_BF16), NNZ_OK);
    }
    assert_int_equal(train_step(m, x, dl), NNZ_OK);
    step_result ref = result_of(m, true);
    outcome o = {0};
    for (long k = 0; k < MAX_TRIES; k++) {
        arm(k, persist);
        const nnz_status s = train_step(m, x, dl);
        if (!disarm()) { /* the step made fewer than k + 1 allocations: all tried */
            assert_int_equal(s, NNZ_OK);
            assert_same_step(m, &ref, NULL, 0.0, what, k);
            o.tries = k, o.done = true;
            break;
        }
        if (s != NNZ_OK) {
            assert_clean_failure(s, what, k);
            o.errors++;
        } else {
            assert_same_step(m, &ref, bf16 ? &truth : NULL, fallback_tol, what, k);
            o.fallbacks++;
        }
        /* the model is not damaged: the next step is the reference, bit for bit */
        assert_int_equal(train_step(m, x, dl), NNZ_OK);
        assert_same_step(m, &ref, NULL, 0.0, what, k);
    }
    if (!o.done) fail_msg("%s: still failing after %d allocations", what, MAX_TRIES);
    if (bf16) result_free(&truth);
    result_free(&ref);
    free(x);
    return o;
}

/* A new model's first forward (train: with its backward), its buffers reserved and its plans
 * made inside, with the k-th allocation failing; a clean error, or the reference's results, and
 * the model then runs as one that never failed. */
static outcome first_runs_failing(nnz_model *(*make)(const char *, nnz_dtype), const char *name, nnz_dtype precision,
                                  bool train, double fallback_tol, const char *what) {
    float *x = tu_falloc((size_t)MB * 784), dl[MB * 10];
    tu_fill_uniform(x, MB * 784, 0.0f, 20.0f, 13);
    tu_fill_uniform(dl, MB * 10, -1.0f, 1.0f, 14);
    nnz_model *m = make(name, NNZ_F32);
    assert_int_equal(train ? train_step(m, x, dl) : nnz_model_forward(m, x, MB, false), NNZ_OK);
    step_result truth = result_of(m, train); /* for bf16 */
    nnz_model_free(m);
    m = make(name, precision);
    assert_int_equal(train ? train_step(m, x, dl) : nnz_model_forward(m, x, MB, false), NNZ_OK);
    step_result ref = result_of(m, train);
    nnz_model_free(m);
    outcome o = {0};
    for (long k = 0; k < MAX_TRIES && !o.done; k++) {
        m = make(name, precision);
        arm(k, false);
        const nnz_status s = train ? train_step(m, x, dl) : nnz_model_forward(m, x, MB, false);
        const long f = disarm();
        if (!f) {
            assert_int_equal(s, NNZ_OK);
            o.tries = k, o.done = true;
        } else if (s != NNZ_OK) {
            assert_clean_failure(s, what, k);
            o.errors++;
        } else {
            assert_same_step(m, &ref, precision == NNZ_BF16 ? &truth : NULL, train ? fallback_tol : 1e-5, what, k);
            o.fallbacks++;
        }
        assert_int_equal(train ? train_step(m, x, dl) : nnz_model_forward(m, x, MB, false), NNZ_OK);
        assert_same_step(m, &ref, NULL, 0.0, what, k);
        nnz_model_free(m);
    }
    if (!o.done) fail_msg("%s: still failing after %d allocations", what, MAX_TRIES);
    result_free(&truth);
    result_free(&ref);
    free(x);
    return o;
}

/* ---- the tests ---- */

/* the block-sparse kernels' buffers */
static nnz_model *masked(const char *name, nnz_dtype precision) {
    (void)name;
    nnz_model *m = tu_masked_lenet5("bsr:16x16");
    assert_int_equal(nnz_model_set_precision(m, precision), NNZ_OK);
    return m;
}

/* ... with conv2 on the channel-block Winograd products (the union of its blocks over the taps) */
static nnz_model *masked_winograd(const char *name, nnz_dtype precision) {
    (void)name;
    nnz_model *m = tu_masked_lenet5("winograd:16x16");
    assert_int_equal(nnz_model_set_precision(m, precision), NNZ_OK);
    return m;
}

static void report(const char *what, outcome steady_one, outcome steady_all, outcome first) {
    printf("%s: a step makes %ld allocations (one failing: %ld fell back, %ld errors; all from then on: %ld fell "
           "back, %ld errors); the first step %ld (%ld fell back, %ld errors); fallbacks within %.2g\n",
           what, steady_one.tries, steady_one.fallbacks, steady_one.errors, steady_all.fallbacks, steady_all.errors,
           first.tries, first.fallbacks, first.errors, worst);
}

/* A model's training steps: the steady ones (buffers reserved) and the first (reserve, plans). */
static outcome train_case(nnz_model *(*make)(const char *, nnz_dtype), const char *name, nnz_dtype precision,
                          double tol) {
    worst = 0.0;
    nnz_model *m = make(name, precision);
    assert_int_equal(nnz_model_reserve(m, MB), NNZ_OK);
    const bool all_modes = !quick || strstr(name, "lenet5");
    outcome one = train_steps_failing(m, false, tol, name), all = {0}, first = {0};
    if (all_modes) all = train_steps_failing(m, true, tol, name);
    nnz_model_free(m);
    if (all_modes) first = first_runs_failing(make, name, precision, true, tol, name);
    char what[64];
    snprintf(what, sizeof what, "%s%s", name, precision == NNZ_BF16 ? " bf16" : "");
    report(what, one, all, first);
    return one;
}

/* mbv2-tiny's fused training step: each fusion's buffers (the batch norms' sums and moments, the
 * expansion's products, the small GEMM's partials) fall back to the unfused arithmetic, which
 * the expansion's backward differs from by rounding only (test_fusion: within 1e-4) */
static void test_mbv2_train_step(void **state) {
    (void)state;
    outcome one = train_case(zoo, "mbv2-tiny", NNZ_F32, 1e-4);
    assert_true(one.fallbacks > 0); /* the fallbacks ran, and gave the reference */
}

static void test_lenet5_vgg8_train_step(void **state) {
    (void)state;
    train_case(zoo, "lenet5", NNZ_F32, 1e-5);
    if (!quick) train_case(zoo, "vgg8", NNZ_F32, 1e-5);
}

/* bf16: the packed GEMM's buffers, the converted operands */
static void test_bf16_train_step(void **state) {
    (void)state;
    train_case(zoo, quick ? "lenet5" : "mbv2-tiny", NNZ_BF16, 1.0); /* tol unused: compared with fp32 */
}

/* block-sparse layers: the sparse plan, the SDDMM's panels and partial sums */
static void test_sparse_train_step(void **state) {
    (void)state;
    train_case(masked, "masked lenet5", NNZ_F32, 1e-5);
    train_case(masked_winograd, "masked lenet5, winograd:16x16", NNZ_F32, 1e-5);
}

/* a new model's first eval forwards: the inference reserve, the frames, the sparse plan */
static void test_eval_forward(void **state) {
    (void)state;
    static const char *const names[] = {"mbv2-tiny", "lenet5", "vgg8"};
    for (int i = quick ? 1 : 0; i < (quick ? 2 : 3); i++) {
        outcome o = first_runs_failing(zoo, names[i], NNZ_F32, false, 1e-5, names[i]);
        printf("%s eval: the first forward makes %ld allocations, %ld fell back, %ld errors\n", names[i], o.tries,
               o.fallbacks, o.errors);
    }
    outcome o = first_runs_failing(masked, "masked lenet5", NNZ_F32, false, 1e-5, "masked lenet5");
    printf("masked lenet5 eval: the first forward makes %ld allocations, %ld fell back, %ld errors\n", o.tries,
           o.fallbacks, o.errors);
}

/* nnz_model_reserve with the k-th allocation failing: a clean error, and a reserve after it
 * gives a model that trains as one that never failed */
static void test_reserve(void **state) {
    (void)state;
    float *x = tu_falloc((size_t)MB * 784), dl[MB * 10];
    tu_fill_uniform(x, MB * 784, 0.0f, 20.0f, 14);
    tu_fill_uniform(dl, MB * 10, -1.0f, 1.0f, 15);
    nnz_model *m = zoo("mbv2-tiny", NNZ_F32);
    assert_int_equal(train_step(m, x, dl), NNZ_OK);
    step_result ref = result_of(m, true);
    nnz_model_free(m);
    long k = 0;
    for (; k < MAX_TRIES; k++) {
        m = zoo("mbv2-tiny", NNZ_F32);
        arm(k, false);
        const nnz_status s = nnz_model_reserve(m, MB);
        const long f = disarm();
        if (f) assert_clean_failure(s, "reserve", k);
        else assert_int_equal(s, NNZ_OK);
        assert_int_equal(train_step(m, x, dl), NNZ_OK);
        assert_same_step(m, &ref, NULL, 0.0, "after a failed reserve", k);
        nnz_model_free(m);
        if (!f) break;
    }
    assert_true(k > 0 && k < MAX_TRIES);
    printf("reserve: %ld allocations\n", k);
    result_free(&ref);
    free(x);
}

static size_t dir_entries(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
    closedir(d);
    return n;
}

/* write(ctx, path) with the k-th allocation failing, for every k it reaches; before each try path
 * holds `old` (written with tu_write_file). A failure must be a clean NNZ_ERR_NOMEM that leaves old
 * as it was, a success (a failure the writer works around, or none) must leave `want`; either way
 * no temporary file stays (dir holds `entries` files). Returns the allocations the write makes. */
static long write_failing(const char *what, nnz_status (*write)(const nnz_model *, const char *), const nnz_model *ctx,
                          const char *path, const char *dir, size_t entries, const uint8_t *old, size_t old_len,
                          const uint8_t *want, size_t want_len) {
    long k = 0, errors = 0, worked_around = 0;
    for (bool done = false; k < MAX_TRIES && !done; k++) {
        tu_write_file(path, old, old_len);
        arm(k, false);
        const nnz_status s = write(ctx, path);
        const long f = disarm();
        done = !f;
        size_t len;
        uint8_t *now = tu_read_file(path, &len);
        if (s != NNZ_OK) {
            assert_clean_failure(s, what, k);
            assert_int_equal(len, old_len);
            assert_memory_equal(now, old, old_len);
            errors++;
        } else {
            assert_int_equal(len, want_len);
            assert_memory_equal(now, want, want_len);
            worked_around += f > 0;
        }
        free(now);
        assert_int_equal(dir_entries(dir), entries);
    }
    assert_true(k > 1 && k < MAX_TRIES);
    printf("%s: %ld allocations, %ld errors, %ld worked around\n", what, k - 1, errors, worked_around);
    return k - 1;
}

static nnz_status save(const nnz_model *m, const char *path) { return nnz_checkpoint_save(path, m, NULL, NULL, NULL); }
static nnz_status pack(const nnz_model *m, const char *path) { return nnz_pack(m, path, NULL, NULL); }

/* A checkpoint save over an older one */
static void test_checkpoint_save(void **state) {
    (void)state;
    char dir[256], path[300];
    tu_make_temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    nnz_model *old = zoo("lenet5", NNZ_F32), *m = zoo("lenet5", NNZ_F32);
    nnz_param *p = &m->params[0]; /* other weights, so the two files differ */
    tu_fill_uniform(nnz_tensor_f32(&p->value), nnz_tensor_numel(&p->value), -1.0f, 1.0f, 16);
    size_t len_old, len_new;
    assert_int_equal(save(old, path), NNZ_OK);
    uint8_t *before = tu_read_file(path, &len_old);
    assert_int_equal(save(m, path), NNZ_OK);
    uint8_t *want = tu_read_file(path, &len_new);
    assert_true(len_old != len_new || memcmp(before, want, len_old) != 0);
    write_failing("checkpoint save", save, m, path, dir, 1, before, len_old, want, len_new);
    free(want);
    free(before);
    remove(path);
    rmdir(dir);
    nnz_model_free(old);
    nnz_model_free(m);
}

/* ---- file readers and the packed runner: each call with the k-th allocation failing ---- */

typedef struct {
    const char *path;
    nnz_model *m; /* what a load made (freed by the caller's check) */
    nnz_run_config run;
    nnz_run_result res;
} file_case;

/* Runs op with the k-th allocation failing for every k it reaches: a clean NNZ_ERR_NOMEM, or
 * check(c) (what a run that could work around the failure must have produced). After each, a run
 * without failures succeeds and passes check. Returns the allocations op makes. */
static long fail_each(const char *what, nnz_status (*op)(file_case *), void (*check)(file_case *, long), file_case *c) {
    long k = 0;
    for (; k < MAX_TRIES; k++) {
        arm(k, false);
        const nnz_status s = op(c);
        const long f = disarm();
        if (s != NNZ_OK) assert_clean_failure(s, what, k);
        else check(c, k);
        if (!f) {
            assert_int_equal(s, NNZ_OK);
            break;
        }
        assert_int_equal(op(c), NNZ_OK);
        check(c, k);
    }
    assert_true(k > 0 && k < MAX_TRIES);
    return k;
}

static nnz_status load_checkpoint(file_case *c) { return nnz_checkpoint_load_model(c->path, &c->m); }
static nnz_status load_packed(file_case *c) { return nnz_packed_load_model(c->path, &c->m); }
static nnz_status run_packed(file_case *c) { return nnz_run_packed(c->path, NULL, &c->run, &c->res); }

static nnz_model *expected_model;
static float expected_logits[24 * 10]; /* a run's without failures */

/* the loaded model's parameters are those saved (bit for bit) */
static void check_loaded(file_case *c, long k) {
    assert_non_null(c->m);
    assert_int_equal(c->m->n_params, expected_model->n_params);
    for (int i = 0; i < c->m->n_params; i++) {
        const nnz_param *p = &c->m->params[i], *q = &expected_model->params[i];
        const int64_t n = nnz_tensor_numel(&q->value);
        assert_int_equal(nnz_tensor_numel(&p->value), n);
        if (memcmp(nnz_tensor_f32(&p->value), nnz_tensor_f32(&q->value), (size_t)n * sizeof(float)) != 0)
            fail_msg("load (allocation %ld): %s differs", k, p->name);
    }
    nnz_model_free(c->m);
    c->m = NULL;
}

/* a fallback may round differently (a 1x1 conv on OpenBLAS instead of the small GEMM, through the
 * ~20 layers of mbv2-tiny: measured up to 1.2e-5): within 1e-4 of the largest logit, as the fused
 * training plan's gradients (test_fusion) */
static void check_run(file_case *c, long k) {
    const double e = max_diff(c->run.logits, expected_logits, 24 * 10) / max_abs(expected_logits, 24 * 10);
    worst = e > worst ? e : worst;
    if (!(e <= 1e-4)) fail_msg("run (allocation %ld): logits off by %g from a run without failures", k, e);
}

static void test_files_and_run(void **state) {
    (void)state;
    char dir[256], ckpt[300], packed[300];
    tu_make_temp_dir(dir, sizeof dir);
    snprintf(ckpt, sizeof ckpt, "%s/m.safetensors", dir);
    snprintf(packed, sizeof packed, "%s/m.nnz", dir);
    nnz_model *m = zoo(quick ? "lenet5" : "mbv2-tiny", NNZ_F32);
    assert_int_equal(nnz_checkpoint_save(ckpt, m, NULL, NULL, NULL), NNZ_OK);
    file_case c = {.path = ckpt};
    expected_model = m;
    const long loads = fail_each("checkpoint load", load_checkpoint, check_loaded, &c);

    /* pack, over an empty file */
    assert_int_equal(pack(m, packed), NNZ_OK);
    size_t len;
    uint8_t *want = tu_read_file(packed, &len);
    const long packs = write_failing("pack", pack, m, packed, dir, 2, NULL, 0, want, len);
    free(want);

    /* the packed model decodes to the quantized weights, whatever fails on the way */
    assert_int_equal(nnz_packed_load_model(packed, &expected_model), NNZ_OK);
    c.path = packed;
    const long decodes = fail_each("packed load", load_packed, check_loaded, &c);
    nnz_model_free(expected_model);

    /* nnz run: synthetic images, both plans, on lenet5 (each run is a whole nnz run) */
    nnz_model *small = zoo("lenet5", NNZ_F32);
    assert_int_equal(nnz_pack(small, packed, NULL, NULL), NNZ_OK);
    nnz_model_free(small);
    long runs[2];
    worst = 0.0;
    for (int plan = 0; plan < 2; plan++) {
        nnz_run_config_init(&c.run);
        c.run.synthetic = 24, c.run.batch = 8, c.run.plan = (nnz_run_plan_kind)plan;
        float logits[24 * 10];
        c.run.logits = logits;
        assert_int_equal(run_packed(&c), NNZ_OK);
        memcpy(expected_logits, logits, sizeof logits);
        runs[plan] = fail_each("run", run_packed, check_run, &c);
    }
    printf("checkpoint load: %ld allocations; pack: %ld; packed load: %ld; run: %ld (fixed plan), %ld (per layer), "
           "fallbacks within %.2g\n", loads, packs, decodes, runs[0], runs[1], worst);
    remove(ckpt);
    remove(packed);
    rmdir(dir);
    nnz_model_free(m);
}

/* Masks of every kind on vgg8 with the k-th allocation failing (the Ramanujan graphs and their
 * spectra, HBsNN's levels, the sparse plan after): a clean error, or the masks of a run without
 * failures, exactly (they depend on the seed only). */
static void test_masks(void **state) {
    (void)state;
    static const nnz_mask_kind kinds[] = {NNZ_MASK_UNSTRUCTURED, NNZ_MASK_BLOCK, NNZ_MASK_HBSNN, NNZ_MASK_RBGP,
                                          NNZ_MASK_CHANNEL_BLOCK, NNZ_MASK_CHANNEL_BLOCK}; /* by magnitude, at random */
    for (int t = 0; t < (int)(sizeof kinds / sizeof kinds[0]); t++) {
        const nnz_mask_spec spec = {.kind = kinds[t], .sparsity = 0.875f};
        const bool magnitude = t % 2 == 0;
        nnz_model *want = zoo(quick ? "lenet5" : "vgg8", NNZ_F32);
        assert_int_equal(magnitude ? nnz_model_apply_magnitude_masks(want, &spec, 9, NULL, 0)
                                   : nnz_model_apply_masks(want, &spec, 9, NULL, 0), NNZ_OK);
        long k = 0, errors = 0;
        for (bool done = false; k < MAX_TRIES && !done; k++) {
            nnz_model *m = zoo(quick ? "lenet5" : "vgg8", NNZ_F32);
            arm(k, false);
            const nnz_status s = magnitude ? nnz_model_apply_magnitude_masks(m, &spec, 9, NULL, 0)
                                           : nnz_model_apply_masks(m, &spec, 9, NULL, 0);
            done = !disarm();
            if (s != NNZ_OK) {
                assert_clean_failure(s, "masks", k);
                errors++;
            } else {
                for (int i = 0; i < m->n_params; i++)
                    if (memcmp(nnz_tensor_f32(&m->params[i].value), nnz_tensor_f32(&want->params[i].value),
                               (size_t)nnz_tensor_numel(&m->params[i].value) * sizeof(float)) != 0)
                        fail_msg("masks (kind %d, allocation %ld): %s differs", (int)kinds[t], k, m->params[i].name);
            }
            nnz_model_free(m);
        }
        assert_true(k > 1 && k < MAX_TRIES);
        printf("masks of kind %d%s: %ld allocations, %ld errors\n", (int)kinds[t], magnitude ? " by magnitude" : "",
               k - 1, errors);
        nnz_model_free(want);
    }
}

/* nnz shrink (Expand-then-Shrink from scratch on mbv2-tiny: gates, search, finetuning, merge, save)
 * with the k-th allocation failing: a clean error and no output file, or a whole one. A training step
 * makes the same allocations every step, so past the first 200 every 17th is tried (the merge and
 * the save come last, and every site there is reached; under the sanitizers every 23rd). */
static void test_shrink(void **state) {
    (void)state;
    char dir[256], out[300];
    tu_make_temp_dir(dir, sizeof dir);
    snprintf(out, sizeof out, "%s/s.safetensors", dir);
    nnz_shrink_config cfg;
    nnz_shrink_config_init(&cfg);
    cfg.data_dir = NNZ_DEFAULT_DATA_DIR, cfg.train_limit = 16, cfg.test_limit = 8, cfg.batch = 8, cfg.threads = 2;
    cfg.search_epochs = 1, cfg.finetune_epochs = 1, cfg.keep = 0.5f, cfg.lr = 0.1f, cfg.seed = 3;
    assert_int_equal(nnz_shrink_from_scratch("mbv2-tiny", out, &cfg, NULL), NNZ_OK);
    long k = 0, tried = 0, errors = 0;
    const int stride = quick ? 23 : 17; /* quick: every 23rd from the start */
    for (bool done = false; k < 100 * MAX_TRIES && !done; k += k < 200 && !quick ? 1 : stride, tried++) {
        remove(out);
        arm(k, false);
        const nnz_status s = nnz_shrink_from_scratch("mbv2-tiny", out, &cfg, NULL);
        done = !disarm();
        const bool saved = access(out, F_OK) == 0;
        if (s != NNZ_OK) {
            assert_clean_failure(s, "nnz shrink", k);
            assert_false(saved); /* the merged model is saved last, atomically */
            errors++;
        } else {
            nnz_model *m = NULL;
            assert_true(saved);
            assert_int_equal(nnz_checkpoint_load_model(out, &m), NNZ_OK);
            nnz_model_free(m);
        }
        assert_int_equal(dir_entries(dir), saved ? 1 : 0);
    }
    assert_true(tried > 1 && k < 100 * MAX_TRIES);
    printf("nnz shrink: about %ld allocations, %ld tried, %ld errors\n", k, tried, errors);
    remove(out);
    rmdir(dir);
}

/* nnz_train as cfg says, with the k-th allocation failing for every k it reaches: a clean
 * NNZ_ERR_NOMEM that leaves no checkpoint at cfg->out_path or a whole one, or the weights of the
 * run without failures (within 1e-4: a fallback may round differently). */
static void train_failing(const nnz_train_config *cfg, const char *what) {
    nnz_train_result res;
    remove(cfg->out_path);
    assert_int_equal(nnz_train(cfg, &res), NNZ_OK);
    nnz_model *want = NULL;
    assert_int_equal(nnz_checkpoint_load_model(cfg->out_path, &want), NNZ_OK);
    long k = 0, errors = 0;
    for (bool done = false; k < MAX_TRIES && !done; k++) {
        remove(cfg->out_path);
        arm(k, false);
        const nnz_status s = nnz_train(cfg, &res);
        done = !disarm();
        nnz_model *got = NULL;
        const bool saved = access(cfg->out_path, F_OK) == 0;
        if (saved) assert_int_equal(nnz_checkpoint_load_model(cfg->out_path, &got), NNZ_OK); /* never partial */
        if (s != NNZ_OK) {
            assert_clean_failure(s, what, k);
            errors++;
        } else {
            assert_true(saved);
            for (int i = 0; i < want->n_params; i++) {
                const nnz_param *p = &got->params[i], *q = &want->params[i];
                const size_t n = (size_t)nnz_tensor_numel(&q->value);
                const double big = max_abs(nnz_tensor_f32(&q->value), n);
                const double e = max_diff(nnz_tensor_f32(&p->value), nnz_tensor_f32(&q->value), n) / (big > 0 ? big : 1);
                if (!(e <= 1e-4)) fail_msg("%s (allocation %ld): %s off by %g", what, k, p->name, e);
            }
        }
        nnz_model_free(got);
    }
    assert_true(k > 1 && k < MAX_TRIES);
    printf("%s: %ld allocations, %ld errors\n", what, k - 1, errors);
    nnz_model_free(want);
}

/* nnz_train: lenet5 on the first Fashion-MNIST images, a checkpoint and a log written (the data set,
 * the steps, the saves); then a run resumed from that checkpoint (its reader, the optimizer state). */
/* The bf16 GEMM's native paths allocate no more than nnz_gemm_bf16_*_bytes say (the memory
 * budget counts on it): the bytes the driver asks for in one call, whole and with K split into
 * groups, on 1 and 2 threads; the AMX blocking runs here with its plain-C tile. */
typedef bool (*gemm_src_fn)(int, int, int, float, const nnz_bf16_src *, const nnz_bf16_src *, float, float *, int);

static void gemm_bytes_case(gemm_src_fn fn, size_t (*bound)(int), const char *name, int M, int N, int K) {
    float *a = tu_falloc((size_t)M * K), *b = tu_falloc((size_t)K * N), *c = tu_falloc((size_t)M * N);
    tu_fill_uniform(a, (int64_t)M * K, -1, 1, 1);
    tu_fill_uniform(b, (int64_t)K * N, -1, 1, 2);
    const nnz_bf16_src A = {.p = a, .ld = K, .f32 = true}, B = {.p = b, .ld = N, .f32 = true};
    const int saved = nnz_get_threads();
    for (int t = 1; t <= 2; t++) {
        nnz_set_threads(t);
        counted = 0;
        __atomic_store_n(&counting, true, __ATOMIC_SEQ_CST);
        const bool ok = fn(M, N, K, 1.0f, &A, &B, 0.0f, c, N);
        __atomic_store_n(&counting, false, __ATOMIC_SEQ_CST);
        assert_true(ok);
        if (counted == 0 || counted > bound(t))
            fail_msg("%s %dx%dx%d on %d threads asked for %zu bytes, bound %zu", name, M, N, K, t, counted, bound(t));
    }
    nnz_set_threads(saved);
    free(a), free(b), free(c);
}

static void test_bf16_gemm_bytes(void **state) {
    (void)state;
    static const int shapes[][3] = {{100, 70, 600}, {40, 300, 2100}, {3, 5, 9000}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        gemm_bytes_case(nnz_gemm_bf16_amx_emulated_src, nnz_gemm_bf16_amx_bytes, "amx_emulated", shapes[i][0],
                        shapes[i][1], shapes[i][2]);
        if (nnz_isa_supported(NNZ_ISA_AVX512BF16))
            gemm_bytes_case(nnz_gemm_bf16_avx512bf16_src, nnz_gemm_bf16_avx512bf16_bytes, "avx512bf16",
                            shapes[i][0], shapes[i][1], shapes[i][2]);
    }
}

static void test_train_run(void **state) {
    (void)state;
    char dir[256], first[300], out[300], log[300];
    tu_make_temp_dir(dir, sizeof dir);
    snprintf(first, sizeof first, "%s/first.safetensors", dir);
    snprintf(out, sizeof out, "%s/t.safetensors", dir);
    snprintf(log, sizeof log, "%s/t.jsonl", dir);
    nnz_train_config cfg;
    nnz_train_config_init(&cfg);
    cfg.model = "lenet5", cfg.data_dir = NNZ_DEFAULT_DATA_DIR, cfg.out_path = out, cfg.log_path = log;
    cfg.epochs = 1, cfg.batch = 8, cfg.train_limit = 24, cfg.test_limit = 16, cfg.threads = 2, cfg.seed = 3;
    train_failing(&cfg, "nnz_train");
    assert_int_equal(rename(out, first), 0);
    cfg.resume_path = first, cfg.epochs = 2;
    train_failing(&cfg, "nnz_train --resume");
    remove(first);
    remove(out);
    remove(log);
    rmdir(dir);
}

int main(void) {
    quick = getenv("NNZ_SANITIZE") != NULL;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mbv2_train_step), cmocka_unit_test(test_lenet5_vgg8_train_step),
        cmocka_unit_test(test_bf16_train_step), cmocka_unit_test(test_sparse_train_step),
        cmocka_unit_test(test_eval_forward),    cmocka_unit_test(test_reserve),
        cmocka_unit_test(test_checkpoint_save), cmocka_unit_test(test_files_and_run),
        cmocka_unit_test(test_masks),           cmocka_unit_test(test_train_run),
        cmocka_unit_test(test_shrink),          cmocka_unit_test(test_bf16_gemm_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
