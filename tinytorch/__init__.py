"""tinytorch: a small, readable deep-learning framework with pluggable compute backends.

Every matmul and convolution, forward and backward, runs on the current
backend: `tinytorch.set_backend('optimized')` (or a name any installed
plugin registers in the entry-point group `tinytorch.backends`).
"""
import importlib
from importlib.metadata import PackageNotFoundError, version

from .backends import BackendError, ComputeBackend, list_backends, register_backend
from .config import get_backend, set_backend, use_backend
from .dispatch import conv2d, matmul

try:
    __version__ = version("tinytorch")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"

# Heavier parts load on first use, so `import tinytorch` stays quick.
_LAZY = {
    "Tensor": "tinytorch.tensor",
    "no_grad": "tinytorch.tensor",
    "cat": "tinytorch.tensor",
    "stack": "tinytorch.tensor",
    "manual_seed": "tinytorch.rng",
    "nn": "tinytorch.nn",
    "optim": "tinytorch.optim",
    "data": "tinytorch.data",
    "models": "tinytorch.models",
    "build_mlp": "tinytorch.models",
    "build_resnet": "tinytorch.models",
    "build_transformer": "tinytorch.models",
    "load_cifar10": "tinytorch.data",
    "load_digits": "tinytorch.data",
    "benchmark": "tinytorch.benchmarking",
    "BenchmarkResult": "tinytorch.benchmarking",
    "compare_backends": "tinytorch.benchmarking",
    "check_backend": "tinytorch.testing",
}

__all__ = ["BackendError", "ComputeBackend", "__version__", "conv2d", "get_backend",
           "list_backends", "matmul", "register_backend", "set_backend", "use_backend",
           *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        return module if module.__name__ == f"tinytorch.{name}" else getattr(module, name)
    raise AttributeError(f"module 'tinytorch' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
