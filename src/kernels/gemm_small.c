/* Small-K GEMM for 1x1 convolutions: dispatch, threading, the reference. Contract in kernels.h. */
#include "kernels/kernels.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* Rows per OpenMP task: a block of C (and the A rows feeding it) that stays in L2. */
#define GS_BLOCK_FLOATS 32768
#define GS_PARALLEL_MIN ((int64_t)1 << 16) /* multiply-adds; below this one thread is faster */

void nnz_gemm_small_ref(int64_t M, int N, int K, const float *A, int64_t lda, const float *B, bool accumulate,
                        const nnz_epilogue *ep, float *C) {
    for (int64_t r = 0; r < M; r++) {
        float *c = C + r * N;
        if (!accumulate) memset(c, 0, (size_t)N * sizeof(float));
        for (int k = 0; k < K; k++) {
            const float a = A[r * lda + k];
            const float *b = B + (int64_t)k * N;
            for (int n = 0; n < N; n++) c[n] += a * b[n];
        }
    }
    if (ep) nnz_epilogue_apply(M, N, ep, C);
}

typedef void (*gs_rows_fn)(int, int, int, const float *, int64_t, const float *, bool, const nnz_epilogue *,
                           float *);

/* the active ISA's row-block kernel; NULL: the reference */
static gs_rows_fn pick_rows(void) {
#if defined(__x86_64__)
    const nnz_isa isa = nnz_isa_active();
    if (isa >= NNZ_ISA_AVX512) return nnz_gemm_small_rows_f32_avx512;
    if (isa == NNZ_ISA_AVX2) return nnz_gemm_small_rows_f32_avx2;
#endif
    return NULL;
}

void nnz_gemm_small(int64_t M, int N, int K, const float *A, int64_t lda, const float *B, bool accumulate,
                    const nnz_epilogue *ep, float *C) {
    (void)nnz_gemm_small_sink(M, N, K, A, lda, NULL, B, accumulate, ep, C, NULL, 4); /* no buffers: cannot fail */
}

void nnz_gemm_small_serial(int64_t M, int N, int K, const float *A, int64_t lda, const float *B, bool accumulate,
                           const nnz_epilogue *ep, float *C) {
    const gs_rows_fn fn = pick_rows();
    if (fn) fn((int)M, N, K, A, lda, B, accumulate, ep, C);
    else nnz_gemm_small_ref(M, N, K, A, lda, B, accumulate, ep, C);
}

bool nnz_gemm_small_sink(int64_t M, int N, int K, const float *A, int64_t lda, const nnz_input_prologue *apro,
                         const float *B, bool accumulate, const nnz_epilogue *ep, float *C, const nnz_row_sink *sink,
                         int unit) {
    const gs_rows_fn fn = pick_rows();
    /* blocks of C that stay in L2 (and the A rows feeding them), in whole units */
    const int64_t per = GS_BLOCK_FLOATS / (N > 0 ? N : 1) / unit * unit, rows = per > unit ? per : unit;
    const int64_t blocks = (M + rows - 1) / rows;
    const size_t ablock = (size_t)rows * (K > 0 ? K : 1);
    float *abuf = apro ? malloc((size_t)omp_get_max_threads() * ablock * sizeof(float)) : NULL;
    if (apro && !abuf) return false;
#pragma omp parallel for schedule(static) if (M * N * K >= GS_PARALLEL_MIN)
    for (int64_t b = 0; b < blocks; b++) {
        const int64_t r0 = b * rows, m = M - r0 < rows ? M - r0 : rows;
        const float *Ab = A + r0 * lda;
        int64_t ld = lda;
        if (apro) { /* the block's rows transformed, densely */
            float *t = abuf + (size_t)omp_get_thread_num() * ablock;
            apro->fn(apro->ctx, m, Ab, t);
            Ab = t, ld = K;
        }
        if (fn) fn((int)m, N, K, Ab, ld, B, accumulate, ep, C + r0 * N);
        else nnz_gemm_small_ref(m, N, K, Ab, ld, B, accumulate, ep, C + r0 * N);
        if (sink) sink->fn(sink->ctx, r0, (int)m, C + r0 * N);
    }
    free(abuf);
    return true;
}

