"""The example scripts run as a student runs them and reach the accuracy they promise."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from test_data import PER_BATCH, write_cifar

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EPOCH_LINE = re.compile(r"epoch +\d+/\d+  loss \d+\.\d+  test accuracy +\d+\.\d+%  time \d+\.\d+ s")


def run_example(script, *args, threads="1"):
    # One OpenMP thread: these matrices are tiny, and the machine is shared.
    env = {**os.environ, "TINYTORCH_THREADS": threads}
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True,
                          text=True, env=env, timeout=300)


def final_accuracy(done):
    assert done.returncode == 0, done.stderr
    assert EPOCH_LINE.search(done.stdout), done.stdout
    return float(re.search(r"final test accuracy (\d+\.\d+)%", done.stdout).group(1))


@pytest.mark.parametrize("script", ["train_digits_mlp.py", "train_digits_cnn.py"])
def test_digits_examples_reach_95_percent(script):
    assert final_accuracy(run_example(script)) >= 95.0


def test_cifar_example_without_data_says_how_to_get_it(tmp_path):
    done = run_example("train_cifar10.py", "--root", str(tmp_path))
    assert done.returncode == 2
    assert "download=True" in done.stderr and "--download" in done.stderr
    assert "Traceback" not in done.stderr


def test_cifar_example_trains_when_data_is_present(tmp_path):
    write_cifar(tmp_path)
    done = run_example("train_cifar10.py", "--root", str(tmp_path), "--epochs", "1",
                       "--width", "4", "--backend", "numpy")
    assert 0 <= final_accuracy(done) <= 100
    assert f"{5 * PER_BATCH} train, {PER_BATCH} test images" in done.stdout
