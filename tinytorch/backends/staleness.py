"""Detects a stale build: a `.pyx`, `.pxd` or `.h` edited after its extension was compiled.

Editable installs (`pip install -e`) neither rebuild a changed `.pyx` nor
refresh entry points; students hit this daily, so every tool that loads a
backend says so, with the exact command that fixes it.
"""
from __future__ import annotations

import glob
import os
import shlex


def _project_root(folder):
    """The nearest folder at or above `folder` holding pyproject.toml or setup.py."""
    while True:
        if any(os.path.exists(os.path.join(folder, f)) for f in ("pyproject.toml", "setup.py")):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


#: What a compiled extension is built from: its own `.pyx`, and the `.pxd`
#: declarations and C headers it may include (shared by the package's extensions).
SHARED_SOURCES = (".pxd", ".h")


def stale_sources(package_dir: str) -> list[str]:
    """Sources under `package_dir` edited after the extensions built from them.

    A `.pyx` is compared with its own extension; a `.pxd` or `.h` with the
    oldest extension in the package, since any of them may include it.
    """
    paths = glob.glob(os.path.join(package_dir, "**", "*"), recursive=True)
    built = [p for p in paths if p.endswith((".so", ".pyd"))]
    if not built:
        return []
    oldest = min(os.path.getmtime(p) for p in built)
    stale = [p for p in paths if p.endswith(SHARED_SOURCES) and os.path.getmtime(p) > oldest]
    for pyx in (p for p in paths if p.endswith(".pyx")):
        own = [p for p in glob.glob(pyx[:-len(".pyx")] + ".*") if p.endswith((".so", ".pyd"))]
        if own and os.path.getmtime(pyx) > max(os.path.getmtime(p) for p in own):
            stale.append(pyx)
    return sorted(stale)


def stale_rebuild_command(module) -> str | None:
    """The command that rebuilds `module`'s package if a `.pyx` beside it is stale.

    Only source checkouts (a pyproject.toml or setup.py above the code) can be
    stale; an installed wheel ships sources and binaries together.
    """
    path = getattr(module, "__file__", None)
    if not path or {"site-packages", "dist-packages"} & set(path.split(os.sep)):
        return None
    package = getattr(module, "__package__", None) or ""
    package_dir = os.path.dirname(os.path.abspath(path))
    top = package_dir
    for _ in package.split(".")[1:]:
        top = os.path.dirname(top)
    root = _project_root(os.path.dirname(top)) if package else _project_root(package_dir)
    if root is None or not stale_sources(top if package else package_dir):
        return None
    return f"pip install -e {shlex.quote(root)}"
