# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""A cache-blocked matrix multiplication, C = A @ B, for float32 and float64.

Why blocking? A naive i-j-k loop walks B column by column: every step jumps a
whole row ahead in memory, and B is re-read from RAM for every row of A. Here
the work is cut into tiles small enough to stay in cache while they are reused:

    for each block of columns j0 (NB wide)        B's tile stays in L2
      for each block of the inner dimension p0    (KB x NB of B)
        for each row i of A
          for each p in the block                 a[i, p] is one number
            for each j in the block               c[i, j0:] += a[i, p] * b[p, j0:]

The innermost loop runs along rows of B and C, i.e. contiguous memory, with
no dependence between iterations: the C compiler turns it into SIMD code.

`floating` is Cython's fused type: this one source compiles to a float32 and a
float64 version. `nogil` releases Python's lock while the loops run; the
compiler directives on the first line turn off bounds and wraparound checks
(tinytorch has already validated the shapes).
"""
from cython cimport floating

# Tile sizes: a KB x NB tile of B is 128 * 256 * 8 bytes = 256 KiB in float64,
# comfortably inside a 1-2 MiB L2 cache, while one row of it (NB values) sits in L1.
cdef Py_ssize_t KB = 128, NB = 256


def blocked_matmul(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] c):
    """c = a @ b; c must be a (M, N) array of the same dtype (its contents are overwritten)."""
    cdef Py_ssize_t m = a.shape[0], k = a.shape[1], n = b.shape[1]
    cdef Py_ssize_t i, j, p, jb, pb, j0, p0, j_end, p_end
    cdef floating a_ip
    with nogil:
        for i in range(m):
            for j in range(n):
                c[i, j] = 0
        for jb in range((n + NB - 1) // NB):        # tile number, rounding up
            j0 = jb * NB
            j_end = min(j0 + NB, n)                 # the last tile may be narrower
            for pb in range((k + KB - 1) // KB):
                p0 = pb * KB
                p_end = min(p0 + KB, k)
                for i in range(m):
                    for p in range(p0, p_end):
                        a_ip = a[i, p]
                        for j in range(j0, j_end):
                            c[i, j] += a_ip * b[p, j]
