"""The parent's end of a worker: start it, talk to it under limits, kill and reap it.

Every worker starts in `spawn_worker`, the one place isolation is added
(sandbox, BLAS interposition). Limits: wall time per request (the worker is
killed when it passes), memory by RLIMIT_DATA (never RLIMIT_AS, which trips
OpenBLAS's thread buffers) plus resident-size polling while waiting, and the
thread count through the usual environment variables. Whatever goes wrong
becomes a WorkerFailure with a `reason` a student can act on.
"""
from __future__ import annotations

import dataclasses
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time

from .wire import Channel, PeerClosed, ProtocolError

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "BLIS_NUM_THREADS", "TINYTORCH_THREADS")
MB = 1 << 20


@dataclasses.dataclass(frozen=True)
class Limits:
    wall_time_s: float
    memory_mb: int
    threads: int


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
    env = dict(os.environ)
    for name in THREAD_VARIABLES:
        env[name] = str(limits.threads)
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, env.get("PYTHONPATH")) if p)
    return env


def spawn_worker(limits: Limits, env: dict | None = None) -> "Worker":
    """Start one worker process under `limits` (the single place workers start)."""
    stderr = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [sys.executable, "-m", "tinytorch.arena.worker"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
        env=env or worker_environment(limits), start_new_session=True, close_fds=True)
    data = limits.memory_mb * MB
    try:
        resource.prlimit(process.pid, resource.RLIMIT_DATA, (data, data))
    except (OSError, AttributeError):  # not Linux: resident-size polling still applies
        pass
    return Worker(process, limits, stderr)


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

    def __init__(self, process: subprocess.Popen, limits: Limits, stderr):
        self.process, self.limits, self.stderr = process, limits, stderr
        self.channel = Channel(process.stdout.fileno(), process.stdin.fileno(), self._watch)

    @property
    def pid(self) -> int:
        return self.process.pid

    def _watch(self, deadline):
        """Called between waits: enforce the wall time and the resident-size limit."""
        if deadline is not None and time.monotonic() > deadline:
            self.kill()
            raise WorkerFailure("timeout", f"timed out (no answer within "
                                           f"{self.limits.wall_time_s:g} s)")
        rss = _status_kb(self.pid, "VmRSS")
        if rss is not None and rss * 1024 > self.limits.memory_mb * MB:
            self.kill()
            raise WorkerFailure("memory", f"exceeded the memory limit "
                                          f"({rss // 1024} MB > {self.limits.memory_mb} MB)")

    def request(self, header: dict, arrays=(), timeout: float | None = None,
                max_bytes: int = 1 << 34) -> tuple[dict, list]:
        """Send one request and return the reply, or raise WorkerFailure."""
        deadline = time.monotonic() + (timeout or self.limits.wall_time_s)
        try:
            self.channel.send(header, arrays, deadline)
            reply, out = self.channel.receive(deadline, max_bytes)
        except PeerClosed:
            raise self._death() from None
        except ProtocolError as exc:
            self.kill()
            raise WorkerFailure("error", f"broke the worker protocol: {exc}") from None
        if "error" in reply:
            error = str(reply["error"])[:500]
            if reply.get("memory"):
                raise WorkerFailure("memory", f"exceeded the memory limit of "
                                              f"{self.limits.memory_mb} MB ({error})")
            raise WorkerFailure("error", f"raised {error}")
        return reply, out

    def _death(self) -> WorkerFailure:
        """Why the worker closed its pipe: a signal, an exit code, and its last words."""
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
        """Kill the worker's whole session and reap it."""
        if self.process.returncode is None:   # not reaped yet, so the group id is still ours
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def close(self):
        """Ask the worker to leave; kill it if it does not, then release everything."""
        if self.process.poll() is None:
            try:
                self.channel.send({"op": "exit"}, deadline=time.monotonic() + 1)
                self.process.wait(timeout=2)
            except (WorkerFailure, PeerClosed, subprocess.TimeoutExpired):
                pass
        self.kill()
        for stream in (self.process.stdin, self.process.stdout, self.stderr):
            try:
                stream.close()
            except OSError:
                pass