bool nnz_gemm_small_im2col(const nnz_conv_window *g, int N, int C, const float *img, int OC, const float *B,
                           bool accumulate, const nnz_epilogue *ep, float *out) {
    const gs_rows_fn fn = pick_rows();
    if (!fn) return false;
    const int64_t M = (int64_t)N * g->OH * g->OW;
    const int K = g->KH * g->KW * C;
    if (M <= 0) return true;
    const int64_t rows = GS_BLOCK_FLOATS / OC > 4 ? GS_BLOCK_FLOATS / OC : 4;
    const int64_t blocks = (M + rows - 1) / rows;
    int failed = 0;
#pragma omp parallel if (M * OC * K >= GS_PARALLEL_MIN)
    {
        float *col = nnz_alloc((size_t)rows * K * sizeof(float), "small GEMM im2col rows");
        if (nnz_omp_all_ok(col != NULL, &failed)) {
#pragma omp for schedule(static)
            for (int64_t b = 0; b < blocks; b++) {
                const int64_t r0 = b * rows, m = M - r0 < rows ? M - r0 : rows;
                nnz_im2col_rows_nhwc(g, C, img, r0, (int)m, col, K);
                fn((int)m, OC, K, col, K, B, accumulate, ep, out + r0 * OC);
            }
        }
        nnz_free(col);
    }
    return !failed;
}

/* The weight gradient: rows are cut into GS_AT_SLOTS fixed slices (fewer when M is small),
 * each summed into its own partial (P,Q) in blocks of GS_AT_ROWS rows (the blocks of X and Y
 * stay in L2 while every tile of D passes over them), and the partials added in slot order:
 * the result does not depend on the thread count. */
#define GS_AT_SLOTS 16
#define GS_AT_ROWS 256

void nnz_gemm_small_at_ref(int64_t M, int P, int Q, const float *X, int64_t ldx, const float *Y, int64_t ldy,
                           float *D) {
    for (int p = 0; p < P; p++)
        for (int q = 0; q < Q; q++) {
            double acc = 0.0;
            for (int64_t r = 0; r < M; r++) acc += (double)X[r * ldx + p] * (double)Y[r * ldy + q];
            D[(int64_t)p * Q + q] += (float)acc;
        }
}

typedef void (*gs_at_rows_fn)(int, int, int, const float *, int64_t, const float *, int64_t, float *);

/* the active ISA's weight-gradient row-block kernel; NULL: the reference */
static gs_at_rows_fn pick_at_rows(void) {
#if defined(__x86_64__)
    const nnz_isa isa = nnz_isa_active();
    if (isa >= NNZ_ISA_AVX512) return nnz_gemm_small_at_rows_f32_avx512;
    if (isa == NNZ_ISA_AVX2) return nnz_gemm_small_at_rows_f32_avx2;
#endif
    return NULL;
}

/* D += the slots' partials, in slot order */
static void add_partials(int slots, size_t pq, const float *part, float *D) {
    for (int sl = 0; sl < slots; sl++) {
        const float *pp = part + (size_t)sl * pq;
#pragma omp simd
        for (size_t i = 0; i < pq; i++) D[i] += pp[i];
    }
}

/* D += X^T Y over fixed slots of GS_AT_ROWS-row blocks (nnz_gemm_small_at); with dgrad, each
 * block then also makes C's rows = X's rows * B (Q wide, K = P), while X's block is in cache.
 * With src, X's rows are made block by block into a per-thread buffer (X is then unused). */
static bool at_blocks(int64_t M, int P, int Q, const float *X, int64_t ldx, const nnz_row_source *src,
                      const float *Y, int64_t ldy, const nnz_input_prologue *ypro, float *D, gs_at_rows_fn at,
                      gs_rows_fn dgrad, const float *B, bool accumulate, float *C, const nnz_row_sink *csink) {
    const int64_t blocks = (M + GS_AT_ROWS - 1) / GS_AT_ROWS;
    const int slots = blocks < GS_AT_SLOTS ? (int)blocks : GS_AT_SLOTS;
    const size_t pq = (size_t)P * Q, xblock = (size_t)GS_AT_ROWS * P, yblock = (size_t)GS_AT_ROWS * Q;
    const size_t per_thread = (src ? xblock : 0) + (ypro ? yblock : 0);
    float *part = calloc((size_t)slots * pq, sizeof(float));
    float *buf = per_thread ? malloc((size_t)omp_get_max_threads() * per_thread * sizeof(float)) : NULL;
    if (!part || (per_thread && !buf)) {
        free(part), free(buf);
        return false;
    }
#pragma omp parallel for schedule(static) if (M * P * Q >= GS_PARALLEL_MIN)
    for (int sl = 0; sl < slots; sl++) {
        const int64_t b0 = blocks * sl / slots, b1 = blocks * (sl + 1) / slots;
        float *xb = buf ? buf + (size_t)omp_get_thread_num() * per_thread : NULL, *yb = src ? xb + xblock : xb;
        for (int64_t b = b0; b < b1; b++) {
            const int64_t r0 = b * GS_AT_ROWS, rows = M - r0 < GS_AT_ROWS ? M - r0 : GS_AT_ROWS;
            const float *Xb = src ? xb : X + r0 * ldx, *Yb = Y + r0 * ldy; /* with src, X is NULL */
            int64_t ld = src ? P : ldx, ly = ldy;
            if (src) src->fn(src->ctx, r0, (int)rows, xb);
            if (ypro) ypro->fn(ypro->ctx, rows, Yb, yb), Yb = yb, ly = Q;
            at((int)rows, P, Q, Xb, ld, Yb, ly, part + (size_t)sl * pq);
            if (dgrad) dgrad((int)rows, Q, P, Xb, ld, B, accumulate, NULL, C + r0 * Q);
            if (csink) csink->fn(csink->ctx, r0, (int)rows, C + r0 * Q);
        }
    }
    add_partials(slots, pq, part, D);
    free(part), free(buf);
    return true;
}

