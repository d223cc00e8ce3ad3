# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""A GotoBLAS/BLIS-style GEMM, C = A @ B, for float32 and float64 (one fused-type code path).

Read it in order:
  1. block sizes     -- why MC, KC, NC have the values they have
  2. packing A       -- MR-row slivers of A, stored column by column
  3. packing B       -- NR-column slivers of B, stored row by row
  4. the loop nest   -- five loops around the micro-kernel (one thread)
  5. layout, threads -- normal tile, narrow tile or C^T; each thread its own slab of C
  6. small products  -- no packing at all when A and B fit in cache
  7. for conv2d      -- weights packed once, B read in place through a row table
  8. Python entry points (matmul, batched_matmul)

The micro-kernels themselves (one MR x NR tile of C, kept in registers) are C
with GCC vector extensions: _microkernel.h. Everything here releases the GIL;
validation happened before (the backend contract), so no bounds checks.
"""
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange
from libc.stdlib cimport free

cnp.import_array()

cdef extern from *:
    """
    /* Prefetch `rows` rows of `bytes` bytes, `stride` bytes apart (into L2). */
    static inline void prefetch_rows(const void *base, long rows, long bytes, long stride)
    {
        for (long r = 0; r < rows; r++)
            for (long i = 0; i < bytes; i += 64)
                __builtin_prefetch((const char *)base + r * stride + i, 0, 2);
    }
    #ifdef _OPENMP
    #include <omp.h>
    #define TT_OPENMP 1
    #else
    #define TT_OPENMP 0
    static int omp_get_max_threads(void) { return 1; }
    #endif
    """
    int TT_OPENMP
    int omp_get_max_threads() nogil
    void prefetch_rows(const void *base, long rows, long bytes, long stride) nogil

cdef extern from "_microkernel.h" nogil:
    const char *TT_ISA
    enum:
        TT_MR_F32
        TT_NR_F32
        TT_MR_F64
        TT_NR_F64
    void *tt_aligned_alloc(size_t nbytes)
    enum:
        TT_MR_NARROW
        TT_NR_NARROW_F32
        TT_NR_NARROW_F64
    void tt_kernel_f32(long kc, const float *a, const float *b, float *c, long rsc, long csc,
                       int mr, int nr, int accumulate)
    void tt_kernel_f64(long kc, const double *a, const double *b, double *c, long rsc, long csc,
                       int mr, int nr, int accumulate)
    void tt_kernel_narrow_f32(long kc, const float *a, const float *b, float *c, long rsc,
                              long csc, int mr, int nr, int accumulate)
    void tt_kernel_narrow_f64(long kc, const double *a, const double *b, double *c, long rsc,
                              long csc, int mr, int nr, int accumulate)
    void tt_kernel_indirect_f32(long kc, const float *a, const float *b, const long *boff,
                                float *c, long rsc, int mr, int nr, int accumulate)
    void tt_kernel_indirect_f64(long kc, const double *a, const double *b, const long *boff,
                                double *c, long rsc, int mr, int nr, int accumulate)
    void tt_kernel_rows_f32(long kc, const float *a, const long *aoff, const float *b,
                            long rsb, float *c, long rsc, int mr, int nr, int accumulate)
    void tt_kernel_rows_f64(long kc, const double *a, const long *aoff, const double *b,
                            long rsb, double *c, long rsc, int mr, int nr, int accumulate)
    void tt_kernel_direct_f32(long kc, const float *a, long rsa, long csa, const float *b,
                              long rsb, float *c, long rsc, int mr, int nr, int accumulate)
    void tt_kernel_direct_f64(long kc, const double *a, long rsa, long csa, const double *b,
                              long rsb, double *c, long rsc, int mr, int nr, int accumulate)
    void tt_kernel_direct_narrow_f32(long kc, const float *a, long rsa, long csa,
                                     const float *b, long rsb, float *c, long rsc, int mr,
                                     int nr, int accumulate)
    void tt_kernel_direct_narrow_f64(long kc, const double *a, long rsa, long csa,
                                     const double *b, long rsb, double *c, long rsc, int mr,
                                     int nr, int accumulate)
    void tt_pack_transposed_f32(long rows, long kc, const float *src, long ld, float *dst,
                                long width)
    void tt_pack_transposed_f64(long rows, long kc, const double *src, long ld, double *dst,
                                long width)

#: True if this module was compiled with OpenMP (read from the build, not assumed).
openmp = bool(TT_OPENMP)
#: Which micro-kernel was compiled in: "avx512", "avx2" or "portable".
isa = TT_ISA.decode()
#: Register tile (rows, columns) of the micro-kernel, per dtype.
tile = {"float32": (TT_MR_F32, TT_NR_F32), "float64": (TT_MR_F64, TT_NR_F64)}
#: The narrow tile (one vector wide), for products with few columns.
narrow_tile = {"float32": (TT_MR_NARROW, TT_NR_NARROW_F32),
               "float64": (TT_MR_NARROW, TT_NR_NARROW_F64)}


def max_threads():
    """Threads OpenMP would use by default (all cores, or OMP_NUM_THREADS)."""
    return omp_get_max_threads()


# ---------------------------------------------------------------- 1. block sizes
#
# The loop nest (section 4) keeps each operand in the cache level that suits
# how often it is reused. Sizes are in elements and the same for both dtypes,
# which is right for AVX-512, where a float32 and a float64 B sliver are the
# same number of bytes (NR = 32 floats = 16 doubles = 128 bytes per row).
#
#  KC: one kc x NR sliver of packed B is read once per micro-kernel call and
#      reused by every MR-row sliver of A, so it should stay in L1 (48 KiB
#      here): 256 x 128 B = 32 KiB, leaving room for the streaming A sliver.
#  MC: the packed mc x kc block of A is reused for every sliver of B, so it
#      should stay in L2 (2 MiB per core here): 192 x 256 x 8 B = 384 KiB for
#      float64, small enough to share L2 with the B slivers passing through.
#  NC: the packed kc x nc block of B lives in L3 (large and shared);
#      4096 x 256 x 8 B = 8 MiB.
# On the Xeon (Sapphire Rapids) these were written on, KC from 128 to 384 and
# MC from 96 to 384 measured the same within run-to-run noise (float32 and
# float64, 512 and 1024 cubed), which is why they are plain constants
# (C enum constants: compile-time constants to the C compiler, as DEF made them).
cdef enum:
    KC = 256
    MC = 192      # a multiple of MR (8 on AVX-512, 6 otherwise)
    NC = 4096     # a multiple of NR

    # Below this many multiply-adds a second thread costs more to wake than it saves.
    PARALLEL_MIN_WORK = 128 * 128 * 128


cdef inline void tile_shape(bint narrow, int *mr, int *nr, const floating *dummy) noexcept nogil:
    """The register tile (MR, NR) of the normal or the narrow micro-kernel."""
    if narrow:
        mr[0] = TT_MR_NARROW
        nr[0] = TT_NR_NARROW_F32 if floating is float else TT_NR_NARROW_F64
    else:
        mr[0] = TT_MR_F32 if floating is float else TT_MR_F64
        nr[0] = TT_NR_F32 if floating is float else TT_NR_F64


cdef inline void kernel(bint narrow, Py_ssize_t kc, const floating *a, const floating *b,
                        floating *c, Py_ssize_t rsc, Py_ssize_t csc, Py_ssize_t mr,
                        Py_ssize_t nr, bint accumulate) noexcept nogil:
    """One MR x NR tile from packed slivers (the micro-kernel of _microkernel.h)."""
    if floating is float:
        if narrow:
            tt_kernel_narrow_f32(kc, a, b, c, rsc, csc, mr, nr, accumulate)
        else:
            tt_kernel_f32(kc, a, b, c, rsc, csc, mr, nr, accumulate)
    else:
        if narrow:
            tt_kernel_narrow_f64(kc, a, b, c, rsc, csc, mr, nr, accumulate)
        else:
            tt_kernel_f64(kc, a, b, c, rsc, csc, mr, nr, accumulate)


cdef inline Py_ssize_t round_up(Py_ssize_t x, Py_ssize_t multiple) noexcept nogil:
    return (x + multiple - 1) // multiple * multiple


cdef inline Py_ssize_t k_block(Py_ssize_t rest) noexcept nogil:
    """Depth of the next KC block: a remainder up to KC/4 joins the last block
    (e.g. k = 288 is one block, not 256 + 32), since every block costs a pass
    over C and a block of a few steps cannot pay for it."""
    return rest if rest <= KC + KC // 4 else KC


cdef int threads_for(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, int threads) noexcept nogil:
    """The thread count worth using for an m x k @ k x n product."""
    if threads < 1 or m * n * k < PARALLEL_MIN_WORK:
        return 1
    return threads


# ---------------------------------------------------------------- 2. packing A
#
# The micro-kernel walks p = 0..kc-1 and needs, at each step, the MR values
# A[i, p] of its rows, one after the other. Packing copies an MR-row sliver
# of A into exactly that order (ap[p*MR + i]), so the kernel reads memory
# strictly sequentially, whatever A's layout: the strides rsa/csa say where
# A[i, p] lives, so a transposed view costs nothing extra. Rows beyond the
# edge of A are zeros: the kernel computes a full tile and the extra rows of
# it are never written back.
#
# Which loop order is cheap depends on which stride is 1: if A's columns are
# contiguous (rsa == 1), each step p is a straight copy; if its rows are
# (csa == 1, the usual row-major A), the sliver must be transposed, which the
# C helper does in 4 x 4 register blocks (_microkernel_body.h).

cdef inline void pack_transposed(Py_ssize_t rows, Py_ssize_t kc, const floating *src,
                                 Py_ssize_t ld, floating *dst, int width) noexcept nogil:
    if floating is float:
        tt_pack_transposed_f32(rows, kc, src, ld, dst, width)
    else:
        tt_pack_transposed_f64(rows, kc, src, ld, dst, width)


cdef void pack_a(Py_ssize_t rows, Py_ssize_t kc, const floating *a,
                 Py_ssize_t rsa, Py_ssize_t csa, floating *ap, int mr) noexcept nogil:
    cdef Py_ssize_t i, p
    if csa == 1:
        pack_transposed(rows, kc, a, rsa, ap, mr)
        return
    for p in range(kc):
        for i in range(rows):
            ap[p * mr + i] = a[i * rsa + p * csa]
        for i in range(rows, mr):
            ap[p * mr + i] = 0


# ---------------------------------------------------------------- 3. packing B
#
# Likewise the kernel needs, at step p, the NR values B[p, j] of its columns
# as aligned vectors: bp[p*NR + j]. Columns beyond the edge of B are zeros.
# A row-major B (csb == 1) is a plain copy the compiler vectorises; B given
# as a transposed view (rsb == 1, e.g. cols^T in conv2d_grad_weight) is the
# transposing case again.
#
# A caller that can produce B directly in packed form may hand it over
# instead (gemm_packed_b): sliver after sliver, each all k rows of NR values,
# i.e. B[p, s*NR + j] at packed_b[(s*k + p)*NR + j], zero-padded. conv2d
# does: its im2col writes this layout, so its cols matrix is never copied.

cdef void pack_b(Py_ssize_t cols, Py_ssize_t kc, const floating *b,
                 Py_ssize_t rsb, Py_ssize_t csb, floating *bp, int nr) noexcept nogil:
    cdef Py_ssize_t j, p
    if rsb == 1 and csb != 1:
        pack_transposed(cols, kc, b, csb, bp, nr)
        return
    for p in range(kc):
        if csb == 1:
            for j in range(cols):
                bp[p * nr + j] = b[p * rsb + j]
        else:
            for j in range(cols):
                bp[p * nr + j] = b[p * rsb + j * csb]
        for j in range(cols, nr):
            bp[p * nr + j] = 0


# ---------------------------------------------------------------- 4. the loop nest
#
#   for jc in 0..n step NC:                 B block columns      (L3)
#     for pc in 0..k step KC:               inner dimension (k_block)
#       pack B[pc:pc+kc, jc:jc+nc]          -> bp, NR-column slivers
#       for ic in 0..m step MC:             A block rows         (L2)
#         pack A[ic:ic+mc, pc:pc+kc]        -> ap, MR-row slivers
#         for jr in 0..nc step NR:          one B sliver         (L1)
#           for ir in 0..mc step MR:        one A sliver
#             micro-kernel: C[ic+ir : +MR, jc+jr : +NR] (+)= ap sliver @ bp sliver
#
# The first pc block writes C, later ones add to it (unless the caller asks to
# accumulate into C from the start, as conv2d_grad_weight does over images).

cdef int gemm_serial(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                     const floating *a, Py_ssize_t rsa, Py_ssize_t csa,
                     const floating *b, Py_ssize_t rsb, Py_ssize_t csb,
                     floating *c, Py_ssize_t rsc, Py_ssize_t csc, bint accumulate,
                     const floating *packed_b, bint narrow=False) noexcept nogil:
    """C[m, n] (+)= A[m, k] @ B[k, n] on the calling thread; -1 if out of memory.
    B comes from (b, rsb, csb), or, if packed_b is not NULL, is already packed.
    narrow: with the narrow micro-kernel (packed_b then in its sliver width)."""
    cdef int mr, nr
    tile_shape(narrow, &mr, &nr, a)
    cdef Py_ssize_t kc_max = min(k, <Py_ssize_t>(KC + KC // 4))   # deepest k_block
    cdef floating *ap = <floating *>tt_aligned_alloc(
        min(<Py_ssize_t>MC, round_up(m, mr)) * kc_max * sizeof(floating))
    cdef floating *bp = NULL
    if packed_b == NULL:
        bp = <floating *>tt_aligned_alloc(
            min(<Py_ssize_t>NC, round_up(n, nr)) * kc_max * sizeof(floating))
    if ap == NULL or (bp == NULL and packed_b == NULL):
        free(ap)
        free(bp)
        return -1

    cdef Py_ssize_t jb, ib, jc, pc, ic, jr, ir, nc, kc, mc, s, t
    cdef const floating *b_sliver
    cdef bint add
    for jb in range((n + NC - 1) // NC):     # (a C loop needs range() to step by a literal)
        jc = jb * NC
        nc = min(<Py_ssize_t>NC, n - jc)
        pc = 0
        while pc < k:
            kc = k_block(k - pc)
            add = accumulate or pc > 0
            for s in range((nc + nr - 1) // nr):
                if packed_b != NULL:
                    break
                jr = s * nr
                pack_b(min(<Py_ssize_t>nr, nc - jr), kc, b + pc * rsb + (jc + jr) * csb,
                       rsb, csb, bp + jr * kc, nr)
            for ib in range((m + MC - 1) // MC):
                ic = ib * MC
                mc = min(<Py_ssize_t>MC, m - ic)
                for s in range((mc + mr - 1) // mr):
                    ir = s * mr
                    pack_a(min(<Py_ssize_t>mr, mc - ir), kc, a + (ic + ir) * rsa + pc * csa,
                           rsa, csa, ap + ir * kc, mr)
                for s in range((nc + nr - 1) // nr):
                    jr = s * nr
                    if packed_b == NULL:
                        b_sliver = bp + jr * kc
                    else:
                        b_sliver = packed_b + (jc + jr) * k + pc * nr
                    for t in range((mc + mr - 1) // mr):
                        ir = t * mr
                        kernel(narrow, kc, ap + ir * kc, b_sliver,
                               c + (ic + ir) * rsc + (jc + jr) * csc, rsc, csc,
                               min(<Py_ssize_t>mr, mc - ir), min(<Py_ssize_t>nr, nc - jr), add)
            pc += kc
    free(ap)
    free(bp)
    return 0


# ---------------------------------------------------------------- 5. layout and threads
#
# Layout: a tile is MR x NR, so a C only 10 columns wide would fill a third
# of every 32-wide tile with padding. Two ways out. The narrow micro-kernel's
# tile is one vector wide and twice as tall (16 x 16 on AVX-512), which pads a
# 10-column C to 16, not 32. And C^T = B^T @ A^T, where a transpose is free
# (swap the strides), so C can be computed as its transpose, whose rows are the
# short side -- but then every tile is stored transposed, element by element,
# so gemm() takes it only when it pads clearly less than both tiles.
#
# Threads: each thread computes one slab of C with the serial loop nest
# above, on its own packing buffers: no locks, no barriers, only the join at
# the end. A wide C is cut into column slabs (every thread packs all of A and
# its share of B), a tall one into row slabs; slab edges fall on tile
# boundaries (NR, MR), so no tile is split between threads. The duplicated
# packing of the other operand is O(m*k) or O(k*n) against O(m*n*k) arithmetic.

cdef int gemm_threads(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                      const floating *a, Py_ssize_t rsa, Py_ssize_t csa,
                      const floating *b, Py_ssize_t rsb, Py_ssize_t csb,
                      floating *c, Py_ssize_t rsc, Py_ssize_t csc, bint accumulate,
                      const floating *packed_b, int threads, bint narrow=False) noexcept nogil:
    cdef int mr, nr
    tile_shape(narrow, &mr, &nr, a)
    if threads == 1:
        return gemm_serial(m, n, k, a, rsa, csa, b, rsb, csb, c, rsc, csc, accumulate,
                           packed_b, narrow)
    cdef bint by_columns = n >= m
    cdef Py_ssize_t total = n if by_columns else m
    cdef Py_ssize_t slab = round_up((total + threads - 1) // threads, nr if by_columns else mr)
    cdef Py_ssize_t start, size, t
    cdef int failures = 0
    for t in prange(threads, num_threads=threads, schedule="static", chunksize=1):
        start = t * slab
        size = min(slab, total - start)
        if size <= 0:
            continue
        if by_columns:
            failures += -gemm_serial(m, size, k, a, rsa, csa, b + start * csb, rsb, csb,
                                     c + start * csc, rsc, csc, accumulate,
                                     <const floating *>NULL if packed_b == NULL
                                     else packed_b + start * k, narrow)
        else:
            failures += -gemm_serial(size, n, k, a + start * rsa, rsa, csa, b, rsb, csb,
                                     c + start * rsc, rsc, csc, accumulate, packed_b, narrow)
    return -1 if failures else 0


cdef int gemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
              const floating *a, Py_ssize_t rsa, Py_ssize_t csa,
              const floating *b, Py_ssize_t rsb, Py_ssize_t csb,
              floating *c, Py_ssize_t ldc, bint accumulate, int threads,
              bint prefetch=True) noexcept nogil:
    """C[m, n] (+)= A[m, k] @ B[k, n] for a row-major C (row stride ldc), with up to
    `threads` threads; -1 if out of memory.

    Of the three layouts -- the normal tile, the narrow tile, C computed as C^T --
    the one whose tiles pad C least (C^T only if clearly better: its tiles are
    stored transposed, element by element); then, for a small product, the
    direct kernels (section 6), else packing."""
    cdef int mr, nr, nmr, nnr
    tile_shape(False, &mr, &nr, a)
    tile_shape(True, &nmr, &nnr, a)
    threads = threads_for(m, n, k, threads)
    cdef Py_ssize_t normal = round_up(m, mr) * round_up(n, nr)
    cdef Py_ssize_t narrow_area = round_up(m, nmr) * round_up(n, nnr)
    cdef bint narrow = narrow_area * 20 < normal * 17        # 15% less padding
    if round_up(n, mr) * round_up(m, nr) < min(normal, narrow_area) * 3 // 4:
        return gemm_threads(n, m, k, b, csb, rsb, a, csa, rsa, c, 1, ldc, accumulate,
                            NULL, threads)
    if threads == 1 and small_pays(m, n, k, csa, csb):
        return gemm_small(m, n, k, a, rsa, csa, b, rsb, c, ldc, accumulate, narrow, prefetch)
    return gemm_threads(m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, 1, accumulate,
                        NULL, threads, narrow)


cdef int gemm_packed_b(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                       const floating *a, Py_ssize_t rsa, Py_ssize_t csa,
                       const floating *packed_b, floating *c, Py_ssize_t ldc,
                       bint accumulate, int threads) noexcept nogil:
    """gemm() with B already packed by the caller (layout: section 3)."""
    return gemm_threads(m, n, k, a, rsa, csa, NULL, 0, 0, c, ldc, 1, accumulate, packed_b,
                        threads_for(m, n, k, threads))


# ---------------------------------------------------------------- 6. small products, unpacked
#
# Packing costs O(m*k + k*n) copies to make the O(m*n*k) arithmetic stream
# through cache lines and pages in order, and each packed sliver of B is then
# reused by all m/MR slivers of A (and A's by n/NR slivers of B). When A and B
# are small they sit in L1/L2 anyway, and when m or n is small the packing is
# reused only a few times: then the copies (and the buffers' malloc and free)
# cost more than they save -- for a 64 x 64 x 64 product about a third of the
# call. OpenBLAS's small-matrix kernels skip them, and so does this path. The
# direct micro-kernel broadcasts A[i, p] from where it lies (MR row streams)
# and loads row p of a B sliver from B itself; only the last, partial sliver
# of B is copied into a zero-padded buffer, so no load reads past B. Needs
# unit column stride in B (rows of B are vectors), a B sliver (k x NR) that
# stays in L2, and one thread. Measured against packing here (CPU time, 3
# alternating runs): 64x4096x64 1.20x, 128x1152x64 1.21x, 64x3072x256 1.08x
# (float64 1.27x), 256x512x128 1.08x; 1024 cubed 0.96x, so large squares pack.

cdef enum:
    SMALL_DEPTH = 4096            # k at most: a B sliver (k x NR) read in place stays in L2
    SMALL_AREA = 64 * 1024        # elements of A and B together at most, whatever the shape
    SMALL_SIDE = 128              # ... or m or n at most: packing reused that few times
    EDGE_ON_STACK = 2048          # elements: B's last sliver up to 16 KiB lives on the stack
    PREFETCH_AREA = 16 * 1024     # elements of A and B at most that are prefetched first


cdef inline bint small_pays(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, Py_ssize_t csa,
                            Py_ssize_t csb) noexcept nogil:
    """The direct path: small A and B, or one small side and a row-major A (a strided
    A's row streams cost more than packing it once: 0.87x on conv2d_grad_input's
    W^T @ dY at 288 x 64 x 64)."""
    return csb == 1 and k <= SMALL_DEPTH and \
        (m * k + k * n <= SMALL_AREA or (min(m, n) <= SMALL_SIDE and csa == 1))


cdef int gemm_small(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                    const floating *a, Py_ssize_t rsa, Py_ssize_t csa,
                    const floating *b, Py_ssize_t rsb, floating *c, Py_ssize_t ldc,
                    bint accumulate, bint narrow, bint prefetch) noexcept nogil:
    """C[m, n] (+)= A @ B with the direct kernels; B's columns contiguous; -1 if out of
    memory (for the edge sliver's buffer). prefetch: the operands may be cold."""
    cdef int mr, nr
    tile_shape(narrow, &mr, &nr, a)
    mr = TT_MR_F32 if floating is float else TT_MR_F64    # direct kernels: always MR rows
    cdef Py_ssize_t full = n // nr * nr, s, t, brs
    cdef floating on_stack[EDGE_ON_STACK]       # a small edge needs no malloc/free
    cdef floating *edge = NULL
    cdef const floating *bs
    if prefetch and m * k + k * n <= PREFETCH_AREA:
        # Operands this small are often cold (just produced elsewhere, or fresh inputs):
        # ask for all of B's rows and A's rows now, in order, so the memory system
        # streams them while the first tiles compute, as packing's sequential reads
        # would. A line already cached costs about a cycle -- but for 64K elements
        # (4000 lines) that is measurable on warm data (1000x64x10: 0.93-0.96x of
        # OpenBLAS with it, 1.00-1.03x without), hence the smaller limit; and
        # batched_matmul's products (attention heads, just computed) skip it.
        # Measured with cold inputs as the competition times them, 64x64x64
        # float32 against OpenBLAS: 1.10-1.41x its time without, 0.94-1.07x with.
        prefetch_rows(b, k, n * sizeof(floating), rsb * sizeof(floating))
        if csa == 1:
            prefetch_rows(a, m, k * sizeof(floating), rsa * sizeof(floating))
    if full < n:
        if k * nr <= EDGE_ON_STACK:
            edge = &on_stack[0]
        else:
            edge = <floating *>tt_aligned_alloc(k * nr * sizeof(floating))
        if edge == NULL:
            return -1
        pack_b(n - full, k, b + full, rsb, 1, edge, nr)
    for s in range((n + nr - 1) // nr):
        if s * nr < full:
            bs, brs = b + s * nr, rsb
        else:
            bs, brs = edge, nr
        for t in range((m + mr - 1) // mr):
            if floating is float:
                if narrow:
                    tt_kernel_direct_narrow_f32(k, a + t * mr * rsa, rsa, csa, bs, brs,
                                                c + t * mr * ldc + s * nr, ldc,
                                                min(<Py_ssize_t>mr, m - t * mr),
                                                min(<Py_ssize_t>nr, n - s * nr), accumulate)
                else:
                    tt_kernel_direct_f32(k, a + t * mr * rsa, rsa, csa, bs, brs,
                                         c + t * mr * ldc + s * nr, ldc,
                                         min(<Py_ssize_t>mr, m - t * mr),
                                         min(<Py_ssize_t>nr, n - s * nr), accumulate)
            else:
                if narrow:
                    tt_kernel_direct_narrow_f64(k, a + t * mr * rsa, rsa, csa, bs, brs,
                                                c + t * mr * ldc + s * nr, ldc,
                                                min(<Py_ssize_t>mr, m - t * mr),
                                                min(<Py_ssize_t>nr, n - s * nr), accumulate)
                else:
                    tt_kernel_direct_f64(k, a + t * mr * rsa, rsa, csa, bs, brs,
                                         c + t * mr * ldc + s * nr, ldc,
                                         min(<Py_ssize_t>mr, m - t * mr),
                                         min(<Py_ssize_t>nr, n - s * nr), accumulate)
    if edge != &on_stack[0]:
        free(edge)
    return 0


# ---------------------------------------------------------------- 7. for conv2d: both operands packed once, or B read in place
#
# A convolution multiplies the same weights by every image's columns (and
# Winograd's 16 small products reuse theirs for every block of tiles), so it
# packs the weights once per call instead of once per GEMM: pack_a_full lays
# all of A out as MR-row slivers, each all k deep (A[s*MR + i, p] at
# ap[(s*k + p)*MR + i]), the mirror of the packed-B layout in section 3. Then
# gemm_prepacked only runs the micro-kernels: over KC blocks (the kernel reads
# its kc steps of a sliver from the block's offset, since a sliver is stored
# step after step), over the B slivers, and over the A slivers, so one B
# sliver stays in L1 while every A sliver streams past it.

cdef void pack_a_full(Py_ssize_t m, Py_ssize_t k, const floating *a, Py_ssize_t rsa,
                      Py_ssize_t csa, floating *ap) noexcept nogil:
    """All of A (m x k, any strides) as ceil(m/MR) zero-padded MR-row slivers."""
    cdef int mr = TT_MR_F32 if floating is float else TT_MR_F64
    cdef Py_ssize_t s
    for s in range((m + mr - 1) // mr):
        pack_a(min(<Py_ssize_t>mr, m - s * mr), k, a + s * mr * rsa, rsa, csa,
               ap + s * k * mr, mr)


cdef void gemm_prepacked(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const floating *ap,
                         const floating *bp, floating *c, Py_ssize_t ldc,
                         bint accumulate) noexcept nogil:
    """C[m, n] (+)= A @ B (row-major C, row stride ldc) on this thread, A packed by
    pack_a_full and B in the packed-B layout of section 3."""
    cdef int mr, nr
    if floating is float:
        mr, nr = TT_MR_F32, TT_NR_F32
    else:
        mr, nr = TT_MR_F64, TT_NR_F64
    cdef Py_ssize_t pc = 0, kc, s, t
    while pc < k:
        kc = k_block(k - pc)
        for s in range((n + nr - 1) // nr):
            for t in range((m + mr - 1) // mr):
                kernel(False, kc, ap + (t * k + pc) * mr, bp + (s * k + pc) * nr,
                       c + t * mr * ldc + s * nr, ldc, 1, min(<Py_ssize_t>mr, m - t * mr),
                       min(<Py_ssize_t>nr, n - s * nr), accumulate or pc > 0)
        pc += kc


cdef void gemm_indirect(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const floating *ap,
                        const floating *b, const long *boff, floating *c, Py_ssize_t ldc,
                        bint accumulate) noexcept nogil:
    """C[m, n] (+)= A @ B on this thread, A packed by pack_a_full, B[p, j] at
    b[boff[p] + j] (row p of B anywhere, its columns contiguous, readable up to a
    whole sliver past column n - 1): gemm_prepacked without packed B (for conv)."""
    cdef int mr = TT_MR_F32 if floating is float else TT_MR_F64
    cdef int nr = TT_NR_F32 if floating is float else TT_NR_F64
    cdef Py_ssize_t pc = 0, kc, s, t
    while pc < k:
        kc = k_block(k - pc)
        for s in range((n + nr - 1) // nr):
            for t in range((m + mr - 1) // mr):
                if floating is float:
                    tt_kernel_indirect_f32(kc, ap + (t * k + pc) * mr, b + s * nr, boff + pc,
                                           c + t * mr * ldc + s * nr, ldc,
                                           min(<Py_ssize_t>mr, m - t * mr),
                                           min(<Py_ssize_t>nr, n - s * nr), accumulate or pc > 0)
                else:
                    tt_kernel_indirect_f64(kc, ap + (t * k + pc) * mr, b + s * nr, boff + pc,
                                           c + t * mr * ldc + s * nr, ldc,
                                           min(<Py_ssize_t>mr, m - t * mr),
                                           min(<Py_ssize_t>nr, n - s * nr), accumulate or pc > 0)
        pc += kc


cdef void pack_b_full(Py_ssize_t k, Py_ssize_t n, const floating *b, Py_ssize_t rsb,
                      Py_ssize_t csb, floating *bp) noexcept nogil:
    """All of B (k x n, any strides) as ceil(n/NR) zero-padded NR-column slivers, each all
    k deep: B[p, s*NR + j] at bp[(s*k + p)*NR + j] (the layout gemm_packed_b takes)."""
    cdef int nr = TT_NR_F32 if floating is float else TT_NR_F64
    cdef Py_ssize_t s
    for s in range((n + nr - 1) // nr):
        pack_b(min(<Py_ssize_t>nr, n - s * nr), k, b + s * nr * csb, rsb, csb, bp + s * k * nr,
               nr)


cdef void gemm_rows(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const floating *a,
                    const long *aoff, const floating *bp, floating *c, Py_ssize_t ldc,
                    bint accumulate) noexcept nogil:
    """C[m, n] (+)= A @ B on this thread, row i of A (contiguous along k) at a + aoff[i],
    B packed by pack_b_full: no K blocks (k is the caller's to keep cache-sized)."""
    cdef int mr = TT_MR_F32 if floating is float else TT_MR_F64
    cdef int nr = TT_NR_F32 if floating is float else TT_NR_F64
    cdef Py_ssize_t s, t
    for s in range((n + nr - 1) // nr):
        for t in range((m + mr - 1) // mr):
            if floating is float:
                tt_kernel_rows_f32(k, a, aoff + t * mr, bp + s * k * nr, nr,
                                   c + t * mr * ldc + s * nr, ldc, min(<Py_ssize_t>mr, m - t * mr),
                                   min(<Py_ssize_t>nr, n - s * nr), accumulate)
            else:
                tt_kernel_rows_f64(k, a, aoff + t * mr, bp + s * k * nr, nr,
                                   c + t * mr * ldc + s * nr, ldc, min(<Py_ssize_t>mr, m - t * mr),
                                   min(<Py_ssize_t>nr, n - s * nr), accumulate)


# ---------------------------------------------------------------- 8. Python entry points
#
# Called by optimized.py after the backend contract has validated the inputs;
# the checks here only make a wrong call from elsewhere an exception instead
# of a crash. They read the arrays through numpy's C API, which costs far less
# than typed memoryviews on tiny inputs.

cdef inline Py_ssize_t step(cnp.ndarray x, int axis):
    """Stride of `x` along `axis`, in elements."""
    return cnp.PyArray_STRIDE(x, axis) // cnp.PyArray_ITEMSIZE(x)


cdef inline tuple shape(cnp.ndarray x):
    return (<object>x).shape


cdef int dtype_of(cnp.ndarray a, cnp.ndarray b, cnp.ndarray c, int ndim) except -1:
    cdef int typenum = cnp.PyArray_TYPE(a)
    if typenum not in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64) or \
            cnp.PyArray_TYPE(b) != typenum or cnp.PyArray_TYPE(c) != typenum:
        raise TypeError(f"optimized gemm: float32 or float64 arrays of one dtype, got "
                        f"{a.dtype}, {b.dtype}, {c.dtype}")
    if a.ndim != ndim or b.ndim != ndim or c.ndim != ndim:
        raise ValueError(f"optimized gemm: {ndim}-D arrays expected")
    if not cnp.PyArray_ISWRITEABLE(c) or step(c, ndim - 1) != 1:
        raise ValueError("optimized gemm: the output must be writeable with contiguous rows")
    return typenum


def matmul(cnp.ndarray a, cnp.ndarray b, cnp.ndarray c, int threads, bint accumulate=False):
    """c (+)= a @ b. a and b may be any strided views (a transpose costs nothing:
    packing reads through the strides); c's rows must be contiguous."""
    cdef int typenum = dtype_of(a, b, c, 2)
    cdef Py_ssize_t m = a.shape[0], k = a.shape[1], n = b.shape[1]
    if b.shape[0] != k or c.shape[0] != m or c.shape[1] != n:
        raise ValueError(f"optimized gemm: shapes {shape(a)} @ {shape(b)} -> {shape(c)}")
    if m == 0 or n == 0:
        return
    if k == 0 and not accumulate:
        c.fill(0)
        return
    cdef void *pa = cnp.PyArray_DATA(a)
    cdef void *pb = cnp.PyArray_DATA(b)
    cdef void *pc = cnp.PyArray_DATA(c)
    cdef Py_ssize_t rsa = step(a, 0), csa = step(a, 1), rsb = step(b, 0), csb = step(b, 1)
    cdef Py_ssize_t ldc = step(c, 0)
    cdef int status
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            status = gemm(m, n, k, <float *>pa, rsa, csa, <float *>pb, rsb, csb,
                          <float *>pc, ldc, accumulate, threads)
        else:
            status = gemm(m, n, k, <double *>pa, rsa, csa, <double *>pb, rsb, csb,
                          <double *>pc, ldc, accumulate, threads)
    if status:
        raise MemoryError("optimized gemm: could not allocate its packing buffers")


def batched_matmul(cnp.ndarray a, cnp.ndarray b, cnp.ndarray c, int threads):
    """c[i] = a[i] @ b[i] for C-contiguous (B, M, K) @ (B, K, N). Many small products
    (attention heads) get one thread each; otherwise every thread works on each
    product in turn."""
    cdef int typenum = dtype_of(a, b, c, 3)
    cdef Py_ssize_t count = a.shape[0], m = a.shape[1], k = a.shape[2], n = b.shape[2]
    if b.shape[0] != count or b.shape[1] != k or c.shape[0] != count or c.shape[1] != m \
            or c.shape[2] != n or not (cnp.PyArray_IS_C_CONTIGUOUS(a)
                                       and cnp.PyArray_IS_C_CONTIGUOUS(b)
                                       and cnp.PyArray_IS_C_CONTIGUOUS(c)):
        raise ValueError(f"optimized batched gemm: C-contiguous shapes {shape(a)} @ "
                         f"{shape(b)} -> {shape(c)} expected")
    if count == 0 or m == 0 or n == 0:
        return
    if k == 0:
        c.fill(0)
        return
    cdef bint per_product = count >= threads and threads_for(m, n, k, threads) == 1 \
        or count >= 4 * threads
    cdef int inner = 1 if per_product else threads
    cdef int outer = threads if per_product else 1
    cdef void *pa = cnp.PyArray_DATA(a)
    cdef void *pb = cnp.PyArray_DATA(b)
    cdef void *pc = cnp.PyArray_DATA(c)
    cdef Py_ssize_t i
    cdef int failures = 0
    with nogil:
        if outer == 1:         # no parallel region to open and close for one thread
            for i in range(count):
                if typenum == cnp.NPY_FLOAT32:
                    failures += -gemm(m, n, k, <float *>pa + i * m * k, k, 1,
                                      <float *>pb + i * k * n, n, 1,
                                      <float *>pc + i * m * n, n, False, inner, False)
                else:
                    failures += -gemm(m, n, k, <double *>pa + i * m * k, k, 1,
                                      <double *>pb + i * k * n, n, 1,
                                      <double *>pc + i * m * n, n, False, inner, False)
        else:
            for i in prange(count, num_threads=outer, schedule="static"):
                if typenum == cnp.NPY_FLOAT32:
                    failures += -gemm(m, n, k, <float *>pa + i * m * k, k, 1,
                                      <float *>pb + i * k * n, n, 1,
                                      <float *>pc + i * m * n, n, False, inner, False)
                else:
                    failures += -gemm(m, n, k, <double *>pa + i * m * k, k, 1,
                                      <double *>pb + i * k * n, n, 1,
                                      <double *>pc + i * m * n, n, False, inner, False)
    if failures:
        raise MemoryError("optimized batched gemm: could not allocate packing buffers")
