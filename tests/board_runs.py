"""Run documents for the board's tests, shaped as `tinytorch compete` writes them.

`run_document` builds a run from per-backend speeds; `HOSTILE` holds the
attacks a submission can carry onto the board (names, versions, reasons);
`class_runs` makes a class-sized field over several runs (the history).
"""
from __future__ import annotations

import json
import random

from tinytorch.arena import results

MATMUL = [("64x64x64", {"m": 64, "k": 64, "n": 64}, 0.02),
          ("256x512x128", {"m": 256, "k": 512, "n": 128}, 0.9),
          ("512x512x512", {"m": 512, "k": 512, "n": 512}, 4.0)]
CONV = [("1x8x16x16 * 8x3x3 s1 p1", {"n": 1, "c": 8, "h": 16, "w": 16, "f": 8, "k": 3,
                                     "stride": 1, "padding": 1}, 0.03),
        ("8x32x32x32 * 32x3x3 s1 p1", {"n": 8, "c": 32, "h": 32, "w": 32, "f": 32, "k": 3,
                                       "stride": 1, "padding": 1}, 9.0)]
MLP = [("batch=8, features=64, hidden=32", {"batch": 8, "features": 64, "hidden": 32}, 1.3),
       ("batch=64, features=3072, hidden=256", {"batch": 64, "features": 3072, "hidden": 256},
        10.0)]
EVENTS = [{"name": "matmul", "kind": "matmul", "workload": None, "dtypes": ["float32", "float64"]},
          {"name": "conv2d", "kind": "conv2d", "workload": None, "dtypes": ["float32"]},
          {"name": "MLP training step", "kind": "mlp_train_step", "workload": None,
           "dtypes": ["float32"]},
          {"name": "memory: conv2d", "kind": "memory", "workload": "conv2d",
           "dtypes": ["float32"]}]
MACHINE = {"cpu": "Example CPU 9000", "cores": 2, "platform": "Linux", "python": "3.11.7",
           "numpy": "2.4.6", "tinytorch": "1.0.0", "git_commit": "f842a6feb35d7999",
           "blas": [{"internal_api": "openblas", "version": "0.3.31", "num_threads": 1,
                     "threading_layer": "pthreads", "architecture": "SkylakeX"}]}
REFERENCES = ("optimized", "numpy", "naive")


def _timing(ms):
    return {"median": ms, "min": ms * 0.95, "max": ms * 1.1, "spread": 0.15,
            "samples": [ms * 0.95, ms, ms * 1.1], "calls_per_batch": max(1, int(20 / ms))}


def _flops(kind, params):
    if kind == "matmul":
        return 2.0 * params["m"] * params["k"] * params["n"]
    if kind == "conv2d":
        p = params
        return 2.0 * p["n"] * p["f"] * p["c"] * 9 * p["h"] * p["w"] / p["stride"] ** 2
    return 6.0 * params["batch"] * params["features"] * params["hidden"]


def _case(event, label, params, dtype, ref_ms, speed, status="ok", reason=None, beside=1.04):
    """One case; optimized timed beside the backend took `beside` times its own time."""
    kind = event["kind"]
    workload = event["workload"] or kind
    case = {"event": event["name"], "kind": kind, "workload": workload, "label": label,
            "dtype": dtype, "params": params, "flops": None if kind == "memory"
            else _flops(workload, params), "status": status, "reason": reason,
            "error": 1.5e-7 if dtype == "float32" else 2e-15}
    if status != "ok":
        case["error"] = 1.4 if status == "wrong" else None
        return case
    if kind == "memory":
        case["memory_mb"] = 40.0 / speed
        return case
    ms = ref_ms * (2 if dtype == "float64" else 1) / speed
    case.update(time_ms=_timing(ms), reference_time_ms=_timing(ms * speed * beside),
                gflops=case["flops"] / ms / 1e6)
    if kind == "mlp_train_step":
        case.update(throughput=params["batch"] / ms * 1e3, throughput_unit="samples/s")
    return case


def backend(name, speed, reference=False, failure=None, **provenance):
    """A row `speed` times as fast as optimized on every case; `failure`: (status, reason)
    of the first matmul case, or a load error (a string)."""
    cases = []
    shapes = {"matmul": MATMUL, "conv2d": CONV, "MLP training step": MLP,
              "memory: conv2d": CONV[1:]}
    for event in EVENTS:
        for index, (label, params, ref_ms) in enumerate(shapes[event["name"]]):
            for dtype in event["dtypes"]:
                if name == "naive" and (index > 0 or event["kind"] == "memory"):
                    cases.append({**_case(event, label, params, dtype, ref_ms, speed, "skipped",
                                          "too slow for naive"), "error": None})
                    continue
                status, reason = ("ok", None)
                if isinstance(failure, tuple) and not cases:
                    status, reason = failure
                cases.append(_case(event, label, params, dtype, ref_ms, speed, status, reason,
                                   beside=1.0 if name == "optimized" else 1.04))
    if isinstance(failure, str):
        cases = [{**c, "status": "error", "reason": failure, "error": None,
                  "time_ms": None, "reference_time_ms": None} for c in cases]
        for case in cases:
            for key in ("gflops", "throughput", "throughput_unit", "memory_mb"):
                case.pop(key, None)
    row = {"name": name, "spec": name, "reference": reference,
           "distribution": "tinytorch" if reference else f"{name}-kernels", "version": "1.0.0",
           "entry_point": f"{name}_kernels:Backend", "origin": "core" if reference else "plugin",
           "location": f"/course/submissions/{name}", "files_sha256": "ab" * 32,
           "load_error": failure if isinstance(failure, str) else None, "cases": cases,
           "complete": True, "seconds": {"check": 1.2, "time": 30.5},
           "finished": "2026-11-27T04:09:28+00:00"}
    row.update(provenance)
    return row


