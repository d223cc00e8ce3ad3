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

from . import results, sandbox, slurm
from ..backends.registry import display_name, quoted_name
from ..backends.staleness import stale_rebuild_command_at, stale_warning, top_package_dir
from .submission_files import files_hash, forbidden_imports
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
    parser.add_argument("--publish", action="store_true",
                        help="write the run into the course's leaderboard/ (results/ and the "
                             "board); without it compete writes into tinytorch-runs/ and never "
                             "over the published board")
    parser.add_argument("--results-dir", default=None,
                        help="where run files go (default: results/ under the board folder)")
    parser.add_argument("--board-dir", default=None,
                        help="where README.md and index.html are written (default: "
                             "leaderboard with --publish, else tinytorch-runs)")
    parser.add_argument("--shard", type=shard_argument, metavar="K/N",
                        help="run shard K of N (from 1): the references and this shard's slice "
                             "of the other backends; writes RUN_ID.shard-K-of-N.json and no "
                             "board (merge the shards with `tinytorch leaderboard`)")
    parser.add_argument("--run-id", type=results.run_id_argument, metavar="RUN_ID",
                        help="name a new run (the shards of one run share it)")
    parser.add_argument("--unsandboxed", action="store_true",
                        help="run workers without the bubblewrap sandbox: for a field you trust "
                             "completely; the board says so")
    slurm.add_arguments(parser)


def _record_contestant(record, shared_name: bool) -> Contestant:
    """A registry record as a contestant; a losing claim to a shared name is listed apart.

    The parent reads the submission's files (hash, static check) with caps and
    never imports it. A compiled extension importing what the rules forbid is
    a violation found before any of its code runs.
    """
    failed = record.status == "error"
    name = f"{record.name} ({record.distribution})" if failed and shared_name else record.name
    core = record.origin == "core"
    forbidden = [] if core else forbidden_imports(record.location)
    module = (record.entry_point or "").partition(":")[0].strip()
    stale = stale_rebuild_command_at(top_package_dir(record.location, module)) if module else None
    provenance = {"distribution": record.distribution, "version": record.version,
                  "entry_point": record.entry_point, "origin": record.origin,
                  "location": record.location, "files_sha256": files_hash(record.location),
                  "load_error": record.error if failed else None,
                  "violation": (f"rule violation: forbidden-symbols: {'; '.join(forbidden)}"
                                if forbidden else None),
                  "stale": stale}
    return Contestant(name, record.name, core and record.name in REFERENCES, provenance)


class UnknownBackend(ValueError):
    """A backend name that nothing registers (the message lists the registered ones)."""


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
        elif ":" in name:      # the instructor's own "module:Class", never a registered name
            out.append(Contestant(name, name, False, {"origin": "module spec"}, explicit=True))
        else:
            raise UnknownBackend(f"unknown backend {quoted_name(name)}; registered: "
                                 f"{', '.join(sorted(display_name(r.name) for r in records))}")
    for contestant in out:
        if contestant.provenance.get("stale"):
            print(stale_warning(display_name(contestant.name), contestant.provenance["stale"]),
                  file=sys.stderr)
    return out


def _select_events(events, names):
    if not names:
        return events
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in {e.name for e in events}]
    if unknown:
        raise SystemExit(f"tinytorch compete: unknown event(s) {', '.join(unknown)}; events: "
                         f"{', '.join(e.name for e in events)}")
    return [e for e in events if e.name in wanted]


def new_document(rules, events, quick: bool, isolation: dict | None = None) -> dict:
    """An empty run document: what was run, where, under which rules and which isolation."""
    return {"schema_version": results.SCHEMA_VERSION, "run_id": results.new_run_id(),
            "machine": results.machine_description(), "quick": quick,
            "isolation": isolation or isolation_record(True),
            "blas_gflops": blas_gflops(rules.threads),
            "rules": dataclasses.asdict(rules), "events": [e.to_dict() for e in events],
            "backends": {}, "complete": False}


def blas_gflops(threads: int, size: int = 512) -> dict:
    """The parent's own BLAS rate (numpy, `threads` threads) on a size^3 matmul per dtype:
    the ceiling the board draws and twice of which is an impossible time."""
    import time

    import numpy as np
    from threadpoolctl import threadpool_limits
    rates = {}
    with threadpool_limits(threads):
        for dtype in ("float32", "float64"):
            a = np.random.default_rng(0).random((size, size)).astype(dtype)
            best = float("inf")
            for _ in range(5):
                start = time.perf_counter()
                a @ a
                best = min(best, time.perf_counter() - start)
            rates[dtype] = 2.0 * size ** 3 / best / 1e9
    return rates


def isolation_record(sandboxed: bool) -> dict:
    """How the run's workers were confined, as the board reports it."""
    if not sandboxed:
        return {"sandboxed": False, "tool": None, "mode": None}
    return {"sandboxed": True, "tool": sandbox.check_available(),
            "mode": "root" if os.geteuid() == 0 else "user"}


