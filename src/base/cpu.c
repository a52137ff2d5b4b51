/* CPU feature detection (cpuid + xgetbv), the Linux AMX permission request,
 * and the NNZ_ISA override. The feature table is the library's one global. */
#include "base/base.h"

#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

static nnz_cpu_features features;
static bool detected;
static int active_isa = -1; /* -1: not chosen yet */
static bool emulated_bf16_tiles;

#if defined(__x86_64__)
static uint64_t xgetbv0(void) {
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}

/* Linux 5.16+: tile data must be requested before the first AMX instruction. */
static bool request_amx_permission(void) {
#if defined(__linux__)
    enum { ARCH_GET_XCOMP_PERM = 0x1022, ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) return false;
    unsigned long bitmask = 0;
    if (syscall(SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &bitmask) != 0) return false;
    return (bitmask & (1ul << XFEATURE_XTILEDATA)) != 0;
#else
    return false;
#endif
}

static void detect(void) {
    uint32_t a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    bool osxsave = (c >> 27) & 1;
    bool fma = (c >> 12) & 1;
    uint64_t xcr0 = osxsave ? xgetbv0() : 0;
    bool ymm_os = (xcr0 & 0x6) == 0x6;
    bool zmm_os = (xcr0 & 0xE6) == 0xE6;
    bool tile_os = (xcr0 & 0x60000) == 0x60000;
    if (__get_cpuid_max(0, NULL) < 7) return;
    __cpuid_count(7, 0, a, b, c, d);
    features.fma = fma && ymm_os;
    features.avx2 = ((b >> 5) & 1) && ymm_os;
    features.avx512f = ((b >> 16) & 1) && zmm_os;
    features.avx512dq = ((b >> 17) & 1) && zmm_os;
    features.avx512bw = ((b >> 30) & 1) && zmm_os;
    features.avx512vl = ((b >> 31) & 1) && zmm_os;
    features.amx_bf16 = ((d >> 22) & 1) && tile_os;
    features.amx_tile = ((d >> 24) & 1) && tile_os;
    uint32_t a1, b1, c1, d1;
    __cpuid_count(7, 1, a1, b1, c1, d1);
    features.avx512_bf16 = ((a1 >> 5) & 1) && zmm_os;
    if (features.amx_tile && features.amx_bf16) features.amx_permitted = request_amx_permission();
}
#else
static void detect(void) {}
#endif

const nnz_cpu_features *nnz_cpu(void) {
    if (!detected) {
        detect();
        detected = true;
    }
    return &features;
}

bool nnz_isa_supported(nnz_isa isa) {
    const nnz_cpu_features *f = nnz_cpu();
    switch (isa) {
    case NNZ_ISA_REF: return true;
    case NNZ_ISA_AVX2: return f->avx2 && f->fma;
    case NNZ_ISA_AVX512: return f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq;
    case NNZ_ISA_AVX512BF16: return nnz_isa_supported(NNZ_ISA_AVX512) && f->avx512_bf16;
    case NNZ_ISA_AMX: return nnz_isa_supported(NNZ_ISA_AVX512BF16) && f->amx_tile && f->amx_bf16 && f->amx_permitted;
    default: return false;
    }
}

nnz_isa nnz_isa_best(void) {
    for (int i = NNZ_ISA_COUNT - 1; i > 0; i--)
        if (nnz_isa_supported((nnz_isa)i)) return (nnz_isa)i;
    return NNZ_ISA_REF;
}

static const char *const isa_names[NNZ_ISA_COUNT] = {"ref", "avx2", "avx512", "avx512bf16", "amx"};

const char *nnz_isa_name(nnz_isa isa) {
    return (isa >= 0 && isa < NNZ_ISA_COUNT) ? isa_names[isa] : "unknown";
}

nnz_status nnz_isa_set(nnz_isa isa) {
    if (isa < 0 || isa >= NNZ_ISA_COUNT)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "unknown ISA %d", (int)isa);
    if (!nnz_isa_supported(isa))
        return nnz_fail(NNZ_ERR_UNSUPPORTED, "this CPU (or OS) does not support the '%s' path; best available is '%s'",
                        nnz_isa_name(isa), nnz_isa_name(nnz_isa_best()));
    active_isa = isa;
    return NNZ_OK;
}

void nnz_isa_emulate_bf16_tiles(bool on) { emulated_bf16_tiles = on; }
bool nnz_isa_bf16_tiles_emulated(void) { return emulated_bf16_tiles; }

nnz_isa nnz_isa_active(void) {
    if (active_isa < 0) {
        nnz_isa choice = nnz_isa_best();
        const char *env = getenv("NNZ_ISA");
        if (env && *env) {
            int found = -1;
            for (int i = 0; i < NNZ_ISA_COUNT; i++)
                if (strcmp(env, isa_names[i]) == 0) found = i;
            if (found < 0)
                fprintf(stderr, "nnz: NNZ_ISA='%s' is not one of ref, avx2, avx512, avx512bf16, amx; using '%s'\n",
                        env, nnz_isa_name(choice));
            else if (!nnz_isa_supported((nnz_isa)found))
                fprintf(stderr, "nnz: NNZ_ISA='%s' is not supported by this CPU; using '%s'\n", env, nnz_isa_name(choice));
            else
                choice = (nnz_isa)found;
        }
        active_isa = choice;
    }
    return (nnz_isa)active_isa;
}

void nnz_cpu_describe(char *buf, size_t len) {
    const nnz_cpu_features *f = nnz_cpu();
    snprintf(buf, len, "%s%s%s%s%s%s%s%s%s%sactive: %s",
             f->avx2 ? "avx2 " : "", f->fma ? "fma " : "", f->avx512f ? "avx512f " : "",
             f->avx512bw ? "avx512bw " : "", f->avx512vl ? "avx512vl " : "", f->avx512dq ? "avx512dq " : "",
             f->avx512_bf16 ? "avx512_bf16 " : "", f->amx_tile ? "amx_tile " : "", f->amx_bf16 ? "amx_bf16 " : "",
             (f->amx_tile && !f->amx_permitted) ? "(amx not permitted by OS) " : "",
             nnz_isa_name(nnz_isa_active()));
}
