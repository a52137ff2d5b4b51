/* The turned-window matrix of a sparse stride-1 convolution's data gradient, built by moving
 * whole blocks of W^T (contract in kernels.h, "sparse turned-window matrix"). */
#include "kernels/kernels.h"

#include <string.h>

nnz_status nnz_spmat_turned_build(const nnz_spmat *W, int taps, int IC, nnz_spmat_turned *out) {
    if (!out) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_spmat_turned_build: out is NULL");
    memset(out, 0, sizeof *out);
    const nnz_bsr *T = &W->tr; /* (taps*IC, OC), blocks c x r */
    if (taps < 1 || IC < 1 || (int64_t)taps * IC != T->rows)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_spmat_turned_build: W has %d columns, not %d taps x %d channels",
                        T->rows, taps, IC);
    const int OC = T->cols;
    if (IC % T->r != 0 || OC % T->c != 0) return NNZ_ERR_UNSUPPORTED; /* a block would straddle two taps */
    const int ib_n = IC / T->r, ob_n = OC / T->c;
    nnz_bsr *A = &out->mat.fwd; /* W' (IC, taps*OC), with W^T's block shape */
    A->rows = IC, A->cols = taps * OC, A->r = T->r, A->c = T->c, A->brows = ib_n, A->bcols = taps * ob_n;
    const int64_t nb = W->nblocks;
    A->ptr = nnz_calloc(((size_t)A->brows + 1) * sizeof(int32_t), "turned block-row pointers");
    A->idx = nnz_alloc(((size_t)nb + 1) * sizeof(int32_t), "turned block indices");
    A->val = nnz_alloc(((size_t)nb * A->r * A->c + 1) * sizeof(float), "turned values");
    out->src = nnz_alloc(((size_t)nb + 1) * sizeof(int32_t), "turned block sources");
    if (!A->ptr || !A->idx || !A->val || !out->src) {
        nnz_spmat_turned_free(out);
        return NNZ_ERR_NOMEM;
    }
    /* block row ib of W' is T's block rows (taps-1-t')*ib_n + ib for t' = 0..taps-1, each shifted
     * to block column t'*ob_n + its own: in t' order the columns stay increasing */
    int32_t n = 0;
    for (int ib = 0; ib < ib_n; ib++) {
        for (int tt = 0; tt < taps; tt++) {
            const int kb = (taps - 1 - tt) * ib_n + ib;
            for (int32_t j = T->ptr[kb]; j < T->ptr[kb + 1]; j++) {
                A->idx[n] = tt * ob_n + T->idx[j];
                out->src[n++] = j;
            }
        }
        A->ptr[ib + 1] = n;
    }
    out->mat.dtype = NNZ_F32;
    out->mat.nnz = W->nnz;
    out->mat.nblocks = nb;
    nnz_spmat_turned_load(W, out);
    return NNZ_OK;
}

void nnz_spmat_turned_load(const nnz_spmat *W, nnz_spmat_turned *t) {
    const size_t bs = (size_t)W->tr.r * W->tr.c;
    for (int64_t j = 0; j < t->mat.nblocks; j++)
        memcpy(t->mat.fwd.val + (size_t)j * bs, W->tr.val + (size_t)t->src[j] * bs, bs * sizeof(float));
}

void nnz_spmat_turned_free(nnz_spmat_turned *t) {
    if (!t) return;
    nnz_spmat_free(&t->mat);
    nnz_free(t->src);
    memset(t, 0, sizeof *t);
}
