/* The GEMM micro-kernel: C[0:MR, 0:NR] (+)= Apanel @ Bpanel, held in registers.
 *
 * Why C and not Cython: a plain triple loop vectorises poorly (about 4.5
 * GFLOP/s measured here). GCC's vector extensions let us say exactly what we
 * mean -- "this is one SIMD register of floats" -- and the compiler keeps the
 * MR x NR accumulator tile in registers and emits one FMA per vector.
 *
 * Register budget (the tile must fit, or the compiler spills to memory):
 *   AVX-512: 32 registers of 64 bytes -> 8 x 2 vectors = 16 accumulators,
 *            2 for the row of B, the rest for broadcasts of A. 12 x 2 fits
 *            too and is a few percent faster in L1, but MR = 8 divides the
 *            usual channel counts (16, 32, 64): a 32-filter convolution
 *            wastes nothing on padding rows (12 would compute 36), measured
 *            ~15% faster on conv2d with plain matmul unchanged. 16
 *            independent accumulators still cover the FMA latency (4 cycles
 *            x 2 units = 8 needed).
 *   AVX/AVX2: 16 registers of 32 bytes -> 6 x 2 = 12 accumulators.
 *   anything else (portable fallback, e.g. TINYTORCH_PORTABLE=1 builds):
 *            16-byte vectors, 6 x 2; GCC lowers them to whatever the target has.
 * NR is two vectors wide: 32 floats / 16 doubles on AVX-512, 16 / 8 on AVX2.
 *
 * The kernel body (and two copy helpers, see there) is written once, for a
 * type T, in _microkernel_body.h and included twice below (float, double):
 * C's version of a template.
 */
#ifndef TT_MICROKERNEL_H
#define TT_MICROKERNEL_H

#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__)
#define TT_VEC_BYTES 64
#define TT_MR 8
#define TT_ISA "avx512"
#elif defined(__AVX__)
#define TT_VEC_BYTES 32
#define TT_MR 6
#define TT_ISA "avx2"
#else
#define TT_VEC_BYTES 16
#define TT_MR 6
#define TT_ISA "portable"
#endif
#define TT_NV 2                                   /* vectors per row of the tile */

#define TT_MR_F32 TT_MR
#define TT_NR_F32 (TT_NV * TT_VEC_BYTES / 4)
#define TT_MR_F64 TT_MR
#define TT_NR_F64 (TT_NV * TT_VEC_BYTES / 8)

/* Packed panels start on a cache line (and a vector) boundary. */
#define TT_ALIGN 64
static inline void *tt_aligned_alloc(size_t bytes)
{
    return aligned_alloc(TT_ALIGN, (bytes + TT_ALIGN - 1) / TT_ALIGN * TT_ALIGN);
}

#define T float
#define TT_INT int
#define TT_NR TT_NR_F32
#define TT_KERNEL tt_kernel_f32
#define TT_PACK_T tt_pack_transposed_f32
#define TT_COPY tt_copy_vectors_f32
#include "_microkernel_body.h"
#undef T
#undef TT_INT
#undef TT_NR
#undef TT_KERNEL
#undef TT_PACK_T
#undef TT_COPY

#define T double
#define TT_INT long long
#define TT_NR TT_NR_F64
#define TT_KERNEL tt_kernel_f64
#define TT_PACK_T tt_pack_transposed_f64
#define TT_COPY tt_copy_vectors_f64
#include "_microkernel_body.h"
#undef T
#undef TT_INT
#undef TT_NR
#undef TT_KERNEL
#undef TT_PACK_T
#undef TT_COPY

#endif
