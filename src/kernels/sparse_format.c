/* Sparse weight format (BSR; CSR = BSR 1x1): conversion from dense + mask and back, value
 * refresh, statistics. Layout and contract in kernels.h ("sparse weights: formats"). */
#include "kernels/kernels.h"

#include <string.h>

bool nnz_sparse_block_supported(int r, int c) {
    if (r == 1 && c == 1) return true; /* CSR */
    const bool r_ok = r == 1 || r == 4 || r == 8 || r == 16 || r == 32;
    const bool c_ok = c == 4 || c == 8 || c == 16 || c == 32;
    return r_ok && c_ok;
}

static nnz_status check_args(const char *who, int rows, int cols, const float *W, int64_t ldw, int r, int c) {
    if (rows < 0 || cols < 0)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "%s: matrix size %dx%d is negative", who, rows, cols);
    if (!nnz_sparse_block_supported(r, c))
        return nnz_fail(NNZ_ERR_INVALID_ARG,
                        "%s: block %dx%d is not supported; use 1x1 (CSR) or r in {1,4,8,16,32} x c in {4,8,16,32}",
                        who, r, c);
    if (ldw < cols) return nnz_fail(NNZ_ERR_INVALID_ARG, "%s: ldw %lld < cols %d", who, (long long)ldw, cols);
    if (!W && rows > 0 && cols > 0) return nnz_fail(NNZ_ERR_INVALID_ARG, "%s: W is NULL", who);
    return NNZ_OK;
}

/* One row of W (or of the mask) over its block columns: mark[bc] |= any kept, returns the kept
 * count. C is a compile-time block width in the common cases, so the counting loops vectorize
 * (AutoSparse training replans from its moving zeros every step: this runs per format per step). */
#define SCAN_ROW(C, KEPT)                                                                                               \
    for (int bc = 0; bc < bcols; bc++) {                                                                               \
        const int k0 = bc * (C), k1 = k0 + (C) < cols ? k0 + (C) : cols;                                               \
        int n = 0;                                                                                                     \
        for (int k = k0; k < k1; k++) n += (KEPT);                                                                     \
        mark[bc] |= n > 0;                                                                                             \
        kept += n;                                                                                                     \
    }
static int64_t scan_row(const float *w, const uint8_t *mk, int cols, int c, int bcols, uint8_t *mark) {
    int64_t kept = 0;
    if (mk) {
        SCAN_ROW(c, mk[k] != 0)
    } else if (c == 1) {
        for (int k = 0; k < cols; k++) {
            const int n = w[k] != 0.0f;
            mark[k] |= (uint8_t)n;
            kept += n;
        }
    } else if (c == 4) {
        SCAN_ROW(4, w[k] != 0.0f)
    } else if (c == 8) {
        SCAN_ROW(8, w[k] != 0.0f)
    } else if (c == 16) {
        SCAN_ROW(16, w[k] != 0.0f)
    } else if (c == 32) {
        SCAN_ROW(32, w[k] != 0.0f)
    } else {
        SCAN_ROW(c, w[k] != 0.0f)
    }
    return kept;
}
#undef SCAN_ROW

/* Marks mark[bc] = 1 for every block column of block row br holding a kept element (mark
 * cleared first); returns the kept elements in the block row. */
static int64_t scan_block_row(int rows, int cols, const float *W, int64_t ldw, const uint8_t *mask, int r, int c,
                              int br, int bcols, uint8_t *mark) {
    memset(mark, 0, (size_t)bcols);
    int64_t kept = 0;
    const int i1 = (br + 1) * r < rows ? (br + 1) * r : rows;
    for (int i = br * r; i < i1; i++)
        kept += scan_row(W + (int64_t)i * ldw, mask ? mask + (int64_t)i * ldw : NULL, cols, c, bcols, mark);
    return kept;
}

