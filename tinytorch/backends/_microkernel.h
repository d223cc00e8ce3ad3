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
 * The kernels (packed, direct for small products, indirect for conv2d) and
 * two copy helpers are written once, for a type T and a tile shape, in
 * _microkernel_body.h and included four times below (float, double; normal
 * and narrow tile): C's version of a template.
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

/* The right edge of C (nr < NR columns of a tile) on AVX-512: a masked store writes
 * only the columns that exist, straight from the register. Without masks the tile
 * goes through a buffer and is copied element by element -- for a 10-column C
 * (a classifier layer) every tile is an edge tile, and that copy cost as much as
 * a fifth of the product. */
#if defined(__AVX512F__)
#include <immintrin.h>
#define TT_MASKED_STORES 1
/* dst[0 : min(n, VL)] (+)= v */
static inline void tt_store_masked_f32(float *dst, float v __attribute__((vector_size(64))),
                                       long n, int accumulate)
{
    __mmask16 m = n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
    __m512 x = (__m512)v;
    if (accumulate)
        x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, dst));
    _mm512_mask_storeu_ps(dst, m, x);
}
static inline void tt_store_masked_f64(double *dst, double v __attribute__((vector_size(64))),
                                       long n, int accumulate)
{
    __mmask8 m = n >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << n) - 1);
    __m512d x = (__m512d)v;
    if (accumulate)
        x = _mm512_add_pd(x, _mm512_maskz_loadu_pd(m, dst));
    _mm512_mask_storeu_pd(dst, m, x);
}
#else
#define TT_MASKED_STORES 0
#define tt_store_masked_f32(dst, v, n, accumulate) ((void)0)
#define tt_store_masked_f64(dst, v, n, accumulate) ((void)0)
#endif

/* Packed panels start on a cache line (and a vector) boundary. */
#define TT_ALIGN 64
static inline void *tt_aligned_alloc(size_t bytes)
{
    return aligned_alloc(TT_ALIGN, (bytes + TT_ALIGN - 1) / TT_ALIGN * TT_ALIGN);
}

/* The narrow shape: one vector wide and twice as tall (16 x 16 floats on AVX-512),
 * for products whose C is 16 columns or fewer (attention's heads, a 10-class
 * output layer): a 32-wide tile would compute twice the columns that exist. */
#define TT_MR_NARROW (2 * TT_MR)
#define TT_NR_NARROW_F32 (TT_VEC_BYTES / 4)
#define TT_NR_NARROW_F64 (TT_VEC_BYTES / 8)

#define T float
#define TT_INT int
#define TT_STORE_MASKED tt_store_masked_f32
#define TT_PACK_T tt_pack_transposed_f32
#define TT_COPY tt_copy_vectors_f32
#define TT_NR TT_NR_F32
#define TT_KMR TT_MR
#define TT_KNV TT_NV
#define TT_KNR TT_NR_F32
#define TT_KERNEL tt_kernel_f32
#define TT_KERNEL_DIRECT tt_kernel_direct_f32
#define TT_KERNEL_INDIRECT tt_kernel_indirect_f32
#define TT_KERNEL_ROWS tt_kernel_rows_f32
#define TT_WITH_HELPERS
#include "_microkernel_body.h"
#undef TT_WITH_HELPERS
#undef TT_KMR
#undef TT_KNV
#undef TT_KNR
#undef TT_KERNEL
#undef TT_KERNEL_DIRECT
#undef TT_KERNEL_INDIRECT
#undef TT_KERNEL_ROWS
#define TT_KMR TT_MR_NARROW
#define TT_KNV 1
#define TT_KNR TT_NR_NARROW_F32
#define TT_KERNEL tt_kernel_narrow_f32
#define TT_KERNEL_DIRECT tt_kernel_direct_narrow_f32
#define TT_KERNEL_INDIRECT tt_kernel_indirect_narrow_f32
#define TT_KERNEL_ROWS tt_kernel_rows_narrow_f32
#include "_microkernel_body.h"
#undef TT_KMR
#undef TT_KNV
#undef TT_KNR
#undef TT_KERNEL
#undef TT_KERNEL_DIRECT
#undef TT_KERNEL_INDIRECT
#undef TT_KERNEL_ROWS
#undef T
#undef TT_INT
#undef TT_STORE_MASKED
#undef TT_PACK_T
#undef TT_COPY
#undef TT_NR

#define T double
#define TT_INT long long
#define TT_STORE_MASKED tt_store_masked_f64
#define TT_PACK_T tt_pack_transposed_f64
#define TT_COPY tt_copy_vectors_f64
#define TT_NR TT_NR_F64
#define TT_KMR TT_MR
#define TT_KNV TT_NV
#define TT_KNR TT_NR_F64
#define TT_KERNEL tt_kernel_f64
#define TT_KERNEL_DIRECT tt_kernel_direct_f64
#define TT_KERNEL_INDIRECT tt_kernel_indirect_f64
#define TT_KERNEL_ROWS tt_kernel_rows_f64
#define TT_WITH_HELPERS
#include "_microkernel_body.h"
#undef TT_WITH_HELPERS
#undef TT_KMR
#undef TT_KNV
#undef TT_KNR
#undef TT_KERNEL
#undef TT_KERNEL_DIRECT
#undef TT_KERNEL_INDIRECT
#undef TT_KERNEL_ROWS
#define TT_KMR TT_MR_NARROW
#define TT_KNV 1
#define TT_KNR TT_NR_NARROW_F64
#define TT_KERNEL tt_kernel_narrow_f64
#define TT_KERNEL_DIRECT tt_kernel_direct_narrow_f64
#define TT_KERNEL_INDIRECT tt_kernel_indirect_narrow_f64
#define TT_KERNEL_ROWS tt_kernel_rows_narrow_f64
#include "_microkernel_body.h"
#undef TT_KMR
#undef TT_KNV
#undef TT_KNR
#undef TT_KERNEL
#undef TT_KERNEL_DIRECT
#undef TT_KERNEL_INDIRECT
#undef TT_KERNEL_ROWS
#undef T
#undef TT_INT
#undef TT_STORE_MASKED
#undef TT_PACK_T
#undef TT_COPY
#undef TT_NR

#endif
