/* SDDMM with bf16 inputs (the weight gradient at the kept blocks, fp32 sums): the reference,
 * the staging of a chunk of m, the path choice and the threading. Contract in kernels.h
 * ("SDDMM with bf16 inputs"); the per-item kernels are in sparse_sddmm_bf16_avx512bf16.c and
 * sparse_sddmm_bf16_amx.c. */
#include "kernels/kernels.h"

#include <omp.h>
#include <string.h>

#define SDB_PARALLEL_MIN ((int64_t)1 << 16) /* multiply-adds; below this one thread is faster */
#define SDB_ITEMS_PER_THREAD 4
#define SDB_ROWS 256  /* rows of m per staged chunk (8 AMX k-steps of 32) */
#define SDB_LDT (SDB_ROWS + 32) /* xt row stride: 576 bytes, an odd number of cache lines */
#define SDB_STRIP 64  /* columns of X per transposing task (AMX) */
#define SDB_PAIR_GROUP 8 /* pair-rows per pair-staging task (divides 16: mpad/2 is a multiple of 16) */

void nnz_sddmm_bsr_bf16_ref(const nnz_bsr *A, int64_t M, const nnz_bf16_src *dout, const nnz_bf16_src *X,
                            float *dval) {
    const int r = A->r, c = A->c;
    for (int br = 0; br < A->brows; br++)
        for (int32_t j = A->ptr[br]; j < A->ptr[br + 1]; j++)
            for (int kk = 0; kk < c; kk++)
                for (int ii = 0; ii < r; ii++) {
                    const int i = br * r + ii, k = A->idx[j] * c + kk;
                    if (i >= A->rows || k >= A->cols) continue;
                    float *v = dval + (int64_t)j * r * c + kk * r + ii;
                    float s = *v;
                    for (int64_t m = 0; m < M; m++) /* exact product, one rounded add */
                        s += nnz_bf16_src_at(dout, m * dout->ld + i) * nnz_bf16_src_at(X, m * X->ld + k);
                    *v = s;
                }
}

