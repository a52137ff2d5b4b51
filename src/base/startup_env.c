/* The environment that OpenMP and OpenBLAS read only when a process starts, set before
 * they start: the program re-executes itself once with it (nnz_prefer_startup_env). */
#include "base/base.h"

#include <cblas.h>
#include <stdlib.h>
#include <strings.h>
#include <unistd.h>

const char *nnz_blas_core_better(const char *chosen, bool avx512, bool avx2_fma) {
    /* OpenBLAS 0.3.21 (Debian 12) falls back to its SSE3 Prescott kernels on an Intel CPU
     * model it does not know (Emerald Rapids, family 6 model 207): dense sgemm then runs at
     * a quarter of the speed its AVX-512 kernels reach on the same CPU. */
    if (!chosen || strcasecmp(chosen, "Prescott") != 0) return NULL;
    if (avx512) return "SkylakeX";
    if (avx2_fma) return "Haswell";
    return NULL;
}

const char *nnz_blas_core(void) { return openblas_get_corename(); }

void nnz_prefer_startup_env(char **argv) {
    if (!argv || !argv[0]) return;
    const bool policy_set = !getenv("OMP_WAIT_POLICY") && !getenv("GOMP_SPINCOUNT") &&
                            setenv("OMP_WAIT_POLICY", "passive", 1) == 0;
    bool changed = policy_set;
    const char *core = getenv("OPENBLAS_CORETYPE") ? NULL
                       : nnz_blas_core_better(nnz_blas_core(), nnz_isa_supported(NNZ_ISA_AVX512),
                                              nnz_isa_supported(NNZ_ISA_AVX2));
    if (core && setenv("OPENBLAS_CORETYPE", core, 1) == 0) {
        setenv("NNZ_OPENBLAS_CHOSE", nnz_blas_core(), 1); /* for nnz --version to say why */
        changed = true;
    }
    if (!changed) return;
    /* the link's target first: under valgrind (and other loaders) /proc/self/exe itself is
     * the loader, while readlink gives the program; the link is the fallback */
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        execv(self, argv);
    }
    execv("/proc/self/exe", argv);
    /* both failed: go on as the process started, and take back what would claim otherwise
     * (nnz --version would say OpenBLAS runs the kernels nnz asked for) */
    if (core) unsetenv("OPENBLAS_CORETYPE"), unsetenv("NNZ_OPENBLAS_CHOSE");
    if (policy_set) unsetenv("OMP_WAIT_POLICY");
}
