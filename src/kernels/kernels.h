/* kernels: the compute core. Dense fp32 GEMM (OpenBLAS underneath), im2col /
 * col2im for NHWC convolutions, depthwise convolution, elementwise ops.
 *
 * Every optimized kernel has a plain-C reference `<op>_ref` that is its oracle;
 * variants are named `<op>_<dtype>_<isa>` and chosen from nnz_isa_active().
 * Each kernel's contract (layouts, edge cases) is written above its definition.
 * beta = 0 always overwrites the output (NaNs already there do not propagate). */
#ifndef NNZ_KERNELS_H
#define NNZ_KERNELS_H

#include "base/base.h"

/* Row-major C(M,N) = alpha * op(A) * op(B) + beta * C.
 * op(A) is (M,K): A is (M,K) with lda >= K, or (K,M) with lda >= M when transA.
 * op(B) is (K,N): B is (K,N) with ldb >= N, or (N,K) with ldb >= K when transB.
 * M, N or K may be 0 (K = 0: C = beta*C). Threads: OpenBLAS's own. */
void nnz_sgemm(bool transA, bool transB, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc);
/* true when nnz_sgemm may be called from inside an OpenMP parallel region: OpenBLAS's
 * OpenMP (or sequential) build then runs single-threaded; its pthreads build would start
 * its own threads on top of OpenMP's. */
bool nnz_sgemm_nestable(void);
void nnz_sgemm_ref(bool transA, bool transB, int M, int N, int K, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc);

/* ---- bf16 GEMM (mixed precision: bf16 inputs, fp32 accumulation and output) ----
 * C(M,N) = alpha * op(A) * op(B) + beta * C with the sgemm contract above (row-major,
 * transposes, leading dimensions, K = 0, beta = 0 overwrites), where every product is of two
 * bf16 values (exact in fp32) and the sums are fp32. The order of the fp32 sums differs
 * between paths (pairs along K for AVX512-BF16, tiles of 32 for AMX), so paths agree to
 * within K * 2^-23 * sum|a*b|, not bit for bit; each path is deterministic and does not
 * depend on the thread count.
 *   nnz_gemm_bf16:       A, B hold bf16.
 *   nnz_gemm_bf16_f32in: A, B hold fp32, rounded to nearest-even bf16 as they are read
 *                        (the same numbers as converting first; no bf16 copy is kept).
 * Dispatch (nnz_isa_active): amx > avx512bf16 > emulation (round, then fp32 GEMM).
 * Threads: OpenMP inside; single-threaded when called inside a parallel region.
 * The oracle rounds the same way and sums in double. */
void nnz_gemm_bf16(bool transA, bool transB, int M, int N, int K, float alpha, const nnz_bf16 *A, int lda,
                   const nnz_bf16 *B, int ldb, float beta, float *C, int ldc);
void nnz_gemm_bf16_f32in(bool transA, bool transB, int M, int N, int K, float alpha, const float *A, int lda,
                         const float *B, int ldb, float beta, float *C, int ldc);
void nnz_gemm_bf16_ref(bool transA, bool transB, int M, int N, int K, float alpha, const nnz_bf16 *A, int lda,
                       const nnz_bf16 *B, int ldb, float beta, float *C, int ldc);
/* The GEMM layers call: fp32 data, multiplied at `compute` precision: NNZ_F32 is nnz_sgemm,
 * NNZ_BF16 is nnz_gemm_bf16_f32in (inputs rounded to bf16, fp32 accumulation). */
/* out (M,N) = in (M,K) . w (N,K)^T (+ bias): every output the same float for any M and row position
 * (batch-invariant; linear_rows.c has the contract). nnz run's linear layers. */
void nnz_linear_rows(int M, int N, int K, const float *in, const float *w, const float *bias, float *out);
void nnz_linear_rows_ref(int M, int N, int K, const float *in, const float *w, const float *bias, float *out);
void nnz_gemm(nnz_dtype compute, bool transA, bool transB, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc);
/* The paths, reached through the dispatchers above (tests force them with nnz_isa_set or
 * call them directly). Each writes C exactly as the contract says; none reads C when beta = 0.
 *   _emulated:   round into fp32 copies, then nnz_sgemm; without memory for the copies, a
 *                direct triple loop (slow, correct). Keeps fp32 denormals exactly.
 *   _avx512bf16: BLIS-style, vdpbf16ps (14x32 register tile). vdpbf16ps treats bf16
 *                denormal inputs AND a denormal accumulator as zero, flushes denormal
 *                results to zero, and rounds after each of its two adds (measured on AMD
 *                Zen 4, as Intel's SDM specifies): sums smaller than 2^-126 are lost.
 *   _amx:        tdpbf16ps, 2x2 tiles of 16x16 fp32 (32x32 per micro-tile); only when
 *                nnz_isa_supported(NNZ_ISA_AMX) (the OS granted tile state). Intel
 *                specifies the same DAZ/FTZ as vdpbf16ps.
 *   _amx_emulated: the AMX path's packing, blocking and edges with a plain-C tile
 *                microkernel (tdpbf16ps semantics, DAZ/FTZ included) in place of the tile
 *                instructions: how machines without AMX test that layout.
 * The bool ones return false (C untouched) only if their packing buffers cannot be
 * allocated; the dispatchers then fall back to _emulated. f32in: A, B are float, else
 * nnz_bf16. M, N, K >= 1 and alpha != 0 (the dispatchers handle the degenerate cases). */
void nnz_gemm_bf16_emulated(bool transA, bool transB, int M, int N, int K, float alpha, const void *A, int lda,
                            const void *B, int ldb, bool f32in, float beta, float *C, int ldc);
bool nnz_gemm_bf16_avx512bf16(bool transA, bool transB, int M, int N, int K, float alpha, const void *A, int lda,
                              const void *B, int ldb, bool f32in, float beta, float *C, int ldc);
bool nnz_gemm_bf16_amx(bool transA, bool transB, int M, int N, int K, float alpha, const void *A, int lda,
                       const void *B, int ldb, bool f32in, float beta, float *C, int ldc);
bool nnz_gemm_bf16_amx_emulated(bool transA, bool transB, int M, int N, int K, float alpha, const void *A,
                                int lda, const void *B, int ldb, bool f32in, float beta, float *C, int ldc);
/* The same blocked paths over operand descriptions (nnz_bf16_src below: a stored matrix, or the
 * im2col of an NHWC batch): C (M,N) = alpha * op(A) op(B) + beta * C. nnz_gemm_bf16_src runs
 * the best native path of nnz_isa_active() (AMX, then AVX512-BF16; the AMX blocking with the
 * plain-C tile while nnz_isa_bf16_tiles_emulated()) and returns false, C untouched, where there
 * is none (the caller then makes its operands and calls nnz_gemm_bf16) or its buffers cannot be
 * allocated. */
typedef struct nnz_bf16_src nnz_bf16_src;
bool nnz_gemm_bf16_has_native(void); /* the active ISA has a native path (nnz_gemm_bf16_src can run) */
/* At most the bytes one call of the active ISA's native path allocates on `threads` threads
 * (its packing buffers, or a split K's partials; 0 without a native path), and per path. */
size_t nnz_gemm_bf16_native_bytes(int threads);
size_t nnz_gemm_bf16_amx_bytes(int threads);
size_t nnz_gemm_bf16_avx512bf16_bytes(int threads);
bool nnz_gemm_bf16_src(int M, int N, int K, float alpha, const nnz_bf16_src *A, const nnz_bf16_src *B, float beta,
                       float *C, int ldc);
bool nnz_gemm_bf16_amx_src(int M, int N, int K, float alpha, const nnz_bf16_src *A, const nnz_bf16_src *B,
                           float beta, float *C, int ldc);
bool nnz_gemm_bf16_avx512bf16_src(int M, int N, int K, float alpha, const nnz_bf16_src *A, const nnz_bf16_src *B,
                                  float beta, float *C, int ldc);
bool nnz_gemm_bf16_amx_emulated_src(int M, int N, int K, float alpha, const nnz_bf16_src *A,
                                    const nnz_bf16_src *B, float beta, float *C, int ldc);

/* Packing, shared by the avx512bf16 and AMX paths (gemm_bf16_pack.c). A source operand is
 * op(X) seen as (rows, cols): element (r,c) = X[r*ld + c], or X[c*ld + r] when trans; bf16
 * or fp32 (then rounded as nnz_bf16_from_f32). Everything past the real rows/columns and
 * past kc, up to the padded sizes, is written as zeros (0 * 0 adds nothing to a sum).
 * pack_a: rows [i0, i0+mr) x k [k0, k0+kc) of op(A) into an MR-row panel in blocks of KB
 *   k-values: out[(k/KB)*MR*KB + i*KB + k%KB], k < kc_pad (a multiple of KB).
 *   KB = 2: per k-pair, MR 32-bit pairs (what vdpbf16ps broadcasts); KB = 32 with MR = 32:
 *   per 32-k block, two 16x32 AMX A tiles (row stride 64 bytes).
 * pack_b: k [k0, k0+kc) x columns [j0, j0+nr) of op(B) into an NR-column panel in VNNI
 *   pairs along K: out[(k/2)*NR*2 + j*2 + k%2], k < kc_pad (even). For AMX (NR = 32,
 *   kc_pad a multiple of 32) each 32-k block holds two K=32 x N=16 B tiles with row
 *   stride 128 bytes, the second 64 bytes after the first. */
struct nnz_bf16_src {
    const void *p;
    int64_t ld;
    bool trans, f32;
    /* win != NULL: the operand is im2col(p) without the im2col buffer: p is an NHWC batch of C
     * channels (groups 1), fp32 (f32; rounded as the packers round) or bf16, element (r,c) =
     * im2col row r (output pixel) column c ((kh,kw,ch) order, zero at padding taps); ld and
     * trans (false) are not read. Only the blocked paths (nnz_gemm_bf16_src*) take it. */
    const struct nnz_conv_window *win;
    int C;
};
void nnz_bf16_pack_a(const nnz_bf16_src *A, int i0, int mr, int k0, int kc, int MR, int KB, int kc_pad,
                     nnz_bf16 *out);
