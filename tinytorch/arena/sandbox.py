"""The operating system's boundary around every process that runs submission code.

A submission is untrusted, and so is any code running in its process: it can
patch whatever the harness runs there (compiled Cython most of all). So the
boundary is the kernel's, built with bubblewrap (`bwrap`), and the parent
trusts only what it reads from outside: its own clock, the outputs it reads
from shared memory while the worker is frozen, CPU time and memory from
/proc or cgroups. Every process that runs submission code (competition
workers, `tinytorch check`, the listing's probes) runs in a Sandbox:

- its own PID, network, IPC, UTS, cgroup and mount namespaces: it sees and
  signals only its own processes and has no network;
- an unprivileged user with no capabilities and no_new_privs, in a user
  namespace where it cannot create another; when the parent is root,
  `setpriv` first drops to a user id of its own (no account, no groups, a
  fresh one per worker), so root-owned files stay closed to it too;
- a file system holding, read-only, only what it needs: the system's
  libraries (/usr), the Python installation and its site-packages, tinytorch
  and its own package. Results, board, home folders and the other
  contestants' packages are not there. /tmp and /dev/shm are private
  tmpfs, gone with the worker, whose use counts as the worker's memory
  (each is capped at twice the limit, so the limit fires first);
- limits: cgroups (memory, freezer, cpuacct, pids) where this process may
  create them (cgroups.py), else RLIMIT_DATA plus polling of /proc (with
  the tmpfs usage counted as memory). CPU time beyond threads x active wall
  time is a thread hog;
- frozen (cgroup freezer, else SIGSTOP of every process of its namespace)
  whenever it holds no request, so it cannot work while another backend is
  timed; CPU time that grows while frozen is named as interference.

When the parent is root and the Python installation lies below a folder
other users cannot enter (a pyenv under /root), a first bwrap run as root
shows just those folders to the unprivileged user before `setpriv`.

`isolate=False` (`--unsandboxed`, trusted fields only; `check` on a machine
without bubblewrap) runs the worker as a plain child with the same limits,
freezing and BLAS guard; nothing then protects files or other processes.
"""
from __future__ import annotations

import atexit
import dataclasses
import functools
import itertools
import json
import os
import pwd
import select
import shlex
import shutil
import signal
import site
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time

from . import cgroups
from .violations import Violation

#: Where a guarded worker finds its BLAS guard's FIFO and arming marker (see blasguard.c).
GUARD_DIR = "/run/tinytorch"
#: Environment variables that size the thread pools a worker may start.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
                    "TINYTORCH_THREADS")
#: Environment a worker inherits from the parent (the rest, secrets included, stays out).
_PASSED_VARIABLES = ("PATH", "LANG", "LANGUAGE", "TZ", "PYTHONPATH", "PYTHONHASHSEED",
                     "VIRTUAL_ENV", "TINYTORCH_THREADS")
_PASSED_PREFIXES = ("LC_", "OPENBLAS_", "GOMP_", "OMP_", "KMP_", "MKL_")
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: "
                "dnf install bubblewrap; Arch: pacman -S bubblewrap)")

