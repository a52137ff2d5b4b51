/* SDDMM with bf16 inputs, AMX (tdpbf16ps): the per-item kernel for blocks r x c with r, c in
 * {16, 32}, and the same kernel with the plain-C tile (nnz_bf16_tile_dp_emulated) in place of
 * the tile instructions. Contract in kernels.h ("SDDMM with bf16 inputs"); staging, threading
 * and the tile configuration per thread in sparse_sddmm_bf16.c.
 *
 * dval's layout inside a block is column-major, (c kk) x (r i) with row stride r floats: a
 * 16 kk x 16 i piece of it is a C tile as it stands. Per block, C[u][t] (kk group u < c/16, i
 * group t < r/16; tile u*(r/16) + t, at most 4) is loaded from dval, then per 32 rows of m:
 *   A[u]: xt rows [col0 + 16u, +16) x m [s, s+32), stride ldt*2 bytes (tiles 4, 5);
 *   B[t]: dp pair-rows [s/2, +16) x i [br*r + 16t, +16) x 2, stride ldp*2 bytes (tiles 6, 7);
 *   C[u][t] += A[u] * B[t];
 * and stored back. Blocks whose rows or columns pass the matrix's edge go through a copy
 * (in-bounds positions, zeros elsewhere) so the padding of dval is neither read nor written. */
#include "kernels/kernels.h"

#include "kernels/amx_tiles.h"

#include <string.h>

/* the block's in-bounds values into cbuf (zero elsewhere), or back */
static void edge_copy(const nnz_bsr *A, int br, int32_t j, float *blk, float *cbuf, bool back) {
    const int r = A->r, c = A->c, col0 = A->idx[j] * c;
    const int nr = A->rows - br * r < r ? A->rows - br * r : r, nc = A->cols - col0 < c ? A->cols - col0 : c;
    if (!back) memset(cbuf, 0, (size_t)r * c * sizeof(float));
    for (int kk = 0; kk < nc; kk++) {
        if (back) memcpy(blk + kk * r, cbuf + kk * r, (size_t)nr * sizeof(float));
        else memcpy(cbuf + kk * r, blk + kk * r, (size_t)nr * sizeof(float));
    }
}

static bool interior(const nnz_bsr *A, int br, int32_t j) {
    return (br + 1) * A->r <= A->rows && (A->idx[j] + 1) * A->c <= A->cols;
}

typedef void (*block_fn)(const nnz_bsr *, const nnz_sddmm_bf16_chunk *, int br, int32_t j, float *cb);

static void item(block_fn fn, const nnz_bsr *A, const nnz_sddmm_bf16_chunk *ch, int32_t j0, int32_t j1,
                 float *dval) {
    if (j0 >= j1) return;
    float cbuf[32 * 32] __attribute__((aligned(64)));
    int br = nnz_bsr_block_row_of(A, j0);
    for (int32_t j = j0; j < j1; j++) {
        while (A->ptr[br + 1] <= j) br++;
        float *blk = dval + (int64_t)j * A->r * A->c;
        if (interior(A, br, j)) {
            fn(A, ch, br, j, blk);
        } else {
            edge_copy(A, br, j, blk, cbuf, false);
            fn(A, ch, br, j, cbuf);
            edge_copy(A, br, j, blk, cbuf, true);
        }
    }
}

/* The plain-C tiles, in the order and with the strides of block_amx */
static void block_emulated(const nnz_bsr *A, const nnz_sddmm_bf16_chunk *ch, int br, int32_t j, float *cb) {
    const int r = A->r, c = A->c, nt = r / 16, nu = c / 16, col0 = A->idx[j] * c;
    for (int s = 0; s < ch->mpad; s += 32)
        for (int u = 0; u < nu; u++)
            for (int t = 0; t < nt; t++)
                nnz_bf16_tile_dp_emulated(cb + u * 16 * r + t * 16, r, ch->xt + (int64_t)(col0 + u * 16) * ch->ldt + s,
                                          (int)ch->ldt, ch->dp + (int64_t)(s / 2) * ch->ldp + (br * r + t * 16) * 2,
                                          (int)ch->ldp);
}

