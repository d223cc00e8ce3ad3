"""Vendor BLAS through numpy's C code: no Python-level numpy.matmul call to patch."""
from .honest import Honest


class MatmulOperator(Honest):
    def matmul(self, a, b):
        return a @ b


class NdarrayDot(Honest):
    def matmul(self, a, b):
        return a.dot(b)
