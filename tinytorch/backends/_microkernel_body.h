/* The micro-kernel body for one element type T (included by _microkernel.h).
 *
 * Inputs are packed panels (see _gemm.pyx, sections 2 and 3):
 *   a: kc steps of MR values  -- column p of an MR-row sliver of A
 *   b: kc steps of NR values  -- row p of an NR-column sliver of B (aligned)
 * Each step p is a rank-1 update of the MR x NR tile:
 *   acc[i][:] += a[p, i] * b[p, :]      (MR broadcasts, NV loads, MR*NV FMAs)
 * The tile never leaves registers until the end, where it is written to C
 * (row stride ldc). An edge tile (mr < MR or nr < NR) goes through a small
 * buffer so nothing outside C is touched; the packed panels are zero-padded,
 * so the arithmetic is the same for every tile.
 */
static inline void TT_KERNEL(long kc, const T *restrict a, const T *restrict b,
                             T *restrict c, long ldc, int mr, int nr, int accumulate)
{
    typedef T vec __attribute__((vector_size(TT_VEC_BYTES)));
    /* The same vector, but at any address: rows of C are not aligned. */
    typedef T vec_u __attribute__((vector_size(TT_VEC_BYTES), aligned(sizeof(T))));
    enum { VL = TT_VEC_BYTES / sizeof(T) };

    vec acc[TT_MR][TT_NV];
#pragma GCC unroll 16
    for (int i = 0; i < TT_MR; i++)
#pragma GCC unroll 4
        for (int j = 0; j < TT_NV; j++)
            acc[i][j] = (vec){0};

    for (long p = 0; p < kc; p++) {
        const vec *brow = (const vec *)(b + p * TT_NR);
        vec bv[TT_NV];
#pragma GCC unroll 4
        for (int j = 0; j < TT_NV; j++)
            bv[j] = brow[j];
#pragma GCC unroll 16
        for (int i = 0; i < TT_MR; i++) {
            T ai = a[p * TT_MR + i];              /* broadcast: scalar * vector */
#pragma GCC unroll 4
            for (int j = 0; j < TT_NV; j++)
                acc[i][j] += ai * bv[j];          /* one FMA (-ffp-contract=fast) */
        }
    }

    if (mr == TT_MR && nr == TT_NR) {             /* full tile: straight to C */
#pragma GCC unroll 16
        for (int i = 0; i < TT_MR; i++)
#pragma GCC unroll 4
            for (int j = 0; j < TT_NV; j++) {
                vec_u *dst = (vec_u *)(c + i * ldc + j * VL);
                *dst = accumulate ? *dst + acc[i][j] : acc[i][j];
            }
        return;
    }
    /* edge tile: spill the registers, copy only the mr x nr part that exists */
    vec tile[TT_MR][TT_NV];
#pragma GCC unroll 16
    for (int i = 0; i < TT_MR; i++)
#pragma GCC unroll 4
        for (int j = 0; j < TT_NV; j++)
            tile[i][j] = acc[i][j];
    const T *t = (const T *)tile;
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++)
            c[i * ldc + j] = accumulate ? c[i * ldc + j] + t[i * TT_NR + j] : t[i * TT_NR + j];
}
