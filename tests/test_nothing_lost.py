"""Nothing lost: an interrupted run keeps what finished and --resume completes it; two runs at once
do not corrupt each other's files.

Real `tinytorch compete` processes on tiny events: the references plus one
candidate (tests/fixtures/arena_backends.py:Good, loaded as module:Class).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tinytorch.arena import display

FIXTURES = Path(__file__).parent / "fixtures"
CANDIDATE = "arena_backends:Good"
BACKENDS = ("optimized", "numpy", "naive", CANDIDATE)

EVENTS = """
[rules]
wall_time_s = 10.0
memory_mb = 800
min_batch_ms = 5.0
repeats = 2

[[events]]
name = "matmul"
kind = "matmul"
dtypes = ["float32", "float64"]
shapes = [{ m = 16, k = 12, n = 20 }]

[[events]]
name = "conv2d"
kind = "conv2d"
dtypes = ["float32"]
shapes = [{ n = 1, c = 2, h = 6, w = 6, f = 2, k = 3, stride = 1, padding = 1 }]
"""

pytestmark = pytest.mark.slow


@pytest.fixture
def board():
    """A leaderboard folder any user can read (workers may run as an unprivileged user)."""
    root = Path(tempfile.mkdtemp(prefix="tinytorch-runs-"))
    os.chmod(root, 0o755)
    (root / "events.toml").write_text(EVENTS)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def compete(board: Path, *extra) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "TINYTORCH_BACKEND"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(FIXTURES), env.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, "-m", "tinytorch", "compete", "--config", str(board / "events.toml"),
         "--results-dir", str(board / "results"), "--board-dir", str(board),
         "--backends", CANDIDATE, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=board)


def finish(process, timeout=300):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def run_files(board: Path) -> list[Path]:
    return sorted((board / "results").glob("*.json"))


def read(path: Path) -> dict:
    return json.loads(path.read_text())     # a half-written file would not parse


def complete_rows(doc) -> list[str]:
    return [name for name, row in doc["backends"].items() if row.get("complete")]


def test_interrupted_run_keeps_finished_rows_and_resume_completes_it(board):
    process = compete(board)
    deadline = time.monotonic() + 300
    doc = None
    while time.monotonic() < deadline and process.poll() is None:
        files = run_files(board)
        if files:
            doc = read(files[0])
            if len(complete_rows(doc)) == 1:       # three backends still to go
                break
        time.sleep(0.02)
    else:
        finish(process)
        pytest.fail("the run ended before it could be interrupted between two backends")
    process.send_signal(signal.SIGINT)              # Ctrl-C
    code, _, err = finish(process)
    assert code != 0, "the interrupted run claims success"
    interrupted = read(run_files(board)[0])
    kept = complete_rows(interrupted)
    assert kept and not interrupted["complete"]
    assert len(kept) < len(BACKENDS)

    resumed = compete(board, "--resume", interrupted["run_id"])
    code, out, err = finish(resumed)
    assert code == 0, err[-3000:]
    assert len(run_files(board)) == 1, "resume must complete the same file, not start another"
    final = read(run_files(board)[0])
    assert final["complete"] and final["run_id"] == interrupted["run_id"]
    assert sorted(complete_rows(final)) == sorted(BACKENDS)
    for name in kept:                               # finished rows are kept, not re-run
        assert final["backends"][name] == interrupted["backends"][name]
    assert all(c["status"] == "ok" for row in final["backends"].values() for c in row["cases"])


def test_two_runs_at_once_keep_separate_intact_files(board):
    first, second = compete(board), compete(board)
    outcomes = [finish(first), finish(second)]
    for code, _, err in outcomes:
        assert code == 0, err[-3000:]
    files = run_files(board)
    assert len(files) == 2, [f.name for f in files]
    docs = [read(f) for f in files]
    assert docs[0]["run_id"] != docs[1]["run_id"]
    for doc in docs:
        assert doc["complete"] and sorted(complete_rows(doc)) == sorted(BACKENDS)
    assert not list((board / "results").glob("*.tmp")) and not list(board.glob("*.tmp"))
    readme, html = (board / "README.md").read_text(), (board / "index.html").read_text()
    # a module:Class spec is not a registry name: the board shows it as its ascii()
    assert display.markdown(display.name(CANDIDATE)) in readme
    assert html.rstrip().endswith("</html>")
