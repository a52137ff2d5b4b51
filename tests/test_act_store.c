/* Activations stored in bf16 between layers (src/nn/act_store.c, m->bf16_activations): the
 * forward is bit for bit the same as without, the backward differs only by the rounding of what
 * it reads (less than the bf16 GEMMs' own difference from fp32), the layout takes less memory,
 * every step reuses the shared regions correctly, and what cannot work is refused. */
#include "test_util.h"
#include "nn/nn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MB 12

static nnz_model *model(const char *name, nnz_dtype precision, bool store) {
    nnz_model *m;
    if (nnz_model_from_zoo(name, 28, 28, 1, 10, 5, &m) != NNZ_OK) fail_msg("%s: %s", name, nnz_last_error());
    tu_randomize_batchnorms(m, 50);
    assert_int_equal(nnz_model_set_precision(m, precision), NNZ_OK);
    assert_int_equal(nnz_model_set_bf16_activations(m, store), NNZ_OK);
    return m;
}

typedef struct {
    float *x, *dl;
} batch;

static batch make_batch(void) {
    batch b = {tu_falloc((size_t)MB * 784), tu_falloc((size_t)MB * 10)};
    tu_fill_uniform(b.x, MB * 784, -1.0f, 3.0f, 71);
    tu_fill_uniform(b.dl, MB * 10, -1.0f, 1.0f, 72);
    return b;
}

/* one training step's logits (into logits) and gradients */
static void step(nnz_model *m, const batch *b, float *logits) {
    assert_int_equal(nnz_model_forward(m, b->x, MB, true), NNZ_OK);
    memcpy(logits, nnz_model_output(m), MB * 10 * sizeof(float));
    nnz_model_zero_grad(m);
    assert_int_equal(nnz_model_backward(m, b->x, MB, b->dl), NNZ_OK);
}

/* sqrt(sum (a-b)^2 / sum b^2) over every gradient */
static double grad_distance(const nnz_model *a, const nnz_model *b) {
    double num = 0, den = 0;
    for (int i = 0; i < a->n_params; i++) {
        if (!a->params[i].grad) continue;
        const int64_t n = nnz_tensor_numel(&a->params[i].value);
        for (int64_t j = 0; j < n; j++) {
            const double d = (double)a->params[i].grad[j] - b->params[i].grad[j];
            num += d * d, den += (double)b->params[i].grad[j] * b->params[i].grad[j];
        }
    }
    return sqrt(num / den);
}

static float *grads_copy(const nnz_model *m) {
    size_t total = 0;
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].grad) total += (size_t)nnz_tensor_numel(&m->params[i].value);
    float *g = tu_falloc(total), *p = g;
    for (int i = 0; i < m->n_params; i++) {
        if (!m->params[i].grad) continue;
        const size_t n = (size_t)nnz_tensor_numel(&m->params[i].value);
        memcpy(p, m->params[i].grad, n * sizeof(float));
        p += n;
    }
    return g;
}

static bool grads_equal(const nnz_model *m, const float *g) {
    for (int i = 0; i < m->n_params; i++) {
        if (!m->params[i].grad) continue;
        const size_t n = (size_t)nnz_tensor_numel(&m->params[i].value);
        if (memcmp(g, m->params[i].grad, n * sizeof(float)) != 0) return false;
        g += n;
    }
    return true;
}

static int stored_buffers(const nnz_model *m) {
    int n = 0;
    for (int i = 0; i < m->n_nodes; i++) n += m->exec[i].stored;
    return n;
}

/* On (a) against off (b) and fp32 (c), on the models where the layout pays (mbv2-tiny's blocks,
 * vgg8's conv-bn pairs): the same logits bit for bit; gradients closer to b's than b's are to fp32's;
 * a second step over the reused regions gives a's gradients again, bit for bit. */
static void compare(nnz_isa isa, void *ctx) {
    (void)isa;
    const char *name = ctx;
    nnz_model *a = model(name, NNZ_BF16, true), *b = model(name, NNZ_BF16, false), *c = model(name, NNZ_F32, false);
    batch bt = make_batch();
    float la[MB * 10], lb[MB * 10], lc[MB * 10];
    step(a, &bt, la);
    step(b, &bt, lb);
    step(c, &bt, lc);
    assert_true(a->act_layout_stored);
    assert_true(stored_buffers(a) >= 5);
    assert_false(b->act_layout_stored);
    assert_memory_equal(la, lb, sizeof la);
    const double d_store = grad_distance(a, b), d_bf16 = grad_distance(b, c);
    if (!(d_store > 0 && d_store < 0.5 * d_bf16))
        fail_msg("%s: stored activations move the gradients by %g, the bf16 GEMMs by %g", name, d_store, d_bf16);
    float *g = grads_copy(a);
    step(a, &bt, la); /* every region written again by the step's other buffers in between */
    assert_memory_equal(la, lb, sizeof la);
    if (!grads_equal(a, g)) fail_msg("%s: a second step over the same weights gave other gradients", name);
    /* the gradient buffers in the pool or apart: the same bits */
    nnz_model *d = model(name, NNZ_BF16, true);
    d->act_grads_apart = true;
    step(d, &bt, la);
    assert_memory_equal(la, lb, sizeof la);
    assert_true(d->act_layout_stored);
    if (!grads_equal(d, g)) fail_msg("%s: the pooled gradient buffers change the gradients", name);
    nnz_model_free(d);
    free(g);
    free(bt.x), free(bt.dl);
    nnz_model_free(a), nnz_model_free(b), nnz_model_free(c);
}

