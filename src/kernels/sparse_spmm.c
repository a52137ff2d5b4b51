/* Sparse x dense kernels (fp32): the references, the dispatch, and the threading (work split
 * by blocks, not rows). Contract in kernels.h ("sparse kernels (fp32)"). */
#include "kernels/kernels.h"

#include <omp.h>
#include <string.h>

#define SP_PARALLEL_MIN ((int64_t)1 << 16) /* multiply-adds; below this one thread is faster */
#define SP_TILE_ROWS 48                    /* rows of X per item, register-tile kernel (4 tiles of 12) */
#define SP_PANEL_ROWS 64                   /* rows of X per item, transposed-panel kernel */
#define SP_GATHER_MAX_ROWS 4               /* CSR with M <= this: the gather kernel */
#define SP_ITEMS_PER_THREAD 4
#define SP_MAX_PARTS 1024
#define SP_SDDMM_ROWS 128                  /* rows of the m reduction per pass: X, dout chunk stay in L2 */
#define SP_SDDMM_CONV_FLOATS (1 << 17)     /* nnz_sddmm_conv_f32: one chunk's im2col rows, 512 KB (in L2) */
#define SP_SDDMM_SLOTS 8                   /* nnz_sddmm_conv_f32: fixed partial sums, whatever the threads */

void nnz_spmm_f32_ref(const nnz_bsr *A, int64_t M, const float *X, int64_t ldx, const float *bias, bool accumulate,
                      float *out, int64_t ldo) {
    const int r = A->r, c = A->c;
    for (int64_t m = 0; m < M; m++)
        for (int i = 0; i < A->rows; i++) {
            const int br = i / r, ii = i % r;
            float s = 0.0f;
            for (int32_t j = A->ptr[br]; j < A->ptr[br + 1]; j++)
                for (int kk = 0; kk < c; kk++) {
                    const int k = A->idx[j] * c + kk;
                    if (k < A->cols) s += A->val[(int64_t)j * r * c + kk * r + ii] * X[m * ldx + k];
                }
            const float base = (accumulate ? out[m * ldo + i] : 0.0f) + (bias ? bias[i] : 0.0f);
            out[m * ldo + i] = base + s;
        }
}

void nnz_sddmm_f32_ref(const nnz_bsr *A, int64_t M, const float *dout, int64_t ldd, const float *X, int64_t ldx,
                       float *dval) {
    const int r = A->r, c = A->c;
    for (int br = 0; br < A->brows; br++)
        for (int32_t j = A->ptr[br]; j < A->ptr[br + 1]; j++)
            for (int kk = 0; kk < c; kk++)
                for (int ii = 0; ii < r; ii++) {
                    const int i = br * r + ii, k = A->idx[j] * c + kk;
                    if (i >= A->rows || k >= A->cols) continue;
                    double s = 0.0;
                    for (int64_t m = 0; m < M; m++) s += (double)dout[m * ldd + i] * (double)X[m * ldx + k];
                    dval[(int64_t)j * r * c + kk * r + ii] += (float)s;
                }
}

/* The SIMD kernels of one ISA; NULL table: the reference. */
typedef struct {
    void (*tile)(const nnz_bsr *, int64_t, int, int, int, const float *, int64_t, const float *, bool, float *,
                 int64_t, float *);
    void (*panel)(const nnz_bsr *, int64_t, int, int, int, const float *, int64_t, const float *, bool, float *,
                  int64_t, float *, float *);
    void (*transpose)(const float *, int64_t, int64_t, int, int, int, float *);
    void (*sddmm_blocks)(const nnz_bsr *, int64_t, int, int32_t, int32_t, const float *, int64_t, const float *,
                         int64_t, float *);
    void (*sddmm_panel)(const nnz_bsr *, int32_t, int32_t, const float *, const float *, float *);
    /* CSR with few rows of X (NULL: the panel kernel) */
    void (*csr_gather)(const nnz_bsr *, int64_t, int, int, int, const float *, int64_t, const float *, bool, float *,
                       int64_t);
} sparse_kernels;

static const sparse_kernels *simd_kernels(void) {
#if defined(__x86_64__)
    static const sparse_kernels avx512 = {nnz_spmm_tile_f32_avx512, nnz_spmm_panel_f32_avx512,
                                          nnz_transpose_panel_f32_avx512, nnz_sddmm_blocks_f32_avx512,
                                          nnz_sddmm_panel_f32_avx512, nnz_spmm_csr_gather_f32_avx512};
    static const sparse_kernels avx2 = {nnz_spmm_tile_f32_avx2, nnz_spmm_panel_f32_avx2,
                                        nnz_transpose_panel_f32_avx2, nnz_sddmm_blocks_f32_avx2,
                                        nnz_sddmm_panel_f32_avx2, NULL};
    const nnz_isa isa = nnz_isa_active();
    if (isa >= NNZ_ISA_AVX512) return &avx512;
    if (isa == NNZ_ISA_AVX2) return &avx2;
#endif
    return NULL;
}

