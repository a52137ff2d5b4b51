/* Softmax cross-entropy with label smoothing: the loss against PyTorch's
 * definition written naively in double, dlogits against finite differences
 * (with and without smoothing), numerical stability at huge logits, and the
 * argmax-correct count with its first-maximum tie rule. */
#include "test_util.h"

#include "nn/nn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The oracle: log softmax without any shift (fine for the moderate logits used
 * here), t = (1-s) onehot + s/C, mean over rows. */
static double naive_xent(int N, int C, const float *z, const uint8_t *y, double s) {
    double total = 0;
    for (int i = 0; i < N; i++) {
        double sum = 0;
        for (int c = 0; c < C; c++) sum += exp((double)z[i * C + c]);
        for (int c = 0; c < C; c++) {
            double t = (1 - s) * (c == y[i]) + s / C;
            total -= t * ((double)z[i * C + c] - log(sum));
        }
    }
    return total / N;
}

static void make_batch(int N, int C, uint64_t seed, float *z, uint8_t *y) {
    tu_fill_uniform(z, (int64_t)N * C, -4, 4, seed);
    nnz_rng r = nnz_rng_make(seed, 9);
    for (int i = 0; i < N; i++) y[i] = (uint8_t)nnz_rng_below(&r, (uint32_t)C);
}

static void test_loss_matches_definition(void **state) {
    (void)state;
    const int shapes[][2] = {{1, 1}, {5, 3}, {8, 10}, {3, 17}, {128, 10}};
    const float smooth[] = {0.0f, 0.1f, 0.5f, 1.0f};
    for (int k = 0; k < 5; k++) {
        const int N = shapes[k][0], C = shapes[k][1];
        float *z = malloc(sizeof(float) * N * C);
        uint8_t *y = malloc((size_t)N);
        make_batch(N, C, 100 + (uint64_t)k, z, y);
        for (int j = 0; j < 4; j++) {
            double want = naive_xent(N, C, z, y, smooth[j]);
            float got = nnz_softmax_xent(N, C, z, y, smooth[j], NULL, NULL);
            /* float result of a double computation: a float ulp or two */
            if (fabs(got - want) > 1e-6 * fmax(1.0, fabs(want)))
                print_error("N=%d C=%d s=%g: %.9g vs %.9g\n", N, C, smooth[j], got, want);
            assert_true(fabs(got - want) <= 1e-6 * fmax(1.0, fabs(want)));
        }
        free(z);
        free(y);
    }
}

/* dlogits = d(mean loss)/dz. The loss comes back as a float (rounding ~1e-7 of
 * an O(1) value), so with h = 1e-2 the finite difference carries ~1e-5 of noise
 * and O(h^2) ~ 1e-5 truncation; tolerance 1e-4. A gradient missing the 1/N, the
 * smoothing term or the softmax is off by > 1e-2 here. */
static void check_dlogits(int N, int C, float s, uint64_t seed) {
    float *z = malloc(sizeof(float) * N * C), *g = malloc(sizeof(float) * N * C);
    uint8_t *y = malloc((size_t)N);
    make_batch(N, C, seed, z, y);
    for (int i = 0; i < N * C; i++) g[i] = NAN; /* dlogits is overwritten, not accumulated */
    nnz_softmax_xent(N, C, z, y, s, g, NULL);
    const float h = 1e-2f;
    for (int i = 0; i < N * C; i++) {
        const float v = z[i];
        z[i] = v + h;
        const double hp = z[i], Lp = nnz_softmax_xent(N, C, z, y, s, NULL, NULL);
        z[i] = v - h;
        const double hm = z[i], Lm = nnz_softmax_xent(N, C, z, y, s, NULL, NULL);
        z[i] = v;
        const double fd = (Lp - Lm) / (hp - hm);
        if (!(fabs(fd - g[i]) <= 1e-4)) {
            print_error("N=%d C=%d s=%g dlogits[%d]: fd %.6g analytic %.6g\n", N, C, s, i, fd, g[i]);
            fail();
        }
    }
    /* each row of dlogits sums to 0: softmax and target both sum to 1 */
    for (int i = 0; i < N; i++) {
        double sum = 0;
        for (int c = 0; c < C; c++) sum += g[i * C + c];
        assert_true(fabs(sum) < 1e-6);
    }
    free(z);
    free(g);
    free(y);
}

static void test_dlogits_finite_differences(void **state) {
    (void)state;
    check_dlogits(1, 3, 0.0f, 1);
    check_dlogits(4, 10, 0.0f, 2);
    check_dlogits(4, 10, 0.1f, 3);
    check_dlogits(3, 17, 0.3f, 4);
    check_dlogits(2, 1, 0.1f, 5);
}

static void test_stable_at_huge_logits(void **state) {
    (void)state;
    const int N = 4, C = 10;
    float z[40], shifted[40], g[40], gs[40];
    uint8_t y[4];
    make_batch(N, C, 7, z, y);
    /* softmax is shift-invariant: adding 1e4 (exp overflows without the max
     * shift) gives the same loss and gradient, up to the float spacing at 1e4 */
    for (int i = 0; i < N * C; i++) shifted[i] = z[i] + 1e4f;
    float a = nnz_softmax_xent(N, C, z, y, 0.1f, g, NULL);
    float b = nnz_softmax_xent(N, C, shifted, y, 0.1f, gs, NULL);
    assert_true(isfinite(b));
    assert_float_equal(a, b, 2e-3);
    for (int i = 0; i < N * C; i++) assert_float_equal(g[i], gs[i], 2e-4);
    /* a confident right answer costs ~0, a confident wrong one ~the margin */
    float big[3] = {0, 1000, 0};
    uint8_t right = 1, wrong = 0;
    assert_float_equal(nnz_softmax_xent(1, 3, big, &right, 0.0f, NULL, NULL), 0.0f, 1e-6);
    assert_float_equal(nnz_softmax_xent(1, 3, big, &wrong, 0.0f, NULL, NULL), 1000.0f, 1e-3);
}

static void test_correct_count_first_max_wins(void **state) {
    (void)state;
    const float z[4 * 3] = {
        1, 3, 3,  /* tie between 1 and 2: class 1 */
        5, 5, 5,  /* all equal: class 0 */
        0, -1, 2, /* class 2 */
        7, 1, 9,  /* class 2 */
    };
    const uint8_t labels_a[4] = {1, 0, 2, 0}; /* 3 right */
    const uint8_t labels_b[4] = {2, 1, 2, 2}; /* 2 right: ties do not count for later classes */
    int correct = -1;
    nnz_softmax_xent(4, 3, z, labels_a, 0.0f, NULL, &correct);
    assert_int_equal(correct, 3);
    nnz_softmax_xent(4, 3, z, labels_b, 0.1f, NULL, &correct);
    assert_int_equal(correct, 2);
}

static void test_out_of_range_label_gives_nan(void **state) {
    (void)state;
    const float z[2 * 3] = {1, 2, 3, 3, 2, 1};
    const uint8_t y[2] = {0, 3};
    float g[6];
    int correct = -1;
    assert_true(isnan(nnz_softmax_xent(2, 3, z, y, 0.1f, g, &correct)));
    for (int c = 3; c < 6; c++) assert_float_equal(g[c], 0.0f, 0);
    assert_true(g[0] != 0.0f); /* the good row still gets its gradient */
    assert_int_equal(correct, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loss_matches_definition),
        cmocka_unit_test(test_dlogits_finite_differences),
        cmocka_unit_test(test_stable_at_huge_logits),
        cmocka_unit_test(test_correct_count_first_max_wins),
        cmocka_unit_test(test_out_of_range_label_gives_nan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
