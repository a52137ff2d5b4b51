/* AMX availability at compile time (private to the AMX kernel files). HAVE_AMX_INTRINSICS:
 * the compiler has the tile intrinsics (GCC 11, clang 12); TARGET_AMX enables them on a
 * function, so the files build without -mamx-*. The tile configuration itself is
 * nnz_amx_tiles_enter/leave (kernels.h, defined in amx_tiles.c). */
#ifndef NNZ_AMX_TILES_H
#define NNZ_AMX_TILES_H

#if defined(__x86_64__) && (defined(__clang__) ? __clang_major__ >= 12 : __GNUC__ >= 11)
#define HAVE_AMX_INTRINSICS 1
#define TARGET_AMX __attribute__((target("amx-tile,amx-bf16")))
#endif

#endif