bool nnz_gemm_small_at(int64_t M, int P, int Q, const float *X, int64_t ldx, const float *Y, int64_t ldy,
                       float *D) {
    const gs_at_rows_fn fn = pick_at_rows();
    if (!fn) {
        nnz_gemm_small_at_ref(M, P, Q, X, ldx, Y, ldy, D);
        return true;
    }
    if (M <= 0 || P <= 0 || Q <= 0) return true;
    return at_blocks(M, P, Q, X, ldx, NULL, Y, ldy, NULL, D, fn, NULL, NULL, false, NULL, NULL);
}

void nnz_gemm_small_at_serial(int64_t M, int P, int Q, const float *X, int64_t ldx, const float *Y, int64_t ldy,
                              float *D) {
    const gs_at_rows_fn fn = pick_at_rows();
    if (!fn) {
        nnz_gemm_small_at_ref(M, P, Q, X, ldx, Y, ldy, D);
        return;
    }
    for (int64_t r0 = 0; r0 < M; r0 += GS_AT_ROWS)
        fn((int)(M - r0 < GS_AT_ROWS ? M - r0 : GS_AT_ROWS), P, Q, X + r0 * ldx, ldx, Y + r0 * ldy, ldy, D);
}

/* One pass over dout for both products of the 1x1 convolution's backward: per block of
 * GS_AT_ROWS rows, the weight gradient's partial and then the data gradient's rows, while the
 * block of dout is still in cache (two separate calls read it from memory twice). The blocks
 * and slots are nnz_gemm_small_at's and each data-gradient row is one chain over k as in
 * nnz_gemm_small, so the numbers are those of the two calls. */
bool nnz_gemm_small_backward(int64_t M, int IC, int OC, const float *dout, const float *inp, const float *weight,
                             float *dweight, bool accumulate, float *dinp) {
    const gs_at_rows_fn at = pick_at_rows();
    const gs_rows_fn rows_fn = pick_rows();
    if (!at || !rows_fn || !dinp) {
        if (!nnz_gemm_small_at(M, OC, IC, dout, OC, inp, IC, dweight)) return false;
        if (dinp) nnz_gemm_small(M, IC, OC, dout, OC, weight, accumulate, NULL, dinp);
        return true;
    }
    if (M <= 0 || IC <= 0) return true;
    if (OC <= 0) {
        if (!accumulate) memset(dinp, 0, (size_t)M * IC * sizeof(float));
        return true;
    }
    return at_blocks(M, OC, IC, dout, OC, NULL, inp, IC, NULL, dweight, at, rows_fn, weight, accumulate, dinp, NULL);
}

bool nnz_gemm_small_backward_src(int64_t M, int IC, int OC, const nnz_row_source *src, const float *inp,
                                 const nnz_input_prologue *ipro, const float *weight, float *dweight, bool accumulate,
                                 float *dinp, const nnz_row_sink *dsink, int unit) {
    const gs_at_rows_fn at = pick_at_rows();
    const gs_rows_fn rows_fn = pick_rows();
    if (dsink && (accumulate || unit < 1 || GS_AT_ROWS % unit != 0)) return false;
    if (M <= 0 || IC <= 0) return true;
    if (!at || !rows_fn || OC <= 0) { /* the reference path (or nothing to make): all of dout (and ipro(inp)) first */
        float *dout = malloc(((size_t)M * OC > 0 ? (size_t)M * OC : 1) * sizeof(float));
        float *t = ipro ? malloc((size_t)M * IC * sizeof(float)) : NULL;
        bool ok = dout && (!ipro || t);
        if (ok) {
            for (int64_t r0 = 0; r0 < M; r0 += GS_AT_ROWS)
                src->fn(src->ctx, r0, (int)(M - r0 < GS_AT_ROWS ? M - r0 : GS_AT_ROWS), dout + r0 * OC);
            if (ipro) ipro->fn(ipro->ctx, M, inp, t);
            ok = nnz_gemm_small_backward(M, IC, OC, dout, ipro ? t : inp, weight, dweight, accumulate, dinp);
            if (ok && dsink) dsink->fn(dsink->ctx, 0, (int)M, dinp); /* one block: all rows */
        }
        free(dout), free(t);
        return ok;
    }
    return at_blocks(M, OC, IC, NULL, OC, src, inp, IC, ipro, dweight, at, rows_fn, weight, accumulate, dinp, dsink);
}
