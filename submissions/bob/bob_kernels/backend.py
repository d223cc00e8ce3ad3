"""BobBackend: one fast kernel (matmul) and everything else built on it.

Bob writes only `matmul` in Cython. conv2d is a sum of KH*KW small matmuls
(one per kernel offset, no im2col matrix), and batched matmul and both conv2d
gradients come from the contract's default implementations, which also run
on this matmul.
"""
import numpy as np
from tinytorch.backends import ComputeBackend
from tinytorch.backends.base import conv_output_shape

from . import _ikj

#: Multiply-adds below which a matmul runs on one thread.
SMALL_PRODUCT = 64 * 64 * 64


class BobBackend(ComputeBackend):
    """OpenMP i-k-j matmul; conv2d as shifted matmuls."""

    #: Whether the kernel was compiled with OpenMP (read from the build).
    openmp = _ikj.openmp

    def __init__(self, threads=None):
        self.threads = int(threads or _ikj.max_threads())

    def matmul(self, a, b):
        out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
        # Waking threads costs more than a small product takes: use one thread for those.
        small = a.shape[0] * a.shape[1] * b.shape[1] < SMALL_PRODUCT
        _ikj.matmul_ikj(a, b, out, 1 if small else self.threads)
        return out

    def conv2d(self, x, w, stride=1, padding=0):
        n, f, oh, ow = conv_output_shape(x.shape, w.shape, stride, padding)
        c, kh, kw = w.shape[1:]
        if padding:
            x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
        channels_first = x.transpose(1, 0, 2, 3)                 # (C, N, H, W) view
        out = np.zeros((f, n * oh * ow), dtype=x.dtype)
        for i in range(kh):
            for j in range(kw):
                # The input pixels that kernel offset (i, j) touches, one column per output pixel.
                shifted = channels_first[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
                out += self.matmul(np.ascontiguousarray(w[:, :, i, j]),
                                   np.ascontiguousarray(shifted).reshape(c, -1))
        return np.ascontiguousarray(out.reshape(f, n, oh, ow).transpose(1, 0, 2, 3))
