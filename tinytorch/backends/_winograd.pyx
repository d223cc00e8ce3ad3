# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Winograd F(2x2, 3x3): a 3x3, stride-1 convolution with 2.25x fewer multiplications.

Why it is fast. Computed directly (im2col + GEMM), every 2x2 block of
outputs costs 4 x 9 = 36 multiply-adds per (input, output) channel pair.
Winograd's minimal filtering algorithm gets the same 2x2 block from a 4x4
patch of input with 16: transform the patch (d -> B^T d B, additions only),
transform the filter once (g -> G g G^T), multiply the two 4x4 results
elementwise, and transform the product back (m -> A^T m A, additions only).
Summed over input channels, the elementwise products become 16 independent
matrix products -- one per position xi of the 4x4 -- which run on the packed
GEMM micro-kernel:

    M[xi] (F x tiles) = U[xi] (F x C) @ V[xi] (C x tiles),   xi = 0..15

The transforms are O(C + F) additions per tile against O(C * F) multiply-adds
in the products, so for the channel counts of a CNN the products dominate and
the convolution runs ~2x faster than the GEMM on im2col (benchmarks/kernels.py).

Read in order:
  1. the transforms  -- B^T d B, G g G^T, A^T m A for F(2x2, 3x3)
  2. one image       -- tiles in blocks that fit L2, 16 products per block
  3. entry point     -- images across threads (used by _conv.pyx for conv2d and,
                        with the filters rotated, for conv2d_grad_input)

