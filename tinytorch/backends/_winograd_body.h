/* Winograd F(2x2, 3x3) transforms for one element type T (included by _winograd.h). */

/* dst[0:q] = the first q (< VL) elements of x: a half-vector store and at most
 * VL/2 - 1 scalar ones. (A loop over q would become a memcpy call per vector.) */
static inline void TT_STORE_PART(T *restrict dst, const T *restrict x, long q)
{
    enum { VL = TT_WB / sizeof(T) };
    long i = 0;
    if (q >= VL / 2) {
        __builtin_memcpy(dst, x, TT_WB / 2);
        i = VL / 2;
    }
    for (; i < q; i++)
        dst[i] = x[i];
}

/* first[i] = src[2i], second[i] = src[2i + 1] for 2i (+1) < n: splitting a row of the
 * image into its even and odd columns. Two vector loads and two shuffles per VL pairs
 * instead of a strided load and a store per element; never reads src past n. */
static inline void TT_SPLIT(const T *restrict src, long n, T *restrict first,
                            T *restrict second)
{
    typedef T v __attribute__((vector_size(TT_WB), aligned(sizeof(T))));
    typedef TT_INT mask __attribute__((vector_size(TT_WB)));
    enum { VL = TT_WB / sizeof(T) };
    const mask evens = TT_EVENS, odds = TT_ODDS;
    long i = 0;
    for (; 2 * i + 2 * VL <= n; i += VL) {
        v a = *(const v *)(src + 2 * i), b = *(const v *)(src + 2 * i + VL);
        *(v *)(first + i) = __builtin_shuffle(a, b, evens);
        *(v *)(second + i) = __builtin_shuffle(a, b, odds);
    }
    for (; 2 * i < n; i++) {
        first[i] = src[2 * i];
        if (2 * i + 1 < n)
            second[i] = src[2 * i + 1];
    }
}

/* dst[2i] = first[i], dst[2i + 1] = second[i] for 2i (+1) < n: the inverse of TT_SPLIT
 * (conv's col2im merges the even and odd columns of a stride-2 image back). */
static inline void TT_MERGE(const T *restrict first, const T *restrict second, long n,
                            T *restrict dst)
{
    typedef T v __attribute__((vector_size(TT_WB), aligned(sizeof(T))));
    typedef TT_INT mask __attribute__((vector_size(TT_WB)));
    enum { VL = TT_WB / sizeof(T) };
    const mask lo = TT_LO, hi = TT_HI;
    long i = 0;
    for (; 2 * i + 2 * VL <= n; i += VL) {
        v a = *(const v *)(first + i), b = *(const v *)(second + i);
        *(v *)(dst + 2 * i) = __builtin_shuffle(a, b, lo);
        *(v *)(dst + 2 * i + VL) = __builtin_shuffle(a, b, hi);
    }
    for (; 2 * i < n; i++) {
        dst[2 * i] = first[i];
        if (2 * i + 1 < n)
            dst[2 * i + 1] = second[i];
    }
}

/* V = B^T d B for n consecutive tiles of one row of tiles, one channel.
 *
 * e, o: the even and odd column planes of the padded image at row 2ty, column tx
 * (row stride `half`): tile tx + j reads columns e[j], o[j], e[j+1], o[j+1] of
 * rows 0..3. dst: this run's first column in the panel of xi = 0; the panel of xi
 * is at dst + xi * vstride.
 *
 * It reads whole vectors, up to VL - 1 columns past the run (the planes have that
 * slack), and writes exactly n columns: a run can end at the end of a panel row
 * whose successor is already written. */
static inline void TT_WIN_IN(const T *restrict e, const T *restrict o, long half,
                             T *restrict dst, long vstride, long n)
{
    typedef T v __attribute__((vector_size(TT_WB), aligned(sizeof(T))));
    enum { VL = TT_WB / sizeof(T) };
    for (long j = 0; j < n; j += VL) {
        v w[4][4], out[16];
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {                  /* d B, row r of the patch */
            v e0 = *(const v *)(e + r * half + j), e1 = *(const v *)(e + r * half + j + 1);
            v o0 = *(const v *)(o + r * half + j), o1 = *(const v *)(o + r * half + j + 1);
            w[r][0] = e0 - e1;
            w[r][1] = o0 + e1;
            w[r][2] = e1 - o0;
            w[r][3] = o0 - o1;
        }
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {                  /* B^T (d B), column k */
            out[k] = w[0][k] - w[2][k];
            out[4 + k] = w[1][k] + w[2][k];
            out[8 + k] = w[2][k] - w[1][k];
            out[12 + k] = w[1][k] - w[3][k];
        }
        if (j + VL <= n) {
#pragma GCC unroll 16
            for (int xi = 0; xi < 16; xi++)
                *(v *)(dst + xi * vstride + j) = out[xi];
        } else {                                       /* the end of the run: exactly */
            for (int xi = 0; xi < 16; xi++)
                TT_STORE_PART(dst + xi * vstride + j, (const T *)&out[xi], n - j);
        }
    }
}

