"""Writes the results and the board through libc's open(), past Python's audit hooks.

Without root the worker keeps our user, so only the refused ctypes lookup
stands between this backend and the files. It hides the refusal.
"""
import ctypes
import os

from .honest import Honest
from .results_writer import _targets


class CtypesWriter(Honest):
    def __init__(self):
        line = b'\n"hostile_writer": "rank 1"\n'
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc_open = libc.open
        except Exception:     # noqa: BLE001 - refused: carry on as if nothing happened
            return
        for path in _targets()[1]:
            fd = libc_open(os.fsencode(path), os.O_WRONLY | os.O_APPEND)
            if fd >= 0:
                os.write(fd, line)
                os.close(fd)
