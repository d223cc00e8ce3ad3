"""The registry with real plugin distributions: good, broken, clashing, hanging.

Each plugin is a dist-info folder with entry_points.txt (what pip leaves
behind) on the PYTHONPATH of a subprocess, so discovery goes through
importlib.metadata exactly as for an installed package; a slow test installs
one with pip into a fresh venv.
"""
import json
import time

import pytest

from fixtures.plugins import GOOD_BACKEND, add_distribution, python, tinytorch_cli

HANG_SECONDS = 3     # the listing's --timeout in these tests

PLUGINS = [  # (distribution, {entry point name: value}, {module file: source})
    ("good-plugin", {"goodplug": "goodplug:GoodBackend"}, {"goodplug.py": GOOD_BACKEND}),
    ("broken-import", {"brokenplug": "brokenplug:Backend"},
     {"brokenplug.py": "import numpy\nraise ImportError('needs libfoo.so, which is missing')\n"}),
    ("missing-attr", {"missingplug": "goodplug:NoSuchBackend"}, {}),
    ("not-a-backend", {"notbackend": "notbackend:Plain"},
     {"notbackend.py": "class Plain:\n    def matmul(self, a, b):\n        return a @ b\n"}),
    ("dup-one", {"dupplug": "goodplug:GoodBackend"}, {}),
    ("dup-two", {"dupplug": "goodplug:GoodBackend"}, {}),
    ("core-thief", {"naive": "goodplug:GoodBackend"}, {}),
    ("hanging-import", {"hangplug": "hangplug:Backend"},
     {"hangplug.py": "import time\ntime.sleep(600)\n"}),
]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plugins")
    for dist, entry_points, modules in PLUGINS:
        add_distribution(folder, dist, entry_points, modules)
    return folder


@pytest.fixture(scope="module")
def listing(site):
    """`tinytorch backends --json` over every plugin, and how long it took."""
    start = time.monotonic()
    done = tinytorch_cli("backends", "--json", "--timeout", str(HANG_SECONDS), paths=[site],
                         timeout=120)
    took = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout)
    return {(r["name"], r["distribution"]): r for r in records}, took


def test_good_plugin_is_listed_with_every_key(listing, site):
    records, _ = listing
    good = records[("goodplug", "good-plugin")]
    assert good == {
        "name": "goodplug", "distribution": "good-plugin", "version": "1.0.0",
        "entry_point": "goodplug:GoodBackend", "status": "ok", "error": None,
        "current": False, "origin": "plugin", "location": str(site),
        "operations": ["matmul", "conv2d"], "openmp": None, "threads": None, "stale": None}
    for name in ("naive", "numpy", "optimized"):
        assert records[(name, "tinytorch")]["status"] == "ok"
        assert records[(name, "tinytorch")]["origin"] == "core"


def test_good_plugin_selectable_by_name_without_changing_tinytorch(site):
    done = python("""
        import numpy as np, tinytorch
        backend = tinytorch.set_backend('goodplug')
        a = np.arange(6.0).reshape(2, 3)
        print(type(backend).__name__, backend.name, tinytorch.matmul(a, a.T).tolist())
    """, site)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(" ", 2) == ["GoodBackend", "goodplug", "[[5.0, 14.0], [14.0, 50.0]]\n"]


@pytest.mark.parametrize("key,reason", [
    (("brokenplug", "broken-import"), "import failed: ImportError: needs libfoo.so"),
    (("missingplug", "missing-attr"), "import failed: AttributeError"),
    (("notbackend", "not-a-backend"),
     "notbackend.Plain, which is not a tinytorch.backends.ComputeBackend subclass"),
    (("dupplug", "dup-one"), "claimed by several distributions (dup-one, dup-two)"),
    (("dupplug", "dup-two"), "claimed by several distributions (dup-one, dup-two)"),
    (("naive", "core-thief"), "belongs to a core backend; distribution 'core-thief' may not"),
    (("hangplug", "hanging-import"), f"did not finish within {HANG_SECONDS} s"),
])
def test_broken_plugins_are_listed_with_their_reason(listing, key, reason):
    records, _ = listing
    record = records[key]
    assert record["status"] == "error"
    assert reason in record["error"]


def test_a_hanging_import_cannot_hang_the_listing(listing):
    _, took = listing
    assert took < 60, f"listing took {took:.0f} s with a {HANG_SECONDS} s time limit"


def test_broken_plugins_break_neither_import_nor_other_backends(site):
    done = python("""
        import tinytorch
        for name in ('brokenplug', 'missingplug', 'notbackend', 'dupplug'):
            try:
                tinytorch.set_backend(name)
            except RuntimeError as exc:
                print(name, 'refused:', exc)
        print('naive is', type(tinytorch.set_backend('naive')).__module__)
        print('good is', type(tinytorch.set_backend('goodplug')).__name__)
    """, site)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "brokenplug refused: backend 'brokenplug' from broken-import cannot be used: " \
           "import failed: ImportError: needs libfoo.so" in out
    assert "missingplug refused:" in out and "notbackend refused:" in out
    assert "dupplug refused:" in out and "claimed by several distributions" in out
    assert "naive is tinytorch.backends.naive" in out     # the core wins its name
    assert "good is GoodBackend" in out


