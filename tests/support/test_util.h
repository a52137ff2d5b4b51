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
/* Runs fn once per ISA this machine supports, forcing it with nnz_isa_set. */
void tu_for_each_isa(void (*fn)(nnz_isa isa, void *ctx), void *ctx);

#endif
