# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""C = A @ B with the i-k-j loop order, rows of C shared out among OpenMP threads.

i-k-j instead of the textbook i-j-k: the innermost loop then walks a row of B
and a row of C, both contiguous, so the compiler vectorises it; a[i, p] is one
number held in a register. Each thread owns whole rows of C, so no two threads
ever write the same element.
"""
from cython cimport floating
from cython.parallel cimport prange

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define BOB_OPENMP 1
    #else
    #define BOB_OPENMP 0
    static int omp_get_max_threads(void) { return 1; }
    #endif
    """
    int BOB_OPENMP
    int omp_get_max_threads() nogil

#: True if this module was compiled with OpenMP; False means prange runs serially.
openmp = bool(BOB_OPENMP)


def max_threads():
    """Threads OpenMP would use (OMP_NUM_THREADS, else every core); 1 in a serial build."""
    return omp_get_max_threads()


def matmul_ikj(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] c,
               int threads):
    """c = a @ b; c is (M, N) of the same dtype and is overwritten."""
    cdef Py_ssize_t m = a.shape[0], k = a.shape[1], n = b.shape[1]
    cdef Py_ssize_t i, p, j
    cdef floating a_ip
    for i in prange(m, nogil=True, num_threads=threads, schedule="static"):
        for j in range(n):
            c[i, j] = 0
        for p in range(k):
            a_ip = a[i, p]
            for j in range(n):
                c[i, j] += a_ip * b[p, j]
