"""Bob's tinytorch backend (entry point `bob` in group `tinytorch.backends`)."""
from .backend import BobBackend

__all__ = ["BobBackend"]
