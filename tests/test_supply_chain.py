"""Supply chain: pip can never hand a submission the unrelated `tinytorch` 0.1.0 from the public index.

Every submission (and the template new ones start from) requires tinytorch
with a floor that excludes 0.1.0 and admits ours; a submission never lists
tinytorch as a build requirement (build isolation would fetch it from the
index). Names shadowing a core backend are refused: see
test_registry_plugins.py (listing) and test_hostile.py (the competition).
"""
from pathlib import Path

import pytest
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
STRANGER = "0.1.0"          # the unrelated project on the public index

PYPROJECTS = sorted(REPO.glob("submissions/*/pyproject.toml")) + [
    REPO / "tests" / "hostile" / "pyproject.toml"]


def _tinytorch_requirement(text: str) -> Requirement:
    project = tomllib.loads(text)["project"]
    found = [Requirement(r) for r in project.get("dependencies", [])
             if Requirement(r).name == "tinytorch"]
    assert len(found) == 1, f"expected one tinytorch requirement, got {found}"
    return found[0]


def test_there_are_submissions_to_check():
    assert len(PYPROJECTS) >= 2, PYPROJECTS


@pytest.mark.parametrize("pyproject", PYPROJECTS, ids=lambda p: p.parent.name)
def test_submission_requires_our_tinytorch_never_the_stranger(pyproject):
    text = pyproject.read_text()
    required = _tinytorch_requirement(text)
    ours = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert not required.specifier.contains(STRANGER), f"{pyproject}: {required} admits {STRANGER}"
    assert required.specifier.contains(ours), f"{pyproject}: {required} refuses tinytorch {ours}"
    build = tomllib.loads(text).get("build-system", {}).get("requires", [])
    assert "tinytorch" not in {Requirement(r).name for r in build}, \
        f"{pyproject}: tinytorch as a build requirement would be fetched from the index"


def test_new_submission_template_requires_our_tinytorch():
    template = REPO / "tinytorch" / "scaffold" / "templates" / "submission" / "pyproject.toml.tmpl"
    dependencies = [line for line in template.read_text().splitlines()
                    if line.startswith("dependencies")]
    assert dependencies, f"{template} declares no dependencies"
    required = _tinytorch_requirement(f"[project]\n{dependencies[0]}\n")
    assert not required.specifier.contains(STRANGER)


def test_our_version_is_above_the_stranger():
    from packaging.version import Version
    ours = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert Version(ours) >= Version("1.0")
