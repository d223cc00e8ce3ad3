"""The practical ceiling: numpy's BLAS for matmul, im2col + BLAS for convolution.

Every score is also reported as a fraction of this backend, measured in the
same run, so a student sees how close to vendor BLAS their kernels get.
"""
import numpy as np

from .base import ComputeBackend, col2im


def _windows(x, kh, kw, stride, padding):
    """(N, C, H, W) -> view (N, C, OH, OW, KH, KW) of every receptive field."""
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    view = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    return view[:, :, ::stride, ::stride]


class NumpyBackend(ComputeBackend):
    """Vendor BLAS through numpy: the reference for what the machine can do."""

    def matmul(self, a, b):
        return a @ b

    def batched_matmul(self, a, b):
        return np.matmul(a, b)

    def conv2d(self, x, w, stride=1, padding=0):
        f, c, kh, kw = w.shape
        win = _windows(x, kh, kw, stride, padding)               # (N, C, OH, OW, KH, KW)
        n, _, oh, ow = win.shape[:4]
        cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)
        out = cols @ w.reshape(f, -1).T                          # (N*OH*OW, F)
        return np.ascontiguousarray(out.reshape(n, oh, ow, f).transpose(0, 3, 1, 2))

    def conv2d_grad_input(self, grad_out, w, x_shape, stride=1, padding=0):
        n, c, h, wd = x_shape
        f, _, kh, kw = w.shape
        cols = np.matmul(w.reshape(f, -1).T, grad_out.reshape(n, f, -1))  # (N, CKK, OH*OW)
        grad_x = np.empty(x_shape, dtype=grad_out.dtype)
        for i in range(n):
            grad_x[i] = col2im(cols[i], (c, h, wd), kh, kw, stride, padding)
        return grad_x

    def conv2d_grad_weight(self, x, grad_out, w_shape, stride=1, padding=0):
        f, c, kh, kw = w_shape
        win = _windows(x, kh, kw, stride, padding)               # (N, C, OH, OW, KH, KW)
        grad_w = np.tensordot(grad_out, win, axes=([0, 2, 3], [0, 2, 3]))  # (F, C, KH, KW)
        return np.ascontiguousarray(grad_w)
