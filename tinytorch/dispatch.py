"""`tinytorch.matmul` and `tinytorch.conv2d`: the current backend, for arrays or Tensors.

numpy arrays in, a numpy array out (validated by the backend contract);
Tensors in, a Tensor out that takes part in autograd.
"""
from .config import get_backend
from .tensor import Tensor


def _is_tensor(value):
    return isinstance(value, Tensor)


def matmul(a, b):
    """(M, K) @ (K, N) -> (M, N) on the current backend."""
    if _is_tensor(a) or _is_tensor(b):
        return Tensor.ensure(a).matmul(b)
    return get_backend().matmul(a, b)


def conv2d(x, w, stride=1, padding=0):
    """Cross-correlation (N, C, H, W) * (F, C, KH, KW) -> (N, F, OH, OW) on the current backend."""
    if _is_tensor(x) or _is_tensor(w):
        from .nn import functional
        return functional.conv2d(x, w, None, stride, padding)
    return get_backend().conv2d(x, w, stride, padding)
