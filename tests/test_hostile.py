"""Hostile and careless submissions in one real competition run: each caught, nothing else harmed.

tests/hostile is a plugin distribution (`tinytorch-hostile`) with one entry
point per misdeed, installed with pip into a temporary folder and put on
PYTHONPATH, exactly as a student's package would be found. One `tinytorch
compete` run over all of them plus an honest submission checks that every
misdeed is named on its row, the honest row is complete and ranked, the
references stand, the board and earlier results are untouched, and no worker
process survives the run.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import run, skip_or_fail

HOSTILE = Path(__file__).parent / "hostile"

EVENTS = """
[rules]
allow_blas = false
wall_time_s = 6.0
memory_mb = 250
threads = 1
min_batch_ms = 5.0
quick_repeats = 2

[[events]]
name = "matmul"
kind = "matmul"
dtypes = ["float32"]
shapes = [{ m = 24, k = 24, n = 24 }]

[[events]]
name = "conv2d"
kind = "conv2d"
dtypes = ["float32"]
shapes = [{ n = 1, c = 3, h = 6, w = 6, f = 2, k = 3, stride = 1, padding = 1 }]
"""

#: entry point -> (status of the case that catches it, words its reason must hold)
CAUGHT_AS = {
    "hostile_blas_matmul": ("violation", "blas"),
    "hostile_blas_dot": ("violation", "blas"),
    "hostile_ctypes_blas": ("violation", "blas: opened the BLAS library"),
    "hostile_aliaser": ("violation", "aliasing"),
    "hostile_view_aliaser": ("violation", "aliasing"),
    "hostile_buffer_reuser": ("violation", "aliasing"),
    "hostile_clock": ("violation", "clock-tampering"),
    "hostile_reference": ("violation", "harness-tampering"),
    "hostile_writer": ("violation", "protected-write"),
    "hostile_ctypes_writer": ("violation", "protected-write: looked up open() through ctypes"),
    "hostile_fork_bomb": ("violation", "too-many-processes"),
    "hostile_thread_hog": ("violation", "thread-hog"),
    "hostile_memory_hog": ("memory", "memory limit"),
    "hostile_infinite_loop": ("timeout", "timed out"),
    "hostile_segfault": ("crash", "SIGSEGV"),
    "hostile_slow_import": ("timeout", "could not load backend"),
    "hostile_import_crash": ("error", "crashes on import"),
}
HONEST = "hostile_honest"
CORE_THIEF = "numpy (tinytorch-hostile)"     # claims the core name "numpy"
REFERENCES = ("optimized", "numpy", "naive")

pytestmark = pytest.mark.slow


def _worker_processes(marker: str) -> list[int]:
    """Live processes whose environment mentions `marker` (our temporary site folder)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in environ and state != "Z":
            found.append(int(entry))
    return found


@pytest.fixture(scope="module")
def hostile_run():
    """One competition over every hostile entry point; yields what a test needs to judge it."""
    if importlib.util.find_spec("setuptools") is None:   # builds the fixture offline
        skip_or_fail("setuptools is needed to build tests/hostile with --no-build-isolation")
    # A folder any user can read: the workers run as an unprivileged user when we are root.
    root = Path(tempfile.mkdtemp(prefix="tinytorch-hostile-"))
    os.chmod(root, 0o755)
    try:
        site, source = root / "site", root / "source"    # pip builds in the tree: a copy
        shutil.copytree(HOSTILE, source, ignore=shutil.ignore_patterns(
            "build", "*.egg-info", "__pycache__"))
        run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
             "--no-build-isolation", "--disable-pip-version-check", "--target", site, source])
        board = root / "leaderboard"
        results_dir = board / "results"
        results_dir.mkdir(parents=True)
        protected = {board / "events.toml": EVENTS.encode(),
                     board / "README.md": b"# the board before the run\n",
                     results_dir / "earlier-run.json": b'{"an": "earlier run"}\n'}
        for path, data in protected.items():
            path.write_bytes(data)
        env = {k: v for k, v in os.environ.items() if k != "TINYTORCH_BACKEND"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p)
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "tinytorch", "compete", "--config", str(board / "events.toml"),
             "--results-dir", str(results_dir), "--board-dir", str(board), "--jobs", "2",
             "--backends", ",".join([HONEST, *CAUGHT_AS])],
            capture_output=True, text=True, env=env, cwd=root, timeout=900)
        seconds = time.monotonic() - started
        assert done.returncode == 0, f"compete failed\n{done.stdout}\n{done.stderr[-5000:]}"
        run_files = [p for p in results_dir.glob("*.json") if p.name != "earlier-run.json"]
        assert len(run_files) == 1, sorted(p.name for p in results_dir.iterdir())
        doc = json.loads(run_files[0].read_text())
        leftovers = _worker_processes(str(site))
        yield {"doc": doc, "protected": protected, "board": board, "results_dir": results_dir,
               "leftovers": leftovers, "seconds": seconds, "stdout": done.stdout}
    finally:
        for pid in _worker_processes(str(root)):   # never leave a fork bomb behind
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        shutil.rmtree(root, ignore_errors=True)