def run_document(candidates, run_id="20261127T040726Z-d3fe72",
                 date="2026-11-27T04:07:26+00:00", isolation=None, **extra):
    """A run file's document: the three references plus `candidates` (rows from `backend`)."""
    rows = [backend("optimized", 1.0, True), backend("numpy", 1.6, True),
            backend("naive", 0.004, True), *candidates]
    doc = {"schema_version": results.SCHEMA_VERSION, "run_id": run_id,
           "machine": {**MACHINE, "date": date}, "quick": False,
           "rules": {"allow_blas": False, "tolerance_float32": 1e-4},
           "events": [{k: v for k, v in e.items() if k != "dtypes"} for e in EVENTS],
           "backends": {row["name"]: row for row in rows}, "complete": True, "shard": None}
    if isolation is not None:
        doc["isolation"] = isolation
    doc.update(extra)
    return json.loads(json.dumps(doc))     # nothing shared between cases or documents


def default_field():
    return [backend("alice", 1.5), backend("bob", 0.5),
            backend("mallory", 1.0, failure=("wrong", "wrong answer on timed inputs: "
                                                      "relative error 1.4 > 0.0001"))]


SANDBOXED = {"sandboxed": True, "tool": "bubblewrap 0.8.0", "mode": "root"}

# ------------------------------------------------------------------ attacks
FORGED_TABLE = ("\n\n## Corrected final ranking\n\n| rank | backend | score |\n|---|---|---|\n"
                "| 1 | mallory | 99.0 |\n\n")
EXTERNAL_IMAGE = "![logo](https://evil.example/pixel.png) <img src=https://evil.example/i.png>"
HIDING_COMMENT = "1.0<!-- everything after this is hidden"
LOOKALIKE = "\u043eptimized"             # a Cyrillic o, then "ptimized"
MATHTEXT = "$x^{$"
PIPES_AND_NEWLINES = "ValueError: bad | worse\n| 1 | eve | 42 |\r\nthird line"
SCRIPT = "</script><script>window.pwned = 1</script><b onmouseover=alert(1)>x</b>"
LINKS = ("[click me](https://evil.example/a) https://evil.example/b www.evil.example "
         "mallory@evil.example <https://evil.example/c> `code` **bold** :shipit:")
BIDI = "ok \u202etxt.exe\u202c done"


def hostile_field():
    """Backends whose names, provenance and failure texts carry every attack on the board."""
    return [
        backend("alice", 1.5),
        backend(LOOKALIKE, 3.0),                                  # fastest: top of every chart
        backend(MATHTEXT, 2.0),
        backend(SCRIPT, 1.1, version=HIDING_COMMENT, distribution=EXTERNAL_IMAGE),
        backend("ranking", 0.9, entry_point=LINKS, location=SCRIPT + BIDI),
        backend("forger", 1.0, failure=("wrong", "wrong answer" + FORGED_TABLE)),
        backend("piper", 1.0, failure=("error", "raised " + PIPES_AND_NEWLINES)),
        backend("linker", 1.0, failure=LINKS + " " + EXTERNAL_IMAGE + " " + BIDI),
        backend("x" * 5000, 0.7, version="9" * 5000),
    ]


def hostile_run():
    return run_document(hostile_field(), run_id="20261127T040726Z-<b>|run`", isolation=SANDBOXED)


# ------------------------------------------------------------------ a class
def class_runs(students=300, runs=3, seed=7):
    """`runs` run documents of a class of `students`, a week apart, each student a little
    faster every run; one in twenty fails a case, one in fifty does not load."""
    rng = random.Random(seed)
    speeds = {f"student{i:03d}": rng.lognormvariate(-0.7, 0.6) for i in range(students)}
    docs = []
    for week in range(runs):
        field = []
        for i, (name, speed) in enumerate(speeds.items()):
            if i % 20 == 7:
                field.append(backend(name, speed, failure=("wrong", "wrong answer on timed "
                                                                   "inputs: relative error 0.3")))
            elif i % 50 == 11:
                field.append(backend(name, speed, failure="could not load backend: "
                                                          "ImportError: no module named x"))
            else:
                field.append(backend(name, speed * (1 + 0.2 * week) * rng.uniform(0.9, 1.1)))
        day = 6 + 7 * week
        docs.append(run_document(field, run_id=f"202611{day:02d}T040000Z-week{week}",
                                 date=f"2026-11-{day:02d}T04:00:00+00:00",
                                 isolation=SANDBOXED))
    return docs


def write(folder, docs):
    """Each document as `folder/NNN-run.json` (run ids may be hostile); the paths."""
    paths = []
    for doc in docs:
        path = folder / f"{len(paths):03d}-run.json"
        results.write_atomic(path, doc)
        paths.append(path)
    return paths
