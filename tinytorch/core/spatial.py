"""Course path for convolution and pooling layers."""
from ..nn import AdaptiveAvgPool2d, AvgPool2d, Conv2d, Flatten, MaxPool2d

__all__ = ["AdaptiveAvgPool2d", "AvgPool2d", "Conv2d", "Flatten", "MaxPool2d"]
