/* Sparse x dense kernels with bf16 operands: the reference, staging of X, the path choice and
 * the threading (the fp32 kernels' split of block rows by block count). Contract in kernels.h
 * ("sparse kernels (bf16)"). */
#include "kernels/kernels.h"

#include <omp.h>
#include <string.h>

#define SPB_PARALLEL_MIN ((int64_t)1 << 16) /* multiply-adds; below this one thread is faster */
#define SPB_ITEMS_PER_THREAD 4
#define SPB_MAX_PARTS 1024
#define SPB_ROWS_AVX512BF16 48 /* rows of X per item: 4 register tiles of 12 */
#define SPB_ROWS_AMX 64        /* 4 groups of 16 (one A tile each) */

void nnz_spmm_bsr_bf16_ref(const nnz_bsr *A, int64_t M, const nnz_bf16_src *X, const float *bias,
                           bool accumulate, float *out, int64_t ldo) {
    const int r = A->r, c = A->c, cp = (c + 1) / 2 * 2;
    for (int64_t m = 0; m < M; m++)
        for (int i = 0; i < A->rows; i++) {
            const int br = i / r, ii = i % r;
            float s = 0.0f;
            for (int32_t j = A->ptr[br]; j < A->ptr[br + 1]; j++)
                for (int kk = 0; kk < c; kk++) {
                    const int k = A->idx[j] * c + kk;
                    if (k >= A->cols) break;
                    const float w = nnz_bf16_to_f32(A->val_bf16[(int64_t)j * r * cp + (kk / 2) * r * 2 + ii * 2 + kk % 2]);
                    s += w * nnz_bf16_src_at(X, m * X->ld + k); /* exact product, one rounded add */
                }
            const float base = (accumulate ? out[m * ldo + i] : 0.0f) + (bias ? bias[i] : 0.0f);
            out[m * ldo + i] = base + s;
        }
}

/* an odd number of 64-byte lines per row (see nnz_spmm_tile_scratch_ld): X is read once,
 * sequentially, and rows 4 KiB apart do not share one L1 set */
int64_t nnz_spmm_bf16_scratch_ld(const nnz_bsr *A) {
    const int64_t lines = ((int64_t)A->bcols * A->c + 31) / 32;
    return (lines | 1) * 32;
}

/* xs (rows_pad, ld) = rows [m0, m0+mrows) of X as bf16, zero past cols (to bcols*c) and past
 * mrows (to rows_pad): padded W positions then multiply zeros, never the caller's padding */
void nnz_spmm_bf16_stage_x(const nnz_bsr *A, const nnz_bf16_src *X, int64_t m0, int mrows, int rows_pad,
                           nnz_bf16 *xs) {
    const int64_t ld = nnz_spmm_bf16_scratch_ld(A);
    const int cols = A->cols;
    for (int m = 0; m < rows_pad; m++) {
        nnz_bf16 *o = xs + m * ld;
        if (m < mrows) {
            if (X->f32) nnz_cvt_f32_to_bf16_ref(cols, (const float *)X->p + (m0 + m) * X->ld, o);
            else memcpy(o, (const nnz_bf16 *)X->p + (m0 + m) * X->ld, (size_t)cols * sizeof(nnz_bf16));
            memset(o + cols, 0, (size_t)(ld - cols) * sizeof(nnz_bf16));
        } else {
            memset(o, 0, (size_t)ld * sizeof(nnz_bf16));
        }
    }
}

const char *nnz_spmm_bf16_path_name(nnz_spmm_bf16_path p) {
    static const char *const names[NNZ_SPMM_BF16_PATHS] = {"ref", "avx512bf16", "amx", "amx_emulated"};
    return (unsigned)p < NNZ_SPMM_BF16_PATHS ? names[p] : "?";
}

static bool amx_shape(const nnz_bsr *A) { return (A->r == 16 || A->r == 32) && A->c == 32; }

bool nnz_spmm_bf16_path_applies(nnz_spmm_bf16_path p, const nnz_bsr *A) {
    if (!A->val_bf16) return false;
    switch (p) {
    case NNZ_SPMM_BF16_REF: return true;
    case NNZ_SPMM_BF16_AVX512BF16:
        return A->c % 2 == 0 && nnz_isa_active() >= NNZ_ISA_AVX512BF16;
    case NNZ_SPMM_BF16_AMX: return amx_shape(A) && nnz_isa_active() >= NNZ_ISA_AMX;
    case NNZ_SPMM_BF16_AMX_EMULATED: return amx_shape(A);
    default: return false;
    }
}

nnz_spmm_bf16_path nnz_spmm_bf16_path_for(const nnz_bsr *A) {
    if (nnz_spmm_bf16_path_applies(NNZ_SPMM_BF16_AMX, A)) return NNZ_SPMM_BF16_AMX;
    if (nnz_spmm_bf16_path_applies(NNZ_SPMM_BF16_AVX512BF16, A)) return NNZ_SPMM_BF16_AVX512BF16;
    return NNZ_SPMM_BF16_REF;
}

typedef void (*item_kernel)(const nnz_bsr *, int64_t, int, int, int, const nnz_bf16_src *, const float *, bool,
                            float *, int64_t, nnz_bf16 *);