void nnz_bf16_pack_b(const nnz_bf16_src *B, int k0, int kc, int j0, int nr, int NR, int kc_pad, nnz_bf16 *out);
/* The plain-C tile: C(16,16) += A(16, 32 bf16) * B(K=32 pairs-packed, 16) with tdpbf16ps's
 * arithmetic (per pair: even product then odd product, each add rounded to nearest even,
 * bf16 denormal inputs as zero, denormal results flushed). Strides in elements. */
void nnz_bf16_tile_dp_emulated(float *C, int ldc, const nnz_bf16 *A, int lda, const nnz_bf16 *B, int ldb);

/* Vector conversions over n elements (rounding as nnz_bf16_from_f32), dispatched on
 * nnz_isa_active(). Denormal fp32 inputs (|x| < 2^-126) per path:
 *   _ref, _avx512 (integer round-to-nearest-even): rounded like every other number, so
 *     0x007FFFFF becomes 0x0080 (the smallest normal) and tiny ones become +-0 or a bf16
 *     denormal; bit-identical to nnz_bf16_from_f32 on every input.
 *   _avx512bf16 (VCVTNEPS2BF16): flushed to +-0, sign kept (measured on AMD Zen 4; Intel's
 *     SDM specifies the same); identical to nnz_bf16_from_f32 on every other input.
 * bf16 -> fp32 is exact on every path (denormals kept). Arrays of 128k elements or more are
 * converted in chunks on the threads (in a parallel region, as nested parallelism allows). */
void nnz_cvt_f32_to_bf16(int64_t n, const float *x, nnz_bf16 *y);
/* The single-threaded path nnz_cvt_f32_to_bf16 takes on the active ISA: a packer resolves it
 * once per panel rather than once per short run. */
typedef void (*nnz_cvt_f32_to_bf16_fn)(int64_t n, const float *x, nnz_bf16 *y);
nnz_cvt_f32_to_bf16_fn nnz_cvt_f32_to_bf16_kernel(void);
/* dst (cols, rows), leading dimension ld_dst, = src (rows, cols)^T rounded to bf16 as the scalar
 * rounding does (denormals kept): the transposed operand of a bf16 GEMM, laid out so the GEMM
 * packs it without gathering. */
void nnz_cvt_f32_to_bf16_transposed(int64_t rows, int cols, const float *src, int64_t ld_src, nnz_bf16 *dst,
                                    int64_t ld_dst);
void nnz_cvt_bf16_to_f32(int64_t n, const nnz_bf16 *x, float *y);
/* y = x rounded to the nearest bf16 value, kept as fp32 (bit for bit nnz_bf16_round, denormals
 * kept); y may be x. Single-threaded: for the rows a kernel stages. */
void nnz_round_to_bf16(int64_t n, const float *x, float *y);
void nnz_cvt_f32_to_bf16_ref(int64_t n, const float *x, nnz_bf16 *y);
void nnz_cvt_f32_to_bf16_avx512(int64_t n, const float *x, nnz_bf16 *y);
void nnz_cvt_f32_to_bf16_avx512bf16(int64_t n, const float *x, nnz_bf16 *y);
void nnz_cvt_bf16_to_f32_ref(int64_t n, const nnz_bf16 *x, float *y);
void nnz_cvt_bf16_to_f32_avx512(int64_t n, const nnz_bf16 *x, float *y);

/* ---- per-channel epilogue, fused into a producer's store ----
 * Over a row-major (M,C) block, in place: x = clamp((x - sub[c]) * mul[c] + add[c], lo, hi),
 * where clamp(v) = v < lo ? lo : (v > hi ? hi : v) (NaN passes, as relu does). sub, mul, add
 * (C) may each be NULL (0, 1, 0); lo = -INFINITY, hi = INFINITY for no clamp. This is
 * batch norm (eval) followed by relu (lo 0, hi inf) or relu6 (0, 6), written so that the
 * fused result is the same arithmetic as the separate layers. Producers (the 1x1 GEMM in
 * row chunks, the depthwise kernels per output row) apply it while the block is in cache.
 * nnz_epilogue_apply is single-threaded (callers are inside their own parallel loop). */
typedef struct {
    const float *sub, *mul, *add;
    float lo, hi;
} nnz_epilogue;
void nnz_epilogue_apply(int64_t M, int C, const nnz_epilogue *ep, float *x);

/* ---- small-K GEMM (1x1 convolutions) ----
 * C(M,N) = A(M,K) * B(K,N), or C += when accumulate; then ep (NULL: none), applied to
 * each register tile before it is stored (the reference: over the whole C afterwards).
 * A row-major with lda >= K (activations, read in place: no packing), B row-major (K,N) dense,
 * C (M,N) dense. For K and N up to a few hundred (B stays in L1/L2), where OpenBLAS spends as
 * long packing as multiplying. Threads:
 * OpenMP over fixed blocks of rows; each C element is one multiply-add chain over
 * k = 0..K-1 (FMA in the SIMD variants), so the result does not depend on the thread
 * count. M, N, K >= 0; K = 0 writes zeros (or leaves C when accumulate). */
void nnz_gemm_small(int64_t M, int N, int K, const float *A, int64_t lda, const float *B, bool accumulate,
                    const nnz_epilogue *ep, float *C);
void nnz_gemm_small_ref(int64_t M, int N, int K, const float *A, int64_t lda, const float *B, bool accumulate,
                        const nnz_epilogue *ep, float *C);
/* The same on the calling thread (for a caller inside its own parallel loop): the active ISA's
 * row kernel over all M rows, or the reference */
void nnz_gemm_small_serial(int64_t M, int N, int K, const float *A, int64_t lda, const float *B, bool accumulate,
                           const nnz_epilogue *ep, float *C);
/* D(P,Q) += X(M,P)^T * Y(M,Q): the weight gradient of a 1x1 convolution (X = dout, Y = inp),
 * for P, Q up to a few hundred and any M. X, Y row-major with ldx >= P, ldy >= Q; D dense.
 * Rows go in fixed slices, each into its own partial, reduced in order: the result does not
 * depend on the thread count. Returns false (D untouched) if its scratch (16*P*Q floats)
 * could not be allocated. The reference accumulates in double. */
bool nnz_gemm_small_at(int64_t M, int P, int Q, const float *X, int64_t ldx, const float *Y, int64_t ldy,
                       float *D);
/* The same on the calling thread, every block of rows straight into D: no scratch, cannot fail
 * (for a caller inside its own parallel loop, with a D of its own) */
void nnz_gemm_small_at_serial(int64_t M, int P, int Q, const float *X, int64_t ldx, const float *Y, int64_t ldy,
                              float *D);
void nnz_gemm_small_at_ref(int64_t M, int P, int Q, const float *X, int64_t ldx, const float *Y, int64_t ldy,
                           float *D);
/* Both products of a 1x1 convolution's backward in one pass over dout:
 * dweight (OC,IC) += dout^T (M,OC)^T * inp (M,IC) as nnz_gemm_small_at(M, OC, IC, dout, OC,
 * inp, IC, dweight), and dinp (M,IC) = dout (M,OC) * weight (OC,IC) (+= when accumulate) as
 * nnz_gemm_small(M, IC, OC, dout, OC, weight, accumulate, NULL, dinp): the same numbers as
 * those two calls, bit for bit, on every ISA path and thread count. dinp may be NULL (the
 * weight gradient only). Returns false (nothing written) if the weight gradient's scratch
 * could not be allocated. */
bool nnz_gemm_small_backward(int64_t M, int IC, int OC, const float *dout, const float *inp, const float *weight,
                             float *dweight, bool accumulate, float *dinp);
/* An input transform a kernel applies to its input as it reads it (per image, or per block of
 * rows): fn(ctx, rows, x, buf) writes f(x) for `rows` pixels (rows*C floats, C the input's
 * channels) into buf. Training uses it for a batch norm and its activation deferred from the
 * layer before: the normalized tensor is then never written to memory. */
typedef struct {
    void (*fn)(const void *ctx, int64_t rows, const float *x, float *buf);
    const void *ctx;
} nnz_input_prologue;
/* A consumer of an output's rows while they are in cache: fn(ctx, r0, rows, x) reads rows
 * [r0, r0+rows) of it (x points at row r0, densely). */
typedef struct {
    void (*fn)(const void *ctx, int64_t r0, int rows, const float *x);
    const void *ctx;
} nnz_row_sink;
/* nnz_gemm_small of apro(A) (NULL: A; with apro, A's rows, K floats each, are transformed block
 * by block into a per-thread buffer), then sink's fn (sink may be NULL) on each block of C's rows
 * just after the block is made: blocks start at multiples of `unit` rows and hold a multiple of
 * it (the last one: the rest). The same numbers in C as nnz_gemm_small over apro(A). false
 * (nothing written) when apro's buffers could not be allocated. */
bool nnz_gemm_small_sink(int64_t M, int N, int K, const float *A, int64_t lda, const nnz_input_prologue *apro,
                         const float *B, bool accumulate, const nnz_epilogue *ep, float *C, const nnz_row_sink *sink,
                         int unit);
/* Rows of an operand made on demand, so that it is never stored whole: fn(ctx, r0, rows, buf)
 * writes rows [r0, r0+rows) of it (each as wide as the operand, densely) into buf. */
typedef struct {
    void (*fn)(const void *ctx, int64_t r0, int rows, float *buf);
    const void *ctx;
} nnz_row_source;
/* nnz_gemm_small_backward with dout's rows made by src, block by block, into a per-thread
 * buffer just before they are used (training: a batch norm's data gradient feeding the 1x1
 * conv before it), and of ipro(inp) when ipro is given (as apro above). The same numbers as
 * making all of dout (and ipro(inp)) first. dinp non-NULL. dsink (NULL: none; only with
 * accumulate false) gets each block of dinp's rows just after it is made, blocks as
 * nnz_gemm_small_sink's with unit dividing 256. false (nothing written) when the buffers could
 * not be allocated, or dsink is given with accumulate or another unit. */
