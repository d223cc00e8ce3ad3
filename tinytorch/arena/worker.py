"""The untrusted end: one sandboxed process, one backend, requests from the parent.

Started by runner.spawn_worker as `python -m tinytorch.arena.worker FD`, where
FD is the staging area (wire.Staging) shared with the parent. The protocol
uses the original stdin/stdout; anything the backend prints goes to stderr,
so it cannot corrupt a message. Requests (see wire.py):

    (start)                               the worker says {"ready": true}
    load  {name} or {entry_point}         import the backend: a registered name, or the
                                          "module:Class" an instructor gave explicitly
    run   {kind, params, size, sets}      call the backend on every input set found in the
                                          staging area, write each output where `sets` says
    touch {size}                          fault in the staging area's pages (memory event)
    exit  {}                              leave

Every reply is {"ok": true, ...} or {"error": "...", "memory": bool}, plus
"violation": "aliasing" when the backend returned memory it shares with an
input or an earlier output. Nothing here is a guard: the parent assumes
this code may be patched by the backend, and checks what it needs from
outside (sandbox.py). The worker leaves by os._exit, so no atexit hook or
finaliser of a backend runs.
"""
from __future__ import annotations

import importlib
import os
import sys
import traceback

import numpy as np

from . import blasguard
from .problems import PROBLEMS
from .violations import Violation, aliasing_error, check_fresh
from .wire import Channel, PeerClosed, Staging


def _protocol_channel() -> Channel:
    """Keep stdin/stdout for the protocol; point the backend's fd 0 at /dev/null, fd 1 at stderr."""
    read_fd, write_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return Channel(read_fd, write_fd)


def load(request: dict):
    """A backend instance from a registered name or an explicit "module:Class"."""
    from ..backends.base import ComputeBackend
    from ..backends.registry import load_backend
    if "name" in request:
        return load_backend(str(request["name"]))
    module_name, _, attr = str(request["entry_point"]).partition(":")
    backend = getattr(importlib.import_module(module_name), attr)()
    if not isinstance(backend, ComputeBackend):
        raise TypeError(f"{request['entry_point']} made a {type(backend).__name__}, "
                        f"not a ComputeBackend")
    backend.name = backend.name or request["entry_point"]
    return backend


class Session:
    """What the worker holds between requests."""

    def __init__(self, staging: Staging):
        self.staging = staging
        self.backend = None

    def handle(self, request):
        op = request.get("op")
        if op == "load":
            from ..backends.base import implemented_operations
            self.backend = load(request)
            return {"ok": True, "operations": implemented_operations(type(self.backend))}
        if op == "run":
            return self.run(request)
        if op == "call":
            return self.call(request)
        if op == "touch":
            self.staging.ensure(int(request["size"]), grow=False)
            self.staging.touch(int(request["size"]))
            return {"ok": True}
        raise ValueError(f"unknown request {op!r}")

    def run(self, request):
        problem, params = PROBLEMS[request["kind"]], request["params"]
        self.staging.ensure(int(request["size"]), grow=False)
        previous = []
        for spec in request["sets"]:
            inputs = [self.staging.array(slot) for slot in spec["inputs"]]
            outputs = problem.call(self.backend, params, inputs)
            check_fresh(outputs, [*inputs, *previous])
            if len(outputs) != len(spec["outputs"]):
                raise ValueError(f"returned {len(outputs)} outputs, expected {len(spec['outputs'])}")
            for out, slot in zip(outputs, spec["outputs"]):
                target = self.staging.array(slot)
                if not isinstance(out, np.ndarray) or out.shape != target.shape:
                    raise ValueError(f"returned {type(out).__name__} of shape "
                                     f"{getattr(out, 'shape', None)}, expected {target.shape}")
                target[...] = out
            previous = outputs
        return {"ok": True, "count": len(request["sets"])}


    def call(self, request):
        """One operation on arguments in a given memory layout (the conformance suite)."""
        from ..backends.base import OPERATIONS
        if request["operation"] not in OPERATIONS:
            raise ValueError(f"unknown operation {request['operation']!r}")
        self.staging.ensure(int(request["size"]), grow=False)
        args = []
        for spec in request["args"]:
            if "same_as" in spec:
                args.append(args[int(spec["same_as"])])
            elif "slot" in spec:
                array = self.staging.array(spec["slot"])
                args.append({"transposed": lambda a: a.T, "strided": lambda a: a[..., ::2]}
                            .get(spec.get("layout"), lambda a: a)(array))
            else:
                value = spec["value"]
                args.append(tuple(value) if isinstance(value, list) else value)
        out = getattr(self.backend, request["operation"])(*args)
        if not isinstance(out, np.ndarray):
            return {"ok": True, "returned": type(out).__name__}
        target = self.staging.array(request["output"])
        if out.shape != target.shape or out.dtype != target.dtype:
            return {"ok": True, "returned": f"{out.dtype} {tuple(out.shape)}"}
        target[...] = out
        cast = request["operation"] in getattr(self.backend, "float64_results", ())
        return {"ok": True, "float64_result": cast}


def _error_reply(exc: BaseException) -> dict:
    violation = exc if isinstance(exc, Violation) else aliasing_error(exc)
    if violation is not None:
        return {"error": violation.detail, "violation": violation.name}
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return {"error": f"{type(exc).__name__}: {exc}{where}", "memory": isinstance(exc, MemoryError)}


def main():
    staging = Staging(int(sys.argv[1]))
    channel = _protocol_channel()
    from threadpoolctl import threadpool_limits
    threadpool_limits(int(os.environ.get("TINYTORCH_THREADS", "1")))
    blasguard.install_ctypes_hook()       # after the harness's own ctypes use (threadpoolctl)
    session = Session(staging)
    channel.send({"ready": True})
    while True:
        try:
            request = channel.receive()
        except PeerClosed:
            os._exit(0)
        if request.get("op") == "exit":
            os._exit(0)
        try:
            reply = session.handle(request)
        except BaseException as exc:  # noqa: BLE001 - report anything, even SystemExit
            print(traceback.format_exc(), file=sys.stderr)
            reply = _error_reply(exc)
        try:
            channel.send(reply)
        except PeerClosed:
            os._exit(0)


if __name__ == "__main__":
    main()
