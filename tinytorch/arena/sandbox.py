"""Worker isolation: who a competition worker runs as, what it may use, and cleaning up.

A submission is untrusted code, so its worker is confined by the operating
system rather than by promises:

- When the parent runs as root, the worker runs as a user id of its own (no
  passwd entry, no groups; a fresh one per worker) in a session of its own.
  It cannot write the root-owned board or results, cannot signal other
  workers, and RLIMIT_NPROC binds (root ignores it).
- RLIMIT_DATA caps each process's heap (never RLIMIT_AS: OpenBLAS reserves
  large thread buffers it never touches); the parent also polls the resident
  size of the whole worker tree, which catches shared memory and forked
  children that each stay under their own limit.
- The parent is a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so a
  process the worker orphans is re-parented to it, and `close()` kills every
  process of the worker and reaps it: no orphans, no zombies.
- The CPU time of the whole tree is accounted; more than `threads` x wall
  time (plus a little slack) is a thread hog.
- Thread pools (OpenMP, OpenBLAS, MKL, BLIS, tinytorch) are pinned through
  the environment.

Without root the worker keeps the parent's user: limits and the watchdog
still apply, but only file permissions and rules.guard_writes protect files.
"""
from __future__ import annotations

import atexit
import ctypes
import dataclasses
import itertools
import os
import pwd
import resource
import shutil
import signal
import stat
import subprocess
import tempfile
import time

from .rules import Violation

PR_SET_CHILD_SUBREAPER = 36
_CLOCK_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_uid_sequence = itertools.count()
_open = set()                     # sandboxes not closed yet; closed at exit (e.g. after Ctrl-C)
# Loaded once here: a child between fork and exec must not dlopen (another thread
# of the parent may have held the loader's lock at fork time).
_libc = ctypes.CDLL(None, use_errno=True)
_prctl, _capset = _libc.prctl, _libc.capset      # symbols resolved now, not in the child

#: Environment variables that size the thread pools a worker may start.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
                    "TINYTORCH_THREADS")


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one worker may use."""
    memory_bytes: int = 2 << 30   # resident size of the whole tree, and RLIMIT_DATA per process
    threads: int = 1              # CPU time may not exceed threads x wall time
    processes: int = 4            # processes alive at once in the tree, the worker included
    cpu_slack: float = 1.25       # tolerance of the thread-hog rule ...
    cpu_grace_seconds: float = 1.0  # ... and CPU time that is always allowed (start-up)
    busy_samples: int = 5         # samples in a row with more running threads than allowed
    file_bytes: int = 1 << 30     # RLIMIT_FSIZE: no file the worker writes grows past this


def thread_env(threads: int) -> dict:
    """Environment variables pinning every known thread pool to `threads`."""
    return {name: str(int(threads)) for name in THREAD_VARIABLES}


def become_subreaper() -> None:
    """Make this process adopt every orphaned descendant (Linux >= 3.4)."""
    if _prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


# ------------------------------------------------------------------ /proc

@dataclasses.dataclass
class _Proc:
    pid: int
    ppid: int
    session: int
    uid: int
    state: str
    start: int                    # start time in ticks: (pid, start) names a process uniquely
    cpu_ticks: int                # utime + stime of all its threads
    rss_bytes: int

    def memory_bytes(self) -> int:
        """Proportional set size (shared pages split between sharers), else resident size."""
        try:
            with open(f"/proc/{self.pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return self.rss_bytes

    def running_threads(self) -> int:
        """Threads running or waiting only for a CPU (state R) right now."""
        count = 0
        try:
            tasks = os.listdir(f"/proc/{self.pid}/task")
        except OSError:
            return 0
        for task in tasks:
            try:
                with open(f"/proc/{self.pid}/task/{task}/stat") as f:
                    text = f.read()
            except OSError:
                continue
            count += text[text.rindex(")") + 2] == "R"
        return count


def _read_proc(pid: int) -> _Proc | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
        with open(f"/proc/{pid}/status") as f:
            uid_line = next(line for line in f if line.startswith("Uid:"))
    except (OSError, StopIteration):
        return None
    fields = text[text.rindex(")") + 2:].split()   # the name may contain spaces and ")"
    return _Proc(pid=pid, ppid=int(fields[1]), session=int(fields[3]),
                 uid=int(uid_line.split()[1]), state=fields[0], start=int(fields[19]),
                 cpu_ticks=int(fields[11]) + int(fields[12]),
                 rss_bytes=int(fields[21]) * _PAGE)


def _all_processes(uid: int | None = None):
    """Every process, or (cheaply, by the owner of /proc/PID) those running as `uid`."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        if uid is not None:
            try:
                if os.stat(f"/proc/{entry}").st_uid != uid:
                    continue
            except OSError:
                continue
        proc = _read_proc(int(entry))
        if proc is not None and (uid is None or proc.uid == uid):
            yield proc


