/* The vector vocabulary of simd_avx512.h / simd_avx2.h with one lane: a *_simd.inc body
 * compiled with it is that kernel's plain-C path (NNZ_ISA=ref, or a CPU without AVX2).
 * Included only by the *_ref.c files that instantiate a body. */
#ifndef NNZ_SIMD_SCALAR_H
#define NNZ_SIMD_SCALAR_H

#include <stdbool.h>

#define TARGET
#define VLEN 1
typedef float vec;
typedef bool vmask;
#define vmask_first(r) ((r) > 0)
#define vmload(m, p) ((m) ? *(p) : 0.0f)
#define vmstore(p, m, v)   \
    do {                   \
        if (m) *(p) = (v); \
    } while (0)
/* a separate multiply and add: baseline x86-64 has no FMA instruction, and fmaf in software is slow */
#define vfma(a, b, c) ((a) * (b) + (c))
#define vadd(a, b) ((a) + (b))
#define vzero() 0.0f
#define vsub(a, b) ((a) - (b))
/* as the SIMD max/min: the second operand when either is NaN */
#define vmax(a, b) ((a) > (b) ? (a) : (b))
#define vmin(a, b) ((a) < (b) ? (a) : (b))
#define vset1(x) ((float)(x))
#define vbcast(p) (*(p))
#define vload(p) (*(p))
#define vstore(p, v) (*(p) = (v))

#endif
