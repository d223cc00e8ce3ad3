"""The parent's end of a worker: start it, talk to it under limits, kill and reap it.

Every worker starts in `spawn_worker`, the one place isolation is added:
a sandbox.Sandbox (own user id and session, RLIMIT_DATA/NPROC, pinned thread
pools, a watchdog over the whole process tree for memory, processes and CPU
time) and, unless the rules allow BLAS, the blasguard shim preloaded. Wall
time is enforced per request (the worker is killed when it passes). Whatever
goes wrong becomes a WorkerFailure with a `reason` a student can act on; a
broken rule has status "violation" and a reason starting with its name.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import time

from . import blasguard, sandbox
from .rules import Violation
from .wire import Channel, PeerClosed, ProtocolError

MB = 1 << 20


@dataclasses.dataclass(frozen=True)
class Limits:
    wall_time_s: float
    memory_mb: int
    threads: int
    allow_blas: bool = False      # True only for the numpy reference, or if the rules allow it


class WorkerFailure(Exception):
    """A request did not produce a reply; `status` is timeout, memory, crash or error."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def worker_environment(limits: Limits, extra_path: str | None = None) -> dict:
    """The parent's environment (the sandbox pins thread pools), plus `extra_path`."""
    env = dict(os.environ)
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, env.get("PYTHONPATH")) if p)
    return env


def spawn_worker(limits: Limits, env: dict | None = None) -> "Worker":
    """Start one worker process under `limits` (the single place workers start)."""
    stderr = tempfile.TemporaryFile()
    box = sandbox.Sandbox(sandbox.Limits(memory_bytes=limits.memory_mb * MB,
                                         threads=limits.threads))
    env = blasguard.worker_env(env or worker_environment(limits), limits.allow_blas)
    process = box.spawn([sys.executable, "-m", "tinytorch.arena.worker"], env,
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                        close_fds=True)
    return Worker(process, limits, stderr, box)


def violation_failure(violation: Violation) -> WorkerFailure:
    """A broken rule as the arena reports it."""
    status = "memory" if violation.name == "memory" else "violation"   # memory is penalised
    return WorkerFailure(status, violation.reason if status != "violation"
                         else f"rule violation: {violation.reason}")


def _status_kb(pid: int, field: str) -> int | None:
    """A `VmRSS`/`VmHWM`-style field of /proc/<pid>/status in kB (None if unreadable)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class Worker:
    """One running worker and its channel; every request is bounded in time and memory."""

    def __init__(self, process: subprocess.Popen, limits: Limits, stderr, box: sandbox.Sandbox):
        self.process, self.limits, self.stderr, self.sandbox = process, limits, stderr, box
        self.channel = Channel(process.stdout.fileno(), process.stdin.fileno(), self._watch)

    @property
    def pid(self) -> int:
        return self.process.pid

    def _watch(self, deadline):
        """Called between waits: enforce the wall time and the sandbox's limits."""
        if deadline is not None and time.monotonic() > deadline:
            self.kill()
            raise WorkerFailure("timeout", f"timed out (no answer within "
                                           f"{self.limits.wall_time_s:g} s)")
        violation = self.sandbox.check()
        if violation is not None:
            raise violation_failure(violation)

    def _blas_report(self) -> WorkerFailure | None:
        """BLAS calls the shim wrote to stderr: believed even if the worker says otherwise."""
        if self.limits.allow_blas:
            return None
        self.stderr.seek(0)
        symbols = blasguard.reported_symbols(self.stderr.read().decode(errors="replace"))
        if not symbols:
            return None
        self.kill()
        return violation_failure(Violation("blas", f"called vendor BLAS ({', '.join(symbols)}); "
                                                   f"the rules forbid BLAS"))

    def request(self, header: dict, arrays=(), timeout: float | None = None,
                max_bytes: int = 1 << 34) -> tuple[dict, list]:
        """Send one request and return the reply, or raise WorkerFailure."""
        deadline = time.monotonic() + (timeout or self.limits.wall_time_s)
        try:
            self.channel.send(header, arrays, deadline)
            reply, out = self.channel.receive(deadline, max_bytes)
        except PeerClosed:
            raise self._blas_report() or self._death() from None
        except ProtocolError as exc:
            self.kill()
            raise WorkerFailure("error", f"broke the worker protocol: {exc}") from None
        blas = self._blas_report()
        if blas is not None:
            raise blas
        if "violation" in reply:
            self.kill()
            try:
                violation = Violation(str(reply["violation"]), str(reply["error"])[:500])
            except ValueError:        # a name the rules do not know: the worker is lying
                violation = Violation("harness-tampering", "the worker sent an unknown violation")
            raise violation_failure(violation)
        if "error" in reply:
            error = str(reply["error"])[:500]
            if reply.get("memory"):
                raise WorkerFailure("memory", f"exceeded the memory limit of "
                                              f"{self.limits.memory_mb} MB ({error})")
            raise WorkerFailure("error", f"raised {error}")
        return reply, out

    def _death(self) -> WorkerFailure:
        """Why the worker closed its pipe: a signal, an exit code, and its last words."""
        if self.sandbox.violation is not None:     # the watchdog killed it
            return violation_failure(self.sandbox.violation)
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            return WorkerFailure("crash", "closed its pipe without exiting")
        if code < 0:
            name = _signal_name(-code)
            if name == "SIGILL":
                return WorkerFailure("crash", "crashed with SIGILL: built for another CPU "
                                              "(rebuild with TINYTORCH_PORTABLE=1)")
            return WorkerFailure("crash", f"crashed with {name}")
        return WorkerFailure("crash", f"exited with code {code}{self._last_words()}")

    def _last_words(self) -> str:
        self.stderr.seek(0)
        lines = self.stderr.read()[-4000:].decode(errors="replace").strip().splitlines()
        return f": {lines[-1]}" if lines else ""

    def peak_rss_mb(self) -> float | None:
        hwm = _status_kb(self.pid, "VmHWM")
        return None if hwm is None else hwm / 1024

    def rss_mb(self) -> float | None:
        rss = _status_kb(self.pid, "VmRSS")
        return None if rss is None else rss / 1024

    def reset_peak(self) -> bool:
        """Reset the worker's resident high-water mark to its current size (Linux)."""
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def kill(self):
        """Kill every process of the worker (orphans and other sessions too) and reap them."""
        self.sandbox.kill()

    def close(self):
        """Ask the worker to leave; kill it if it does not, then release everything."""
        if self.process.poll() is None:
            try:
                self.channel.send({"op": "exit"}, deadline=time.monotonic() + 1)
                self.process.wait(timeout=2)
            except (WorkerFailure, PeerClosed, subprocess.TimeoutExpired):
                pass
        self.sandbox.close()
        for stream in (self.process.stdin, self.process.stdout, self.stderr):
            try:
                stream.close()
            except OSError:
                pass