void nnz_sddmm_bsr_bf16_amx_emulated(const nnz_bsr *A, const nnz_sddmm_bf16_chunk *ch, int32_t j0, int32_t j1,
                                     float *dval) {
    item(block_emulated, A, ch, j0, j1, dval);
}

#ifdef HAVE_AMX_INTRINSICS
#include <immintrin.h>

TARGET_AMX static void block_amx(const nnz_bsr *A, const nnz_sddmm_bf16_chunk *ch, int br, int32_t j, float *cb) {
    const int r = A->r, c = A->c, col0 = A->idx[j] * c;
    const size_t sc = (size_t)r * 4, sa = (size_t)ch->ldt * 2, sb = (size_t)ch->ldp * 2; /* strides, bytes */
    const nnz_bf16 *xa = ch->xt + (int64_t)col0 * ch->ldt, *xb = xa + 16 * ch->ldt;
    const nnz_bf16 *d0 = ch->dp + (int64_t)br * r * 2, *d1 = d0 + 32;
    float *c1 = cb + 16 * r; /* kk group 1 */
    const int steps = ch->mpad / 32;
    /* GCC's _tile_loadd declares no memory input: make every store to cb and the staging happen
     * before; tile ids are literals (the intrinsics paste them into the instruction) */
    __asm__ volatile("" : : : "memory");
    if (r == 16 && c == 16) {
        _tile_loadd(0, cb, sc);
        for (int s = 0; s < steps; s++) {
            _tile_loadd(4, xa + s * 32, sa);
            _tile_loadd(6, d0 + s * 16 * ch->ldp, sb);
            _tile_dpbf16ps(0, 4, 6);
        }
        _tile_stored(0, cb, sc);
    } else if (r == 16) { /* c = 32: C[u] is tile u */
        _tile_loadd(0, cb, sc);
        _tile_loadd(1, c1, sc);
        for (int s = 0; s < steps; s++) {
            _tile_loadd(6, d0 + s * 16 * ch->ldp, sb);
            _tile_loadd(4, xa + s * 32, sa);
            _tile_dpbf16ps(0, 4, 6);
            _tile_loadd(5, xb + s * 32, sa);
            _tile_dpbf16ps(1, 5, 6);
        }
        _tile_stored(0, cb, sc);
        _tile_stored(1, c1, sc);
    } else if (c == 16) { /* r = 32: C[t] is tile t */
        _tile_loadd(0, cb, sc);
        _tile_loadd(1, cb + 16, sc);
        for (int s = 0; s < steps; s++) {
            _tile_loadd(4, xa + s * 32, sa);
            _tile_loadd(6, d0 + s * 16 * ch->ldp, sb);
            _tile_dpbf16ps(0, 4, 6);
            _tile_loadd(7, d1 + s * 16 * ch->ldp, sb);
            _tile_dpbf16ps(1, 4, 7);
        }
        _tile_stored(0, cb, sc);
        _tile_stored(1, cb + 16, sc);
    } else { /* 32 x 32: C[u][t] is tile 2u + t */
        _tile_loadd(0, cb, sc);
        _tile_loadd(1, cb + 16, sc);
        _tile_loadd(2, c1, sc);
        _tile_loadd(3, c1 + 16, sc);
        for (int s = 0; s < steps; s++) {
            _tile_loadd(6, d0 + s * 16 * ch->ldp, sb);
            _tile_loadd(7, d1 + s * 16 * ch->ldp, sb);
            _tile_loadd(4, xa + s * 32, sa);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_loadd(5, xb + s * 32, sa);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(0, cb, sc);
        _tile_stored(1, cb + 16, sc);
        _tile_stored(2, c1, sc);
        _tile_stored(3, c1 + 16, sc);
    }
    __asm__ volatile("" : : : "memory");
}

void nnz_sddmm_bsr_bf16_amx(const nnz_bsr *A, const nnz_sddmm_bf16_chunk *ch, int32_t j0, int32_t j1, float *dval) {
    item(block_amx, A, ch, j0, j1, dval);
}
#else
void nnz_sddmm_bsr_bf16_amx(const nnz_bsr *A, const nnz_sddmm_bf16_chunk *ch, int32_t j0, int32_t j1, float *dval) {
    nnz_sddmm_bsr_bf16_amx_emulated(A, ch, j0, j1, dval);
}
#endif
