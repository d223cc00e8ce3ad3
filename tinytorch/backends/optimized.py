"""The reference solution students try to beat: compiled Cython kernels.

matmul and batched_matmul run the packed, register-tiled GEMM of _gemm.pyx
(unpacked for small products, a narrow tile for few columns). conv2d and both
of its gradients run Winograd F(2x2, 3x3) on 3x3 stride-1 layers of 32 channels
and more (_winograd.pyx) and otherwise reduce to that GEMM image by image
(_conv.pyx), so no operation ever materialises a whole batch's im2col matrix.
"""
import os

import numpy as np

from . import _conv, _gemm
from .base import ComputeBackend

THREADS_ENV = "TINYTORCH_THREADS"


def _thread_count(value, source):
    """An int >= 1, or a ValueError naming where the bad value came from."""
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if count < 1 or isinstance(value, bool) or (isinstance(value, float) and value != count):
        raise ValueError(f"{source} must be a whole number of threads >= 1, got {value!r}")
    return count


class OptimizedBackend(ComputeBackend):
    """Packed GEMM with an AVX-512/AVX2 micro-kernel and OpenMP threads.

    threads: how many threads every kernel uses; default $TINYTORCH_THREADS,
    else all cores. A build without OpenMP always uses 1 (see `openmp`).
    """

    #: Whether the kernels were compiled with OpenMP (read from the compiled module).
    openmp = _gemm.openmp and _conv.openmp
    #: The micro-kernel compiled in: "avx512", "avx2" or "portable".
    isa = _gemm.isa

    def __init__(self, threads=None):
        if threads is None:
            env = os.environ.get(THREADS_ENV)
            threads = _thread_count(env, f"${THREADS_ENV}") if env else _gemm.max_threads()
        self.threads = threads

    @property
    def threads(self):
        """Threads each kernel uses; set it to change (1 reproduces single-thread numbers)."""
        return self._threads

    @threads.setter
    def threads(self, value):
        count = _thread_count(value, "OptimizedBackend.threads")
        self._threads = count if self.openmp else 1

    def matmul(self, a, b):
        out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
        _gemm.matmul(a, b, out, self._threads)
        return out

    def batched_matmul(self, a, b):
        out = np.empty((a.shape[0], a.shape[1], b.shape[2]), dtype=a.dtype)
        _gemm.batched_matmul(a, b, out, self._threads)
        return out

    def conv2d(self, x, w, stride=1, padding=0):
        return _conv.conv2d(x, w, stride, padding, self._threads)

    def conv2d_grad_input(self, grad_out, w, x_shape, stride=1, padding=0):
        return _conv.conv2d_grad_input(grad_out, w, x_shape, stride, padding, self._threads)

    def conv2d_grad_weight(self, x, grad_out, w_shape, stride=1, padding=0):
        return _conv.conv2d_grad_weight(x, grad_out, w_shape, stride, padding, self._threads)