nnz_status nnz_sparse_measure(int rows, int cols, const float *W, int64_t ldw, const uint8_t *mask, int r, int c,
                              nnz_sparse_stats *out) {
    if (!out) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_sparse_measure: out is NULL");
    memset(out, 0, sizeof *out);
    NNZ_TRY(check_args("nnz_sparse_measure", rows, cols, W, ldw, r, c));
    const int brows = (rows + r - 1) / r, bcols = (cols + c - 1) / c;
    uint8_t *mark = nnz_alloc((size_t)bcols + 1, "sparse block marks");
    if (!mark) return NNZ_ERR_NOMEM;
    for (int br = 0; br < brows; br++) {
        out->nnz += scan_block_row(rows, cols, W, ldw, mask, r, c, br, bcols, mark);
        for (int bc = 0; bc < bcols; bc++) out->nblocks += mark[bc];
    }
    nnz_free(mark);
    out->density = rows && cols ? (double)out->nnz / ((double)rows * cols) : 0.0;
    out->block_fill = out->nblocks ? (double)out->nnz / ((double)out->nblocks * r * c) : 0.0;
    return NNZ_OK;
}

const int NNZ_SPARSE_LADDER[NNZ_SPARSE_LADDER_N][2] = {{1, 1}, {1, 4}, {4, 4}, {8, 8}, {16, 16}, {16, 32}};

/* dst (ceil(rows/fr), ceil(cols/fc)) = OR of fr x fc cells of src (rows, cols) */
static int64_t coarsen(const uint8_t *src, int rows, int cols, int fr, int fc, uint8_t *dst) {
    const int R = (rows + fr - 1) / fr, C = (cols + fc - 1) / fc;
    int64_t count = 0;
    for (int i = 0; i < R; i++) {
        uint8_t *d = dst + (int64_t)i * C;
        memset(d, 0, (size_t)C);
        for (int ii = i * fr; ii < i * fr + fr && ii < rows; ii++) {
            const uint8_t *s = src + (int64_t)ii * cols;
            for (int j = 0; j < C; j++) {
                uint8_t any = 0;
                for (int jj = j * fc; jj < j * fc + fc && jj < cols; jj++) any |= s[jj];
                d[j] |= any;
            }
        }
        for (int j = 0; j < C; j++) count += d[j];
    }
    return count;
}

nnz_status nnz_sparse_measure_ladder(int rows, int cols, const float *W, int64_t ldw,
                                     int64_t ladder[NNZ_SPARSE_LADDER_N]) {
    if (!ladder) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_sparse_measure_ladder: ladder is NULL");
    memset(ladder, 0, sizeof(int64_t) * NNZ_SPARSE_LADDER_N);
    NNZ_TRY(check_args("nnz_sparse_measure_ladder", rows, cols, W, ldw, 1, 1));
    if (rows == 0 || cols == 0) return NNZ_OK;
    const int g = (cols + 3) / 4; /* 1x4 groups per row */
    const int64_t cells = (int64_t)rows * g;
    uint8_t *a = nnz_alloc((size_t)cells, "the sparse ladder"), *b = nnz_alloc((size_t)cells, "the sparse ladder");
    if (!a || !b) {
        nnz_free(a);
        nnz_free(b);
        return NNZ_ERR_NOMEM;
    }
    for (int i = 0; i < rows; i++) { /* the 1x4 occupancy and the kept count, row by row */
        uint8_t *o = a + (int64_t)i * g;
        const float *w = W + (int64_t)i * ldw;
        memset(o, 0, (size_t)g);
        ladder[0] += scan_row(w, NULL, cols, 4, g, o);
    }
    for (int64_t k = 0; k < cells; k++) ladder[1] += a[k];
    /* 4x4 = 4 rows of 1x4; 8x8 = 2x2 of 4x4; 16x16 = 2x2 of 8x8; 16x32 = 1x2 of 16x16 */
    int R = rows, C = g;
    ladder[2] = coarsen(a, R, C, 4, 1, b), R = (R + 3) / 4;
    ladder[3] = coarsen(b, R, C, 2, 2, a), R = (R + 1) / 2, C = (C + 1) / 2;
    ladder[4] = coarsen(a, R, C, 2, 2, b), R = (R + 1) / 2, C = (C + 1) / 2;
    ladder[5] = coarsen(b, R, C, 1, 2, a);
    nnz_free(a);
    nnz_free(b);
    return NNZ_OK;
}

