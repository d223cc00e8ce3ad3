"""Shared test helpers: throwaway venvs with the tinytorch wheel built once per session.

With CI=true a test that needs a venv, Chromium or Slurm must not skip: CI
installs what they need, so a missing tool there is a failure.
"""
from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI") == "true"


def skip_or_fail(reason: str):
    """Skip locally; fail in CI, where every prerequisite is installed."""
    if IN_CI:
        pytest.fail(f"CI must not skip: {reason}")
    pytest.skip(reason)


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    """Run a command, failing the test with its output if it exits non-zero."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    done = subprocess.run([str(c) for c in cmd], **kwargs)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {done.returncode}\n"
                    f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}")
    return done


@pytest.fixture(scope="session")
def tinytorch_wheel(tmp_path_factory) -> Path:
    """The tinytorch wheel: $TINYTORCH_WHEEL (built once by .ci/run), else built here once."""
    given = os.environ.get("TINYTORCH_WHEEL")
    if given:
        assert Path(given).is_file(), f"TINYTORCH_WHEEL={given} does not exist"
        return Path(given)
    out = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, REPO])
    return next(out.glob("tinytorch-*.whl"))


class Venv:
    """A throwaway virtual environment; `.run(...)` runs its python or scripts."""

    def __init__(self, path: Path):
        self.path = path
        self.bin = path / "bin"
        self.python = self.bin / "python"

    def pip(self, *args, **kwargs):
        return run([self.python, "-m", "pip", "--disable-pip-version-check", "-q", *args],
                   **kwargs)

    def run(self, *args, check=True, **kwargs):
        env = {**os.environ, "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
               "VIRTUAL_ENV": str(self.path), **kwargs.pop("env", {})}
        env.pop("PYTHONPATH", None)
        if check:
            return run(list(args), env=env, **kwargs)
        return subprocess.run([str(a) for a in args], env=env, capture_output=True,
                              text=True, **kwargs)


@pytest.fixture
def tinytorch_venv(tmp_path, tinytorch_wheel) -> Venv:
    """A fresh venv with the tinytorch wheel (and its dependencies) installed."""
    try:
        venv.EnvBuilder(with_pip=True).create(tmp_path / "venv")
    except Exception as exc:  # noqa: BLE001 - e.g. ensurepip missing on a distro python
        skip_or_fail(f"cannot create a venv: {exc}")
    env = Venv(tmp_path / "venv")
    env.pip("install", tinytorch_wheel)
    return env


@pytest.fixture
def rng():
    """A seeded generator: the same inputs on every run."""
    import numpy as np
    return np.random.default_rng(1234)
