"""The competition on a real (single-node) Slurm: job arrays, dependent jobs, one merged board.

Starts munged, slurmctld and slurmd as root (tests/slurm_cluster.py) once for this
module and stops them afterwards. Where Slurm cannot start the tests skip with
the reason locally; with CI=true they fail, since .ci/run installs slurm-wlm and munge.
"""
import pytest

from conftest import skip_or_fail
from slurm_cluster import SlurmUnavailable, slurm_cluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    try:
        with slurm_cluster(tmp_path_factory.mktemp("slurm")) as cluster:
            yield cluster
    except SlurmUnavailable as exc:
        skip_or_fail(f"cannot start a single-node Slurm: {exc}")


def test_cluster_runs_a_job_array_and_a_dependent_job(slurm, tmp_path):
    tmp_path.chmod(0o755)
    array = tmp_path / "array.sh"
    array.write_text("#!/bin/bash\n#SBATCH --array=1-3\n"
                     f"#SBATCH --output={tmp_path}/task_%a.out\n"
                     'echo "task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_TASK_COUNT"\n')
    after = tmp_path / "after.sh"
    after.write_text(f"#!/bin/bash\n#SBATCH --output={tmp_path}/after.out\n"
                     f"cat {tmp_path}/task_*.out\n")
    array_id = slurm.sbatch(array)
    after_id = slurm.sbatch(after, f"--dependency=afterany:{array_id}")
    states = slurm.wait([array_id, after_id], timeout=120)
    assert sorted(states) == sorted([f"{array_id}_1", f"{array_id}_2", f"{array_id}_3",
                                     after_id])
    assert all(state == ("COMPLETED", "0:0") for state in states.values()), states
    # The dependent job ran after every task and saw all their output.
    assert (tmp_path / "after.out").read_text().split("\n")[:3] == [
        "task 1 of 3", "task 2 of 3", "task 3 of 3"]


# ---------------------------------------------------------------- the competition on Slurm

EVENTS_TOML = """
[rules]
wall_time_s = 60.0
repeats = 3
quick_repeats = 3

[[events]]
name = "matmul"
kind = "matmul"
dtypes = ["float32"]
shapes = [{ m = 64, k = 64, n = 64 }]
quick_shapes = [{ m = 48, k = 40, n = 56 }]

[[events]]
name = "conv2d"
kind = "conv2d"
dtypes = ["float32"]
shapes = [{ n = 1, c = 4, h = 10, w = 10, f = 4, k = 3, stride = 1, padding = 1 }]
quick_shapes = [{ n = 1, c = 4, h = 10, w = 10, f = 4, k = 3, stride = 1, padding = 1 }]
"""

# Two more plugins, so that every shard of three has a submission (the split depends
# only on the names): grace lands in shard 1, erin in 2, alice and bob in 3. erin
# computes every product SLOW_REPEATS times: a rank far from the others on any machine.
FIELD_MODULE = '''
"""Test-only plugins: optimized under another name, and a deliberately slow copy."""
from tinytorch.backends.optimized import OptimizedBackend

SLOW_REPEATS = 30


class SameAsOptimized(OptimizedBackend):
    pass


class Slow(OptimizedBackend):
    def matmul(self, a, b):
        for _ in range(SLOW_REPEATS - 1):
            super().matmul(a, b)
        return super().matmul(a, b)
'''
FIELD = {"grace": 1, "erin": 2, "alice": 3, "bob": 3}
REFERENCES = ("naive", "numpy", "optimized")


