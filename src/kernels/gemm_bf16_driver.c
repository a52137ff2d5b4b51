/* The blocked bf16 GEMM driver (loop order, determinism and the K split in gemm_bf16_driver.h). */
#include "kernels/gemm_bf16_driver.h"

#include <omp.h>

static int round_up(int x, int m) { return (x + m - 1) / m * m; }
static int ceil_div(int x, int m) { return (x + m - 1) / m; }
static int min_int(int a, int b) { return a < b ? a : b; }

/* K is split when the product has fewer than KSPLIT_TASKS (M block x NR panel) tasks and K is
 * at least KSPLIT_MIN_K: groups of at least KSPLIT_MIN_K / 2, at most KSPLIT_MAX_GROUPS of them,
 * their partials within KSPLIT_MAX_FLOATS (4 MB). 16 tasks keep 16 threads busy without a split. */
enum { KSPLIT_TASKS = 16, KSPLIT_MIN_K = 2048, KSPLIT_MAX_GROUPS = 64 };
#define KSPLIT_MAX_FLOATS ((size_t)1 << 20)

typedef struct {
    const nnz_bf16_kernel *kern;
    const nnz_bf16_src *A, *B;
    int M, N;
    float alpha;
    int m_blocks, mc_max, kc_max, nc_max;
} plan;

/* The micro-kernel reads A's MR-row panel at row i, K block pc, in place (no packing) when A is
 * a stored bf16 matrix (not turned), the panel has MR real rows, the K block needs no padding
 * and the kernel can (AMX: a tile loads rows at any stride). Same numbers, same tile products. */
static bool a_in_place(const plan *p, int i, int kc, int kc_pad) {
    return p->kern->ukr_lda && !p->A->f32 && !p->A->win && !p->A->trans && kc == kc_pad && i + p->kern->MR <= p->M;
}

static void pack_a_unless_in_place(const plan *p, int i, int mr, int pc, int kc, int kc_pad, nnz_bf16 *ap) {
    if (!a_in_place(p, i, kc, kc_pad)) nnz_bf16_pack_a(p->A, i, mr, pc, kc, p->kern->MR, p->kern->KB, kc_pad, ap);
}

/* the micro-tile at rows [i, i+mr), columns [j, j+nr) over K block pc: A from ap or in place */
static void micro_tile(const plan *p, int i, int mr, int j, int nr, int pc, int kc, int kc_pad, const nnz_bf16 *ap,
                       const nnz_bf16 *bp, float *C, int ldc, float beta) {
    float *c = C + (size_t)i * ldc + j;
    if (a_in_place(p, i, kc, kc_pad))
        p->kern->ukr_lda(kc_pad, (const nnz_bf16 *)p->A->p + (size_t)i * p->A->ld + pc, p->A->ld, bp, c, ldc, mr, nr,
                         p->alpha, beta);
    else
        p->kern->ukr(kc_pad, ap, bp, c, ldc, mr, nr, p->alpha, beta);
}

/* One task over K block pc: rows [ic, ic+mc) of A (packed into my_ap when pack_a, else already
 * there, or read in place) against B panels [p0, p1) of the N block at jc (nc columns), panel jp
 * at Bp + jp * NR * slot */
static void run_task(const plan *p, int ic, int mc, bool pack_a, int jc, int nc, int p0, int p1, int pc, int kc,
                     int kc_pad, size_t slot, nnz_bf16 *my_ap, const nnz_bf16 *Bp, float *C, int ldc, float beta_k) {
    const int MR = p->kern->MR, NR = p->kern->NR;
    if (pack_a)
        for (int ir = 0; ir < mc; ir += MR)
            pack_a_unless_in_place(p, ic + ir, min_int(MR, mc - ir), pc, kc, kc_pad, my_ap + (size_t)ir * kc_pad);
    for (int jp = p0; jp < p1; jp++)
        for (int ir = 0; ir < mc; ir += MR)
            micro_tile(p, ic + ir, min_int(MR, mc - ir), jc + jp * NR, min_int(NR, nc - jp * NR), pc, kc, kc_pad,
                       my_ap + (size_t)ir * kc_pad, Bp + (size_t)jp * NR * slot, C, ldc, beta_k);
}

/* run_blocks' product when M is one block (a weight gradient: M = OC): each thread owns a run of
 * B's panels and packs them itself, and packs the A block once per K block, so the team never
 * waits at a barrier (on a 16-thread host with passive waiting, the two barriers per K block
 * cost more than the K block's products). Same packed numbers, same micro-kernel calls per C
 * element, in the same order: the same bits as the shared packing. A barrier between N blocks
 * only (N > NC). */
