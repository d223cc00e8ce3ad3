"""The conformance suite catches each planted bug, passes correct backends, reports clearly."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tinytorch
from fixtures.buggy_backends import (BLOCK, PLANTED, BlockEdgeBackend, IgnoresPaddingBackend,
                                     MutatesInputBackend, WrongDtypeBackend,
                                     WrongTransposeBackend)
from fixtures.plugins import GOOD_BACKEND, add_distribution, python, readable_by_all, tinytorch_cli
from tinytorch.backends import ComputeBackend, NumpyBackend
from tinytorch.testing import (OPERATIONS, Case, check_backend, edge_cases, reference,
                               run_case)

EXAMPLES = 30


@pytest.fixture(scope="module")
def planted_reports():
    """The suite's verdict on every planted bug, computed once for the tests below."""
    return {cls: check_backend(cls(), max_examples=EXAMPLES) for cls in PLANTED}


@pytest.mark.parametrize("backend_class", list(PLANTED), ids=lambda c: c.__name__)
def test_each_planted_bug_fails_exactly_its_operation(backend_class, planted_reports):
    report = planted_reports[backend_class]
    assert not report.passed
    assert [op.operation for op in report.failures()] == [PLANTED[backend_class]]
    bad = report.failures()[0]
    assert bad.example is not None and bad.failure.startswith(bad.example.describe())
    # The minimal example really fails when replayed.
    assert run_case(backend_class(), bad.example)[1] is not None


def test_failures_say_what_went_wrong_on_a_minimal_example(planted_reports):
    def failure(cls):
        return planted_reports[cls].failures()[0]

    transpose = failure(WrongTransposeBackend)
    assert "relative error" in transpose.failure
    (m, k), (_, n) = transpose.example.shapes
    assert k * n <= 4, "hypothesis should shrink a transpose bug to a tiny matrix"

    edge = failure(BlockEdgeBackend).example
    assert edge.shapes[0][0] % BLOCK != 0      # only ragged row blocks are wrong

    padding = failure(IgnoresPaddingBackend).example
    assert padding.padding > 0

    assert "modified its input" in failure(MutatesInputBackend).failure
    dtype = failure(WrongDtypeBackend).failure
    assert "BackendError" in dtype and "float16" in dtype


def test_block_edge_bug_passes_shapes_that_fill_whole_blocks():
    case = Case("matmul", ((2 * BLOCK, 5), (5, 3)), "float64")
    assert run_case(BlockEdgeBackend(), case)[1] is None
    assert run_case(BlockEdgeBackend(), Case("matmul", ((BLOCK + 1, 5), (5, 3))))[1]


class _BuggyMatmulOnly(ComputeBackend):
    """Implements only the required operations; matmul is off by a factor everywhere."""

    def matmul(self, a, b):
        return (a @ b) * 1.001

    def conv2d(self, x, w, stride=1, padding=0):
        return NumpyBackend().conv2d(x, w, stride, padding)


def test_defaults_are_checked_too_and_labelled_as_defaults():
    report = check_backend(_BuggyMatmulOnly(), max_examples=5)
    by_op = {op.operation: op for op in report.operations}
    assert [op.operation for op in report.operations] == list(OPERATIONS)
    assert by_op["conv2d"].passed and by_op["conv2d"].own
    for op in ("matmul", "batched_matmul", "conv2d_grad_input", "conv2d_grad_weight"):
        assert not by_op[op].passed, op
    assert not by_op["batched_matmul"].own
    assert "(default," in report.format()


class _AliasConfused(NumpyBackend):
    """Wrong only when both arguments are the same array (an in-place trick gone wrong)."""

    def matmul(self, a, b):
        if a is b:
            return np.zeros((a.shape[0], b.shape[1]), dtype=a.dtype)
        return a @ b


def test_aliased_inputs_are_among_the_edge_cases():
    report = check_backend(_AliasConfused(), max_examples=0, operations=("matmul",))
    assert not report.passed
    assert "the same array object" in report.failures()[0].failure


def test_edge_cases_cover_thin_ragged_and_non_contiguous_inputs():
    cases = edge_cases("matmul")
    shapes = [(c.shapes[0][0], c.shapes[0][1], c.shapes[1][1]) for c in cases]
    assert any(m == 1 for m, _, _ in shapes) and any(n == 1 for _, _, n in shapes)
    assert any(m % 64 and m > 64 for m, _, _ in shapes)            # past a block edge
    assert any(k > 256 and k % 128 for _, k, _ in shapes)
    assert any(set(c.layouts) != {"contiguous"} for c in cases)
    for op in OPERATIONS:
        for case in edge_cases(op):
            args = case.arguments()
            if "transposed" in case.layouts or "strided" in case.layouts:
                assert not all(a.flags.c_contiguous for a in args if isinstance(a, np.ndarray))
            assert reference(case, args).dtype == np.float64


