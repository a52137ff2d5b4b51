/* Sparse x dense, bf16 operands, AMX (tdpbf16ps): the per-item kernel for blocks r x 32,
 * r in {16, 32}, and the same kernel with the plain-C tile (nnz_bf16_tile_dp_emulated) in
 * place of the tile instructions. Contract in kernels.h ("sparse kernels (bf16)"); threading
 * and the tile configuration per thread in sparse_spmm_bf16.c.
 *
 * The item's rows of X (at most 64) are staged as bf16 in a zero-padded scratch xs (rows to a
 * multiple of 16, columns to bcols*32, row stride lds), unless X is bf16, the rows are whole
 * groups of 16 and cols is a multiple of 32: then every A tile lies inside X and is loaded
 * from it (stride ldx; measured on Sapphire Rapids: the copy was a fifth of the time at 90%). For one block row and G groups of 16
 * rows of X, the C tiles C[g][t] (16 m x 16 outputs, t = output half for r = 32) accumulate
 * over the block list; per block j:
 *   B tile(s): the block itself, 16 pair-rows x (16 outputs x 2 bf16): r = 16 one tile,
 *              stride 64 bytes; r = 32 two tiles (outputs 0-15, 16-31), stride 128 bytes,
 *              the second 64 bytes in;
 *   A tile:    xs rows [16g, 16g+16) x columns [idx[j]*32, +32), stride lds*2 bytes;
 *   C[g][t] += A * B[t]  (tdpbf16ps).
 * r = 16: up to 4 groups per pass (C tiles 0-3, A tiles 4-5 alternating, B tile 6);
 * r = 32: up to 2 groups per pass (C tiles 0-3, A tiles 4-5, B tiles 6-7).
 * The C tiles go to a buffer, then out = base + C for the real rows and outputs; when there is
 * no base (no bias, not accumulating: the sum from zero is out itself) and the pass covers
 * whole tiles, they are stored straight into out instead. */
#include "kernels/kernels.h"

#include "kernels/amx_tiles.h"

#include <string.h>

#define GROUP 16 /* rows of X per A tile */

static inline int imin(int a, int b) { return a < b ? a : b; }

/* out rows [0, mrows) (already offset to the pass), outputs [br*r, ...) = base + cbuf
 * (cbuf[(g*nt + t)*256 + m*16 + i]), base = (accumulate ? out : 0) + bias, as the reference.
 * This pass over M x 16 outputs is as long as the tile work at high sparsity: AVX-512 (masked
 * to the real outputs) when the active ISA has it, which every AMX CPU does; plain C below. */
#if defined(__x86_64__)
#include <immintrin.h>
__attribute__((target("avx512f"))) static void store_block_row_avx512(const nnz_bsr *A, int br, int mrows,
                                                                       int groups, const float *cbuf,
                                                                       const float *bias, bool accumulate,
                                                                       float *out, int64_t ldo) {
    const int nt = A->r / 16, oc0 = br * A->r;
    for (int t = 0; t < nt; t++) {
        const int n = imin(16, A->rows - oc0 - t * 16);
        if (n <= 0) break;
        const __mmask16 mk = (__mmask16)((1u << n) - 1u);
        const __m512 bv = bias ? _mm512_maskz_loadu_ps(mk, bias + oc0 + t * 16) : _mm512_setzero_ps();
        for (int g = 0; g < groups; g++)
            for (int mm = 0; mm < GROUP && g * GROUP + mm < mrows; mm++) {
                float *o = out + (int64_t)(g * GROUP + mm) * ldo + oc0 + t * 16;
                const __m512 s = _mm512_load_ps(cbuf + (g * nt + t) * 256 + mm * 16);
                const __m512 base = accumulate ? _mm512_add_ps(_mm512_maskz_loadu_ps(mk, o), bv) : bv;
                _mm512_mask_storeu_ps(o, mk, _mm512_add_ps(base, s));
            }
    }
}
#endif

