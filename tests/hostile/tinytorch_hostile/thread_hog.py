"""Starts busy threads beyond its allowance; hashing releases the GIL, so they all run."""
import hashlib
import threading

from .honest import Honest

_DATA = bytes(4 << 20)


def _spin():
    while True:
        hashlib.sha256(_DATA).digest()


class ThreadHog(Honest):
    """A "background prefetch pool" of four threads that never rest."""

    def __init__(self):
        for _ in range(4):
            threading.Thread(target=_spin, daemon=True).start()
