"""Between the parent and a worker: JSON messages on a pipe, arrays in shared memory.

A message is a 4-byte length and a JSON object. Arrays never travel on the
pipe: both ends map one memfd (the staging area). The parent writes a
batch's inputs there while the worker is frozen, the worker writes each
call's outputs at the offsets the parent chose, and the parent reads them
while the worker is frozen again. Every length is checked before it is read,
so an untrusted worker can neither make the parent run code (no pickle) nor
make it allocate without bound.
"""
from __future__ import annotations

import json
import math
import mmap
import os
import select
import struct
import time

import numpy as np

MAX_MESSAGE_BYTES = 1 << 20
DTYPES = {np.dtype(t).str for t in (np.float32, np.float64, np.int64, np.int32, np.uint8, np.bool_)}
TICK = 0.02        # seconds between two calls of the waiter while a message is awaited
ALIGN = 64         # every array in the staging area starts on a cache line


class ProtocolError(RuntimeError):
    """The other end sent something that is not a valid message."""


class PeerClosed(ProtocolError):
    """The other end closed the pipe (it exited or crashed)."""


def encode(message: dict) -> bytes:
    body = json.dumps(message).encode()
    return struct.pack("<I", len(body)) + body


class Channel:
    """Reads and writes messages on two file descriptors.

    With `waiter` set (the parent's side), file descriptors are non-blocking
    and, while a message is awaited, `waiter(deadline)` runs every TICK
    seconds, so the caller can enforce time and memory limits meanwhile;
    `drains` maps other descriptors to callbacks run whenever they are readable
    (the worker's stderr, the BLAS guard's FIFO), so a chatty worker never
    blocks on a full pipe.
    """

    def __init__(self, read_fd: int, write_fd: int, waiter=None, drains=None):
        self.read_fd, self.write_fd, self.waiter = read_fd, write_fd, waiter
        self.drains = dict(drains or {})
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
            readers = ([] if for_write else [fd]) + list(self.drains)
            r, w, _ = select.select(readers, [fd] if for_write else [], [], TICK)
            for other in r:
                if other in self.drains:
                    self.drains[other]()
            if (fd in r and not for_write) or w:
                return

    def send(self, message: dict, deadline=None):
        data = memoryview(encode(message))
        while data:
            try:
                sent = os.write(self.write_fd, data)
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

    def receive(self, deadline=None) -> dict:
        (size,) = struct.unpack("<I", self._read_exact(4, deadline))
        if size > MAX_MESSAGE_BYTES:
            raise ProtocolError(f"message of {size} bytes exceeds the limit")
        try:
            message = json.loads(bytes(self._read_exact(size, deadline)))
        except (ValueError, TypeError) as exc:
            raise ProtocolError(f"malformed message: {exc}") from None
        if not isinstance(message, dict):
            raise ProtocolError("a message must be a JSON object")
        return message


# ------------------------------------------------------------------ the staging area

def layout(shapes_and_dtypes, start: int = 0) -> tuple[list, int]:
    """[(offset, dtype, shape)] placing arrays one after another from `start`, and the end."""
    slots, offset = [], start
    for shape, dtype in shapes_and_dtypes:
        dtype = np.dtype(dtype)
        offset = -(-offset // ALIGN) * ALIGN
        slots.append((offset, dtype.str, [int(n) for n in shape]))
        offset += math.prod(shape) * dtype.itemsize
    return slots, offset


class Staging:
    """The shared memory both ends map; grows as batches need it."""

    def __init__(self, fd: int | None = None):
        self.fd = os.memfd_create("tinytorch-staging", os.MFD_CLOEXEC) if fd is None else fd
        self.size = 0
        self.map: mmap.mmap | None = None

    def ensure(self, size: int, grow: bool) -> None:
        """Map at least `size` bytes; the parent (grow=True) extends the memfd first."""
        if size <= self.size:
            return
        size = max(size, 2 * self.size, mmap.PAGESIZE)
        if grow:
            os.ftruncate(self.fd, size)
        elif os.fstat(self.fd).st_size < size:
            raise ProtocolError(f"the staging area holds {os.fstat(self.fd).st_size} bytes, "
                                f"the request needs {size}")
        self._release()
        self.map = mmap.mmap(self.fd, size)
        self.size = size

    def _release(self) -> None:
        """Unmap now, or, while an array still views the map, when the last one goes."""
        if self.map is not None:
            try:
                self.map.close()
            except BufferError:
                pass
            self.map = None

    def array(self, slot) -> np.ndarray:
        """The array at (offset, dtype, shape), a view on the shared memory."""
        offset, dtype, shape = slot
        dtype = np.dtype(dtype)
        if dtype.str not in DTYPES or any(int(n) < 0 for n in shape):
            raise ProtocolError(f"array of dtype {dtype} and shape {shape} is not allowed")
        count = math.prod(int(n) for n in shape)
        if offset < 0 or offset + count * dtype.itemsize > self.size:
            raise ProtocolError(f"array at {offset} of {count * dtype.itemsize} bytes lies "
                                f"outside the staging area")
        return np.frombuffer(self.map, dtype, count, offset).reshape(shape)

    def touch(self, size: int) -> None:
        """Read one byte of every page up to `size`, so the pages count before a measurement."""
        view = np.frombuffer(self.map, np.uint8, min(size, self.size))
        int(view[::mmap.PAGESIZE].sum())

    def close(self) -> None:
        self._release()
        os.close(self.fd)
