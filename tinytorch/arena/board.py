"""The leaderboard: README.md, index.html and the run files' JSON Schema, from run files.

This module decides what the board says: the ranking (references as baselines,
unranked backends listed with their reason and no speed figures), each
backend's per-shape table, the model throughput beside the ratio the score
uses, the notes, how the run was isolated. The templates in templates/ lay it
out, charts.py draws, and display.py shows every string from a run file: both
template environments pass every `{{ }}` output that is not a formatted number
or a link built here through it (one line, cut, escaped for Markdown or HTML),
so a template cannot forget to.
"""
from __future__ import annotations

import json
import os
import urllib.parse

import markupsafe

from . import charts, display
from .history import score_history
from .merging import merge
from .results_schema import SCHEMA_FILE, schema
from .scoring import DISQUALIFYING, PENALISED, REFERENCES, best_blas_gflops, case_key, geomean

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")


def _aggregate(row, key):
    return geomean(c[key] for c in row.get("cases", []) if c.get(key))


def measures_every_case(board, reference) -> bool:
    """Whether `reference` has a time for every case any backend was timed on: a column
    comparing with it is shown only then (naive usually times only the smallest shapes)."""
    row = next((r for r in board["rows"] if r["name"] == reference), None)
    if row is None:
        return False
    timed = {case_key(c) for r in board["rows"] for c in r.get("cases", [])
             if c.get("status") == "ok" and c.get("time_ms")}
    return timed <= {case_key(c) for c in row.get("cases", [])
                     if c.get("status") == "ok" and c.get("time_ms")}


def ranked_rows(board) -> list[dict]:
    """Rows by score; candidates numbered 1.., references "ref", unranked last with "-".

    `fraction_of_numpy` and `speedup_vs_naive` are geometric means over the backend's
    timed cases, the latter only where naive timed every case."""
    naive_everywhere = measures_every_case(board, "naive")
    rows = [{**row, "fraction_of_numpy": _aggregate(row, "fraction_of_numpy"),
             "speedup_vs_naive": _aggregate(row, "speedup_vs_naive") if naive_everywhere
             else None} for row in board["rows"]]
    scored = sorted((r for r in rows if r["score"] is not None), key=lambda r: -r["score"])
    rank = 0
    for row in scored:
        if row["ranked"]:
            rank += 1
            row["rank"], row["rank_label"] = rank, str(rank)
        else:
            row["rank"], row["rank_label"] = None, "ref" if row.get("reference") else "-"
    unscored = sorted((r for r in rows if r["score"] is None), key=lambda r: r["name"])
    for row in unscored:
        row["rank"], row["rank_label"] = None, "ref" if row.get("reference") else "-"
    return scored + unscored


# ------------------------------------------------------------------ what each row shows

def _status_class(status) -> str:
    return ("ok" if status == "ok" else "bad" if status in DISQUALIFYING else "penalty"
            if status in PENALISED else "skip" if status == "skipped" else "other")


def _case_view(case, shows_speed) -> dict:
    """One case as the per-backend table shows it; no speed figures unless `shows_speed`."""
    speed = case if shows_speed and case["status"] == "ok" else {}
    timing = speed.get("time_ms") or {}
    return {"event": case["event"], "label": case["label"], "dtype": case["dtype"],
            "kind": case.get("kind"), "workload": case.get("workload"), "flops": case.get("flops"),
            "status": case["status"], "status_class": _status_class(case["status"]),
            "reason": case.get("reason"), "error": case.get("error"),
            "time_ms": timing.get("median"), "spread": timing.get("spread"),
            "gflops": speed.get("gflops"), "memory_mb": speed.get("memory_mb"),
            "throughput": speed.get("throughput"), "unit": speed.get("throughput_unit"),
            "ratios": {"optimized": speed.get("ratio"), "numpy": speed.get("fraction_of_numpy"),
                       "naive": speed.get("speedup_vs_naive")}}


def _link(path, board_dir) -> markupsafe.Markup:
    """A relative URL from the board to `path` (the board and run files move together)."""
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(board_dir))
    return markupsafe.Markup(urllib.parse.quote(relative.replace(os.sep, "/")))


