"""The untrusted end: one process, one backend, requests from the parent over one pipe.

Started by runner.spawn_worker as `python -m tinytorch.arena.worker`. The
protocol uses the original stdin/stdout; anything the backend prints goes to
stderr instead, so it cannot corrupt a message. Requests (see wire.py):

    load  {spec, threads}        import the backend ("name" or "module:Class")
    stage {kind, params, count}  keep `count` input sets for the next run
    run   {}                     call the backend on every staged set (timed by the parent)
    fetch {}                     send the outputs of the last run
    exit  {}                     leave

Every reply is {"ok": true, ...} or {"error": "...", "memory": bool}, plus
"violation": NAME when the backend broke a rule (rules.py): called BLAS
(counted by the preloaded blasguard shim) or looked it up through ctypes,
returned aliased outputs, replaced the clock or harness code, wrote outside
its temporary folder or looked up libc's file functions through ctypes. Rules
are checked after loading and before every untimed request (stage, fetch), never
inside the timed `run`. The worker leaves by os._exit, so no atexit hook or
finaliser of a backend runs.
"""
from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback

from . import blasguard, rules
from ..backends.staleness import stale_rebuild_command
from .problems import PROBLEMS
from .wire import Channel, PeerClosed


def _protocol_channel() -> Channel:
    """Keep stdin/stdout for the protocol; point the backend's fd 0 at /dev/null, fd 1 at stderr."""
    read_fd, write_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return Channel(read_fd, write_fd)


def load(spec: str, threads: int, before_backend=lambda: None):
    """A backend instance from a registered name or a "module:Class" spec.

    `before_backend` runs after the harness's own last use of ctypes
    (threadpoolctl) and before any of the backend's code.
    """
    from threadpoolctl import threadpool_limits

    from ..backends.base import ComputeBackend
    from ..backends.registry import load_backend
    threadpool_limits(threads)
    before_backend()
    if ":" not in spec:
        return load_backend(spec)
    module_name, _, attr = spec.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    backend = factory()
    if not isinstance(backend, ComputeBackend):
        raise TypeError(f"{spec} made a {type(backend).__name__}, not a ComputeBackend")
    backend.name = backend.name or spec
    return backend


class Session:
    """What the worker holds between requests."""

    def __init__(self):
        self.backend = None
        self.staged = None          # (problem, params, [input sets])
        self.outputs = None
        self.violations = []        # writes the audit hook refused
        rules.guard_writes([os.environ.get("TMPDIR"), os.environ.get("HOME"), "/dev"],
                           self.violations.append)
        self.integrity = rules.Integrity()    # before any backend code runs
        self.blas_forbidden = blasguard.arm()

    def guard_ctypes(self):
        """Refuse ctypes routes to BLAS (when forbidden) and to libc's file functions."""
        rules.guard_ctypes(self.blas_forbidden, self.violations.append,
                           [blasguard.library_path()] if self.blas_forbidden else ())

    def police(self):
        """Raise the first rule the backend has broken so far."""
        if self.violations:
            raise self.violations[0]
        if blasguard.calls():
            raise rules.Violation("blas", f"{blasguard.calls()} call(s) of vendor BLAS, last "
                                          f"{blasguard.last_symbol()}; the rules forbid BLAS "
                                          f"(e.g. a @ b, ndarray.dot, numpy.matmul)")
        self.integrity.check()

    def handle(self, header, arrays):
        op = header.get("op")
        if op != "run":
            self.police()
        if op == "load":
            self.backend = load(header["spec"], int(header["threads"]), self.guard_ctypes)
            self.police()
            return {"ok": True, "class": f"{type(self.backend).__module__}."
                                         f"{type(self.backend).__qualname__}",
                    "stale": stale_rebuild_command(inspect.getmodule(type(self.backend)))}, []
        if op == "stage":
            problem = PROBLEMS[header["kind"]]
            per_set = problem.input_count
            sets = [arrays[i:i + per_set] for i in range(0, len(arrays), per_set)]
            self.staged, self.outputs = (problem, header["params"], sets), None
            return {"ok": True}, []
        if op == "run":
            problem, params, sets = self.staged
            self.outputs = [problem.call(self.backend, params, inputs) for inputs in sets]
            return {"ok": True, "count": len(sets)}, []
        if op == "fetch":
            outputs = [out for outs in self.outputs for out in outs]
            rules.check_fresh(outputs, [a for inputs in self.staged[2] for a in inputs])
            return {"ok": True}, outputs
        raise ValueError(f"unknown request {op!r}")


def main():
    channel = _protocol_channel()
    session = Session()
    while True:
        try:
            header, arrays = channel.receive()
        except PeerClosed:
            os._exit(0)
        if header.get("op") == "exit":
            os._exit(0)
        try:
            reply, out = session.handle(header, arrays)
        except BaseException as exc:  # noqa: BLE001 - report anything, even SystemExit
            violation = (exc if isinstance(exc, rules.Violation) else
                         rules.aliasing_error(exc) or next(iter(session.violations), None))
            frames = traceback.extract_tb(exc.__traceback__)
            where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
            print(traceback.format_exc(), file=sys.stderr)
            if violation is not None:
                reply, out = {"error": violation.detail, "violation": violation.name}, []
            else:
                reply, out = {"error": f"{type(exc).__name__}: {exc}{where}",
                              "memory": isinstance(exc, MemoryError)}, []
        try:
            channel.send(reply, out)
        except PeerClosed:
            os._exit(0)


if __name__ == "__main__":
    main()
