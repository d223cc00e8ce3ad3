/* The micro-kernels for one element type T and one tile shape TT_KMR x TT_KNV
 * vectors (included by _microkernel.h, once per type and shape).
 *
 * TT_KERNEL's inputs are packed panels (see _gemm.pyx, sections 2 and 3):
 *   a: kc steps of MR values  -- column p of an MR-row sliver of A
 *   b: kc steps of NR values  -- row p of an NR-column sliver of B (aligned)
 * Each step p is a rank-1 update of the MR x NR tile:
 *   acc[i][:] += a[p, i] * b[p, :]      (MR broadcasts, NV loads, MR*NV FMAs)
 * The tile never leaves registers until the end, where it is written to C at
 * c[i*rsc + j*csc]. A full tile of a row-major C (csc == 1) is stored as
 * vectors; an edge tile (mr < MR or nr < NR) or a transposed C goes through a
 * small buffer, so nothing outside C is touched. The packed panels are
 * zero-padded, so the arithmetic is the same for every tile.
 *
 * TT_KERNEL_DIRECT does the same arithmetic on A and B where they lie, for
 * small products (_gemm.pyx, section 6): A[i, p] at a[i*rsa + p*csa], row p
 * of B at b + p*rsb (NR values, any alignment). Rows of A past mr re-read row
 * mr - 1 (their sums are never stored), so nothing outside A is read either.
 */

/* Write the accumulators acc[ROWS][TT_KNV] to C (the end of both kernels). */
#define TT_STORE_TILE(acc, ROWS)                                                          \
    do {                                                                            \
        if (nr == TT_KNR && csc == 1) { /* full-width rows of a row-major C */      \
            _Pragma("GCC unroll 16")                                                \
            for (int i = 0; i < (ROWS); i++) {                                      \
                if (i >= mr)        /* a bottom edge tile: only the rows that exist */ \
                    break;                                                          \
                _Pragma("GCC unroll 4")                                             \
                for (int j = 0; j < TT_KNV; j++) {                                  \
                    vec_u *dst = (vec_u *)(c + i * rsc + j * VL);                   \
                    *dst = accumulate ? *dst + acc[i][j] : acc[i][j];               \
                }                                                                   \
            }                                                                       \
            break;                                                                  \
        }                                                                           \
        if (TT_MASKED_STORES && csc == 1) { /* right edge of a row-major C */      \
            _Pragma("GCC unroll 16")                                                \
            for (int i = 0; i < (ROWS); i++) {                                      \
                if (i >= mr)                                                        \
                    break;                                                          \
                _Pragma("GCC unroll 4")                                             \
                for (int j = 0; j < TT_KNV; j++)                                    \
                    if (nr > j * VL)                                                \
                        TT_STORE_MASKED(c + i * rsc + j * VL, acc[i][j],            \
                                        nr - j * VL, accumulate);                   \
            }                                                                       \
            break;                                                                  \
        }                                                                           \
        /* edge tile or strided C: spill the registers, copy the part that exists */ \
        vec tile[ROWS][TT_KNV];                                                     \
        _Pragma("GCC unroll 16")                                                    \
        for (int i = 0; i < (ROWS); i++)                                            \
            _Pragma("GCC unroll 4")                                                 \
            for (int j = 0; j < TT_KNV; j++)                                        \
                tile[i][j] = acc[i][j];                                             \
        const T *t = (const T *)tile;                                               \
        for (int i = 0; i < mr; i++)                                                \
            for (int j = 0; j < nr; j++)                                            \
                c[i * rsc + j * csc] = (accumulate ? c[i * rsc + j * csc] : 0)      \
                                       + t[i * TT_KNR + j];                         \
    } while (0)

static inline void TT_KERNEL(long kc, const T *restrict a, const T *restrict b,
                             T *restrict c, long rsc, long csc, int mr, int nr,
                             int accumulate)
{
    typedef T vec __attribute__((vector_size(TT_VEC_BYTES)));
    /* The same vector, but at any address: rows of C are not aligned. */
    typedef T vec_u __attribute__((vector_size(TT_VEC_BYTES), aligned(sizeof(T))));
    enum { VL = TT_VEC_BYTES / sizeof(T) };

    /* Ask for the C tile now, so it is in cache when the sum is written back. */
    for (int i = 0; i < mr; i++) {
        __builtin_prefetch(c + i * rsc, 1);
        __builtin_prefetch(c + i * rsc + (nr - 1) * csc, 1);
    }

    vec acc[TT_KMR][TT_KNV];
#pragma GCC unroll 16
    for (int i = 0; i < TT_KMR; i++)
#pragma GCC unroll 4
        for (int j = 0; j < TT_KNV; j++)
            acc[i][j] = (vec){0};

    for (long p = 0; p < kc; p++) {
        const vec *brow = (const vec *)(b + p * TT_KNR);
        vec bv[TT_KNV];
#pragma GCC unroll 4
        for (int j = 0; j < TT_KNV; j++)
            bv[j] = brow[j];
#pragma GCC unroll 16
        for (int i = 0; i < TT_KMR; i++) {
            T ai = a[p * TT_KMR + i];             /* broadcast: scalar * vector */
#pragma GCC unroll 4
            for (int j = 0; j < TT_KNV; j++)
                acc[i][j] += ai * bv[j];          /* one FMA (-ffp-contract=fast) */
        }
    }
    TT_STORE_TILE(acc, TT_KMR);
}

