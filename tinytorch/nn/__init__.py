"""Layers, activations, losses and attention, all built on `tinytorch.Tensor`."""
from . import functional, init
from .activations import GELU, ReLU, Sigmoid, Softmax, Tanh
from .attention import MultiHeadAttention
from .layers import (AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, Conv2d, Dense, Dropout,
                     Embedding, Flatten, LayerNorm, Linear, MaxPool2d, Sequential)
from .losses import CrossEntropyLoss, MSELoss
from .module import Module, Parameter

__all__ = ["AdaptiveAvgPool2d", "AvgPool2d", "BatchNorm2d", "Conv2d", "CrossEntropyLoss", "Dense",
           "Dropout", "Embedding", "Flatten", "GELU", "LayerNorm", "Linear", "MSELoss",
           "MaxPool2d", "Module", "MultiHeadAttention", "Parameter", "ReLU", "Sequential",
           "Sigmoid", "Softmax", "Tanh", "functional", "init"]