@pytest.fixture(scope="module")
def field_plugins():
    """A folder for PYTHONPATH registering grace and erin (readable by the sandbox's user)."""
    import shutil
    import tempfile
    from pathlib import Path
    root = Path(tempfile.mkdtemp(prefix="tinytorch-field-"))
    root.chmod(0o755)
    (root / "class_field.py").write_text(FIELD_MODULE)
    info = root / "tinytorch_test_field-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinytorch-test-field\n"
                                   "Version: 1.0\n")
    (info / "entry_points.txt").write_text("[tinytorch.backends]\n"
                                           "grace = class_field:SameAsOptimized\n"
                                           "erin = class_field:Slow\n")
    for path in [info, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield root
    shutil.rmtree(root)


def _tinytorch(*args, env, cwd):
    import sys
    from conftest import run
    return run([sys.executable, "-m", "tinytorch", *args], env=env, cwd=cwd)


def _scores(paths):
    from tinytorch.arena import merging
    board = merging.merge(merging.load_all(paths))
    return board, {row["name"]: row for row in board["rows"]}


def test_the_emitted_script_runs_three_shards_and_renders_one_board(slurm, field_plugins,
                                                                   tmp_path):
    import os
    import re

    from tinytorch.arena.sharding import shard_index

    assert {name: shard_index(name, 3) for name in FIELD} == FIELD
    work = tmp_path / "work"
    work.mkdir(parents=True)
    tmp_path.chmod(0o755)
    events = work / "events.toml"
    events.write_text(EVENTS_TOML)
    env = {**slurm.env, "PYTHONPATH": os.pathsep.join(
        p for p in (str(field_plugins), os.environ.get("PYTHONPATH")) if p)}

    listing = _tinytorch("backends", "--json", env=env, cwd=work).stdout
    missing = [name for name in FIELD if f'"{name}"' not in listing]
    if missing:
        skip_or_fail(f"backends {missing} are not installed (pip install -e submissions/alice "
                     "-e submissions/bob)")

    script = work / "compete.slurm"
    _tinytorch("compete", "--emit-slurm", "3", "--quick", "--config", events,
               "--results-dir", work / "results", "--board-dir", work / "board",
               "--output", script, env=env, cwd=work)
    text = script.read_text()
    assert "#SBATCH --array=1-3" in text and "#SBATCH --exclusive" in text

    from conftest import run
    submitted = run(["bash", script], env=env, cwd=work).stdout
    array_id, board_id = re.search(r"array job (\d+) .* board job (\d+)", submitted).groups()
    states = slurm.wait([array_id, board_id], timeout=240)
    outputs = "\n".join(p.read_text() for p in sorted((work / "results").glob("slurm-*.out")))
    assert all(state == "COMPLETED" for state, _ in states.values()), f"{states}\n{outputs}"

    shard_files = sorted((work / "results").glob(f"slurm-{array_id}.shard-*-of-3.json"))
    assert [p.name for p in shard_files] == [
        f"slurm-{array_id}.shard-{k}-of-3.json" for k in (1, 2, 3)]
    board_text = (work / "board" / "README.md").read_text()     # rendered by the board job
    for name in (*REFERENCES, *FIELD):
        assert f"| {name} |" in board_text, f"{name} missing from the board\n{board_text}"

    merged, rows = _scores(shard_files)
    assert sorted(rows) == sorted([*REFERENCES, *FIELD])       # each backend exactly once
    assert merged["missing_shards"] == []
    for name, row in rows.items():
        assert row["complete"], name
        assert row["unranked_reason"] is None, f"{name}: {row['unranked_reason']}"
        assert set(row["events"]) == {"matmul", "conv2d"}, name
        assert row["shard"] is not None
    for name, shard in FIELD.items():
        assert rows[name]["shard"] == f"{shard}/3"
        assert rows[name]["ranked"]
    assert not any(rows[name]["ranked"] for name in REFERENCES)

    # The same field on this machine in one run: ranks agree wherever scores differ 3x.
    _tinytorch("compete", "--quick", "--config", events, "--run-id", "single",
               "--results-dir", work / "single", "--board-dir", work / "single-board",
               env=env, cwd=work)
    _, single = _scores([work / "single" / "single.json"])
    assert sorted(single) == sorted(rows)
    compared = 0
    for a in single:
        for b in single:
            if single[a]["score"] >= 3 * single[b]["score"]:
                compared += 1
                assert rows[a]["score"] > rows[b]["score"], (
                    f"one machine ranks {a} ({single[a]['score']:.3g}) above {b} "
                    f"({single[b]['score']:.3g}); the shards say {rows[a]['score']:.3g} "
                    f"and {rows[b]['score']:.3g}")
    assert compared >= 5    # erin and naive sit far below the rest
