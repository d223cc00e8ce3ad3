"""Patches the harness's reference and the random generator, hoping for easy inputs."""
import numpy as np

from .honest import Honest


def _zeros_rng(seed=None):
    return np.random.Generator(np.random.PCG64(0))


class ReferencePatcher(Honest):
    def __init__(self):
        try:
            from tinytorch.arena import problems
            problems.relative_error = lambda outputs, references: 0.0
        except ImportError:
            pass
        np.random.default_rng = _zeros_rng