CPU_SLACK = 1.25            # tolerance of the thread-hog rule ...
CPU_GRACE_S = 1.0           # ... and CPU time always allowed (start-up, imports)
BUSY_SAMPLES = 5            # samples in a row with more running threads than allowed
FREEZE_TIMEOUT_S = 5.0      # a worker not frozen by then resists being frozen
IDLE_CPU_TOLERANCE_S = 0.05  # CPU time a frozen worker may appear to gain (accounting lag)
_CLOCK_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_uid_sequence = itertools.count()
_open: set = set()          # sandboxes not closed yet; closed at exit (e.g. after Ctrl-C)


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one worker may use: [rules] of events.toml, or an event's own values."""
    wall_time_s: float = 60.0     # per request to the worker
    memory_mb: int = 2048         # resident memory of all its processes plus its tmpfs
    threads: int = 1              # CPU time may not exceed threads x active wall time (0: unpinned)
    processes: int = 4            # processes alive at once, the worker included
    allow_blas: bool = False      # True only for the numpy reference, or if the rules allow it

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_mb) << 20


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot build a sandbox on this machine; says how to fix it."""


def thread_env(threads: int) -> dict:
    """Environment variables pinning every known thread pool to `threads`."""
    return {name: str(int(threads)) for name in THREAD_VARIABLES}


# ------------------------------------------------------------------ availability

@functools.lru_cache(maxsize=None)
def check_available() -> str:
    """bubblewrap's version once a trivial sandbox has run here, else SandboxUnavailable."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(f"bubblewrap (bwrap) is not installed; {INSTALL_HINT}")
    version = subprocess.run([bwrap, "--version"], capture_output=True, text=True).stdout.strip()
    box = Sandbox(Limits(allow_blas=True))
    try:
        proc = box.spawn([sys.executable, "-c", "import numpy"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
        _, err = proc.communicate(timeout=120)
    except (OSError, subprocess.TimeoutExpired, SandboxUnavailable) as exc:
        raise SandboxUnavailable(f"bubblewrap could not start a sandbox here: {exc}") from None
    finally:
        box.close()
    if proc.returncode != 0:
        last = (err or b"").decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise SandboxUnavailable(
            f"bubblewrap could not start a sandbox here ({last[0][:300]}); it needs "
            f"unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, "
            f"user.max_user_namespaces > 0, no AppArmor restriction on bwrap)")
    return version or "bubblewrap"


# ------------------------------------------------------------------ what a worker may see

def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _homes() -> list[str]:
    homes = {"/root", "/home", os.path.expanduser("~")}
    try:
        homes.add(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:
        pass
    return sorted(os.path.realpath(h) for h in homes if h and h != "/")


@functools.lru_cache(maxsize=None)
def runtime_paths() -> tuple[str, ...]:
    """Folders the worker's Python needs: the installation, site-packages, tinytorch."""
    tinytorch_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    candidates = [sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
                  os.path.dirname(os.path.realpath(sys.executable)), tinytorch_dir,
                  *(sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")),
                  *site.getsitepackages()]
    return tuple(dict.fromkeys(os.path.abspath(p) for p in candidates if p and os.path.exists(p)))


def _bindable(paths, hidden) -> list[str]:
    """Existing paths (and their real paths) that expose neither `/` nor a home folder."""
    homes = _homes()
    out = []
    for given in paths:
        if not given or not os.path.exists(given):
            continue
        for path in dict.fromkeys((os.path.abspath(given), os.path.realpath(given))):
            if path == os.sep or any(_inside(home, path) for home in homes):
                continue      # binding it would show a home folder or the whole machine
            if any(_inside(path, h) for h in hidden):
                continue      # another contestant's package, the results, the board
            out.append(path)
    return sorted(dict.fromkeys(out))


def _traversable(path: str) -> bool:
    """True if every folder above `path` lets other users pass (o+x)."""
    parent = os.path.dirname(path)
    while parent != os.path.dirname(parent):
        try:
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
        parent = os.path.dirname(parent)
    return True


def _closed_ancestor(path: str) -> str:
    """The topmost folder above `path` that other users cannot pass."""
    parts = path.strip(os.sep).split(os.sep)
    for i in range(1, len(parts)):
        folder = os.sep + os.sep.join(parts[:i])
        if not os.stat(folder).st_mode & stat.S_IXOTH:
            return folder
    raise ValueError(f"{path} is reachable")


def _expose_args(paths) -> list[str]:
    """bwrap arguments (run as root) showing `paths` below closed folders to other users."""
    args, covered = [], set()
    for path in paths:
        if _traversable(path):
            continue
        top = _closed_ancestor(path)
        if top not in covered:
            covered.add(top)
            args += ["--perms", "0755", "--tmpfs", top]
        folder = top
        for part in os.path.relpath(os.path.dirname(path), top).split(os.sep):
            if part in ("", "."):
                continue
            folder = os.path.join(folder, part)
            args += ["--perms", "0755", "--dir", folder]
        args += ["--ro-bind", path, path]
    return args


def _system_args() -> list[str]:
    """The system's programs and libraries, read-only; /bin, /lib ... as the host has them."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for extra in ("/etc/ld.so.cache", "/etc/alternatives", "/sys/devices/system/cpu"):
        args += ["--ro-bind-try", extra, extra]
    return args


_warned_unreadable: set = set()


def _warn_unreadable(paths) -> None:
    """Say once per folder when the worker's own user cannot read it (root's workers run as
    another user; a 0700 folder or a venv made under umask 077 would fail every import)."""
    for path in paths:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            continue
        needed = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)
        if mode & needed != needed and path not in _warned_unreadable:
            _warned_unreadable.add(path)
            print(f"warning: {path} is not readable by other users, so the sandboxed workers "
                  f"(an unprivileged user) cannot read it; run: chmod -R o+rX "
                  f"{shlex.quote(path)}", file=sys.stderr)


def _unused_uid() -> int:
    """A user id with no account and no process: the worker is alone with it (root only)."""
    base = int(os.environ.get("TINYTORCH_WORKER_UID_BASE", "1900000000"))
    busy = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                busy.add(os.stat(f"/proc/{entry}").st_uid)
            except OSError:
                pass
    for step in range(1000):
        uid = base + (os.getpid() * 1009 + next(_uid_sequence) * 7 + step) % 100_000_000
        try:
            pwd.getpwuid(uid)
        except KeyError:
            if uid not in busy:
                return uid
    raise RuntimeError("no unused user id found for a competition worker; "
                       "set TINYTORCH_WORKER_UID_BASE to a free range")


# ------------------------------------------------------------------ /proc

def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()    # the name may contain spaces and ")"


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return found


def _tree(root: int) -> list[int]:
    """`root` and its live descendants."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid not in found and os.path.exists(f"/proc/{pid}"):
            found.append(pid)
            todo += _children(pid)
    return found


def _thread_states(pid: int) -> list[str]:
    states = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return states
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                text = f.read()
        except OSError:
            continue
        states.append(text[text.rindex(")") + 2])
    return states


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _tmpfs_used(path: str, size: int) -> int:
    """Bytes used on the tmpfs of `size` bytes at `path`; 0 if another file system is there
    (a sandbox still being set up shows the host's folders for a moment)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    if abs(st.f_blocks * st.f_frsize - size) > 1 << 20:
        return 0
    return (st.f_blocks - st.f_bfree) * st.f_frsize


# ------------------------------------------------------------------ the sandbox

class Sandbox:
    """One worker's confinement: `spawn` it, `check` it while it works, `freeze`/`thaw`
    it around requests, `close` it."""

    def __init__(self, limits: Limits = Limits(), *, own_paths=(), hidden_paths=(),
                 isolate: bool = True):
        self.limits, self.isolate = limits, isolate
        self.blas_guard = not limits.allow_blas
        self.own_paths, self.hidden_paths = tuple(own_paths), tuple(hidden_paths)
        self.uid = _unused_uid() if isolate and os.geteuid() == 0 else None
        self.control = tempfile.mkdtemp(prefix="tinytorch-sandbox-")
        os.chmod(self.control, 0o711)      # reachable by the worker's user, not listable
        _open.add(self)
        self.guard_fds: tuple[int, int] | None = None
        if self.blas_guard:
            fifo = os.path.join(self.control, "guard")
            os.mkfifo(fifo, 0o666)
            os.chmod(fifo, 0o666)
            # Our own writer keeps the FIFO from reading as end-of-file between reports.
            reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self.guard_fds = (reader, os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))
            with open(os.path.join(self.control, "ld.so.preload"), "w") as f:
                f.write(_guard_library() + "\n")
        self.scratch = None if isolate else tempfile.mkdtemp(prefix="tinytorch-worker-")
        self.group = cgroups.WorkerGroup.create(limits.memory_bytes, self._max_tasks()) \
            if sys.platform.startswith("linux") else None
        self.proc: subprocess.Popen | None = None
        self.root_pid: int | None = None      # the sandbox's PID 1 (or the worker, unsandboxed)
        self.violation: Violation | None = None
        self.frozen = False
        self._frozen_members: list[int] = []
        self._cpu_at_freeze = 0.0
        self._active_wall = 0.0
        self._active_since = None
        self._busy = 0
        self._last_check = 0.0
        self._cpu_seen = {}                   # pid -> CPU ticks, when there is no cgroup

    def _max_tasks(self) -> int:
        return self.limits.processes * (self.limits.threads + 8) + 16

    # .................................................................. spawn

    def environment(self, extra: dict | None = None) -> dict:
        """The worker's environment: a few of ours, pinned thread pools, a private temp."""
        env = {k: v for k, v in os.environ.items()
               if k in _PASSED_VARIABLES or k.startswith(_PASSED_PREFIXES)}
        scratch = "/tmp" if self.isolate else self.scratch
        if self.limits.threads:
            env.update(thread_env(self.limits.threads))
        env.update(HOME=scratch, TMPDIR=scratch, PYTHONDONTWRITEBYTECODE="1",
                   PYTHONNOUSERSITE="1", **(extra or {}))
        if not self.isolate and self.blas_guard:
            env["TINYTORCH_GUARD_DIR"] = self.control
            env["LD_PRELOAD"] = _guard_library()
        return env

    def _bwrap_args(self, info_fd: int) -> list[str]:
        hidden = [os.path.realpath(p) for p in self.hidden_paths if p]
        paths = _bindable([*runtime_paths(), *self.own_paths,
                           *os.environ.get("PYTHONPATH", "").split(os.pathsep)], hidden)
        size = str(self._tmpfs_size())
        args = ["bwrap", "--unshare-all", "--unshare-user", "--disable-userns",
                "--die-with-parent", "--new-session", "--cap-drop", "ALL",
                "--hostname", "tinytorch-worker", "--info-fd", str(info_fd), *_system_args(),
                "--proc", "/proc", "--dev", "/dev",
                "--size", size, "--perms", "1777", "--tmpfs", "/tmp",
                "--size", size, "--perms", "1777", "--tmpfs", "/dev/shm"]
        for path in paths:    # after the tmpfs: a path below /tmp stays visible
            args += ["--ro-bind", path, path]
        for path in hidden:   # inside a bound folder: shown as an empty folder
            if any(_inside(path, p) and path != p for p in paths):
                args += ["--perms", "0755", "--tmpfs", path]
        if self.blas_guard:
            args += ["--ro-bind", self.control, GUARD_DIR,
                     "--ro-bind", os.path.join(self.control, "ld.so.preload"), "/etc/ld.so.preload"]
        args += ["--chdir", "/tmp", "--"]
        if self.uid is not None:      # root: show closed folders to the worker's user, drop root
            _warn_unreadable(paths)
            exposed = _expose_args([*paths, self.control])
            prefix = ["bwrap", "--dev-bind", "/", "/", *exposed, "--die-with-parent", "--"] \
                if exposed else []
            return [*prefix, "setpriv", f"--reuid={self.uid}", f"--regid={self.uid}",
                    "--clear-groups", "--inh-caps=-all", "--", *args]
        return args

    def _launcher(self) -> list[str]:
        """Joins the cgroups and sets the RLIMITs, then execs the rest (no preexec_fn:
        the parent has threads, and forking a threaded Python to run Python is unsafe)."""
        launcher = []
        if self.group is not None:
            joins = " && ".join(f"echo $$ > {shlex.quote(p)}" for p in self.group.procs_files())
            launcher += ["/bin/sh", "-c", f'{joins} && exec "$@"', "sh"]
        prlimit = shutil.which("prlimit")
        if prlimit:
            launcher += [prlimit, f"--data={self.limits.memory_bytes}",
                         f"--fsize={self.limits.memory_bytes}", "--core=0"]
            if self.uid is not None:  # counts the tasks of the worker's own user id
                launcher.append(f"--nproc={self._max_tasks()}")
            launcher.append("--")
        return launcher

    def spawn(self, argv, env: dict | None = None, pass_fds=(), **popen_kwargs) -> subprocess.Popen:
        """Start `argv` confined, with `env` on top of `environment()`."""
        env = self.environment(env)
        info_r = info_w = None
        if self.isolate:
            info_r, info_w = os.pipe()
            os.set_inheritable(info_w, True)
            command = [*self._launcher(), *self._bwrap_args(info_w), *argv]
            pass_fds = (*pass_fds, info_w)
        else:
            command = [*self._launcher(), *argv]
            popen_kwargs.setdefault("cwd", self.scratch)
        try:
            self.proc = subprocess.Popen(command, env=env, pass_fds=pass_fds,
                                         start_new_session=True, close_fds=True, **popen_kwargs)
        finally:
            if info_w is not None:
                os.close(info_w)
        self._active_since = time.monotonic()
        if not self.isolate:
            self.root_pid = self.proc.pid
            return self.proc
        try:
            self.root_pid = self._read_child_pid(info_r)
        finally:
            os.close(info_r)
        return self.proc

    def _read_child_pid(self, fd: int, timeout: float = 60.0) -> int:
        """The sandbox's PID 1 as the host sees it, from bwrap's --info-fd."""
        data, deadline = b"", time.monotonic() + timeout
        while b"}" not in data:
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                data += chunk
            elif time.monotonic() > deadline:
                break
        try:
            return int(json.loads(data)["child-pid"])
        except (ValueError, KeyError, TypeError):
            self.kill()
            raise SandboxUnavailable("bubblewrap did not start the sandbox") from None

    def arm_blas_guard(self) -> None:
        """From now on every process of the worker dies on its first BLAS call."""
        if self.blas_guard:
            fd = os.open(os.path.join(self.control, "armed"), os.O_CREAT | os.O_WRONLY, 0o444)
            os.close(fd)

    def blas_reports(self) -> list[str]:
        """Symbols the guard reported since the last call (each line cut to 100 characters)."""
        if self.guard_fds is None:
            return []
        data = b""
        while len(data) < 1 << 16:
            try:
                chunk = os.read(self.guard_fds[0], 4096)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        return [line[:100] for line in data.decode("ascii", "replace").splitlines() if line]

    # .................................................................. watch

    def members(self) -> list[int]:
        """Every live process of the worker: the sandbox's PID 1 and its descendants."""
        return [] if self.root_pid is None else _tree(self.root_pid)

    def cpu_seconds(self) -> float:
        """CPU time the worker has used, dead processes included."""
        if self.group is not None:
            return self.group.cpu_seconds()
        for pid in self.members():
            fields = _stat_fields(pid)
            if fields and fields[0] != "Z":   # utime, stime, and that of children it reaped
                self._cpu_seen[pid] = max(self._cpu_seen.get(pid, 0),
                                          sum(int(v) for v in fields[11:15]))
        return sum(self._cpu_seen.values()) / _CLOCK_TICK

    def memory_bytes(self) -> int:
        """Resident memory of every process plus what its /tmp and /dev/shm hold."""
        if self.group is not None:
            return self.group.memory_bytes()
        resident = sum(_status_kb(pid, "VmRSS") for pid in self.members()) << 10
        return resident + self._tmpfs_bytes()

    def _tmpfs_bytes(self) -> int:
        if not self.isolate or self.root_pid is None:
            return 0
        root, size = f"/proc/{self.root_pid}/root", self._tmpfs_size()
        return _tmpfs_used(f"{root}/tmp", size) + _tmpfs_used(f"{root}/dev/shm", size)

    def _tmpfs_size(self) -> int:
        """Each private tmpfs holds twice the memory limit: the limit, which counts their
        use, fires first."""
        return 2 * self.limits.memory_bytes

    def active_seconds(self) -> float:
        """Wall time the worker has spent unfrozen."""
        running = time.monotonic() - self._active_since if self._active_since else 0.0
        return self._active_wall + running

    def check(self, interval: float = 0.02) -> Violation | None:
        """Sample the worker (at most every `interval` s); on a broken limit, kill it and say why.

        A thread hog shows up two ways: CPU time beyond threads x active wall
        time (exact, but a busy machine hides it), or more threads running at
        once than allowed, sampled BUSY_SAMPLES times in a row.
        """
        now = time.monotonic()
        if self.violation is not None or self.proc is None or now - self._last_check < interval:
            return self.violation
        self._last_check = now
        members = self.members()
        live = [pid for pid in members if (_stat_fields(pid) or ["Z"])[0] not in "ZX"]
        processes = len(live) - (1 if self.isolate else 0)      # bwrap's PID 1 is ours
        memory, cpu = self.memory_bytes(), self.cpu_seconds()
        running = sum(s == "R" for pid in live for s in _thread_states(pid))
        threads = self.limits.threads or os.cpu_count() or 1
        self._busy = self._busy + 1 if running > threads + 1 else 0
        allowed = threads * self.active_seconds() * CPU_SLACK + CPU_GRACE_S
        if processes > self.limits.processes:
            self.fail(Violation("too-many-processes", f"{processes} processes alive, "
                                                      f"{self.limits.processes} allowed"))
        elif memory > self.limits.memory_bytes:
            self.fail(Violation("memory", f"exceeded the memory limit: the worker held "
                                          f"{memory >> 20} MiB (its processes and its /tmp and "
                                          f"/dev/shm), the limit is {self.limits.memory_mb} MiB"))
        elif cpu > allowed:
            self.fail(Violation("thread-hog", f"{cpu:.1f} s of CPU in {self.active_seconds():.1f} s "
                                              f"with {threads} thread(s) allowed"))
        elif self._busy >= BUSY_SAMPLES:
            self.fail(Violation("thread-hog", f"{running} threads running at once, "
                                              f"{threads} allowed"))
        return self.violation

    def fail(self, violation: Violation) -> None:
        """Record the first reason the worker is failed, and kill everything it started."""
        if self.violation is None:
            self.violation = violation
        self.kill()

    # .................................................................. freezing

    def freeze(self) -> None:
        """Stop every process of the worker; returns once none of them can run."""
        if self.frozen or self.proc is None or self.proc.poll() is not None:
            return
        if self._active_since is not None:
            self._active_wall += time.monotonic() - self._active_since
            self._active_since = None
        if self.group is not None:
            stopped = self.group.freeze(FREEZE_TIMEOUT_S)
        else:
            stopped = self._stop_all()
        self.frozen = True
        self._cpu_at_freeze = self.cpu_seconds()
        if not stopped:
            self.fail(Violation("interference", f"kept running for {FREEZE_TIMEOUT_S:g} s after "
                                                f"it was told to stop"))

    def _stop_all(self) -> bool:
        """SIGSTOP every process of the namespace until all threads stand still."""
        deadline = time.monotonic() + FREEZE_TIMEOUT_S
        stopped: list[int] = []
        while time.monotonic() < deadline:
            members = self.members()
            for pid in members:
                try:
                    os.kill(pid, signal.SIGSTOP)
                except ProcessLookupError:
                    pass
            stopped = members
            if all(s in "TtZX" for pid in members for s in _thread_states(pid)) \
                    and self.members() == members:
                self._frozen_members = members
                return True
        self._frozen_members = stopped
        return False

    def thaw(self) -> None:
        """Let the worker run again; CPU time it gained while frozen is interference."""
        if not self.frozen:
            return
        gained = self.cpu_seconds() - self._cpu_at_freeze
        if self.group is not None:
            self.group.thaw()
        else:
            for pid in self._frozen_members:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        self.frozen = False
        self._active_since = time.monotonic()
        if gained > IDLE_CPU_TOLERANCE_S:
            self.fail(Violation("interference", f"worked while another backend was timed "
                                                f"({gained:.2f} s of CPU while frozen)"))

    # .................................................................. memory event

    def reset_peak_memory(self) -> int:
        """Start a new peak from now; returns the memory held now (the baseline)."""
        if self.group is not None:
            self.group.reset_peak_memory()
            return self.group.memory_bytes()
        for pid in self.members():
            try:
                with open(f"/proc/{pid}/clear_refs", "w") as f:
                    f.write("5")      # VmHWM := VmRSS
            except OSError:
                pass
        return self.memory_bytes()

    def peak_memory_bytes(self) -> int:
        """The highest memory since reset_peak_memory (without cgroups: per-process peaks of
        the processes alive now, plus the tmpfs usage now)."""
        if self.group is not None:
            return self.group.peak_memory_bytes()
        return (sum(_status_kb(pid, "VmHWM") for pid in self.members()) << 10) \
            + self._tmpfs_bytes()

    def killed_for_memory(self) -> bool:
        return self.group is not None and self.group.killed_for_memory()

    # .................................................................. clean up

    def _every_process(self) -> set[int]:
        """The worker's tree, and with cgroups whatever else sits in its groups."""
        return {*self.members(), *(self.group.pids() if self.group is not None else ())}

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL every process of the worker and reap what is ours to reap."""
        if self.proc is None:
            return
        if self.group is not None:
            self.group.thaw()             # a frozen v1 group's tasks die only once thawed
        deadline = time.monotonic() + timeout
        while True:
            # From the launcher down, taken before it dies: a PID 1 that never reported
            # itself (bubblewrap's start-up can hang) is found here, or in the cgroup.
            targets = set(self._every_process())
            if self.proc.poll() is None:
                targets.update(_tree(self.proc.pid))
            for pid in targets:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                self.proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
            if self.proc.returncode is not None and not [
                    pid for pid in self._every_process()
                    if (_stat_fields(pid) or ["Z"])[0] != "Z"]:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not end every process of worker {self.proc.pid} "
                                   f"within {timeout:g} s")

    def close(self) -> None:
        """End the worker for good: kill it, remove its groups and folders."""
        try:
            self.kill()
        finally:
            if self.group is not None:
                self.group.destroy()
            for fd in self.guard_fds or ():
                os.close(fd)
            self.guard_fds = None
            for folder in (self.control, self.scratch):
                if folder:
                    shutil.rmtree(folder, ignore_errors=True)
            _open.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclasses.dataclass
class Finished:
    """How a sandboxed command ended: exit status (-signal), output kept, whether it timed out."""
    returncode: int | None
    stdout: bytes
    stderr_tail: bytes
    timed_out: bool


def run_confined(argv, limits: Limits, *, timeout: float, own_paths=(), hidden_paths=(),
                 isolate: bool = True, max_stdout: int = 1 << 20) -> Finished:
    """Run `argv` in a sandbox and collect its output with caps: the first `max_stdout` bytes
    of stdout, the last 8 KiB of stderr; killed at `timeout` or when a limit breaks."""
    with Sandbox(limits, own_paths=own_paths, hidden_paths=hidden_paths, isolate=isolate) as box:
        proc = box.spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
        out, err = bytearray(), bytearray()
        streams = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
        deadline, timed_out = time.monotonic() + timeout, False
        while streams:
            if time.monotonic() > deadline:
                timed_out = True
                break
            if box.check() is not None:
                break
            ready, _, _ = select.select(list(streams), [], [], 0.05)
            for fd in ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    del streams[fd]
                    continue
                buffer = streams[fd]
                buffer += chunk
                if buffer is out:
                    del out[max_stdout:]
                else:
                    del err[:-8192]
        box.kill()
        code = proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        if isolate and code is not None and code > 128:      # bwrap: 128 + the child's signal
            code = -(code - 128)
        return Finished(code, bytes(out), bytes(err), timed_out)


def _guard_library() -> str:
    from .blasguard import library_path
    return str(library_path())


def _close_forgotten():
    """An interrupted parent still kills its workers and removes their folders."""
    for box in list(_open):
        try:
            box.close()
        except (OSError, RuntimeError):
            pass


atexit.register(_close_forgotten)
