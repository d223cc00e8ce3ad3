"""PyTorch's default initialisation, drawn from tinytorch's one generator.

Linear and Conv2d weights: kaiming-uniform with a = sqrt(5), which works out
to U(-1/sqrt(fan_in), 1/sqrt(fan_in)); biases use the same bound.
"""
import numpy as np

from ..rng import generator


def uniform_fan_in(shape, fan_in, dtype=np.float32):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) of `shape`: PyTorch's default for weights and biases."""
    bound = 1.0 / np.sqrt(fan_in) if fan_in > 0 else 0.0
    return generator().uniform(-bound, bound, size=shape).astype(dtype)
