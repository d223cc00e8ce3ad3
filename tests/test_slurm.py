"""The competition on Slurm: the emitted job-array script, the CI workflow, and a real cluster.

The slow tests start munged, slurmctld and slurmd as root (tests/slurm_cluster.py)
once for this module and stop them afterwards. Where Slurm cannot start they skip
with the reason locally; with CI=true they fail, since .ci/run installs slurm-wlm
and munge.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import REPO, run, skip_or_fail
from slurm_cluster import SlurmUnavailable, slurm_cluster
from tinytorch.arena import merging
from tinytorch.arena.sharding import shard_index

REFERENCES = ("naive", "numpy", "optimized")
# The field of the cluster tests. Two test-only plugins join alice and bob so that
# every shard of three has a submission (the split depends only on the names):
# grace lands in shard 1, erin in 2, alice and bob in 3.
FIELD = {"grace": 1, "erin": 2, "alice": 3, "bob": 3}
FIELD_MODULE = '''
"""Test-only plugins: optimized under another name, and a deliberately slow copy."""
from tinytorch.backends.optimized import OptimizedBackend

SLOW_REPEATS = 30


class SameAsOptimized(OptimizedBackend):
    pass


def _repeated(operation, *args):
    for _ in range(SLOW_REPEATS - 1):
        operation(*args)
    return operation(*args)


class Slow(OptimizedBackend):
    """Every result computed SLOW_REPEATS times: far below the others on any machine."""

    def matmul(self, a, b):
        return _repeated(super().matmul, a, b)

    def conv2d(self, x, w, stride, padding):
        return _repeated(super().conv2d, x, w, stride, padding)
'''
# A matmul big enough that BLAS runs near its rate (the impossible-time rule compares
# every rate with it); naive runs only the first, small shape of each event.
EVENTS_TOML = """
[rules]
wall_time_s = 60.0
quick_repeats = 3
min_batch_ms = 10.0

[[events]]
name = "matmul"
kind = "matmul"
dtypes = ["float32"]
naive_shapes = 1
shapes = [{ m = 48, k = 40, n = 56 }, { m = 256, k = 256, n = 256 }]
quick_shapes = [{ m = 48, k = 40, n = 56 }, { m = 256, k = 256, n = 256 }]

[[events]]
name = "conv2d"
kind = "conv2d"
dtypes = ["float32"]
naive_shapes = 1
shapes = [{ n = 1, c = 4, h = 10, w = 10, f = 4, k = 3, stride = 1, padding = 1 },
          { n = 2, c = 16, h = 16, w = 16, f = 16, k = 3, stride = 1, padding = 1 }]
quick_shapes = [{ n = 1, c = 4, h = 10, w = 10, f = 4, k = 3, stride = 1, padding = 1 },
                { n = 2, c = 16, h = 16, w = 16, f = 16, k = 3, stride = 1, padding = 1 }]
"""


def tinytorch(*args, cwd, env=None, check=True):
    cmd = [sys.executable, "-m", "tinytorch", *map(str, args)]
    if check:
        return run(cmd, cwd=cwd, env=env)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)


def emit(work: Path, *args, env=None) -> str:
    """Write work/compete.slurm for work/events.toml; returns the script's text."""
    tinytorch("compete", "--emit-slurm", "3", "--config", work / "events.toml",
              "--results-dir", work / "results", "--board-dir", work / "board",
              "--output", work / "compete.slurm", *args, cwd=work, env=env)
    return (work / "compete.slurm").read_text()


@pytest.fixture
def work(tmp_path) -> Path:
    tmp_path.chmod(0o755)      # array tasks and sandboxed workers read from here
    (tmp_path / "events.toml").write_text(EVENTS_TOML)
    return tmp_path


# ---------------------------------------------------------------- the script, without a cluster

