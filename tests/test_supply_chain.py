"""Supply chain: pip can never hand a submission the unrelated `tinytorch` of the public index.

tinytorch's version carries the local label "+course" (1.0.0+course). A
package index cannot hold a local version (PyPI refuses the upload), and
every submission, the template new ones start from, and the hostile fixture
pin that version exactly, so whatever someone uploads as `tinytorch` there,
today's 0.1.0 or a future 1.x, pip cannot pick it for a submission: only the
course's checkout or wheel satisfies the pin. A submission never lists
tinytorch as a build requirement (build isolation would fetch it from the
index). Names shadowing a core backend are refused: see test_registry_plugins.py.
"""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
STRANGERS = ("0.1.0", "1.0.0", "1.5.0", "9.9.9")   # today's stranger, and what may come

PYPROJECTS = sorted(REPO.glob("submissions/*/pyproject.toml")) + [
    REPO / "tests" / "hostile" / "pyproject.toml"]
OURS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def _tinytorch_requirement(text: str) -> Requirement:
    project = tomllib.loads(text)["project"]
    found = [Requirement(r) for r in project.get("dependencies", [])
             if Requirement(r).name == "tinytorch"]
    assert len(found) == 1, f"expected one tinytorch requirement, got {found}"
    return found[0]


def test_our_version_carries_a_label_no_index_can_hold():
    version = Version(OURS)
    assert version >= Version("1.0") and version.local == "course"


def test_there_are_submissions_to_check():
    assert len(PYPROJECTS) >= 2, PYPROJECTS


@pytest.mark.parametrize("pyproject", PYPROJECTS, ids=lambda p: p.parent.name)
def test_submission_pins_our_tinytorch_never_a_stranger(pyproject):
    text = pyproject.read_text()
    required = _tinytorch_requirement(text)
    for stranger in STRANGERS:
        assert not required.specifier.contains(stranger), f"{pyproject}: {required} admits {stranger}"
    assert required.specifier.contains(OURS), f"{pyproject}: {required} refuses tinytorch {OURS}"
    build = tomllib.loads(text).get("build-system", {}).get("requires", [])
    assert "tinytorch" not in {Requirement(r).name for r in build}, \
        f"{pyproject}: tinytorch as a build requirement would be fetched from the index"


def test_new_submissions_pin_the_installed_tinytorch(tmp_path):
    from tinytorch.scaffold import create_submission
    target = create_submission("carol", tmp_path)
    required = _tinytorch_requirement((target / "pyproject.toml").read_text())
    assert required.specifier.contains(OURS)
    assert not any(required.specifier.contains(s) for s in STRANGERS)


def _stranger_wheel(folder: Path, version: str) -> Path:
    """A wheel named tinytorch that is not ours, as someone could upload it."""
    path = folder / f"tinytorch-{version}-py3-none-any.whl"
    info = f"tinytorch-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("tinytorch/__init__.py", "STRANGER = True\n")
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: tinytorch\n"
                                           f"Version: {version}\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                                        "Root-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")
    return path


def _resolve(requirement: str, index: Path) -> subprocess.CompletedProcess:
    """What pip would install for `requirement` from an index holding `index`'s wheels."""
    return subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps",
                           "--ignore-installed", "--no-index", "--find-links", str(index),
                           "--disable-pip-version-check", requirement],
                          capture_output=True, text=True)


@pytest.mark.slow
def test_pip_takes_only_the_courses_wheel_for_a_submission(tmp_path, tinytorch_wheel):
    """An index full of strangers resolves nothing; add the course's wheel and pip takes it."""
    index = tmp_path / "index"
    index.mkdir()
    for version in STRANGERS:
        _stranger_wheel(index, version)
    requirement = str(_tinytorch_requirement((REPO / "submissions" / "alice" /
                                              "pyproject.toml").read_text()))
    refused = _resolve(requirement, index)
    assert refused.returncode != 0 and "No matching distribution" in refused.stderr, refused.stderr
    stranger_only = _resolve("tinytorch>=1.0", index)          # what a bare floor would do
    assert "Would install tinytorch-9.9.9" in stranger_only.stdout, stranger_only.stdout
    shutil.copy(tinytorch_wheel, index)
    taken = _resolve(requirement, index)
    assert taken.returncode == 0, taken.stderr
    assert f"Would install tinytorch-{OURS}" in taken.stdout
