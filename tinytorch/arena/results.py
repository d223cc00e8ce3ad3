"""Run files: leaderboard/results/<run_id>.json, schema-versioned, written atomically.

A run file is rewritten (temp file, fsync, rename) after each backend
finishes, so an interrupted run leaves the last complete state and never a
half-written file; a new run never overwrites an earlier one (`--resume
RUN_ID` continues the same file). merging.py combines several files for one board.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import re
import secrets
import subprocess
import sys
from typing import Callable

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
    _check(path, "", doc, DOCUMENT)
    for name, row in doc["backends"].items():
        if row["name"] != name:
            raise ResultsError(f"{path}: backends[{name!r}].name is {row['name']!r}; a row's "
                               f"name must be its key")
    return doc


# ------------------------------------------------------------------ what load() checks
# The keys merging, scoring and the board read, with the JSON types they rely on:
# a hand-edited or truncated-then-patched file is refused here, naming file and key,
# instead of failing deep inside the board. The same tree is the published JSON Schema
# (results_schema.py), so the schema and these checks cannot drift apart.

@dataclasses.dataclass(frozen=True)
class Kind:
    """One kind of value in a run file: how load() checks it, and its JSON Schema.

    A leaf has `check`; an object has `fields` (key -> (required, Kind)); `each`
    makes it a list of such objects ("list") or an object of them by name ("map").
    """
    wanted: str                                  # what a message says it must be
    schema: dict                                 # the JSON Schema of the value itself
    check: Callable[[object], bool] = lambda value: True
    fields: dict | None = None
    each: str | None = None
    nullable: bool = False                       # JSON null is allowed too


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


def _or_null(kind: Kind) -> Kind:
    """`kind`, or JSON null."""
    return dataclasses.replace(kind, wanted=f"{kind.wanted} or null", nullable=True)


def _object(fields, wanted="an object") -> Kind:
    return Kind(wanted, {"type": "object"}, lambda v: isinstance(v, dict), fields)


def _objects(fields) -> Kind:
    """A list of objects, each checked against `fields`."""
    return Kind("a list of objects", {"type": "array", "items": {"type": "object"}},
                lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v),
                fields, "list")


#: a JSON number a float can hold: what "finite" means for a number parsed from JSON.
_FINITE = {"minimum": -sys.float_info.max, "maximum": sys.float_info.max}
_TEXT = Kind("a string", {"type": "string"}, lambda v: isinstance(v, str))
_TEXT_OR_NULL = _or_null(_TEXT)
_FLAG_OR_NULL = _or_null(Kind("true or false", {"type": "boolean"},
                              lambda v: isinstance(v, bool)))
_TEXTS_OR_NULL = _or_null(Kind("a list of strings", {"type": "array", "items": {"type": "string"}},
                               lambda v: isinstance(v, list)
                               and all(isinstance(x, str) for x in v)))
_COUNT_OR_NULL = _or_null(Kind("an integer", {"type": "integer", **_FINITE},
                               lambda v: _finite(v) and v == int(v)))
_NUMBER = Kind("a finite number", {"type": "number", **_FINITE}, _finite)
_NUMBER_OR_NULL = _or_null(_NUMBER)
_NUMBERS_OR_NULL = _or_null(Kind("a list of finite numbers",
                                 {"type": "array", "items": {"type": "number", **_FINITE}},
                                 lambda v: isinstance(v, list) and all(map(_finite, v))))
_SHARD_OR_NULL = _or_null(Kind("'K/N' with 1 <= K <= N",
                               {"type": "string", "pattern": "^[0-9]{1,5}/[0-9]{1,5}$"}, _shard))
#: a median time in ms outside this range is no measurement (and would overflow a score).
_PLAUSIBLE_MS = (1e-9, 1e12)
_MEDIAN_MS = Kind(f"a time from {_PLAUSIBLE_MS[0]:g} to {_PLAUSIBLE_MS[1]:g} ms",
                  {"type": "number", "minimum": _PLAUSIBLE_MS[0], "maximum": _PLAUSIBLE_MS[1]},
                  lambda v: _finite(v) and _PLAUSIBLE_MS[0] <= v <= _PLAUSIBLE_MS[1])
_TIMING_OR_NULL = _or_null(_object({
    "median": (True, _MEDIAN_MS), "min": (False, _NUMBER_OR_NULL),
    "max": (False, _NUMBER_OR_NULL), "spread": (False, _NUMBER_OR_NULL),
    "samples": (False, _NUMBERS_OR_NULL), "calls_per_batch": (False, _COUNT_OR_NULL)}))

_CASE = {"event": (True, _TEXT), "label": (True, _TEXT), "dtype": (True, _TEXT),
         "status": (True, _TEXT), "kind": (False, _TEXT_OR_NULL),
         "workload": (False, _TEXT_OR_NULL), "reason": (False, _TEXT_OR_NULL),
         "error": (False, _NUMBER_OR_NULL), "flops": (False, _NUMBER_OR_NULL),
         "gflops": (False, _NUMBER_OR_NULL), "memory_mb": (False, _NUMBER_OR_NULL),
         "throughput": (False, _NUMBER_OR_NULL), "throughput_unit": (False, _TEXT_OR_NULL),
         "time_ms": (False, _TIMING_OR_NULL), "reference_time_ms": (False, _TIMING_OR_NULL)}
_ROW = {"name": (True, _TEXT), "cases": (False, _objects(_CASE)),
        "reference": (False, _FLAG_OR_NULL), "complete": (False, _FLAG_OR_NULL),
        "finished": (False, _TEXT_OR_NULL), "load_error": (False, _TEXT_OR_NULL),
        **{key: (False, _TEXT_OR_NULL) for key in ("distribution", "version", "entry_point",
                                                    "origin", "location", "files_sha256")}}
#: how the run isolated submissions; absent in files older than the sandbox.
_ISOLATION = {"sandboxed": (True, Kind("true or false", {"type": "boolean"},
                                       lambda v: isinstance(v, bool))),
              "tool": (False, _TEXT_OR_NULL), "mode": (False, _TEXT_OR_NULL)}
_MACHINE = {"cpu": (False, _TEXT_OR_NULL), "cores": (False, _COUNT_OR_NULL),
            "date": (False, _TEXT_OR_NULL),
            "blas": (False, _or_null(_objects({key: (False, _TEXT_OR_NULL) for key in
                                               ("internal_api", "version", "architecture")})))}
_EVENT = {"name": (True, _TEXT), "kind": (True, _TEXT), "workload": (False, _TEXT_OR_NULL)}
DOCUMENT = _object({
    "schema_version": (True, Kind(f"{SCHEMA_VERSION}", {"const": SCHEMA_VERSION},
                                  lambda v: v == SCHEMA_VERSION)),
    "run_id": (True, _TEXT), "machine": (True, _object(_MACHINE)),
    "events": (True, _objects(_EVENT)),
    "backends": (True, Kind("an object holding one object per backend",
                            {"type": "object", "additionalProperties": {"type": "object"}},
                            lambda v: isinstance(v, dict), _ROW, "map")),
    "rules": (False, _object({})), "shard": (False, _SHARD_OR_NULL),
    "field": (False, _TEXTS_OR_NULL), "shard_backends": (False, _TEXTS_OR_NULL),
    "quick": (False, _FLAG_OR_NULL), "complete": (False, _FLAG_OR_NULL),
    "isolation": (False, _or_null(_object(_ISOLATION)))}, "a run document (an object)")


_JSON_TYPES = {dict: "an object", list: "a list", str: "a string", bool: "true/false",
               type(None): "null"}


def _json_type(value) -> str:
    """What a JSON value is, for a message; a list says what it holds."""
    name = _JSON_TYPES.get(type(value), "a number")
    if isinstance(value, list) and value:
        name += " holding " + " and ".join(sorted({_JSON_TYPES.get(type(x), "a number")
                                                   for x in value}))
    return name


def _check(path, where, value, kind: Kind) -> None:
    """ResultsError naming `path` and the first place under `where` that `kind` refuses."""
    if value is None and kind.nullable:
        return
    if not kind.check(value):
        raise ResultsError(f"{path}: {where or 'the document'} must be {kind.wanted}, not "
                           f"{_json_type(value)}")
    if kind.fields is None:
        return
    items = (((f"{where}[{i}]", item) for i, item in enumerate(value)) if kind.each == "list"
             else ((f"{where}[{key!r}]", item) for key, item in value.items())
             if kind.each == "map" else [(where, value)])
    for place, mapping in items:
        if not isinstance(mapping, dict):
            raise ResultsError(f"{path}: {place} must be an object, not {_json_type(mapping)}")
        for key, (required, inner) in kind.fields.items():
            name = f"{place}.{key}" if place else key
            if key in mapping:
                _check(path, name, mapping[key], inner)
            elif required:
                raise ResultsError(f"{path}: missing key {name!r}")