def test_the_script_takes_its_resources_from_events_toml(work):
    (work / "events.toml").write_text(EVENTS_TOML.replace(
        "wall_time_s = 60.0", "wall_time_s = 30.0\nmemory_mb = 1000\nthreads = 2"))
    text = emit(work, "--backends", "alice,bob", "--partition", "students")
    assert "#SBATCH --array=1-3" in text
    assert "#SBATCH --exclusive" in text
    assert "#SBATCH --cpus-per-task=2" in text                 # a worker's threads
    assert "#SBATCH --mem=2024M" in text                       # a worker's memory + the parent
    # alice and bob share shard 3: 3 references + 2, each checked and timed within
    # 2 events x 30 s, plus 10 minutes: 5 x 120 s + 600 s = 20 minutes.
    assert "#SBATCH --time=00:20:00" in text
    assert "#SBATCH --partition=students" in text
    assert f"#SBATCH --output={work / 'results'}/slurm-%A_%a.out" in text
    assert "--dependency=afterany:" in text and "--partition=students" in text.split(
        "submit_board()")[1]
    assert (work / "results").is_dir()          # Slurm opens the task outputs there
    assert os.access(work / "compete.slurm", os.X_OK)
    run(["bash", "-n", work / "compete.slurm"])
    # Each task runs the field the time limit was computed for, not every registered backend.
    assert _task_options(text)["--backends"] == "alice,bob"


def _task_options(text) -> dict:
    """The options of the `compete` each array task runs, as {option: value or True}."""
    task = text.split("exec $TINYTORCH compete", 1)[1].split("\n\n", 1)[0]
    words = shlex.split(task.replace("\\\n", " "))
    options = {}
    for i, word in enumerate(words):
        if word.startswith("--"):
            value = words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith("--") \
                else True
            options[word] = value
    return options


def test_each_task_runs_the_backends_events_jobs_and_run_id_it_was_emitted_for(work):
    text = emit(work, "--backends", "alice", "--events", "matmul", "--jobs", "2",
                "--run-id", "week-7", "--quick")
    options = _task_options(text)
    assert options["--backends"] == "alice" and options["--events"] == "matmul"
    assert options["--jobs"] == "2" and options["--quick"] is True
    # One event: 3 references + alice, each checked and timed within 60 s: 4 x 120 s + 600 s.
    assert "#SBATCH --time=00:18:00" in text
    # The run id names the files whether submitted by bash or sbatch, and a re-run resumes it.
    assert "run_id=${TINYTORCH_RUN_ID:-week-7}" in text
    assert "slurm-$array" not in text and "slurm-$SLURM_ARRAY_JOB_ID" not in text
    assert 'run=(--run-id "$run_id")' in text and 'run=(--resume "$run_id")' in text
    run(["bash", "-n", work / "compete.slurm"])

    plain = _task_options(emit(work))       # nothing chosen: every backend and event, one job
    assert not {"--backends", "--events", "--jobs", "--quick"} & set(plain)


def test_emit_says_how_to_submit_and_bad_counts_are_clear(work):
    done = tinytorch("compete", "--emit-slurm", "3", "--config", work / "events.toml",
                     "--results-dir", work / "results", "--output", work / "x.slurm", cwd=work)
    assert f"bash {work / 'x.slurm'}" in done.stdout
    bad = tinytorch("compete", "--emit-slurm", "0", "--config", work / "events.toml",
                    "--output", work / "y.slurm", cwd=work, check=False)
    assert bad.returncode == 2 and "at least 1" in bad.stderr and "Traceback" not in bad.stderr
    assert not (work / "y.slurm").exists()


def test_emit_estimates_the_time_from_the_seconds_an_earlier_run_recorded(work):
    from tinytorch.arena import results

    def row(name, seconds):
        return {"name": name, "reference": name in REFERENCES, "complete": True, "cases": [],
                "seconds": {"check": seconds / 4, "time": seconds * 3 / 4}}
    seconds = {"naive": 30, "numpy": 10, "optimized": 20, "alice": 40, "bob": 50, "carol": 90}
    results.write_atomic(work / "results" / "earlier.json", {
        "schema_version": results.SCHEMA_VERSION, "run_id": "earlier", "quick": True,
        "complete": True, "machine": {"date": "2026-11-01"}, "events": [],
        "backends": {n: row(n, s) for n, s in seconds.items()}})
    done = tinytorch("compete", "--emit-slurm", "3", "--quick", "--backends", "alice,bob",
                     "--config", work / "events.toml", "--results-dir", work / "results",
                     "--output", work / "x.slurm", cwd=work)
    # alice and bob share shard 3: 60 s of references + 2 x the median submission (50 s).
    assert ("references take 60 s in every shard and a submission a median 50 s (slowest 90 s), "
            "so the largest shard (2 submissions) needs about 2.7 min") in done.stdout
    full = tinytorch("compete", "--emit-slurm", "3", "--config", work / "events.toml",
                     "--results-dir", work / "results", "--output", work / "x.slurm", cwd=work)
    assert "expected time unknown" in full.stdout     # a --quick run says nothing of a full one


