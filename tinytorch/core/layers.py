"""Course path for dense layers and the backend-dispatched `matmul(a, b)`.

`matmul` is `tinytorch.matmul`: for Tensors it runs
`get_backend().matmul(a.data, b.data)` and records the gradient.
"""
from ..dispatch import matmul
from ..nn import Dense, Linear, Module, Parameter, Sequential

__all__ = ["Dense", "Linear", "Module", "Parameter", "Sequential", "matmul"]
