/* base: errors, tensors, the arena, CPU features, threads, RNG, memory helpers.
 * The bottom layer: includes only the C library and nnz.h's plain types. */
#ifndef NNZ_BASE_H
#define NNZ_BASE_H

#include "nnz.h"
#include <stdarg.h>
#include <stdio.h>

/* ---- errors ----
 * nnz_fail records a message for nnz_last_error() and returns code, so a
 * failing path reads: return nnz_fail(NNZ_ERR_IO, "cannot open '%s': %s", p, strerror(errno)); */
nnz_status nnz_fail(nnz_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void nnz_clear_error(void);
/* Propagate a failing status. */
#define NNZ_TRY(expr) do { nnz_status s_ = (expr); if (s_ != NNZ_OK) return s_; } while (0)

/* ---- memory ----
 * 64-byte aligned; NULL (with nnz_fail(NNZ_ERR_NOMEM, ...) recorded, naming `what`) on failure. */
void *nnz_alloc(size_t bytes, const char *what);
void *nnz_calloc(size_t bytes, const char *what);
void nnz_free(void *p);
/* a*b (and +c) with overflow check: false if it overflows. */
bool nnz_mul_size(size_t a, size_t b, size_t *out);

/* ---- arena ----
 * One per model: a chain of page-aligned chunks of fresh anonymous memory (resident only
 * once touched); allocations are 64-byte aligned and live until nnz_arena_free. `limit`
 * (0 = none) caps the total bytes, for --memory-budget. */
typedef struct nnz_arena_chunk nnz_arena_chunk;
typedef struct {
    nnz_arena_chunk *head;
    size_t used, reserved, limit;
} nnz_arena;
void nnz_arena_init(nnz_arena *a, size_t limit);
/* Zero-filled. NULL + nnz_fail on failure or over the limit. */
void *nnz_arena_alloc(nnz_arena *a, size_t bytes, const char *what);
void nnz_arena_free(nnz_arena *a);

/* ---- tensors ----
 * A view: the tensor does not own its data (the arena or the file does).
 * Shapes are row-major; activations are NHWC. */
#define NNZ_MAX_DIMS 4
typedef struct {
    nnz_dtype dtype;
    int ndim;
    int64_t shape[NNZ_MAX_DIMS];
    void *data;
} nnz_tensor;
int64_t nnz_tensor_numel(const nnz_tensor *t);
size_t nnz_tensor_bytes(const nnz_tensor *t);
static inline float *nnz_tensor_f32(const nnz_tensor *t) { return (float *)t->data; }
/* "(16,3,3,1)" */
void nnz_shape_str(const int64_t *shape, int ndim, char *buf, size_t len);

/* ---- CPU features ----
 * Detected once (cpuid + xgetbv; on Linux the AMX tile permission is requested
 * with arch_prctl(ARCH_REQ_XCOMP_PERM)). The only global state in the library. */
typedef struct {
    bool avx2, fma, avx512f, avx512bw, avx512vl, avx512dq, avx512_bf16;
    bool amx_tile, amx_bf16;
    bool amx_permitted; /* the OS granted tile state to this process */
} nnz_cpu_features;
const nnz_cpu_features *nnz_cpu(void);
/* The best ISA the hardware (and OS) supports, ignoring NNZ_ISA. */
nnz_isa nnz_isa_best(void);
/* Tests only: the bf16 GEMM's native route (im2col sources, split K, the AMX blocking) run with
 * the AMX path's plain-C tile, on any CPU, so that machines without AVX512-BF16 exercise what
 * calls it. Off unless set; slow. Part of the ISA choice, like nnz_isa_set. */
void nnz_isa_emulate_bf16_tiles(bool on);
bool nnz_isa_bf16_tiles_emulated(void);

/* The OpenBLAS kernel set to ask for (OPENBLAS_CORETYPE) when OpenBLAS chose `chosen` on
 * a CPU with these features, or NULL to keep its choice (nnz_prefer_startup_env). */
const char *nnz_blas_core_better(const char *chosen, bool avx512, bool avx2_fma);
/* Other tasks runnable now: the median, over `samples` (1-16) reads 1 ms apart, of the running
 * count in `loadavg` (/proc/loadavg's format) less this process; -1 where it cannot be read.
 * The median: on an idle machine 2% of single reads catch a kernel thread; a busy neighbour
 * shows in 99% of them (measured, 500 reads each). */
int nnz_other_tasks_running(const char *loadavg, int samples);

/* ---- threads ---- (OpenMP underneath) */
int nnz_threads(void);
/* Inside an OpenMP parallel region, called by every thread of it (it holds a barrier): whether
 * every thread passed ok = true, e.g. got its per-thread scratch. *failed is a shared int the
 * caller zeroed before the region; it stays 1 after a failure, for the status to return. */
bool nnz_omp_all_ok(bool ok, int *failed);

/* ---- RNG ----
 * Counter-based (SplitMix64 over key^counter): draw i of stream `key` is a pure
 * function of (key, i), so any draw can be reproduced or skipped to, and the
 * state is two integers that checkpoints save. */
typedef struct { uint64_t key, counter; } nnz_rng;
nnz_rng nnz_rng_make(uint64_t seed, uint64_t stream);
uint64_t nnz_rng_hash(uint64_t key, uint64_t counter);
uint64_t nnz_rng_u64(nnz_rng *r);
uint32_t nnz_rng_below(nnz_rng *r, uint32_t n);   /* uniform in [0, n) */
float nnz_rng_uniform(nnz_rng *r);                /* [0, 1) */
float nnz_rng_normal(nnz_rng *r);                 /* N(0, 1) */
void nnz_rng_shuffle(nnz_rng *r, int32_t *idx, int n);

/* ---- bf16 ----
 * bfloat16: the high 16 bits of an IEEE fp32 (8-bit exponent, 7-bit mantissa).
 * fp32 -> bf16 rounds to nearest even: on every non-NaN input (denormals included) the result
 * is bits + 0x7FFF + bit16, high half, which is what VCVTNEPS2BF16 gives on normal numbers;
 * +-Inf stays Inf, a finite value past the largest bf16 becomes Inf, a NaN becomes a quiet
 * NaN with its sign. bf16 -> fp32 is exact. (The SIMD converters in kernels/ document what
 * each path does with denormals.) */
typedef uint16_t nnz_bf16;
static inline nnz_bf16 nnz_bf16_from_f32(float f) {
    uint32_t u;
    __builtin_memcpy(&u, &f, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (nnz_bf16)((u >> 16) | 0x0040u); /* NaN: quiet it */
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (nnz_bf16)(u >> 16);
}
static inline float nnz_bf16_to_f32(nnz_bf16 h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    __builtin_memcpy(&f, &u, 4);
    return f;
}
/* f rounded to the nearest bf16 value, as an fp32 */
static inline float nnz_bf16_round(float f) { return nnz_bf16_to_f32(nnz_bf16_from_f32(f)); }

/* ---- time ---- */
double nnz_now_sec(void); /* monotonic */

#endif
