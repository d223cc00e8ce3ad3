# cython: language_level=3
# The GEMM's C-level entry points, shared with _conv.pyx (which runs one GEMM
# per image inside its own parallel loop, without going back to Python).
from cython cimport floating

cdef int gemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
               const floating *a, Py_ssize_t rsa, Py_ssize_t csa,
               const floating *b, Py_ssize_t rsb, Py_ssize_t csb,
               floating *c, Py_ssize_t ldc, bint accumulate, int threads,
               bint prefetch=*) noexcept nogil

cdef int gemm_packed_b(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                       const floating *a, Py_ssize_t rsa, Py_ssize_t csa,
                       const floating *packed_b, floating *c, Py_ssize_t ldc,
                       bint accumulate, int threads) noexcept nogil

cdef void pack_a_full(Py_ssize_t m, Py_ssize_t k, const floating *a, Py_ssize_t rsa,
                      Py_ssize_t csa, floating *ap) noexcept nogil

cdef void gemm_prepacked(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const floating *ap,
                         const floating *bp, floating *c, Py_ssize_t ldc,
                         bint accumulate) noexcept nogil

cdef void gemm_indirect(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const floating *ap,
                        const floating *b, const long *boff, floating *c, Py_ssize_t ldc,
                        bint accumulate) noexcept nogil

cdef void pack_b_full(Py_ssize_t k, Py_ssize_t n, const floating *b, Py_ssize_t rsb,
                      Py_ssize_t csb, floating *bp) noexcept nogil

cdef void gemm_rows(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const floating *a,
                    const long *aoff, const floating *bp, floating *c, Py_ssize_t ldc,
                    bint accumulate) noexcept nogil
