"""Vendor BLAS through ctypes on numpy's own OpenBLAS handle, which the preloaded shim never sees.

A symbol looked up on the library's handle binds to the library itself, not
to the shim's interposed definition. When the lookup is refused the backend
quietly falls back to `Honest`, as a student hoping nobody notices would.
"""
import ctypes
import glob
import os

import numpy as np

from .honest import Honest

_ROW_MAJOR, _NO_TRANS = 101, 111
_I = ctypes.c_int64


def _openblas_gemm(dtype):
    libs = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    library = ctypes.CDLL(sorted(glob.glob(os.path.join(libs, "libscipy_openblas64_*")))[0])
    return getattr(library, {np.float32: "scipy_cblas_sgemm64_",
                             np.float64: "scipy_cblas_dgemm64_"}[dtype.type])


class CtypesBlas(Honest):
    def matmul(self, a, b):
        try:
            gemm = _openblas_gemm(a.dtype)
        except Exception:     # noqa: BLE001 - refused: hide it and compute honestly
            return super().matmul(a, b)
        a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
        (m, k), n = a.shape, b.shape[1]
        c = np.zeros((m, n), a.dtype)
        scalar = ctypes.c_float if a.dtype == np.float32 else ctypes.c_double
        gemm(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, _I(m), _I(n), _I(k), scalar(1.0),
             a.ctypes.data_as(ctypes.c_void_p), _I(max(k, 1)), b.ctypes.data_as(ctypes.c_void_p),
             _I(max(n, 1)), scalar(0.0), c.ctypes.data_as(ctypes.c_void_p), _I(max(n, 1)))
        return c
