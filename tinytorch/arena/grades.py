"""Grades from a board: a CSV for a gradebook, or one Gradescope results.json per student.

Both list candidates only (references are baselines) in board order, and show
names as the board does (display.name), so a CSV cell never starts with a
formula character: a registry name starts with a letter, anything else is
shown as its ascii(), which starts with a quote.

Gradescope's format (its autograder specification): a top-level `score` (here
the competition score, 0 when unranked), an `output` saying the rank or the
reason, and one test per event whose score is the event's ratio to optimized
and whose `max_score` is 1, what the reference scores (a faster backend earns
more than 1). Every text is plain ("text" formats), one line per case, cut.
"""
from __future__ import annotations

import csv
import os

from . import display, results
from .board import ranked_rows

GRADESCOPE_FILE = "results.json"


def write_csv(board, stream) -> None:
    """name,score,rank per candidate; unranked candidates have an empty score and rank."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(["name", "score", "rank"])
    for row in ranked_rows(board):
        if not row.get("reference"):
            score = "" if row["score"] is None or not row["ranked"] else f"{row['score']:.6g}"
            writer.writerow([display.name(row["name"]), score, row["rank"] or ""])


def _case_line(case, speed) -> str:
    line = f"{case['label']} {case['dtype']}: {case['status']}"
    timing = case.get("time_ms") or {}
    if speed and case["status"] == "ok" and timing:
        line += f", {timing['median']:.4g} ms"
        if case.get("gflops"):
            line += f", {case['gflops']:.3g} GFLOP/s"
        if case.get("throughput"):
            line += f", {case['throughput']:.4g} {case.get('throughput_unit') or 'per s'}"
    if speed and case.get("memory_mb") is not None:
        line += f", {case['memory_mb']:.3g} MB peak"
    if speed and case.get("ratio") is not None:
        line += f", {case['ratio']:.3g}x optimized"
    if case.get("reason"):
        line += f" ({case['reason']})"
    return display.text(line)


def gradescope_results(row, events, ranked_count) -> dict:
    """One student's Gradescope results.json, from a ranked_rows() row."""
    speed = row["ranked"]
    if speed:
        output = (f"Rank {row['rank']} of {ranked_count} ranked backends, score "
                  f"{row['score']:.4g}: the geometric mean over events of t(optimized) / "
                  f"t({display.name(row['name'])}), optimized timed beside it in run "
                  f"{display.text(row['run_id'], 80)}.")
    else:
        output = (f"Unranked: {display.text(row['unranked_reason'] or 'no score')}. "
                  f"An unranked backend scores 0 and shows no speed figures.")
    tests = []
    for event in events:
        cases = [c for c in row.get("cases", []) if c["event"] == event["name"]]
        ratio = row["events"].get(event["name"]) if speed else None
        passed = all(c["status"] in ("ok", "skipped") for c in cases)
        tests.append({
            "name": display.text(event["name"], 80),
            "score": round(ratio, 4) if ratio is not None else 0.0, "max_score": 1.0,
            "status": "passed" if passed and cases else "failed",
            "output": "\n".join([f"ratio to optimized: {ratio:.4g}" if ratio is not None
                                 else "not scored"] + [_case_line(c, speed) for c in cases]),
            "output_format": "text"})
    return {"score": round(row["score"], 4) if speed else 0.0, "output": output,
            "output_format": "text", "test_output_format": "text", "test_name_format": "text",
            "tests": tests,
            "extra_data": {"backend": display.name(row["name"]), "rank": row["rank"],
                           "run_id": display.text(row["run_id"], 80),
                           "file": display.text(row["file"], 120)}}


def write_gradescope(board, folder) -> list[tuple[str, str]]:
    """FOLDER/<backend>/results.json per candidate; (shown name, path) of each file.

    The folder is the board's anchor of the name: the name itself when it is a registry
    name, else `_` and a hash, so no name can reach outside FOLDER."""
    rows = [r for r in ranked_rows(board) if not r.get("reference")]
    ranked_count = sum(1 for r in rows if r["ranked"])
    written = []
    for row in rows:
        path = os.path.join(os.fspath(folder), display.anchor(row["name"]), GRADESCOPE_FILE)
        results.write_atomic(path, gradescope_results(row, board["events"], ranked_count))
        written.append((display.name(row["name"]), path))
    return written
