"""Finds backends: entry points of group `tinytorch.backends`, plus runtime registrations.

The core registers `naive`, `numpy` and `optimized` through the same group as any
plugin, so there is one discovery path. Entry points are read once per process
(`importlib.metadata` has no cache and silently collapses duplicate names, so
clashes are detected here, per distribution). Nothing is imported until a
backend is asked for; a plugin that fails to import, points at a missing
attribute, is not a ComputeBackend, or claims a name another distribution
claims, is recorded with its error and never breaks the others.
"""
from __future__ import annotations

import dataclasses
import importlib.machinery
import importlib.util
import inspect
import os
import re
from importlib.metadata import entry_points

from .base import OPERATIONS, ComputeBackend, implemented_operations  # noqa: F401 (OPERATIONS re-exported)
from .staleness import stale_rebuild_command, stale_rebuild_command_at, top_package_dir

GROUP = "tinytorch.backends"
CORE_DISTRIBUTION = "tinytorch"
CORE_NAMES = ("naive", "numpy", "optimized")
#: What a backend may be called: a name shows on the board, in file names and on
#: command lines, so plain lowercase ASCII (no look-alikes, no markup, no "module:Class").
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,63}")


def name_problem(name) -> str | None:
    """Why `name` cannot name a backend, or None if it can."""
    if isinstance(name, str) and NAME_PATTERN.fullmatch(name):
        return None
    return (f"invalid backend name {quoted_name(name)}: a name is 1 to 64 lowercase ASCII "
            f"letters, digits, '_' or '-', starting with a letter")


def quoted_name(name) -> str:
    """`name` quoted for a message: 'alice', or the escaped form of a name that is not one."""
    return repr(name) if isinstance(name, str) and NAME_PATTERN.fullmatch(name) else display_name(name)


def display_name(name) -> str:
    """`name` as it may be shown anywhere: itself if valid, else an escaped, visibly
    different form (a Cyrillic look-alike of `optimized` prints as '\u043eptimized')."""
    if isinstance(name, str) and NAME_PATTERN.fullmatch(name):
        return name
    text = ascii(str(name))
    return text if len(text) <= 80 else text[:77] + "...'"


@dataclasses.dataclass
class BackendRecord:
    """One (name, distribution) pair as `tinytorch backends --json` prints it."""
    name: str
    distribution: str | None
    version: str | None
    entry_point: str | None
    status: str                   # "ok", "error" or "not loaded"
    error: str | None
    current: bool
    origin: str                   # "core", "plugin" or "runtime"
    location: str | None          # where its code lives on disk
    operations: list[str] | None  # contract operations it implements itself
    openmp: bool | None           # read from the compiled module; None where meaningless
    threads: int | None
    stale: str | None             # None, or the command that rebuilds a stale extension

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass
class _Entry:
    """A backend we know how to load, and what we learnt when we tried."""
    name: str
    distribution: str | None
    version: str | None
    entry_point: str | None
    origin: str
    load: object                  # () -> factory (class or callable)
    error: str | None = None
    factory: object = None


_entries: list[_Entry] | None = None


def _discover() -> list[_Entry]:
    """Read the entry points once and mark every clash as an error."""
    global _entries
    if _entries is not None:
        return _entries
    found = []
    for ep in entry_points(group=GROUP):
        dist = ep.dist.name if ep.dist is not None else None
        version = ep.dist.version if ep.dist is not None else None
        origin = "core" if dist == CORE_DISTRIBUTION and ep.name in CORE_NAMES else "plugin"
        found.append(_Entry(ep.name, dist, version, ep.value, origin, ep.load))
    by_name = {}
    for entry in found:
        by_name.setdefault(entry.name, []).append(entry)
    for name, claims in by_name.items():
        dists = sorted({str(e.distribution) for e in claims})
        for entry in claims:
            if name_problem(name):
                entry.error = f"{name_problem(name)}; rename the entry point (never run)"
            elif entry.origin != "core" and name in CORE_NAMES:
                entry.error = (f"name {name!r} belongs to a core backend; distribution "
                               f"{entry.distribution!r} may not replace it (rename its entry point)")
            elif len(dists) > 1 and not any(e.origin == "core" for e in claims):
                entry.error = (f"name {name!r} is claimed by several distributions "
                               f"({', '.join(dists)}); uninstall or rename all but one")
    _entries = found
    return _entries


def refresh():
    """Forget what was discovered (after installing a plugin in this process)."""
    global _entries
    runtime = [e for e in (_entries or []) if e.origin == "runtime"]
    _entries = None
    _discover().extend(runtime)


def names() -> list[str]:
    return sorted({e.name for e in _discover()})


def _entry_for(name: str) -> _Entry:
    claims = [e for e in _discover() if e.name == name]
    if not claims:
        raise ValueError(f"unknown backend {quoted_name(name)}; registered backends: "
                         f"{', '.join(map(display_name, names())) or '(none)'}. A freshly installed plugin "
                         f"needs `pip install -e <its folder>` to register its entry point.")
    for entry in claims:                 # a core backend always wins its name
        if entry.origin == "core":
            return entry
    return claims[0]


def winner(name: str) -> str | None:
    """Distribution whose backend `set_backend(name)` loads (None if unknown or runtime)."""
    try:
        return _entry_for(name).distribution
    except ValueError:
        return None


