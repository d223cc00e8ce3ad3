"""The BLAS rule (`allow_blas = false`): where the guard lives and its Python-side first line.

The guard itself is C (blasguard.c): preloaded into every process of a
guarded worker, armed by the parent, it reports a BLAS or LAPACK call to the
parent and kills the caller. This module finds the compiled library and adds
the one route the shim cannot see: Python code that looks a BLAS routine up
directly on a library's handle through ctypes, which skips the dynamic
linker's interposition. An audit hook refuses such lookups through the
shim's own report-and-die function, so the parent hears of it on the same
channel. Code in the worker can get around an audit hook with enough memory
surgery; docs/security.md says what stands behind it (the static check of
compiled extensions, the impossible-rate bound, code review).
"""
from __future__ import annotations

import ctypes
import importlib.machinery
import os
import re
import sys
from pathlib import Path

#: a BLAS or LAPACK library's file name (libscipy_openblas64_, libmkl_rt, libblis, liblapack).
_BLAS_LIBRARY = re.compile(r"openblas|mkl|blis|blas|lapack", re.IGNORECASE)
#: a BLAS or LAPACK routine however it is exported: sgemm_, cblas_dgemm, scipy_cblas_sdot64_.
_BLAS_SYMBOL = re.compile(
    r"cblas_|^(?:scipy_)?[sdcz](?:gemm|gemv|dot|axpy|syrk|herk|symm|hemm|trmm|trsm|ger|gesv|getr|"
    r"gesdd|gesvd|geev|potr|posv|geqrf|gels|syev|heev|orgqr|ungqr)", re.IGNORECASE)


class BlasGuardError(RuntimeError):
    """The guard library is missing from the installed package."""


def library_path() -> Path:
    """The compiled guard inside the installed package."""
    here = Path(__file__).resolve().parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = here / f"_blasguard{suffix}"
        if candidate.is_file():
            return candidate
    raise BlasGuardError(
        f"tinytorch's BLAS guard is not built (no _blasguard extension in {here}); "
        f"rebuild tinytorch: `pip install -e .` or `python setup.py build_ext --inplace`")


def _loaded_guard() -> ctypes.CDLL | None:
    """The guard if this process was started with it preloaded, else None."""
    path = str(library_path())
    try:
        with open("/proc/self/maps") as maps:
            if not any(line.rstrip().endswith(path) for line in maps):
                return None
    except OSError:
        return None
    return ctypes.CDLL(path)          # the already loaded copy, not a second one


def install_ctypes_hook() -> bool:
    """In a guarded worker, before any backend code: refuse ctypes routes to BLAS.

    False (and nothing installed) when the guard is not preloaded here: the
    rules allow BLAS for this worker.
    """
    guard = _loaded_guard()
    if guard is None:
        return False
    refuse = guard.tinytorch_blasguard_refuse     # looked up now, before the hook exists
    refuse.argtypes, refuse.restype = [ctypes.c_char_p], None
    own = os.path.realpath(library_path())

    def blas_library(name) -> bool:
        if not isinstance(name, (str, bytes, os.PathLike)):
            return False                  # None: the process's global namespace
        path = os.fsdecode(name)
        return os.path.realpath(path) != own and bool(_BLAS_LIBRARY.search(os.path.basename(path)))

    def hook(event, args):
        if event == "ctypes.dlopen" and args and blas_library(args[0]):
            refuse(f"ctypes.CDLL({os.path.basename(os.fsdecode(args[0]))})"[:90].encode())
        elif event in ("ctypes.dlsym", "ctypes.dlsym/handle") and len(args) >= 2:
            symbol = args[1] if isinstance(args[1], str) else ""
            if _BLAS_SYMBOL.search(symbol) or blas_library(getattr(args[0], "_name", None)):
                refuse(f"ctypes lookup of {symbol or 'a BLAS routine'}"[:90].encode())

    sys.addaudithook(hook)
    return True