Accuracy: the transforms only add and halve, so the error stays near the
direct method's: measured on the competition's layers (inputs uniform in
[-0.5, 0.5)), relative Frobenius error against float64 about 2e-7 in
float32 and 4e-16 in float64, 500x and 250000x inside the tolerances.
"""
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.stdlib cimport free
from libc.string cimport memset

from ._gemm cimport gemm, gemm_prepacked

cdef extern from "_microkernel.h" nogil:
    enum:
        TT_MR_F32
        TT_NR_F32
        TT_MR_F64
        TT_NR_F64
        TT_ALIGN
    void *tt_aligned_alloc(size_t nbytes)

cdef extern from "_winograd.h" nogil:
    enum:
        TT_WVL_F32
        TT_WVL_F64
    void tt_wino_in_f32(const float *e, const float *o, long half, float *dst, long vstride,
                        long n)
    void tt_wino_in_f64(const double *e, const double *o, long half, double *dst,
                        long vstride, long n)
    void tt_wino_out_f32(const float *m, long mstride, long n, float *out0, float *out1,
                         long cols)
    void tt_wino_out_f64(const double *m, long mstride, long n, double *out0, double *out1,
                         long cols)
    void tt_split_f32(const float *src, long n, float *first, float *second)
    void tt_split_f64(const double *src, long n, double *first, double *second)
    void tt_wino_grad_f32(const float *e0, const float *o0, const float *e1, const float *o1,
                          float *dst, long gstride, long n)
    void tt_wino_grad_f64(const double *e0, const double *o0, const double *e1,
                          const double *o1, double *dst, long gstride, long n)


# ---------------------------------------------------------------- 1. the transforms
#
# With the 4x4 input patch d, the 3x3 filter g and the 4x4 product m:
#
#   B^T = | 1  0 -1  0 |     G = | 1    0    0  |     A^T = | 1  1  1  0 |
#         | 0  1  1  0 |         | 1/2  1/2  1/2|           | 0  1 -1 -1 |
#         | 0 -1  1  0 |         | 1/2 -1/2  1/2|
#         | 0  1  0 -1 |         | 0    0    1  |
#
# Each is applied to rows, then to columns. Position xi = 4*row + column.

cdef inline void filter_transform(const floating *g, Py_ssize_t rs, Py_ssize_t cs,
                                  floating *u, Py_ssize_t ustride) noexcept nogil:
    """u[xi * ustride] = (G g G^T)[xi] for the 3x3 filter g[i*rs + j*cs]."""
    cdef floating t[4][3]
    cdef int i, j
    for j in range(3):                       # G g: columns of g
        t[0][j] = g[j * cs]
        t[1][j] = (g[j * cs] + g[rs + j * cs] + g[2 * rs + j * cs]) * <floating>0.5
        t[2][j] = (g[j * cs] - g[rs + j * cs] + g[2 * rs + j * cs]) * <floating>0.5
        t[3][j] = g[2 * rs + j * cs]
    for i in range(4):                       # (G g) G^T: rows of G g
        u[(4 * i) * ustride] = t[i][0]
        u[(4 * i + 1) * ustride] = (t[i][0] + t[i][1] + t[i][2]) * <floating>0.5
        u[(4 * i + 2) * ustride] = (t[i][0] - t[i][1] + t[i][2]) * <floating>0.5
        u[(4 * i + 3) * ustride] = t[i][2]


cdef void transform_filters(const floating *w, Py_ssize_t f, Py_ssize_t c, bint rotate,
                            floating *up) noexcept nogil:
    """U[xi] (rows: output channels, k: input channels) for every xi, each packed as a
    GEMM A panel (pack_a_full's layout), one after the other: panel xi at
    up + xi * panel_size(rows, k, MR). Written in place, sliver by sliver: 16 panels
    advancing together, not 16 scattered writes per filter.

    rotate=False: w is (F, C, 3, 3), output channels F, input channels C.
    rotate=True: the filters of conv2d_grad_input -- w rotated by 180 degrees
    and with its channel axes swapped: output channels C, input channels F."""
    cdef int mr = TT_MR_F32 if floating is float else TT_MR_F64
    cdef Py_ssize_t rows = c if rotate else f
    cdef Py_ssize_t k = f if rotate else c
    cdef Py_ssize_t ustride = panel_size(rows, k, mr)
    cdef Py_ssize_t s, o, i, xi
    cdef floating *dst
    memset(up, 0, 16 * ustride * sizeof(floating))       # rows past the last: zeros
    for s in range((rows + mr - 1) // mr):
        for i in range(k):
            for o in range(s * mr, min(s * mr + mr, rows)):
                dst = up + (s * k + i) * mr + o - s * mr
                if rotate:               # g[a, b] = w[i, o, 2 - a, 2 - b]
                    filter_transform(w + (i * c + o) * 9 + 8, -3, -1, dst, ustride)
                else:
                    filter_transform(w + (o * c + i) * 9, 3, 1, dst, ustride)


cdef inline Py_ssize_t panel_size(Py_ssize_t rows, Py_ssize_t k, int mr) noexcept nogil:
    """Elements of a packed A panel: rows rounded up to whole MR-row slivers."""
    return (rows + mr - 1) // mr * mr * k


# ---------------------------------------------------------------- 2. blocks of tiles
#
# Tile (ty, tx) of an image covers input rows 2ty..2ty+3 and columns
# 2tx..2tx+3 of the zero-padded image and produces outputs (2ty + i, 2tx + j),
# i, j < 2. The tiles of the whole batch are numbered image by image, row by
# row, and cut into blocks of consecutive tiles: a block is one set of 16
# products, whose GEMM columns are its tiles. Blocks span images, so a batch
# of small images still fills whole NR-wide slivers (an 8 x 8 output has only
# 16 tiles; one image per block would leave half of each 32-wide sliver
# empty), and blocks are what the threads share out.
#
# Input side. Neighbouring tiles start 2 columns apart, so the patches of a
# row of tiles are a stride-2 walk. One channel of one image at a time is
# first split into its even and odd columns (with the zero border), after
# which tile tx's columns 0, 1, 2, 3 are even[tx], odd[tx], even[tx+1],
# odd[tx+1]: contiguous runs over tx, which _winograd.h transforms in whole
# vectors. The transformed patches go straight into the packed-B layout of
# the 16 products (tile = GEMM column, channel = k), so they are never copied
# again.
#
# Sizes. A block's V (16 x C x tiles) and M (16 x F x tiles) stay in L2 (the
# budget below), while each product's packed B sliver stays in L1.

cdef enum:
    BLOCK_BUDGET = 192 * 1024      # elements of V + M per block (768 KiB of float32)


cdef struct Plan:
    Py_ssize_t c, h, w, pad, f   # input channels, image size, padding, output channels
    Py_ssize_t oh, ow            # output size
    Py_ssize_t th, tw, tiles     # tiles down and across, per image
    Py_ssize_t rows, half        # size of the even (and odd) column planes of one channel
    Py_ssize_t block             # tiles per block (a multiple of NR)


cdef Plan make_plan(Py_ssize_t n_img, Py_ssize_t c, Py_ssize_t h, Py_ssize_t w, Py_ssize_t f,
                    Py_ssize_t pad, int nr, int threads) noexcept nogil:
    cdef Plan p
    p.c, p.h, p.w, p.pad, p.f = c, h, w, pad, f
    p.oh, p.ow = h + 2 * pad - 2, w + 2 * pad - 2
    p.th, p.tw = (p.oh + 1) // 2, (p.ow + 1) // 2
    p.tiles = p.th * p.tw
    p.rows = 2 * p.th + 2          # rows 2ty + 3 for ty < TH (zeros past the image)
    p.half = p.tw + 2 + 8          # columns tx + 1 for tx < TW, plus a vector of slack
    cdef Py_ssize_t total = n_img * p.tiles
    cdef Py_ssize_t block = max(BLOCK_BUDGET // (16 * (c + f)) // nr * nr, <Py_ssize_t>nr)
    cdef Py_ssize_t share = (total + threads - 1) // threads      # enough blocks to go round
    p.block = min(block, (share + nr - 1) // nr * nr)
    return p


cdef void split_columns(const floating *src, Plan p, floating *even,
                        floating *odd) noexcept nogil:
    """One channel (H, W) of an image: even[y, x] = xpad[y, 2x], odd[y, x] = xpad[y, 2x+1].
    Writes only the image's part; the zero border around it is written once per block
    (input_block), since every channel of every image leaves it as it is. Padded
    column x is image column x - pad, so with an odd padding the image's even columns
    land in the odd plane."""
    cdef Py_ssize_t y
    cdef Py_ssize_t start_e = (p.pad + 1) // 2, start_o = p.pad // 2   # first inside
    cdef floating *first
    cdef floating *second
    for y in range(p.pad, min(p.pad + p.h, p.rows)):
        if p.pad % 2 == 0:
            first, second = even + y * p.half + start_e, odd + y * p.half + start_o
        else:
            first, second = odd + y * p.half + start_o, even + y * p.half + start_e
        if floating is float:
            tt_split_f32(src + (y - p.pad) * p.w, p.w, first, second)
        else:
            tt_split_f64(src + (y - p.pad) * p.w, p.w, first, second)


cdef void input_block(const floating *x, Plan p, Py_ssize_t t0, Py_ssize_t count,
                      floating *planes, floating *vp, Py_ssize_t vstride,
                      bint packed=True) noexcept nogil:
    """V of tiles t0 .. t0+count-1 of the batch x: column j = t - t0, row k = input
    channel, one panel per xi at vp + xi * vstride. packed: in the packed-B layout,
    columns past count zero; otherwise a plain row-major (C, count) matrix.
    planes: room for one channel's even and odd planes."""
    cdef int nr = TT_NR_F32 if floating is float else TT_NR_F64
    cdef floating *even = planes
    cdef floating *odd = planes + p.rows * p.half
    cdef Py_ssize_t ch, t, end, img, local, ty, tx, n, j, at, xi, s, offset
    memset(planes, 0, 2 * p.rows * p.half * sizeof(floating))     # the zero border
    for ch in range(p.c):
        t = t0
        while t < t0 + count:                        # the block's part of each image
            img = t // p.tiles
            end = min(t0 + count, (img + 1) * p.tiles)
            split_columns(x + (img * p.c + ch) * p.h * p.w, p, even, odd)
            while t < end:                           # runs: along a row of tiles, in a sliver
                local = t - img * p.tiles
                ty = local // p.tw
                tx = local - ty * p.tw
                j = t - t0
                n = min(min(p.tw - tx, nr - j % nr), end - t)
                offset = 2 * ty * p.half + tx
                at = ((j // nr) * p.c + ch) * nr + j % nr if packed else ch * count + j
                if floating is float:
                    tt_wino_in_f32(even + offset, odd + offset, p.half, vp + at, vstride, n)
                else:
                    tt_wino_in_f64(even + offset, odd + offset, p.half, vp + at, vstride, n)
                t += n
    if packed and count % nr:                        # the last sliver's padding columns
        s = count // nr
        for xi in range(16):
            for ch in range(p.c):
                memset(vp + xi * vstride + (s * p.c + ch) * nr + count % nr, 0,
                       (nr - count % nr) * sizeof(floating))


cdef void output_block(const floating *m, Py_ssize_t ldm, Py_ssize_t mstride, Plan p,
                       Py_ssize_t t0, Py_ssize_t count, floating *out) noexcept nogil:
    """out[img, o, 2ty + i, 2tx + j] = (A^T M A)[i, j] for tiles t0 .. t0+count-1 of the
    batch, M[xi] at m + xi * mstride, rows = output channels (stride ldm), column t - t0."""
    cdef Py_ssize_t t, img, local, ty, tx, n, o
    cdef floating *row
    t = t0
    while t < t0 + count:                            # runs along rows of tiles
        img = t // p.tiles
        local = t - img * p.tiles
        ty = local // p.tw
        tx = local - ty * p.tw
        n = min(p.tw - tx, t0 + count - t)
        for o in range(p.f):
            row = out + ((img * p.f + o) * p.oh + 2 * ty) * p.ow + 2 * tx
            if floating is float:
                tt_wino_out_f32(m + o * ldm + t - t0, mstride, n, row,
                                row + p.ow if 2 * ty + 1 < p.oh else NULL,
                                min(2 * n, p.ow - 2 * tx))
            else:
                tt_wino_out_f64(m + o * ldm + t - t0, mstride, n, row,
                                row + p.ow if 2 * ty + 1 < p.oh else NULL,
                                min(2 * n, p.ow - 2 * tx))
        t += n


cdef inline Py_ssize_t aligned(Py_ssize_t count) noexcept nogil:
    return (count + TT_ALIGN - 1) // TT_ALIGN * TT_ALIGN


cdef inline Py_ssize_t planes_size(Plan p) noexcept nogil:
    return aligned(2 * p.rows * p.half)


cdef inline Py_ssize_t v_stride(Plan p) noexcept nogil:
    """Distance between the V panels: a block's (aligned: the kernel loads B aligned)."""
    return aligned(p.block * p.c)


cdef inline Py_ssize_t scratch_size(Plan p) noexcept nogil:
    """Elements one thread needs: one channel's planes, V and M of one block (M with
    slack for the output transform's whole-vector reads past a row's end)."""
    return planes_size(p) + 16 * v_stride(p) + aligned(16 * p.block * p.f + TT_ALIGN)


cdef void one_block(const floating *x, Plan p, const floating *up, Py_ssize_t t0,
                    Py_ssize_t count, floating *out, floating *scratch) noexcept nogil:
    """Tiles t0 .. t0+count-1 of the batch: transform in, 16 products, transform out."""
    cdef int mr = TT_MR_F32 if floating is float else TT_MR_F64
    cdef floating *vp = scratch + planes_size(p)
    cdef Py_ssize_t vstride = v_stride(p)
    cdef floating *m = vp + 16 * vstride
    cdef Py_ssize_t ustride = panel_size(p.f, p.c, mr), xi
    input_block(x, p, t0, count, scratch, vp, vstride)
    for xi in range(16):
        gemm_prepacked(p.f, count, p.c, up + xi * ustride, vp + xi * vstride,
                       m + xi * p.f * count, count, False)
    output_block(m, count, p.f * count, p, t0, count, out)


# ---------------------------------------------------------------- 3. entry point

cdef int winograd_3x3(const floating *x, Py_ssize_t n_img, Py_ssize_t c, Py_ssize_t h,
                      Py_ssize_t w, const floating *filters, Py_ssize_t f, Py_ssize_t pad,
                      bint rotate, floating *out, int threads) noexcept nogil:
    """out (N, F, H+2p-2, W+2p-2) = 3x3 stride-1 correlation of x (N, C, H, W), with
    0 <= p <= 2; blocks of tiles across threads.

    rotate=False: filters is (F, C, 3, 3). rotate=True: filters is (C, F, 3, 3) used
    rotated by 180 degrees with its channel axes swapped (conv2d_grad_input: x is then
    the output gradient, C its channels, F the input's). -1 if out of memory."""
    cdef int nr = TT_NR_F32 if floating is float else TT_NR_F64
    cdef int mr = TT_MR_F32 if floating is float else TT_MR_F64
    cdef Plan p = make_plan(n_img, c, h, w, f, pad, nr, threads)
    cdef Py_ssize_t ustride = panel_size(f, c, mr)
    cdef Py_ssize_t total = n_img * p.tiles, blocks = (total + p.block - 1) // p.block, b
    cdef int team = <int>min(<Py_ssize_t>threads, blocks)
    cdef Py_ssize_t per_thread = scratch_size(p)
    cdef floating *up = <floating *>tt_aligned_alloc(16 * ustride * sizeof(floating))
    cdef floating *scratch = <floating *>tt_aligned_alloc(team * per_thread * sizeof(floating))
    if up == NULL or scratch == NULL:
        free(up)
        free(scratch)
        return -1
    if rotate:
        transform_filters(filters, c, f, True, up)
    else:
        transform_filters(filters, f, c, False, up)
    for b in prange(blocks, num_threads=team, schedule="static"):
        one_block(x, p, up, b * p.block, min(p.block, total - b * p.block), out,
                  scratch + threadid() * per_thread)
    free(up)
    free(scratch)
    return 0


# ---------------------------------------------------------------- 4. the weight gradient
#
# The adjoint of the forward pass above. With U = G g G^T and, per tile, the
# output gradient dY (2x2), the gradient of U is
#     dU[xi] (F x C) = sum over tiles of (A dY A^T)[xi] (F x tiles) @ V[xi]^T (tiles x C)
# and the filters' gradient is dg = G^T dU G. Again 16 products with 2.25x
# fewer multiply-adds than im2col's, but now their depth is the tiles (deep,
# efficient products) and their size F x C; each thread adds its blocks into
# its own dU, and the partial sums are added at the end.
#
# Both transforms write plain row-major matrices (channels x tiles), and the
# products read them through the GEMM's packing, which transposes V^T on the
# fly (_gemm.pyx, sections 2 and 3).

cdef void grad_block(const floating *dy, Plan p, Py_ssize_t t0, Py_ssize_t count,
                     floating *planes, floating *gp, Py_ssize_t gstride) noexcept nogil:
    """(A dY A^T)[xi] for tiles t0 .. t0+count-1 of the output gradient dy (N, F, OH, OW):
    row-major (F, count) matrices, one per xi at gp + xi * gstride. Rows 2ty, 2ty + 1
    of dy are split into even and odd columns (zeros past the edge), so the 2x2 patches
    of a row of tiles are contiguous runs."""
    cdef Py_ssize_t half = p.tw + 8                  # a vector of slack
    cdef floating *even0 = planes
    cdef floating *odd0 = planes + half
    cdef floating *even1 = planes + 2 * half
    cdef floating *odd1 = planes + 3 * half
    cdef Py_ssize_t o, t, img, local, ty, tx, n, prev_row
    cdef const floating *src
    memset(planes, 0, 4 * half * sizeof(floating))
    for o in range(p.f):
        t = t0
        prev_row = -1
        while t < t0 + count:                        # runs along rows of tiles
            img = t // p.tiles
            local = t - img * p.tiles
            ty = local // p.tw
            tx = local - ty * p.tw
            n = min(p.tw - tx, t0 + count - t)
            if img * p.th + ty != prev_row:          # split this row of tiles' two rows
                prev_row = img * p.th + ty
                src = dy + ((img * p.f + o) * p.oh + 2 * ty) * p.ow
                if floating is float:
                    tt_split_f32(src, p.ow, even0, odd0)
                else:
                    tt_split_f64(src, p.ow, even0, odd0)
                if 2 * ty + 1 < p.oh:
                    if floating is float:
                        tt_split_f32(src + p.ow, p.ow, even1, odd1)
                    else:
                        tt_split_f64(src + p.ow, p.ow, even1, odd1)
                else:
                    memset(even1, 0, 2 * half * sizeof(floating))
                if p.ow % 2:                         # the odd column past the edge
                    odd0[p.ow // 2] = 0
                    odd1[p.ow // 2] = 0
            if floating is float:
                tt_wino_grad_f32(even0 + tx, odd0 + tx, even1 + tx, odd1 + tx,
                                 gp + o * count + t - t0, gstride, n)
            else:
                tt_wino_grad_f64(even0 + tx, odd0 + tx, even1 + tx, odd1 + tx,
                                 gp + o * count + t - t0, gstride, n)
            t += n


cdef void filter_gradient(const floating *du, Py_ssize_t f, Py_ssize_t c,
                          floating *dw) noexcept nogil:
    """dw (F, C, 3, 3) = G^T dU G for every filter, dU[xi] at du + xi * F * C."""
    cdef Py_ssize_t o, i, a, b, fc = f * c
    cdef floating q[4][4]
    cdef floating t[3][4]
    cdef floating *out
    cdef floating half = 0.5
    for o in range(f):
        for i in range(c):
            for a in range(4):
                for b in range(4):
                    q[a][b] = du[(4 * a + b) * fc + o * c + i]
            for b in range(4):                       # G^T dU
                t[0][b] = q[0][b] + half * (q[1][b] + q[2][b])
                t[1][b] = half * (q[1][b] - q[2][b])
                t[2][b] = half * (q[1][b] + q[2][b]) + q[3][b]
            out = dw + (o * c + i) * 9
            for a in range(3):                       # (G^T dU) G
                out[3 * a] = t[a][0] + half * (t[a][1] + t[a][2])
                out[3 * a + 1] = half * (t[a][1] - t[a][2])
                out[3 * a + 2] = half * (t[a][1] + t[a][2]) + t[a][3]


cdef inline Py_ssize_t grad_scratch_size(Plan p) noexcept nogil:
    """Elements one thread needs: planes, V and the transformed gradient of one block,
    and its own dU (16 x F x C)."""
    return planes_size(p) + aligned(4 * (p.tw + 8)) + aligned(16 * p.block * (p.c + p.f)) \
        + aligned(16 * p.f * p.c)


cdef int winograd_3x3_grad_weight(const floating *x, Py_ssize_t n_img, Py_ssize_t c,
                                  Py_ssize_t h, Py_ssize_t w, const floating *dy,
                                  Py_ssize_t f, Py_ssize_t pad, floating *dw,
                                  int threads) noexcept nogil:
    """dw (F, C, 3, 3) of a 3x3 stride-1 convolution with padding 0 <= pad <= 2, from x
    (N, C, H, W) and dy (N, F, H+2p-2, W+2p-2); -1 if out of memory."""
    cdef int nr = TT_NR_F32 if floating is float else TT_NR_F64
    cdef Plan p = make_plan(n_img, c, h, w, f, pad, nr, threads)
    cdef Py_ssize_t total = n_img * p.tiles, blocks = (total + p.block - 1) // p.block, b
    cdef int team = <int>min(<Py_ssize_t>threads, blocks)
    cdef Py_ssize_t per_thread = grad_scratch_size(p), fc = f * c
    cdef floating *scratch = <floating *>tt_aligned_alloc(team * per_thread * sizeof(floating))
    cdef floating *mine
    cdef floating *vp
    cdef floating *gp
    cdef floating *du
    cdef Py_ssize_t xi, count, i, t0
    cdef int failures = 0
    if scratch == NULL:
        return -1
    for i in range(team):                            # each thread's dU starts at zero
        memset(scratch + (i + 1) * per_thread - aligned(16 * fc), 0, 16 * fc * sizeof(floating))
    for b in prange(blocks, num_threads=team, schedule="static"):
        mine = scratch + threadid() * per_thread
        vp = mine + planes_size(p) + aligned(4 * (p.tw + 8))
        du = mine + per_thread - aligned(16 * fc)
        t0 = b * p.block
        count = min(p.block, total - t0)
        gp = vp + 16 * p.c * count
        input_block(x, p, t0, count, mine, vp, p.c * count, False)
        grad_block(dy, p, t0, count, mine + planes_size(p), gp, p.f * count)
        for xi in range(16):            # dU[xi] += G[xi] (F x count) @ V[xi]^T (count x C)
            failures += -gemm(f, c, count, gp + xi * f * count, count, 1,
                              vp + xi * c * count, 1, count, du + xi * fc, c, True, 1)
    for i in range(1, team):                         # add the threads' partial sums
        for xi in range(16 * fc):
            scratch[per_thread - aligned(16 * fc) + xi] += \
                scratch[(i + 1) * per_thread - aligned(16 * fc) + xi]
    if not failures:
        filter_gradient(scratch + per_thread - aligned(16 * fc), f, c, dw)
    free(scratch)
    return -1 if failures else 0


def conv3x3(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w, Py_ssize_t pad,
            int threads, bint rotate=False):
    """The Winograd path alone, for tests and benchmarks: (N, C, H, W) with (F, C, 3, 3),
    stride 1 -> (N, F, H+2p-2, W+2p-2); rotate=True: w is (C, F, 3, 3), rotated."""
    import numpy as np
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1], h = x.shape[2], wd = x.shape[3]
    cdef Py_ssize_t f = w.shape[1] if rotate else w.shape[0]
    if (w.shape[0] if rotate else w.shape[1]) != c or w.shape[2] != 3 or w.shape[3] != 3 \
            or not 0 <= pad <= 2 or h + 2 * pad < 3 or wd + 2 * pad < 3 or n < 1:
        raise ValueError("winograd conv3x3: shapes do not fit")
    out_arr = np.empty((n, f, h + 2 * pad - 2, wd + 2 * pad - 2), dtype=np.asarray(x).dtype)
    cdef floating[:, :, :, ::1] out = out_arr
    cdef int status
    with nogil:
        status = winograd_3x3(&x[0, 0, 0, 0], n, c, h, wd, &w[0, 0, 0, 0], f, pad, rotate,
                              &out[0, 0, 0, 0], threads)
    if status:
        raise MemoryError("winograd conv3x3: out of memory")
    return out_arr



def conv3x3_grad_weight(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] dy,
                        Py_ssize_t pad, int threads):
    """The Winograd weight gradient alone, for tests and benchmarks: (F, C, 3, 3)."""
    import numpy as np
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1], h = x.shape[2], wd = x.shape[3]
    cdef Py_ssize_t f = dy.shape[1]
    if dy.shape[0] != n or dy.shape[2] != h + 2 * pad - 2 or dy.shape[3] != wd + 2 * pad - 2 \
            or not 0 <= pad <= 2 or n < 1 or dy.shape[2] < 1 or dy.shape[3] < 1:
        raise ValueError("winograd conv3x3_grad_weight: shapes do not fit")
    dw_arr = np.empty((f, c, 3, 3), dtype=np.asarray(x).dtype)
    cdef floating[:, :, :, ::1] dw = dw_arr
    cdef int status
    with nogil:
        status = winograd_3x3_grad_weight(&x[0, 0, 0, 0], n, c, h, wd, &dy[0, 0, 0, 0], f, pad,
                                          &dw[0, 0, 0, 0], threads)
    if status:
        raise MemoryError("winograd conv3x3_grad_weight: out of memory")
    return dw_arr
