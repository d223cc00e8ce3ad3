"""Course path for the Tensor: `from tinytorch.core.tensor import Tensor`."""
from ..tensor import Tensor, no_grad

__all__ = ["Tensor", "no_grad"]
