"""Course path for optimizers: `SGD(params, lr=...)`, `Adam(params, lr=...)`."""
from ..optim import SGD, Adam

__all__ = ["SGD", "Adam"]