bool nnz_sparse_kernels_simd(void) { return simd_kernels() != NULL; }

/* Block-row boundaries of nparts groups holding about nblocks/nparts blocks each: part p is
 * block rows [b[p], b[p+1]); every block row (empty ones too) is in exactly one part. */
void nnz_bsr_split_by_blocks(const nnz_bsr *A, int nparts, int *b) {
    const int64_t nb = A->ptr[A->brows];
    b[0] = 0;
    int br = 0;
    for (int p = 1; p < nparts; p++) {
        const int64_t want = nb * p / nparts;
        while (br < A->brows && A->ptr[br] < want) br++;
        b[p] = br;
    }
    b[nparts] = A->brows;
}

/* where the rows of X come from: X itself, or (img != NULL) the im2col rows of a convolution's input */
typedef struct {
    const nnz_conv_window *g;
    int C;
    const float *img;
} conv_rows;

static nnz_status spmm_orient(const nnz_bsr *A, int64_t M, const float *X, int64_t ldx, const conv_rows *conv,
                              const float *bias, bool accumulate, float *out, int64_t ldo) {
    const sparse_kernels *kern = simd_kernels();
    if (conv && (!kern || A->r < 16)) return NNZ_ERR_UNSUPPORTED;
    if (!kern) {
        nnz_spmm_f32_ref(A, M, X, ldx, bias, accumulate, out, ldo);
        return NNZ_OK;
    }
    if (M <= 0 || A->rows <= 0) return NNZ_OK;
    /* r-wide W vectors; CSR with a handful of rows: gathers from X's rows (a 64-row panel would
     * be mostly padding); else the transposed panel */
    const bool tile = A->r >= 16;
    const bool gather = !tile && kern->csr_gather && A->r == 1 && A->c == 1 && M <= SP_GATHER_MAX_ROWS;
    const bool copy_x = tile; /* see nnz_spmm_tile_scratch_ld */
    const int64_t item_rows = tile ? SP_TILE_ROWS : gather ? SP_GATHER_MAX_ROWS : SP_PANEL_ROWS;
    const int64_t mitems = (M + item_rows - 1) / item_rows;
    const int64_t work = (int64_t)A->ptr[A->brows] * A->r * A->c * M;
    const int threads = work >= SP_PARALLEL_MIN ? nnz_threads() : 1;
    int64_t want = ((int64_t)threads * SP_ITEMS_PER_THREAD + mitems - 1) / mitems;
    if (threads == 1) want = 1;
    if (want > A->brows) want = A->brows;
    if (want > SP_MAX_PARTS) want = SP_MAX_PARTS;
    const int nparts = want < 1 ? 1 : (int)want;
    int b[SP_MAX_PARTS + 1];
    nnz_bsr_split_by_blocks(A, nparts, b);
    int max_part_rows = 0;
    for (int p = 0; p < nparts; p++)
        if ((b[p + 1] - b[p]) * A->r > max_part_rows) max_part_rows = (b[p + 1] - b[p]) * A->r;
    const size_t xt_floats = (size_t)A->bcols * A->c * SP_PANEL_ROWS;
    const size_t ot_floats = (size_t)max_part_rows * SP_PANEL_ROWS;
    const int64_t items = mitems * nparts;
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
        float *xt = NULL, *ot = NULL;
        bool ok = true;
        if (tile && copy_x) {
            xt = nnz_alloc(((size_t)item_rows * nnz_spmm_tile_scratch_ld(A->cols) + 16) * sizeof(float),
                           "spmm tile scratch");
            ok = xt != NULL;
        } else if (!tile && !gather) {
            xt = nnz_alloc((xt_floats + 16) * sizeof(float), "spmm panel scratch");
            ot = nnz_alloc((ot_floats + 16) * sizeof(float), "spmm panel output scratch");
            ok = xt && ot;
        }
        if (nnz_omp_all_ok(ok, &failed)) {
#pragma omp for schedule(dynamic, 1)
            for (int64_t it = 0; it < items; it++) {
                const int64_t mi = it / nparts;
                const int p = (int)(it % nparts);
                const int64_t m0 = mi * item_rows;
                const int mrows = (int)(M - m0 < item_rows ? M - m0 : item_rows);
                if (tile && conv) { /* the item's im2col rows, built where the tile kernel would copy them */
                    const int64_t lds = nnz_spmm_tile_scratch_ld(A->cols);
                    nnz_im2col_rows_nhwc(conv->g, conv->C, conv->img, m0, mrows, xt, lds);
                    kern->tile(A, m0, mrows, b[p], b[p + 1], xt - m0 * lds, lds, bias, accumulate, out, ldo, NULL);
                } else if (tile) kern->tile(A, m0, mrows, b[p], b[p + 1], X, ldx, bias, accumulate, out, ldo, xt);
                else if (gather) kern->csr_gather(A, m0, mrows, b[p], b[p + 1], X, ldx, bias, accumulate, out, ldo);
                else kern->panel(A, m0, mrows, b[p], b[p + 1], X, ldx, bias, accumulate, out, ldo, xt, ot);
            }
        }
        nnz_free(xt);
        nnz_free(ot);
    }
    return failed ? NNZ_ERR_NOMEM : NNZ_OK;
}

