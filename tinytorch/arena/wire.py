"""The pipe protocol between the parent and a worker: JSON headers and .npy arrays.

One message is a 4-byte header length, a JSON header, then for each of the
header's `arrays` an 8-byte length and the array in .npy format. Arrays are
read with `allow_pickle=False` and every length is capped, so an untrusted
worker cannot make the parent run code or allocate without bound.
"""
from __future__ import annotations

import io
import json
import os
import select
import struct
import time

import numpy as np

MAX_HEADER_BYTES = 1 << 20


class ProtocolError(RuntimeError):
    """The other end sent something that is not a valid message."""


class PeerClosed(ProtocolError):
    """The other end closed the pipe (it exited or crashed)."""


def encode(header: dict, arrays=()) -> bytes:
    """One message as bytes."""
    arrays = list(arrays)
    head = json.dumps({**header, "arrays": len(arrays)}).encode()
    parts = [struct.pack("<I", len(head)), head]
    for array in arrays:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
        data = buffer.getvalue()
        parts += [struct.pack("<Q", len(data)), data]
    return b"".join(parts)


class Channel:
    """Reads and writes messages on two file descriptors.

    With `waiter` set (the parent's side), file descriptors are non-blocking
    and every wait goes through `waiter(deadline)`, which returns after at most
    a short tick, so the caller can enforce time and memory limits meanwhile.
    """

    def __init__(self, read_fd: int, write_fd: int, waiter=None):
        self.read_fd, self.write_fd, self.waiter = read_fd, write_fd, waiter
        if waiter is not None:
            os.set_blocking(read_fd, False)
            os.set_blocking(write_fd, False)

    def _wait(self, fd, for_write, deadline):
        if self.waiter is None:
            return
        while True:
            self.waiter(deadline)
            tick = 0.02 if deadline is None else max(0.0, min(0.02, deadline - time.monotonic()))
            r, w, _ = select.select([] if for_write else [fd], [fd] if for_write else [], [], tick)
            if r or w:
                return

    def send(self, header: dict, arrays=(), deadline=None):
        data = memoryview(encode(header, arrays))
        while data:
            self._wait(self.write_fd, True, deadline)
            try:
                sent = os.write(self.write_fd, data[:1 << 20])
            except BlockingIOError:
                continue
            except BrokenPipeError:
                raise PeerClosed("the other end closed the pipe") from None
            data = data[sent:]

    def _read_exact(self, n, deadline):
        chunks, missing = [], n
        while missing:
            self._wait(self.read_fd, False, deadline)
            try:
                chunk = os.read(self.read_fd, min(missing, 1 << 20))
            except BlockingIOError:
                continue
            if not chunk:
                raise PeerClosed("the other end closed the pipe")
            chunks.append(chunk)
            missing -= len(chunk)
        return b"".join(chunks)

    def receive(self, deadline=None, max_bytes=1 << 40):
        """(header, arrays); arrays larger than `max_bytes` in total are a ProtocolError."""
        (size,) = struct.unpack("<I", self._read_exact(4, deadline))
        if size > MAX_HEADER_BYTES:
            raise ProtocolError(f"message header of {size} bytes exceeds the limit")
        try:
            header = json.loads(self._read_exact(size, deadline))
            count = int(header.get("arrays", 0))
        except (ValueError, TypeError, AttributeError) as exc:
            raise ProtocolError(f"malformed message header: {exc}") from None
        arrays, total = [], 0
        for _ in range(count):
            (length,) = struct.unpack("<Q", self._read_exact(8, deadline))
            total += length
            if total > max_bytes:
                raise ProtocolError(f"message of more than {max_bytes} bytes exceeds the "
                                    f"size its request allows")
            try:
                arrays.append(np.load(io.BytesIO(self._read_exact(length, deadline)),
                                      allow_pickle=False))
            except (ValueError, OSError) as exc:
                raise ProtocolError(f"malformed array: {exc}") from None
        return header, arrays
