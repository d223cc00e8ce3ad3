"""leaderboard/events.toml: the competition's rules and events, checked with clear errors.

An instructor edits this file, never code. Every mistake (unknown key, wrong
type, missing shape parameter, unknown kind) is a ValueError naming the file
and the key, e.g. `events.toml: events[2] (conv2d).shapes[0]: missing 'stride'`.
"""
from __future__ import annotations

import dataclasses
import os

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from .problems import PROBLEMS

DTYPES = ("float32", "float64")
MEMORY_KIND = "memory"


@dataclasses.dataclass(frozen=True)
class Rules:
    allow_blas: bool = False        # submissions may not call BLAS; the numpy reference is exempt
    wall_time_s: float = 60.0       # per request to a worker, unless the event sets time_budget_s
    memory_mb: int = 2048           # per worker: RLIMIT_DATA plus resident-size polling
    threads: int = 1                # threads a worker may use (OpenMP, BLAS), unless the event sets threads
    min_batch_ms: float = 20.0      # the parent times batches of at least this long
    repeats: int = 5                # timed batches per case, unless the event sets repeats
    quick_repeats: int = 3          # with --quick: at most this many (fewer if the event says so)
    tolerance_float32: float = 1e-4
    tolerance_float64: float = 1e-10

    def tolerance(self, dtype: str) -> float:
        return self.tolerance_float32 if dtype == "float32" else self.tolerance_float64


@dataclasses.dataclass(frozen=True)
class Event:
    name: str
    kind: str                       # a key of problems.PROBLEMS, or "memory"
    shapes: tuple                   # parameter dicts, smallest first
    dtypes: tuple
    workload: str | None = None     # the kernel a memory event measures
    repeats: int | None = None      # None: the rules' repeats
    time_budget_s: float | None = None   # bounds each request to the worker; None: rules' wall_time_s
    threads: int | None = None      # None: the rules' threads
    skip_backends: tuple = ()       # backends too slow for every shape of this event
    naive_shapes: int | None = None  # naive runs only the first `naive_shapes` shapes (or quick_shapes)
    quick_shapes: tuple | None = None

    @property
    def problem_kind(self) -> str:
        return self.workload if self.kind == MEMORY_KIND else self.kind

    def shapes_for(self, backend: str, quick: bool) -> list[dict]:
        """The shapes `backend` runs (naive only the first few; --quick the quick ones)."""
        shapes = list(self.quick_shapes or self.shapes[:1]) if quick else list(self.shapes)
        if backend in self.skip_backends:
            return []
        if backend == "naive" and self.naive_shapes is not None:
            shapes = shapes[:self.naive_shapes]
        return shapes

    def to_dict(self):
        return dataclasses.asdict(self)


_EVENT_KEYS = {f.name for f in dataclasses.fields(Event)}
_RULE_TYPES = {f.name: type(f.default) for f in dataclasses.fields(Rules)}


class EventsFileError(ValueError):
    """events.toml is not valid; the message names the file and the key."""


def _fail(path, where, message):
    raise EventsFileError(f"{os.path.basename(path)}: {where}: {message} ({path})")


def _rules(path, table) -> Rules:
    if not isinstance(table, dict):
        _fail(path, "rules", "must be a table [rules]")
    values = {}
    for key, value in table.items():
        if key not in _RULE_TYPES:
            _fail(path, f"rules.{key}", f"unknown key; known keys: {', '.join(sorted(_RULE_TYPES))}")
        want = _RULE_TYPES[key]
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not want:
            _fail(path, f"rules.{key}", f"must be {want.__name__}, got {value!r}")
        if want in (int, float) and value <= 0:
            _fail(path, f"rules.{key}", f"must be positive, got {value!r}")
        values[key] = value
    return Rules(**values)


def _shape(path, where, kind, shape):
    keys = PROBLEMS[kind].keys
    if not isinstance(shape, dict):
        _fail(path, where, f"must be an inline table with keys {', '.join(keys)}")
    for key in keys:
        if key not in shape:
            _fail(path, where, f"missing {key!r} (a {kind} shape needs {', '.join(keys)})")
    for key, value in shape.items():
        if key not in keys:
            _fail(path, f"{where}.{key}", f"unknown key for a {kind} shape")
        least = 0 if key == "padding" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            _fail(path, f"{where}.{key}", f"must be an integer >= {least}, got {value!r}")
    return {key: shape[key] for key in keys}


