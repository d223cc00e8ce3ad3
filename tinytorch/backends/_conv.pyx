# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""conv2d and its two gradients: Winograd where it pays, im2col on the packed GEMM elsewhere.

  1. phases          -- the zero-padded image, split by stride phase
  2. im2col / col2im -- a receptive field becomes a column, and back; or no im2col:
                        shifted image planes the GEMM reads in place
  3. which algorithm -- Winograd F(2x2, 3x3) (_winograd.pyx) or im2col
  4. forward         -- out[n] = W (F, C*KH*KW) @ cols[n]: W packed once, cols read
                        in place from the planes (or written pre-packed)
  5. grad input      -- stride 1: a convolution of dY with the rotated filters;
                        otherwise cols = W^T @ dY[n], scattered back by col2im
  6. grad weight     -- dW = sum over n of dY[n] @ cols[n]^T

Memory: only one image's cols matrix (and a copy of the image) per thread
exists at a time, never the whole batch's, so the extra memory of a batch-64
convolution is about threads/64 of the full im2col matrix plus the GEMM's
packing buffers. A 1x1 convolution with stride 1 and no padding needs no
im2col at all: x[n] viewed as (C, H*W) already is the cols matrix.

Threads: images run in parallel (one thread per image, each GEMM single-
threaded); a batch smaller than the thread count splits each image's GEMM
columns between the threads instead. The arguments arrive validated (the
backend contract): C-contiguous arrays of one float dtype, shapes that fit.
Typed memoryviews cost a microsecond or two per call, nothing next to a
convolution, so the entry points use them.
"""
import numpy as np

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.stdlib cimport free
from libc.string cimport memcpy, memset

from ._gemm cimport gemm, gemm_indirect, gemm_prepacked, gemm_rows, pack_a_full, pack_b_full
from ._winograd cimport winograd_3x3, winograd_3x3_grad_weight

cdef extern from "_microkernel.h" nogil:
    enum:
        TT_MR_F32
        TT_MR_F64
        TT_NR_F32
        TT_NR_F64
        TT_ALIGN
    void *tt_aligned_alloc(size_t nbytes)
    void tt_copy_vectors_f32(float *dst, const float *src, long n)
    void tt_copy_vectors_f64(double *dst, const double *src, long n)

cdef extern from "_winograd.h" nogil:
    void tt_split_f32(const float *src, long n, float *first, float *second)
    void tt_split_f64(const double *src, long n, double *first, double *second)
    void tt_merge_f32(const float *first, const float *second, long n, float *dst)
    void tt_merge_f64(const double *first, const double *second, long n, double *dst)

cdef extern from *:
    """
    #ifdef _OPENMP
    #define TT_OPENMP 1
    #else
    #define TT_OPENMP 0
    #endif
    """
    int TT_OPENMP

#: True if this module was compiled with OpenMP (read from the build, not assumed).
openmp = bool(TT_OPENMP)


cdef struct Geometry:
    Py_ssize_t c, h, w, kh, kw, stride, pad, oh, ow
    Py_ssize_t ph, pw            # one phase plane: ceil((h + 2 pad) / stride) x ceil(...)


cdef Geometry geometry(Py_ssize_t c, Py_ssize_t h, Py_ssize_t w, Py_ssize_t kh, Py_ssize_t kw,
                       Py_ssize_t stride, Py_ssize_t pad):
    cdef Geometry g
    g.c, g.h, g.w, g.kh, g.kw, g.stride, g.pad = c, h, w, kh, kw, stride, pad
    g.oh = (h + 2 * pad - kh) // stride + 1
    g.ow = (w + 2 * pad - kw) // stride + 1
    if g.oh < 1 or g.ow < 1 or min(c, h, w, kh, kw) < 1 or stride < 1 or pad < 0:
        raise ValueError(f"optimized conv2d: impossible geometry C={c} H={h} W={w} "
                         f"KH={kh} KW={kw} stride={stride} padding={pad}")
    g.ph = (h + 2 * pad + stride - 1) // stride
    g.pw = (w + 2 * pad + stride - 1) // stride
    return g


# ---------------------------------------------------------------- 1. phases
#
# Row (c, i, j) of the im2col matrix holds, for every output position (oh, ow),
# the input pixel that kernel tap (i, j) of channel c sees there:
#     cols[(c*KH + i)*KW + j, oh*OW + ow] = xpad[c, oh*s + i, ow*s + j]
# where xpad is x with `pad` zeros around it and s the stride. Along an output
# row that is a stride-s walk. So the image is first copied (once, a small
# cost next to the KH*KW-fold im2col) into its s x s phases,
#     phase (a, b) = xpad[c, s*u + a, s*v + b]  over (u, v),
# where tap (i, j) reads phase (i mod s, j mod s) from (oh + i div s,
# ow + j div s) on: a contiguous run for every stride, copied in whole
# vectors. For stride 1 the one phase is the zero-padded image, whose border
# saves a bounds test per pixel; for stride 2 a row splits into its even and
# odd columns with two shuffles per vector (_winograd.h).

cdef inline Py_ssize_t plane(Geometry g) noexcept nogil:
    return g.ph * g.pw


cdef inline const floating *tap_base(const floating *xph, Geometry g, Py_ssize_t c,
                                     Py_ssize_t i, Py_ssize_t j) noexcept nogil:
    """Where tap (i, j) of channel c reads output position (0, 0) in the phases."""
    cdef Py_ssize_t s = g.stride
    return xph + (((i % s) * s + j % s) * g.c + c) * plane(g) + (i // s) * g.pw + j // s


cdef void phases(const floating *img, Geometry g, floating *buf) noexcept nogil:
    """buf = the phases of img (C, H, W): xpad[c, s*u + a, s*v + b] at
    buf[((a*s + b)*C + c)*PH*PW + u*PW + v], zeros where xpad is padding."""
    cdef Py_ssize_t s = g.stride, c, y, x, yp, xp
    cdef Py_ssize_t across = g.c * plane(g)          # from phase (a, b) to (a, b + 1)
    cdef const floating *src
    cdef floating *row
    memset(buf, 0, s * s * across * sizeof(floating))
    for c in range(g.c):
        for y in range(g.h):
            yp = y + g.pad
            src = img + (c * g.h + y) * g.w
            row = buf + (yp % s) * s * across + c * plane(g) + (yp // s) * g.pw
            if s == 1:
                memcpy(row + g.pad, src, g.w * sizeof(floating))
            elif s == 2:            # even image columns land in phase pad % 2
                if floating is float:
                    tt_split_f32(src, g.w, row + (g.pad % 2) * across + g.pad // 2,
                                 row + (1 - g.pad % 2) * across + (g.pad + 1) // 2)
                else:
                    tt_split_f64(src, g.w, row + (g.pad % 2) * across + g.pad // 2,
                                 row + (1 - g.pad % 2) * across + (g.pad + 1) // 2)
            else:
                for x in range(g.w):
                    xp = x + g.pad
                    row[(xp % s) * across + xp // s] = src[x]


cdef void unphase(const floating *buf, Geometry g, floating *img) noexcept nogil:
    """img (C, H, W) = the inside of the image whose phases are in buf (phases' inverse)."""
    cdef Py_ssize_t s = g.stride, c, y, x, yp, xp
    cdef Py_ssize_t across = g.c * plane(g)
    cdef const floating *row
    cdef floating *dst
    for c in range(g.c):
        for y in range(g.h):
            yp = y + g.pad
            dst = img + (c * g.h + y) * g.w
            row = buf + (yp % s) * s * across + c * plane(g) + (yp // s) * g.pw
            if s == 1:
                memcpy(dst, row + g.pad, g.w * sizeof(floating))
            elif s == 2:
                if floating is float:
                    tt_merge_f32(row + (g.pad % 2) * across + g.pad // 2,
                                 row + (1 - g.pad % 2) * across + (g.pad + 1) // 2, g.w, dst)
                else:
                    tt_merge_f64(row + (g.pad % 2) * across + g.pad // 2,
                                 row + (1 - g.pad % 2) * across + (g.pad + 1) // 2, g.w, dst)
            else:
                for x in range(g.w):
                    xp = x + g.pad
                    dst[x] = row[(xp % s) * across + xp // s]


# ---------------------------------------------------------------- 2. im2col / col2im

cdef inline void copy_run(floating *dst, const floating *src, Py_ssize_t n) noexcept nogil:
    """dst[0:n] = src[0:n] in whole vectors (_microkernel_body.h: may overshoot by up to a
    vector, reading and writing; every buffer here leaves that room)."""
    if floating is float:
        tt_copy_vectors_f32(dst, src, n)
    else:
        tt_copy_vectors_f64(dst, src, n)


cdef void im2col(const floating *xph, Geometry g, floating *cols) noexcept nogil:
    """The plain (C*KH*KW, OH*OW) cols matrix, from the phases."""
    cdef floating *dst = cols
    cdef const floating *base
    cdef Py_ssize_t c, i, j, oh
    for c in range(g.c):
        for i in range(g.kh):
            for j in range(g.kw):
                base = tap_base(xph, g, c, i, j)
                for oh in range(g.oh):
                    copy_run(dst, base + oh * g.pw, g.ow)
                    dst += g.ow


cdef enum:
    MAX_NR = 64   # widest GEMM sliver any micro-kernel uses (AVX-512 float32: 32)


cdef void im2col_packed(const floating *xph, Geometry g, floating *bp, Py_ssize_t first,
                        Py_ssize_t last) noexcept nogil:
    """Slivers first .. last-1 of cols, written straight into the GEMM's packed-B layout
    (_gemm.pyx, section 3) from bp on: bp[((s - first)*K + p)*NR + j] = cols[p, s*NR + j],
    K = C*KH*KW, zero past the last column. One pass, not im2col and then packing.

    The NR columns of a sliver are output positions that fall into a few runs
    along output rows; where those runs start is the same for every row p of
    the sliver, so it is worked out once per sliver (no division per pixel).
    Runs are copied in whole vectors: later runs and the zero tail of each row
    overwrite what one spilled, and bp has a vector's room at its end."""
    cdef Py_ssize_t nr = TT_NR_F32 if floating is float else TT_NR_F64
    cdef Py_ssize_t ohw = g.oh * g.ow
    cdef Py_ssize_t run_at[MAX_NR]
    cdef Py_ssize_t run_len[MAX_NR]
    cdef Py_ssize_t run_src[MAX_NR]
    cdef Py_ssize_t s, c, i, j, r, q, runs, filled, col, oh, ow
    cdef const floating *base
    cdef floating *dst = bp
    for s in range(first, last):
        runs, filled, col = 0, 0, s * nr
        while filled < nr and col < ohw:
            oh = col // g.ow
            ow = col - oh * g.ow
            run_at[runs] = filled
            run_len[runs] = min(g.ow - ow, nr - filled)
            run_src[runs] = oh * g.pw + ow
            filled += run_len[runs]
            col += run_len[runs]
            runs += 1
        for c in range(g.c):
            for i in range(g.kh):
                for j in range(g.kw):
                    base = tap_base(xph, g, c, i, j)
                    for r in range(runs):
                        copy_run(dst + run_at[r], base + run_src[r], run_len[r])
                    for q in range(filled, nr):
                        dst[q] = 0
                    dst += nr


cdef void col2im(const floating *cols, Geometry g, floating *img, floating *buf) noexcept nogil:
    """img = the scatter of cols: overlapping receptive fields add up, taps that fell into
    the padding are dropped. The sums run in the phases (contiguous, vectorised adds),
    which are then copied back into img."""
    cdef const floating *src = cols
    cdef floating *dst
    cdef Py_ssize_t c, i, j, oh, ow
    memset(buf, 0, g.stride * g.stride * g.c * plane(g) * sizeof(floating))
    for c in range(g.c):
        for i in range(g.kh):
            for j in range(g.kw):
                dst = <floating *>tap_base(buf, g, c, i, j)
                for oh in range(g.oh):
                    for ow in range(g.ow):
                        dst[ow] += src[ow]
                    dst += g.pw
                    src += g.ow
    unphase(buf, g, img)


# Forward without im2col. Row (c, i, j) of cols, over output positions
# p = oh*OW + ow, is xpad[c, s*oh + i, s*ow + j]. Lay the image out as planes
# P(c, a, j) (a < s, j < KW) of OW columns,
#     P(c, a, j)[u, v] = xpad[c, s*u + a, s*v + j],
# and that row is P(c, i mod s, j) read from (i div s)*OW + p on: contiguous
# in p, across output rows too, because a plane row is exactly OW wide. So
# the GEMM reads B's rows in place through a table of K offsets
# (gemm_indirect), and the planes -- KW*s/s^2 copies of the image, about 3 for
# a 3x3 stride-1 layer against im2col's 9 -- are all that is written: measured,
# writing im2col cost a fifth of a 3x3 convolution's time.

cdef inline Py_ssize_t plane_rows(Geometry g) noexcept nogil:
    """Rows of a shifted plane: oh + i div s for every output row oh and tap i."""
    return g.oh + (g.kh - 1) // g.stride


cdef inline Py_ssize_t planes_size(Geometry g) noexcept nogil:
    return g.c * g.stride * g.kw * plane_rows(g) * g.ow


cdef void shifted_offsets(Geometry g, long *boff) noexcept nogil:
    """boff[(c*KH + i)*KW + j]: where row (c, i, j) of cols starts in the planes."""
    cdef Py_ssize_t c, i, j, s = g.stride, size = plane_rows(g) * g.ow
    for c in range(g.c):
        for i in range(g.kh):
            for j in range(g.kw):
                boff[(c * g.kh + i) * g.kw + j] = \
                    ((c * s + i % s) * g.kw + j) * size + (i // s) * g.ow


cdef void shifted_planes(const floating *img, Geometry g, floating *planes,
                         floating *split_row) noexcept nogil:
    """planes[((c*s + a)*KW + j)*U*OW + u*OW + v] = xpad[c, s*u + a, s*v + j]
    (U = plane_rows), zeros where xpad is padding. For stride 2, each image row is
    first split into even and odd columns (split_row: room for W + 2 values)."""
    cdef Py_ssize_t s = g.stride, rows = plane_rows(g), size = rows * g.ow
    cdef Py_ssize_t c, a, j, u, y, yp, d, e, v0, v1, v
    cdef const floating *src
    cdef const floating *half
    cdef floating *row
    cdef floating *even = split_row
    cdef floating *odd = split_row + (g.w + 1) // 2
    for c in range(g.c):
        for a in range(s):                   # plane rows that fall into the padding
            for u in range(rows):
                y = s * u + a - g.pad
                if y < 0 or y >= g.h:
                    for j in range(g.kw):
                        memset(planes + ((c * s + a) * g.kw + j) * size + u * g.ow, 0,
                               g.ow * sizeof(floating))
        for y in range(g.h):
            yp = y + g.pad
            a, u = yp % s, yp // s
            if u >= rows:
                continue
            src = img + (c * g.h + y) * g.w
            if s == 2:
                if floating is float:
                    tt_split_f32(src, g.w, even, odd)
                else:
                    tt_split_f64(src, g.w, even, odd)
            for j in range(g.kw):
                row = planes + ((c * s + a) * g.kw + j) * size + u * g.ow
                d = j - g.pad                # image column of v = 0 is s*v + d
                v0 = 0 if d >= 0 else (s - 1 - d) // s
                v1 = (g.w - d + s - 1) // s if g.w > d else 0
                v1 = max(min(v1, g.ow), v0)
                memset(row, 0, v0 * sizeof(floating))
                memset(row + v1, 0, (g.ow - v1) * sizeof(floating))
                if s == 1:
                    memcpy(row + v0, src + v0 + d, (v1 - v0) * sizeof(floating))
                elif s == 2:                 # column 2v + d = 2(v + e) + (d & 1)
                    e = (d - (d & 1)) // 2
                    half = odd if d & 1 else even
                    memcpy(row + v0, half + v0 + e, (v1 - v0) * sizeof(floating))
                else:
                    for v in range(v0, v1):
                        row[v] = src[s * v + d]


# ---------------------------------------------------------------- 3. which algorithm

cdef inline bint is_pointwise(Geometry g) noexcept nogil:
    """1x1, stride 1, no padding: x[n] as (C, H*W) already is the cols matrix."""
    return g.kh == 1 and g.kw == 1 and g.stride == 1 and g.pad == 0


cdef inline bint winograd_pays(Geometry g, Py_ssize_t f, Py_ssize_t n_img) noexcept nogil:
    """3x3, stride 1: Winograd F(2x2, 3x3) (_winograd.pyx) does 2.25x fewer multiply-adds,
    but in 16 products whose depth is the input channels, plus transforms that cost
    O(C + F) per tile, and a filter transform that costs as much as 16 tiles' products.
    Measured against im2col here (float32 and float64, batch 1 to 64, 8 x 8 to 32 x 32
    images): it wins from 32 channels on each side and a few hundred tiles in the batch;
    with 16 channels the products are too shallow, with 3 (an RGB stem) far too shallow."""
    cdef Py_ssize_t tiles = n_img * ((g.oh + 1) // 2) * ((g.ow + 1) // 2)
    return g.kh == 3 and g.kw == 3 and g.stride == 1 and g.pad <= 2 \
        and min(g.c, f) >= 32 and tiles >= 256


cdef Geometry as_convolution(Geometry g, Py_ssize_t f):
    """conv2d_grad_input of a stride-1 convolution is itself a convolution: the output
    gradient (F channels, OH x OW) correlated with the filters rotated by 180 degrees
    (channel axes swapped), zero-padded by K - 1 - pad, gives the input's H x W. Its
    geometry, or kh = 0 where that does not hold (stride > 1, padding >= K)."""
    if g.stride != 1 or g.pad > g.kh - 1 or g.pad > g.kw - 1 or g.kh - 1 - g.pad != g.kw - 1 - g.pad:
        g.kh = 0
        return g
    return geometry(f, g.oh, g.ow, g.kh, g.kw, 1, g.kh - 1 - g.pad)


def algorithm(tuple x_shape, tuple w_shape, Py_ssize_t stride, Py_ssize_t padding, str op):
    """Which kernel runs `op` ("conv2d", "conv2d_grad_input", "conv2d_grad_weight") here:
    "pointwise", "winograd", "im2col" or, for the input gradient, "transposed" (as a
    convolution of the output gradient) -- for tests and benchmarks."""
    cdef Geometry g = geometry(x_shape[1], x_shape[2], x_shape[3], w_shape[2], w_shape[3],
                               stride, padding)
    cdef Geometry t = as_convolution(g, w_shape[0])
    if is_pointwise(g):
        return "pointwise"
    if op in ("conv2d", "conv2d_grad_weight"):
        return "winograd" if winograd_pays(g, w_shape[0], x_shape[0]) else "im2col"
    if t.kh and winograd_pays(t, g.c, x_shape[0]):
        return "winograd"
    return "transposed" if t.kh else "im2col"


# Per-thread scratch: the phases of one image, then one image's cols matrix
# (its width rounded up to whole GEMM slivers, for the packed layout). Both
# parts are whole multiples of TT_ALIGN elements, so every thread's cols starts
# on a vector boundary, as the micro-kernel's aligned loads require, and each
# has at least TT_ALIGN elements (more than a vector) of room at its end for
# the whole-vector copies.

cdef inline Py_ssize_t aligned(Py_ssize_t count) noexcept nogil:
    return (count + TT_ALIGN - 1) // TT_ALIGN * TT_ALIGN


cdef inline Py_ssize_t phase_part(Geometry g) noexcept nogil:
    return aligned(g.stride * g.stride * g.c * plane(g) + TT_ALIGN)


cdef inline Py_ssize_t scratch_size(Geometry g) noexcept nogil:
    cdef Py_ssize_t nr = max(<Py_ssize_t>TT_NR_F32, <Py_ssize_t>TT_NR_F64)
    return phase_part(g) + aligned(g.c * g.kh * g.kw * ((g.oh * g.ow + nr - 1) // nr * nr)
                                   + TT_ALIGN)


cdef void *alloc_scratch(Geometry g, int threads, size_t itemsize, str op) except NULL:
    cdef void *scratch = tt_aligned_alloc(threads * scratch_size(g) * itemsize)
    if scratch == NULL:
        raise MemoryError(f"optimized {op}: out of memory for {threads} im2col buffer(s) of "
                          f"{scratch_size(g) * itemsize} bytes")
    return scratch


cdef inline int split(Py_ssize_t images, int threads, int *inner) noexcept nogil:
    """Threads across images (outer) and inside each image (inner)."""
    if images >= threads:
        inner[0] = 1
        return threads
    inner[0] = threads
    return 1


# ---------------------------------------------------------------- 4. forward
#
# Every image multiplies the same weights, so W is packed into the GEMM's
# A-panel layout once per call (pack_a_full) and shared by all threads; each
# image then costs one pass of im2col straight into packed B and the
# micro-kernels (gemm_prepacked), with no packing of its own.

cdef inline bint reads_in_place(Geometry g, size_t itemsize) noexcept nogil:
    """Whether the forward reads B from shifted planes (section 2) rather than writing
    im2col: when a plane row is whole cache lines wide. Each row of B then starts
    on a line; otherwise most of the kernel's vector loads straddle two lines, and
    measured, the in-place reads lost to im2col (0.83x, 3x3 stride 2, 8 x 8 out)."""
    return g.ow * itemsize % 64 == 0


cdef int forward_im2col(const floating *x, Py_ssize_t n_img, Geometry g, const floating *w,
                        Py_ssize_t f, floating *out, int threads) noexcept nogil:
    """out (N, F, OH, OW) = conv of x (N, C, H, W) with w (F, C, KH, KW), not pointwise;
    -1 if out of memory."""
    cdef int nr = TT_NR_F32 if floating is float else TT_NR_F64
    cdef int mr = TT_MR_F32 if floating is float else TT_MR_F64
    cdef Py_ssize_t ckk = g.c * g.kh * g.kw, ohw = g.oh * g.ow, n, t
    cdef Py_ssize_t slivers = (ohw + nr - 1) // nr, share, first, last
    cdef int inner, outer = split(n_img, threads, &inner)
    cdef int team = outer if inner == 1 else <int>min(<Py_ssize_t>inner, slivers)
    cdef bint in_place = reads_in_place(g, sizeof(floating))
    # in place: the planes (read up to a sliver past their end) and a split row;
    # otherwise the phases and one image's packed cols (scratch_size)
    cdef Py_ssize_t room = aligned(planes_size(g) + 2 * nr + TT_ALIGN)
    cdef Py_ssize_t per_thread = room + aligned(g.w + 2) if in_place else scratch_size(g)
    cdef floating *wp = <floating *>tt_aligned_alloc(
        (f + mr - 1) // mr * mr * ckk * sizeof(floating))
    cdef floating *scratch = <floating *>tt_aligned_alloc(team * per_thread * sizeof(floating))
    cdef long *boff = <long *>tt_aligned_alloc(ckk * sizeof(long))
    cdef floating *mine
    cdef floating *bp
    if wp == NULL or scratch == NULL or boff == NULL:
        free(wp)
        free(scratch)
        free(boff)
        return -1
    shifted_offsets(g, boff)
    if inner == 1:
        pack_a_full(f, ckk, w, ckk, 1, wp)
    else:       # a small batch: pack W's slivers on every thread too (it rivals the GEMM)
        for t in prange((f + mr - 1) // mr, num_threads=team, schedule="static"):
            pack_a_full(min(<Py_ssize_t>mr, f - t * mr), ckk, w + t * mr * ckk, ckk, 1,
                        wp + t * mr * ckk)
    if inner == 1:                         # one image per thread
        for n in prange(n_img, num_threads=team, schedule="static"):
            mine = scratch + threadid() * per_thread
            if in_place:
                shifted_planes(x + n * g.c * g.h * g.w, g, mine, mine + room)
                gemm_indirect(f, ohw, ckk, wp, mine, boff, out + n * f * ohw, ohw, False)
            else:
                phases(x + n * g.c * g.h * g.w, g, mine)
                im2col_packed(mine, g, mine + phase_part(g), 0, slivers)
                gemm_prepacked(f, ohw, ckk, wp, mine + phase_part(g), out + n * f * ohw, ohw,
                               False)
    else:                                  # each image's slivers shared by the threads
        share = (slivers + team - 1) // team
        for n in range(n_img):
            if in_place:
                shifted_planes(x + n * g.c * g.h * g.w, g, scratch, scratch + room)
            else:
                phases(x + n * g.c * g.h * g.w, g, scratch)
            for t in prange(team, num_threads=team, schedule="static", chunksize=1):
                first = t * share
                last = min(first + share, slivers)
                if first < last and in_place:
                    gemm_indirect(f, min(last * nr, ohw) - first * nr, ckk, wp,
                                  scratch + first * nr, boff, out + n * f * ohw + first * nr,
                                  ohw, False)
                elif first < last:
                    bp = scratch + t * per_thread + phase_part(g)
                    im2col_packed(scratch, g, bp, first, last)
                    gemm_prepacked(f, min(last * nr, ohw) - first * nr, ckk, wp, bp,
                                   out + n * f * ohw + first * nr, ohw, False)
    free(wp)
    free(scratch)
    free(boff)
    return 0


def conv2d(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
           Py_ssize_t stride, Py_ssize_t padding, int threads):
    """(N, C, H, W) * (F, C, KH, KW) -> (N, F, OH, OW)."""
    cdef Py_ssize_t n_img = x.shape[0], f = w.shape[0]
    cdef Geometry g = geometry(x.shape[1], x.shape[2], x.shape[3], w.shape[2], w.shape[3],
                               stride, padding)
    if w.shape[1] != g.c or n_img < 1 or f < 1:
        raise ValueError("optimized conv2d: x and w do not fit")
    out_arr = np.empty((n_img, f, g.oh, g.ow), dtype=np.asarray(x).dtype)
    cdef floating[:, :, :, ::1] out = out_arr
    cdef Py_ssize_t hw = g.h * g.w, n
    cdef int inner, outer = split(n_img, threads, &inner)
    cdef int failures = 0
    with nogil:
        if winograd_pays(g, f, n_img):
            failures = -winograd_3x3(&x[0, 0, 0, 0], n_img, g.c, g.h, g.w, &w[0, 0, 0, 0], f,
                                     g.pad, False, &out[0, 0, 0, 0], threads)
        elif is_pointwise(g):
            for n in prange(n_img, num_threads=outer, schedule="static"):
                failures += -gemm(f, hw, g.c, &w[0, 0, 0, 0], g.c, 1, &x[n, 0, 0, 0], hw, 1,
                                  &out[n, 0, 0, 0], hw, False, inner)
        else:
            failures = -forward_im2col(&x[0, 0, 0, 0], n_img, g, &w[0, 0, 0, 0], f,
                                       &out[0, 0, 0, 0], threads)
    if failures:
        raise MemoryError("optimized conv2d: out of memory for its buffers")
    return out_arr


# ---------------------------------------------------------------- 5. gradient w.r.t. the input

def conv2d_grad_input(const floating[:, :, :, ::1] grad_out, const floating[:, :, :, ::1] w,
                      tuple x_shape, Py_ssize_t stride, Py_ssize_t padding, int threads):
    """dL/dx (N, C, H, W).

    Stride 1: the convolution of dY with the rotated filters (as_convolution), by
    Winograd or im2col -- each input pixel's gradient computed once, as a sum over
    F*KH*KW products, with no scatter. Otherwise, per image, cols = W^T (C*KH*KW, F)
    @ dY[n] (F, OH*OW), scattered back by col2im."""
    cdef Py_ssize_t n_img = x_shape[0], f = w.shape[0]
    cdef Geometry g = geometry(x_shape[1], x_shape[2], x_shape[3], w.shape[2], w.shape[3],
                               stride, padding)
    if w.shape[1] != g.c or np.shape(grad_out) != (n_img, f, g.oh, g.ow):
        raise ValueError("optimized conv2d_grad_input: grad_out, w and x_shape do not fit")
    grad_arr = np.empty(x_shape, dtype=np.asarray(w).dtype)
    cdef floating[:, :, :, ::1] grad_x = grad_arr
    cdef Geometry t = as_convolution(g, f)
    cdef const floating[:, :, :, ::1] rotated
    cdef Py_ssize_t ckk = g.c * g.kh * g.kw, hw = g.h * g.w, ohw = g.oh * g.ow, n
    cdef int inner, outer = split(n_img, threads, &inner)
    cdef floating *scratch = NULL
    cdef floating *mine          # this thread's part of scratch
    cdef Py_ssize_t per_thread = scratch_size(g)
    cdef int failures = 0
    if t.kh and winograd_pays(t, g.c, n_img):
        with nogil:
            failures = -winograd_3x3(&grad_out[0, 0, 0, 0], n_img, f, g.oh, g.ow,
                                     &w[0, 0, 0, 0], g.c, t.pad, True, &grad_x[0, 0, 0, 0],
                                     threads)
    elif is_pointwise(g):        # W^T is a strided view of W: (row stride 1, column stride C)
        with nogil:
            for n in prange(n_img, num_threads=outer, schedule="static"):
                failures += -gemm(g.c, hw, f, &w[0, 0, 0, 0], 1, g.c, &grad_out[n, 0, 0, 0],
                                  ohw, 1, &grad_x[n, 0, 0, 0], hw, False, inner)
    elif t.kh:                   # rotated, channel-swapped filters (C, F, KH, KW): a small copy
        rotated = np.ascontiguousarray(np.asarray(w).transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
        with nogil:
            failures = -forward_im2col(&grad_out[0, 0, 0, 0], n_img, t, &rotated[0, 0, 0, 0],
                                       g.c, &grad_x[0, 0, 0, 0], threads)
    else:
        scratch = <floating *>alloc_scratch(g, outer, sizeof(floating), "conv2d_grad_input")
        with nogil:
            for n in prange(n_img, num_threads=outer, schedule="static"):
                mine = scratch + threadid() * per_thread
                failures += -gemm(ckk, ohw, f, &w[0, 0, 0, 0], 1, ckk, &grad_out[n, 0, 0, 0],
                                  ohw, 1, mine + phase_part(g), ohw, False, inner)
                col2im(mine + phase_part(g), g, &grad_x[n, 0, 0, 0], mine)
        free(scratch)
    if failures:
        raise MemoryError("optimized conv2d_grad_input: out of memory for its buffers")
    return grad_arr


# ---------------------------------------------------------------- 6. gradient w.r.t. the weight
#
# Every image adds dY[n] @ cols[n]^T to dW. Each thread accumulates its images
# into its own partial dW (the GEMM's accumulate flag), and the partials are
# summed at the end: no two threads ever write the same memory.

def conv2d_grad_weight(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] grad_out,
                       tuple w_shape, Py_ssize_t stride, Py_ssize_t padding, int threads):
    """dL/dw (F, C, KH, KW) = sum over n of dY[n] (F, OH*OW) @ cols[n]^T (OH*OW, C*KH*KW)."""
    cdef Py_ssize_t n_img = x.shape[0], f = w_shape[0]
    cdef Geometry g = geometry(x.shape[1], x.shape[2], x.shape[3], w_shape[2], w_shape[3],
                               stride, padding)
    if w_shape[1] != g.c or np.shape(grad_out) != (n_img, f, g.oh, g.ow):
        raise ValueError("optimized conv2d_grad_weight: x, grad_out and w_shape do not fit")
    cdef Py_ssize_t ckk = g.c * g.kh * g.kw, hw = g.h * g.w, ohw = g.oh * g.ow, n
    cdef int inner, outer = split(n_img, threads, &inner)
    cdef int status
    cdef floating[:, :, :, ::1] dw
    if winograd_pays(g, f, n_img):
        dw_arr = np.empty(w_shape, dtype=np.asarray(x).dtype)
        dw = dw_arr
        with nogil:
            status = winograd_3x3_grad_weight(&x[0, 0, 0, 0], n_img, g.c, g.h, g.w,
                                              &grad_out[0, 0, 0, 0], f, g.pad, &dw[0, 0, 0, 0],
                                              threads)
        if status:
            raise MemoryError("optimized conv2d_grad_weight: out of memory for Winograd")
        return dw_arr
    if inner == 1 and not is_pointwise(g) and ROWS_MIN_DEPTH <= ohw <= ROWS_DEPTH \
            and f >= ROWS_MIN_FILTERS:
        return grad_weight_rows(x, grad_out, w_shape, g, outer)
    partial_arr = np.zeros((outer, f, ckk), dtype=np.asarray(x).dtype)
    cdef floating[:, :, ::1] partial = partial_arr
    cdef bint pointwise = is_pointwise(g)
    cdef floating *scratch = NULL
    cdef floating *mine          # this thread's part of scratch
    cdef Py_ssize_t per_thread = scratch_size(g)
    cdef int failures = 0
    if not pointwise:
        scratch = <floating *>alloc_scratch(g, outer, sizeof(floating), "conv2d_grad_weight")
    with nogil:
        for n in prange(n_img, num_threads=outer, schedule="static"):
            if pointwise:     # x[n]^T is a strided view of x[n]: (row stride 1, column stride H*W)
                failures += -gemm(f, g.c, ohw, &grad_out[n, 0, 0, 0], ohw, 1,
                                  &x[n, 0, 0, 0], 1, hw,
                                  &partial[threadid(), 0, 0], ckk, True, inner)
            else:
                mine = scratch + threadid() * per_thread
                phases(&x[n, 0, 0, 0], g, mine)
                im2col(mine, g, mine + phase_part(g))
                failures += -gemm(f, ckk, ohw, &grad_out[n, 0, 0, 0], ohw, 1, mine + phase_part(g),
                                  1, ohw,
                                  &partial[threadid(), 0, 0], ckk, True, inner)
    free(scratch)
    if failures:
        raise MemoryError("optimized conv2d_grad_weight: out of memory for packing buffers")
    grad_w = partial_arr[0] if outer == 1 else partial_arr.sum(axis=0)
    return grad_w.reshape(w_shape)


# Without im2col: dW^T (C*KH*KW, F) = sum over n of cols[n] @ dY[n]^T. Row (c, i, j)
# of cols is a window of the image's shifted planes (section 2), contiguous along
# the output positions -- the product's depth here -- so the direct micro-kernel
# reads A's rows in place through the same table of offsets the forward uses
# (gemm_rows); only dY[n]^T, F x OH*OW, is packed. That replaces writing cols and
# transposing it into packed B, the way above. Measured against it (CPU time, 3
# alternating runs): 64x16x32x32->32 s1 1.58x, 64x16x32x32->32 s2 1.16x; with
# 8 x 8 outputs (a depth of 64) 0.67-0.79x, and with 16 filters (half an NR-wide
# sliver of dW^T's columns) 0.93x, so those keep im2col.

cdef enum:
    ROWS_DEPTH = 4096       # output positions at most: A's row streams and B stay in cache
    ROWS_MIN_DEPTH = 256    # ... and at least
    ROWS_MIN_FILTERS = 32


cdef grad_weight_rows(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] grad_out,
                     tuple w_shape, Geometry g, int outer):
    cdef int nr = TT_NR_F32 if floating is float else TT_NR_F64
    cdef Py_ssize_t n_img = x.shape[0], f = w_shape[0], ckk = g.c * g.kh * g.kw
    cdef Py_ssize_t ohw = g.oh * g.ow, n
    partial_arr = np.zeros((outer, ckk, f), dtype=np.asarray(x).dtype)
    cdef floating[:, :, ::1] partial = partial_arr
    cdef Py_ssize_t room = aligned(planes_size(g) + TT_ALIGN)
    cdef Py_ssize_t per_thread = room + aligned(g.w + 2) + aligned((f + nr - 1) // nr * nr * ohw)
    cdef floating *scratch = <floating *>tt_aligned_alloc(outer * per_thread * sizeof(floating))
    cdef long *boff = <long *>tt_aligned_alloc(ckk * sizeof(long))
    cdef floating *mine
    if scratch == NULL or boff == NULL:
        free(scratch)
        free(boff)
        raise MemoryError("optimized conv2d_grad_weight: out of memory for its buffers")
    shifted_offsets(g, boff)
    with nogil:
        for n in prange(n_img, num_threads=outer, schedule="static"):
            mine = scratch + threadid() * per_thread
            shifted_planes(&x[n, 0, 0, 0], g, mine, mine + room)
            pack_b_full(ohw, f, &grad_out[n, 0, 0, 0], 1, ohw,          # dY[n]^T
                        mine + room + aligned(g.w + 2))
            gemm_rows(ckk, f, ohw, mine, boff, mine + room + aligned(g.w + 2),
                      &partial[threadid(), 0, 0], f, True)
    free(scratch)
    free(boff)
    grad_t = partial_arr[0] if outer == 1 else partial_arr.sum(axis=0)
    return np.ascontiguousarray(grad_t.T).reshape(w_shape)