static void run_own_panels(const plan *p, int k_lo, int k_hi, float beta, float *C, int ldc, nnz_bf16 *my_ap,
                           nnz_bf16 *Bp, int tid, int nth) {
    const nnz_bf16_kernel *kern = p->kern;
    const int NR = kern->NR, KB = kern->KB, N = p->N;
    for (int jc = 0; jc < N; jc += kern->NC) {
        const int nc = min_int(kern->NC, N - jc), panels = ceil_div(nc, NR);
        const int p0 = panels * tid / nth, p1 = panels * (tid + 1) / nth;
        /* a panel's slot is kc_max deep, so a shorter last K block keeps to its thread's slots; the
         * next N block's runs may take slots another thread still reads */
        if (jc > 0) {
#pragma omp barrier
        }
        for (int pc = k_lo; pc < k_hi && p0 < p1; pc += kern->KC) {
            const int kc = min_int(kern->KC, k_hi - pc), kc_pad = round_up(kc, KB);
            const float beta_k = pc == k_lo ? beta : 1.0f;
            for (int jp = p0; jp < p1; jp++)
                nnz_bf16_pack_b(p->B, pc, kc, jc + jp * NR, min_int(NR, nc - jp * NR), NR, kc_pad,
                                Bp + (size_t)jp * NR * p->kc_max);
            run_task(p, 0, p->M, true, jc, nc, p0, p1, pc, kc, kc_pad, (size_t)p->kc_max, my_ap, Bp, C, ldc, beta_k);
        }
    }
}

/* C = alpha * op(A)[:, k_lo:k_hi) op(B)[k_lo:k_hi, :) + beta * C: the header's loops, shared out
 * among the nth threads of the enclosing team (this is thread tid; nth = 1: alone, no barrier).
 * my_ap: this thread's A block; Bp: the B block, shared by the team. */
static void run_blocks(const plan *p, int k_lo, int k_hi, float beta, float *C, int ldc, nnz_bf16 *my_ap,
                       nnz_bf16 *Bp, int tid, int nth) {
    const nnz_bf16_kernel *kern = p->kern;
    const int NR = kern->NR, KB = kern->KB, M = p->M, N = p->N;
    if (p->m_blocks == 1 && nth > 1) { /* one M block: every B panel has one reader */
        run_own_panels(p, k_lo, k_hi, beta, C, ldc, my_ap, Bp, tid, nth);
        return;
    }
    for (int jc = 0; jc < N; jc += kern->NC) {
        const int nc = min_int(kern->NC, N - jc), panels = ceil_div(nc, NR);
        /* enough tasks for every thread: split the panels into runs when M gives few blocks */
        const int runs = min_int(panels, ceil_div(2 * nth, p->m_blocks)), tasks = p->m_blocks * runs;
        for (int pc = k_lo; pc < k_hi; pc += kern->KC) {
            const int kc = min_int(kern->KC, k_hi - pc), kc_pad = round_up(kc, KB);
            const float beta_k = pc == k_lo ? beta : 1.0f; /* later K blocks accumulate */
            for (int jp = panels * tid / nth; jp < panels * (tid + 1) / nth; jp++)
                nnz_bf16_pack_b(p->B, pc, kc, jc + jp * NR, min_int(NR, nc - jp * NR), NR, kc_pad,
                                Bp + (size_t)jp * NR * kc_pad);
            if (nth > 1) {
#pragma omp barrier
            }
            int packed_ic = -1; /* a thread's next task often has the same rows: packed once */
            for (int t = tasks * tid / nth; t < tasks * (tid + 1) / nth; t++) {
                const int ic = (t / runs) * p->mc_max, mc = min_int(p->mc_max, M - ic);
                const int run = t % runs;
                const int p0 = panels * run / runs, p1 = panels * (run + 1) / runs;
                if (mc <= 0) continue;
                run_task(p, ic, mc, ic != packed_ic, jc, nc, p0, p1, pc, kc, kc_pad, (size_t)kc_pad, my_ap, Bp, C, ldc,
                         beta_k);
                packed_ic = ic;
            }
            if (nth > 1) { /* Bp is packed again for the next block */
#pragma omp barrier
            }
        }
    }
}

/* how many groups K is split into (1: none); the shape alone decides */
static int k_groups(const plan *p, int K) {
    const int tasks = p->m_blocks * ceil_div(p->N, p->kern->NR);
    if (tasks >= KSPLIT_TASKS || K < KSPLIT_MIN_K) return 1;
    int groups = min_int(KSPLIT_MAX_GROUPS, K / (KSPLIT_MIN_K / 2));
    const size_t mn = (size_t)p->M * p->N;
    while (groups > 1 && (size_t)groups * mn > KSPLIT_MAX_FLOATS) groups--;
    return groups;
}

/* group g's K range starts here: multiples of KB, so only the last range is padded */
static int group_start(int K, int groups, int g, int KB) {
    const int k = round_up((int)((int64_t)K * g / groups), KB);
    return k < K ? k : K;
}

