"""Losses: CrossEntropyLoss (from logits, integer targets) and MSELoss. Both average."""
import numpy as np

from ..tensor import Tensor
from . import functional as F
from .module import Module


class CrossEntropyLoss(Module):
    """mean(-log softmax(logits)[target]) for logits (N, C) and int targets (N,) in [0, C)."""

    def forward(self, logits, targets):
        logits = Tensor.ensure(logits)
        targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
        if logits.ndim != 2:
            raise ValueError(f"CrossEntropyLoss expects logits of shape (N, C), got "
                             f"{logits.shape}; reshape sequences to (N*T, C) first")
        if targets.dtype.kind not in "iu":
            raise TypeError(f"CrossEntropyLoss expects integer class targets, got dtype "
                            f"{targets.dtype}")
        if targets.shape != logits.shape[:1]:
            raise ValueError(f"CrossEntropyLoss: logits {logits.shape} need targets of shape "
                             f"({logits.shape[0]},), got {targets.shape}")
        classes = logits.shape[1]
        if targets.size and (targets.min() < 0 or targets.max() >= classes):
            raise ValueError(f"CrossEntropyLoss: targets must be class indices in "
                             f"[0, {classes}), got values from {targets.min()} to "
                             f"{targets.max()}")
        return F.cross_entropy(logits, targets)


class MSELoss(Module):
    """mean((prediction - target) ** 2); the shapes must be equal."""

    def forward(self, prediction, target):
        prediction, target = Tensor.ensure(prediction), Tensor.ensure(target)
        if prediction.shape != target.shape:
            raise ValueError(f"MSELoss: prediction {prediction.shape} and target "
                             f"{target.shape} must have the same shape")
        diff = prediction - target
        return (diff * diff).mean()