bool nnz_gemm_small_backward_src(int64_t M, int IC, int OC, const nnz_row_source *src, const float *inp,
                                 const nnz_input_prologue *ipro, const float *weight, float *dweight, bool accumulate,
                                 float *dinp, const nnz_row_sink *dsink, int unit);
void nnz_gemm_small_at_rows_f32_avx512(int rows, int P, int Q, const float *X, int64_t ldx, const float *Y,
                                       int64_t ldy, float *D);
void nnz_gemm_small_at_rows_f32_avx2(int rows, int P, int Q, const float *X, int64_t ldx, const float *Y,
                                     int64_t ldy, float *D);
/* SIMD row blocks with the epilogue (ep may be NULL) fused into the store, single-threaded;
 * reached by tests through nnz_isa_set */
void nnz_gemm_small_rows_f32_avx512(int rows, int N, int K, const float *A, int64_t lda, const float *B,
                                    bool accumulate, const nnz_epilogue *ep, float *C);
void nnz_gemm_small_rows_f32_avx2(int rows, int N, int K, const float *A, int64_t lda, const float *B,
                                  bool accumulate, const nnz_epilogue *ep, float *C);

/* ---- convolution geometry (one image) ----
 * Shared by im2col and the depthwise kernels. OH = (H + 2*pad - KH)/stride + 1,
 * likewise OW; output pixel (oh,ow), tap (kh,kw) reads input (oh*stride - pad + kh,
 * ow*stride - pad + kw), zero outside the image. */
typedef struct nnz_conv_window {
    int H, W;                 /* input spatial size */
    int KH, KW, stride, pad;  /* stride >= 1, pad >= 0 */
    int OH, OW;               /* output spatial size */
} nnz_conv_window;

/* Output pixel p of a batch (images back to back, OH*OW pixels each): its image and position */
static inline void nnz_conv_pixel(const nnz_conv_window *g, int64_t p, int64_t *n, int *oh, int *ow) {
    const int64_t img_pixels = (int64_t)g->OH * g->OW;
    *n = p / img_pixels;
    *oh = (int)(p % img_pixels / g->OW);
    *ow = (int)(p % g->OW);
}

/* ---- implicit-GEMM convolution, NHWC, groups 1 ----
 * out (N*OH*OW, OC) = im2col(inp) (N*OH*OW, K) * w (K, OC) (+ out when accumulate), then ep
 * (NULL: none), with K = KH*KW*IC in im2col's (kh,kw,c) order (w: the transpose of the
 * layer's (OC,KH,KW,IC) weight) — without the im2col buffer: each tile of output pixels
 * reads its windows from the image. inp (N,H,W,IC). Each output is one multiply-add chain
 * over k in order, padding taps included as zeros: on each ISA the result is bit-identical to
 * nnz_im2col_nhwc + nnz_gemm_small. Any K (w is read one tap at a time, from L1/L2 while K*OC is
 * up to a few MB). Threads: fixed blocks of output pixels; the result does not depend on the count. */
void nnz_conv_implicit(const nnz_conv_window *g, int N, int IC, int OC, const float *inp, const float *w,
                       bool accumulate, const nnz_epilogue *ep, float *out);
void nnz_conv_implicit_ref(const nnz_conv_window *g, int N, int IC, int OC, const float *inp, const float *w,
                           bool accumulate, const nnz_epilogue *ep, float *out);
/* The same, bit for bit, over a zero-padded copy of the input made in scratch (N *
 * nnz_conv_implicit_padded_floats(g, IC) floats), where every window lies inside: for
 * convolutions over 1-3 channels, whose per-tap walk around the image's edges costs more than
 * the copy. */
void nnz_conv_implicit_prepadded(const nnz_conv_window *g, int N, int IC, int OC, const float *inp, const float *w,
                                 bool accumulate, const nnz_epilogue *ep, float *out, float *scratch);
/* The weight gradient: dw (K, OC) += im2col(inp)^T (K, M) * dout (M, OC), M = N*OH*OW, without
 * the im2col buffer (the input is copied once into scratch, zero-padded). Rows go in fixed blocks
 * of 256, each block summed from zero and added to its slot's partial, the partials (at most 16,
 * fewer when K*OC is large) added in order: the result does not depend on the thread count, and
 * each element's rounding is that of chains of 256 + blocks/slot + slots terms. scratch: at least
 * nnz_conv_implicit_wgrad_scratch_floats(g, N, IC, OC) floats (it allocates nothing).
 * The reference sums in double (and ignores scratch). */
size_t nnz_conv_implicit_wgrad_scratch_floats(const nnz_conv_window *g, int N, int IC, int OC);
/* floats of one image zero-padded as the weight gradient copies it: ((OH-1)*stride + KH) x
 * ((OW-1)*stride + KW) pixels of IC, every window inside (callers size their chunks by it) */
size_t nnz_conv_implicit_padded_floats(const nnz_conv_window *g, int IC);
void nnz_conv_implicit_wgrad(const nnz_conv_window *g, int N, int IC, int OC, const float *inp, const float *dout,
                             float *dw, float *scratch);
void nnz_conv_implicit_wgrad_ref(const nnz_conv_window *g, int N, int IC, int OC, const float *inp,
                                 const float *dout, float *dw);
void nnz_gemm_small_conv_wgrad_rows_f32_avx512(int rows, int KH, int KW, int Wp, int IC, const float *x,
                                               const int64_t *off, const float *Y, int Q, float *D);
void nnz_gemm_small_conv_wgrad_rows_f32_avx2(int rows, int KH, int KW, int Wp, int IC, const float *x,
                                             const int64_t *off, const float *Y, int Q, float *D);
/* output pixels [pix0, pix0 + rows) into out (rows, OC), single-threaded; via nnz_isa_set */
void nnz_gemm_small_conv_rows_f32_avx512(const nnz_conv_window *g, int IC, const float *inp, int64_t pix0, int rows,
                                         const float *w, int OC, bool accumulate, const nnz_epilogue *ep, float *out);
void nnz_gemm_small_conv_rows_f32_avx2(const nnz_conv_window *g, int IC, const float *inp, int64_t pix0, int rows,
                                       const float *w, int OC, bool accumulate, const nnz_epilogue *ep, float *out);

/* ---- Winograd convolution, NHWC, groups 1, stride 1 (conv_winograd.c) ----
 * F(2x2, 5x5) for 5x5 kernels and F(4x4, 3x3) for 3x3: each m x m tile of output pixels (m = 2,
 * 4) is A^T [U * (B^T d B)] A over its 6x6 input window d, with U = G w G^T, the weight made once
 * per call by nnz_winograd_weight. For a block of tiles, each of the 36 elements is one small
 * GEMM over the channels (nnz_gemm_small's row kernels): 2.8x (5x5) and 4x (3x3) fewer
 * multiply-adds than the direct convolution. Not bit-identical to it: the transforms mix a tile's
 * values with gains up to 8 before the products, so an output errs by up to tens of ulp of the
 * largest sum of |terms| (test_conv_winograd bounds it by 128 u S; measured 23 forward, 52 in the
 * weight gradient). Threads: fixed blocks of tiles; the result does not depend on the count.
 * Applies (nnz_winograd_applies) to stride 1, square 3x3 or 5x5 windows, pad < K. */
bool nnz_winograd_applies(const nnz_conv_window *g);
/* U: 36 x IC x OC floats */
size_t nnz_winograd_weight_floats(int IC, int OC);
/* U[e][ic][oc] (e = a*6 + b) from w (OC,K,K,IC), K = 3 or 5. turned: the weight of the data
 * gradient's convolution (of dout, window turned 180 degrees, channels swapped): U[e][oc][ic]. */
void nnz_winograd_weight(int K, int IC, int OC, const float *w, bool turned, float *U);
/* One thread's block of tiles: the work a call needs from its caller */
size_t nnz_conv_winograd_work_floats(int IC, int OC);
/* out (N,OH,OW,OC) = (accumulate ? out : 0) + the convolution of inp (N,H,W,IC) with the weight
 * U (nnz_winograd_weight), then ep (NULL: none). work: nnz_conv_winograd_work_floats(IC, OC)
 * floats, the first thread's block; each further thread allocates its own (under 1 MB), and one
 * that cannot runs no thread: the call cannot fail, and computes the same numbers on fewer
 * threads. Inside a parallel region it runs on the calling thread alone, in work. */
void nnz_conv_winograd(const nnz_conv_window *g, int N, int IC, int OC, const float *inp, const float *U,
                       bool accumulate, const nnz_epilogue *ep, float *out, float *work);
/* The weight gradient: dw (OC,K,K,IC) += that of the convolution of inp (N,H,W,IC) giving
 * dout (N,OH,OW,OC): the gradient of the Winograd forward, dU[e] = sum over tiles of V[e]^T dM[e]
 * (dM = A dY A^T), then dw += G^T dU G. The team transforms each block of tiles together and
 * splits the 36 products by element, so every element of dU sums the blocks in order: the result
 * does not depend on the thread count. scratch: dU and one shared block of transformed tiles,
 * nnz_conv_winograd_wgrad_scratch_floats floats (nothing allocated). */
size_t nnz_conv_winograd_wgrad_scratch_floats(int IC, int OC);
void nnz_conv_winograd_wgrad(const nnz_conv_window *g, int N, int IC, int OC, const float *inp, const float *dout,
                             float *dw, float *scratch);
/* A channel-block sparse weight: the kept NNZ_CHANNEL_BLOCK x NNZ_CHANNEL_BLOCK blocks of (output,
 * input) channels, each kept or dropped at every tap together (a tap-shared block mask), which is
 * the pattern that survives the Winograd transform: U[e] is zero in a dropped block for every e.
 * Output block ob (channels 16*ob ..) reads input blocks idx[ptr[ob]] .. idx[ptr[ob+1]-1]; input
 * block ib feeds output blocks tidx[tptr[ib]] .. (the same set, by input block: the transforms make
 * only the input blocks some kept block reads). The last block of either side may be partial. The
 * data gradient's turned convolution takes the two swapped (nnz_channel_blocks_turned). */
