/* Shared helpers for the cmocka tests. */
#ifndef NNZ_TEST_UTIL_H
#define NNZ_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/base.h"

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
/* Runs fn once per ISA this machine supports, forcing it with nnz_isa_set. */
void tu_for_each_isa(void (*fn)(nnz_isa isa, void *ctx), void *ctx);

#endif
