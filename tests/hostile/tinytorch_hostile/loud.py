"""Writes 300 MB to stderr (and a little on every call): the parent must not keep it all."""
import sys

from .honest import Honest


class StderrFlood(Honest):
    def __init__(self):
        line = "x" * 1023 + "\n"
        for _ in range(300 << 10):
            sys.stderr.write(line)
        sys.stderr.flush()

    def matmul(self, a, b):
        sys.stderr.write("still here\n" * 100)
        return super().matmul(a, b)