static void store_block_row(const nnz_bsr *A, int br, int mrows, int groups, const float *cbuf, const float *bias,
                            bool accumulate, float *out, int64_t ldo) {
#if defined(__x86_64__)
    if (nnz_isa_active() >= NNZ_ISA_AVX512) { /* NNZ_ISA=avx2/ref: the C loop (tests run both) */
        store_block_row_avx512(A, br, mrows, groups, cbuf, bias, accumulate, out, ldo);
        return;
    }
#endif
    const int r = A->r, nt = r / 16, oc0 = br * r, n = imin(r, A->rows - oc0);
    for (int g = 0; g < groups; g++)
        for (int mm = 0; mm < GROUP && g * GROUP + mm < mrows; mm++) {
            float *o = out + (int64_t)(g * GROUP + mm) * ldo + oc0;
            for (int i = 0; i < n; i++) {
                const float s = cbuf[(g * nt + i / 16) * 256 + mm * 16 + i % 16];
                const float base = (accumulate ? o[i] : 0.0f) + (bias ? bias[oc0 + i] : 0.0f);
                o[i] = base + s;
            }
        }
}

/* The plain-C tiles, in the order and with the strides of block_row_amx; direct (not NULL):
 * the finished tiles also go to direct (row stride ldd), as block_row_amx stores them */
static void block_row_emulated(const nnz_bsr *A, int br, int groups, const nnz_bf16 *xs, int64_t lds, float *cbuf,
                               float *direct, int64_t ldd) {
    const int r = A->r, nt = r / 16;
    memset(cbuf, 0, (size_t)groups * nt * 256 * sizeof(float));
    for (int32_t j = A->ptr[br]; j < A->ptr[br + 1]; j++) {
        const nnz_bf16 *w = A->val_bf16 + (int64_t)j * r * 32, *x = xs + (int64_t)A->idx[j] * 32;
        for (int g = 0; g < groups; g++)
            for (int t = 0; t < nt; t++)
                nnz_bf16_tile_dp_emulated(cbuf + (g * nt + t) * 256, 16, x + g * GROUP * lds, (int)lds, w + t * 32,
                                          r * 2);
    }
    if (direct)
        for (int g = 0; g < groups; g++)
            for (int t = 0; t < nt; t++)
                for (int mm = 0; mm < GROUP; mm++)
                    memcpy(direct + (int64_t)(g * GROUP + mm) * ldd + t * 16, cbuf + (g * nt + t) * 256 + mm * 16,
                           16 * sizeof(float));
}

typedef void (*block_row_fn)(const nnz_bsr *, int, int, const nnz_bf16 *, int64_t, float *, float *, int64_t);

static void item(block_row_fn fn, const nnz_bsr *A, int64_t m0, int mrows, int br0, int br1,
                 const nnz_bf16_src *X, const float *bias, bool accumulate, float *out, int64_t ldo,
                 nnz_bf16 *xs) {
    const int groups = (mrows + GROUP - 1) / GROUP, per_pass = A->r == 16 ? 4 : 2;
    /* bf16 X whose tiles are all inside it (whole 16-row groups, cols a multiple of 32): the A
     * tiles load from X itself; else from the staged, zero-padded copy */
    const nnz_bf16 *xt;
    int64_t lds;
    if (!X->f32 && mrows % GROUP == 0 && A->cols % 32 == 0) {
        xt = (const nnz_bf16 *)X->p + m0 * X->ld;
        lds = X->ld;
    } else {
        nnz_spmm_bf16_stage_x(A, X, m0, mrows, groups * GROUP, xs);
        xt = xs;
        lds = nnz_spmm_bf16_scratch_ld(A);
    }
    float cbuf[4 * 256] __attribute__((aligned(64)));
    for (int br = br0; br < br1; br++)
        for (int g0 = 0; g0 < groups; g0 += per_pass) {
            const int ng = imin(per_pass, groups - g0), rows = imin(mrows - g0 * GROUP, ng * GROUP);
            float *o = out + (m0 + (int64_t)g0 * GROUP) * ldo;
            /* no base and whole tiles: the tiles are the output */
            const bool direct = !accumulate && !bias && rows == ng * GROUP && (br + 1) * A->r <= A->rows;
            fn(A, br, ng, xt + (int64_t)g0 * GROUP * lds, lds, cbuf, direct ? o + br * A->r : NULL, ldo);
            if (!direct) store_block_row(A, br, rows, ng, cbuf, bias, accumulate, o, ldo);
        }
}

