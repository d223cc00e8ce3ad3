"""The student submissions (alice, bob) and a student's whole path in a fresh venv."""
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

import tinytorch

from conftest import REPO, skip_or_fail
from tinytorch.backends import load_backend
from tinytorch.backends.base import implemented_operations
from tinytorch.testing import check_backend

SUBMISSIONS = {"alice": "alice_kernels", "bob": "bob_kernels"}


@pytest.mark.parametrize("name,package", SUBMISSIONS.items())
def test_submission_is_a_separately_installable_package(name, package):
    folder = REPO / "submissions" / name
    meta = tomllib.loads((folder / "pyproject.toml").read_text())
    # Build isolation stays on: building must never fetch tinytorch from the index.
    assert {r.split(">")[0] for r in meta["build-system"]["requires"]} == {
        "setuptools", "Cython", "numpy"}
    assert f"tinytorch>=1.0,=={tinytorch.__version__}" in meta["project"]["dependencies"]
    entry = meta["project"]["entry-points"]["tinytorch.backends"]
    assert list(entry) == [name] and entry[name].startswith(f"{package}:")
    assert (folder / "setup.py").is_file() and (folder / "README.md").is_file()
    pyx = list((folder / package).glob("*.pyx"))
    assert len(pyx) == 1 and (folder / package / "backend.py").is_file()   # kernel beside its user
    assert pyx[0].read_text().startswith("# cython: language_level=3, boundscheck=False")


def _installed(name):
    try:
        return load_backend(name)
    except (ValueError, RuntimeError) as exc:
        skip_or_fail(f"submission {name!r} is not installed (pip install -e "
                     f"submissions/{name}): {exc}")


@pytest.mark.parametrize("name", SUBMISSIONS)
def test_submission_passes_the_conformance_suite(name):
    report = check_backend(_installed(name), max_examples=15)
    assert report.passed, report.format()
    assert report.stale is None, f"stale build of {name}: {report.stale}"


def test_bob_relies_on_the_contract_defaults():
    bob = _installed("bob")
    assert implemented_operations(type(bob)) == ["matmul", "conv2d"]
    assert isinstance(bob.openmp, bool) and bob.threads >= 1
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((4, 5, 6)), rng.standard_normal((4, 6, 7))
    np.testing.assert_allclose(bob.batched_matmul(a, b), a @ b, rtol=1e-12)


def test_alice_implements_matmul_and_conv2d_itself():
    alice = _installed("alice")
    assert implemented_operations(type(alice)) == ["matmul", "conv2d"]
    # float32 and float64 through one fused-type kernel
    for dtype in (np.float32, np.float64):
        a = np.arange(12, dtype=dtype).reshape(3, 4)
        out = alice.matmul(a, a.T)
        assert out.dtype == dtype and out.tolist() == (a.astype(float) @ a.T).tolist()


def test_backends_listing_shows_the_submissions():
    for name in SUBMISSIONS:
        _installed(name)
    done = subprocess.run([sys.executable, "-m", "tinytorch", "backends", "--json"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    records = {r["name"]: r for r in json.loads(done.stdout)}
    for name, package in SUBMISSIONS.items():
        record = records[name]
        assert (record["status"], record["origin"]) == ("ok", "plugin"), record
        assert record["operations"] == ["matmul", "conv2d"]
        assert Path(record["location"]).name == package
    assert records["bob"]["openmp"] in (True, False) and records["bob"]["threads"] >= 1


# ---------------------------------------------------------------- the student's path, for real

BAD_CALL = ("import numpy as np, tinytorch\n"
            "b = tinytorch.set_backend({name!r})\n"
            "try:\n"
            "    b.matmul(np.ones((2, 3), np.float32), np.ones((4, 5), np.float32))\n"
            "except ValueError as exc:\n"
            "    print('ValueError:', exc)\n"
            "a = np.arange(6.0).reshape(2, 3)\n"
            "print(tinytorch.matmul(a, a.T).tolist())\n")


def _copy_submission(name, destination):
    """A copy without build artefacts, so the repository's own files are never touched."""
    return Path(shutil.copytree(REPO / "submissions" / name, destination / name, ignore=(
        shutil.ignore_patterns("*.so", "*.c", "*.html", "build", "*.egg-info", "__pycache__"))))


@pytest.mark.slow
def test_student_path_in_a_fresh_venv(tinytorch_venv, tmp_path):
    venv = tinytorch_venv
    # 1. scaffold with the installed tinytorch (its template comes from the wheel)
    venv.run("tinytorch", "new-submission", "carol", "--dir", tmp_path / "subs")
    carol = tmp_path / "subs" / "carol"
    venv.pip("install", "-e", carol)                   # build isolation on (the default)
    used = venv.run("python", "-c", BAD_CALL.format(name="carol"))
    assert used.stdout.splitlines() == [
        "ValueError: matmul: inner dimensions differ: a (2, 3) @ b (4, 5)",
        "[[5.0, 14.0], [14.0, 50.0]]"]
    checked = venv.run("tinytorch", "check", "carol", "--examples", "10")
    assert "carol: all operations pass" in checked.stdout
    assert "stale" not in checked.stderr

    # 2. edit the .pyx: nothing rebuilds, and both tools say so with the exact command
    pyx = carol / "carol_kernels" / "_kernels.pyx"
    pyx.write_text(pyx.read_text() + "\n# an edit\n")
    rebuild = f"pip install -e {carol}"
    listed = venv.run("tinytorch", "backends")
    warning = (f"warning: backend carol is a stale build: a .pyx source is newer than its "
               f"compiled extension, so its OLD kernels run; rebuild with: {rebuild}")
    assert warning in listed.stdout
    as_json = {r["name"]: r for r in json.loads(venv.run("tinytorch", "backends", "--json").stdout)}
    assert as_json["carol"]["stale"] == rebuild
    stale_check = venv.run("tinytorch", "check", "carol", "--examples", "0", check=False)
    assert stale_check.returncode == 1                  # it checked the OLD kernels
    assert stale_check.stdout.strip().splitlines()[-1] == warning
    venv.pip("install", "-e", carol)
    fresh = venv.run("tinytorch", "check", "carol", "--examples", "0")
    assert "stale" not in fresh.stderr + fresh.stdout

    # 3. alice, installed the same way; compiled without bounds checks, still safe
    alice = _copy_submission("alice", tmp_path)
    venv.pip("install", "-e", alice)
    used = venv.run("python", "-c", BAD_CALL.format(name="alice"))
    assert used.stdout.splitlines()[0].startswith("ValueError: matmul: inner dimensions differ")
    checked = venv.run("tinytorch", "check", "alice", "--examples", "10")
    assert "alice: all operations pass" in checked.stdout