static bool run_split(const plan *p, int K, int groups, float beta, float *C, int ldc, int threads) {
    const nnz_bf16_kernel *kern = p->kern;
    const size_t mn = (size_t)p->M * p->N, a_floats = (size_t)p->mc_max * p->kc_max,
                 b_floats = (size_t)p->kc_max * p->nc_max;
    float *part = nnz_alloc((size_t)groups * mn * sizeof(float), "bf16 GEMM K-split partials");
    nnz_bf16 *Ap = part ? nnz_alloc((size_t)threads * a_floats * sizeof(nnz_bf16), "bf16 GEMM packed A") : NULL;
    nnz_bf16 *Bp = Ap ? nnz_alloc((size_t)threads * b_floats * sizeof(nnz_bf16), "bf16 GEMM packed B") : NULL;
    if (!Bp) {
        nnz_free(part);
        nnz_free(Ap);
        return false;
    }
    const int M = p->M, N = p->N;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        const int tid = omp_get_thread_num();
        if (kern->thread_enter) kern->thread_enter();
#pragma omp for schedule(static)
        for (int g = 0; g < groups; g++)
            run_blocks(p, group_start(K, groups, g, kern->KB), group_start(K, groups, g + 1, kern->KB), 0.0f,
                       part + (size_t)g * mn, N, Ap + (size_t)tid * a_floats, Bp + (size_t)tid * b_floats, 0, 1);
        if (kern->thread_leave) kern->thread_leave();
        /* C = (beta * C + partial 0) + partial 1 + ..., in group order */
#pragma omp for schedule(static)
        for (int i = 0; i < M; i++) {
            float *c = C + (size_t)i * ldc;
            const float *q = part + (size_t)i * N;
            if (beta == 0.0f) {
#pragma omp simd
                for (int j = 0; j < N; j++) c[j] = q[j];
            } else {
#pragma omp simd
                for (int j = 0; j < N; j++) c[j] = beta * c[j] + q[j];
            }
            for (int g = 1; g < groups; g++) {
                q += mn;
#pragma omp simd
                for (int j = 0; j < N; j++) c[j] += q[j];
            }
        }
    }
    nnz_free(part);
    nnz_free(Ap);
    nnz_free(Bp);
    return true;
}

bool nnz_gemm_bf16_blocked(const nnz_bf16_kernel *kern, int M, int N, int K, float alpha, const nnz_bf16_src *A,
                           const nnz_bf16_src *B, float beta, float *C, int ldc) {
    const int MR = kern->MR, NR = kern->NR, KB = kern->KB;
    plan p = {.kern = kern, .A = A, .B = B, .M = M, .N = N, .alpha = alpha};
    /* Even blocks: MC rows split M into equal parts (a multiple of MR), so a 2-thread run of
     * M = 1024 does not end on a thin block. Depends on M only, never on the thread count. */
    p.m_blocks = ceil_div(M, kern->MC);
    p.mc_max = round_up(ceil_div(M, p.m_blocks), MR);
    p.nc_max = min_int(kern->NC, round_up(N, NR));
    p.kc_max = min_int(kern->KC, round_up(K, KB));
    const int threads = omp_in_parallel() ? 1 : nnz_threads();
    const int groups = k_groups(&p, K);
    if (groups > 1) return run_split(&p, K, groups, beta, C, ldc, threads);

    nnz_bf16 *Bp = nnz_alloc((size_t)p.kc_max * p.nc_max * sizeof(nnz_bf16), "bf16 GEMM packed B");
    nnz_bf16 *Ap = nnz_alloc((size_t)threads * p.mc_max * p.kc_max * sizeof(nnz_bf16), "bf16 GEMM packed A");
    if (!Ap || !Bp) {
        nnz_free(Ap);
        nnz_free(Bp);
        return false;
    }
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        if (kern->thread_enter) kern->thread_enter();
        const int tid = omp_get_thread_num();
        run_blocks(&p, 0, K, beta, C, ldc, Ap + (size_t)tid * p.mc_max * p.kc_max, Bp, tid, omp_get_num_threads());
        if (kern->thread_leave) kern->thread_leave();
    }
    nnz_free(Ap);
    nnz_free(Bp);
    return true;
}

size_t nnz_gemm_bf16_blocked_bytes(const nnz_bf16_kernel *kern, int threads) {
    const size_t a = (size_t)kern->MC * kern->KC, b = (size_t)kern->KC * kern->NC;
    const size_t whole = (b + (size_t)threads * a) * sizeof(nnz_bf16);
    /* a split product has fewer than KSPLIT_TASKS panels of N: its B block is that narrow */
    const size_t b_split = (size_t)kern->KC * KSPLIT_TASKS * kern->NR;
    const size_t split = KSPLIT_MAX_FLOATS * sizeof(float) + (size_t)threads * (a + b_split) * sizeof(nnz_bf16);
    return whole > split ? whole : split;
}
