"""`tinytorch new-submission NAME`: a ready-to-build package, never overwriting anything.

Building the generated package (pip install -e with build isolation) and
checking it is the slow venv test in test_submissions.py.
"""
import ast
import subprocess
import sys
import tomllib

import pytest

from tinytorch.scaffold import TEMPLATE, create_submission


def test_generated_package_is_complete_and_named_after_the_submission(tmp_path):
    target = create_submission("carol_ann", tmp_path)
    assert target == tmp_path / "carol_ann"
    files = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert files == ["README.md", "carol_ann_kernels/__init__.py", "carol_ann_kernels/_kernels.pyx",
                     "carol_ann_kernels/backend.py", "pyproject.toml", "setup.py"]
    for path in target.rglob("*"):
        if path.is_file():
            assert "${" not in path.read_text(), f"unfilled placeholder in {path}"

    meta = tomllib.loads((target / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "carol-ann-kernels"
    assert meta["project"]["entry-points"]["tinytorch.backends"] == {
        "carol_ann": "carol_ann_kernels:CarolAnnBackend"}
    # the course's tinytorch at run time (pinned: see test_supply_chain.py), never at build time
    import tinytorch
    assert f"tinytorch>=1.0,=={tinytorch.__version__}" in meta["project"]["dependencies"]
    assert not any("tinytorch" in req for req in meta["build-system"]["requires"])
    assert {req.split(">")[0] for req in meta["build-system"]["requires"]} == {
        "setuptools", "Cython", "numpy"}

    for name in ("setup.py", "carol_ann_kernels/__init__.py", "carol_ann_kernels/backend.py"):
        ast.parse((target / name).read_text(), filename=name)
    assert "class CarolAnnBackend(ComputeBackend)" in (target / "carol_ann_kernels/backend.py").read_text()
    assert '"carol_ann_kernels._kernels"' in (target / "setup.py").read_text()


def test_kernels_start_simple_with_directives_and_pointers_to_optimise(tmp_path):
    pyx = (create_submission("dave", tmp_path) / "dave_kernels" / "_kernels.pyx").read_text()
    assert pyx.startswith("# cython: language_level=3, boundscheck=False, wraparound=False")
    assert "from cython cimport floating" in pyx and "with nogil:" in pyx
    assert "def matmul(" in pyx and "def conv2d(" in pyx
    assert pyx.count("OPTIMISE") >= 2 and "loop order" in pyx and "prange" in pyx


# "_x" is an identifier, but its distribution `-x-kernels` is not a name pip accepts.
@pytest.mark.parametrize("name", ["1st", "my-name", "class", "has space", "", "naïve", "_x",
                                  "Alice", "\u043eptimized"])
def test_invalid_names_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="must start with a lowercase letter"):
        create_submission(name, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["naive", "numpy", "optimized"])
def test_core_names_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="core backend's name"):
        create_submission(name, tmp_path)


def test_existing_folder_is_never_overwritten(tmp_path):
    (tmp_path / "erin").mkdir()
    (tmp_path / "erin" / "notes.txt").write_text("my work")
    with pytest.raises(FileExistsError, match="already exists; not overwriting"):
        create_submission("erin", tmp_path)
    assert [p.name for p in (tmp_path / "erin").iterdir()] == ["notes.txt"]
    assert (tmp_path / "erin" / "notes.txt").read_text() == "my work"


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "tinytorch", "new-submission", *args],
                          capture_output=True, text=True, cwd=cwd)


def test_command_creates_in_submissions_by_default_and_says_what_next(tmp_path):
    done = _cli("frank", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "submissions" / "frank" / "frank_kernels" / "_kernels.pyx").is_file()
    assert "pip install -e submissions/frank" in done.stdout
    assert "tinytorch check frank" in done.stdout

    again = _cli("frank", cwd=tmp_path)
    assert again.returncode == 2
    assert "already exists" in again.stderr and "Traceback" not in again.stderr

    other = _cli("gina", "--dir", "elsewhere", cwd=tmp_path)
    assert other.returncode == 0 and (tmp_path / "elsewhere" / "gina").is_dir()

    bad = _cli("9lives", cwd=tmp_path)
    assert bad.returncode == 2 and "must start with a lowercase letter" in bad.stderr


def test_template_is_package_data():
    """Every template file matches pyproject's package-data glob, so wheels carry it."""
    meta = tomllib.loads((TEMPLATE.parents[3] / "pyproject.toml").read_text())
    globs = meta["tool"]["setuptools"]["package-data"]["*"]
    package_dir = TEMPLATE.parents[1]                       # tinytorch/scaffold
    files = {p for p in TEMPLATE.rglob("*") if p.is_file()}
    included = {p for g in globs for p in package_dir.glob(g)}
    assert len(files) == 6 and files <= included, files - included
