"""Detects a stale build: a `.pyx`, `.pxd` or `.h` edited after its extension was compiled.

Editable installs (`pip install -e`) neither rebuild a changed `.pyx` nor
refresh entry points; students hit this daily, so every tool that loads a
backend says so, with the exact command that fixes it. Only file times are
read (never a submission's code), with a bound on the files looked at, so
the trusted parent can ask about any submission's folder.
"""
from __future__ import annotations

import os
import shlex

#: What a compiled extension is built from: its own `.pyx`, and the `.pxd`
#: declarations and C headers it may include (shared by the extensions beside them).
SHARED_SOURCES = (".pxd", ".h")
EXTENSIONS = (".so", ".pyd")
MAX_FILES = 5000


def _project_root(folder):
    """The nearest folder at or above `folder` holding pyproject.toml or setup.py."""
    while True:
        if any(os.path.isfile(os.path.join(folder, f)) for f in ("pyproject.toml", "setup.py")):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def _mtimes(package_dir: str) -> dict[str, float]:
    """path -> modification time of the files under `package_dir` (symlinks not followed)."""
    found = {}
    for root, dirs, files in os.walk(package_dir, followlinks=False):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if len(found) >= MAX_FILES:
                return found
            path = os.path.join(root, name)
            try:
                found[path] = os.lstat(path).st_mtime
            except OSError:
                pass
    return found


def stale_sources(package_dir: str) -> list[str]:
    """Sources under `package_dir` edited after the extensions built from them.

    A `.pyx` is compared with its own extension; a `.pxd` or `.h` with the
    oldest extension in its own folder (any of those may include it), or in
    the package if its folder has none (an include/ folder).
    """
    times = _mtimes(package_dir)
    built = {p: t for p, t in times.items() if p.endswith(EXTENSIONS)}
    if not built:
        return []
    oldest_in = {}
    for path, mtime in built.items():
        folder = os.path.dirname(path)
        oldest_in[folder] = min(mtime, oldest_in.get(folder, mtime))
    oldest = min(built.values())
    stale = [p for p, t in times.items() if p.endswith(SHARED_SOURCES)
             and t > oldest_in.get(os.path.dirname(p), oldest)]
    for pyx, mtime in times.items():
        if pyx.endswith(".pyx"):
            stem = pyx[:-len(".pyx")] + "."
            own = [t for p, t in built.items() if p.startswith(stem)]
            if own and mtime > max(own):
                stale.append(pyx)
    return sorted(stale)


def stale_rebuild_command_at(package_dir: str | None) -> str | None:
    """The command that rebuilds the package whose top folder is `package_dir`, if stale.

    Only source checkouts (a pyproject.toml or setup.py above the code) can be
    stale; an installed wheel ships sources and binaries together.
    """
    if not package_dir or {"site-packages", "dist-packages"} & set(package_dir.split(os.sep)):
        return None
    root = _project_root(os.path.dirname(os.path.abspath(package_dir)))
    if root is None or not stale_sources(package_dir):
        return None
    return f"pip install -e {shlex.quote(root)}"


def top_package_dir(location: str | None, module_name: str) -> str | None:
    """The folder of `module_name`'s top-level package, from the folder its module lives in."""
    if not location:
        return None
    parts = module_name.split(".")
    is_package = (os.path.basename(location) == parts[-1]
                  and os.path.isfile(os.path.join(location, "__init__.py")))
    top = location
    for _ in range(len(parts) - (1 if is_package else 2) if len(parts) > 1 else 0):
        top = os.path.dirname(top)
    return top


def stale_rebuild_command(module) -> str | None:
    """The command that rebuilds an imported `module`'s package, if a source beside it is stale."""
    path = getattr(module, "__file__", None)
    if not path:
        return None
    return stale_rebuild_command_at(top_package_dir(os.path.dirname(os.path.abspath(path)),
                                                    module.__name__))


def stale_warning(name: str, command: str) -> str:
    """The one wording every command uses for a stale build."""
    return (f"warning: backend {name} is a stale build: a .pyx source is newer than its "
            f"compiled extension, so its OLD kernels run; rebuild with: {command}")
