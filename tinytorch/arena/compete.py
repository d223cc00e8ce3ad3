"""`tinytorch compete`: run the competition over every registered backend, publish the board.

Checks run first (in parallel with --jobs), then every backend is timed
alone, one after the other; the run file is rewritten after each backend,
so an interrupted run can be completed with --resume RUN_ID.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from . import results, slurm
from .competition import REFERENCE, Arena, Contestant, cases_for, skipped_cases
from .events import EventsFileError, load_events
from .scoring import best_blas_gflops, score_backend
from .sharding import candidates, file_stem, shard_argument

REFERENCES = (REFERENCE, "numpy", "naive")    # run in every run, first


def add_arguments(parser):
    parser.add_argument("--backends", metavar="A,B",
                        help="only these backends (registered names or module:Class); "
                             "the references naive, numpy and optimized always run")
    parser.add_argument("--events", metavar="E,F", help="only these events (names in the config)")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="check N backends at once (timing is always one at a time)")
    parser.add_argument("--quick", action="store_true",
                        help="smaller shapes and fewer repeats; every check still runs")
    parser.add_argument("--resume", metavar="RUN_ID", help="complete an interrupted run")
    parser.add_argument("--config", default=os.path.join("leaderboard", "events.toml"),
                        help="events file (default: leaderboard/events.toml)")
    parser.add_argument("--results-dir", default=os.path.join("leaderboard", "results"))
    parser.add_argument("--board-dir", default="leaderboard",
                        help="where README.md and index.html are written")
    parser.add_argument("--shard", type=shard_argument, metavar="K/N",
                        help="run shard K of N (from 1): the references and this shard's slice "
                             "of the other backends; writes RUN_ID.shard-K-of-N.json and no "
                             "board (merge the shards with `tinytorch leaderboard`)")
    parser.add_argument("--run-id", type=results.run_id_argument, metavar="RUN_ID",
                        help="name a new run (the shards of one run share it)")
    slurm.add_arguments(parser)


def _record_contestant(record, shared_name: bool) -> Contestant:
    """A registry record as a contestant; a losing claim to a shared name is listed apart."""
    failed = record.status == "error"
    name = f"{record.name} ({record.distribution})" if failed and shared_name else record.name
    provenance = {"distribution": record.distribution, "version": record.version,
                  "entry_point": record.entry_point, "origin": record.origin,
                  "location": record.location, "files_sha256": results.files_hash(record.location),
                  "load_error": record.error if failed else None}
    return Contestant(name, record.name, record.origin == "core" and record.name in REFERENCES,
                      provenance)


def contestants(selected: list[str] | None) -> list[Contestant]:
    """References first, then the selected (default: every registered) backends."""
    from ..backends.registry import list_backends
    # Never import a submission here: its import-time code would run unconfined, as
    # this (maybe root) process. Name clashes are known without importing; import
    # errors surface in the sandboxed worker's `load`.
    records = [r for r in list_backends(load=False) if r.origin != "runtime"]
    chosen = [*REFERENCES, *(selected if selected is not None else
                             sorted({r.name for r in records} - set(REFERENCES)))]
    out = []
    for name in dict.fromkeys(chosen):
        matching = [r for r in records if r.name == name]
        if matching:
            out += [_record_contestant(r, len(matching) > 1) for r in matching]
        elif ":" in name:
            out.append(Contestant(name, name, False, {"origin": "module spec"}))
        else:
            raise SystemExit(f"tinytorch compete: unknown backend {name!r}; registered: "
                             f"{', '.join(sorted({r.name for r in records}))}")
    return out    # a stale build is reported by the worker that loads it (competition.Arena.start)


def _select_events(events, names):
    if not names:
        return events
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in {e.name for e in events}]
    if unknown:
        raise SystemExit(f"tinytorch compete: unknown event(s) {', '.join(unknown)}; events: "
                         f"{', '.join(e.name for e in events)}")
    return [e for e in events if e.name in wanted]


def new_document(rules, events, quick: bool) -> dict:
    """An empty run document: what was run, where, and under which rules."""
    return {"schema_version": results.SCHEMA_VERSION, "run_id": results.new_run_id(),
            "machine": results.machine_description(), "quick": quick,
            "rules": dataclasses.asdict(rules), "events": [e.to_dict() for e in events],
            "backends": {}, "complete": False}


def _start_document(args, rules, events):
    if args.resume:
        path = results.run_path(args.results_dir, file_stem(args.resume, args.shard))
        doc = results.load(path)
        if doc["events"] != json.loads(json.dumps([e.to_dict() for e in events])) \
                or doc.get("quick") != args.quick:
            raise results.ResultsError(f"{path} was run with other events or another --quick "
                                       f"setting; resume with the same config and flags")
        return path, doc
    doc = new_document(rules, events, args.quick)
    doc["run_id"] = args.run_id or doc["run_id"]
    doc["shard"] = str(args.shard) if args.shard else None
    path = results.run_path(args.results_dir, file_stem(doc["run_id"], args.shard))
    results.create(path, doc)
    return path, doc


def run_competition(arena, doc, path, todo, jobs):
    """Phase 1 for all (parallel), then phase 2 one backend at a time, saving after each.

    The parent's own BLAS (references, checks) runs on one thread: it leaves the
    cores to the worker being timed, and OpenBLAS's thread pool can deadlock
    when several Python threads call into it at once (the --jobs checks).
    """
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1):
        _run_phases(arena, doc, path, todo, jobs)


def _run_phases(arena, doc, path, todo, jobs):
    def check(contestant):
        started = time.perf_counter()
        rows = None if contestant.provenance.get("load_error") else arena.check(contestant)
        return rows, time.perf_counter() - started

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        checked = list(pool.map(check, todo))
    for contestant, (rows, check_seconds) in zip(todo, checked):
        started = time.perf_counter()
        row = {"name": contestant.name, "spec": contestant.spec,
               "reference": contestant.reference, **contestant.provenance}
        if rows is None:
            row["cases"] = []
        else:
            row["cases"] = (arena.measure(contestant, rows)
                            + skipped_cases(arena.events, contestant.name, arena.quick))
        row["complete"] = True
        # What planning a class-sized run needs: how long this backend took, checks and timing.
        row["seconds"] = {"check": check_seconds, "time": time.perf_counter() - started}
        row["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        doc["backends"][contestant.name] = row
        row["single_run_scores"] = single_run_scores(doc, contestant.name)
        results.write_atomic(path, doc)


def single_run_scores(doc, name) -> dict:
    """Per-event ratios, score and unranked reason of one row, as this run alone gives them.

    The single-run view, a copy for whoever reads the file: the board never reads it.
    merging.py (the board, `tinytorch leaderboard`) re-scores every file from its raw
    times with scoring.score_run, so the raw times stay the one source of truth. A row
    is scored once, when it finishes (a finished row is never rewritten); the references
    it is scored against (optimized, numpy: the impossible-time limit) run first.
    """
    scored = score_backend(doc["backends"][name], doc, best_blas_gflops(doc))
    return {key: scored[key] for key in ("events", "score", "ranked", "unranked_reason")}


def summary_table(board) -> str:
    from .board import ranked_rows
    lines = [f"{'rank':>4}  {'backend':<24} {'score':>8} {'vs naive':>9} {'of numpy':>9}  note"]
    for row in ranked_rows(board):
        score = f"{row['score']:.3f}" if row["score"] is not None else "-"
        naive = f"{row['speedup_vs_naive']:.1f}x" if row.get("speedup_vs_naive") else "-"
        numpy = f"{row['fraction_of_numpy']:.2f}" if row.get("fraction_of_numpy") else "-"
        note = ("reference" if row.get("reference") else "") if row["unranked_reason"] is None \
            else f"unranked: {row['unranked_reason']}"
        lines.append(f"{row['rank_label']:>4}  {row['name']:<24} {score:>8} {naive:>9} "
                     f"{numpy:>9}  {note}")
    return "\n".join(lines)


def run(args) -> int:
    from tqdm import tqdm

    from .board import render
    from .merging import merge
    try:
        rules, events = load_events(args.config)
    except EventsFileError as exc:
        print(f"tinytorch compete: {exc}", file=sys.stderr)
        return 2
    events = _select_events(events, args.events)
    selected = [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else None
    everyone = contestants(selected)
    field = [c.name for c in everyone if not c.reference]
    if args.emit_slurm is not None:
        return slurm.emit(args, rules, events, REFERENCES, field)
    mine = set(candidates(field, args.shard))
    everyone = [c for c in everyone if c.reference or c.name in mine]
    try:
        path, doc = _start_document(args, rules, events)
    except results.ResultsError as exc:
        print(f"tinytorch compete: {exc}", file=sys.stderr)
        return 2
    if args.shard:   # written now, so a shard that dies at once still says what it owed
        doc["field"], doc["shard_backends"] = sorted(field), [c.name for c in everyone]
        results.write_atomic(path, doc)
    todo = [c for c in everyone if not doc["backends"].get(c.name, {}).get("complete")]
    total = sum(2 * len(cases_for(events, c.name, args.quick)) for c in todo
                if not c.provenance.get("load_error"))
    with tqdm(total=total, desc="compete", unit="case", file=sys.stderr) as bar:
        arena = Arena(rules, events, args.quick, advance=lambda: bar.update(1))
        try:
            run_competition(arena, doc, path, todo, args.jobs)
        finally:
            arena.close()
    doc["complete"] = True
    results.write_atomic(path, doc)
    if args.shard:   # the other shards are still running: merge them all later
        print(summary_table(merge([(path, doc)])))
        stem = file_stem(doc["run_id"], None)
        print(f"\nresults of shard {args.shard}: {path}\nwhen every shard has finished: "
              f"tinytorch leaderboard {os.path.join(args.results_dir, stem)}.shard-*.json")
        return 0
    board = render([(path, doc)], args.board_dir)
    print(summary_table(board))
    print(f"\nresults: {path}\nboard:   {os.path.join(args.board_dir, 'README.md')}, "
          f"{os.path.join(args.board_dir, 'index.html')}")
    return 0
