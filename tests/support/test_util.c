#include "test_util.h"

#include "nn/nn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

float *tu_falloc(size_t n) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(p);
    return p;
}

float *tu_falloc_zeroed(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    assert_non_null(p);
    return p;
}

void tu_fill_uniform(float *x, int64_t n, float lo, float hi, uint64_t seed) {
    nnz_rng r = nnz_rng_make(seed, 12345);
    for (int64_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * nnz_rng_uniform(&r);
}

double tu_max_rel_err(const float *a, const float *b, int64_t n, double floor) {
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        double s = fabs((double)b[i]);
        double e = d / (s > floor ? s : floor);
        if (!(e <= worst)) worst = e; /* NaN counts as worst */
    }
    return worst;
}

void tu_make_temp_dir(char *buf, size_t len) {
    const char *base = getenv("TMPDIR");
    snprintf(buf, len, "%s/nnz-test-XXXXXX", base && *base ? base : "/tmp");
    assert_non_null(mkdtemp(buf));
}

void tu_write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (len) assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

uint8_t *tu_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s", path);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    const long n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    uint8_t *b = malloc((size_t)n + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

const char *tu_source_dir(void) {
    const char *d = getenv("NNZ_SOURCE_DIR");
#ifdef NNZ_SOURCE_DIR
    if (!d) d = NNZ_SOURCE_DIR;
#endif
    return d ? d : ".";
}

void tu_for_each_isa(void (*fn)(nnz_isa isa, void *ctx), void *ctx) {
    nnz_isa before = nnz_isa_active();
    for (int i = 0; i < NNZ_ISA_COUNT; i++) {
        if (!nnz_isa_supported((nnz_isa)i)) continue;
        assert_int_equal(nnz_isa_set((nnz_isa)i), NNZ_OK);
        fn((nnz_isa)i, ctx);
    }
    assert_int_equal(nnz_isa_set(before), NNZ_OK);
}

void tu_assert_same_values(const float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!(a[i] == b[i] || (isnan(a[i]) && isnan(b[i]))))
            fail_msg("element %lld: %.9g != %.9g", (long long)i, (double)a[i], (double)b[i]);
}

uint8_t *tu_sparse_mask(tu_mask_pattern p, int rows, int cols, int64_t ldw, int r, int c, uint64_t seed) {
    uint8_t *mask = calloc((size_t)(rows * ldw) + 1, 1);
    assert_non_null(mask);
    nnz_rng g = nnz_rng_make(seed, 7);
    const int bcols = (cols + c - 1) / c, brows = (rows + r - 1) / r;
    for (int i = 0; i < rows; i++)
        for (int k = 0; k < cols; k++) {
            const int br = i / r, bc = k / c;
            bool keep = false;
            switch (p) {
            case TU_MASK_ELEM: keep = nnz_rng_uniform(&g) < 0.3f; break;
            case TU_MASK_BLOCK:
            case TU_MASK_EMPTY_ROWS: {
                nnz_rng b = nnz_rng_make(seed, 1000 + (uint64_t)br * bcols + bc);
                keep = nnz_rng_uniform(&b) < 0.35f && nnz_rng_uniform(&g) < 0.7f;
                if (p == TU_MASK_EMPTY_ROWS && (br % 3 == 1 || i % 5 == 2)) keep = false;
                break;
            }
            case TU_MASK_ALL_ZERO: keep = false; break;
            case TU_MASK_SINGLE: keep = i == rows / 2 && k == cols - 1; break;
            case TU_MASK_SINGLE_BLOCK: keep = br == brows / 2 && bc == bcols - 1; break;
            }
            mask[(int64_t)i * ldw + k] = keep;
        }
    return mask;
}

void tu_row_record_init(tu_row_record *r, int64_t rows, int width, int unit) {
    const int64_t groups = (rows + unit - 1) / unit;
    *r = (tu_row_record){rows, width, unit, malloc((size_t)(rows * width + 1) * sizeof(float)),
                         calloc((size_t)groups + 1, sizeof(int))};
    assert_non_null(r->copy);
    assert_non_null(r->count);
    for (int64_t i = 0; i < rows * width; i++) r->copy[i] = NAN;
}

