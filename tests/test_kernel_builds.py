"""The micro-kernels this machine's own build never compiles: AVX2 and portable.

setup.py builds with -march=native, so on an AVX-512 machine the AVX2 kernel
(6x16 float32 tile) and the portable one (what TINYTORCH_PORTABLE=1 gives,
recommended for cluster builds in docs/instructors.md) would otherwise never
run. Each test copies the package sources to a temporary folder, builds the
extensions there in place (`setup.py build_ext --inplace`: no pip, no
isolation), and runs `check_build` below in a subprocess with that copy first
on sys.path. It compares every operation of the optimized backend with a
float64 numpy reference, on shapes aimed at the compiled tile's edges, the
KC cache block and the threaded split, at 1 and 2 threads, in both dtypes.

Tolerance: the relative (Frobenius) error of each result, at most 1e-5 for
float32 and 1e-12 for float64 (as in test_optimized.py); the largest errors
of a correct portable build here are 3.5e-7 and 7e-16, while a wrong element
in an edge tile gives 1e-2 or more.
"""
import importlib.util
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run, skip_or_fail

TESTS = Path(__file__).resolve().parent
SOURCES = ["setup.py", "pyproject.toml", "README.md", "LICENSE", "tinytorch"]
TOL = {np.float32: 1e-5, np.float64: 1e-12}
KC, MC = 256, 192          # the block sizes documented in _gemm.pyx, section 1
#: (MR, NR) per dtype of each kernel, as _microkernel.h defines them.
TILES = {"portable": {"float32": (6, 8), "float64": (6, 4)},
         "avx2": {"float32": (6, 16), "float64": (6, 8)}}
#: Environment of each build: TINYTORCH_PORTABLE=1 drops -march=native; CFLAGS
#: then chooses the instruction set (none: x86-64's baseline, SSE2).
BUILDS = {"portable": {"TINYTORCH_PORTABLE": "1", "CFLAGS": ""},
          "avx2": {"TINYTORCH_PORTABLE": "1", "CFLAGS": "-mavx2 -mfma"}}


