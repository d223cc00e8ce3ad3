# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Blocked GEMM over typed memoryviews (float32 and float64 through one fused type)."""
from cython cimport floating
from cython.parallel cimport prange

cdef extern from *:
    """
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

#: True if this module was compiled with OpenMP (read from the build, not assumed).
openmp = bool(TT_OPENMP)


def max_threads():
    return omp_get_max_threads()


DEF BLOCK = 64


def gemm(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] c, int threads):
    """c = a @ b, blocked over rows (parallel) and the inner dimension."""
    cdef Py_ssize_t m = a.shape[0], k = a.shape[1], n = b.shape[1]
    cdef Py_ssize_t i0, i, p0, p, j, i_end, p_end
    cdef floating aip
    with nogil:
        for i0 in prange(0, m, BLOCK, num_threads=threads, schedule="static"):
            i_end = min(i0 + BLOCK, m)
            for i in range(i0, i_end):
                for j in range(n):
                    c[i, j] = 0
            for p0 in range(0, k, BLOCK):
                p_end = min(p0 + BLOCK, k)
                for i in range(i0, i_end):
                    for p in range(p0, p_end):
                        aip = a[i, p]
                        for j in range(n):
                            c[i, j] += aip * b[p, j]
