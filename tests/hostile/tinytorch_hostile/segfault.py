"""Dereferences a null pointer in matmul."""
import ctypes

from .honest import Honest


class Segfault(Honest):
    def matmul(self, a, b):
        return ctypes.string_at(0)