def _factory(entry: _Entry):
    """Import the entry's target once; remember the error instead of raising twice."""
    if entry.factory is None and entry.error is None:
        try:
            target = entry.load()
        except BaseException as exc:  # noqa: BLE001 - a plugin may raise anything, even SystemExit
            entry.error = f"import failed: {type(exc).__name__}: {exc}"
        else:
            if inspect.isclass(target) and not issubclass(target, ComputeBackend):
                entry.error = (f"{entry.entry_point} is {target.__module__}.{target.__qualname__}, "
                               f"which is not a tinytorch.backends.ComputeBackend subclass")
            elif not callable(target):
                entry.error = f"{entry.entry_point} is not a class or factory"
            else:
                entry.factory = target
    return entry.factory


def load_backend(name: str) -> ComputeBackend:
    """A new instance of the backend registered as `name`, or a clear error."""
    entry = _entry_for(name)
    factory = _factory(entry)
    if factory is None:
        raise RuntimeError(f"backend {name!r} from {entry.distribution or 'this process'} "
                           f"cannot be used: {entry.error}")
    try:
        backend = factory()
    except Exception as exc:
        raise RuntimeError(f"backend {name!r}: creating it failed: "
                           f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(backend, ComputeBackend):
        raise RuntimeError(f"backend {name!r}: its factory returned {type(backend).__name__}, "
                           f"not a tinytorch.backends.ComputeBackend")
    if backend.name is None:
        backend.name = name
    return backend


def register_backend(name: str, factory) -> None:
    """Register a backend for this process only (a notebook's try-before-packaging path).

    `factory` is a ComputeBackend subclass or any callable returning an instance.
    Core names and names an installed distribution registers cannot be taken.
    """
    if name_problem(name):
        raise ValueError(name_problem(name))
    if not callable(factory):
        raise TypeError(f"register_backend({name!r}, ...): factory must be a ComputeBackend "
                        f"subclass or a callable returning one, got {type(factory).__name__}")
    if inspect.isclass(factory) and not issubclass(factory, ComputeBackend):
        raise TypeError(f"register_backend({name!r}, ...): {factory.__qualname__} is not a "
                        f"tinytorch.backends.ComputeBackend subclass")
    for entry in _discover():
        if entry.name == name and entry.origin != "runtime":
            raise ValueError(f"backend name {name!r} is already registered by "
                             f"{entry.distribution!r}; choose another name")
    _discover()[:] = [e for e in _discover() if e.name != name]
    _discover().append(_Entry(name, None, None, None, "runtime", lambda: factory,
                              factory=factory))


def _location(entry: _Entry) -> str | None:
    """Folder holding the backend's code, found without importing the plugin itself."""
    target = entry.factory
    if target is not None:
        try:
            return os.path.dirname(os.path.abspath(inspect.getfile(target)))
        except (TypeError, OSError):
            return None
    if entry.entry_point:
        # find_spec("pkg.mod") would import (run) pkg: find each part on the path instead.
        parts = entry.entry_point.split(":")[0].strip().split(".")
        try:
            spec = importlib.util.find_spec(parts[0])     # a top-level name is never imported
            for i in range(1, len(parts)):
                if spec is None or not spec.submodule_search_locations:
                    return None
                spec = importlib.machinery.PathFinder.find_spec(
                    ".".join(parts[:i + 1]), spec.submodule_search_locations)
        except Exception:  # noqa: BLE001 - a broken plugin must not break listing
            return None
        if spec is not None and spec.origin:
            return os.path.dirname(os.path.abspath(spec.origin))
    return None


def _stale(entry: _Entry, location: str | None) -> str | None:
    """The rebuild command if the backend's build is stale, from file times alone."""
    if entry.entry_point:
        module = entry.entry_point.partition(":")[0].strip()
        return stale_rebuild_command_at(top_package_dir(location, module))
    if entry.factory is not None:
        return stale_rebuild_command(inspect.getmodule(entry.factory))
    return None


def _record(entry: _Entry, current: str | None, load: bool) -> BackendRecord:
    if load:
        _factory(entry)
    operations = openmp = threads = None
    status = "error" if entry.error else ("ok" if entry.factory is not None else "not loaded")
    error = entry.error
    location = _location(entry)
    if entry.factory is not None and inspect.isclass(entry.factory):
        operations = implemented_operations(entry.factory)
        if load:
            try:
                instance = entry.factory()
                openmp = getattr(instance, "openmp", None)
                threads = getattr(instance, "threads", None)
            except Exception as exc:  # noqa: BLE001 - reported, never raised
                status, error = "error", str(exc)
    return BackendRecord(entry.name, entry.distribution, entry.version, entry.entry_point,
                         status, error, entry.name == current and entry is _entry_for(entry.name),
                         entry.origin, location, operations, openmp, threads, _stale(entry, location))


def list_backends(load: bool = True) -> list[BackendRecord]:
    """One record per (name, distribution), sorted by name; loads each unless load=False."""
    from ..config import current_backend_name
    current = current_backend_name()
    return [_record(e, current, load)
            for e in sorted(_discover(), key=lambda e: (e.name, str(e.distribution)))]


def probe(name: str, distribution: str | None) -> BackendRecord:
    """Load one backend and describe it (run by the CLI in a subprocess with a time limit)."""
    for entry in _discover():
        if entry.name == name and entry.distribution == distribution:
            return _record(entry, None, load=True)
    raise ValueError(f"no backend {name!r} from distribution {distribution!r}")