FAKE_SBATCH = """#!/bin/bash
# Records each submission (its options, and the script when it comes on stdin); prints a job id.
n=$(ls "$SUBMITTED"/*.args 2>/dev/null | wc -l)
printf '%s\\n' "$@" > "$SUBMITTED/$n.args"
cat > "$SUBMITTED/$n.stdin"
echo $((700 + n))
"""


def test_the_board_job_says_when_no_shard_wrote_a_file(work):
    """What the board job runs, taken from a stand-in sbatch: no shard file is a clear message."""
    emit(work)
    fake, submitted = work / "bin", work / "submitted"
    fake.mkdir(), submitted.mkdir()
    (fake / "sbatch").write_text(FAKE_SBATCH)
    (fake / "sbatch").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}",
           "SUBMITTED": str(submitted)}
    done = run(["bash", work / "compete.slurm"], env=env, cwd=work, stdin=subprocess.DEVNULL)
    assert "array job 700 (run slurm-700, 3 shards) and board job 701" in done.stdout
    assert "--dependency=afterany:700" in (submitted / "1.args").read_text().split("\n")
    board_job = submitted / "1.stdin"

    nothing = subprocess.run(["bash", board_job], capture_output=True, text=True)
    assert nothing.returncode == 1
    assert nothing.stderr == (f"no shard of run slurm-700 wrote a results file: all 3 shards "
                              f"(1-3) are missing; their logs: {work / 'results'}/slurm-700_*.out\n")

    # One shard arrived: the board merges it and lists the other two missing.
    tinytorch("compete", "--shard", "1/3", "--run-id", "slurm-700", "--quick", "--events",
              "matmul", "--backends", "alice", "--config", work / "events.toml",
              "--results-dir", work / "results", cwd=work)
    run(["bash", board_job])
    board = (work / "board" / "README.md").read_text()
    assert "shard 2/3 of run slurm-700 is missing" in board
    assert "shard 3/3 of run slurm-700 is missing" in board


def _workflow_commands():
    """Every `tinytorch ...` command of the CI workflow, with sample matrix values."""
    text = (REPO / "leaderboard" / "ci" / "competition.yml").read_text()
    samples = {"${{ matrix.shard }}": "2", "${{ inputs.shards }}": "4",
               "${{ inputs.quick && '--quick' || '' }}": "--quick", '"$RUN_ID"': "ci-7-1"}
    commands, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if line.startswith(("tinytorch ", "run: tinytorch ")):
            command = line.split("run: ", 1)[-1]
        elif line == "run: >" and lines[i].strip().startswith("tinytorch"):
            indent = len(lines[i]) - len(lines[i].lstrip())
            block = []
            while i < len(lines) and lines[i].strip() and \
                    len(lines[i]) - len(lines[i].lstrip()) >= indent:
                block.append(lines[i].strip())
                i += 1
            command = " ".join(block)
        else:
            continue
        for key, value in samples.items():
            command = command.replace(key, value)
        commands.append(shlex.split(command)[1:])
    return commands


def test_the_ci_workflow_runs_commands_tinytorch_accepts():
    from tinytorch.cli import build_parser
    commands = _workflow_commands()
    assert [c[0] for c in commands] == ["backends", "compete", "leaderboard"]
    parser = build_parser()
    for args in commands:
        parsed = parser.parse_args(args)          # exits (fails the test) on a stale option
        if args[0] == "compete":
            assert str(parsed.shard) == "2/4" and parsed.run_id == "ci-7-1" and parsed.quick
    text = (REPO / "leaderboard" / "ci" / "competition.yml").read_text()
    assert "fail-fast: false" in text and "if: always()" in text
    assert 'TINYTORCH_PORTABLE: "1"' in text
    # No shard file at all: a message saying so, not "results/*.json does not exist".
    assert "shopt -s nullglob" in text and "no shard wrote a results file" in text


