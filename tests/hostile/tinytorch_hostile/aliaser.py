"""Outputs that share memory with inputs or with earlier outputs."""
import numpy as np

from .honest import Honest


class ReturnsInput(Honest):
    """Writes the product over its (square) input and hands the input back."""

    def matmul(self, a, b):
        out = super().matmul(a, b)
        if a.shape == out.shape:
            a[...] = out
            return a
        return out


class ReturnsView(Honest):
    """Hands back a view into a scratch copy of b that still shares b's memory."""

    def matmul(self, a, b):
        out = super().matmul(a, b)
        view = b.reshape(-1)[:out.size].reshape(out.shape) if b.size >= out.size else out
        view[...] = out
        return view


class ReusesBuffer(Honest):
    """One output buffer for every call: each answer overwrites the previous one."""

    def __init__(self):
        self.buffers = {}

    def matmul(self, a, b):
        key = (a.shape[0], b.shape[1], a.dtype)
        buffer = self.buffers.setdefault(key, np.empty(key[:2], dtype=a.dtype))
        buffer[...] = super().matmul(a, b)
        return buffer
