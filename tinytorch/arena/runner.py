"""The parent's end of a worker: start it sandboxed, send it requests, time them, end it.

Every worker starts in `spawn_worker`, the one place isolation is added: a
sandbox.Sandbox (namespaces, an unprivileged user, a read-only file system,
limits, and the BLAS guard unless the rules allow BLAS). Between requests
the worker is frozen; `request` thaws it, sends, waits (enforcing the wall
time and the sandbox's limits, draining its stderr into a capped tail and
the guard's reports), and freezes it again before it returns. The time a
request took is read around all of that, so work a worker defers past its
reply still counts: it can only happen before the freeze.

Whatever goes wrong becomes a WorkerFailure with a `reason` a student can
act on; a broken rule has status "violation" and a reason starting with its
name (violations.py). Every text the worker controls is cut to a length
here, before anything else sees it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np

from . import sandbox
from .sandbox import Limits
from .violations import VIOLATIONS, Violation
from .wire import Channel, PeerClosed, ProtocolError, Staging, layout

TAIL_BYTES = 8 << 10       # how much of a worker's stderr the parent keeps
REASON_CHARS = 500         # how much of any text a worker sends the parent keeps


class WorkerFailure(Exception):
    """A request did not produce a reply; `status` is timeout, memory, crash, error or violation."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def violation_failure(violation: Violation) -> WorkerFailure:
    """A broken rule as the arena reports it (a memory blow-up is penalised, not unranked)."""
    if violation.name == "memory":
        return WorkerFailure("memory", violation.reason)
    return WorkerFailure("violation", f"rule violation: {violation.reason}")


