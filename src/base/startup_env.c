/* The environment that OpenMP and OpenBLAS read only when a process starts, set before
 * they start: the program re-executes itself once with it (nnz_prefer_startup_env). */
#include "base/base.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <time.h>
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

int nnz_other_tasks_running(const char *loadavg, int samples) {
    int seen[16];
    if (samples < 1) return -1;
    if (samples > 16) samples = 16;
    for (int i = 0; i < samples; i++) {
        if (i) nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL); /* 1 ms apart */
        FILE *f = fopen(loadavg, "r");
        int running = 0, total = 0;
        /* "0.12 0.89 1.58 3/412 5678": 3 tasks runnable now, this process among them */
        const bool ok = f && fscanf(f, "%*f %*f %*f %d/%d", &running, &total) == 2 && running >= 1;
        if (f) fclose(f);
        if (!ok) return -1;
        int j = i; /* insertion sort: the median at the end */
        for (; j > 0 && seen[j - 1] > running - 1; j--) seen[j] = seen[j - 1];
        seen[j] = running - 1;
    }
    return seen[samples / 2];
}

/* The spin that covers the short gaps between a training step's parallel regions: at 15 ns a
 * pause (measured, Emerald Rapids) about 0.45 ms; mbv2-tiny's step then wakes a sleeping
 * thread 9 times instead of 156, and trains 1.08x faster than passive on an idle machine. */
#define NNZ_IDLE_SPINCOUNT "30000"

void nnz_prefer_startup_env(char **argv) {
    if (!argv || !argv[0]) return;
    bool policy_set = false;
    if (!getenv("OMP_WAIT_POLICY") && !getenv("GOMP_SPINCOUNT")) {
        const char *loadavg = getenv("NNZ_LOADAVG_FILE"); /* tests: a file in /proc/loadavg's format */
        const int others = nnz_other_tasks_running(loadavg ? loadavg : "/proc/loadavg", 7);
        if (others == 0) /* idle: a short spin */
            policy_set = setenv("GOMP_SPINCOUNT", NNZ_IDLE_SPINCOUNT, 1) == 0 &&
                         setenv("NNZ_OMP_WAIT", "spin " NNZ_IDLE_SPINCOUNT " (no other task running at start)", 1) == 0;
        else
            policy_set = setenv("OMP_WAIT_POLICY", "passive", 1) == 0 &&
                         setenv("NNZ_OMP_WAIT", others > 0 ? "passive (other tasks running at start)"
                                                           : "passive (the load could not be read)", 1) == 0;
    }
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
    if (policy_set) unsetenv("OMP_WAIT_POLICY"), unsetenv("GOMP_SPINCOUNT"), unsetenv("NNZ_OMP_WAIT");
}

const char *nnz_omp_wait(void) {
    const char *chose = getenv("NNZ_OMP_WAIT"), *policy = getenv("OMP_WAIT_POLICY"), *spin = getenv("GOMP_SPINCOUNT");
    if (chose) return chose;
    if (policy) return policy;
    if (spin) return "GOMP_SPINCOUNT (set by the user)";
    return "the OpenMP runtime's default";
}
