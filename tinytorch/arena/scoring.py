"""Scores from one run's measurements: every ratio uses references timed in that run.

- per case: speedup over `optimized` (t_optimized / t_backend, the optimized
  batches interleaved with the backend's), speedup over `naive` (on the
  shapes naive runs), fraction of `numpy` (t_numpy / t_backend); for a memory
  event, optimized's peak memory over the backend's (1 MB floor each);
- per event: geometric mean over its cases; a timeout or memory blow-up
  counts 0.01;
- score: geometric mean over events (the `optimized` reference scores 1.0).
A wrong answer, NaN, exception, crash, impossible time or rule violation leaves the
backend unranked with the first such reason, and so does a status this module does not
know (a newer harness's): an unknown failure never counts as a pass. A time faster than
twice the best BLAS rate of the run (numpy's best matmul GFLOP/s) is impossible.
"""
from __future__ import annotations

import math

REFERENCES = ("optimized", "numpy", "naive")    # what a case is compared with
DISQUALIFYING = ("wrong", "nan", "error", "crash", "impossible", "violation")
PENALISED = ("timeout", "memory")
SCORED = ("ok", "skipped", *PENALISED)          # any other status leaves the backend unranked
PENALTY = 0.01
MEMORY_FLOOR_MB = 1.0
IMPOSSIBLE_FACTOR = 2.0


def geomean(values):
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def case_key(case) -> tuple:
    return case["event"], case["label"], case["dtype"]


def best_blas_gflops(doc, dtype=None) -> float | None:
    """The run's best BLAS rate (of `dtype`, or any): numpy's best matmul case, or the
    parent's own measurement of a large matmul at the run's threads (`blas_gflops`),
    whichever is higher (a --quick run's small shapes are mostly overhead)."""
    numpy_row = doc.get("backends", {}).get("numpy", {})
    rates = [c["gflops"] for c in numpy_row.get("cases", [])
             if c.get("status") == "ok" and c.get("kind") == "matmul" and c.get("gflops")
             and dtype in (None, c.get("dtype"))]
    rates += [rate for kind, rate in (doc.get("blas_gflops") or {}).items()
              if dtype in (None, kind) and isinstance(rate, (int, float)) and rate > 0]
    return max(rates) if rates else None


def _ratio(case, reference):
    if case.get("memory_mb") is not None:
        if reference is None or reference.get("memory_mb") is None:
            return None
        return (max(reference["memory_mb"], MEMORY_FLOOR_MB)
                / max(case["memory_mb"], MEMORY_FLOOR_MB))
    time_ms, ref_ms = case.get("time_ms"), case.get("reference_time_ms")
    if not time_ms or not ref_ms:
        return None
    return ref_ms["median"] / time_ms["median"]


def _time_ratio(case, other):
    if other is None or other.get("status") != "ok" or not other.get("time_ms") \
            or not case.get("time_ms"):
        return None
    return other["time_ms"]["median"] / case["time_ms"]["median"]


def score_backend(row, doc, blas_limit) -> dict:
    """Per-case ratios, per-event ratios, the score, and whether the backend is ranked."""
    by_name = doc.get("backends", {})
    lookup = {name: {case_key(c): c for c in by_name[name].get("cases", [])}
              for name in REFERENCES if name in by_name}     # not every row: a class is 300
    cases, events, reason = [], {}, row.get("load_error") or row.get("violation")
    for case in row.get("cases", []):
        case = dict(case)
        status = case.get("status")
        rate = case.get("gflops") or 0          # null for a case without a FLOP count
        if status == "ok" and blas_limit and rate > IMPOSSIBLE_FACTOR * blas_limit:
            status = case["status"] = "impossible"
            case["reason"] = (f"impossible time: {case['gflops']:.1f} GFLOP/s is more than "
                              f"{IMPOSSIBLE_FACTOR:g}x the best BLAS rate of this run "
                              f"({blas_limit:.1f} GFLOP/s)")
        key = case_key(case)
        if status == "ok":
            case["ratio"] = _ratio(case, lookup.get("optimized", {}).get(key))
            case["speedup_vs_naive"] = _time_ratio(case, lookup.get("naive", {}).get(key))
            case["fraction_of_numpy"] = _time_ratio(case, lookup.get("numpy", {}).get(key))
        elif status in PENALISED:
            case["ratio"] = PENALTY
        if status not in SCORED and reason is None:
            reason = f"{case['event']} {case['label']} {case['dtype']}: {case.get('reason')}"
        if case.get("ratio") is not None:
            events.setdefault(case["event"], []).append(case["ratio"])
        cases.append(case)
    event_ratios = {name: geomean(ratios) for name, ratios in events.items()}
    score = geomean(event_ratios.values()) if reason is None else None
    return {"cases": cases, "events": event_ratios, "score": score,
            "ranked": reason is None and score is not None and not row.get("reference"),
            "unranked_reason": reason}


def score_run(doc) -> dict:
    """{backend name: score_backend(...)} for every backend of one run document."""
    limit = best_blas_gflops(doc)
    return {name: score_backend(row, doc, limit) for name, row in doc.get("backends", {}).items()}
