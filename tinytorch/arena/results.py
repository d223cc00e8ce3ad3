"""Run files: leaderboard/results/<run_id>.json, schema-versioned, written atomically.

A run file is rewritten (temp file, fsync, rename) after each backend
finishes, so an interrupted run leaves the last complete state and never a
half-written file; a new run never overwrites an earlier one (`--resume
RUN_ID` continues the same file). merging.py combines several files for one board.
"""
from __future__ import annotations

import argparse
import datetime
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
    _check_fields(path, "", doc, _DOCUMENT)
    _check_fields(path, "machine", doc["machine"], _MACHINE)
    for i, entry in enumerate(doc["machine"].get("blas") or ()):
        _check_fields(path, f"machine.blas[{i}]", entry, _BLAS)
    for i, event in enumerate(doc["events"]):
        _check_fields(path, f"events[{i}]", event, _EVENT)
    for name, row in doc["backends"].items():
        _check_fields(path, f"backends[{name!r}]", row, _ROW)
        for i, case in enumerate(row.get("cases", ())):
            _check_fields(path, f"backends[{name!r}].cases[{i}]", case, _CASE)
    return doc


# ------------------------------------------------------------------ what load() checks
# The keys merging, scoring and the board read, with the JSON types they rely on:
# a hand-edited or truncated-then-patched file is refused here, naming file and key,
# instead of failing deep inside the board.

def _finite(value) -> bool:
    """A finite JSON number (true and false are not numbers here)."""
    try:
        return not isinstance(value, bool) and isinstance(value, (int, float)) \
            and math.isfinite(value)
    except OverflowError:             # an integer too large for a float
        return False


def _shard(value) -> bool:
    match = isinstance(value, str) and re.fullmatch(r"([0-9]{1,5})/([0-9]{1,5})", value)
    return bool(match) and 1 <= int(match[1]) <= int(match[2])


_TEXT = (lambda v: isinstance(v, str), "a string")
_TEXT_OR_NULL = (lambda v: v is None or isinstance(v, str), "a string or null")
_OBJECT = (lambda v: isinstance(v, dict), "an object")
_OBJECTS = (lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v),
            "a list of objects")
_OBJECTS_OR_NULL = (lambda v: v is None or _OBJECTS[0](v), "a list of objects or null")
_TEXTS_OR_NULL = (lambda v: v is None or isinstance(v, list) and all(isinstance(x, str) for x in v),
                  "a list of strings or null")
_COUNT_OR_NULL = (lambda v: v is None or isinstance(v, int) and not isinstance(v, bool),
                  "an integer or null")
_NUMBER = (_finite, "a finite number")
_NUMBER_OR_NULL = (lambda v: v is None or _finite(v), "a finite number or null")
_SHARD_OR_NULL = (lambda v: v is None or _shard(v), "null or 'K/N' with 1 <= K <= N")
#: a median time in ms outside this range is no measurement (and would overflow a score).
_PLAUSIBLE_MS = (1e-9, 1e12)
_TIMING_OR_NULL = (lambda v: v is None or isinstance(v, dict) and _finite(v.get("median"))
                   and _PLAUSIBLE_MS[0] <= v["median"] <= _PLAUSIBLE_MS[1],
                   f"null or an object whose 'median' is a time from {_PLAUSIBLE_MS[0]:g} to "
                   f"{_PLAUSIBLE_MS[1]:g} ms")

#: key -> (required, (check, what it must be)), one table per level of a run document.
_DOCUMENT = {"run_id": (True, _TEXT), "machine": (True, _OBJECT), "events": (True, _OBJECTS),
             "backends": (True, _OBJECT), "rules": (False, _OBJECT), "shard": (False, _SHARD_OR_NULL),
             "field": (False, _TEXTS_OR_NULL), "shard_backends": (False, _TEXTS_OR_NULL)}
_MACHINE = {"cpu": (False, _TEXT_OR_NULL), "cores": (False, _COUNT_OR_NULL),
            "date": (False, _TEXT_OR_NULL), "blas": (False, _OBJECTS_OR_NULL)}
_BLAS = {key: (False, _TEXT_OR_NULL) for key in ("internal_api", "version", "architecture")}
_EVENT = {"name": (True, _TEXT), "kind": (True, _TEXT), "workload": (False, _TEXT_OR_NULL)}
_ROW = {"name": (True, _TEXT), "cases": (False, _OBJECTS), "finished": (False, _TEXT_OR_NULL)}
_CASE = {"event": (True, _TEXT), "label": (True, _TEXT), "dtype": (True, _TEXT),
         "status": (True, _TEXT), "gflops": (False, _NUMBER),
         "memory_mb": (False, _NUMBER_OR_NULL), "time_ms": (False, _TIMING_OR_NULL),
         "reference_time_ms": (False, _TIMING_OR_NULL)}


_JSON_TYPES = {dict: "an object", list: "a list", str: "a string", bool: "true/false",
               type(None): "null"}


def _json_type(value) -> str:
    """What a JSON value is, for a message; a list says what it holds."""
    name = _JSON_TYPES.get(type(value), "a number")
    if isinstance(value, list) and value:
        name += " holding " + " and ".join(sorted({_JSON_TYPES.get(type(x), "a number")
                                                   for x in value}))
    return name


def _check_fields(path, where, mapping, fields) -> None:
    """ResultsError naming `path` and the first key of `mapping` that `fields` refuses."""
    if not isinstance(mapping, dict):
        raise ResultsError(f"{path}: {where} must be an object, not {_json_type(mapping)}")
    for key, (required, (check, wanted)) in fields.items():
        name = f"{where}.{key}" if where else key
        if key not in mapping:
            if required:
                raise ResultsError(f"{path}: missing key {name!r}")
        elif not check(mapping[key]):
            raise ResultsError(f"{path}: {name} must be {wanted}, not "
                               f"{_json_type(mapping[key])}")
