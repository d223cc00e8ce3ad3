"""`tinytorch compete --emit-slurm N`: a Slurm job-array script, one array task per shard.

Each task takes a whole node (`--exclusive`, so nobody else's job skews the
timings) and runs `tinytorch compete --shard K/N`; CPUs, memory and the wall
time come from the rules of events.toml and the size of the largest shard. A
dependent job (`--dependency=afterany:<array>`) merges the shards' files and
renders the board once every task has ended, whether it succeeded or not, so a
dead node costs its own shard only and the board lists it missing.

The script submits itself: `bash FILE` on the login node submits the array and
the board job; `sbatch FILE` works too (its first task submits the board job).
"""
from __future__ import annotations

import datetime
import glob
import math
import os
import shlex
import shutil
import sys
from pathlib import Path

from . import results
from .events import Rules
from .sharding import Shard, candidates

PARENT_MB = 1024          # the competition's own process (inputs, references) besides a worker
MARGIN_S = 600            # scheduling, imports and builds on top of the time budget
BOARD_JOB = {"cpus": 1, "mem_mb": 2048, "time_s": 900}


def add_arguments(parser) -> None:
    """`compete`'s options that write a Slurm script instead of competing."""
    parser.add_argument("--emit-slurm", type=int, metavar="N",
                        help="write a Slurm job-array script running the competition in N shards "
                             "(one whole node each) plus a job that renders the board after them")
    parser.add_argument("--partition", metavar="P", help="with --emit-slurm: the Slurm partition")
    parser.add_argument("--output", metavar="FILE", default="compete.slurm",
                        help="with --emit-slurm: where to write the script (default: compete.slurm)")