static void test_mbv2_stored_vs_not(void **state) {
    (void)state;
    tu_for_each_isa(compare, "mbv2-tiny");
}

static void test_vgg8_stored_vs_not(void **state) {
    (void)state;
    tu_for_each_isa(compare, "vgg8");
}

/* The pool is smaller than the buffers it replaces (activations and their gradients), and the
 * estimate holds for the reservation it predicts; at fp32 and at bf16 without stored activations
 * the gradients alone share it, and that is smaller too. */
static void test_memory(void **state) {
    (void)state;
    static const char *const names[] = {"mbv2-tiny", "vgg8", "lenet5", "mlp"};
    for (int k = 0; k < 4; k++) {
        for (int mode = 0; mode < 3; mode++) { /* bf16 stored, bf16 not stored, fp32 */
            nnz_model *a = model(names[k], mode == 2 ? NNZ_F32 : NNZ_BF16, mode == 0);
            nnz_model *b = model(names[k], mode == 2 ? NNZ_F32 : NNZ_BF16, false);
            b->act_grads_apart = true;
            size_t on, off;
            assert_int_equal(nnz_model_activation_bytes(a, 64, true, &on), NNZ_OK);
            assert_int_equal(nnz_model_activation_bytes(b, 64, true, &off), NNZ_OK);
            /* mbv2-tiny and vgg8 save 16-47% at this batch; lenet5, whose first conv's output and
             * gradient dominate, 3-7% */
            if (!(on < off) || (k < 2 && !(on < off - off / 10))) fail_msg("%s, mode %d: %zu bytes pooled, %zu plain", names[k], mode, on, off);
            assert_int_equal(nnz_model_reserve(a, 64), NNZ_OK);
            assert_true(a->act_arena.used <= on);
            if (mode == 1) assert_false(a->act_layout_stored);
            assert_true(a->grad_layout_wanted);
            nnz_model_free(a), nnz_model_free(b);
        }
        /* bf16 activations are stored only where that beats the gradients pooled alone (mode 1),
         * not merely the buffers apart: on mlp it does not, and its activations stay plain */
        nnz_model *st = model(names[k], NNZ_BF16, true), *pl = model(names[k], NNZ_BF16, false);
        size_t b_st, b_pl;
        assert_int_equal(nnz_model_activation_bytes(st, 64, true, &b_st), NNZ_OK);
        assert_int_equal(nnz_model_activation_bytes(pl, 64, true, &b_pl), NNZ_OK);
        assert_int_equal(nnz_model_reserve(st, 64), NNZ_OK);
        print_message("%s: %zu bytes stored in bf16, %zu with the gradients pooled alone\n", names[k], b_st, b_pl);
        assert_true(b_st <= b_pl);
        assert_int_equal(st->act_layout_stored, b_st < b_pl);
        if (k < 3) assert_true(st->act_layout_stored); /* the zoo's convolutional models gain */
        nnz_model_free(st), nnz_model_free(pl);
    }
}

/* The gradients pooled or apart give the same bits, at fp32 (where the expansion's fused backward
 * writes a gradient three layers down) and at bf16, two steps each and a third at the other
 * precision on the same reservation, on every zoo model. */
static void pooled_vs_apart(nnz_isa isa, void *ctx) {
    (void)isa, (void)ctx;
    batch bt = make_batch();
    for (const char *const *name = nnz_zoo_names(); *name; name++)
        for (int p = 0; p < 2; p++) {
            nnz_model *a = model(*name, p ? NNZ_BF16 : NNZ_F32, false), *b = model(*name, p ? NNZ_BF16 : NNZ_F32, false);
            b->act_grads_apart = true;
            float la[MB * 10], lb[MB * 10];
            for (int s = 0; s < 3; s++) {
                if (s == 2) { /* the other precision, on the same reservation */
                    assert_int_equal(nnz_model_set_precision(a, p ? NNZ_F32 : NNZ_BF16), NNZ_OK);
                    assert_int_equal(nnz_model_set_precision(b, p ? NNZ_F32 : NNZ_BF16), NNZ_OK);
                }
                step(a, &bt, la);
                step(b, &bt, lb);
                assert_memory_equal(la, lb, sizeof la);
                if (grad_distance(a, b) != 0.0) fail_msg("%s (%s, step %d): pooled gradients differ", *name, p ? "bf16" : "fp32", s);
            }
            assert_true(a->grad_layout_wanted);
            assert_false(b->grad_layout_wanted);
            nnz_model_free(a), nnz_model_free(b);
        }
    free(bt.x), free(bt.dl);
}

