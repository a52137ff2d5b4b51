/* Shared helpers for the cmocka tests. */
#ifndef NNZ_TEST_UTIL_H
#define NNZ_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/base.h"
#include "nnz.h"

/* n floats (room for one when n is 0, so an empty shape still gets a pointer), failing the test
 * when memory is short; _zeroed: all 0. Free with free(). */
float *tu_falloc(size_t n);
float *tu_falloc_zeroed(size_t n);
/* Fills x[0..n) with uniform values in [lo, hi) from a seeded rng. */
void tu_fill_uniform(float *x, int64_t n, float lo, float hi, uint64_t seed);
/* Fails unless a[i] and b[i] are the same number for every i (==, or both NaN): exact,
 * but blind to the sign of zero, which a reference built by adding into zeros loses. */
void tu_assert_same_values(const float *a, const float *b, int64_t n);
/* max_i |a-b| / max(|b|, floor): relative error with an absolute floor. */
double tu_max_rel_err(const float *a, const float *b, int64_t n, double floor);
/* A fresh, empty directory under $TMPDIR (or /tmp), path written to buf. */
void tu_make_temp_dir(char *buf, size_t len);
/* Writes len bytes to path (plain, not atomic: tests build hostile files with it). */
void tu_write_file(const char *path, const void *data, size_t len);
/* The whole file (malloc'd; free it), read with stdio, not with nnz's readers. */
uint8_t *tu_read_file(const char *path, size_t *len);
/* The source tree root (NNZ_SOURCE_DIR). */
const char *tu_source_dir(void);
/* Sparse-kernel test masks over a (rows, cols) weight with ld ldw, for block shape r x c;
 * deterministic from seed (uint8 1 = kept; the caller frees):
 *   ELEM: each element kept with probability 0.3;
 *   BLOCK: each block kept with probability 0.35 (a hash of the block), its elements with 0.7;
 *   EMPTY_ROWS: BLOCK with every third block row and every fifth row (i % 5 == 2) empty;
 *   ALL_ZERO; SINGLE: the one element (rows/2, cols-1); SINGLE_BLOCK: the whole block at
 *   block row brows/2, the last block column (an edge block). */
typedef enum {
    TU_MASK_ELEM, TU_MASK_BLOCK, TU_MASK_EMPTY_ROWS, TU_MASK_ALL_ZERO, TU_MASK_SINGLE, TU_MASK_SINGLE_BLOCK
} tu_mask_pattern;
uint8_t *tu_sparse_mask(tu_mask_pattern p, int rows, int cols, int64_t ldw, int r, int c, uint64_t seed);
/* A row source (tu_scaled_rows_fn is an nnz_row_source's fn, ctx a tu_scaled_rows): rows r0.. of a
 * stored (rows, C) tensor x, times scale, into buf */
typedef struct {
    const float *x;
    int C;
    float scale;
} tu_scaled_rows;
void tu_scaled_rows_fn(const void *ctx, int64_t r0, int rows, float *buf);
/* A recording row sink (tu_row_record_fn is an nnz_row_sink's fn, ctx a tu_row_record): copies
 * each block of rows it is handed and counts, per group of `unit` rows, how often the group came.
 * tu_row_record_check fails unless every group came exactly once, in blocks that start on a group
 * and hold whole groups (the last one the rest), and the copies equal `final` (each row was done
 * when handed); then frees. Blocks from several threads are fine: each group is its own. */
typedef struct {
    int64_t rows;
    int width, unit;
    float *copy;
    int *count; /* per group; a block that breaks the grouping adds 1000 */
} tu_row_record;
void tu_row_record_init(tu_row_record *r, int64_t rows, int width, int unit);
void tu_row_record_fn(const void *ctx, int64_t r0, int rows, const float *x);
void tu_row_record_check(tu_row_record *r, const float *final, const char *what);
/* Runs fn once per ISA this machine supports, forcing it with nnz_isa_set. */
void tu_for_each_isa(void (*fn)(nnz_isa isa, void *ctx), void *ctx);
/* Non-trivial batch-norm statistics and affine parameters (gamma in [1, 8), beta in [-1, 2),
 * running means in [-0.5, 0.5), variances in [0.2, 2)): eval folding is exercised, and no
 * gradient of a freshly built model nearly cancels (with gamma 1 and beta 0 some do). */
void tu_randomize_batchnorms(nnz_model *m, uint64_t seed);
/* lenet5 (zoo seed 11) with 90% of conv2 and fc1 masked in 16x16 blocks, the rest dense, gradients
 * masked, its sparse layers run as `format` ("dense", "auto", "bsr:16x16", ...). */
nnz_model *tu_masked_lenet5(const char *format);

#endif
