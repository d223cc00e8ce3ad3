# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""conv2d and its two gradients on the packed GEMM, one image at a time.

  1. im2col / col2im -- a receptive field becomes a column, and back
  2. forward         -- out[n] = W (F, C*KH*KW) @ cols[n], cols written pre-packed
  3. grad input      -- cols = W^T @ dY[n], scattered back by col2im
  4. grad weight     -- dW = sum over n of dY[n] @ cols[n]^T

Memory: only one image's cols matrix (and a zero-padded copy of the image)
per thread exists at a time, never the whole batch's, so the extra memory of
a batch-64 convolution is about threads/64 of the full im2col matrix plus the
GEMM's packing buffers. A 1x1 convolution with stride 1 and no padding needs
no im2col at all: x[n] viewed as (C, H*W) already is the cols matrix.

Images run in parallel (one thread per image, each GEMM single-threaded);
a batch smaller than the thread count gives every GEMM all the threads.
The arguments arrive validated (the backend contract): C-contiguous arrays of
one float dtype, shapes that fit. Typed memoryviews cost a microsecond or two
per call, nothing next to a convolution, so the entry points use them.
"""
import numpy as np

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.stdlib cimport free
from libc.string cimport memset

from ._gemm cimport gemm, gemm_packed_b
from ._winograd cimport winograd_3x3, winograd_3x3_grad_weight

cdef extern from "_microkernel.h" nogil:
    enum:
        TT_NR_F32
        TT_NR_F64
        TT_ALIGN
    void *tt_aligned_alloc(size_t nbytes)
    void tt_copy_vectors_f32(float *dst, const float *src, long n)
    void tt_copy_vectors_f64(double *dst, const double *src, long n)

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
    Py_ssize_t hp, wp            # the padded image: h + 2*pad, w + 2*pad


# ---------------------------------------------------------------- 1. im2col / col2im
#
# Row (c, i, j) of cols holds, for every output position (oh, ow), the input
# pixel that kernel tap (i, j) of channel c sees there:
#     cols[(c*KH + i)*KW + j, oh*OW + ow] = xpad[c, oh*s + i, ow*s + j]
# where xpad is x with `pad` zeros around it. Copying the image into a
# zero-bordered buffer first (a small cost: C*(H+2p)*(W+2p) values) makes
# every row of cols a run of plain copies, with no bounds test per pixel;
# without padding the image itself is used.

cdef const floating *padded(const floating *img, Geometry g, floating *buf,
                            bint always_copy) noexcept nogil:
    """img, or a copy of it with a zero border in buf (always a copy if asked)."""
    if g.pad == 0 and not always_copy:
        return img
    cdef Py_ssize_t c, h, x
    memset(buf, 0, g.c * g.hp * g.wp * sizeof(floating))
    for c in range(g.c):
        for h in range(g.h):
            for x in range(g.w):
                buf[(c * g.hp + h + g.pad) * g.wp + g.pad + x] = img[(c * g.h + h) * g.w + x]
    return buf


cdef void im2col(const floating *img, Geometry g, floating *cols, floating *buf) noexcept nogil:
    cdef const floating *xpad = padded(img, g, buf, g.stride == 1)
    cdef const floating *src
    cdef floating *dst = cols
    cdef Py_ssize_t c, i, j, oh, ow
    for c in range(g.c):
        for i in range(g.kh):
            for j in range(g.kw):
                for oh in range(g.oh):
                    src = xpad + (c * g.hp + oh * g.stride + i) * g.wp + j
                    if g.stride == 1:      # whole vectors, as in im2col_packed below
                        if floating is float:
                            tt_copy_vectors_f32(dst, src, g.ow)
                        else:
                            tt_copy_vectors_f64(dst, src, g.ow)
                    else:
                        for ow in range(g.ow):
                            dst[ow] = src[ow * g.stride]
                    dst += g.ow


cdef enum:
    MAX_NR = 64   # widest GEMM sliver any micro-kernel uses (AVX-512 float32: 32)


cdef void im2col_packed(const floating *img, Geometry g, floating *bp,
                        floating *buf) noexcept nogil:
    """im2col written straight into the GEMM's packed-B layout (_gemm.pyx, section 3):
    bp[(s*K + p)*NR + j] = cols[p, s*NR + j], K = C*KH*KW, zero past the last column.
    Saves writing cols and then copying it into packed slivers: one pass, not two.

    The NR columns of a sliver are output positions that fall into a few runs
    along output rows; where those runs start is the same for every row p of
    the sliver, so it is worked out once per sliver (no division per pixel).
    With stride 1 each run is copied in whole vectors (tt_copy_vectors): the
    source is always the padded copy in scratch, and both it and bp have a
    vector's room at the end (scratch_size), so overshooting a run is safe --
    later runs and the zero tail of each row overwrite what it spilled."""
    cdef const floating *xpad = padded(img, g, buf, g.stride == 1)
    cdef Py_ssize_t nr = TT_NR_F32 if floating is float else TT_NR_F64
    cdef Py_ssize_t ohw = g.oh * g.ow
    cdef Py_ssize_t run_at[MAX_NR]
    cdef Py_ssize_t run_len[MAX_NR]
    cdef Py_ssize_t run_src[MAX_NR]
    cdef Py_ssize_t s, c, i, j, r, q, runs, filled, col, oh, ow
    cdef const floating *base
    cdef floating *dst = bp
    for s in range((ohw + nr - 1) // nr):
        runs, filled, col = 0, 0, s * nr
        while filled < nr and col < ohw:
            oh = col // g.ow
            ow = col - oh * g.ow
            run_at[runs] = filled
            run_len[runs] = min(g.ow - ow, nr - filled)
            run_src[runs] = oh * g.stride * g.wp + ow * g.stride
            filled += run_len[runs]
            col += run_len[runs]
            runs += 1
        for c in range(g.c):
            for i in range(g.kh):
                for j in range(g.kw):
                    base = xpad + (c * g.hp + i) * g.wp + j
                    if g.stride == 1:
                        for r in range(runs):
                            if floating is float:
                                tt_copy_vectors_f32(dst + run_at[r], base + run_src[r],
                                                    run_len[r])
                            else:
                                tt_copy_vectors_f64(dst + run_at[r], base + run_src[r],
                                                    run_len[r])
                    else:
                        for r in range(runs):
                            for q in range(run_len[r]):
                                dst[run_at[r] + q] = base[run_src[r] + q * g.stride]
                    for q in range(filled, nr):
                        dst[q] = 0
                    dst += nr


cdef void col2im(const floating *cols, Geometry g, floating *img, floating *buf) noexcept nogil:
    """img (zeros on entry) = the scatter of cols: overlapping receptive fields add up,
    taps that fell into the padding are dropped."""
    cdef floating *target = img
    cdef floating *dst
    cdef const floating *src = cols
    cdef Py_ssize_t c, i, j, oh, ow, h, x
    if g.pad:
        target = buf
        memset(buf, 0, g.c * g.hp * g.wp * sizeof(floating))
    for c in range(g.c):
        for i in range(g.kh):
            for j in range(g.kw):
                for oh in range(g.oh):
                    dst = target + (c * g.hp + oh * g.stride + i) * g.wp + j
                    if g.stride == 1:          # unit stride: the compiler vectorises it
                        for ow in range(g.ow):
                            dst[ow] += src[ow]
                    else:
                        for ow in range(g.ow):
                            dst[ow * g.stride] += src[ow]
                    src += g.ow
    if g.pad:
        for c in range(g.c):
            for h in range(g.h):
                for x in range(g.w):
                    img[(c * g.h + h) * g.w + x] = buf[(c * g.hp + h + g.pad) * g.wp + g.pad + x]


cdef Geometry geometry(Py_ssize_t c, Py_ssize_t h, Py_ssize_t w, Py_ssize_t kh, Py_ssize_t kw,
                       Py_ssize_t stride, Py_ssize_t pad):
    cdef Geometry g
    g.c, g.h, g.w, g.kh, g.kw, g.stride, g.pad = c, h, w, kh, kw, stride, pad
    g.hp, g.wp = h + 2 * pad, w + 2 * pad
    g.oh = (g.hp - kh) // stride + 1
    g.ow = (g.wp - kw) // stride + 1
    if g.oh < 1 or g.ow < 1 or min(c, h, w, kh, kw) < 1 or stride < 1 or pad < 0:
        raise ValueError(f"optimized conv2d: impossible geometry C={c} H={h} W={w} "
                         f"KH={kh} KW={kw} stride={stride} padding={pad}")
    return g


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


def algorithm(tuple x_shape, tuple w_shape, Py_ssize_t stride, Py_ssize_t padding, str op):
    """Which kernel runs `op` ("conv2d", "conv2d_grad_input", "conv2d_grad_weight") here:
    "pointwise", "winograd" or "im2col" (for tests and benchmarks)."""
    cdef Geometry g = geometry(x_shape[1], x_shape[2], x_shape[3], w_shape[2], w_shape[3],
                               stride, padding)
    if is_pointwise(g):
        return "pointwise"
    if op in ("conv2d", "conv2d_grad_weight") and winograd_pays(g, w_shape[0], x_shape[0]):
        return "winograd"
    if op == "conv2d_grad_input" and winograd_pays(transposed(g, w_shape[0]), g.c, x_shape[0]):
        return "winograd"
    return "im2col"


cdef Geometry transposed(Geometry g, Py_ssize_t f):
    """The geometry of conv2d_grad_input as a convolution (stride 1 only): the output
    gradient (F channels, OH x OW) correlated with the rotated filters, padded by
    k - 1 - pad, gives the input's H x W."""
    if g.stride != 1 or g.pad > g.kh - 1 or g.pad > g.kw - 1:
        g.kh = 0                      # not a stride-1 convolution: no Winograd
        return g
    return geometry(f, g.oh, g.ow, g.kh, g.kw, 1, g.kh - 1 - g.pad)


