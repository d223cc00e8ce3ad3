"""The pipe protocol between the parent and a worker: a JSON header, then raw array bytes.

One message is a 4-byte header length, a JSON header whose `arrays` lists
each array's dtype and shape, then the arrays' bytes back to back. Only
plain numeric dtypes are accepted and every length is checked before it is
read, so an untrusted worker can neither make the parent run code (no
pickle) nor make it allocate without bound.
"""
from __future__ import annotations

import json
import math
import os
import select
import struct
import time

import numpy as np

MAX_HEADER_BYTES = 1 << 22
DTYPES = {np.dtype(t).str for t in (np.float32, np.float64, np.int64, np.int32, np.uint8, np.bool_)}
TICK = 0.02        # seconds between two calls of the waiter while a message is awaited


class ProtocolError(RuntimeError):
    """The other end sent something that is not a valid message."""


class PeerClosed(ProtocolError):
    """The other end closed the pipe (it exited or crashed)."""


def encode(header: dict, arrays=()) -> bytes:
    """One message as bytes."""
    arrays = [np.ascontiguousarray(a) for a in arrays]
    for array in arrays:
        if array.dtype.str not in DTYPES:
            raise TypeError(f"cannot send an array of dtype {array.dtype}")
    head = json.dumps({**header, "arrays": [[a.dtype.str, list(a.shape)] for a in arrays]}).encode()
    return b"".join([struct.pack("<I", len(head)), head, *(a.tobytes() for a in arrays)])


class Channel:
    """Reads and writes messages on two file descriptors.

    With `waiter` set (the parent's side), file descriptors are non-blocking
    and, while a message is awaited, `waiter(deadline)` runs every TICK
    seconds, so the caller can enforce time and memory limits meanwhile.
    """

    def __init__(self, read_fd: int, write_fd: int, waiter=None):
        self.read_fd, self.write_fd, self.waiter = read_fd, write_fd, waiter
        self._watched = 0.0
        if waiter is not None:
            os.set_blocking(read_fd, False)
            os.set_blocking(write_fd, False)

    def _wait(self, fd, for_write, deadline):
        while True:
            now = time.monotonic()
            if now - self._watched >= TICK:
                self._watched = now
                self.waiter(deadline)
            r, w, _ = select.select([] if for_write else [fd], [fd] if for_write else [], [], TICK)
            if r or w:
                return

    def send(self, header: dict, arrays=(), deadline=None):
        data = memoryview(encode(header, arrays))
        while data:
            try:
                sent = os.write(self.write_fd, data[:1 << 22])
            except BlockingIOError:
                self._wait(self.write_fd, True, deadline)
                continue
            except BrokenPipeError:
                raise PeerClosed("the other end closed the pipe") from None
            data = data[sent:]

    def _read_exact(self, n, deadline):
        buffer, got = bytearray(n), 0
        view = memoryview(buffer)
        while got < n:
            try:
                count = os.readv(self.read_fd, [view[got:]])
            except BlockingIOError:
                self._wait(self.read_fd, False, deadline)
                continue
            if not count:
                raise PeerClosed("the other end closed the pipe")
            got += count
        return buffer

    def receive(self, deadline=None, max_bytes=1 << 40):
        """(header, arrays); arrays larger than `max_bytes` in total are a ProtocolError."""
        (size,) = struct.unpack("<I", self._read_exact(4, deadline))
        if size > MAX_HEADER_BYTES:
            raise ProtocolError(f"message header of {size} bytes exceeds the limit")
        try:
            header = json.loads(bytes(self._read_exact(size, deadline)))
            layout = [(np.dtype(dtype), tuple(int(n) for n in shape))
                      for dtype, shape in header.get("arrays", [])]
        except (ValueError, TypeError, AttributeError) as exc:
            raise ProtocolError(f"malformed message header: {exc}") from None
        lengths = []
        for dtype, shape in layout:
            if dtype.str not in DTYPES or any(n < 0 for n in shape):
                raise ProtocolError(f"array of dtype {dtype} and shape {shape} is not allowed")
            lengths.append(math.prod(shape) * dtype.itemsize)
        if sum(lengths) > max_bytes:
            raise ProtocolError(f"message of {sum(lengths)} bytes exceeds the {max_bytes} bytes "
                                f"its request allows")
        body = self._read_exact(sum(lengths), deadline)
        arrays, offset = [], 0
        for (dtype, shape), length in zip(layout, lengths):
            arrays.append(np.frombuffer(body, dtype, math.prod(shape), offset).reshape(shape))
            offset += length
        return header, arrays