int nnz_bsr_block_row_of(const nnz_bsr *A, int32_t j) {
    int lo = 0, hi = A->brows - 1; /* the last br with ptr[br] <= j */
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (A->ptr[mid] <= j) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

static bool amx_shape(const nnz_bsr *A) { return (A->r == 16 || A->r == 32) && (A->c == 16 || A->c == 32); }

bool nnz_sddmm_bf16_path_applies(nnz_spmm_bf16_path p, const nnz_bsr *A) {
    switch (p) {
    case NNZ_SPMM_BF16_REF: return true;
    case NNZ_SPMM_BF16_AVX512BF16:
        return !(A->r == 1 && A->c == 1) && nnz_isa_active() >= NNZ_ISA_AVX512BF16;
    case NNZ_SPMM_BF16_AMX: return amx_shape(A) && nnz_isa_active() >= NNZ_ISA_AMX;
    case NNZ_SPMM_BF16_AMX_EMULATED: return amx_shape(A);
    default: return false;
    }
}

nnz_spmm_bf16_path nnz_sddmm_bf16_path_for(const nnz_bsr *A) {
    if (nnz_sddmm_bf16_path_applies(NNZ_SPMM_BF16_AMX, A)) return NNZ_SPMM_BF16_AMX;
    if (nnz_sddmm_bf16_path_applies(NNZ_SPMM_BF16_AVX512BF16, A)) return NNZ_SPMM_BF16_AVX512BF16;
    return NNZ_SPMM_BF16_REF;
}

/* t[k*ldt + m] = src(m0+m, k) as bf16 for k in [k0, k1), m < mrows; zero for m in [mrows, mpad) */
static void stage_transposed(const nnz_bf16_src *src, int64_t m0, int mrows, int mpad, int k0, int k1, nnz_bf16 *t) {
    for (int m = 0; m < mrows; m++) {
        if (src->f32) {
            const float *row = (const float *)src->p + (m0 + m) * src->ld;
            for (int k = k0; k < k1; k++) t[(int64_t)k * SDB_LDT + m] = nnz_bf16_from_f32(row[k]);
        } else {
            const nnz_bf16 *row = (const nnz_bf16 *)src->p + (m0 + m) * src->ld;
            for (int k = k0; k < k1; k++) t[(int64_t)k * SDB_LDT + m] = row[k];
        }
    }
    for (int k = k0; k < k1; k++) memset(t + (int64_t)k * SDB_LDT + mrows, 0, (size_t)(mpad - mrows) * sizeof(nnz_bf16));
}

/* pair-rows [p0, p1) of out (row p at out + p*ldo): out[p*ldo + i*2 + e] = src(m0+2p+e, i) as
 * bf16 for i < n, zero where 2p+e >= mrows (nnz_sddmm_bf16_stage_pairs_avx512 in plain C) */
static void stage_pairs(const nnz_bf16_src *src, int64_t m0, int mrows, int p0, int p1, int n, nnz_bf16 *out,
                        int64_t ldo) {
    for (int m = 2 * p0; m < 2 * p1; m++) {
        nnz_bf16 *o = out + (int64_t)(m / 2) * ldo + m % 2;
        if (m >= mrows) {
            for (int i = 0; i < n; i++) o[i * 2] = 0;
        } else if (src->f32) {
            const float *row = (const float *)src->p + (m0 + m) * src->ld;
            for (int i = 0; i < n; i++) o[i * 2] = nnz_bf16_from_f32(row[i]);
        } else {
            const nnz_bf16 *row = (const nnz_bf16 *)src->p + (m0 + m) * src->ld;
            for (int i = 0; i < n; i++) o[i * 2] = row[i];
        }
    }
}

size_t nnz_sddmm_bf16_staging_bytes(int rows, int cols) {
    const size_t kp = (size_t)cols + 32, np = (size_t)rows + 32; /* padded to the largest block */
    const size_t x = kp * SDB_LDT > (SDB_ROWS / 2) * (kp * 2 + 32) ? kp * SDB_LDT : (SDB_ROWS / 2) * (kp * 2 + 32);
    return (x + (SDB_ROWS / 2) * (np * 2 + 32) + 32) * sizeof(nnz_bf16);
}

typedef void (*sddmm_item)(const nnz_bsr *, const nnz_sddmm_bf16_chunk *, int32_t, int32_t, float *);

nnz_status nnz_sddmm_bf16_via(nnz_spmm_bf16_path path, const nnz_bsr *A, int64_t M, const nnz_bf16_src *dout,
                              const nnz_bf16_src *X, float *dval) {
    if (!nnz_sddmm_bf16_path_applies(path, A))
        return nnz_fail(NNZ_ERR_UNSUPPORTED, "bf16 SDDMM: path %s cannot run block %dx%d on ISA %s",
                        nnz_spmm_bf16_path_name(path), A->r, A->c, nnz_isa_name(nnz_isa_active()));
    if (path == NNZ_SPMM_BF16_REF) {
        nnz_sddmm_bsr_bf16_ref(A, M, dout, X, dval);
        return NNZ_OK;
    }
    const int32_t nb = A->ptr[A->brows];
    if (M <= 0 || nb == 0) return NNZ_OK;
    const sddmm_item kern = path == NNZ_SPMM_BF16_AMX            ? nnz_sddmm_bsr_bf16_amx
                            : path == NNZ_SPMM_BF16_AMX_EMULATED ? nnz_sddmm_bsr_bf16_amx_emulated
                                                                 : nnz_sddmm_bsr_bf16_avx512bf16;
    /* X transposed (AMX A tiles) or in m-pairs (vdpbf16ps); dout in m-pairs (both) */
    const bool amx = path != NNZ_SPMM_BF16_AVX512BF16;
    const bool simd_stage = nnz_isa_active() >= NNZ_ISA_AVX512;
    const int Kp = A->bcols * A->c, Np = A->brows * A->r;
    /* + 64 bytes per row: rows 4 KiB apart do not share an L1 set */
    const int64_t ldxp = (int64_t)Kp * 2 + 32, ldp = (int64_t)Np * 2 + 32;
    const size_t x_elems = amx ? (size_t)Kp * SDB_LDT : (size_t)(SDB_ROWS / 2) * ldxp;
    const size_t d_elems = (size_t)(SDB_ROWS / 2) * ldp;
    nnz_bf16 *buf = nnz_alloc((x_elems + d_elems + 32) * sizeof(nnz_bf16), "bf16 sddmm staging");
    if (!buf) return NNZ_ERR_NOMEM;
    nnz_bf16 *xs = buf, *dd = buf + x_elems;
    /* what the kernels read and the staging never writes, zeroed once: X^T's rows past cols;
     * the pair-rows' columns past cols (xp) and rows (dp) */
    if (amx) memset(xs + (size_t)A->cols * SDB_LDT, 0, (size_t)(Kp - A->cols) * SDB_LDT * sizeof(nnz_bf16));
    for (int p = 0; p < SDB_ROWS / 2; p++) {
        if (!amx) memset(xs + p * ldxp + 2 * A->cols, 0, (size_t)(Kp - A->cols) * 2 * sizeof(nnz_bf16));
        memset(dd + p * ldp + 2 * A->rows, 0, (size_t)(Np - A->rows) * 2 * sizeof(nnz_bf16));
    }
    const int64_t work = (int64_t)nb * A->r * A->c * M;
    const int threads = work >= SDB_PARALLEL_MIN && !omp_in_parallel() ? nnz_threads() : 1;
    int64_t nitems = (int64_t)threads * SDB_ITEMS_PER_THREAD;
    if (threads == 1) nitems = 1;
    if (nitems > nb) nitems = nb;
    /* staging tasks per chunk: X^T by column strips (AMX), X in pair-rows (else), dout in pair-rows;
     * pair-rows are read as two whole rows of the source and written as one row */
    const int strips_x = (A->cols + SDB_STRIP - 1) / SDB_STRIP;
#pragma omp parallel num_threads(threads) /* no if clause: it leaks num_threads in libomp (conv_winograd.c) */
    {
        if (path == NNZ_SPMM_BF16_AMX) nnz_amx_tiles_enter();
        for (int64_t m0 = 0; m0 < M; m0 += SDB_ROWS) {
            const int mrows = (int)(M - m0 < SDB_ROWS ? M - m0 : SDB_ROWS), mpad = (mrows + 31) / 32 * 32;
            const int groups = mpad / 2 / SDB_PAIR_GROUP; /* of pair-rows */
            const int tasks_x = amx ? strips_x : groups;
#pragma omp for schedule(static)
            for (int s = 0; s < tasks_x + groups; s++) {
                if (s < tasks_x && amx) {
                    const int lo = s * SDB_STRIP, hi = lo + SDB_STRIP < A->cols ? lo + SDB_STRIP : A->cols;
                    stage_transposed(X, m0, mrows, mpad, lo, hi, xs);
                    continue;
                }
                const bool is_x = s < tasks_x;
                const int p0 = (is_x ? s : s - tasks_x) * SDB_PAIR_GROUP, p1 = p0 + SDB_PAIR_GROUP;
                const nnz_bf16_src *src = is_x ? X : dout;
                const int n = is_x ? A->cols : A->rows;
                nnz_bf16 *out = is_x ? xs : dd;
                const int64_t ldo = is_x ? ldxp : ldp;
                if (simd_stage) nnz_sddmm_bf16_stage_pairs_avx512(src, m0, mrows, p0, p1, n, out, ldo);
                else stage_pairs(src, m0, mrows, p0, p1, n, out, ldo);
            }
            const nnz_sddmm_bf16_chunk ch = {amx ? xs : NULL, amx ? NULL : xs, dd, SDB_LDT, ldxp, ldp, mpad};
#pragma omp for schedule(dynamic, 1)
            for (int64_t it = 0; it < nitems; it++)
                kern(A, &ch, (int32_t)(nb * it / nitems), (int32_t)(nb * (it + 1) / nitems), dval);
        }
        if (path == NNZ_SPMM_BF16_AMX) nnz_amx_tiles_leave();
    }
    nnz_free(buf);
    return NNZ_OK;
}

static nnz_status sddmm_auto(const nnz_spmat *W, int64_t M, const void *dout, int64_t ldd, const void *X, int64_t ldx,
                             bool f32, float *dval) {
    const nnz_bf16_src d = {.p = dout, .ld = ldd, .trans = false, .f32 = f32}, x = {.p = X, .ld = ldx, .trans = false, .f32 = f32};
    return nnz_sddmm_bf16_via(nnz_sddmm_bf16_path_for(&W->fwd), &W->fwd, M, &d, &x, dval);
}

nnz_status nnz_sddmm_bf16(const nnz_spmat *W, int64_t M, const nnz_bf16 *dout, int64_t ldd, const nnz_bf16 *X,
                          int64_t ldx, float *dval) {
    return sddmm_auto(W, M, dout, ldd, X, ldx, false, dval);
}

nnz_status nnz_sddmm_bf16_f32in(const nnz_spmat *W, int64_t M, const float *dout, int64_t ldd, const float *X,
                                int64_t ldx, float *dval) {
    return sddmm_auto(W, M, dout, ldd, X, ldx, true, dval);
}
