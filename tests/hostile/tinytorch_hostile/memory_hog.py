"""Keeps every page it allocates, until something stops it."""
import numpy as np

from .honest import Honest


class MemoryHog(Honest):
    def matmul(self, a, b):
        hoard = []
        while True:
            hoard.append(np.ones(32 << 20, dtype=np.uint8))
