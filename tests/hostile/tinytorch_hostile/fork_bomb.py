"""Forks sleeping children on its first matmul (a fork bomb kept within the limits)."""
import os
import time

from .honest import Honest


class ForkBomb(Honest):
    children = 0

    def matmul(self, a, b):
        while ForkBomb.children < 24:
            try:
                if os.fork() == 0:
                    time.sleep(600)
                    os._exit(0)
            except OSError:
                break
            ForkBomb.children += 1
        return super().matmul(a, b)
