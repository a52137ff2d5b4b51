/* The AMX tile configuration shared by the AMX GEMM and SpMM (contract in kernels.h): palette 1,
 * all 8 tiles 16 rows x 64 bytes (16 fp32 or 32 bf16 per row). Loaded per thread before its
 * first tile instruction, released after its last. The OS permission is requested in
 * nnz_cpu() (arch_prctl); callers run this only when nnz_isa_supported(NNZ_ISA_AMX). */
#include "kernels/kernels.h"

#include "kernels/amx_tiles.h"

#ifdef HAVE_AMX_INTRINSICS
#include <immintrin.h>
#include <string.h>

typedef struct __attribute__((aligned(64))) {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

TARGET_AMX void nnz_amx_tiles_enter(void) {
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette_id = 1;
    for (int i = 0; i < 8; i++) {
        cfg.colsb[i] = 64;
        cfg.rows[i] = 16;
    }
    /* GCC's _tile_loadconfig tells the compiler it reads 8 bytes ("m" of a pointer), so the
     * stores to colsb/rows were dropped and ldtilecfg read stack garbage: #GP, SIGSEGV on the
     * first real AMX machine (Sapphire Rapids). The barrier makes all 64 bytes be written. */
    __asm__ volatile("" : : "r"(&cfg) : "memory");
    _tile_loadconfig(&cfg);
}

TARGET_AMX void nnz_amx_tiles_leave(void) { _tile_release(); }
#else
void nnz_amx_tiles_enter(void) {}
void nnz_amx_tiles_leave(void) {}
#endif
