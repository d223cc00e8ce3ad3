"""`tinytorch new-submission NAME`: a ready-to-build backend package for a student.

The template lives inside tinytorch (package data under templates/submission/),
so a student with tinytorch installed has everything: a pyproject.toml
registering the entry point NAME, a setup.py that compiles the kernels, and
Cython kernels that start as correct, simple loops with comments saying what
to optimise. `pip install -e submissions/NAME` then `tinytorch check NAME`.
"""
from __future__ import annotations

import keyword
import re
import string
import sys
from pathlib import Path

from ..backends.registry import CORE_NAMES

TEMPLATE = Path(__file__).with_name("templates") / "submission"
SUFFIX = ".tmpl"


def _check_name(name: str) -> None:
    # The registry's rule for backend names (lowercase ASCII, a letter first: `_x` would
    # make the distribution `-x-kernels`, which pip rejects), minus '-', which a Python
    # package name cannot hold.
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", name) or keyword.iskeyword(name):
        raise ValueError(f"submission name {name!r} must start with a lowercase letter and "
                         f"hold only lowercase ASCII letters, digits and underscores, e.g. "
                         f"alice_smith")
    if name in CORE_NAMES:
        raise ValueError(f"submission name {name!r} is a core backend's name; choose another")


def _version() -> str:
    from .. import __version__
    return __version__


def template_values(name: str) -> dict[str, str]:
    """What the template's ${...} placeholders become for submission `name`."""
    return {
        "name": name,                                          # entry point / backend name
        "package": f"{name}_kernels",                          # the import package
        "distribution": f"{name.replace('_', '-')}-kernels",   # what pip lists
        "class_name": "".join(p.capitalize() for p in name.split("_") if p) + "Backend",
        "tinytorch_version": _version(),                        # pinned: see pyproject.toml
    }


def create_submission(name: str, directory="submissions") -> Path:
    """Write the package for `name` into `directory/name`; refuses to touch an existing folder."""
    _check_name(name)
    values = template_values(name)
    target = Path(directory) / name
    if target.exists():
        raise FileExistsError(f"{target} already exists; not overwriting it (pick another "
                              f"name or remove that folder yourself)")
    for source in sorted(TEMPLATE.rglob(f"*{SUFFIX}")):
        relative = source.relative_to(TEMPLATE).as_posix()[:-len(SUFFIX)]
        relative = relative.replace("package/", f"{values['package']}/", 1)
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        text = string.Template(source.read_text()).substitute(values)
        destination.write_text(text)
    return target


def add_arguments(parser):
    parser.add_argument("name", help="your backend's name (a Python identifier starting with a "
                                         "letter), e.g. alice")
    parser.add_argument("--dir", default="submissions", metavar="DIR",
                        help="folder to create the package in (default: submissions)")


def run(args) -> int:
    try:
        target = create_submission(args.name, args.dir)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"created {target}/ (backend {args.name!r}). Next:\n"
          f"  pip install -e {target}        # compile the kernels, register the backend\n"
          f"  tinytorch check {args.name}           # correct on every operation?\n"
          f"  tinytorch check {args.name} --bench   # how fast, next to naive/optimized/numpy\n"
          f"Edit {target}/{template_values(args.name)['package']}/_kernels.pyx, then run "
          f"`pip install -e {target}` again: an editable install does not recompile on its own.")
    return 0