cdef inline int split(Py_ssize_t images, int threads, int *inner) noexcept nogil:
    """Threads across images (outer) and inside each GEMM (inner)."""
    if images >= threads:
        inner[0] = 1
        return threads
    inner[0] = threads
    return 1


# Per-thread scratch: the zero-padded copy of the image, then one image's cols
# matrix (its width rounded up to whole GEMM slivers, for the packed layout).
# Both parts are whole multiples of TT_ALIGN elements, so every thread's cols
# starts on a vector boundary, as the micro-kernel's aligned loads require,
# and each has at least TT_ALIGN elements (more than a vector) of room at its
# end for im2col_packed's whole-vector copies.

cdef inline Py_ssize_t aligned(Py_ssize_t count) noexcept nogil:
    return (count + TT_ALIGN - 1) // TT_ALIGN * TT_ALIGN


cdef inline Py_ssize_t pad_part(Geometry g) noexcept nogil:
    return aligned(g.c * g.hp * g.wp + TT_ALIGN)


cdef inline Py_ssize_t scratch_size(Geometry g) noexcept nogil:
    cdef Py_ssize_t nr = max(<Py_ssize_t>TT_NR_F32, <Py_ssize_t>TT_NR_F64)
    return pad_part(g) + aligned(g.c * g.kh * g.kw * ((g.oh * g.ow + nr - 1) // nr * nr)
                                 + TT_ALIGN)


cdef void *alloc_scratch(Geometry g, int threads, size_t itemsize, str op) except NULL:
    cdef void *scratch = tt_aligned_alloc(threads * scratch_size(g) * itemsize)
    if scratch == NULL:
        raise MemoryError(f"optimized {op}: out of memory for {threads} im2col buffer(s) of "
                          f"{scratch_size(g) * itemsize} bytes")
    return scratch


# ---------------------------------------------------------------- 2. forward

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
    cdef Py_ssize_t ckk = g.c * g.kh * g.kw, hw = g.h * g.w, ohw = g.oh * g.ow, n
    cdef int inner, outer = split(n_img, threads, &inner)
    cdef bint pointwise = is_pointwise(g)
    cdef floating *scratch = NULL
    cdef floating *mine          # this thread's part of scratch
    cdef Py_ssize_t per_thread = scratch_size(g)
    cdef int failures = 0
    if winograd_pays(g, f, n_img):
        with nogil:
            failures = -winograd_3x3(&x[0, 0, 0, 0], n_img, g.c, g.h, g.w, &w[0, 0, 0, 0], f,
                                     g.pad, False, &out[0, 0, 0, 0], threads)
        if failures:
            raise MemoryError("optimized conv2d: out of memory for Winograd's buffers")
        return out_arr
    if not pointwise:
        scratch = <floating *>alloc_scratch(g, outer, sizeof(floating), "conv2d")
    with nogil:
        for n in prange(n_img, num_threads=outer, schedule="static"):
            if pointwise:
                failures += -gemm(f, ohw, g.c, &w[0, 0, 0, 0], g.c, 1, &x[n, 0, 0, 0], hw, 1,
                                  &out[n, 0, 0, 0], ohw, False, inner)
            else:
                mine = scratch + threadid() * per_thread
                im2col_packed(&x[n, 0, 0, 0], g, mine + pad_part(g), mine)
                failures += -gemm_packed_b(f, ohw, ckk, &w[0, 0, 0, 0], ckk, 1,
                                           mine + pad_part(g), &out[n, 0, 0, 0], ohw, False,
                                           inner)
    free(scratch)
    if failures:
        raise MemoryError("optimized conv2d: out of memory for the GEMM's packing buffers")
    return out_arr


# ---------------------------------------------------------------- 3. gradient w.r.t. the input

def conv2d_grad_input(const floating[:, :, :, ::1] grad_out, const floating[:, :, :, ::1] w,
                      tuple x_shape, Py_ssize_t stride, Py_ssize_t padding, int threads):
    """dL/dx (N, C, H, W): per image, W^T (C*KH*KW, F) @ dY[n] (F, OH*OW), then col2im."""
    cdef Py_ssize_t n_img = x_shape[0], f = w.shape[0]
    cdef Geometry g = geometry(x_shape[1], x_shape[2], x_shape[3], w.shape[2], w.shape[3],
                               stride, padding)
    if w.shape[1] != g.c or np.shape(grad_out) != (n_img, f, g.oh, g.ow):
        raise ValueError("optimized conv2d_grad_input: grad_out, w and x_shape do not fit")
    cdef Geometry as_conv = transposed(g, f)
    if winograd_pays(as_conv, g.c, n_img):      # a stride-1 convolution of the gradient
        grad_arr = np.empty(x_shape, dtype=np.asarray(w).dtype)
    else:
        grad_arr = np.zeros(x_shape, dtype=np.asarray(w).dtype)
    cdef floating[:, :, :, ::1] grad_x = grad_arr
    cdef Py_ssize_t ckk = g.c * g.kh * g.kw, hw = g.h * g.w, ohw = g.oh * g.ow, n
    cdef int inner, outer = split(n_img, threads, &inner)
    cdef bint pointwise = is_pointwise(g)
    cdef floating *scratch = NULL
    cdef floating *mine          # this thread's part of scratch
    cdef Py_ssize_t per_thread = scratch_size(g)
    cdef int failures = 0
    if winograd_pays(as_conv, g.c, n_img):
        with nogil:
            failures = -winograd_3x3(&grad_out[0, 0, 0, 0], n_img, f, g.oh, g.ow,
                                     &w[0, 0, 0, 0], g.c, as_conv.pad, True,
                                     &grad_x[0, 0, 0, 0], threads)
        if failures:
            raise MemoryError("optimized conv2d_grad_input: out of memory for Winograd")
        return grad_arr
    if not pointwise:
        scratch = <floating *>alloc_scratch(g, outer, sizeof(floating), "conv2d_grad_input")
    with nogil:
        for n in prange(n_img, num_threads=outer, schedule="static"):
            if pointwise:     # W^T is a strided view of W: (row stride 1, column stride C)
                failures += -gemm(g.c, hw, f, &w[0, 0, 0, 0], 1, g.c, &grad_out[n, 0, 0, 0],
                                  ohw, 1, &grad_x[n, 0, 0, 0], hw, False, inner)
            else:
                mine = scratch + threadid() * per_thread
                failures += -gemm(ckk, ohw, f, &w[0, 0, 0, 0], 1, ckk, &grad_out[n, 0, 0, 0],
                                  ohw, 1, mine + pad_part(g), ohw, False, inner)
                col2im(mine + pad_part(g), g, &grad_x[n, 0, 0, 0], mine)
    free(scratch)
    if failures:
        raise MemoryError("optimized conv2d_grad_input: out of memory for packing buffers")
    return grad_arr


# ---------------------------------------------------------------- 4. gradient w.r.t. the weight
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
                im2col(&x[n, 0, 0, 0], g, mine + pad_part(g), mine)
                failures += -gemm(f, ckk, ohw, &grad_out[n, 0, 0, 0], ohw, 1, mine + pad_part(g),
                                  1, ohw,
                                  &partial[threadid(), 0, 0], ckk, True, inner)
    free(scratch)
    if failures:
        raise MemoryError("optimized conv2d_grad_weight: out of memory for packing buffers")
    grad_w = partial_arr[0] if outer == 1 else partial_arr.sum(axis=0)
    return grad_w.reshape(w_shape)