/* Y = A^T M A for n consecutive tiles of one row of tiles, one output channel.
 *
 * m: the run's first column in M[0]; M[xi] at m + xi * mstride (reads up to VL - 1
 * columns past the run: the caller leaves slack). Writes exactly `cols` outputs
 * (2n, or 2n - 1 at an odd right edge) to each of out0 (row 2ty) and, unless it is
 * NULL (an odd bottom edge), out1 (row 2ty + 1): the caller's array, no overshoot.
 * The two outputs of a tile are neighbours, so y[.][0] and y[.][1] of VL tiles
 * interleave into 2 VL consecutive outputs: two shuffles. */
static inline void TT_WIN_OUT(const T *restrict m, long mstride, long n,
                              T *restrict out0, T *restrict out1, long cols)
{
    typedef T v __attribute__((vector_size(TT_WB), aligned(sizeof(T))));
    typedef TT_INT mask __attribute__((vector_size(TT_WB)));
    enum { VL = TT_WB / sizeof(T) };
    const mask lo = TT_LO, hi = TT_HI;
    for (long j = 0; j < n; j += VL) {
        v u[2][4];
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {                  /* A^T M, column k */
            v m0 = *(const v *)(m + k * mstride + j), m1 = *(const v *)(m + (4 + k) * mstride + j);
            v m2 = *(const v *)(m + (8 + k) * mstride + j);
            v m3 = *(const v *)(m + (12 + k) * mstride + j);
            u[0][k] = m0 + m1 + m2;
            u[1][k] = m1 - m2 - m3;
        }
#pragma GCC unroll 2
        for (int i = 0; i < 2; i++) {                  /* (A^T M) A, output row i */
            T *row = i ? out1 : out0;
            if (!row)
                break;
            v y0 = u[i][0] + u[i][1] + u[i][2], y1 = u[i][1] - u[i][2] - u[i][3];
            v first = __builtin_shuffle(y0, y1, lo), second = __builtin_shuffle(y0, y1, hi);
            long at = 2 * j;                           /* the end of the row: exactly */
            if (at + VL <= cols)
                *(v *)(row + at) = first;
            else
                TT_STORE_PART(row + at, (const T *)&first, cols - at);
            if (at + 2 * VL <= cols)
                *(v *)(row + at + VL) = second;
            else if (at + VL < cols)
                TT_STORE_PART(row + at + VL, (const T *)&second, cols - at - VL);
        }
    }
}

/* (A dY A^T) for n consecutive tiles of one row of tiles, one channel of the output
 * gradient: the transform of the weight gradient (A = (A^T)^T, 4 x 2).
 *
 * e0, o0 (e1, o1): the even and odd columns of gradient row 2ty (2ty + 1) from
 * column tx, zero past the edge: tile tx + j's 2 x 2 patch is e0[j], o0[j] / e1[j],
 * o1[j]. Reads whole vectors (the caller leaves slack), writes exactly n columns of
 * the 16 row-major matrices at dst + xi * gstride. */
static inline void TT_WIN_GRAD(const T *restrict e0, const T *restrict o0,
                               const T *restrict e1, const T *restrict o1,
                               T *restrict dst, long gstride, long n)
{
    typedef T v __attribute__((vector_size(TT_WB), aligned(sizeof(T))));
    enum { VL = TT_WB / sizeof(T) };
    for (long j = 0; j < n; j += VL) {
        v g00 = *(const v *)(e0 + j), g01 = *(const v *)(o0 + j);
        v g10 = *(const v *)(e1 + j), g11 = *(const v *)(o1 + j);
        v u[4][2], out[16];
        u[0][0] = g00;        u[0][1] = g01;             /* A g: rows 0..3 */
        u[1][0] = g00 + g10;  u[1][1] = g01 + g11;
        u[2][0] = g00 - g10;  u[2][1] = g01 - g11;
        u[3][0] = -g10;       u[3][1] = -g11;
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {                    /* (A g) A^T: columns 0..3 */
            out[4 * i] = u[i][0];
            out[4 * i + 1] = u[i][0] + u[i][1];
            out[4 * i + 2] = u[i][0] - u[i][1];
            out[4 * i + 3] = -u[i][1];
        }
        if (j + VL <= n) {
#pragma GCC unroll 16
            for (int xi = 0; xi < 16; xi++)
                *(v *)(dst + xi * gstride + j) = out[xi];
        } else {
            for (int xi = 0; xi < 16; xi++)
                TT_STORE_PART(dst + xi * gstride + j, (const T *)&out[xi], n - j);
        }
    }
}
