"""Course path for activations."""
from ..nn import GELU, ReLU, Sigmoid, Softmax, Tanh

__all__ = ["GELU", "ReLU", "Sigmoid", "Softmax", "Tanh"]
