/* base: errors, arena, rng, cpu features. */
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void test_fail_sets_message(void **state) {
    (void)state;
    nnz_status s = nnz_fail(NNZ_ERR_IO, "cannot open '%s'", "x.bin");
    assert_int_equal(s, NNZ_ERR_IO);
    assert_string_equal(nnz_last_error(), "cannot open 'x.bin'");
    nnz_clear_error();
    assert_string_equal(nnz_last_error(), "");
}

static void test_arena_alignment_and_limit(void **state) {
    (void)state;
    nnz_arena a;
    nnz_arena_init(&a, 1 << 20);
    for (int i = 1; i < 100; i += 7) {
        unsigned char *p = nnz_arena_alloc(&a, (size_t)i, "test");
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 64, 0);
        for (int j = 0; j < i; j++) assert_int_equal(p[j], 0);
    }
    assert_null(nnz_arena_alloc(&a, 2 << 20, "too big"));
    assert_non_null(strstr(nnz_last_error(), "memory budget"));
    nnz_arena_free(&a);

    nnz_arena_init(&a, 0); /* no limit: grows by chunks */
    for (int i = 0; i < 5; i++) assert_non_null(nnz_arena_alloc(&a, 10 << 20, "big"));
    assert_true(a.used >= 50u << 20);
    nnz_arena_free(&a);
}

static void test_rng_counter_based(void **state) {
    (void)state;
    nnz_rng a = nnz_rng_make(42, 1), b = nnz_rng_make(42, 1), c = nnz_rng_make(43, 1);
    uint64_t x[8];
    for (int i = 0; i < 8; i++) {
        x[i] = nnz_rng_u64(&a);
        assert_int_equal(x[i], nnz_rng_u64(&b));
    }
    assert_int_not_equal(x[0], nnz_rng_u64(&c));
    /* draw i is a pure function of (key, i): skipping ahead reproduces it */
    nnz_rng d = nnz_rng_make(42, 1);
    d.counter = 5;
    assert_int_equal(nnz_rng_u64(&d), x[5]);
    /* normal draws: mean ~ 0, variance ~ 1 */
    double s = 0, s2 = 0;
    int n = 200000;
    for (int i = 0; i < n; i++) {
        double v = nnz_rng_normal(&a);
        s += v;
        s2 += v * v;
    }
    assert_true(fabs(s / n) < 0.01);
    assert_true(fabs(s2 / n - 1.0) < 0.02);
    /* below(n) stays in range and shuffle is a permutation */
    int32_t idx[100];
    for (int i = 0; i < 100; i++) idx[i] = i;
    nnz_rng_shuffle(&a, idx, 100);
    int seen[100] = {0};
    for (int i = 0; i < 100; i++) seen[idx[i]]++;
    for (int i = 0; i < 100; i++) assert_int_equal(seen[i], 1);
}

static void test_isa_override(void **state) {
    (void)state;
    assert_true(nnz_isa_supported(NNZ_ISA_REF));
    nnz_isa best = nnz_isa_best();
    assert_int_equal(nnz_isa_set(NNZ_ISA_REF), NNZ_OK);
    assert_int_equal(nnz_isa_active(), NNZ_ISA_REF);
    for (int i = 0; i < NNZ_ISA_COUNT; i++) {
        nnz_status s = nnz_isa_set((nnz_isa)i);
        assert_int_equal(s == NNZ_OK, nnz_isa_supported((nnz_isa)i));
    }
    assert_int_equal(nnz_isa_set((nnz_isa)99), NNZ_ERR_INVALID_ARG);
    assert_int_equal(nnz_isa_set(best), NNZ_OK);
    char buf[256];
    nnz_cpu_describe(buf, sizeof buf);
    assert_non_null(strstr(buf, "active:"));
}

static void test_parse_bytes_and_size_limit(void **state) {
    (void)state;
    static const struct { const char *text; size_t bytes; } good[] = {
        {"1", 1}, {"1000000", 1000000}, {"8M", 8u << 20}, {"512k", 512u << 10}, {"1G", 1u << 30},
        {"1.5GiB", 3u << 29}, {"2MB", 2u << 20}, {"4Ki", 4096},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        size_t v = 0;
        assert_true(nnz_parse_bytes(good[i].text, &v));
        assert_int_equal(v, good[i].bytes);
    }
    static const char *const bad[] = {"", "0", "-1", "M", "8X", "8MBs", " 8M", "+8", "1e300", "nan", "0.4", "2Z"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t v = 77;
        assert_false(nnz_parse_bytes(bad[i], &v));
        assert_int_equal(v, 77);
    }
    unsetenv("NNZ_SIZE_LIMIT");
    assert_int_equal(nnz_size_limit(), NNZ_SIZE_LIMIT_DEFAULT);
    assert_int_equal(nnz_size_limit_check(), NNZ_OK);
    setenv("NNZ_SIZE_LIMIT", "64M", 1);
    assert_int_equal(nnz_size_limit(), 64u << 20);
    setenv("NNZ_SIZE_LIMIT", "lots", 1);
    assert_int_equal(nnz_size_limit(), NNZ_SIZE_LIMIT_DEFAULT);
    assert_int_equal(nnz_size_limit_check(), NNZ_ERR_INVALID_ARG);
    assert_non_null(strstr(nnz_last_error(), "lots"));
    unsetenv("NNZ_SIZE_LIMIT");
    /* more than physical memory is refused up front, not handed out by overcommit */
    assert_null(nnz_alloc((size_t)1 << 60, "a hostile size"));
    assert_non_null(strstr(nnz_last_error(), "a hostile size"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fail_sets_message),
        cmocka_unit_test(test_arena_alignment_and_limit),
        cmocka_unit_test(test_rng_counter_based),
        cmocka_unit_test(test_isa_override),
        cmocka_unit_test(test_parse_bytes_and_size_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