#define NNZ_CHANNEL_BLOCK 16
typedef struct {
    const int32_t *ptr, *idx, *tptr, *tidx;
} nnz_channel_blocks;
static inline nnz_channel_blocks nnz_channel_blocks_turned(const nnz_channel_blocks *b) {
    return (nnz_channel_blocks){b->tptr, b->tidx, b->ptr, b->idx};
}
/* nnz_conv_winograd with only the kept blocks' products: U (dense layout, any values in dropped
 * blocks) is read at the kept blocks only; an output block that keeps none gets zeros (before
 * accumulate and ep). kept NULL: every block (nnz_conv_winograd). The data gradient's turned
 * convolution takes nnz_channel_blocks_turned. */
/* nnz_winograd_weight at the kept blocks only (the rest of U left as it was); kept NULL: all */
void nnz_winograd_weight_blocks(int K, int IC, int OC, const float *w, bool turned, const nnz_channel_blocks *kept,
                                float *U);
void nnz_conv_winograd_blocks(const nnz_conv_window *g, int N, int IC, int OC, const float *inp, const float *U,
                              const nnz_channel_blocks *kept, bool accumulate, const nnz_epilogue *ep, float *out,
                              float *work);
/* nnz_conv_winograd_wgrad with dU made at the kept blocks only: dw gets exactly zero gradient in
 * the dropped blocks. kept NULL: every block. */
void nnz_conv_winograd_wgrad_blocks(const nnz_conv_window *g, int N, int IC, int OC, const float *inp,
                                    const float *dout, const nnz_channel_blocks *kept, float *dw, float *scratch);

/* ---- im2col / col2im, NHWC ----
 * img is (B,H,W,C) (B images back to back); the channels taken are [c0, c0+Cg)
 * (one group; Cg = C when groups == 1). col is (B*OH*OW, KH*KW*Cg) row-major:
 * row = (b,oh,ow), column = (kh,kw,c) with c fastest, i.e. the layout of a weight
 * (OC,KH,KW,Cg) row, so out = col * weight^T. Padding taps are written as zeros.
 * col2im is the adjoint and ACCUMULATES: img += scatter(col). Images run in
 * parallel (OpenMP); each image's sums are in a fixed order (deterministic). */
void nnz_im2col_nhwc(const nnz_conv_window *g, int B, int C, int c0, int Cg, const float *img, float *col);
/* im2col into bf16, each value rounded to nearest even (bf16 convolutions' GEMM input) */
void nnz_im2col_nhwc_bf16(const nnz_conv_window *g, int B, int C, int c0, int Cg, const float *img, nnz_bf16 *col);
void nnz_col2im_nhwc_acc(const nnz_conv_window *g, int B, int C, int c0, int Cg, const float *col, float *img);
/* The im2col rows of output pixels [pix0, pix0 + rows) of the batch img (images back to back,
 * all C channels: groups 1) into col with row stride ldc >= KH*KW*C. Single-threaded. */
void nnz_im2col_rows_nhwc(const nnz_conv_window *g, int C, const float *img, int64_t pix0, int rows, float *col,
                          int64_t ldc);
/* nnz_gemm_small over the im2col rows of a convolution (groups 1) without the im2col buffer:
 * out (N*OH*OW, OC) = im2col(img) (K = KH*KW*C) * B (K, OC), then ep; each of the small GEMM's
 * row blocks is built by nnz_im2col_rows_nhwc into a per-thread buffer that stays in cache
 * first. Bit-identical to nnz_im2col_nhwc + nnz_gemm_small (rows are independent). false
 * (nothing written) if a buffer could not be allocated or the active ISA has no SIMD small GEMM
 * (the reference needs the rows in memory: use the buffer). */
bool nnz_gemm_small_im2col(const nnz_conv_window *g, int N, int C, const float *img, int OC, const float *B,
                           bool accumulate, const nnz_epilogue *ep, float *out);

/* ---- depthwise convolution, NHWC (groups == IC == OC) ----
 * inp (N,H,W,C), out/dout (N,OH,OW,C), weight_t (KH,KW,C) — channels-last,
 * i.e. the transpose of the layer's (C,KH,KW,1) weight, so that a vector of
 * channels is contiguous — bias (C) or NULL. Any C >= 1 (the SIMD variants mask
 * the tail when C is not a multiple of the vector width), any k/stride/pad.
 *   forward:          out  = conv(inp, weight_t) + bias       (overwrites out)
 *   backward_data:    dinp += conv^T(dout, weight_t)           (accumulates)
 *   backward_weight:  dweight_t += sum_{n,oh,ow} inp * dout    (accumulates)
 * Threads: OpenMP over output rows / input rows / fixed image slots. The weight
 * gradient sums images in NNZ_DW_SLOTS (or N if fewer) fixed slices, each into its
 * own partial (KH,KW,C) in `work`, reduced in slot order: the result does not depend
 * on the thread count. `work` holds nnz_dwconv_work_floats() floats. */
#define NNZ_DW_SLOTS 32
size_t nnz_dwconv_work_floats(const nnz_conv_window *g, int N, int C);
void nnz_dwconv_forward(const nnz_conv_window *g, int N, int C, const float *inp, const float *weight_t,
                        const float *bias, float *out);
/* forward, then ep (may be NULL) applied to each output row while it is in cache */
void nnz_dwconv_forward_ep(const nnz_conv_window *g, int N, int C, const float *inp, const float *weight_t,
                           const float *bias, const nnz_epilogue *ep, float *out);
void nnz_dwconv_backward_data(const nnz_conv_window *g, int N, int C, const float *dout, const float *weight_t,
                              float *dinp);
/* accumulate false: dinp = conv^T(dout, weight_t) (overwritten, row by row while in cache) */
void nnz_dwconv_backward_data_ex(const nnz_conv_window *g, int N, int C, const float *dout, const float *weight_t,
                                 float *dinp, bool accumulate);
void nnz_dwconv_backward_weight(const nnz_conv_window *g, int N, int C, const float *inp, const float *dout,
                                float *dweight_t, float *work);
/* forward and backward_weight of pro(inp) instead of inp (backward_weight_pro with pro NULL is
 * backward_weight itself): each image transformed into a
 * per-thread buffer (in cache) just before it is read. The same numbers as transforming the
 * whole batch first and calling nnz_dwconv_forward_ep / nnz_dwconv_backward_weight. false
 * (nothing written) when the buffers could not be allocated. */
bool nnz_dwconv_forward_pro(const nnz_conv_window *g, int N, int C, const float *inp, const nnz_input_prologue *pro,
                            const float *weight_t, const float *bias, const nnz_epilogue *ep, float *out);
bool nnz_dwconv_backward_weight_pro(const nnz_conv_window *g, int N, int C, const float *inp,
                                    const nnz_input_prologue *pro, const float *dout, float *dweight_t, float *work);
/* Both gradients with dout's images made by src (one image's OH*OW rows at a time, into a
 * per-thread buffer: training, the batch norm after the conv) and of pro(inp) when pro is given:
 * dweight_t += (as backward_weight, `work` as there), dinp = or += (accumulate) as
 * backward_data_ex. By image in the weight gradient's slots. The same numbers as making all of
 * dout first and calling those two. dsink (NULL: none; only with accumulate false) gets every
 * group of `unit` rows of dinp exactly once, in one or more blocks as nnz_gemm_small_sink's
 * (starting at multiples of unit, holding a multiple of it, the last one the rest), most of
 * them just after they are written (training: the batch norm before the conv takes its sums).
 * false (nothing written but work) when the buffers could not be allocated, or dsink is given
 * with accumulate. */
bool nnz_dwconv_backward_src(const nnz_conv_window *g, int N, int C, const nnz_row_source *src, const float *inp,
                             const nnz_input_prologue *pro, const float *weight_t, float *dweight_t, float *work,
                             float *dinp, bool accumulate, const nnz_row_sink *dsink, int unit);
/* A consumer of an output made image by image, each image once: fn(ctx, slot, n, img) reads image
 * n (densely) in fixed slot `slot` of images (the same slots for any thread count), on the thread
 * that made it; the calls of one slot come in image order. */
typedef struct {
    void (*fn)(const void *ctx, int slot, int n, const float *img);
    const void *ctx;
} nnz_image_sink;
/* nnz_dwconv_backward_src whose data gradient is never stored: each image of it is made in a
 * per-thread buffer and handed to isink (training: the expansion's batch norm and 1x1 conv before
 * the depthwise conv take it from there); `slots` slots, as nnz_dwconv_work_floats counts them
 * (nnz_dwconv_slots). false (nothing written but work) when the buffers could not be allocated. */
bool nnz_dwconv_backward_src_images(const nnz_conv_window *g, int N, int C, const nnz_row_source *src,
                                    const float *inp, const nnz_input_prologue *pro, const float *weight_t,
                                    float *dweight_t, float *work, const nnz_image_sink *isink);
int nnz_dwconv_slots(int N);
/* The oracles: single-threaded, one output element at a time, bounds checked per tap. */
void nnz_dwconv_forward_ref(const nnz_conv_window *g, int N, int C, const float *inp, const float *weight_t,
                            const float *bias, float *out);
void nnz_dwconv_backward_data_ref(const nnz_conv_window *g, int N, int C, const float *dout,
                                  const float *weight_t, float *dinp);
void nnz_dwconv_backward_weight_ref(const nnz_conv_window *g, int N, int C, const float *inp, const float *dout,
                                    float *dweight_t);
/* SIMD variants, called by the dispatchers above (tests reach them with nnz_isa_set).
 * fwd_row: one output row oh of one image: out_row (OW,C) = ..., img (H,W,C), then ep (NULL: none)
 *   applied to the accumulators before the store.
 * bwd_data_row: one input row ih of one image: dinp_row (W,C) += ..., dout_img (OH,OW,C).
 * bwd_weight_img: dweight_t (KH,KW,C) += the contribution of one image. */
void nnz_dwconv_fwd_row_f32_avx512(const nnz_conv_window *g, int C, const float *img, const float *weight_t,
                                   const float *bias, int oh, const nnz_epilogue *ep, float *out_row);