def _catching_case(row, status, words):
    """The first case of `row` with `status` whose reason holds `words`, else None."""
    return next((c for c in row.get("cases", [])
                 if c.get("status") == status and words in (c.get("reason") or "")), None)


@pytest.mark.parametrize("entry", sorted(CAUGHT_AS))
def test_each_hostile_submission_is_caught_with_its_reason(hostile_run, entry):
    row = hostile_run["doc"]["backends"][entry]
    status, words = CAUGHT_AS[entry]
    assert row["complete"]
    assert _catching_case(row, status, words), \
        f"{entry}: no {status!r} case mentioning {words!r}: " \
        f"{[(c['status'], c.get('reason')) for c in row['cases']]}"


def test_rule_breakers_are_unranked(hostile_run):
    from tinytorch.arena.scoring import score_run
    scores = score_run(hostile_run["doc"])
    for entry, (status, _) in CAUGHT_AS.items():
        if status in ("violation", "crash", "error"):
            assert not scores[entry]["ranked"], entry
            assert scores[entry]["unranked_reason"], entry


def test_the_honest_submission_gets_a_complete_correct_ranked_row(hostile_run):
    from tinytorch.arena.scoring import score_run
    row = hostile_run["doc"]["backends"][HONEST]
    assert row["complete"] and row["cases"]
    for case in row["cases"]:
        assert case["status"] == "ok", case
        assert case["time_ms"]["median"] > 0 and case["error"] <= 1e-4
    score = score_run(hostile_run["doc"])[HONEST]
    assert score["ranked"] and score["score"] > 0


def test_references_stand_and_numpy_may_use_blas(hostile_run):
    for name in REFERENCES:
        row = hostile_run["doc"]["backends"][name]
        assert row["reference"] and row["complete"]
        assert all(c["status"] == "ok" for c in row["cases"]), (name, row["cases"])


def test_a_submission_claiming_a_core_name_is_listed_with_the_error(hostile_run):
    row = hostile_run["doc"]["backends"][CORE_THIEF]
    assert "belongs to a core backend" in row["load_error"]
    assert not row["cases"]
    assert hostile_run["doc"]["backends"]["numpy"]["distribution"] == "tinytorch"


def test_board_and_earlier_results_are_untouched(hostile_run):
    forged = b'"hostile_writer": "rank 1"'     # what both writers append to every file they find
    for path, data in hostile_run["protected"].items():
        if path.name == "README.md":    # the run renders the board anew; the worker may not
            assert forged not in path.read_bytes()
        else:
            assert path.read_bytes() == data, f"{path} was changed"
    names = sorted(p.name for p in hostile_run["results_dir"].iterdir())
    assert "forged.json" not in names and not (hostile_run["board"] / "forged.json").exists()
    assert not [n for n in names if n.endswith(".tmp")], names


def test_no_worker_process_survives_the_run(hostile_run):
    assert hostile_run["leftovers"] == [], f"processes left behind: {hostile_run['leftovers']}"


def test_summary_of_hostile_cases(hostile_run, capsys):
    caught = [e for e, (status, words) in CAUGHT_AS.items()
              if _catching_case(hostile_run["doc"]["backends"][e], status, words)]
    with capsys.disabled():
        print(f"\nhostile cases tried: {len(CAUGHT_AS)}, caught: {len(caught)} "
              f"(one compete run, {hostile_run['seconds']:.0f} s)")
    assert len(caught) == len(CAUGHT_AS)
