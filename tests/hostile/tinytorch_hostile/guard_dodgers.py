"""BLAS by routes around the guard: blinding it from Python, complex GEMM, LAPACK."""
import os
import sys

import numpy as np

from .honest import Honest


class Blinder(Honest):
    """Points every setting it can find elsewhere, then uses `a @ b`."""

    def __init__(self):
        os.environ["TINYTORCH_GUARD_DIR"] = "/tmp/nowhere"
        os.environ["TINYTORCH_BLASGUARD_FD"] = "99"
        os.environ.pop("LD_PRELOAD", None)
        guard = sys.modules.get("tinytorch.arena.blasguard")
        if guard is not None:
            for name in list(vars(guard)):
                if not name.startswith("__"):
                    setattr(guard, name, None)

    def matmul(self, a, b):
        return a @ b


class ComplexGemm(Honest):
    """A real product through complex GEMM (cgemm / zgemm), which a real-only guard misses."""

    def matmul(self, a, b):
        kind = np.complex64 if a.dtype == np.float32 else np.complex128
        return np.dot(a.astype(kind), b.astype(kind)).real.astype(a.dtype)


class Lapack(Honest):
    """Goes through LAPACK (gesv): solving with the identity is a very expensive copy."""

    def matmul(self, a, b):
        b = np.linalg.solve(np.eye(b.shape[0], dtype=b.dtype), b)
        return super().matmul(a, b)