/* TT_KERNEL_INDIRECT: TT_KERNEL with B's rows found through a table: row p of the
 * sliver is the NR values at b + boff[p] (any alignment). A convolution's B is
 * the im2col matrix, whose row for tap (c, i, j) is a shifted window of the
 * image: with the image laid out as planes shifted by j (conv's section 2),
 * that window is contiguous, so the table replaces writing im2col at all. */
static inline void TT_KERNEL_INDIRECT(long kc, const T *restrict a, const T *restrict b,
                                      const long *restrict boff, T *restrict c, long rsc,
                                      int mr, int nr, int accumulate)
{
    typedef T vec __attribute__((vector_size(TT_VEC_BYTES)));
    typedef T vec_u __attribute__((vector_size(TT_VEC_BYTES), aligned(sizeof(T))));
    enum { VL = TT_VEC_BYTES / sizeof(T) };
    const long csc = 1;

    for (int i = 0; i < mr; i++) {
        __builtin_prefetch(c + i * rsc, 1);
        __builtin_prefetch(c + i * rsc + nr - 1, 1);
    }
    vec acc[TT_KMR][TT_KNV];
#pragma GCC unroll 16
    for (int i = 0; i < TT_KMR; i++)
#pragma GCC unroll 4
        for (int j = 0; j < TT_KNV; j++)
            acc[i][j] = (vec){0};

    for (long p = 0; p < kc; p++) {
        const vec_u *brow = (const vec_u *)(b + boff[p]);
        vec bv[TT_KNV];
#pragma GCC unroll 4
        for (int j = 0; j < TT_KNV; j++)
            bv[j] = brow[j];
#pragma GCC unroll 16
        for (int i = 0; i < TT_KMR; i++) {
            T ai = a[p * TT_KMR + i];
#pragma GCC unroll 4
            for (int j = 0; j < TT_KNV; j++)
                acc[i][j] += ai * bv[j];
        }
    }
    TT_STORE_TILE(acc, TT_KMR);
}

/* The direct kernel is always TT_MR rows tall (8 on AVX-512), also in the narrow
 * shape: each row of A is a stream with its own pointer, and 16 of them (with B's
 * and the step) do not fit in x86's general registers -- measured, the compiler
 * then shuttles pointers through vector registers every step. A row-major A
 * (csa == 1) gets its own copy of the loop: its row streams then just advance by
 * one element a step. */
static inline void TT_KERNEL_DIRECT(long kc, const T *restrict a, long rsa, long csa,
                                    const T *restrict b, long rsb, T *restrict c, long rsc,
                                    int mr, int nr, int accumulate)
{
    typedef T vec __attribute__((vector_size(TT_VEC_BYTES)));
    typedef T vec_u __attribute__((vector_size(TT_VEC_BYTES), aligned(sizeof(T))));
    enum { VL = TT_VEC_BYTES / sizeof(T) };
    const long csc = 1;

    const T *rows[TT_MR];
#pragma GCC unroll 16
    for (int i = 0; i < TT_MR; i++)
        rows[i] = a + (i < mr ? i : mr - 1) * rsa;

    vec acc[TT_MR][TT_KNV];
#pragma GCC unroll 16
    for (int i = 0; i < TT_MR; i++)
#pragma GCC unroll 4
        for (int j = 0; j < TT_KNV; j++)
            acc[i][j] = (vec){0};

#define TT_DIRECT_LOOP(CSA)                                                         \
    for (long p = 0; p < kc; p++) {                                                 \
        const vec_u *brow = (const vec_u *)(b + p * rsb);                           \
        vec bv[TT_KNV];                                                             \
        _Pragma("GCC unroll 4")                                                     \
        for (int j = 0; j < TT_KNV; j++)                                            \
            bv[j] = brow[j];                                                        \
        _Pragma("GCC unroll 16")                                                    \
        for (int i = 0; i < TT_MR; i++) {                                          \
            T ai = rows[i][p * (CSA)];                                              \
            _Pragma("GCC unroll 4")                                                 \
            for (int j = 0; j < TT_KNV; j++)                                        \
                acc[i][j] += ai * bv[j];                                            \
        }                                                                           \
    }
    if (csa == 1) {
        TT_DIRECT_LOOP(1)
    } else {
        TT_DIRECT_LOOP(csa)
    }
#undef TT_DIRECT_LOOP
    TT_STORE_TILE(acc, TT_MR);
}

/* TT_KERNEL_ROWS: the direct kernel with A's rows found through a table: row i of
 * the tile is a + aoff[i] (rows past mr re-read row mr - 1), contiguous along k; B
 * packed (rsb = NR) or in place. conv2d_grad_weight's A is the im2col matrix, whose
 * rows are windows of the image's shifted planes (_conv.pyx, section 2). */