void nnz_spmat_free(nnz_spmat *s) {
    if (!s) return;
    nnz_bsr *o[2] = {&s->fwd, &s->tr};
    for (int t = 0; t < 2; t++) {
        nnz_free(o[t]->ptr);
        nnz_free(o[t]->idx);
        nnz_free(o[t]->val);
        nnz_free(o[t]->val_bf16);
    }
    memset(s, 0, sizeof *s);
}

static void bsr_shape(nnz_bsr *A, int rows, int cols, int r, int c) {
    A->rows = rows, A->cols = cols, A->r = r, A->c = c;
    A->brows = (rows + r - 1) / r, A->bcols = (cols + c - 1) / c;
}

static bool bsr_alloc(nnz_bsr *A, int64_t nblocks) {
    A->ptr = nnz_calloc(((size_t)A->brows + 1) * sizeof(int32_t), "sparse block-row pointers");
    A->idx = nnz_alloc(((size_t)nblocks + 1) * sizeof(int32_t), "sparse block indices");
    A->val = nnz_calloc(((size_t)nblocks * A->r * A->c + 1) * sizeof(float), "sparse values");
    return A->ptr && A->idx && A->val;
}

/* Values of one orientation from W (rows, cols); transposed: A is W^T. */
static void fill_values(nnz_bsr *A, const float *W, int64_t ldw, const uint8_t *mask, bool transposed) {
    const int r = A->r, c = A->c;
    if (r == 1 && c == 1) { /* CSR: one value per entry, every entry inside the matrix */
        for (int i = 0; i < A->brows; i++)
            for (int32_t j = A->ptr[i]; j < A->ptr[i + 1]; j++) {
                const int64_t at = transposed ? (int64_t)A->idx[j] * ldw + i : (int64_t)i * ldw + A->idx[j];
                A->val[j] = !mask || mask[at] ? W[at] : 0.0f;
            }
        return;
    }
    for (int br = 0; br < A->brows; br++)
        for (int32_t j = A->ptr[br]; j < A->ptr[br + 1]; j++) {
            float *v = A->val + (int64_t)j * r * c;
            for (int jj = 0; jj < c; jj++)
                for (int ii = 0; ii < r; ii++) {
                    const int ra = br * r + ii, ca = A->idx[j] * c + jj;
                    float x = 0.0f;
                    if (ra < A->rows && ca < A->cols) {
                        const int64_t at = transposed ? (int64_t)ca * ldw + ra : (int64_t)ra * ldw + ca;
                        x = !mask || mask[at] ? W[at] : 0.0f;
                    }
                    v[jj * r + ii] = x;
                }
        }
}

/* val_bf16 from val (both orientations allocated), VNNI pair order (kernels.h) */
static void pack_bf16_values(nnz_bsr *A, int64_t nblocks) {
    const int r = A->r, c = A->c, cp = (c + 1) / 2 * 2;
    for (int64_t j = 0; j < nblocks; j++) {
        const float *v = A->val + j * r * c;
        nnz_bf16 *o = A->val_bf16 + j * r * cp;
        for (int kk = 0; kk < cp; kk++)
            for (int i = 0; i < r; i++)
                o[(kk / 2) * r * 2 + i * 2 + kk % 2] = kk < c ? nnz_bf16_from_f32(v[kk * r + i]) : 0;
    }
}

void nnz_spmat_load_values(nnz_spmat *s, const float *W, int64_t ldw, const uint8_t *mask) {
    fill_values(&s->fwd, W, ldw, mask, false);
    fill_values(&s->tr, W, ldw, mask, true);
    if (s->fwd.val_bf16) pack_bf16_values(&s->fwd, s->nblocks);
    if (s->tr.val_bf16) pack_bf16_values(&s->tr, s->nblocks);
}

nnz_status nnz_spmat_pack_bf16(nnz_spmat *s) {
    nnz_bsr *o[2] = {&s->fwd, &s->tr};
    for (int t = 0; t < 2; t++) {
        if (o[t]->val_bf16) continue;
        const int cp = (o[t]->c + 1) / 2 * 2;
        o[t]->val_bf16 = nnz_alloc(((size_t)s->nblocks * o[t]->r * cp + 1) * sizeof(nnz_bf16), "sparse bf16 values");
        if (!o[t]->val_bf16) { /* both or neither */
            for (int u = 0; u < 2; u++) nnz_free(o[u]->val_bf16), o[u]->val_bf16 = NULL;
            return NNZ_ERR_NOMEM;
        }
    }
    for (int t = 0; t < 2; t++) pack_bf16_values(o[t], s->nblocks);
    return NNZ_OK;
}

