"""Never returns from matmul."""
from .honest import Honest


class InfiniteLoop(Honest):
    def matmul(self, a, b):
        while True:
            pass
