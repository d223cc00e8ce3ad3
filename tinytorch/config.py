"""The current backend: `set_backend`, `get_backend`, `use_backend`.

The course's own names. The start-up backend is `naive` (the learning path)
unless the `TINYTORCH_BACKEND` environment variable names another; it is
loaded on first use, so `import tinytorch` never imports a plugin.
"""
from __future__ import annotations

import contextlib
import os

from .backends.base import ComputeBackend
from .backends.registry import load_backend

DEFAULT_BACKEND = "naive"
ENV_VAR = "TINYTORCH_BACKEND"

_backend: ComputeBackend | None = None


def _resolve(backend) -> ComputeBackend:
    if isinstance(backend, ComputeBackend):
        return backend
    if isinstance(backend, str):
        return load_backend(backend)
    raise TypeError(f"set_backend() takes a registered backend name or a ComputeBackend "
                    f"instance, got {type(backend).__name__}")


def set_backend(backend) -> ComputeBackend:
    """Switch every matmul and convolution to `backend` (a name or an instance)."""
    global _backend
    _backend = _resolve(backend)
    return _backend


def get_backend() -> ComputeBackend:
    """The backend in use, loading the start-up one on first call."""
    global _backend
    if _backend is None:
        name = os.environ.get(ENV_VAR) or DEFAULT_BACKEND
        try:
            _backend = load_backend(name)
        except (ValueError, RuntimeError) as exc:
            if name == DEFAULT_BACKEND:
                raise
            raise type(exc)(f"{ENV_VAR}={name!r}: {exc}") from None
    return _backend


def current_backend_name() -> str:
    """Name of the backend in use, without loading it."""
    if _backend is not None:
        return _backend.name or type(_backend).__name__
    return os.environ.get(ENV_VAR) or DEFAULT_BACKEND


@contextlib.contextmanager
def use_backend(backend):
    """Use `backend` inside the block; the previous one is back afterwards, even on errors."""
    global _backend
    previous = _backend
    current = set_backend(backend)
    try:
        yield current
    finally:
        _backend = previous