nnz_status nnz_spmat_from_dense(int rows, int cols, const float *W, int64_t ldw, const uint8_t *mask, int r, int c,
                                nnz_spmat *out) {
    if (!out) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_spmat_from_dense: out is NULL");
    memset(out, 0, sizeof *out);
    NNZ_TRY(check_args("nnz_spmat_from_dense", rows, cols, W, ldw, r, c));
    nnz_sparse_stats st;
    NNZ_TRY(nnz_sparse_measure(rows, cols, W, ldw, mask, r, c, &st));
    if (st.nblocks > INT32_MAX)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_spmat_from_dense: %lld blocks exceed the int32 index; use a larger block",
                        (long long)st.nblocks);
    out->dtype = NNZ_F32;
    out->nnz = st.nnz;
    out->nblocks = st.nblocks;
    bsr_shape(&out->fwd, rows, cols, r, c);
    bsr_shape(&out->tr, cols, rows, c, r);
    uint8_t *mark = nnz_alloc((size_t)out->fwd.bcols + 1, "sparse block marks");
    if (!mark || !bsr_alloc(&out->fwd, st.nblocks) || !bsr_alloc(&out->tr, st.nblocks)) {
        nnz_free(mark);
        nnz_spmat_free(out);
        return NNZ_ERR_NOMEM;
    }
    nnz_bsr *F = &out->fwd, *T = &out->tr;
    int32_t n = 0;
    for (int br = 0; br < F->brows; br++) {
        scan_block_row(rows, cols, W, ldw, mask, r, c, br, F->bcols, mark);
        for (int bc = 0; bc < F->bcols; bc++)
            if (mark[bc]) {
                F->idx[n++] = bc;
                T->ptr[bc + 1]++;
            }
        F->ptr[br + 1] = n;
    }
    nnz_free(mark);
    /* W^T: block rows are W's block columns; walking W's block rows in order appends each
     * block row index in increasing order */
    for (int bc = 0; bc < T->brows; bc++) T->ptr[bc + 1] += T->ptr[bc];
    int32_t *fillp = nnz_alloc(((size_t)T->brows + 1) * sizeof(int32_t), "sparse transpose cursor");
    if (!fillp) {
        nnz_spmat_free(out);
        return NNZ_ERR_NOMEM;
    }
    memcpy(fillp, T->ptr, (size_t)T->brows * sizeof(int32_t));
    for (int br = 0; br < F->brows; br++)
        for (int32_t j = F->ptr[br]; j < F->ptr[br + 1]; j++) T->idx[fillp[F->idx[j]]++] = br;
    nnz_free(fillp);
    nnz_spmat_load_values(out, W, ldw, mask);
    return NNZ_OK;
}

void nnz_spmat_scatter_values(const nnz_spmat *s, const float *vals, bool accumulate, float *dense, int64_t ld) {
    const nnz_bsr *A = &s->fwd;
    const int r = A->r, c = A->c;
    if (!accumulate)
        for (int i = 0; i < A->rows; i++) memset(dense + (int64_t)i * ld, 0, (size_t)A->cols * sizeof(float));
    for (int br = 0; br < A->brows; br++)
        for (int32_t j = A->ptr[br]; j < A->ptr[br + 1]; j++) {
            const float *v = vals + (int64_t)j * r * c;
            for (int ii = 0; ii < r && br * r + ii < A->rows; ii++)
                for (int jj = 0; jj < c && A->idx[j] * c + jj < A->cols; jj++) {
                    float *d = dense + (int64_t)(br * r + ii) * ld + A->idx[j] * c + jj;
                    *d = accumulate ? *d + v[jj * r + ii] : v[jj * r + ii];
                }
        }
}

void nnz_spmat_to_dense(const nnz_spmat *s, float *W, int64_t ldw) {
    nnz_spmat_scatter_values(s, s->fwd.val, false, W, ldw);
}
