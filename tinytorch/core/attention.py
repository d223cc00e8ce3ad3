"""Course path for attention."""
from ..nn import MultiHeadAttention

__all__ = ["MultiHeadAttention"]