def test_environment_variable_selects_a_plugin(site):
    done = python("import tinytorch; print(tinytorch.get_backend().name)", site,
                  TINYTORCH_BACKEND="goodplug")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "goodplug"
    broken = python("import tinytorch; tinytorch.get_backend()", site,
                    TINYTORCH_BACKEND="brokenplug")
    assert broken.returncode != 0
    assert "TINYTORCH_BACKEND='brokenplug'" in broken.stderr and "libfoo.so" in broken.stderr


def test_use_backend_restores_previous_on_exception_with_a_plugin(site):
    done = python("""
        import tinytorch
        tinytorch.set_backend('numpy')
        try:
            with tinytorch.use_backend('goodplug') as inside:
                assert tinytorch.get_backend() is inside
                raise KeyError('boom')
        except KeyError:
            pass
        print(tinytorch.get_backend().name)
    """, site)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "numpy"


def test_table_shows_plugins_errors_and_current(site):
    done = tinytorch_cli("backends", "--timeout", str(HANG_SECONDS), paths=[site],
                         TINYTORCH_BACKEND="goodplug")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    good = next(line for line in lines if line.lstrip("* ").startswith("goodplug "))
    assert good.startswith("*") and "good-plugin" in good and "matmul, conv2d" in good
    assert any(line.startswith("brokenplug (broken-import): error: import failed")
               for line in lines)
    assert any("naive (core-thief): error:" in line for line in lines)


@pytest.mark.slow
def test_plugin_installed_with_pip_in_a_fresh_venv(tinytorch_venv, tmp_path):
    project = tmp_path / "bobplug"
    (project / "bob_kernels").mkdir(parents=True)
    (project / "bob_kernels" / "__init__.py").write_text(
        GOOD_BACKEND.replace("GoodBackend", "BobBackend"))
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "bob-plugin"\nversion = "0.3.0"\ndependencies = ["tinytorch>=1.0"]\n'
        '[project.entry-points."tinytorch.backends"]\nbob = "bob_kernels:BobBackend"\n')
    tinytorch_venv.pip("install", project)
    listed = tinytorch_venv.run("tinytorch", "backends", "--json")
    bob = [r for r in json.loads(listed.stdout) if r["name"] == "bob"]
    assert len(bob) == 1 and bob[0]["status"] == "ok"
    assert (bob[0]["distribution"], bob[0]["version"]) == ("bob-plugin", "0.3.0")
    selected = tinytorch_venv.run(
        "python", "-c", "import tinytorch; print(type(tinytorch.set_backend('bob')).__name__)")
    assert selected.stdout.strip() == "BobBackend"
    tinytorch_venv.pip("uninstall", "-y", "bob-plugin")
    gone = tinytorch_venv.run("python", "-c", "import tinytorch; tinytorch.set_backend('bob')",
                              check=False)
    assert gone.returncode != 0 and "unknown backend 'bob'" in gone.stderr


@pytest.mark.parametrize("edited", ["kernels.pyx", "kernels.pxd", "microkernel.h"])
def test_an_edited_kernel_source_or_header_makes_the_build_stale(tmp_path, edited):
    """Editable installs do not rebuild: a changed header is as stale as a changed .pyx."""
    import os

    from tinytorch.backends.staleness import stale_sources
    for name in ("kernels.pyx", "kernels.pxd", "microkernel.h", "other.pyx"):
        (tmp_path / name).write_text("")
        os.utime(tmp_path / name, (1000, 1000))
    for name in ("kernels.cpython-311-x86_64-linux-gnu.so", "other.cpython-311-x86_64-linux-gnu.so"):
        (tmp_path / name).write_text("")
        os.utime(tmp_path / name, (2000, 2000))
    assert stale_sources(str(tmp_path)) == []
    os.utime(tmp_path / edited, (3000, 3000))
    assert stale_sources(str(tmp_path)) == [str(tmp_path / edited)]


def test_a_header_is_compared_with_the_extensions_of_its_own_folder(tmp_path):
    """An extension in another folder (the arena's BLAS guard, built from its own .c)
    does not include this folder's headers: being older does not make them stale."""
    import os

    from tinytorch.backends.staleness import stale_sources
    (tmp_path / "backends").mkdir()
    (tmp_path / "arena").mkdir()
    for name, mtime in {"arena/_guard.cpython-311-x86_64-linux-gnu.so": 1000,
                        "backends/_gemm.pxd": 2000, "backends/_microkernel.h": 2000,
                        "backends/_gemm.pyx": 2000,
                        "backends/_gemm.cpython-311-x86_64-linux-gnu.so": 3000}.items():
        (tmp_path / name).write_text("")
        os.utime(tmp_path / name, (mtime, mtime))
    assert stale_sources(str(tmp_path)) == []
    os.utime(tmp_path / "backends/_microkernel.h", (4000, 4000))
    assert stale_sources(str(tmp_path)) == [str(tmp_path / "backends/_microkernel.h")]
