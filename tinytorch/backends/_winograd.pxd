# cython: language_level=3
# Winograd F(2x2, 3x3), called by _conv.pyx for 3x3 stride-1 convolutions.
from cython cimport floating

cdef int winograd_3x3(const floating *x, Py_ssize_t n_img, Py_ssize_t c, Py_ssize_t h,
                      Py_ssize_t w, const floating *filters, Py_ssize_t f, Py_ssize_t pad,
                      bint rotate, floating *out, int threads) noexcept nogil

cdef int winograd_3x3_grad_weight(const floating *x, Py_ssize_t n_img, Py_ssize_t c,
                                  Py_ssize_t h, Py_ssize_t w, const floating *dy,
                                  Py_ssize_t f, Py_ssize_t pad, floating *dw,
                                  int threads) noexcept nogil