def _start_document(args, rules, events):
    if args.resume:
        path = results.run_path(args.results_dir, file_stem(args.resume, args.shard))
        doc = results.load(path)
        if doc["events"] != json.loads(json.dumps([e.to_dict() for e in events])) \
                or doc.get("quick") != args.quick:
            raise results.ResultsError(f"{path} was run with other events or another --quick "
                                       f"setting; resume with the same config and flags")
        return path, doc
    doc = new_document(rules, events, args.quick, isolation_record(not args.unsandboxed))
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
        blocked = contestant.provenance.get("load_error") or contestant.provenance.get("violation")
        rows = None if blocked else arena.check(contestant)
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
    """The board's ranking for the terminal; names and reasons shown as the board shows them
    (a name or a reason may carry terminal escape codes)."""
    from . import display
    from .board import ranked_rows
    lines = [f"{'rank':>4}  {'backend':<24} {'score':>8} {'of numpy':>9}  note"]
    for row in ranked_rows(board):
        score = f"{row['score']:.3f}" if row["score"] is not None else "-"
        numpy = f"{row['fraction_of_numpy']:.2f}" if row.get("fraction_of_numpy") else "-"
        note = ("reference" if row.get("reference") else "") if row["unranked_reason"] is None \
            else f"unranked: {display.text(row['unranked_reason'], 160)}"
        lines.append(f"{row['rank_label']:>4}  {display.name(row['name']):<24} {score:>8} "
                     f"{numpy:>9}  {note}")
    return "\n".join(lines)


def bench(contestant: Contestant, rules, events, quick: bool, isolate: bool) -> dict:
    """`tinytorch check NAME --bench`: the board's events and rules for one backend beside
    the references, run by the same code as `tinytorch compete` and scored as the board
    scores it (per-event ratios, score, unranked reason). Writes nothing the course keeps."""
    import tempfile

    from tqdm import tqdm
    field = [c for c in contestants([]) if c.reference] + [contestant]
    doc = new_document(rules, events, quick, isolation_record(isolate))
    total = sum(2 * len(cases_for(events, c.name, quick)) for c in field)
    with tempfile.TemporaryDirectory() as folder, \
            tqdm(total=total, desc="bench", unit="case", file=sys.stderr) as bar:
        arena = Arena(rules, events, quick, advance=lambda: bar.update(1), isolate=isolate)
        try:
            run_competition(arena, doc, results.run_path(folder, doc["run_id"]), field, jobs=1)
        finally:
            arena.close()
    scored = score_backend(doc["backends"][contestant.name], doc, best_blas_gflops(doc))
    return {"events": {e.name: scored["events"].get(e.name) for e in events},
            "score": scored["score"], "unranked_reason": scored["unranked_reason"],
            "threads": rules.threads, "quick": quick}


PUBLISHED, PRIVATE = "leaderboard", "tinytorch-runs"


def output_folders(args) -> None:
    """Fill in --results-dir and --board-dir: the course's board only with --publish."""
    board = args.board_dir or (PUBLISHED if args.publish else PRIVATE)
    args.board_dir = board
    args.results_dir = args.results_dir or os.path.join(board, "results")


def run(args) -> int:
    from tqdm import tqdm

    from .board import render
    from .merging import merge
    output_folders(args)
    try:
        rules, events = load_events(args.config)
    except EventsFileError as exc:
        print(f"tinytorch compete: {exc}", file=sys.stderr)
        return 2
    events = _select_events(events, args.events)
    if not args.unsandboxed and args.emit_slurm is None:
        try:
            sandbox.check_available()
        except sandbox.SandboxUnavailable as exc:
            print(f"tinytorch compete: refusing to run submissions without a sandbox: {exc}. "
                  f"(For a field you trust completely, --unsandboxed runs without one.)",
                  file=sys.stderr)
            return 2
    selected = [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else None
    try:
        everyone = contestants(selected)
    except UnknownBackend as exc:
        print(f"tinytorch compete: {exc}", file=sys.stderr)
        return 2
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
                if not (c.provenance.get("load_error") or c.provenance.get("violation")))
    with tqdm(total=total, desc="compete", unit="case", file=sys.stderr) as bar:
        hidden = [args.results_dir, args.board_dir,
                  *(c.location for c in everyone if c.location and not c.reference)]
        arena = Arena(rules, events, args.quick, advance=lambda: bar.update(1),
                      isolate=not args.unsandboxed, hidden_paths=hidden)
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
    if not args.publish and os.path.abspath(args.board_dir) != os.path.abspath(PUBLISHED):
        print(f"(your own folder, not the course's board; `tinytorch compete --publish` writes "
              f"{PUBLISHED}/)")
    return 0