# ---------------------------------------------------------------- a real single-node cluster

@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    try:
        with slurm_cluster(tmp_path_factory.mktemp("slurm")) as cluster:
            yield cluster
    except SlurmUnavailable as exc:
        skip_or_fail(f"cannot start a single-node Slurm: {exc}")


@pytest.fixture(scope="module")
def field_env(slurm):
    """The cluster's environment plus a PYTHONPATH folder registering grace and erin."""
    root = Path(tempfile.mkdtemp(prefix="tinytorch-field-"))
    (root / "class_field.py").write_text(FIELD_MODULE)
    info = root / "tinytorch_test_field-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinytorch-test-field\n"
                                   "Version: 1.0\n")
    (info / "entry_points.txt").write_text("[tinytorch.backends]\n"
                                           "grace = class_field:SameAsOptimized\n"
                                           "erin = class_field:Slow\n")
    for path in [root, *root.rglob("*")]:       # readable by the sandbox's unprivileged user
        path.chmod(0o755 if path.is_dir() else 0o644)
    env = {**slurm.env, "PYTHONPATH": os.pathsep.join(
        p for p in (str(root), os.environ.get("PYTHONPATH")) if p)}
    listing = tinytorch("backends", "--json", cwd=root, env=env).stdout
    missing = [name for name in FIELD if f'"{name}"' not in listing]
    try:
        if missing:
            skip_or_fail(f"backends {missing} are not installed "
                         "(pip install -e submissions/alice -e submissions/bob)")
        assert {name: shard_index(name, 3) for name in FIELD} == FIELD
        yield env
    finally:
        shutil.rmtree(root)


# A finished case's statuses. "impossible" (a rate above twice the run's best BLAS rate)
# is a verdict too, and on a busy machine a noisy one: the BLAS rate measured under load
# can drop below what an unloaded moment gives the optimized kernels.
MEASURED = {"ok", "skipped", "impossible"}


def assert_complete(rows):
    """Every row finished, with both events' shapes measured (none crashed, failed or hung)."""
    for name, row in rows.items():
        verdicts = {(c["event"], c["label"]): c["status"] for c in row["cases"]}
        assert row["complete"] and len(verdicts) == 4, (name, verdicts)
        assert set(verdicts.values()) <= MEASURED, (name, [
            (c["label"], c["status"], c.get("reason")) for c in row["cases"]])


def _board(paths):
    board = merging.merge(merging.load_all(paths))
    return board, {row["name"]: row for row in board["rows"]}


def _outputs(work):
    return "\n".join(f"--- {p.name}\n{p.read_text()}"
                     for p in sorted((work / "results").glob("slurm-*.out")))


@pytest.mark.slow
def test_cluster_runs_a_job_array_and_a_dependent_job(slurm, work):
    array = work / "array.sh"
    array.write_text("#!/bin/bash\n#SBATCH --array=1-3\n"
                     f"#SBATCH --output={work}/task_%a.out\n"
                     'echo "task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_TASK_COUNT"\n')
    after = work / "after.sh"
    after.write_text(f"#!/bin/bash\n#SBATCH --output={work}/after.out\ncat {work}/task_*.out\n")
    array_id = slurm.sbatch(array)
    after_id = slurm.sbatch(after, f"--dependency=afterany:{array_id}")
    states = slurm.wait([array_id, after_id], timeout=120)
    assert sorted(states) == sorted([f"{array_id}_1", f"{array_id}_2", f"{array_id}_3",
                                     after_id])
    assert all(state == ("COMPLETED", "0:0") for state in states.values()), states
    # The dependent job ran after every task and saw all their output.
    assert (work / "after.out").read_text().split("\n")[:3] == [
        "task 1 of 3", "task 2 of 3", "task 3 of 3"]


