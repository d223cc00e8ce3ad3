"""A worker's control groups, where this machine lets us make them (cgroup v1, usually as root).

A cgroup sees what /proc polling misses: pages a worker puts in its /tmp or
/dev/shm (tmpfs pages are charged to the group), processes that came and went
between two samples, and CPU time of processes already dead. So where the
kernel lets this process create child groups, each worker gets one group per
controller:

- memory:  a hard limit (the kernel kills inside the group when it is passed)
           and the exact peak, for the memory event;
- freezer: the whole group stopped at once, forks included, while another
           backend is timed;
- cpuacct: CPU time of every process the group ever held;
- pids:    a hard cap on processes and threads.

`WorkerGroup.create` returns None when any controller is missing or not
writable (an ordinary user on most machines, a cgroup-v2-only host): the
sandbox then falls back to RLIMITs, /proc polling and SIGSTOP. Groups a
competition leaves behind when it is killed outright are removed by the next
one (`sweep_abandoned`).
"""
from __future__ import annotations

import itertools
import os
import re
import signal
import time

CONTROLLERS = ("memory", "freezer", "cpuacct", "pids")
_names = itertools.count()


def _mount_points() -> dict[str, str]:
    """controller -> where its v1 hierarchy is mounted."""
    found = {}
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                dash = fields.index("-")
                if fields[dash + 1] != "cgroup":
                    continue
                options = set(fields[dash + 3].split(","))
                for controller in CONTROLLERS:
                    if controller in options:
                        found.setdefault(controller, fields[4])
    except (OSError, ValueError):
        return {}
    return found


def _own_paths() -> dict[str, str]:
    """controller -> this process's group in its hierarchy."""
    paths = {}
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for controller in controllers.split(","):
                    paths[controller] = path
    except (OSError, ValueError):
        return {}
    return paths


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def parent_dirs() -> dict[str, str]:
    """controller -> the folder our workers' groups go in (this process's own group);
    empty unless every controller is mounted (v1)."""
    mounts, own = _mount_points(), _own_paths()
    if not all(c in mounts and c in own for c in CONTROLLERS):
        return {}
    return {c: os.path.join(mounts[c], own[c].lstrip("/")) for c in CONTROLLERS}


_GROUP_NAME = re.compile(r"tinytorch-worker-(\d+)-\d+")


def sweep_abandoned(parents: dict[str, str]) -> None:
    """Remove groups whose competition is gone (killed with SIGKILL, say), ending what is
    left in them: bubblewrap's start-up race can leave a process behind."""
    for controller, parent in parents.items():
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            match = _GROUP_NAME.fullmatch(name)
            if not match or os.path.exists(f"/proc/{match.group(1)}"):
                continue
            group = WorkerGroup({controller: os.path.join(parent, name)})
            for pid in group.pids(controller):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            group.destroy()


class WorkerGroup:
    """One group per controller for one worker; its launcher joins them before exec."""

    def __init__(self, dirs: dict[str, str]):
        self.dirs = dirs

    @classmethod
    def create(cls, memory_bytes: int, max_tasks: int) -> "WorkerGroup | None":
        """New groups under this process's own, with the limits set; None if not allowed."""
        parents = parent_dirs()
        if not parents:
            return None
        sweep_abandoned(parents)
        name = f"tinytorch-worker-{os.getpid()}-{next(_names)}"
        dirs = {}
        group = cls(dirs)
        try:
            for controller, parent in parents.items():
                path = os.path.join(parent, name)
                os.mkdir(path)
                dirs[controller] = path
            _write(group._file("memory", "memory.limit_in_bytes"), str(memory_bytes))
            _write(group._file("pids", "pids.max"), str(max_tasks))
        except OSError:
            group.destroy()
            return None
        return group

    def _file(self, controller: str, name: str) -> str:
        return os.path.join(self.dirs[controller], name)

    def procs_files(self) -> list[str]:
        """The files a process writes its pid to, to join every group (the launcher does)."""
        return [self._file(controller, "cgroup.procs") for controller in CONTROLLERS]

    # ................................................................ freezer

    def freeze(self, timeout: float = 5.0) -> bool:
        """Stop every task of the group; True once the kernel says all are frozen."""
        state = self._file("freezer", "freezer.state")
        _write(state, "FROZEN")
        deadline = time.monotonic() + timeout
        while _read(state).strip() != "FROZEN":
            if time.monotonic() > deadline:
                return False
            time.sleep(0.0002)
        return True

    def thaw(self) -> None:
        _write(self._file("freezer", "freezer.state"), "THAWED")

    # ................................................................ accounting

    def cpu_seconds(self) -> float:
        return int(_read(self._file("cpuacct", "cpuacct.usage"))) / 1e9

    def memory_bytes(self) -> int:
        return int(_read(self._file("memory", "memory.usage_in_bytes")))

    def peak_memory_bytes(self) -> int:
        return int(_read(self._file("memory", "memory.max_usage_in_bytes")))

    def reset_peak_memory(self) -> None:
        _write(self._file("memory", "memory.max_usage_in_bytes"), "0")

    def pids(self, controller: str = "pids") -> list[int]:
        """Every process in the group, wherever in the tree it sits."""
        try:
            return [int(pid) for pid in _read(self._file(controller, "cgroup.procs")).split()]
        except (OSError, KeyError):
            return []

    def tasks(self) -> int:
        return int(_read(self._file("pids", "pids.current")))

    def killed_for_memory(self) -> bool:
        """True if the kernel's OOM killer struck inside the group."""
        try:
            for line in _read(self._file("memory", "memory.oom_control")).splitlines():
                if line.startswith("oom_kill "):
                    return int(line.split()[1]) > 0
        except (OSError, ValueError):
            pass
        return int(_read(self._file("memory", "memory.failcnt"))) > 0

    def destroy(self) -> None:
        """Remove the groups (they must hold no process any more)."""
        if "freezer" in self.dirs:
            try:
                self.thaw()           # a frozen group's dead tasks are not released
            except OSError:
                pass
        for controller, path in list(self.dirs.items()):
            for _ in range(200):      # the last task may take a moment to leave
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.005)
            self.dirs.pop(controller, None)