void nnz_dwconv_bwd_data_row_f32_avx512(const nnz_conv_window *g, int C, const float *dout_img,
                                        const float *weight_t, int ih, float *dinp_row);
void nnz_dwconv_bwd_weight_img_f32_avx512(const nnz_conv_window *g, int C, const float *img, const float *dout_img,
                                          float *dweight_t);
void nnz_dwconv_fwd_row_f32_avx2(const nnz_conv_window *g, int C, const float *img, const float *weight_t,
                                 const float *bias, int oh, const nnz_epilogue *ep, float *out_row);
void nnz_dwconv_bwd_data_row_f32_avx2(const nnz_conv_window *g, int C, const float *dout_img,
                                      const float *weight_t, int ih, float *dinp_row);
void nnz_dwconv_bwd_weight_img_f32_avx2(const nnz_conv_window *g, int C, const float *img, const float *dout_img,
                                        float *dweight_t);

/* ---- bias helpers over a row-major (M,C) matrix ----
 * fill: every row of x = bias (overwrites). grad: dbias (C) += column sums of x,
 * each column summed in row order (parallel over columns only: deterministic). */
void nnz_bias_fill_rows(int64_t M, int C, const float *bias, float *x);
void nnz_bias_grad_acc(int64_t M, int C, const float *x, float *dbias);

/* ---- sparse weights: formats ----
 * A weight W (rows, cols) = (OC, K) with a mask (a linear layer's (OUT,IN), or a conv weight
 * flattened to (OC, KH*KW*IC)), stored as BSR with block r x c. CSR is the same structure with
 * r = c = 1 (one nonzero per "block"), so one format, one conversion and one set of kernels
 * serve both; the kernels specialise on the block shape at compile time.
 *
 * One orientation (nnz_bsr): block row br covers rows [br*r, br*r+r), block column bc covers
 * cols [bc*c, bc*c+c). Blocks of block row br are ptr[br]..ptr[br+1]-1, in increasing block
 * column idx[j]; block j's values are val[j*r*c ..] COLUMN-MAJOR inside the block:
 *   W[br*r + i][idx[j]*c + kk] = val[j*r*c + kk*r + i]
 * so the r values of one column are contiguous (one r-wide vector per k for the forward
 * kernels). Shapes not divisible by the block: the last block row / column is padded, padded
 * positions hold 0 and are never read from or written to the caller's arrays.
 * A block is kept when any element of it is kept; kept blocks store masked-out elements as 0.
 *
 * nnz_spmat holds W (fwd: rows x cols, blocks r x c) and W^T (tr: cols x rows, blocks c x r,
 * built at conversion time, values copied) for backward-data. Indices are int32; values are
 * fp32 (dtype NNZ_F32, the authoritative values). val_bf16: NULL until nnz_spmat_pack_bf16 fills
 * it with a bf16 copy in its own (VNNI pair) layout, see "sparse kernels (bf16)". Everything is
 * owned by the nnz_spmat (nnz_alloc). */
typedef struct {
    int rows, cols;       /* the matrix this orientation stores */
    int r, c;             /* block shape */
    int brows, bcols;     /* ceil(rows/r), ceil(cols/c) */
    int32_t *ptr;         /* (brows+1) */
    int32_t *idx;         /* (nblocks) block column of each block */
    float *val;           /* (nblocks*r*c), layout above */
    uint16_t *val_bf16;   /* NULL, or bf16 values in VNNI pair order (nnz_spmat_pack_bf16, below) */
} nnz_bsr;

typedef struct {
    nnz_dtype dtype;      /* NNZ_F32 */
    int64_t nnz;          /* kept elements */
    int64_t nblocks;      /* kept blocks (= nnz for CSR) */
    nnz_bsr fwd;          /* W  (rows, cols), blocks r x c */
    nnz_bsr tr;           /* W^T (cols, rows), blocks c x r */
} nnz_spmat;

/* What a layer needs to choose dense / CSR / BSR: counted from dense + mask, nothing built. */
typedef struct {
    int64_t nnz;          /* kept elements */
    int64_t nblocks;      /* blocks holding at least one kept element */
    double density;       /* nnz / (rows*cols) */
    double block_fill;    /* nnz / (nblocks*r*c): fraction of kept blocks' positions that are kept */
} nnz_sparse_stats;

/* Block shapes the kernels are built for: r in {1,4,8,16,32}, c in {4,8,16,32}, and 1x1 (CSR). */
bool nnz_sparse_block_supported(int r, int c);
/* mask (rows, cols) row-major with ld = ldw, uint8 nonzero = kept; NULL: kept = (W != 0). */
nnz_status nnz_sparse_measure(int rows, int cols, const float *W, int64_t ldw, const uint8_t *mask, int r, int c,
                              nnz_sparse_stats *out);
/* The auto planner's candidates in one pass over W (kept = W != 0): ladder[k] holds the blocks
 * NNZ_SPARSE_LADDER[k] = 1x1, 1x4, 4x4, 8x8, 16x16, 16x32 holding a kept element (1x1: the kept
 * elements), each equal to nnz_sparse_measure's nblocks for that block. The coarser counts are
 * ORs of the finer occupancy (a 1x4 bitmap, then 4x4, 8x8, 16x16, 16x32), not passes over W:
 * the trainer replans AutoSparse's moving zeros every step. NNZ_ERR_INVALID_ARG as measure's. */
#define NNZ_SPARSE_LADDER_N 6
extern const int NNZ_SPARSE_LADDER[NNZ_SPARSE_LADDER_N][2];
nnz_status nnz_sparse_measure_ladder(int rows, int cols, const float *W, int64_t ldw,
                                     int64_t ladder[NNZ_SPARSE_LADDER_N]);
/* Builds *out from W (rows, cols) with ld ldw and the mask; r = c = 1 is CSR. On failure *out
 * is left empty (safe to nnz_spmat_free). NNZ_ERR_INVALID_ARG for negative sizes, ldw < cols,
 * an unsupported block, more than 2^31-1 blocks; NNZ_ERR_NOMEM if an allocation fails. */
nnz_status nnz_spmat_from_dense(int rows, int cols, const float *W, int64_t ldw, const uint8_t *mask, int r, int c,
                                nnz_spmat *out);
/* Refreshes the values (fwd and tr) from W after an optimizer step; the structure stays.
 * mask as above (kept elements of kept blocks get W, the rest 0); NULL: copies W as is. */
void nnz_spmat_load_values(nnz_spmat *s, const float *W, int64_t ldw, const uint8_t *mask);
/* W (rows, cols), ld ldw: kept blocks' values, zeros elsewhere (the masked matrix). */
void nnz_spmat_to_dense(const nnz_spmat *s, float *W, int64_t ldw);
/* dense (rows, cols) (+)= a values array in fwd's layout (e.g. the SDDMM gradient): every
 * in-bounds position of every kept block; other positions untouched when accumulate, else 0. */
void nnz_spmat_scatter_values(const nnz_spmat *s, const float *vals, bool accumulate, float *dense, int64_t ld);
void nnz_spmat_free(nnz_spmat *s);
static inline bool nnz_spmat_is_csr(const nnz_spmat *s) { return s->fwd.r == 1 && s->fwd.c == 1; }
static inline int64_t nnz_spmat_val_count(const nnz_spmat *s) { return s->nblocks * s->fwd.r * s->fwd.c; }

/* ---- sparse kernels (fp32) ----
 * W is the nnz_spmat (rows, cols) = (OC, K); activations are row-major (NHWC rows).
 *   forward:         out(M,rows) = base + X(M,cols) * W^T,   base = (accumulate ? out : 0) + bias
 *   backward-data:   dX(M,cols)  = (accumulate ? dX : 0) + dout(M,rows) * W      (uses W^T, tr)
 *   SDDMM:           dval[kept block positions] += sum_m dout(m,row) * X(m,col)   (fwd layout;
 *                    every in-bounds position of a kept block, masked-out ones included:
 *                    the layer applies its mask; padded positions are left as they are)
 * bias (rows) or NULL. ld* >= the row length. accumulate false overwrites (NaNs in out do not
 * propagate). M = 0 or no blocks: out = base.
 * Threads: OpenMP over (row tile, group of block rows) items; block rows are grouped so each
 * group holds about the same number of blocks (nonzeros), not rows. Each output element is
 * one fixed-order sum over its row's blocks (SDDMM: over m in order, per block by one thread),
 * so results do not depend on the thread count. Variants: *_ref (single-threaded oracle);
 * AVX-512 and AVX2 (sparse_spmm_avx512.c, sparse_spmm_avx2.c, the same algorithms at 16 and 8
 * lanes):
 *   r = 16/32:       an m x r register tile over the block list, r-wide W vectors times
 *                    broadcasts of X;
 *   r = 1/4/8, CSR:  a 64-row panel of X transposed so m is contiguous, one broadcast of W
 *                    per nonzero times 64 m; CSR with M <= 4 (AVX-512): X gathered at each
 *                    row's columns;
 *   SDDMM:           r-wide vectors of dout for r >= 16; below, 64-long dot products of
 *                    transposed panels, summed across lanes 16 (8) at a time.
 * Other CPUs get the reference. The bf16 kernels (below) read nnz_bsr.val_bf16 with the same
 * index arrays, the same transposed copy and the same split of block rows by block count.
 * Return NNZ_ERR_NOMEM if the per-thread scratch cannot be allocated (outputs then undefined). */
nnz_status nnz_spmm_f32(const nnz_spmat *W, int64_t M, const float *X, int64_t ldx, const float *bias,
                        bool accumulate, float *out, int64_t ldo);
nnz_status nnz_spmm_bwd_data_f32(const nnz_spmat *W, int64_t M, const float *dout, int64_t ldd, bool accumulate,
                                 float *dX, int64_t ldx);