def _unused_uid() -> int:
    """A user id with no account and no process: the worker is alone with it."""
    base = int(os.environ.get("TINYTORCH_WORKER_UID_BASE", "1900000000"))
    busy = {p.uid for p in _all_processes()}
    for step in range(1000):
        uid = base + (os.getpid() * 1009 + next(_uid_sequence) * 7 + step) % 100_000_000
        try:
            pwd.getpwuid(uid)
        except KeyError:
            if uid not in busy:
                return uid
    raise RuntimeError("no unused user id found for a competition worker; "
                       "set TINYTORCH_WORKER_UID_BASE to a free range")


# ------------------------------------------------------------------ dropping root

PR_SET_KEEPCAPS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE = 8, 47, 2
CAP_DAC_READ_SEARCH = 2
_CAPABILITY_VERSION_3 = 0x20080522


def _world_readable_python(env: dict) -> bool:
    """True if any user can reach the interpreter, tinytorch and every import path."""
    import sys
    places = [sys.executable, os.path.dirname(os.path.dirname(__file__)), *sys.path,
              *env.get("PYTHONPATH", "").split(os.pathsep)]
    for place in (os.path.realpath(p) for p in places if p):
        path = place
        while path != os.path.dirname(path):
            path = os.path.dirname(path)
            try:
                if not os.stat(path).st_mode & stat.S_IXOTH:
                    return False
            except OSError:
                break
    return True


def _become(uid: int, keep_reading: bool) -> None:
    """Switch this (forked, root) process to `uid` with no groups and no capabilities,
    except read-only CAP_DAC_READ_SEARCH when `keep_reading`, kept across exec."""
    if keep_reading and _prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_KEEPCAPS)")
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if not keep_reading:
        return
    header = (ctypes.c_uint32 * 2)(_CAPABILITY_VERSION_3, 0)
    bit = 1 << CAP_DAC_READ_SEARCH      # effective, permitted, inheritable; then the upper words
    data = (ctypes.c_uint32 * 6)(bit, bit, bit, 0, 0, 0)
    if _capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset(CAP_DAC_READ_SEARCH)")
    if _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_DAC_READ_SEARCH, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAP_AMBIENT_RAISE)")


# ------------------------------------------------------------------ the sandbox