def clip(text, limit: int = REASON_CHARS) -> str:
    """A worker-controlled text as the parent keeps it: a string, at most `limit` characters."""
    text = str(text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def spawn_worker(limits: Limits, *, isolate: bool = True, own_paths=(), hidden_paths=(),
                 env: dict | None = None) -> "Worker":
    """Start one sandboxed worker and wait until its harness is ready (then arm its guard)."""
    box = sandbox.Sandbox(limits, own_paths=own_paths, hidden_paths=hidden_paths, isolate=isolate)
    staging = Staging()
    try:
        process = box.spawn([sys.executable, "-m", "tinytorch.arena.worker", str(staging.fd)],
                            env, pass_fds=(staging.fd,), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except BaseException:
        box.close()
        staging.close()
        raise
    worker = Worker(process, limits, box, staging)
    try:
        worker.start()
    except BaseException:
        worker.close()
        raise
    return worker


class Worker:
    """One running worker; every request is bounded in time and memory, and timed."""

    def __init__(self, process: subprocess.Popen, limits: Limits, box: sandbox.Sandbox,
                 staging: Staging):
        self.process, self.limits, self.sandbox, self.staging = process, limits, box, staging
        self._tail = bytearray()
        self._blas: list[str] = []
        stderr = process.stderr.fileno()
        os.set_blocking(stderr, False)
        drains = {stderr: self._drain_stderr}
        if box.guard_fds is not None:
            drains[box.guard_fds[0]] = self._drain_guard
        self.channel = Channel(process.stdout.fileno(), process.stdin.fileno(), self._watch, drains)

    @property
    def pid(self) -> int:
        return self.process.pid

    # ................................................................ what the worker says

    def _drain_stderr(self) -> None:
        """Keep the last TAIL_BYTES of the worker's stderr; read at most 1 MiB per call."""
        for _ in range(16):
            try:
                chunk = os.read(self.process.stderr.fileno(), 1 << 16)
            except (BlockingIOError, OSError, ValueError):
                return
            if not chunk:
                return
            self._tail += chunk
            del self._tail[:-TAIL_BYTES]

    def _drain_guard(self) -> None:
        self._blas += self.sandbox.blas_reports()
        del self._blas[8:]

    def _blas_failure(self) -> WorkerFailure | None:
        self._drain_guard()
        if not self._blas:
            return None
        self.kill()
        names = ", ".join(dict.fromkeys(clip(s, 60) for s in self._blas))
        return violation_failure(Violation("blas", f"called {names}; the rules forbid BLAS "
                                                   f"and LAPACK (e.g. a @ b, ndarray.dot, "
                                                   f"numpy.linalg)"))

    def _watch(self, deadline):
        """Called between waits: enforce the wall time and the sandbox's limits."""
        blas = self._blas_failure()
        if blas is not None:
            raise blas
        if deadline is not None and time.monotonic() > deadline:
            self.kill()
            raise WorkerFailure("timeout", f"timed out (no answer within "
                                           f"{self.limits.wall_time_s:g} s)")
        violation = self.sandbox.check()
        if violation is not None:
            raise violation_failure(violation)

    # ................................................................ requests

    def start(self) -> None:
        """Wait for the harness's "ready", arm the BLAS guard, freeze until the first request."""
        deadline = time.monotonic() + self.limits.wall_time_s
        try:
            reply = self.channel.receive(deadline)
        except PeerClosed:
            raise self._blas_failure() or self._death() from None
        except ProtocolError as exc:
            self.kill()
            raise WorkerFailure("error", f"broke the worker protocol: {clip(exc)}") from None
        if reply.get("ready") is not True:
            self.kill()
            raise WorkerFailure("error", "broke the worker protocol: no ready message")
        self.sandbox.arm_blas_guard()
        self._freeze()

    def _freeze(self) -> None:
        self.sandbox.freeze()
        if self.sandbox.violation is not None:
            raise violation_failure(self.sandbox.violation)

    def request(self, message: dict, timeout: float | None = None) -> tuple[dict, float]:
        """Send one request; (reply, seconds from thawing the worker to having it frozen)."""
        deadline = time.monotonic() + (timeout or self.limits.wall_time_s)
        start = time.perf_counter()
        self.sandbox.thaw()
        if self.sandbox.violation is not None:
            raise violation_failure(self.sandbox.violation)
        try:
            self.channel.send(message, deadline)
            reply = self.channel.receive(deadline)
        except PeerClosed:
            raise self._blas_failure() or self._death() from None
        except ProtocolError as exc:
            self.kill()
            raise WorkerFailure("error", f"broke the worker protocol: {clip(exc)}") from None
        self._freeze()
        seconds = time.perf_counter() - start
        blas = self._blas_failure()
        if blas is not None:
            raise blas
        if "violation" in reply:
            self.kill()
            name = reply["violation"] if reply["violation"] in VIOLATIONS else None
            if name is None:
                raise WorkerFailure("error", "broke the worker protocol: an unknown violation")
            raise violation_failure(Violation(name, clip(reply.get("error", ""))))
        if "error" in reply:
            error = clip(reply["error"])
            if reply.get("memory") is True:
                raise WorkerFailure("memory", f"exceeded the memory limit of "
                                              f"{self.limits.memory_mb} MB ({error})")
            raise WorkerFailure("error", f"raised {error}")
        return reply, seconds

    def run(self, kind: str, params: dict, input_sets, output_specs, timeout=None):
        """Stage `input_sets`, call the backend on each, read the outputs back.

        `output_specs` is [(shape, dtype)] of one call. Returns (seconds, outputs per set).
        The output slots are filled with NaN first, so a call that writes nothing fails.
        """
        slots, end = [], 0
        for inputs in input_sets:
            ins, end = layout([(a.shape, a.dtype) for a in inputs], end)
            outs, end = layout(output_specs, end)
            slots.append((ins, outs))
        self.staging.ensure(end, grow=True)
        for inputs, (ins, outs) in zip(input_sets, slots):
            for array, slot in zip(inputs, ins):
                self.staging.array(slot)[...] = array
            for slot in outs:
                target = self.staging.array(slot)
                target[...] = np.nan if target.dtype.kind == "f" else 0
        _, seconds = self.request({"op": "run", "kind": kind, "params": params, "size": end,
                                   "sets": [{"inputs": i, "outputs": o} for i, o in slots]},
                                  timeout)
        outputs = [[self.staging.array(slot).copy() for slot in outs] for _, outs in slots]
        return seconds, outputs

    # ................................................................ endings

    def _death(self) -> WorkerFailure:
        """Why the worker closed its pipe: a limit, a signal, an exit code, its last words."""
        if self.sandbox.violation is not None:     # the watchdog killed it
            return violation_failure(self.sandbox.violation)
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            return WorkerFailure("crash", "closed its pipe without exiting")
        if self.sandbox.killed_for_memory():
            return WorkerFailure("memory", f"exceeded the memory limit of "
                                           f"{self.limits.memory_mb} MB (killed by the kernel)")
        self._drain_stderr()
        if code < 0 or code > 128:      # bwrap reports its child's signal as 128 + signal
            name = _signal_name(-code if code < 0 else code - 128)
            if name == "SIGILL":
                return WorkerFailure("crash", "crashed with SIGILL: built for another CPU "
                                              "(rebuild with TINYTORCH_PORTABLE=1)")
            return WorkerFailure("crash", f"crashed with {name}")
        return WorkerFailure("crash", f"exited with code {code}{self._last_words()}")

    def _last_words(self) -> str:
        lines = self._tail.decode(errors="replace").strip().splitlines()
        return f": {clip(lines[-1], 300)}" if lines else ""

    def memory_event(self, kind: str, params: dict, inputs, output_specs, timeout=None):
        """(peak bytes above the baseline, outputs) of one call, measured from outside."""
        ins, end = layout([(a.shape, a.dtype) for a in inputs], 0)
        outs, end = layout(output_specs, end)
        self.staging.ensure(end, grow=True)
        for array, slot in zip(inputs, ins):
            self.staging.array(slot)[...] = array
        for slot in outs:
            self.staging.array(slot)[...] = np.nan
        self.request({"op": "touch", "size": end}, timeout)
        baseline = self.sandbox.reset_peak_memory()
        self.request({"op": "run", "kind": kind, "params": params, "size": end,
                      "sets": [{"inputs": ins, "outputs": outs}]}, timeout)
        peak = self.sandbox.peak_memory_bytes()
        return max(0, peak - baseline), [self.staging.array(slot).copy() for slot in outs]

    def kill(self):
        """Kill every process of the worker and reap them."""
        self.sandbox.kill()

    def close(self):
        """Ask the worker to leave; kill it if it does not, then release everything."""
        if self.process.poll() is None and self.sandbox.violation is None:
            try:
                self.sandbox.thaw()
                self.channel.send({"op": "exit"}, deadline=time.monotonic() + 1)
                self.process.wait(timeout=2)
            except (WorkerFailure, PeerClosed, subprocess.TimeoutExpired):
                pass
        self.sandbox.close()
        self.staging.close()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            try:
                stream.close()
            except OSError:
                pass