static inline void TT_KERNEL_ROWS(long kc, const T *restrict a, const long *restrict aoff,
                                  const T *restrict b, long rsb, T *restrict c, long rsc,
                                  int mr, int nr, int accumulate)
{
    typedef T vec __attribute__((vector_size(TT_VEC_BYTES)));
    typedef T vec_u __attribute__((vector_size(TT_VEC_BYTES), aligned(sizeof(T))));
    enum { VL = TT_VEC_BYTES / sizeof(T) };
    const long csc = 1;

    const T *rows[TT_MR];
#pragma GCC unroll 16
    for (int i = 0; i < TT_MR; i++)
        rows[i] = a + aoff[i < mr ? i : mr - 1];

    vec acc[TT_MR][TT_KNV];
#pragma GCC unroll 16
    for (int i = 0; i < TT_MR; i++)
#pragma GCC unroll 4
        for (int j = 0; j < TT_KNV; j++)
            acc[i][j] = (vec){0};
    for (long p = 0; p < kc; p++) {
        const vec_u *brow = (const vec_u *)(b + p * rsb);
        vec bv[TT_KNV];
#pragma GCC unroll 4
        for (int j = 0; j < TT_KNV; j++)
            bv[j] = brow[j];
#pragma GCC unroll 16
        for (int i = 0; i < TT_MR; i++) {
            T ai = rows[i][p];
#pragma GCC unroll 4
            for (int j = 0; j < TT_KNV; j++)
                acc[i][j] += ai * bv[j];
        }
    }
    TT_STORE_TILE(acc, TT_MR);
}

#undef TT_STORE_TILE

#ifdef TT_WITH_HELPERS
/* Transposing pack: dst[p*width + i] = src[i*ld + p] for i < rows, p < kc,
 * zeros for rows <= i < width. This is packing when the operand's k axis is
 * the contiguous one (A row-major, or B given as a transposed view): element
 * by element it costs a load and a store each, as much as the arithmetic it
 * feeds when a dimension is small. Instead, move 4 x 4 blocks: four vector
 * loads along p, a 4 x 4 transpose in registers (8 shuffles), four vector
 * stores along i. __builtin_shuffle is portable GCC; on x86 it becomes
 * unpcklps/unpckhps-style instructions. */
static inline void TT_PACK_T(long rows, long kc, const T *restrict src, long ld,
                             T *restrict dst, long width)
{
    typedef T v4 __attribute__((vector_size(4 * sizeof(T)), aligned(sizeof(T))));
    typedef TT_INT m4 __attribute__((vector_size(4 * sizeof(T))));
    const m4 lo = {0, 4, 1, 5}, hi = {2, 6, 3, 7}, first = {0, 1, 4, 5}, second = {2, 3, 6, 7};
    long i = 0, p;
    for (; i + 4 <= rows; i += 4) {
        const T *s = src + i * ld;
        for (p = 0; p + 4 <= kc; p += 4) {
            v4 r0 = *(const v4 *)(s + p), r1 = *(const v4 *)(s + ld + p);
            v4 r2 = *(const v4 *)(s + 2 * ld + p), r3 = *(const v4 *)(s + 3 * ld + p);
            v4 t0 = __builtin_shuffle(r0, r1, lo), t1 = __builtin_shuffle(r0, r1, hi);
            v4 t2 = __builtin_shuffle(r2, r3, lo), t3 = __builtin_shuffle(r2, r3, hi);
            *(v4 *)(dst + p * width + i) = __builtin_shuffle(t0, t2, first);
            *(v4 *)(dst + (p + 1) * width + i) = __builtin_shuffle(t0, t2, second);
            *(v4 *)(dst + (p + 2) * width + i) = __builtin_shuffle(t1, t3, first);
            *(v4 *)(dst + (p + 3) * width + i) = __builtin_shuffle(t1, t3, second);
        }
        for (; p < kc; p++)
            for (int q = 0; q < 4; q++)
                dst[p * width + i + q] = s[q * ld + p];
    }
    for (; i < rows; i++)
        for (p = 0; p < kc; p++)
            dst[p * width + i] = src[i * ld + p];
    for (; i < width; i++)
        for (p = 0; p < kc; p++)
            dst[p * width + i] = 0;
}

/* dst[0:n] = src[0:n] in whole vectors, for conv's im2col, whose runs are
 * short (an output row, or the part of one inside a sliver): a loop of
 * unknown length pays a prologue and an epilogue (or a memmove call) every
 * time; NV fixed vector moves per step do not. It may read and write up to
 * one vector minus one element past n; the caller leaves that room. */
static inline void TT_COPY(T *restrict dst, const T *restrict src, long n)
{
    typedef T vec_u __attribute__((vector_size(TT_VEC_BYTES), aligned(sizeof(T))));
    enum { VL = TT_VEC_BYTES / sizeof(T) };
    for (long q = 0; q < n; q += TT_NR)
#pragma GCC unroll 4
        for (int v = 0; v < TT_NV; v++)
            if (q + v * VL < n)
                *(vec_u *)(dst + q + v * VL) = *(const vec_u *)(src + q + v * VL);
}

#endif