def slurm_time(seconds: float) -> str:
    """Seconds as Slurm's [D-]HH:MM:SS."""
    seconds = int(math.ceil(seconds))
    days, rest = divmod(seconds, 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


def shard_time_limit(rules: Rules, events, backends_in_largest_shard: int) -> float:
    """An upper bound on one shard's wall time: every backend checked and timed at its budget."""
    per_backend = 2 * sum(e.time_budget_s or rules.wall_time_s for e in events)
    return backends_in_largest_shard * per_backend + MARGIN_S


def resources(rules: Rules, events, backends_in_largest_shard: int) -> dict:
    """What one array task asks Slurm for."""
    return {"cpus": rules.threads,
            "mem_mb": rules.memory_mb + PARENT_MB,
            "time_s": shard_time_limit(rules, events, backends_in_largest_shard)}


def backend_seconds(row) -> float | None:
    """How long `compete` spent on one backend (checks and timing), as its row records it."""
    seconds = row.get("seconds")
    return sum(seconds.values()) if seconds else None


def latest_timings(results_dir, quick: bool):
    """(file, {backend: seconds}, reference names) of the newest finished run that recorded them
    (with the same --quick setting)."""
    found = []
    for path in glob.glob(os.path.join(os.fspath(results_dir), "*.json")):
        try:
            doc = results.load(path)
        except results.ResultsError:
            continue
        rows = {n: backend_seconds(r) for n, r in doc["backends"].items()}
        rows = {n: s for n, s in rows.items() if s is not None}
        if doc.get("complete") and rows and bool(doc.get("quick")) == quick:
            refs = [n for n, r in doc["backends"].items() if r.get("reference")]
            found.append((doc["machine"].get("date") or "", path, rows, refs))
    return max(found)[1:] if found else None


def estimate(timings, shard_sizes) -> str:
    """The expected wall time of the array from an earlier run's per-backend seconds."""
    path, rows, refs = timings
    ref_s = sum(rows[n] for n in refs if n in rows)
    others = sorted(s for n, s in rows.items() if n not in refs)
    if not others:
        return (f"{os.path.basename(path)} recorded only the references ({ref_s:.0f} s per "
                f"shard); time one submission too to estimate the array")
    median = others[len(others) // 2]
    largest = max(shard_sizes)
    expected = ref_s + largest * median
    return (f"from {os.path.basename(path)}: the references take {ref_s:.0f} s in every shard "
            f"and a submission a median {median:.0f} s (slowest {others[-1]:.0f} s), so the "
            f"largest shard ({largest} submissions) needs about {expected / 60:.1f} min and the "
            f"array ends when it does")


def tinytorch_command() -> str:
    """The `tinytorch` of this environment (nodes must see the same path: a shared install)."""
    here = Path(sys.executable).parent / "tinytorch"
    if here.exists():
        return str(here)
    return shutil.which("tinytorch") or f"{sys.executable} -m tinytorch"


def task_options(*, backends=None, events=None, jobs=1, quick=False) -> str:
    """The `compete` options each task repeats: it runs the field and events the script was sized
    for (the time limit counts only those)."""
    options = [*(["--backends", backends] if backends else []),
               *(["--events", events] if events else []),
               *(["--jobs", str(jobs)] if jobs != 1 else []),
               *(["--quick"] if quick else [])]
    return "".join(f" {shlex.quote(o)}" for o in options)


def batch_script(*, shards: int, rules: Rules, events, references, shard_sizes,
                 events_file, results_dir, board_dir, workdir, partition=None,
                 quick=False, backends=None, event_names=None, jobs=1, run_id=None) -> str:
    """The text of the job-array script (absolute paths: tasks start on other nodes).

    `backends` and `event_names` are compete's --backends and --events as given;
    `run_id` (--run-id) replaces the default run id slurm-<array job id>.
    """
    largest = len(references) + max(shard_sizes)
    need = resources(rules, events, largest)
    tinytorch = tinytorch_command()
    results_dir, board_dir = Path(results_dir).resolve(), Path(board_dir).resolve()
    q = shlex.quote
    part = [f"#SBATCH --partition={partition}"] if partition else []
    part_opt = f" --partition={q(partition)}" if partition else ""
    options = task_options(backends=backends, events=event_names, jobs=jobs, quick=quick)
    default_run = run_id or "slurm-$array"
    b = BOARD_JOB
    return "\n".join([
        "#!/bin/bash",
        f"# tinytorch competition on Slurm: {sum(shard_sizes)} submissions in {shards} shards "
        f"(sizes {', '.join(map(str, shard_sizes))});",
        f"# the references ({', '.join(references)}) run in every shard.",
        f"# Generated by `tinytorch compete --emit-slurm {shards}` on "
        f"{datetime.date.today().isoformat()} from {Path(events_file).resolve()}.",
        "#",
        "#   bash THIS_FILE     submit the array and the job that renders the board after it",
        "#   sbatch THIS_FILE   the same (its first task submits the board job)",
        "#",
        f"# Each task: a whole node, {need['cpus']} CPU(s) for a worker's threads, "
        f"{need['mem_mb']} MB (a worker's {rules.memory_mb} MB",
        f"# plus the parent), at most {slurm_time(need['time_s'])} "
        f"({largest} backends, each checked and timed within its event budgets).",
        "# Nodes run the kernels built where this environment lives: build with",
        "# TINYTORCH_PORTABLE=1 unless every node has the same CPU (a foreign build dies of SIGILL",
        "# and the board says 'built for another CPU').",
        "#SBATCH --job-name=tinytorch-compete",
        f"#SBATCH --array=1-{shards}",
        "#SBATCH --exclusive",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
        f"#SBATCH --cpus-per-task={need['cpus']}",
        f"#SBATCH --mem={need['mem_mb']}M",
        f"#SBATCH --time={slurm_time(need['time_s'])}",
        *part,
        f"#SBATCH --chdir={Path(workdir).resolve()}",
        f"#SBATCH --output={results_dir}/slurm-%A_%a.out",
        "set -euo pipefail",
        f"TINYTORCH={q(tinytorch)}",
        f"EVENTS={q(str(Path(events_file).resolve()))}",
        f"RESULTS={q(str(results_dir))}",
        f"BOARD={q(str(board_dir))}",
        f"SHARDS={shards}",
        "",
        "submit_board() {  # $1: the array to wait for (afterany: however its tasks end);",
        "                  # $2: the run whose shard files the board merges",
        "  # The board job's script comes on stdin; \\$ marks what it expands when it runs.",
        "  sbatch --parsable --job-name=tinytorch-board --dependency=afterany:\"$1\" \\",
        f"    --ntasks=1 --cpus-per-task={b['cpus']} --mem={b['mem_mb']}M "
        f"--time={slurm_time(b['time_s'])}{part_opt} \\",
        f"    --chdir={q(str(Path(workdir).resolve()))} "
        "--output=\"$RESULTS/slurm-%j-board.out\" <<EOF",
        "#!/bin/bash",
        "shopt -s nullglob",
        "files=(\"$RESULTS\"/$2.shard-*.json)",
        "if [ \\${#files[@]} -eq 0 ]; then    # the board lists missing shards only if one arrived",
        "  echo \"no shard of run $2 wrote a results file: all $SHARDS shards (1-$SHARDS) are\" \\",
        "       \"missing; their logs: $RESULTS/slurm-$1_*.out\" >&2",
        "  exit 1",
        "fi",
        "exec $TINYTORCH leaderboard --board-dir \"$BOARD\" \"\\${files[@]}\"",
        "EOF",
        "}",
        "",
        "# The run id names the shards' files. Re-run a failed shard K into the same run with",
        *(["#   bash THIS_FILE --array=K"] if run_id else
          ["#   TINYTORCH_RUN_ID=slurm-<first array id> bash THIS_FILE --array=K"]),
        'if [ -z "${SLURM_ARRAY_TASK_ID:-}" ]; then   # by hand, on the login node',
        '  mkdir -p "$RESULTS"',
        '  array=$(sbatch --parsable --export=ALL,TINYTORCH_BOARD_JOB=submitted "$@" "$0")',
        "  array=${array%%;*}",
        f'  run_id=${{TINYTORCH_RUN_ID:-{default_run}}}',
        '  board=$(submit_board "$array" "$run_id")',
        '  echo "submitted array job $array (run $run_id, $SHARDS shards) and board job $board '
        '(after the array)"',
        '  echo "watch: squeue -j $array,$board    results: $RESULTS    board: $BOARD/README.md"',
        "  exit 0",
        "fi",
        "",
        f'run_id=${{TINYTORCH_RUN_ID:-{run_id or "slurm-$SLURM_ARRAY_JOB_ID"}}}',
        "# Submitted with sbatch: the first task submits the board job, exactly once.",
        'if [ -z "${TINYTORCH_BOARD_JOB:-}" ] && '
        'mkdir "$RESULTS/.board-$SLURM_ARRAY_JOB_ID" 2>/dev/null; then',
        '  echo "board job $(submit_board "$SLURM_ARRAY_JOB_ID" "$run_id") renders the board '
        'after this array"',
        "fi",
        "",
        'if [ -f "$RESULTS/$run_id.shard-$SLURM_ARRAY_TASK_ID-of-$SHARDS.json" ]; then',
        '  run=(--resume "$run_id")    # a re-run or requeued task completes what was begun',
        "else",
        '  run=(--run-id "$run_id")',
        "fi",
        'echo "shard $SLURM_ARRAY_TASK_ID/$SHARDS of run $run_id on $(hostname)"',
        'exec $TINYTORCH compete --shard "$SLURM_ARRAY_TASK_ID/$SHARDS" "${run[@]}" \\',
        f'  --config "$EVENTS" --results-dir "$RESULTS"{options}',
        ""])


def emit(args, rules, events, references, field) -> int:
    """Write the script for `field` (candidate names) in args.emit_slurm shards; print how to run it."""
    shards = args.emit_slurm
    if shards < 1:
        print(f"tinytorch compete: --emit-slurm {shards}: the number of shards must be at least 1",
              file=sys.stderr)
        return 2
    sizes = [len(candidates(field, Shard(k, shards))) for k in range(1, shards + 1)]
    text = batch_script(shards=shards, rules=rules, events=events, references=references,
                        shard_sizes=sizes, events_file=args.config, results_dir=args.results_dir,
                        board_dir=args.board_dir, workdir=os.getcwd(), partition=args.partition,
                        quick=args.quick, backends=args.backends, event_names=args.events,
                        jobs=args.jobs, run_id=args.run_id)
    # Slurm opens each task's output file in the results folder before the task starts.
    os.makedirs(args.results_dir, exist_ok=True)
    with open(args.output, "w") as f:
        f.write(text)
    os.chmod(args.output, 0o755)
    print(f"wrote {args.output}: {len(field)} submissions in {shards} shards (largest "
          f"{max(sizes)}, smallest {min(sizes)}) plus the references in every shard.")
    timings = latest_timings(args.results_dir, args.quick)
    limit = slurm_time(shard_time_limit(rules, events, len(references) + max(sizes)))
    print("expected time " + (estimate(timings, sizes) if timings else
          f"unknown: no finished run in {args.results_dir} recorded per-backend times yet") +
          f"; each task may take up to {limit} (--time).")
    print(f"Submit it on the login node with:  bash {args.output}   (or: sbatch {args.output})")
    return 0