def _event(path, index, table, names) -> Event:
    where = f"events[{index}]"
    if not isinstance(table, dict):
        _fail(path, where, "must be a table [[events]]")
    for key in table:
        if key not in _EVENT_KEYS:
            _fail(path, f"{where}.{key}", f"unknown key; known keys: {', '.join(sorted(_EVENT_KEYS))}")
    for key in ("name", "kind", "shapes"):
        if key not in table:
            _fail(path, where, f"missing {key!r}")
    name, kind = table["name"], table["kind"]
    if not isinstance(name, str) or not name:
        _fail(path, f"{where}.name", "must be a non-empty string")
    if name in names:
        _fail(path, f"{where}.name", f"{name!r} is used by two events")
    where = f"{where} ({name})"
    kinds = sorted([*PROBLEMS, MEMORY_KIND])
    if kind not in kinds:
        _fail(path, f"{where}.kind", f"unknown kind {kind!r}; known kinds: {', '.join(kinds)}")
    workload = table.get("workload")
    if kind == MEMORY_KIND:
        if workload not in PROBLEMS:
            _fail(path, f"{where}.workload", f"a memory event needs workload = one of "
                                             f"{', '.join(sorted(PROBLEMS))}, got {workload!r}")
    elif workload is not None:
        _fail(path, f"{where}.workload", "only a memory event has a workload")
    problem_kind = workload if kind == MEMORY_KIND else kind

    def shape_list(key):
        shapes = table[key]
        if not isinstance(shapes, list) or not shapes:
            _fail(path, f"{where}.{key}", "must be a non-empty array of inline tables")
        return tuple(_shape(path, f"{where}.{key}[{i}]", problem_kind, s)
                     for i, s in enumerate(shapes))

    dtypes = table.get("dtypes", ["float32"])
    if not isinstance(dtypes, list) or not dtypes or any(d not in DTYPES for d in dtypes):
        _fail(path, f"{where}.dtypes", f"must be a non-empty array of {', '.join(DTYPES)}, got {dtypes!r}")
    skip = table.get("skip_backends", [])
    if not isinstance(skip, list) or any(not isinstance(s, str) for s in skip):
        _fail(path, f"{where}.skip_backends", f"must be an array of backend names, got {skip!r}")
    optional = {}
    for key, kind_of in (("repeats", int), ("naive_shapes", int), ("time_budget_s", float),
                         ("threads", int)):
        if key in table:
            value = table[key]
            if kind_of is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if type(value) is not kind_of or value < (0 if key == "naive_shapes" else 1e-9):
                _fail(path, f"{where}.{key}", f"must be a positive {kind_of.__name__}, got {value!r}")
            optional[key] = value
    return Event(name=name, kind=kind, shapes=shape_list("shapes"), dtypes=tuple(dtypes),
                 workload=workload, skip_backends=tuple(skip),
                 quick_shapes=shape_list("quick_shapes") if "quick_shapes" in table else None,
                 **optional)


def load_events(path) -> tuple[Rules, list[Event]]:
    """Rules and events of an events.toml, or an EventsFileError naming file and key."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise EventsFileError(f"events file {path} does not exist; pass --config PATH or run "
                              f"from the folder holding leaderboard/events.toml") from None
    except tomllib.TOMLDecodeError as exc:
        raise EventsFileError(f"{path} is not valid TOML: {exc}") from None
    for key in data:
        if key not in ("rules", "events"):
            _fail(path, key, "unknown top-level key; expected [rules] and [[events]]")
    rules = _rules(path, data.get("rules", {}))
    tables = data.get("events")
    if not isinstance(tables, list) or not tables:
        _fail(path, "events", "declare at least one [[events]] table")
    events, names = [], set()
    for index, table in enumerate(tables):
        events.append(_event(path, index, table, names))
        names.add(events[-1].name)
    return rules, events