@pytest.mark.parametrize("name", ["naive", "numpy", "optimized"])
def test_core_backends_pass(name):
    report = check_backend(name, max_examples=10)
    assert report.passed, report.format()
    assert report.backend == name
    assert all(op.worst_error < 1e-4 for op in report.operations)


def test_check_backend_accepts_names_instances_and_classes_only():
    assert check_backend(NumpyBackend, max_examples=0).passed
    with pytest.raises(TypeError, match="registered backend name, a ComputeBackend"):
        check_backend(42)
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        check_backend("nope")
    assert tinytorch.check_backend is check_backend


def test_report_format_lists_every_operation():
    text = check_backend(WrongDtypeBackend(), max_examples=5).format()
    assert "FAIL  matmul" in text and "PASS  conv2d" in text
    assert "minimal failing example: matmul(" in text
    assert text.splitlines()[-1] == "WrongDtypeBackend: 1 of 5 operations FAIL"


# ---------------------------------------------------------------- the command and pytest entry

BUGGY = '''
from tinytorch.backends import OptimizedBackend

class Buggy(OptimizedBackend):
    """Right without padding, half the answer with it."""

    def conv2d(self, x, w, stride=1, padding=0):
        out = super().conv2d(x, w, stride, padding)
        return out * 0.5 if padding else out
'''


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    add_distribution(site, "good-plugin", {"goodplug": "goodplug:GoodBackend"},
                     {"goodplug.py": GOOD_BACKEND})
    add_distribution(site, "buggy-plugin", {"buggyplug": "buggyplug:Buggy"},
                     {"buggyplug.py": BUGGY})
    add_distribution(site, "student-mistakes", {"blasplug": "mistakes:UsesBlas",
                                                "crashplug": "mistakes:WritesOutOfBounds",
                                                "wideplug": "mistakes:ReturnsFloat64"},
                     {"mistakes.py": MISTAKES})
    return site


MISTAKES = '''
import ctypes
import numpy as np
from tinytorch.backends import OptimizedBackend

class UsesBlas(OptimizedBackend):
    """`a @ b` inside a kernel: numpy's BLAS, which the competition forbids."""
    def matmul(self, a, b):
        return a @ b

class ReturnsFloat64(OptimizedBackend):
    """Accumulates in float64 whatever the inputs: right, and a copy per call."""
    def matmul(self, a, b):
        return super().matmul(a.astype(np.float64), b.astype(np.float64))

class WritesOutOfBounds(OptimizedBackend):
    """What boundscheck=False lets through: a write far past the end of an array."""
    def conv2d(self, x, w, stride=1, padding=0):
        ctypes.memset(0, 0, 8)
        return super().conv2d(x, w, stride, padding)
'''


def test_check_command_exit_status_and_report(plugin_site):
    good = tinytorch_cli("check", "goodplug", "--examples", "5", paths=[plugin_site])
    assert good.returncode == 0, good.stdout + good.stderr
    assert "goodplug: all operations pass" in good.stdout
    assert good.stdout.count("PASS") == 5

    bad = tinytorch_cli("check", "buggyplug", "--examples", "20", paths=[plugin_site])
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAIL  conv2d " in bad.stdout and "PASS  matmul" in bad.stdout
    assert "minimal failing example: conv2d(" in bad.stdout and "padding=1" in bad.stdout

    unknown = tinytorch_cli("check", "nope", paths=[plugin_site])
    assert unknown.returncode == 2
    assert "unknown backend 'nope'" in unknown.stderr and "Traceback" not in unknown.stderr


def test_check_applies_the_competitions_blas_rule(plugin_site):
    done = tinytorch_cli("check", "blasplug", "--examples", "5", paths=[plugin_site])
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL  matmul " in done.stdout and "PASS  conv2d " in done.stdout
    assert "rule violation: blas: called scipy_cblas_s" in done.stdout