/* The forward of a sparse convolution (groups 1) without the im2col buffer: nnz_spmm_f32 with
 * X = im2col(img) (M = N*OH*OW rows, K = KH*KW*C = W's cols), each item's rows built by
 * nnz_im2col_rows_nhwc straight into the tile kernel's scratch, where nnz_spmm_f32 copies them
 * from X: bit-identical to nnz_im2col_nhwc + nnz_spmm_f32. Only the register-tile kernels
 * (r >= 16) on a SIMD ISA: otherwise NNZ_ERR_UNSUPPORTED (nothing written; use the buffer). */
nnz_status nnz_spmm_conv_f32(const nnz_spmat *W, const nnz_conv_window *g, int N, int C, const float *img,
                             const float *bias, bool accumulate, float *out, int64_t ldo);
nnz_status nnz_sddmm_f32(const nnz_spmat *W, int64_t M, const float *dout, int64_t ldd, const float *X, int64_t ldx,
                         float *dval);
/* The SDDMM of a sparse convolution (groups 1) without the im2col buffer: nnz_sddmm_f32 with
 * X = im2col(img) (M = N*OH*OW rows), each chunk of rows built by nnz_im2col_rows_nhwc into a
 * per-thread buffer that stays in cache. The sum over m runs in up to 8 fixed ranges of rows,
 * each summed in order into its own partial, the partials then added to dval in order: the
 * result does not depend on the thread count, and when M fits one chunk (<= 128 rows) it is
 * bit-identical to nnz_im2col_nhwc + nnz_sddmm_f32. Only r >= 16 on a SIMD ISA: otherwise
 * NNZ_ERR_UNSUPPORTED (nothing written; use the buffer). */
nnz_status nnz_sddmm_conv_f32(const nnz_spmat *W, const nnz_conv_window *g, int N, int C, const float *img,
                              const float *dout, int64_t ldd, float *dval);
/* ---- sparse turned-window matrix (sparse_turn.c) ----
 * A stride-1 convolution's data gradient is the convolution of dout with the window turned 180
 * degrees and the channels swapped (padding K-1-pad). For a sparse W (OC, taps*IC), taps =
 * KH*KW, that convolution's weight is
 *   W'[ic][t*OC + oc] = W[oc][(taps-1-t)*IC + ic]          (IC, taps*OC)
 * so the data gradient runs as nnz_spmm_conv_f32(W', ...) over dout: no dcol buffer, no col2im.
 * When W^T's blocks (tr: c x r) divide IC and OC, each is a whole block of W' with the same
 * values in the same layout: nnz_spmat_turned_build puts W' in out->mat.fwd (out->mat.tr stays
 * empty) and in src[j] the tr block that W' block j copies; nnz_spmat_turned_load refreshes the
 * values from W->tr (after nnz_spmat_load_values). NNZ_ERR_UNSUPPORTED when a block would
 * straddle two taps (c does not divide IC, or r not OC); NNZ_ERR_INVALID_ARG when W's column
 * count is not taps*IC; NNZ_ERR_NOMEM. On failure *out is empty (safe to free). */
typedef struct {
    nnz_spmat mat;
    int32_t *src;
} nnz_spmat_turned;
nnz_status nnz_spmat_turned_build(const nnz_spmat *W, int taps, int IC, nnz_spmat_turned *out);
void nnz_spmat_turned_load(const nnz_spmat *W, nnz_spmat_turned *t);
void nnz_spmat_turned_free(nnz_spmat_turned *t);
/* ---- sparse kernels (bf16: bf16 weights and activations, fp32 accumulation and output) ----
 * The forward SpMM and backward-data of the fp32 section above, with bf16 operands:
 *   forward:        out(M,rows) = base + X(M,cols) * W^T,   base = (accumulate ? out : 0) + bias
 *   backward-data:  dX(M,cols)  = (accumulate ? dX : 0) + dout(M,rows) * W         (uses tr)
 * Every product is of two bf16 values (exact in fp32) and the sums are fp32. Same contract as
 * fp32 for bias, ld*, accumulate (overwrite ignores NaNs in out), M = 0, empty block rows,
 * padded positions (never read from or written to the caller's arrays), threads (OpenMP over
 * (row item, group of block rows); each output element is one fixed-order sum by one thread:
 * results do not depend on the thread count).
 *
 * Values: nnz_spmat_pack_bf16 fills val_bf16 of both orientations from val (rounded to
 * nearest even), PRE-PACKED IN VNNI PAIR ORDER along the block's columns: with
 * cp = c rounded up to even, block j of orientation A holds
 *   W[br*r + i][idx[j]*c + kk] = val_bf16[j*r*cp + (kk/2)*r*2 + i*2 + kk%2]
 * (padding, and the odd partner when c is odd, is 0). So one k-pair of a block is r 32-bit
 * words: r/16 zmm operands of vdpbf16ps; and for r = 16, c = 32 the block IS one AMX B tile
 * (16 pair-rows x 16 outputs x 2, row stride 64 bytes; r = 32: two tiles, row stride 128).
 * nnz_spmat_load_values refreshes val_bf16 when it is there.
 *
 * Order of the sums: for each output, every path adds the products in block-list order and,
 * inside a block, pair by pair in k order, rounding each fp32 add, then computes base + sum.
 * Inside a pair the reference and the AMX emulation add the even element first (as
 * tdpbf16ps); vdpbf16ps adds the pair in its own order (see nnz_gemm_bf16_avx512bf16). So
 * the AMX emulation equals the reference bit for bit on normal numbers, and every path is
 * within the fp32 summation bound of it; vdpbf16ps and tdpbf16ps also treat denormals as
 * zero (inputs, accumulator, results).
 * Paths (nnz_spmm_bf16_path_for picks, for one orientation on the active ISA, the first that
 * applies; NNZ_ISA forces the ISA):
 *   AMX:           r in {16, 32}, c = 32, when nnz_isa_active() is amx: per 64-row item, X's
 *                  rows are copied to a zero-padded bf16 scratch (rows to a multiple of 16,
 *                  columns to bcols*32; not when X is bf16, cols a multiple of 32 and the
 *                  item's rows a multiple of 16: the tiles then load from X), and for each block row up to 4 (r = 16) or 2 (r = 32)
 *                  16-row groups of m accumulate in C tiles: per block one B tile load (two
 *                  for r = 32) shared by the groups' A tile loads (16 m x 32 k of the
 *                  scratch) and tdpbf16ps.
 *   AMX_EMULATED:  the same packing, loops and strides with nnz_bf16_tile_dp_emulated in
 *                  place of the tile instructions (how machines without AMX test the path;
 *                  never chosen by the dispatcher).
 *   AVX512BF16:    c even (every BSR block; not CSR), isa >= avx512bf16: per 48-row item the
 *                  rows of X are copied to a zero-padded bf16 scratch, then an MT x r register
 *                  tile per block row (MT = 12 for r <= 16, 6 for r = 32): per k-pair, r/16
 *                  loads of W (r < 16: one masked load) and one broadcast 32-bit pair of X
 *                  per row, vdpbf16ps.
 *   REF:           everything else (CSR, and the ref/avx2/avx512 ISAs): single-threaded.
 * X may be bf16 or fp32 (the _f32in entry points: each value rounded to nearest even bf16 as
 * it is read, the same numbers as converting first; the SIMD paths convert while copying to
 * their scratch).
 * Return NNZ_ERR_INVALID_ARG if val_bf16 was not packed, NNZ_ERR_NOMEM if the per-thread
 * scratch cannot be allocated (outputs then undefined). */
nnz_status nnz_spmat_pack_bf16(nnz_spmat *s);
/* element `at` of a bf16 source as fp32 (fp32 sources rounded to nearest even bf16) */
static inline float nnz_bf16_src_at(const nnz_bf16_src *s, int64_t at) {
    return s->f32 ? nnz_bf16_round(((const float *)s->p)[at]) : nnz_bf16_to_f32(((const nnz_bf16 *)s->p)[at]);
}
typedef enum {
    NNZ_SPMM_BF16_REF,
    NNZ_SPMM_BF16_AVX512BF16,
    NNZ_SPMM_BF16_AMX,
    NNZ_SPMM_BF16_AMX_EMULATED,
    NNZ_SPMM_BF16_PATHS
} nnz_spmm_bf16_path;
const char *nnz_spmm_bf16_path_name(nnz_spmm_bf16_path p);
nnz_spmm_bf16_path nnz_spmm_bf16_path_for(const nnz_bsr *A);
/* whether path p can run orientation A on this CPU (REF and AMX_EMULATED: always when packed) */
bool nnz_spmm_bf16_path_applies(nnz_spmm_bf16_path p, const nnz_bsr *A);
nnz_status nnz_spmm_bf16(const nnz_spmat *W, int64_t M, const nnz_bf16 *X, int64_t ldx, const float *bias,
                         bool accumulate, float *out, int64_t ldo);
nnz_status nnz_spmm_bf16_f32in(const nnz_spmat *W, int64_t M, const float *X, int64_t ldx, const float *bias,
                               bool accumulate, float *out, int64_t ldo);
nnz_status nnz_spmm_bwd_data_bf16(const nnz_spmat *W, int64_t M, const nnz_bf16 *dout, int64_t ldd,
                                  bool accumulate, float *dX, int64_t ldx);
nnz_status nnz_spmm_bwd_data_bf16_f32in(const nnz_spmat *W, int64_t M, const float *dout, int64_t ldd,
                                        bool accumulate, float *dX, int64_t ldx);
/* One orientation on a forced path (tests, benchmarks): NNZ_ERR_UNSUPPORTED with a message
 * when !nnz_spmm_bf16_path_applies(p, A). X: X->trans must be false. */
nnz_status nnz_spmm_bf16_via(nnz_spmm_bf16_path p, const nnz_bsr *A, int64_t M, const nnz_bf16_src *X,
                             const float *bias, bool accumulate, float *out, int64_t ldo);
/* The oracle: one orientation, plain loops, single-threaded, fp32 sums in the order above
 * (no denormal flushing). */
void nnz_spmm_bsr_bf16_ref(const nnz_bsr *A, int64_t M, const nnz_bf16_src *X, const float *bias,
                           bool accumulate, float *out, int64_t ldo);
