"""Choosing the current backend: by name, instance, context manager or environment."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tinytorch


def _python(code, **env):
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env})
    return done


def test_default_backend_is_naive_and_set_backend_switches():
    env = {k: v for k, v in os.environ.items() if k != "TINYTORCH_BACKEND"}
    done = subprocess.run([sys.executable, "-c", "import tinytorch; b = tinytorch.get_backend(); "
                           "print(type(b).__name__, b.name)"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["NaiveBackend", "naive"]
    backend = tinytorch.set_backend("optimized")
    try:
        assert tinytorch.get_backend() is backend
        assert type(backend).__name__ == "OptimizedBackend" and backend.name == "optimized"
    finally:
        tinytorch.set_backend("naive")


def test_course_names_are_the_same_functions():
    assert tinytorch.config.set_backend is tinytorch.set_backend
    assert tinytorch.config.get_backend is tinytorch.get_backend


def test_use_backend_restores_previous_even_on_exception():
    tinytorch.set_backend("naive")
    before = tinytorch.get_backend()
    with pytest.raises(RuntimeError, match="boom"):
        with tinytorch.use_backend("numpy") as inside:
            assert tinytorch.get_backend() is inside and inside.name == "numpy"
            raise RuntimeError("boom")
    assert tinytorch.get_backend() is before


def test_unknown_name_lists_registered_backends():
    with pytest.raises(ValueError, match=r"unknown backend 'nope'; registered backends: .*naive.*numpy.*optimized"):
        tinytorch.set_backend("nope")


def test_set_backend_rejects_other_types():
    with pytest.raises(TypeError, match="registered backend name or a ComputeBackend instance"):
        tinytorch.set_backend(42)


def test_environment_variable_picks_start_up_backend():
    done = _python("import tinytorch; print(tinytorch.get_backend().name)",
                   TINYTORCH_BACKEND="numpy")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "numpy"


def test_environment_variable_with_unknown_name_is_a_clear_error():
    done = _python("import tinytorch; tinytorch.get_backend()", TINYTORCH_BACKEND="nope")
    assert done.returncode != 0
    assert "TINYTORCH_BACKEND='nope': unknown backend 'nope'" in done.stderr


def test_import_does_not_load_any_backend_module():
    done = _python("import sys, tinytorch; "
                   "print([m for m in sys.modules if m.startswith('tinytorch.backends.')])")
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.strip()
    assert "optimized" not in loaded and "numpy_backend" not in loaded


def test_cli_lists_core_backends_as_ok():
    done = subprocess.run([sys.executable, "-m", "tinytorch", "backends", "--json"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    records = {r["name"]: r for r in json.loads(done.stdout) if r["origin"] == "core"}
    assert set(records) == {"naive", "numpy", "optimized"}
    for record in records.values():
        assert record["status"] == "ok" and record["error"] is None
        assert record["distribution"] == "tinytorch"
        assert set(record) >= {"name", "distribution", "version", "entry_point", "status",
                               "error", "current", "origin", "location", "operations",
                               "openmp", "threads", "stale"}
    assert records["naive"]["current"] is True
    assert records["naive"]["operations"] == ["matmul", "conv2d"]
    optimized = records["optimized"]
    assert isinstance(optimized["openmp"], bool) and optimized["threads"] >= 1


def test_cli_table_and_help():
    table = subprocess.run([sys.executable, "-m", "tinytorch", "backends"],
                           capture_output=True, text=True)
    assert table.returncode == 0, table.stderr
    assert "NAME" in table.stdout and "optimized" in table.stdout and "ok" in table.stdout
    script = os.path.join(os.path.dirname(sys.executable), "tinytorch")  # the console script
    helped = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "backends" in helped.stdout


def test_matmul_dispatch_accepts_array_likes_after_validation():
    with tinytorch.use_backend("numpy"):
        with pytest.raises(TypeError, match="int64"):
            tinytorch.matmul([[1, 2]], [[3], [4]])
        out = tinytorch.matmul(np.array([[1.0, 2.0]]), np.array([[3.0], [4.0]]))
        assert out.tolist() == [[11.0]]
