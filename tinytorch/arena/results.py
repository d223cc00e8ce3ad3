"""Run files: leaderboard/results/<run_id>.json, schema-versioned, written atomically.

A run file is rewritten (temp file, fsync, rename) after each backend
finishes, so an interrupted run leaves the last complete state and never a
half-written file; a new run never overwrites an earlier one (`--resume
RUN_ID` continues the same file). merging.py combines several files for one board.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import re
import secrets
import subprocess
import sys

SCHEMA_VERSION = 1


class ResultsError(ValueError):
    """A results file that cannot be used; the message names the file."""


def new_run_id() -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def run_id_argument(text: str) -> str:
    """`--run-id` for argparse: a run id names a file, so letters, digits, `.`, `_`, `-` only."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a run id names the results file, so it may hold only letters, digits, "
            f"'.', '_' and '-' and must start with a letter or digit")
    return text


def run_path(results_dir, run_id) -> str:
    return os.path.join(os.fspath(results_dir), f"{run_id}.json")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                              text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def machine_description() -> dict:
    """What the numbers were measured on."""
    import numpy as np
    from threadpoolctl import threadpool_info

    from .. import __version__
    return {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
        "python": sys.version.split()[0], "numpy": np.__version__,
        "blas": [{k: info.get(k) for k in ("internal_api", "version", "num_threads",
                                           "threading_layer", "architecture")}
                 for info in threadpool_info()],
        "tinytorch": __version__, "git_commit": _git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def files_hash(location: str | None) -> str | None:
    """sha256 over the code files under a backend's folder (what produced its row)."""
    if not location or not os.path.isdir(location):
        return None
    digest = hashlib.sha256()
    suffixes = (".py", ".pyx", ".pxd", ".h", ".c", ".so", ".pyd", ".toml")
    for root, dirs, files in os.walk(location):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(suffixes):
                path = os.path.join(root, name)
                digest.update(os.path.relpath(path, location).encode() + b"\0")
                with open(path, "rb") as f:
                    digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()


def _clean(value):
    """JSON has no NaN or Infinity: write null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _publish(path, doc, place) -> None:
    """Write `doc` as JSON to a temporary file, fsync it, then `place(temp, path)`."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temp, "w") as f:
            json.dump(_clean(doc), f, indent=1, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        place(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def write_atomic(path, doc) -> None:
    """Write `doc` as JSON to `path` through a temporary file and a rename."""
    _publish(path, doc, os.replace)


def create(path, doc) -> None:
    """Write a new run file, complete from its first moment; never overwrite an earlier run."""
    try:
        _publish(path, doc, os.link)      # a hard link fails if `path` exists: no race, no empty file
    except FileExistsError:
        raise ResultsError(f"{path} already exists; a run never overwrites an earlier run "
                           f"(use --resume to continue it)") from None


def load(path) -> dict:
    """A run document, or a ResultsError naming the file and what is wrong."""
    path = os.fspath(path)
    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise ResultsError(f"results file {path} does not exist") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ResultsError(f"results file {path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or "schema_version" not in doc:
        raise ResultsError(f"{path} is not a tinytorch results file (no schema_version)")
    if doc["schema_version"] != SCHEMA_VERSION:
        raise ResultsError(f"{path} has schema version {doc['schema_version']}; this "
                           f"tinytorch reads version {SCHEMA_VERSION}")
    for key in ("run_id", "machine", "events", "backends"):
        if key not in doc:
            raise ResultsError(f"{path}: missing key {key!r}")
    return doc