def cpu_flags():
    """The instruction-set flags Linux reports for this CPU (empty elsewhere)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return set()
    return next((set(line.split(":", 1)[1].split()) for line in lines
                 if line.startswith("flags")), set())


def build_copy(dest: Path, isa: str) -> Path:
    """The package sources copied to `dest` and built in place for `isa`."""
    if importlib.util.find_spec("Cython") is None:
        skip_or_fail("building the kernels needs Cython in the test environment "
                     "(the `test` extra installs it)")
    for name in SOURCES:
        src = REPO / name
        if src.is_dir():
            # Cython's .c output comes along: cythonize redoes it if the .pyx is newer
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns(
                "*.so", "*.pyd", "__pycache__", "build"))
        else:
            shutil.copy2(src, dest / name)
    run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=dest,
        env={**os.environ, **BUILDS[isa]})
    return dest


@pytest.mark.slow
@pytest.mark.parametrize("isa", ["portable", "avx2"])
def test_kernel_build_matches_float64_reference(tmp_path, isa):
    if isa == "avx2" and not {"avx2", "fma"} <= cpu_flags():
        skip_or_fail("this CPU lacks AVX2/FMA (or is not x86-64): an AVX2 build cannot run here")
    root = build_copy(tmp_path, isa)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(TESTS)])}
    done = run([sys.executable, "-c", f"import test_kernel_builds as t; "
                f"t.check_build({str(root)!r}, {isa!r})"], env=env, cwd=tmp_path)
    assert f"{isa}: all" in done.stdout, done.stdout


# ------------------------------------------------- run inside the built copy


def rel_err(out, ref):
    return np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-300)


def matmul_shapes(mr, nr):
    """(m, k, n) aimed at the paths of the GEMM for an MR x NR tile."""
    return [
        (1, 1, 1), (7, 13, 5), (65, 129, 33),                # tiny, and tile remainders
        (mr - 1, 3, nr - 1), (mr, 5, nr), (mr + 1, 17, nr + 1), (2 * mr + 1, 31, 2 * nr + 3),
        (9, KC + 1, 20),                 # a remainder that joins the last KC block
        (9, KC + KC // 4 + 1, 20),       # one just too long to join: a second block
        (13, 2 * KC + 17, 11),           # two blocks, the last one longer than KC
        (MC + 7, 40, 50),                # a second MC block of A
        (1000, 64, 3),                   # narrow C: the narrow tile (or C^T where that pads less)
        (2 * mr + 1, 600, nr // 2 + 1),  # narrow tile, packed (too deep for the direct kernel)
        (4000, 160, nr // 2 + 1),       # narrow tile, packed, 2 threads
        (300, 100, 90), (70, 330, 130),  # big enough for 2 threads: row slabs, column slabs
    ]


def check_build(root, isa):
    """Every operation of the copy's optimized backend against float64 numpy.
    Exits with an AssertionError listing every mismatch; prints "<isa>: all ..."."""
    from test_optimized import CONV_CASES, reference_conv   # float64, tap by tap

    from tinytorch.backends import OptimizedBackend, _conv, _gemm

    for module in (_gemm, _conv):
        assert Path(module.__file__).is_relative_to(root), f"{module.__file__} not from {root}"
    assert OptimizedBackend.isa == isa, f"built {OptimizedBackend.isa!r}, expected {isa!r}"
    assert _gemm.tile == TILES[isa], f"{isa} tile {_gemm.tile}, expected {TILES[isa]}"
    assert OptimizedBackend.openmp, "built without OpenMP: 2 threads would not be tested"

    rng = np.random.default_rng(3)
    failures, checks = [], 0

    def expect(label, got, ref, dtype):
        nonlocal checks
        checks += 1
        if got.dtype != dtype or got.shape != ref.shape:
            failures.append(f"{label}: {got.dtype} {got.shape}, expected {dtype} {ref.shape}")
        elif not rel_err(got, ref) < TOL[dtype]:
            failures.append(f"{label}: relative error {rel_err(got, ref):.2e}")

    for threads in (1, 2):
        backend = OptimizedBackend(threads=threads)
        for dtype in (np.float32, np.float64):
            tag = f"{np.dtype(dtype).name} threads={threads}"

            def rand(*shape):
                return rng.standard_normal(shape).astype(dtype)

            for m, k, n in matmul_shapes(*_gemm.tile[np.dtype(dtype).name]):
                a, b = rand(m, k), rand(k, n)
                expect(f"matmul {m}x{k}x{n} {tag}", backend.matmul(a, b),
                       a.astype(np.float64) @ b.astype(np.float64), dtype)
            big_a, big_b = rand(140, 90), rand(150, 200)
            for a, b in [(big_a.T[:, ::2], big_b[:70, ::3]),                 # transposed A
                         (big_a[::2, :75], np.asfortranarray(big_b[:75, :60])),  # column-major B
                         (big_a[1::3, ::2], big_b[:90:2, ::3])]:             # no unit stride
                expect(f"matmul strided {a.shape}@{b.shape} {tag}", backend.matmul(a, b),
                       a.astype(np.float64) @ b.astype(np.float64), dtype)
            for count, m, k, n in [(12, 9, 16, 9), (2, 130, 140, 150), (3, 1, 5, 1)]:
                a, b = rand(count, m, k), rand(count, k, n)
                expect(f"batched_matmul {count}x{m}x{k}x{n} {tag}", backend.batched_matmul(a, b),
                       np.matmul(a.astype(np.float64), b.astype(np.float64)), dtype)
            for n, c, h, w, f, kh, kw, stride, padding in CONV_CASES:
                x, wt = rand(n, c, h, w), rand(f, c, kh, kw)
                out = backend.conv2d(x, wt, stride, padding)
                g = rand(*out.shape)
                ref_out, ref_dx, ref_dw = reference_conv(x, wt, g, stride, padding)
                case = f"{n}x{c}x{h}x{w} * {f}x{c}x{kh}x{kw} s{stride} p{padding} {tag}"
                expect(f"conv2d {case}", out, ref_out, dtype)
                expect(f"conv2d_grad_input {case}",
                       backend.conv2d_grad_input(g, wt, x.shape, stride, padding), ref_dx, dtype)
                expect(f"conv2d_grad_weight {case}",
                       backend.conv2d_grad_weight(x, g, wt.shape, stride, padding), ref_dw, dtype)
    assert not failures, f"{isa} kernel, {len(failures)} of {checks} checks:\n" + \
        "\n".join(failures)
    print(f"{isa}: all {checks} checks within tolerance")
