"""Activation layers: ReLU, GELU, Sigmoid, Tanh, Softmax."""
from ..tensor import Tensor
from . import functional as F
from .module import Module


class ReLU(Module):
    def forward(self, x):
        return Tensor.ensure(x).relu()


class GELU(Module):
    """GELU, tanh approximation (matches PyTorch's GELU(approximate='tanh'))."""

    def forward(self, x):
        return F.gelu(x)


class Sigmoid(Module):
    def forward(self, x):
        return Tensor.ensure(x).sigmoid()


class Tanh(Module):
    def forward(self, x):
        return Tensor.ensure(x).tanh()


class Softmax(Module):
    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, x):
        return F.softmax(x, self.axis)

    def extra_repr(self):
        return f"axis={self.axis}"