/* The per-item kernels (single-threaded; the dispatcher owns threads and scratch): rows
 * [m0, m0+mrows) of X (mrows <= the path's item rows: 48, AMX 64), block rows [br0, br1).
 * xs: scratch of (item rows) x nnz_spmm_bf16_scratch_ld(A) bf16 (stage_x: X's rows [m0, m0+mrows)
 * as bf16, zero past cols up to the row stride and in rows [mrows, rows_pad)). */
int64_t nnz_spmm_bf16_scratch_ld(const nnz_bsr *A);
void nnz_spmm_bf16_stage_x(const nnz_bsr *A, const nnz_bf16_src *X, int64_t m0, int mrows, int rows_pad,
                           nnz_bf16 *xs);
void nnz_spmm_bsr_bf16_avx512bf16(const nnz_bsr *A, int64_t m0, int mrows, int br0, int br1,
                                  const nnz_bf16_src *X, const float *bias, bool accumulate, float *out,
                                  int64_t ldo, nnz_bf16 *xs);
void nnz_spmm_bsr_bf16_amx(const nnz_bsr *A, int64_t m0, int mrows, int br0, int br1, const nnz_bf16_src *X,
                           const float *bias, bool accumulate, float *out, int64_t ldo, nnz_bf16 *xs);
void nnz_spmm_bsr_bf16_amx_emulated(const nnz_bsr *A, int64_t m0, int mrows, int br0, int br1,
                                    const nnz_bf16_src *X, const float *bias, bool accumulate, float *out,
                                    int64_t ldo, nnz_bf16 *xs);
/* ---- SDDMM with bf16 inputs (the weight gradient at the kept blocks, fp32 accumulation) ----
 * The backward-weight product of the fp32 section, with bf16 operands:
 *   dval[kept positions] (+)= sum_m dout(m,row) * X(m,col)   (fwd layout, as nnz_sddmm_f32)
 * dout (M, rows) with ldd and X (M, cols) with ldx, row-major; bf16, or fp32 (the _f32in entry
 * points: each value rounded to nearest even bf16 as it is read, the same numbers as
 * converting first). dval: nnz_spmat_val_count floats in fwd's layout (column-major inside a
 * block: position (i, kk) of block j at j*r*c + kk*r + i): every in-bounds position of every
 * kept block is updated, masked-out ones included (the layer applies its mask); padded
 * positions are neither read nor written. val and val_bf16 are not read (no packing needed).
 * Accumulation (beta = 1; there is no overwrite): each position's fp32 running sum STARTS at
 * dval's value,
 *   s = dval[v]; for m = 0 .. M-1: s += bf16(dout(m,i)) * bf16(X(m,k)); dval[v] = s
 * (each product exact in fp32, each add rounded), so dval = 0 gives the plain sum and a NaN in
 * dval stays. M = 0 or no blocks: dval untouched.
 * Pairs are along m, the reduction axis: (m, m+1) for even m (vdpbf16ps/tdpbf16ps take two
 * products per lane); M odd: the last pair's partner is 0. Order of the sums per position:
 *   REF, AMX_EMULATED: as written above (the emulated tile adds the even m first, as
 *     tdpbf16ps): bit for bit equal on normal numbers;
 *   AVX512BF16, AMX: in m order, the hardware's own order inside a pair;
 * so every path is within the fp32 summation bound of the reference; vdpbf16ps and tdpbf16ps
 * treat denormals as zero (inputs, dval, results).
 * Paths (nnz_sddmm_bf16_path_for picks the first that applies on the active ISA; NNZ_ISA forces
 * the ISA; the nnz_spmm_bf16_path names):
 *   AMX:           r in {16, 32}, c in {16, 32}, when nnz_isa_active() is amx. Per chunk of
 *                  256 rows of m, all threads stage X^T (xt: bcols*c rows of m, bf16) and dout
 *                  in m-pairs (dp: 128 pair-rows of brows*r*2 bf16); zero past cols, rows and
 *                  M. Then per block: C tiles (16 kk x 16 i, row stride r floats: the block's
 *                  own layout in dval) loaded from dval, per 32 m an A tile of xt (16 kk x 32
 *                  m) and a B tile of dp (16 pairs x 16 i x 2), tdpbf16ps, stored back; edge
 *                  blocks (past rows or cols) through a zero-padded copy of the block.
 *   AMX_EMULATED:  the same with nnz_bf16_tile_dp_emulated (tests; never chosen).
 *   AVX512BF16:    every BSR block (not CSR), isa >= avx512bf16. X and dout are both staged
 *                  in m-pairs (xp, dp; AVX-512, the rounding bit for bit nnz_bf16_from_f32's).
 *                  r >= 16: per block a KT x r/16 register tile (KT kk x 16 i per zmm, KT = 16
 *                  for r = 16, 8 for r = 32, c if smaller) loaded from dval; per pair r/16
 *                  loads of dp and one broadcast pair of xp per kk, vdpbf16ps. r < 16: vectors
 *                  over kk instead (c pairs of xp: one zmm, masked below 16; two for c = 32),
 *                  an r x c/16 tile gathered from dval, one broadcast pair of dp per i.
 *   REF:           CSR, and the ref/avx2/avx512 ISAs: plain loops, single-threaded.
 * Threads: OpenMP; per chunk the staging is split by column strips, then the block list by
 * equal ranges of blocks (nonzeros, not rows) over the threads; each position's chunk is one
 * thread's fixed-order sum: results do not depend on the thread count.
 * Return NNZ_ERR_NOMEM if the staging buffers cannot be allocated (dval then untouched),
 * NNZ_ERR_UNSUPPORTED (via) if the path cannot run A here. */
bool nnz_sddmm_bf16_path_applies(nnz_spmm_bf16_path p, const nnz_bsr *A);
nnz_spmm_bf16_path nnz_sddmm_bf16_path_for(const nnz_bsr *A);
nnz_status nnz_sddmm_bf16(const nnz_spmat *W, int64_t M, const nnz_bf16 *dout, int64_t ldd, const nnz_bf16 *X,
                          int64_t ldx, float *dval);
nnz_status nnz_sddmm_bf16_f32in(const nnz_spmat *W, int64_t M, const float *dout, int64_t ldd, const float *X,
                                int64_t ldx, float *dval);
/* fwd orientation A on a forced path (tests, benchmarks); dout, X: trans must be false */
nnz_status nnz_sddmm_bf16_via(nnz_spmm_bf16_path p, const nnz_bsr *A, int64_t M, const nnz_bf16_src *dout,
                              const nnz_bf16_src *X, float *dval);
/* At most the bytes one call allocates (its staging) for a (rows, cols) matrix, any block */
size_t nnz_sddmm_bf16_staging_bytes(int rows, int cols);
/* The oracle: plain loops, single-threaded, the order above, no denormal flushing. */
void nnz_sddmm_bsr_bf16_ref(const nnz_bsr *A, int64_t M, const nnz_bf16_src *dout, const nnz_bf16_src *X,
                            float *dval);
/* One staged chunk of m (the per-item kernels' input; the dispatcher stages and threads), bf16,
 * zero past cols, past rows and from the chunk's rows up to mpad (a multiple of 32):
 *   xt[k*ldt + m] = X(m0+m, k), k < bcols*c (AMX paths: the A tiles);
 *   xp[p*ldxp + k*2 + e] = X(m0+2p+e, k) (AVX512BF16: X in m-pairs);
 *   dp[p*ldp + i*2 + e] = dout(m0+2p+e, i), i < brows*r (every SIMD path). */
typedef struct {
    const nnz_bf16 *xt, *xp, *dp;
    int64_t ldt, ldxp, ldp;
    int mpad;
} nnz_sddmm_bf16_chunk;
/* pair-rows [p0, p1) of out (row p at out + p*ldo): out[p*ldo + i*2 + e] = src(m0+2p+e, i) as
 * bf16 for i < n, zero where 2p+e >= mrows; rounding as nnz_bf16_from_f32, bit for bit */
void nnz_sddmm_bf16_stage_pairs_avx512(const nnz_bf16_src *src, int64_t m0, int mrows, int p0, int p1, int n,
                                       nnz_bf16 *out, int64_t ldo);
/* The block row holding block j (j < the block count) */
int nnz_bsr_block_row_of(const nnz_bsr *A, int32_t j);
/* blocks [j0, j1) (any range, across block rows) += the chunk's products, in the orders above */
void nnz_sddmm_bsr_bf16_avx512bf16(const nnz_bsr *A, const nnz_sddmm_bf16_chunk *ch, int32_t j0, int32_t j1,
                                   float *dval);
void nnz_sddmm_bsr_bf16_amx(const nnz_bsr *A, const nnz_sddmm_bf16_chunk *ch, int32_t j0, int32_t j1, float *dval);
void nnz_sddmm_bsr_bf16_amx_emulated(const nnz_bsr *A, const nnz_sddmm_bf16_chunk *ch, int32_t j0, int32_t j1,
                                     float *dval);
/* AMX tile state for the calling thread (palette 1, 8 tiles of 16 rows x 64 bytes), shared
 * by the AMX GEMM and SpMM; only when nnz_isa_supported(NNZ_ISA_AMX). */
void nnz_amx_tiles_enter(void);
void nnz_amx_tiles_leave(void);
/* Block-row boundaries b[0..nparts] of nparts groups holding about the same number of blocks */
void nnz_bsr_split_by_blocks(const nnz_bsr *A, int nparts, int *b);

/* true when the active ISA has SIMD sparse kernels (AVX2 or AVX-512); false: the calls above
 * run the single-threaded references, and a layer should stay dense */
bool nnz_sparse_kernels_simd(void);
/* oracles: one orientation, plain loops, single-threaded, sums in block-list order */
void nnz_spmm_f32_ref(const nnz_bsr *A, int64_t M, const float *X, int64_t ldx, const float *bias, bool accumulate,
                      float *out, int64_t ldo);
void nnz_sddmm_f32_ref(const nnz_bsr *A, int64_t M, const float *dout, int64_t ldd, const float *X, int64_t ldx,
                       float *dval);
