"""One random generator for weight initialisation, dropout and shuffling.

`tinytorch.manual_seed(n)` replaces it, so a seeded script draws the same
weights, dropout masks and batch order on every run.
"""
import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Make every later random draw of tinytorch repeatable."""
    global _generator
    _generator = np.random.default_rng(seed)


def generator() -> np.random.Generator:
    """The generator in use (read it at each draw: manual_seed replaces it)."""
    return _generator