static void test_gradients_pooled_vs_apart(void **state) {
    (void)state;
    tu_for_each_isa(pooled_vs_apart, NULL);
}

/* Where the pool would not be smaller (two linear layers: the first's output is needed in fp32
 * at both ends of the step, and so is its gradient), the model keeps plain buffers: the same
 * bytes, the same gradients bit for bit. */
static nnz_model *two_linear(bool store) {
    nnz_model *m;
    assert_int_equal(nnz_model_create(28, 28, 1, &m), NNZ_OK);
    nnz_add_flatten(m, "flatten");
    nnz_add_linear(m, "fc1", 64, true);
    nnz_add_linear(m, "fc2", 10, true);
    assert_int_equal(nnz_model_finalize(m, 3), NNZ_OK);
    assert_int_equal(nnz_model_set_precision(m, NNZ_BF16), NNZ_OK);
    assert_int_equal(nnz_model_set_bf16_activations(m, store), NNZ_OK);
    return m;
}

static void test_kept_plain(void **state) {
    (void)state;
    nnz_model *a = two_linear(true), *b = two_linear(false);
    size_t on, off;
    assert_int_equal(nnz_model_activation_bytes(a, 64, true, &on), NNZ_OK);
    assert_int_equal(nnz_model_activation_bytes(b, 64, true, &off), NNZ_OK);
    assert_int_equal(on, off);
    batch bt = make_batch();
    float la[MB * 10], lb[MB * 10];
    step(a, &bt, la);
    step(b, &bt, lb);
    assert_false(a->act_layout_stored);
    assert_memory_equal(la, lb, sizeof la);
    assert_true(grad_distance(a, b) == 0.0);
    free(bt.x), free(bt.dl);
    nnz_model_free(a), nnz_model_free(b);
}

/* A second backward after one forward is refused (the regions are other buffers' by then); so is
 * one over more images than the forward ran. Turning it off, or fp32, or eval over the batch's
 * buffers, lays the buffers out plainly again at the next forward. */
static void test_refusals_and_switches(void **state) {
    (void)state;
    nnz_model *a = model("mbv2-tiny", NNZ_BF16, true), *b = model("mbv2-tiny", NNZ_BF16, false);
    batch bt = make_batch();
    float la[MB * 10], lb[MB * 10];
    step(a, &bt, la);
    assert_int_equal(nnz_model_backward(a, bt.x, MB, bt.dl), NNZ_ERR_INVALID_ARG);
    assert_int_equal(nnz_model_forward(a, bt.x, MB - 2, true), NNZ_OK);
    assert_int_equal(nnz_model_backward(a, bt.x, MB, bt.dl), NNZ_ERR_INVALID_ARG);
    assert_int_equal(nnz_model_backward(a, bt.x, MB - 2, bt.dl), NNZ_OK); /* fewer images: the forward's */
    /* eval after stored steps: in frames, the same logits as after the same steps without (the batch
     * norms' running statistics come from the forwards, the same bits) */
    step(b, &bt, lb);
    assert_int_equal(nnz_model_forward(b, bt.x, MB - 2, true), NNZ_OK);
    assert_int_equal(nnz_model_forward(a, bt.x, MB, false), NNZ_OK);
    assert_int_equal(nnz_model_forward(b, bt.x, MB, false), NNZ_OK);
    assert_memory_equal(nnz_model_output(a), nnz_model_output(b), sizeof la);
    /* off again: plain buffers, b's gradients bit for bit */
    assert_int_equal(nnz_model_set_bf16_activations(a, false), NNZ_OK);
    step(a, &bt, la);
    step(b, &bt, lb);
    assert_false(a->act_layout_stored);
    assert_memory_equal(la, lb, sizeof la);
    assert_true(grad_distance(a, b) == 0.0);
    /* on at fp32, or with eval over the batch's buffers: not stored */
    assert_int_equal(nnz_model_set_bf16_activations(a, true), NNZ_OK);
    assert_int_equal(nnz_model_set_precision(a, NNZ_F32), NNZ_OK);
    step(a, &bt, la);
    assert_false(a->act_layout_stored);
    assert_int_equal(nnz_model_set_precision(a, NNZ_BF16), NNZ_OK);
    a->eval_batch_buffers = true;
    step(a, &bt, la);
    assert_false(a->act_layout_stored);
    a->eval_batch_buffers = false;
    step(a, &bt, la);
    assert_true(a->act_layout_stored);
    assert_int_equal(nnz_model_set_bf16_activations(NULL, true), NNZ_ERR_INVALID_ARG);
    free(bt.x), free(bt.dl);
    nnz_model_free(a), nnz_model_free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mbv2_stored_vs_not),
        cmocka_unit_test(test_vgg8_stored_vs_not),
        cmocka_unit_test(test_memory),
        cmocka_unit_test(test_gradients_pooled_vs_apart),
        cmocka_unit_test(test_kept_plain),
        cmocka_unit_test(test_refusals_and_switches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
