"""Noticing vendor BLAS inside a competition worker (rule `allow_blas = false`).

`a @ b` or `ndarray.dot` reach OpenBLAS from numpy's C code without a Python
call, so the check lives below Python: the C shim `blasguard.c`, preloaded
into the worker with LD_PRELOAD, counts every gemm/gemv/syrk/dot call and
forwards it unchanged. The parent builds the worker's environment with
`worker_env`; the worker calls `arm()` after its own imports and reads
`calls()` around each event; the shim also writes one line per symbol to
the worker's stderr, which the parent reads with `reported_symbols`, so a
worker that lies about its count is still caught.
"""
from __future__ import annotations

import ctypes
import importlib.machinery
import os
from pathlib import Path

#: Lines the shim writes start with this.
REPORT_PREFIX = "tinytorch-blasguard: "
_ARMED_VARIABLE = "TINYTORCH_BLASGUARD_ARMED"


class BlasGuardError(RuntimeError):
    """The shim is missing or was not preloaded where the rules need it."""


def library_path() -> Path:
    """The compiled shim inside the installed package."""
    here = Path(__file__).resolve().parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = here / f"_blasguard{suffix}"
        if candidate.is_file():
            return candidate
    raise BlasGuardError(
        f"tinytorch's BLAS guard is not built (no _blasguard extension in {here}); "
        f"rebuild tinytorch: `pip install -e .` or `python setup.py build_ext --inplace`")


def worker_env(env: dict, allow_blas: bool) -> dict:
    """`env` for a worker: with the shim preloaded unless the rules allow BLAS."""
    env = dict(env)
    env.pop(_ARMED_VARIABLE, None)
    if not allow_blas:
        preload = [str(library_path())] + [p for p in env.get("LD_PRELOAD", "").split() if p]
        env["LD_PRELOAD"] = " ".join(preload)
    return env


def _preloaded() -> ctypes.CDLL | None:
    """The shim if this process was started with it preloaded, else None."""
    path = str(library_path())
    with open("/proc/self/maps") as maps:
        if not any(line.rstrip().endswith(path) for line in maps):
            return None
    shim = ctypes.CDLL(path)          # the already loaded copy, not a second one
    shim.tinytorch_blasguard_calls.restype = ctypes.c_ulonglong
    shim.tinytorch_blasguard_last.restype = ctypes.c_char_p
    return shim


_shim: ctypes.CDLL | None = None


def arm() -> bool:
    """In the worker, after its own imports: start counting. False if not preloaded."""
    global _shim
    _shim = _preloaded()
    if _shim is None:
        return False
    _shim.tinytorch_blasguard_arm()
    os.environ[_ARMED_VARIABLE] = "1"     # processes the submission starts count from birth
    return True


def calls() -> int:
    """BLAS calls made since `arm()` (0 when the guard is not active)."""
    return int(_shim.tinytorch_blasguard_calls()) if _shim is not None else 0


def last_symbol() -> str:
    """The BLAS symbol called most recently since `arm()`, or ''."""
    return _shim.tinytorch_blasguard_last().decode() if _shim is not None else ""


def reported_symbols(stderr_text: str) -> list[str]:
    """BLAS symbols the shim reported in a worker's stderr, in order of first use."""
    return [line[len(REPORT_PREFIX):].strip() for line in stderr_text.splitlines()
            if line.startswith(REPORT_PREFIX)]
