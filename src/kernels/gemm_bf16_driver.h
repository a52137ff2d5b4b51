/* The blocked bf16 GEMM driver shared by the avx512bf16 and AMX paths (private to the
 * gemm_bf16*.c files; the packing layouts are in kernels.h).
 *
 * BLIS loop order: for each NC block of columns, for each KC block of K: pack op(B)
 * (kc x nc) into NR-column VNNI panels shared by all threads; then every thread takes
 * (MC rows x a run of NR panels) tasks, packs its MC rows of op(A) into MR-row panels
 * in its own buffer and calls the micro-kernel on each MR x NR micro-tile (ir innermost,
 * so one B micro-panel stays in L1 while A's block stays in L2). A product of one M block (a
 * weight gradient) has one reader per B panel: each thread packs its own panels and the team
 * meets only between NC blocks (run_own_panels).
 * Each C element is computed by one micro-kernel call per KC block, over the same packed
 * numbers in the same order, whatever the thread count or task split: deterministic.
 *
 * A product with few tasks (a weight gradient: M = OC and N = a few taps or channels, K = the
 * batch's pixels) would run on one thread. Then K is split into groups (a number that depends
 * on the shape only), each group runs the loops above on one thread into its own partial
 * (alpha * A_g * B_g), and C = beta * C + the partials added in group order: still
 * deterministic and independent of the thread count. */
#ifndef NNZ_GEMM_BF16_DRIVER_H
#define NNZ_GEMM_BF16_DRIVER_H

#include "kernels/kernels.h"

/* C(mr,nr) (leading dimension ldc) = alpha * Ap*Bp + beta * C, beta = 0 overwriting
 * (C not read). Ap: an MR-row panel, Bp: an NR-column panel, both kc_pad deep; rows >= mr
 * and columns >= nr of the micro-tile are computed on zero padding and not stored. */
typedef void (*nnz_bf16_ukr)(int kc_pad, const nnz_bf16 *Ap, const nnz_bf16 *Bp, float *C, int64_t ldc, int mr,
                             int nr, float alpha, float beta);

/* The same over A read in place: MR rows of a stored bf16 matrix at row stride lda (elements),
 * kc_pad columns (no padding: the driver packs a K block that needs it). */
typedef void (*nnz_bf16_ukr_lda)(int kc_pad, const nnz_bf16 *A, int64_t lda, const nnz_bf16 *Bp, float *C,
                                 int64_t ldc, int mr, int nr, float alpha, float beta);
typedef struct {
    int MR, NR, KB;              /* micro-tile; A's k-block (kc_pad is a multiple of KB; KB even) */
    int KC, MC, NC;              /* cache blocks: KC a multiple of KB, MC of MR, NC of NR */
    nnz_bf16_ukr ukr;
    nnz_bf16_ukr_lda ukr_lda;    /* may be NULL: A is always packed */
    void (*thread_enter)(void);  /* per thread, before its first micro-kernel (may be NULL) */
    void (*thread_leave)(void);
} nnz_bf16_kernel;

/* C (M,N) = alpha * op(A) op(B) + beta * C over two operand descriptions (nnz_bf16_src: a
 * stored matrix, or the im2col of an NHWC batch). false (C untouched) when the packing buffers
 * cannot be allocated. M, N, K >= 1. */
bool nnz_gemm_bf16_blocked(const nnz_bf16_kernel *kern, int M, int N, int K, float alpha, const nnz_bf16_src *A,
                           const nnz_bf16_src *B, float beta, float *C, int ldc);

/* At most the bytes nnz_gemm_bf16_blocked allocates with kern on `threads` threads (packing
 * buffers, or a split K's partials and per-thread buffers). */
size_t nnz_gemm_bf16_blocked_bytes(const nnz_bf16_kernel *kern, int threads);

#endif