nnz_status nnz_spmm_bf16_via(nnz_spmm_bf16_path path, const nnz_bsr *A, int64_t M, const nnz_bf16_src *X,
                             const float *bias, bool accumulate, float *out, int64_t ldo) {
    if (!A->val_bf16)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "bf16 SpMM: the sparse matrix has no bf16 values; call "
                                             "nnz_spmat_pack_bf16 first");
    if (!nnz_spmm_bf16_path_applies(path, A))
        return nnz_fail(NNZ_ERR_UNSUPPORTED, "bf16 SpMM: path %s cannot run block %dx%d on ISA %s",
                        nnz_spmm_bf16_path_name(path), A->r, A->c, nnz_isa_name(nnz_isa_active()));
    if (path == NNZ_SPMM_BF16_REF) {
        nnz_spmm_bsr_bf16_ref(A, M, X, bias, accumulate, out, ldo);
        return NNZ_OK;
    }
    if (M <= 0 || A->rows <= 0) return NNZ_OK;
    const bool amx = path == NNZ_SPMM_BF16_AMX || path == NNZ_SPMM_BF16_AMX_EMULATED;
    const item_kernel kern = path == NNZ_SPMM_BF16_AMX            ? nnz_spmm_bsr_bf16_amx
                             : path == NNZ_SPMM_BF16_AMX_EMULATED ? nnz_spmm_bsr_bf16_amx_emulated
                                                                  : nnz_spmm_bsr_bf16_avx512bf16;
    const int item_rows = amx ? SPB_ROWS_AMX : SPB_ROWS_AVX512BF16;
    const int64_t mitems = (M + item_rows - 1) / item_rows;
    const int64_t work = (int64_t)A->ptr[A->brows] * A->r * A->c * M;
    const int threads = work >= SPB_PARALLEL_MIN && !omp_in_parallel() ? nnz_threads() : 1;
    int64_t want = ((int64_t)threads * SPB_ITEMS_PER_THREAD + mitems - 1) / mitems;
    if (threads == 1) want = 1;
    if (want > A->brows) want = A->brows;
    if (want > SPB_MAX_PARTS) want = SPB_MAX_PARTS;
    const int nparts = want < 1 ? 1 : (int)want;
    int b[SPB_MAX_PARTS + 1];
    nnz_bsr_split_by_blocks(A, nparts, b);
    const size_t xs_bytes = ((size_t)item_rows * nnz_spmm_bf16_scratch_ld(A) + 32) * sizeof(nnz_bf16);
    const int64_t items = mitems * nparts;
    int failed = 0;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        nnz_bf16 *xs = nnz_alloc(xs_bytes, "bf16 spmm scratch");
        if (nnz_omp_all_ok(xs != NULL, &failed)) {
            if (path == NNZ_SPMM_BF16_AMX) nnz_amx_tiles_enter();
#pragma omp for schedule(dynamic, 1)
            for (int64_t it = 0; it < items; it++) {
                const int64_t m0 = it / nparts * item_rows;
                const int p = (int)(it % nparts);
                const int mrows = (int)(M - m0 < item_rows ? M - m0 : item_rows);
                kern(A, m0, mrows, b[p], b[p + 1], X, bias, accumulate, out, ldo, xs);
            }
            if (path == NNZ_SPMM_BF16_AMX) nnz_amx_tiles_leave();
        }
        nnz_free(xs);
    }
    return failed ? NNZ_ERR_NOMEM : NNZ_OK;
}

static nnz_status spmm_auto(const nnz_bsr *A, int64_t M, const void *X, int64_t ldx, bool f32, const float *bias,
                            bool accumulate, float *out, int64_t ldo) {
    const nnz_bf16_src src = {.p = X, .ld = ldx, .trans = false, .f32 = f32};
    if (!A->val_bf16) return nnz_spmm_bf16_via(NNZ_SPMM_BF16_REF, A, M, &src, bias, accumulate, out, ldo);
    return nnz_spmm_bf16_via(nnz_spmm_bf16_path_for(A), A, M, &src, bias, accumulate, out, ldo);
}

nnz_status nnz_spmm_bf16(const nnz_spmat *W, int64_t M, const nnz_bf16 *X, int64_t ldx, const float *bias,
                         bool accumulate, float *out, int64_t ldo) {
    return spmm_auto(&W->fwd, M, X, ldx, false, bias, accumulate, out, ldo);
}

nnz_status nnz_spmm_bf16_f32in(const nnz_spmat *W, int64_t M, const float *X, int64_t ldx, const float *bias,
                               bool accumulate, float *out, int64_t ldo) {
    return spmm_auto(&W->fwd, M, X, ldx, true, bias, accumulate, out, ldo);
}

nnz_status nnz_spmm_bwd_data_bf16(const nnz_spmat *W, int64_t M, const nnz_bf16 *dout, int64_t ldd,
                                  bool accumulate, float *dX, int64_t ldx) {
    return spmm_auto(&W->tr, M, dout, ldd, false, NULL, accumulate, dX, ldx);
}

nnz_status nnz_spmm_bwd_data_bf16_f32in(const nnz_spmat *W, int64_t M, const float *dout, int64_t ldd,
                                        bool accumulate, float *dX, int64_t ldx) {
    return spmm_auto(&W->tr, M, dout, ldd, true, NULL, accumulate, dX, ldx);
}