def _provenance(row) -> list[tuple[str, object]]:
    seconds = row.get("seconds") if isinstance(row.get("seconds"), dict) else {}
    fields = [*((label, display.token(row[key])) for label, key in
                (("distribution", "distribution"), ("version", "version"),
                 ("entry point", "entry_point")) if row.get(key)),
              ("origin", row.get("origin")),
              ("location", row.get("location") and display.token(row["location"], 160)),
              ("files sha256", row.get("files_sha256")),
              ("run", row["run_id"] + (f" shard {row['shard']}" if row.get("shard") else "")),
              ("finished", row.get("finished")),
              ("seconds", ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()
                                    if isinstance(v, (int, float)))),
              ("measured", row.get("machine_note")),
              ("replaced", ", ".join(row.get("replaced") or ()))]
    return [(label, value) for label, value in fields if value not in (None, "")]


def _row_view(row, events, board_dir) -> dict:
    """A ranking row and its per-backend section; unranked rows carry no speed figures."""
    speed = row["unranked_reason"] is None
    return {"name": display.name(row["name"]), "anchor": display.anchor(row["name"]),
            "conforming": display.conforming(row["name"]),
            "rank": row["rank"], "rank_label": row["rank_label"],
            "reference": bool(row.get("reference")), "ranked": row["ranked"],
            "score": row["score"] if speed else None,
            "events": {e["name"]: row["events"].get(e["name"]) for e in events} if speed else {},
            "fraction_of_numpy": row["fraction_of_numpy"] if speed else None,
            "package": " ".join(display.token(row[k]) for k in ("distribution", "version")
                                if row.get(k)),
            "reason": row["unranked_reason"], "load_error": row.get("load_error"),
            "machine_note": row.get("machine_note"),
            "file": row["file"], "link": _link(row["path"], board_dir),
            "provenance": _provenance(row),
            "cases": [_case_view(c, speed) for c in row.get("cases", [])]}


def throughput_table(rows) -> tuple[list, list]:
    """Model events: columns (event, shape, unit); per shown row (name, [(rate, ratio)]).

    The ratio is the case's ratio to optimized timed beside the backend, what its event
    score uses; unranked rows are left out (they show no speed figures)."""
    shown = [r for r in rows if r["score"] is not None]
    columns = list(dict.fromkeys((c["event"], c["label"], c["unit"]) for r in shown
                                 for c in r["cases"] if c.get("throughput")))
    table = []
    for row in shown:
        cells = {(c["event"], c["label"], c["unit"]): (c["throughput"], c["ratios"]["optimized"])
                 for c in row["cases"] if c.get("throughput")}
        if cells:
            table.append((row, [cells.get(column, (None, None)) for column in columns]))
    return columns, table


def _isolation(runs) -> dict:
    """What the runs say about the sandbox: unsandboxed and unrecorded runs are named (once,
    however many shard files a run has)."""
    unsandboxed = dict.fromkeys(r["run_id"] for r in runs
                                if (r.get("isolation") or {}).get("sandboxed") is False)
    unrecorded = dict.fromkeys(r["run_id"] for r in runs if not r.get("isolation"))
    tools = sorted({" ".join(filter(None, [i.get("tool") or "a sandbox",
                                           i.get("mode") and f"(as {i['mode']})"]))
                    for i in (r.get("isolation") or {} for r in runs) if i.get("sandboxed")})
    return {"unsandboxed": list(unsandboxed), "unrecorded": list(unrecorded), "tools": tools}


def _machine(machine) -> list[tuple[str, str]]:
    """Every key of a machine description (it gains keys over time), each value as text."""
    def shown(value) -> str:
        if isinstance(value, list):
            return "; ".join(filter(None, map(shown, value)))
        if isinstance(value, dict):
            return " ".join(f"{k}={shown(v)}" for k, v in value.items() if shown(v))
        return "" if value is None else str(value)
    return [(key, shown(value)) for key, value in machine.items() if shown(value)]


def _rate_ceilings(files) -> dict:
    """Per dtype, the best GFLOP/s numpy's matmul reached in any of the runs: the BLAS ceiling."""
    dtypes = {c["dtype"] for _, doc in files for row in doc["backends"].values()
              for c in row.get("cases", [])}
    rates = {dtype: [r for _, doc in files if (r := best_blas_gflops(doc, dtype))]
             for dtype in dtypes}
    return {dtype: max(found) for dtype, found in rates.items() if found}


