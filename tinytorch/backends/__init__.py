"""Backends: the contract every backend implements, the registry, the core backends.

`ComputeBackend` is the contract (see base.py for the table of operations);
`NaiveBackend`, `NumpyBackend` and `OptimizedBackend` are the core backends,
imported on first use so that `import tinytorch` never needs the compiled
kernels.
"""
from .base import OPERATIONS, BackendError, ComputeBackend
from .naive import NaiveBackend
from .registry import BackendRecord, list_backends, load_backend, register_backend

_LAZY = {
    "NumpyBackend": "numpy_backend",
    "OptimizedBackend": "optimized",
}

__all__ = ["OPERATIONS", "BackendError", "BackendRecord", "ComputeBackend", "NaiveBackend",
           "NumpyBackend", "OptimizedBackend", "list_backends", "load_backend",
           "register_backend"]


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