def test_a_crashing_kernel_is_a_verdict_naming_the_case_and_the_fix(plugin_site):
    done = tinytorch_cli("check", "crashplug", "--examples", "3", paths=[plugin_site])
    assert done.returncode == 1, done.stdout + done.stderr
    assert "PASS  matmul " in done.stdout and "FAIL  conv2d " in done.stdout
    line = next(line for line in done.stdout.splitlines() if "minimal failing example: conv2d(" in line)
    assert "crashed with SIGSEGV" in line and "boundscheck=True" in line
    assert "Traceback" not in done.stdout + done.stderr


def test_a_float64_result_for_float32_inputs_passes_with_a_note_on_its_cost(plugin_site):
    done = tinytorch_cli("check", "wideplug", "--examples", "3", paths=[plugin_site])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "note: matmul returns float64 for float32 inputs" in done.stdout
    assert "allocate the output with the input's dtype" in done.stdout
    assert "note: conv2d" not in done.stdout


BENCH_EVENTS = """
[rules]
min_batch_ms = 2.0
quick_repeats = 2

[[events]]
name = "matmul"
kind = "matmul"
shapes = [{ m = 16, k = 16, n = 16 }]
"""


def test_check_bench_times_the_boards_events_as_compete_scores_them(plugin_site, tmp_path):
    (tmp_path / "events.toml").write_text(BENCH_EVENTS)
    done = tinytorch_cli("check", "goodplug", "--examples", "0", "--bench", "--quick",
                         "--config", str(tmp_path / "events.toml"), paths=[plugin_site])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "as `tinytorch compete` scores them" in done.stdout
    assert any(line.split()[0] == "matmul" and line.rstrip().endswith("x")
               for line in done.stdout.splitlines() if line.startswith("  "))
    assert "score: " in done.stdout


def test_pytest_entry_runs_one_test_per_operation(plugin_site, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(plugin_site)}
    cmd = [sys.executable, "-m", "pytest", "-p", "tinytorch.testing", "--pyargs",
           "tinytorch.testing", "-q", "-p", "no:cacheprovider"]
    good = subprocess.run(cmd + ["--backend", "goodplug"], capture_output=True, text=True,
                          env=env, cwd=tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "5 passed" in good.stdout
    bad = subprocess.run(cmd + ["--backend", "buggyplug"], capture_output=True, text=True,
                         env=env, cwd=tmp_path)
    assert bad.returncode == 1
    assert "1 failed, 4 passed" in bad.stdout and "buggyplug: conv2d(" in bad.stdout


def test_without_hypothesis_the_edge_cases_still_run_and_the_report_says_so():
    done = python("""
        import sys
        sys.modules['hypothesis'] = None          # as if it were not installed
        from tinytorch.testing import check_backend
        report = check_backend('numpy')
        print(report.passed, report.random_cases, sum(op.cases for op in report.operations))
        print(report.format())
    """)
    assert done.returncode == 0, done.stderr
    first, *rest = done.stdout.splitlines()
    passed, random_cases, cases = first.split()
    assert (passed, random_cases) == ("True", "False") and int(cases) >= 20
    assert any("only the edge cases ran" in line and "pip install hypothesis" in line
               for line in rest)


def test_check_and_listing_name_the_rebuild_command_for_a_stale_build(tmp_path):
    """A .pyx edited after its extension was built: both tools say how to rebuild."""
    project = tmp_path / "stalesub"
    package = project / "stale_kernels"
    package.mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'stale-kernels'\n")
    (package / "__init__.py").write_text(GOOD_BACKEND)
    built = package / "_kernels.cpython-311-x86_64-linux-gnu.so"
    built.write_bytes(b"")                      # stands in for the compiled kernels
    (package / "_kernels.pyx").write_text("# edited after the build\n")
    os.utime(built, (1_000_000_000, 1_000_000_000))
    site = add_distribution(tmp_path / "site", "stale-kernels",
                            {"stalesub": "stale_kernels:GoodBackend"})
    rebuild = f"pip install -e {project}"

    readable_by_all(project)
    checked = tinytorch_cli("check", "stalesub", "--examples", "0", paths=[site, project])
    assert checked.returncode == 1, checked.stdout + checked.stderr     # checking OLD kernels
    last = checked.stdout.strip().splitlines()[-1]
    assert "is a stale build" in last and last.endswith(f"rebuild with: {rebuild}")

    listed = tinytorch_cli("backends", "--json", paths=[site, project])
    record = next(r for r in json.loads(listed.stdout) if r["name"] == "stalesub")
    assert record["stale"] == rebuild
