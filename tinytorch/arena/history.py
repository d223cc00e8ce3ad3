"""The score history: every backend's score in each run kept beside the board's run files.

Each run is scored from its own files, against its own references, as the board
scores it (a run's shards are one point of the history). A file that cannot be
read is left out and named: the history is a view of the results folder, not an
input of the ranking, so a damaged old file never stops a board.
"""
from __future__ import annotations

import collections
import glob
import os

from . import display, results
from .scoring import score_run


def _beside(files) -> tuple[list, list]:
    """The given (path, document) pairs plus every other run file in their folders."""
    given = {os.path.abspath(path) for path, _ in files}
    found, skipped = list(files), []
    folders = sorted({os.path.dirname(p) for p in given})
    for path in sorted(p for folder in folders for p in glob.glob(os.path.join(folder, "*.json"))):
        if os.path.abspath(path) not in given:
            try:
                found.append((path, results.load(path)))
            except results.ResultsError as exc:
                skipped.append(str(exc))
    return found, skipped


def score_history(files) -> dict:
    """{"runs": [{"run_id", "label", "scores": {anchor: score}}] oldest first,
    "skipped": [why a file was left out], "events_differ": bool}."""
    found, skipped = _beside(files)
    by_run = collections.defaultdict(list)
    for _, doc in found:
        by_run[doc["run_id"]].append(doc)
    runs = []
    for run_id, docs in by_run.items():
        scores = {}
        for doc in docs:
            for name, scored in score_run(doc).items():
                if scored["ranked"]:
                    scores[display.anchor(name)] = scored["score"]
        date = min((d["machine"].get("date") or "" for d in docs), default="")
        runs.append({"run_id": run_id, "date": date, "scores": scores,
                     "label": date[:16].replace("T", " ") or run_id,
                     "events": [e["name"] for e in docs[0]["events"]]})
    runs.sort(key=lambda run: (run["date"], run["run_id"]))
    return {"runs": runs, "skipped": skipped,
            "events_differ": len({tuple(run["events"]) for run in runs}) > 1}