class Sandbox:
    """One worker's confinement: spawn it, `check()` it while waiting, `close()` it."""

    def __init__(self, limits: Limits = Limits()):
        self.limits = limits
        self.uid = _unused_uid() if os.geteuid() == 0 else None
        #: Whether the worker keeps CAP_DAC_READ_SEARCH (decided at spawn): only when
        #: its interpreter or imports live where other users cannot look (a pyenv
        #: under a 0700 /root, a checkout in a private home).
        self.keep_reading = False
        self.home = tempfile.mkdtemp(prefix="tinytorch-worker-")
        _open.add(self)
        if self.uid is not None:
            os.chown(self.home, self.uid, self.uid)
        self.proc: subprocess.Popen | None = None
        self.violation: Violation | None = None
        self.peak_memory_bytes = 0
        self._started = None
        self._cpu = {}                # (pid, start) -> last seen CPU ticks
        self._members = set()         # (pid, start) of every process seen in the tree
        self._busy = 0                # samples in a row with too many running threads
        self._last_check = 0.0

    # .................................................................. spawn

    def env(self, base: dict) -> dict:
        """`base` plus pinned thread pools and a private home and temp directory."""
        return {**base, **thread_env(self.limits.threads), "HOME": self.home,
                "TMPDIR": self.home, "PYTHONDONTWRITEBYTECODE": "1"}

    def _confine(self):
        """Runs in the child between fork and exec: drop the user id, then set the limits."""
        limits = [(resource.RLIMIT_DATA, self.limits.memory_bytes),
                  (resource.RLIMIT_FSIZE, self.limits.file_bytes), (resource.RLIMIT_CORE, 0)]
        if self.uid is not None:
            _become(self.uid, keep_reading=self.keep_reading)
            # Counts every task of the user: only meaningful for a user of our own.
            tasks = self.limits.processes * (self.limits.threads + 8) + 16
            limits.append((resource.RLIMIT_NPROC, tasks))
        for which, value in limits:
            _, hard = resource.getrlimit(which)
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(which, (value, value))

    def spawn(self, argv, env: dict, **popen_kwargs) -> subprocess.Popen:
        """Start the worker confined; `env` should already hold what the worker needs."""
        try:
            become_subreaper()
        except OSError:
            pass                      # not Linux >= 3.4: close() still kills the tree it sees
        popen_kwargs.setdefault("cwd", self.home)
        self.keep_reading = self.uid is not None and not _world_readable_python(env)
        self.proc = subprocess.Popen(argv, env=self.env(env), start_new_session=True,
                                     preexec_fn=self._confine, **popen_kwargs)
        self._started = time.monotonic()
        return self.proc

    # .................................................................. watch

    def _is_member(self, proc: _Proc, members_by_pid) -> bool:
        if self.uid is not None:
            return proc.uid == self.uid
        return (proc.session == self.proc.pid or proc.ppid in members_by_pid
                or (proc.pid, proc.start) in self._members)

    def members(self) -> list[_Proc]:
        """Every live process of the worker (zombies included)."""
        if self.proc is None:
            return []
        procs = sorted(_all_processes(self.uid), key=lambda p: p.pid)
        found = {}
        changed = True
        while changed:            # descendants may have lower pids than their parents
            changed = False
            for proc in procs:
                if proc.pid not in found and self._is_member(proc, found):
                    found[proc.pid] = proc
                    changed = True
        for proc in found.values():
            self._members.add((proc.pid, proc.start))
        return list(found.values())

    @property
    def cpu_seconds(self) -> float:
        """CPU time of every process the tree has had, as last seen."""
        return sum(self._cpu.values()) / _CLOCK_TICK

    def check(self, interval: float = 0.02) -> Violation | None:
        """Sample the tree (at most every `interval` s); on a broken limit, kill it and say why.

        A thread hog shows up two ways: CPU time beyond threads x wall time
        (exact, but a busy machine hides it), or more threads running at once
        than allowed, sampled `busy_samples` times in a row (robust under load).
        """
        now = time.monotonic()
        if self.violation is not None or self.proc is None or now - self._last_check < interval:
            return self.violation
        self._last_check = now
        live = [p for p in self.members() if p.state != "Z"]
        for proc in live:
            key = (proc.pid, proc.start)
            self._cpu[key] = max(self._cpu.get(key, 0), proc.cpu_ticks)
        memory = sum(p.rss_bytes for p in live)
        if memory > self.limits.memory_bytes:   # resident size counts shared pages twice:
            memory = sum(p.memory_bytes() for p in live)   # confirm (slowly) by PSS
        self.peak_memory_bytes = max(self.peak_memory_bytes, memory)
        running = sum(p.running_threads() for p in live)
        self._busy = self._busy + 1 if running > self.limits.threads + 1 else 0
        wall = now - self._started
        allowed = self.limits.threads * wall * self.limits.cpu_slack + self.limits.cpu_grace_seconds
        if len(live) > self.limits.processes:
            self.fail(Violation("too-many-processes", f"{len(live)} processes alive, "
                                                      f"{self.limits.processes} allowed"))
        elif memory > self.limits.memory_bytes:
            self.fail(Violation("memory", f"exceeded the memory limit: the worker's processes "
                                          f"held {memory >> 20} MiB, the limit is "
                                          f"{self.limits.memory_bytes >> 20} MiB"))
        elif self.cpu_seconds > allowed:
            self.fail(Violation("thread-hog", f"{self.cpu_seconds:.1f} s of CPU in {wall:.1f} s "
                                              f"with {self.limits.threads} thread(s) allowed"))
        elif self._busy >= self.limits.busy_samples:
            self.fail(Violation("thread-hog", f"{running} threads running at once, "
                                              f"{self.limits.threads} allowed"))
        return self.violation

    def fail(self, violation: Violation) -> None:
        """Record the first reason the worker is failed, and kill everything it started."""
        if self.violation is None:
            self.violation = violation
        self.kill()

    # .................................................................. clean up

    def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL every process of the worker and reap the ones re-parented to us."""
        if self.proc is None:
            return
        deadline = time.monotonic() + timeout
        while True:
            procs = self.members()
            for proc in procs:
                if proc.state != "Z":
                    try:
                        os.kill(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            self.proc.poll()      # reaps the worker once it is dead
            for proc in procs:    # orphans adopted by this (subreaper) process
                if proc.ppid == os.getpid() and proc.pid != self.proc.pid:
                    try:
                        os.waitpid(proc.pid, os.WNOHANG)
                    except ChildProcessError:
                        pass
            if self.proc.returncode is not None and not self.members():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not end every process of worker {self.proc.pid} "
                                   f"within {timeout} s")
            time.sleep(0.01)

    def close(self) -> None:
        """End the worker for good: kill and reap its tree, remove its home directory."""
        try:
            self.kill()
        finally:
            shutil.rmtree(self.home, ignore_errors=True)
            _open.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@atexit.register
def _close_forgotten():
    """An interrupted parent still kills its workers' trees and removes their folders."""
    for box in list(_open):
        try:
            box.close()
        except (OSError, RuntimeError):
            pass
