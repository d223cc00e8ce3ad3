"""tinytorch.benchmark() and compare_backends(), and the course's competition snippet."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinytorch

REPO = Path(__file__).resolve().parents[1]


def test_benchmark_is_the_course_context_manager():
    with tinytorch.benchmark() as bench:
        total = sum(range(100_000))
    assert total > 0
    assert bench.time_ms > 0
    assert bench.peak_memory_mb >= 0 and bench.current_memory_mb >= 0
    assert isinstance(bench, tinytorch.BenchmarkResult)


def test_memory_allocated_outside_python_objects_is_counted():
    """A 64 MB numpy buffer freed inside the block shows in the peak, not in current."""
    with tinytorch.benchmark() as bench:
        buffer = np.ones(64 << 20, dtype=np.uint8)
        del buffer
    if not bench.memory_exact:
        pytest.skip("this system cannot reset the resident high-water mark")
    assert 60 <= bench.peak_memory_mb <= 80
    assert bench.current_memory_mb < 16


def test_memory_a_compiled_library_allocates_is_counted():
    """What a C kernel mallocs is invisible to tracemalloc; the resident peak sees it."""
    import ctypes
    import ctypes.util
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    with tinytorch.benchmark() as bench:
        block = libc.malloc(48 << 20)
        libc.memset(block, 1, 48 << 20)             # touched, so resident
        libc.free(block)
    if not bench.memory_exact:
        pytest.skip("this system cannot reset the resident high-water mark")
    assert 44 <= bench.peak_memory_mb <= 64
    assert bench.current_memory_mb < 16


def test_memory_held_at_the_end_is_current():
    with tinytorch.benchmark() as bench:
        kept = np.ones(32 << 20, dtype=np.uint8)
    assert kept[-1] == 1
    if bench.memory_exact:
        assert 30 <= bench.current_memory_mb <= 40 and bench.peak_memory_mb >= 30


def test_benchmark_records_even_when_the_block_raises():
    with pytest.raises(ZeroDivisionError):
        with tinytorch.benchmark() as bench:
            1 / 0
    assert bench.time_ms > 0


def test_compare_backends_prints_speedups_over_naive(capsys):
    a = np.random.default_rng(0).standard_normal((24, 24)).astype(np.float32)
    results = tinytorch.compare_backends(lambda: tinytorch.matmul(a, a),
                                         backends=["naive", "numpy"])
    assert set(results) == {"naive", "numpy"}
    assert all(r.time_ms > 0 for r in results.values())
    out = capsys.readouterr().out
    assert "speedup over naive" in out
    naive_line = next(line for line in out.splitlines() if line.startswith("naive"))
    assert naive_line.rstrip().endswith("1.0x")
    assert tinytorch.get_backend().name == "naive"    # the previous backend is restored


def test_course_competition_example_runs_as_written():
    done = subprocess.run([sys.executable, str(REPO / "examples" / "course_competition.py"),
                           "--image-size", "16"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Naive: ") and lines[1].startswith("Optimized: ")
    difference = float(lines[2].rsplit(" ", 1)[1])
    assert difference < 1e-4
    speedup = float(lines[3].split()[1].rstrip("x"))
    assert speedup > 1
