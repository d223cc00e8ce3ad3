"""Alice's tinytorch backend (entry point `alice` in group `tinytorch.backends`)."""
from .backend import AliceBackend

__all__ = ["AliceBackend"]