def context(board, files, board_dir, history) -> dict:
    rows = [_row_view(r, board["events"], board_dir) for r in ranked_rows(board)]
    events = board["events"]
    columns, throughput = throughput_table(rows)
    ranked = [r for r in rows if r["ranked"]]
    workloads = {}     # workload -> the names of its events (one GFLOP/s chart each)
    for event in events:
        if event["kind"] != "memory":
            workloads.setdefault(event.get("workload") or event["kind"], []).append(event["name"])
    titles = {workload: " / ".join(names) for workload, names in workloads.items()}
    ceilings = _rate_ceilings(files)
    runs = [{**run, "link": _link(run["path"], board_dir),
             "machine_lines": _machine(run["machine"])} for run in board["runs"]]
    return {
        "rows": rows, "events": events, "runs": runs, "rules": board["rules"],
        "latest": max(runs, key=lambda r: r["machine"].get("date") or ""),
        "notes": board.get("notes", []), "isolation": _isolation(board["runs"]),
        "counts": {"ranked": len(ranked), "unranked": sum(1 for r in rows if r["reason"]),
                   "references": sum(1 for r in rows if r["reference"])},
        "reference_columns": [name for name in REFERENCES
                              if name == "optimized" or measures_every_case(board, name)],
        "throughput_columns": columns, "throughput_rows": throughput,
        "failed": [r for r in rows if r["reason"]],
        # a backend that did not load fails every case with one reason, listed once above
        "case_failures": [(r, c) for r in rows if not r["load_error"] for c in r["cases"]
                          if c["status_class"] in ("bad", "penalty", "other")],
        "top": charts.TOP, "schema_file": SCHEMA_FILE, "history": history,
        "charts": {     # each prefixes its SVG ids, "_c..." like every page id
            "scores": charts.score_distribution(rows, "_c-scores"),
            "events": charts.event_ratios(rows, events, "_c-events"),
            "history": charts.score_history(history["runs"], rows, "_c-history"),
            "rates": [(title, charts.gflops_by_size(workload, title, rows, ceilings,
                                                    f"_c-rate{i}"))
                      for i, (workload, title) in enumerate(titles.items())]},
    }


# ------------------------------------------------------------------ templates and files

def _number(value, digits=3):
    return markupsafe.Markup("-" if value is None else f"{value:.{digits}g}")


def _environment(markdown: bool):
    """jinja2 for one output; its finalize shows every value through display.text, escaped
    for Markdown (README.md) or by autoescape (index.html); formatted numbers and built
    links are Markup and pass as they are."""
    import jinja2

    def finalize(value):
        if isinstance(value, markupsafe.Markup):
            return value
        shown = display.text("-" if value is None else value)
        return display.markdown(shown) if markdown else shown
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), finalize=finalize,
                             autoescape=not markdown, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    env.filters.update(
        number=_number,
        times=lambda v: _number(v) + "\u00d7" if v is not None else _number(v),
        rate=lambda v: markupsafe.Markup("-" if v is None else f"{v:,.0f}" if v >= 100
                                         else f"{v:.3g}"),
        error=lambda v: _number(v, 2),
        percent=lambda v: markupsafe.Markup("-" if v is None else f"{100 * v:.0f}%"),
        cut=lambda v, limit: display.text(v, limit),
        heat=lambda v: markupsafe.Markup("" if v is None else "h4" if v >= 1 else "h3"
                                         if v >= 0.5 else "h2" if v >= 0.2 else "h1"
                                         if v >= 0.05 else "h0"),
        sortkey=lambda v: markupsafe.Markup("" if v is None else repr(float(v))))
    return env


def _write(path, text) -> None:
    temp = f"{path}.{os.getpid()}.tmp"
    with open(temp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(temp, path)


def render(files: list[tuple[str, dict]], board_dir, history=None) -> dict:
    """Write README.md, index.html and the run files' schema for these (path, run document)
    pairs; return the board. The history chart reads every run file beside them unless
    `history` (score_history's result) is given."""
    board = merge(files)
    ctx = context(board, files, board_dir, history or score_history(files))
    os.makedirs(board_dir, exist_ok=True)
    for template, name, markdown in (("README.md.j2", "README.md", True),
                                     ("index.html.j2", "index.html", False)):
        _write(os.path.join(board_dir, name),
               _environment(markdown).get_template(template).render(**ctx))
    _write(os.path.join(board_dir, SCHEMA_FILE), json.dumps(schema(), indent=1) + "\n")
    return board