void nnz_spmm_bsr_bf16_amx_emulated(const nnz_bsr *A, int64_t m0, int mrows, int br0, int br1,
                                    const nnz_bf16_src *X, const float *bias, bool accumulate, float *out,
                                    int64_t ldo, nnz_bf16 *xs) {
    item(block_row_emulated, A, m0, mrows, br0, br1, X, bias, accumulate, out, ldo, xs);
}

#ifdef HAVE_AMX_INTRINSICS

TARGET_AMX static void block_row_amx(const nnz_bsr *A, int br, int groups, const nnz_bf16 *xs, int64_t lds,
                                     float *cbuf, float *direct, int64_t ldd) {
    /* the C tiles' destination: cbuf (tile (g,t) at (g*nt + t)*256, stride 64 bytes), or out */
    const int nt = A->r / 16;
    float *dst[4];
    for (int k = 0; k < 4; k++) {
        const int g = k / nt, t = k % nt;
        dst[k] = direct ? direct + (int64_t)g * GROUP * ldd + t * 16 : cbuf + k * 256;
    }
    const size_t sc = direct ? (size_t)ldd * sizeof(float) : 64;
    const size_t sx = (size_t)lds * 2; /* A tile row stride in bytes */
    const int32_t j0 = A->ptr[br], j1 = A->ptr[br + 1];
    /* GCC's _tile_loadd declares no memory input: make every store to xs happen before */
    __asm__ volatile("" : : : "memory");
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    if (A->r == 16) {
        for (int32_t j = j0; j < j1; j++) {
            const nnz_bf16 *w = A->val_bf16 + (int64_t)j * 512, *x = xs + (int64_t)A->idx[j] * 32;
            _tile_loadd(6, w, 64);
            _tile_loadd(4, x, sx);
            _tile_dpbf16ps(0, 4, 6);
            if (groups > 1) {
                _tile_loadd(5, x + 16 * lds, sx);
                _tile_dpbf16ps(1, 5, 6);
            }
            if (groups > 2) {
                _tile_loadd(4, x + 32 * lds, sx);
                _tile_dpbf16ps(2, 4, 6);
            }
            if (groups > 3) {
                _tile_loadd(5, x + 48 * lds, sx);
                _tile_dpbf16ps(3, 5, 6);
            }
        }
        _tile_stored(0, dst[0], sc);
        if (groups > 1) _tile_stored(1, dst[1], sc);
        if (groups > 2) _tile_stored(2, dst[2], sc);
        if (groups > 3) _tile_stored(3, dst[3], sc);
    } else { /* r = 32: C[g][t] is tile 2g + t */
        for (int32_t j = j0; j < j1; j++) {
            const nnz_bf16 *w = A->val_bf16 + (int64_t)j * 1024, *x = xs + (int64_t)A->idx[j] * 32;
            _tile_loadd(6, w, 128);
            _tile_loadd(7, w + 32, 128);
            _tile_loadd(4, x, sx);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            if (groups > 1) {
                _tile_loadd(5, x + 16 * lds, sx);
                _tile_dpbf16ps(2, 5, 6);
                _tile_dpbf16ps(3, 5, 7);
            }
        }
        _tile_stored(0, dst[0], sc);
        _tile_stored(1, dst[1], sc);
        if (groups > 1) {
            _tile_stored(2, dst[2], sc);
            _tile_stored(3, dst[3], sc);
        }
    }
}

void nnz_spmm_bsr_bf16_amx(const nnz_bsr *A, int64_t m0, int mrows, int br0, int br1, const nnz_bf16_src *X,
                           const float *bias, bool accumulate, float *out, int64_t ldo, nnz_bf16 *xs) {
    item(block_row_amx, A, m0, mrows, br0, br1, X, bias, accumulate, out, ldo, xs);
}
#else
void nnz_spmm_bsr_bf16_amx(const nnz_bsr *A, int64_t m0, int mrows, int br0, int br1, const nnz_bf16_src *X,
                           const float *bias, bool accumulate, float *out, int64_t ldo, nnz_bf16 *xs) {
    nnz_spmm_bsr_bf16_amx_emulated(A, m0, mrows, br0, br1, X, bias, accumulate, out, ldo, xs);
}
#endif