nnz_status nnz_spmm_f32(const nnz_spmat *W, int64_t M, const float *X, int64_t ldx, const float *bias,
                        bool accumulate, float *out, int64_t ldo) {
    return spmm_orient(&W->fwd, M, X, ldx, NULL, bias, accumulate, out, ldo);
}

nnz_status nnz_spmm_conv_f32(const nnz_spmat *W, const nnz_conv_window *g, int N, int C, const float *img,
                             const float *bias, bool accumulate, float *out, int64_t ldo) {
    if ((int64_t)g->KH * g->KW * C != W->fwd.cols) return NNZ_ERR_INVALID_ARG;
    const conv_rows conv = {.g = g, .C = C, .img = img};
    return spmm_orient(&W->fwd, (int64_t)N * g->OH * g->OW, NULL, W->fwd.cols, &conv, bias, accumulate, out, ldo);
}

nnz_status nnz_spmm_bwd_data_f32(const nnz_spmat *W, int64_t M, const float *dout, int64_t ldd, bool accumulate,
                                 float *dX, int64_t ldx) {
    return spmm_orient(&W->tr, M, dout, ldd, NULL, NULL, accumulate, dX, ldx);
}

/* Items are equal ranges of blocks (blocks are independent here); each block's sum over m
 * runs in chunks in order, all by the thread that owns the block.
 * r >= 16: per chunk of SP_SDDMM_ROWS rows, straight from dout and X.
 * r < 16 (CSR too): per 64-row panel, dout and X are first transposed (by all threads, in
 * column strips) into zero-padded panels, then each kept position is one 64-long dot. */
nnz_status nnz_sddmm_f32(const nnz_spmat *W, int64_t M, const float *dout, int64_t ldd, const float *X, int64_t ldx,
                         float *dval) {
    const nnz_bsr *A = &W->fwd;
    const sparse_kernels *kern = simd_kernels();
    if (!kern) {
        nnz_sddmm_f32_ref(A, M, dout, ldd, X, ldx, dval);
        return NNZ_OK;
    }
    const int32_t nb = A->ptr[A->brows];
    if (M <= 0 || nb == 0) return NNZ_OK;
    const int64_t work = (int64_t)nb * A->r * A->c * M;
    const int threads = work >= SP_PARALLEL_MIN ? nnz_threads() : 1;
    int64_t nitems = (int64_t)threads * SP_ITEMS_PER_THREAD;
    if (nitems > nb) nitems = nb;
    if (A->r >= 16) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
        for (int64_t it = 0; it < nitems; it++) {
            const int32_t j0 = (int32_t)(nb * it / nitems), j1 = (int32_t)(nb * (it + 1) / nitems);
            for (int64_t m0 = 0; m0 < M; m0 += SP_SDDMM_ROWS) {
                const int mrows = (int)(M - m0 < SP_SDDMM_ROWS ? M - m0 : SP_SDDMM_ROWS);
                kern->sddmm_blocks(A, m0, mrows, j0, j1, dout, ldd, X, ldx, dval);
            }
        }
        return NNZ_OK;
    }
    const int Kp = A->bcols * A->c, Np = A->brows * A->r;
    float *xt = nnz_calloc(((size_t)Kp + Np) * SP_PANEL_ROWS * sizeof(float), "sddmm panels");
    if (!xt) return NNZ_ERR_NOMEM;
    float *dt = xt + (size_t)Kp * SP_PANEL_ROWS; /* rows past the matrix stay 0 */
    const int strips_x = (A->cols + 63) / 64, strips_d = (A->rows + 63) / 64;
