"""A correct submission without BLAS: einsum (which does not call BLAS) and im2col."""
import numpy as np

from tinytorch.backends import ComputeBackend
from tinytorch.backends.base import conv_output_shape, im2col


class Honest(ComputeBackend):
    def matmul(self, a, b):
        return np.einsum("ik,kj->ij", a, b)

    def conv2d(self, x, w, stride=1, padding=0):
        f, _, kh, kw = w.shape
        shape = conv_output_shape(x.shape, w.shape, stride, padding)
        w2 = w.reshape(f, -1)
        cols = [np.einsum("fk,kp->fp", w2, im2col(img, kh, kw, stride, padding)) for img in x]
        return np.stack(cols).reshape(shape)