/* The SIMD pieces, each over rows [m0, m0+mrows) and block rows [br0, br1) of orientation A
 * (single-threaded; the dispatchers above own the threads; avx2 names mirror avx512).
 * tile (r >= 16): xs (NULL: read X in place) holds mrows * nnz_spmm_tile_scratch_ld(cols)
 *   floats; the item's rows of X are copied there first, an odd number of cache lines apart:
 *   X is then read once, sequentially (the prefetcher streams it; the block columns alone
 *   would not), and rows 4 KiB apart (K = 1024) no longer share one L1 set (measured: +30%
 *   at K = 1024, 2.5x on vgg8 conv4 at M = 6272).
 * panel (r < 16): mrows <= 64, xt scratch (bcols*c*64 floats), ot scratch ((br1-br0)*r*64).
 * csr_gather: CSR only, mrows <= 4, no scratch.
 * transpose_panel: t[k*64 + m] = src[(m0+m)*ld + k] for k in [k0, k1), m < 64; lanes
 *   m >= mrows are 0.
 * sddmm_blocks (r >= 16): blocks [j0, j1) (any range, across block rows) over the rows.
 * sddmm_panel (r < 16): the same over one 64-row panel given transposed: xt (bcols*c, 64),
 *   dt (brows*r, 64), zero-padded. */
static inline int64_t nnz_spmm_tile_scratch_ld(int cols) { return ((int64_t)(cols + 15) / 32) * 32 + 16; }
void nnz_spmm_tile_f32_avx512(const nnz_bsr *A, int64_t m0, int mrows, int br0, int br1, const float *X,
                              int64_t ldx, const float *bias, bool accumulate, float *out, int64_t ldo, float *xs);
void nnz_spmm_panel_f32_avx512(const nnz_bsr *A, int64_t m0, int mrows, int br0, int br1, const float *X,
                               int64_t ldx, const float *bias, bool accumulate, float *out, int64_t ldo, float *xt,
                               float *ot);
void nnz_spmm_csr_gather_f32_avx512(const nnz_bsr *A, int64_t m0, int mrows, int br0, int br1, const float *X,
                                    int64_t ldx, const float *bias, bool accumulate, float *out, int64_t ldo);
void nnz_transpose_panel_f32_avx512(const float *src, int64_t ld, int64_t m0, int mrows, int k0, int k1, float *t);
void nnz_sddmm_blocks_f32_avx512(const nnz_bsr *A, int64_t m0, int mrows, int32_t j0, int32_t j1, const float *dout,
                                 int64_t ldd, const float *X, int64_t ldx, float *dval);
void nnz_sddmm_panel_f32_avx512(const nnz_bsr *A, int32_t j0, int32_t j1, const float *xt, const float *dt,
                                float *dval);
void nnz_spmm_tile_f32_avx2(const nnz_bsr *A, int64_t m0, int mrows, int br0, int br1, const float *X, int64_t ldx,
                            const float *bias, bool accumulate, float *out, int64_t ldo, float *xs);
void nnz_spmm_panel_f32_avx2(const nnz_bsr *A, int64_t m0, int mrows, int br0, int br1, const float *X,
                             int64_t ldx, const float *bias, bool accumulate, float *out, int64_t ldo, float *xt,
                             float *ot);
void nnz_transpose_panel_f32_avx2(const float *src, int64_t ld, int64_t m0, int mrows, int k0, int k1, float *t);
void nnz_sddmm_blocks_f32_avx2(const nnz_bsr *A, int64_t m0, int mrows, int32_t j0, int32_t j1, const float *dout,
                               int64_t ldd, const float *X, int64_t ldx, float *dval);
void nnz_sddmm_panel_f32_avx2(const nnz_bsr *A, int32_t j0, int32_t j1, const float *xt, const float *dt,
                              float *dval);


/* ---- RBGP weights: W = (G_o (x) J_r (x) G_i (x) J_b) .* W, packed by the structure ----
 * docs/RBGP.md has the construction; src/sparse builds the graphs, this layer only reads
 * them. Geometry (all >= 1): J_b br x bc dense micro-block, G_i mi x ni (left degree dli),
 * J_r rr x rc, G_o mo x no (left degree dlo). Padded shape mo*rr*mi*br x no*rc*ni*bc covers
 * (rows, cols) with less than one micro-block to spare per side. core = mi*br x ni*bc, outer
 * tile = rr*mi*br x rc*ni*bc. go[R*dlo + a] (ascending in a) is outer row tile R's a-th outer
 * column tile; gi[ir*dli + b] (ascending) is inner micro-row ir's b-th micro-column.
 *
 * Micro-row g (rows [g*br, g*br+br)) has R = g / (rr*mi), ir = g mod mi, and exactly
 * nb = dlo*rc*dli kept micro-blocks, the same count for every micro-row, so no row pointers
 * and no column indices are stored: block t = (a*rc + q)*dli + b of micro-row g covers
 * columns go[R*dlo+a]*rc*ni*bc + q*ni*bc + gi[ir*dli+b]*bc + [0, bc), and its values are
 *   val[(g*nb + t)*br*bc + kk*br + i] = W[g*br + i][col0 + kk]      (column-major, as BSR)
 * Positions past (rows, cols) hold 0. Index bytes: the two adjacency arrays, nothing per block. */
typedef struct {
    int rows, cols;
    int br, bc, mi, ni, dli, rr, rc, mo, no, dlo;
} nnz_rbgp_geom;

typedef struct {
    nnz_rbgp_geom g;
    int32_t *go;  /* (mo*dlo) */
    int32_t *gi;  /* (mi*dli) */
    float *val;   /* (mo*rr*mi * dlo*rc*dli * br*bc), layout above */
} nnz_rbgp_mat;

/* Packs W (rows, cols) with ld ldw into *out (values at the structure's positions; W's values
 * elsewhere are ignored, i.e. the product is that of the RBGP-masked W). go/gi are copied.
 * INVALID_ARG (with a message, *out left empty) for sizes < 1, a padded shape that does not
 * cover (rows, cols) within one micro-block, a degree above its graph's side, an adjacency
 * entry out of range or not ascending, ldw < cols; NOMEM. */
nnz_status nnz_rbgp_mat_pack(const nnz_rbgp_geom *g, const int32_t *go, const int32_t *gi, const float *W,
                             int64_t ldw, nnz_rbgp_mat *out);
/* W (rows, cols), ld ldw: the packed values at their positions, zeros elsewhere. */
void nnz_rbgp_mat_to_dense(const nnz_rbgp_mat *A, float *W, int64_t ldw);
void nnz_rbgp_mat_free(nnz_rbgp_mat *A);
/* Bytes: values, and index (the two adjacency arrays as int32 + the 12-int geometry). */
int64_t nnz_rbgp_mat_value_bytes(const nnz_rbgp_mat *A);
int64_t nnz_rbgp_mat_index_bytes(const nnz_rbgp_mat *A);

/* Forward: out(M, rows) = base + X(M, cols) * W^T, base = (accumulate ? out : 0) + bias, the
 * contract of nnz_spmm_f32 (overwrite ignores NaNs in out; M = 0: nothing). Each output is one
 * fixed-order sum (over a, q, b, kk), so results do not depend on the thread count; the SIMD
 * paths sum in the same order as the reference, up to FMA contraction.
 * Dispatch (nnz_isa_active, NNZ_ISA honoured): avx512 and above -> _avx512, avx2 -> _avx2,
 * else _ref. SIMD algorithm: a 64-row panel of X transposed (m contiguous, as the BSR panel
 * kernel); then per outer row tile R, per micro-row (br rows, in chunks of 8/4/2/1 rows) and
 * 64-lane group, the partial sums stay in registers over the dlo*rc*dli micro-blocks: for
 * each G_o neighbour a of R (dlo offsets, one per outer tile), each repeat q and each of the
 * dli G_i neighbours of the micro-row (read once per micro-row and tile, L1), bc columns of
 * br broadcasts of W times 64-lane rows of the panel; micro-blocks run dense (bc = 4 is
 * unrolled), no index is read per block, values stream in order. The item's rows x 64 sums
 * (ot) then go back to out, transposed 64 rows at a time, with the base.
 * br = 16 instead: no transposes; the item's rows of X are copied an odd number of cache lines
 * apart (as the BSR tile kernel) and each micro-row runs as a register tile of 12 (AVX2: 6)
 * rows of X x 16 outputs, 16-wide columns of W times broadcasts of X, over the same offsets.
 * Threads: items = (64-row panel, range of outer row tiles); G_o is row-regular, so equal
 * ranges are equal work.  * NOMEM if the scratch cannot be allocated. */
nnz_status nnz_spmm_rbgp_f32(const nnz_rbgp_mat *A, int64_t M, const float *X, int64_t ldx, const float *bias,
                             bool accumulate, float *out, int64_t ldo);
void nnz_spmm_rbgp_f32_ref(const nnz_rbgp_mat *A, int64_t M, const float *X, int64_t ldx, const float *bias,
                           bool accumulate, float *out, int64_t ldo);
/* SIMD pieces (single-threaded): rows [m0, m0+mrows) (mrows <= 64), outer row tiles [R0, R1).
 * xt: max(no*rc*ni*bc, nnz_spmm_tile_scratch_ld(cols)) * 64 floats; ot: (R1-R0)*rr*mi*br * 64
 * floats; tt: 64 * 64 floats followed by mi*dlo*rc*dli int32 (an outer row tile's column offsets). */
void nnz_spmm_rbgp_panel_f32_avx512(const nnz_rbgp_mat *A, int64_t m0, int mrows, int R0, int R1, const float *X,
                                    int64_t ldx, const float *bias, bool accumulate, float *out, int64_t ldo,
                                    float *xt, float *ot, float *tt);
void nnz_spmm_rbgp_panel_f32_avx2(const nnz_rbgp_mat *A, int64_t m0, int mrows, int R0, int R1, const float *X,
                                  int64_t ldx, const float *bias, bool accumulate, float *out, int64_t ldo,
                                  float *xt, float *ot, float *tt);

#endif