#pragma omp parallel num_threads(threads)
    for (int64_t m0 = 0; m0 < M; m0 += SP_PANEL_ROWS) {
        const int mrows = (int)(M - m0 < SP_PANEL_ROWS ? M - m0 : SP_PANEL_ROWS);
#pragma omp for schedule(static)
        for (int s = 0; s < strips_x + strips_d; s++) {
            if (s < strips_x)
                kern->transpose(X, ldx, m0, mrows, s * 64, s * 64 + 64 < A->cols ? s * 64 + 64 : A->cols, xt);
            else {
                const int k0 = (s - strips_x) * 64;
                kern->transpose(dout, ldd, m0, mrows, k0, k0 + 64 < A->rows ? k0 + 64 : A->rows, dt);
            }
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < nitems; it++)
            kern->sddmm_panel(A, (int32_t)(nb * it / nitems), (int32_t)(nb * (it + 1) / nitems), xt, dt, dval);
    }
    nnz_free(xt);
    return NNZ_OK;
}

/* Items are SP_SDDMM_SLOTS fixed ranges of row chunks; each range's chunks are built (im2col rows,
 * in a per-thread buffer that stays in L2) and run over every block in order, into the range's
 * own partial values; the partials are then added to dval in slot order. One range (a small
 * M) adds straight into dval, as nnz_sddmm_f32. Each chunk's rows are built once: splitting by
 * blocks, as nnz_sddmm_f32 does, would make every thread build all of them. */
nnz_status nnz_sddmm_conv_f32(const nnz_spmat *W, const nnz_conv_window *g, int N, int C, const float *img,
                              const float *dout, int64_t ldd, float *dval) {
    const nnz_bsr *A = &W->fwd;
    const sparse_kernels *kern = simd_kernels();
    if ((int64_t)g->KH * g->KW * C != A->cols) return NNZ_ERR_INVALID_ARG;
    if (!kern || A->r < 16) return NNZ_ERR_UNSUPPORTED;
    const int32_t nb = A->ptr[A->brows];
    const int64_t M = (int64_t)N * g->OH * g->OW;
    if (M <= 0 || nb == 0) return NNZ_OK;
    const int64_t lds = nnz_spmm_tile_scratch_ld(A->cols);
    int64_t rows = SP_SDDMM_CONV_FLOATS / lds;
    rows = rows < 16 ? 16 : rows > SP_SDDMM_ROWS ? SP_SDDMM_ROWS : rows;
    const int64_t chunks = (M + rows - 1) / rows;
    const int slots = chunks < SP_SDDMM_SLOTS ? (int)chunks : SP_SDDMM_SLOTS;
    const size_t nval = (size_t)nnz_spmat_val_count(W);
    float *part = NULL;
    if (slots > 1 && !(part = nnz_calloc((size_t)slots * nval * sizeof(float), "sddmm partial sums")))
        return NNZ_ERR_NOMEM;
    const int64_t work = (int64_t)nb * A->r * A->c * M;
    const int threads = work >= SP_PARALLEL_MIN ? nnz_threads() : 1;
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
        float *xs = nnz_alloc(((size_t)rows * lds + 16) * sizeof(float), "sddmm im2col rows");
        if (nnz_omp_all_ok(xs != NULL, &failed)) {
#pragma omp for schedule(static)
            for (int sl = 0; sl < slots; sl++) {
                float *dst = slots > 1 ? part + (size_t)sl * nval : dval;
                for (int64_t ch = chunks * sl / slots; ch < chunks * (sl + 1) / slots; ch++) {
                    const int64_t m0 = ch * rows;
                    const int mrows = (int)(M - m0 < rows ? M - m0 : rows);
                    nnz_im2col_rows_nhwc(g, C, img, m0, mrows, xs, lds);
                    kern->sddmm_blocks(A, m0, mrows, 0, nb, dout, ldd, xs - m0 * lds, lds, dst);
                }
            }
        }
        nnz_free(xs);
    }
    if (part && !failed) {
#pragma omp parallel for schedule(static) num_threads(threads)
        for (size_t i = 0; i < nval; i++) {
            float s = 0.0f;
            for (int sl = 0; sl < slots; sl++) s += part[(size_t)sl * nval + i];
            dval[i] += s;
        }
    }
    nnz_free(part);
    return failed ? NNZ_ERR_NOMEM : NNZ_OK;
}