@pytest.mark.slow
def test_three_shards_on_slurm_give_the_board_one_machine_gives(slurm, field_env, work):
    emit(work, "--quick", env=field_env)
    submitted = run(["bash", work / "compete.slurm"], env=field_env, cwd=work).stdout
    array_id, board_id = re.search(r"array job (\d+) .* board job (\d+)", submitted).groups()
    states = slurm.wait([array_id, board_id], timeout=240)
    assert all(state == "COMPLETED" for state, _ in states.values()), \
        f"{states}\n{_outputs(work)}"

    shard_files = sorted((work / "results").glob(f"slurm-{array_id}.shard-*-of-3.json"))
    assert [p.name for p in shard_files] == [
        f"slurm-{array_id}.shard-{k}-of-3.json" for k in (1, 2, 3)]
    board_text = (work / "board" / "README.md").read_text()     # rendered by the board job
    # The ranking and per-event tables; a noisy "impossible" case also lists its backend below.
    tables = board_text.split("\n## Failed ")[0]
    for name in (*REFERENCES, *FIELD):
        assert tables.count(f"| {name} |") == 2, board_text

    board, rows = _board(shard_files)
    assert sorted(rows) == sorted([*REFERENCES, *FIELD])       # every backend exactly once
    assert board["missing_shards"] == []
    assert_complete(rows)
    for name, shard in FIELD.items():
        assert rows[name]["shard"] == f"{shard}/3"
    assert not any(rows[name]["ranked"] for name in REFERENCES)

    # The same field on this machine in one run: ranks agree wherever scores differ 3x.
    tinytorch("compete", "--quick", "--config", work / "events.toml", "--run-id", "single",
              "--results-dir", work / "single", "--board-dir", work / "single-board",
              cwd=work, env=field_env)
    _, single = _board([work / "single" / "single.json"])
    assert sorted(single) == sorted(rows)
    assert_complete(single)
    scored = [n for n in single if single[n]["score"] and rows[n]["score"]]
    compared = 0
    for a in scored:
        for b in scored:
            if single[a]["score"] >= 3 * single[b]["score"]:
                compared += 1
                assert rows[a]["score"] > rows[b]["score"], (
                    f"one machine ranks {a} ({single[a]['score']:.3g}) above {b} "
                    f"({single[b]['score']:.3g}); the shards say {rows[a]['score']:.3g} "
                    f"and {rows[b]['score']:.3g}")
    assert compared >= 4, {n: (single[n]["score"], rows[n]["score"]) for n in single}


@pytest.mark.slow
def test_a_dead_shard_is_listed_missing_then_rerun_into_the_same_run(slurm, field_env, work):
    emit(work, "--quick", env=field_env)
    array_id = slurm.sbatch(work / "compete.slurm", cwd=work, env=field_env)
    slurm.command("scancel", f"{array_id}_2")     # its node "died" before it started
    states = slurm.wait([array_id], timeout=240)
    # A task cancelled while pending leaves the array's record without a state of its own.
    assert states.get(f"{array_id}_2", ("CANCELLED",))[0] == "CANCELLED", states
    assert states[f"{array_id}_1"][0] == states[f"{array_id}_3"][0] == "COMPLETED", states
    first = (work / "results" / f"slurm-{array_id}_1.out").read_text()
    board_id = re.search(r"board job (\d+) renders", first).group(1)
    assert slurm.wait([board_id], timeout=120)[board_id][0] == "COMPLETED", _outputs(work)

    board_text = (work / "board" / "README.md").read_text()
    assert f"shard 2/3 of run slurm-{array_id} is missing: erin not measured" in board_text
    assert "| erin |" not in board_text
    _, rows = _board(sorted((work / "results").glob(f"slurm-{array_id}.shard-*.json")))
    assert sorted(rows) == sorted([*REFERENCES, "grace", "alice", "bob"])
    assert_complete(rows)

    # Re-run the lost shard into the same run, as the script's header says; the new
    # board job merges all three.
    again = run(["bash", work / "compete.slurm", "--array=2"], cwd=work,
                env={**field_env, "TINYTORCH_RUN_ID": f"slurm-{array_id}"}).stdout
    rerun_id, board_id = re.search(r"array job (\d+) .* board job (\d+)", again).groups()
    states = slurm.wait([rerun_id, board_id], timeout=180)
    assert all(state == "COMPLETED" for state, _ in states.values()), \
        f"{states}\n{_outputs(work)}"
    board, rows = _board(sorted((work / "results").glob(f"slurm-{array_id}.shard-*.json")))
    assert board["missing_shards"] == [] and rows["erin"]["shard"] == "2/3"
    assert "| erin |" in (work / "board" / "README.md").read_text()
