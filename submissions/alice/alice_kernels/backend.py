"""AliceBackend: the compiled blocked matmul, and conv2d as one big matmul (im2col).

tinytorch validates every call before it gets here (float32/float64, same
dtype, C-contiguous, shapes that fit), which is why the kernel can switch
bounds checking off.
"""
import numpy as np
from tinytorch.backends import ComputeBackend
from tinytorch.backends.base import conv_output_shape, im2col

from . import _matmul


class AliceBackend(ComputeBackend):
    """Cache-blocked matmul in Cython; conv2d lowered onto it."""

    def matmul(self, a, b):
        out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
        _matmul.blocked_matmul(a, b, out)
        return out

    def conv2d(self, x, w, stride=1, padding=0):
        # Every receptive field of every image becomes one column, so the whole
        # batch is a single (F, C*KH*KW) @ (C*KH*KW, N*OH*OW) matmul.
        n, f, oh, ow = conv_output_shape(x.shape, w.shape, stride, padding)
        kh, kw = w.shape[2:]
        cols = np.concatenate([im2col(image, kh, kw, stride, padding) for image in x], axis=1)
        out = self.matmul(w.reshape(f, -1), cols)                     # (F, N*OH*OW)
        return np.ascontiguousarray(out.reshape(f, n, oh, ow).transpose(1, 0, 2, 3))
