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
