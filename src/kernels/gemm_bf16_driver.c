/* The blocked bf16 GEMM driver (loop order and determinism in gemm_bf16_driver.h). */
#include "kernels/gemm_bf16_driver.h"

#include <omp.h>

static int round_up(int x, int m) { return (x + m - 1) / m * m; }
static int ceil_div(int x, int m) { return (x + m - 1) / m; }
static int min_int(int a, int b) { return a < b ? a : b; }

bool nnz_gemm_bf16_blocked(const nnz_bf16_kernel *kern, bool transA, bool transB, int M, int N, int K,
                           float alpha, const void *A, int lda, const void *B, int ldb, bool f32in, float beta,
                           float *C, int ldc) {
    const int MR = kern->MR, NR = kern->NR, KB = kern->KB;
    const nnz_bf16_src a_src = {A, lda, transA, f32in}, b_src = {B, ldb, transB, f32in};
    /* Even blocks: MC rows split M into equal parts (a multiple of MR), so a 2-thread run of
     * M = 1024 does not end on a thin block. Depends on M only, never on the thread count. */
    const int m_blocks = ceil_div(M, kern->MC);
    const int mc_max = round_up(ceil_div(M, m_blocks), MR);
    const int nc_max = min_int(kern->NC, round_up(N, NR));
    const int kc_max = min_int(kern->KC, round_up(K, KB));
    const int threads = omp_in_parallel() ? 1 : nnz_threads();

    nnz_bf16 *Bp = nnz_alloc((size_t)kc_max * nc_max * sizeof(nnz_bf16), "bf16 GEMM packed B");
    nnz_bf16 *Ap = nnz_alloc((size_t)threads * mc_max * kc_max * sizeof(nnz_bf16), "bf16 GEMM packed A");
    if (!Ap || !Bp) {
        nnz_free(Ap);
        nnz_free(Bp);
        return false;
    }

#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        if (kern->thread_enter) kern->thread_enter();
        nnz_bf16 *my_ap = Ap + (size_t)omp_get_thread_num() * mc_max * kc_max;
        for (int jc = 0; jc < N; jc += kern->NC) {
            const int nc = min_int(kern->NC, N - jc), panels = ceil_div(nc, NR);
            /* enough tasks for every thread: split the panels into runs when M gives few blocks */
            const int runs = min_int(panels, ceil_div(2 * threads, m_blocks));
            for (int pc = 0; pc < K; pc += kern->KC) {
                const int kc = min_int(kern->KC, K - pc), kc_pad = round_up(kc, KB);
                const float beta_k = pc == 0 ? beta : 1.0f; /* later K blocks accumulate */
#pragma omp for schedule(static)
                for (int jp = 0; jp < panels; jp++)
                    nnz_bf16_pack_b(&b_src, pc, kc, jc + jp * NR, min_int(NR, nc - jp * NR), NR, kc_pad,
                                    Bp + (size_t)jp * NR * kc_pad);
#pragma omp for schedule(static)
                for (int t = 0; t < m_blocks * runs; t++) {
                    const int ic = (t / runs) * mc_max, mc = min_int(mc_max, M - ic);
                    const int run = t % runs;
                    const int p0 = panels * run / runs, p1 = panels * (run + 1) / runs;
                    if (mc <= 0) continue;
                    for (int ir = 0; ir < mc; ir += MR)
                        nnz_bf16_pack_a(&a_src, ic + ir, min_int(MR, mc - ir), pc, kc, MR, KB, kc_pad,
                                        my_ap + (size_t)ir * kc_pad);
                    for (int jp = p0; jp < p1; jp++)
                        for (int ir = 0; ir < mc; ir += MR)
                            kern->ukr(kc_pad, my_ap + (size_t)ir * kc_pad, Bp + (size_t)jp * NR * kc_pad,
                                      C + (size_t)(ic + ir) * ldc + jc + jp * NR, ldc, min_int(MR, mc - ir),
                                      min_int(NR, nc - jp * NR), alpha, beta_k);
                }
            }
        }
        if (kern->thread_leave) kern->thread_leave();
    }
    nnz_free(Ap);
    nnz_free(Bp);
    return true;
}
