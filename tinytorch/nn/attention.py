"""Multi-head scaled dot-product attention on the backend's batched matmul."""
import numpy as np

from ..tensor import Tensor
from . import functional as F
from .layers import Linear, check_sizes
from .module import Module

#: Added to masked scores: exp() of it is exactly 0 in float32 and float64.
MASKED = -1e9


class MultiHeadAttention(Module):
    """softmax(Q K^T / sqrt(d) + mask) V over `num_heads` heads, then an output projection.

    Inputs are (N, T, embed_dim). `causal=True` stops every position from
    attending to later ones; `mask` (broadcastable to (N, heads, T, S),
    True = blocked) adds to that.
    """

    def __init__(self, embed_dim, num_heads, causal=False, bias=True):
        check_sizes("MultiHeadAttention", embed_dim=embed_dim, num_heads=num_heads)
        if embed_dim % num_heads:
            raise ValueError(f"MultiHeadAttention: embed_dim {embed_dim} is not divisible by "
                             f"num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.causal = embed_dim, num_heads, causal
        self.head_dim = embed_dim // num_heads
        self.q_proj = Linear(embed_dim, embed_dim, bias)
        self.k_proj = Linear(embed_dim, embed_dim, bias)
        self.v_proj = Linear(embed_dim, embed_dim, bias)
        self.out_proj = Linear(embed_dim, embed_dim, bias)

    def _heads(self, x):
        n, t, _ = x.shape
        return x.reshape(n, t, self.num_heads, self.head_dim).transpose(1, 2)  # (N, H, T, D)

    def forward(self, query, key=None, value=None, mask=None):
        query = Tensor.ensure(query)
        key = query if key is None else Tensor.ensure(key)
        value = key if value is None else Tensor.ensure(value)
        for name, x in (("query", query), ("key", key), ("value", value)):
            if x.ndim != 3 or x.shape[-1] != self.embed_dim:
                raise ValueError(f"{self}: {name} must have shape (N, T, {self.embed_dim}), "
                                 f"got {x.shape}")
        if key.shape != value.shape or key.shape[0] != query.shape[0]:
            raise ValueError(f"{self}: key {key.shape} and value {value.shape} must match, "
                             f"with the batch size of query {query.shape}")
        n, t, _ = query.shape
        s = key.shape[1]
        q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(key)), \
            self._heads(self.v_proj(value))
        scores = (q @ k.transpose(-2, -1)) * (1.0 / np.sqrt(self.head_dim))  # (N, H, T, S)
        blocked = np.zeros((t, s), dtype=bool)
        if self.causal:
            blocked = np.triu(np.ones((t, s), dtype=bool), k=1)
        if mask is not None:
            blocked = blocked | np.asarray(mask.data if isinstance(mask, Tensor) else mask,
                                           dtype=bool)
        if blocked.any():
            scores = scores + Tensor(np.where(blocked, MASKED, 0.0).astype(scores.dtype))
        weights = F.softmax(scores, axis=-1)
        out = (weights @ v).transpose(1, 2).reshape(n, t, self.embed_dim)
        return self.out_proj(out)

    def extra_repr(self):
        return f"{self.embed_dim}, num_heads={self.num_heads}, causal={self.causal}"