void tu_row_record_fn(const void *ctx, int64_t r0, int rows, const float *x) {
    const tu_row_record *r = ctx;
    const bool whole = r0 % r->unit == 0 && (rows % r->unit == 0 || r0 + rows == r->rows) && rows > 0 &&
                       r0 + rows <= r->rows;
    if (!whole) {
        r->count[r0 >= 0 && r0 < r->rows ? r0 / r->unit : 0] += 1000;
        return;
    }
    memcpy(r->copy + r0 * r->width, x, (size_t)rows * r->width * sizeof(float));
    for (int64_t g = r0 / r->unit; g * r->unit < r0 + rows; g++) r->count[g]++;
}

void tu_row_record_check(tu_row_record *r, const float *final, const char *what) {
    const int64_t groups = (r->rows + r->unit - 1) / r->unit;
    for (int64_t g = 0; g < groups; g++)
        if (r->count[g] != 1)
            fail_msg("%s: rows %lld.. (group of %d) handed to the sink %d times (1000s: a block off the groups)", what,
                     (long long)(g * r->unit), r->unit, r->count[g]);
    if (memcmp(r->copy, final, (size_t)(r->rows * r->width) * sizeof(float)) != 0)
        fail_msg("%s: the rows handed to the sink are not the final rows", what);
    free(r->copy), free(r->count);
}

void tu_scaled_rows_fn(const void *ctx, int64_t r0, int rows, float *buf) {
    const tu_scaled_rows *t = ctx;
    for (int64_t i = 0; i < (int64_t)rows * t->C; i++) buf[i] = t->scale * t->x[r0 * t->C + i];
}

void tu_randomize_batchnorms(nnz_model *m, uint64_t seed) {
    for (int i = 0; i < m->n_params; i++) {
        nnz_param *p = &m->params[i];
        if (m->nodes[p->node].op != NNZ_OP_BATCHNORM) continue;
        float *v = nnz_tensor_f32(&p->value);
        int64_t n = nnz_tensor_numel(&p->value);
        float lo = -0.5f, hi = 0.5f; /* running_mean */
        if (strstr(p->name, "running_var")) lo = 0.2f, hi = 2.0f;
        else if (p->node >= 0 && p == &m->params[m->nodes[p->node].weight]) lo = 1.0f, hi = 8.0f; /* gamma */
        else if (p->node >= 0 && p == &m->params[m->nodes[p->node].bias]) lo = -1.0f, hi = 2.0f;  /* beta */
        tu_fill_uniform(v, n, lo, hi, seed + (uint64_t)i);
    }
}

nnz_model *tu_masked_lenet5(const char *format) {
    nnz_model *m = NULL;
    assert_int_equal(nnz_model_from_zoo("lenet5", 28, 28, 1, 10, 11, &m), NNZ_OK);
    static const char *const layers[] = {"conv2", "fc1"};
    for (int l = 0; l < 2; l++) {
        char name[64];
        snprintf(name, sizeof name, "%s.weight", layers[l]);
        const nnz_param *p = &m->params[nnz_model_find_param(m, name)];
        const int64_t n = nnz_tensor_numel(&p->value), rows = p->value.shape[0], cols = n / rows;
        uint8_t *mask = malloc((size_t)n);
        assert_non_null(mask);
        for (int64_t i = 0; i < n; i++)
            mask[i] = nnz_rng_hash(77 + l, (uint64_t)(i / cols / 16) * 4099 + (uint64_t)(i % cols / 16)) % 10 == 0;
        assert_int_equal(nnz_model_apply_mask(m, layers[l], mask, n), NNZ_OK);
        free(mask);
    }
    assert_int_equal(nnz_model_set_sparse_format(m, format), NNZ_OK);
    nnz_model_set_grad_mask(m, true);
    return m;
}
