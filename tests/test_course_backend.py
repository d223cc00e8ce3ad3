"""The course's own backend code works as written, and direct calls are safe.

The design document (seed/OPTIMIZATION_MODULE_ARCHITECTURE.md) writes its
NaiveBackend as a triple loop accumulating into np.zeros((m, n)) -- a float64
result even for float32 inputs -- and calls `get_backend().matmul(a.data,
b.data)` directly, bypassing tinytorch.matmul. Both must work.
"""
import importlib.util
import textwrap

import numpy as np
import pytest

import tinytorch
from conftest import skip_or_fail
from fixtures.plugins import python
from tinytorch.backends import ComputeBackend, registry
from tinytorch.testing import check_backend


def naive_conv2d(input, kernel, stride=1, padding=0):
    """The document leaves this helper undefined; a sliding window, as it says."""
    x = np.pad(input, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    n, _, h, w = x.shape
    f, _, kh, kw = kernel.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    result = np.zeros((n, f, oh, ow))
    for i in range(oh):
        for j in range(ow):
            window = x[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            result[:, :, i, j] = np.tensordot(window, kernel, axes=([1, 2, 3], [1, 2, 3]))
    return result


class CourseNaiveBackend(ComputeBackend):
    """Pedagogical reference implementation"""

    def matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        # Triple-loop O(n³) implementation for learning
        m, k = a.shape
        k2, n = b.shape
        assert k == k2
        result = np.zeros((m, n))
        for i in range(m):
            for j in range(n):
                for l in range(k):  # noqa: E741 - the document's name
                    result[i, j] += a[i, l] * b[l, j]
        return result

    def conv2d(self, input, kernel, stride=1, padding=0):
        # Naive sliding window implementation
        return naive_conv2d(input, kernel, stride, padding)


@pytest.fixture
def fresh_registry(monkeypatch):
    """Runtime registrations made in a test vanish with it."""
    monkeypatch.setattr(registry, "_entries", None)


def test_design_document_naive_backend_passes_the_conformance_suite():
    report = check_backend(CourseNaiveBackend(), max_examples=8)
    assert report.passed, report.format()
    assert [op.own for op in report.operations] == [True, True, False, False, False]


def test_float64_result_for_float32_inputs_is_cast_back():
    a = np.ones((2, 3), dtype=np.float32)
    out = CourseNaiveBackend().matmul(a, a.T)
    assert out.dtype == np.float32 and out.tolist() == [[3.0, 3.0], [3.0, 3.0]]


def test_wrong_results_from_a_course_style_backend_are_backend_errors():
    class Sloppy(CourseNaiveBackend):
        def matmul(self, a, b):
            return np.zeros((a.shape[0], b.shape[1] + 1))          # one column too many

    with pytest.raises(tinytorch.BackendError, match=r"'Sloppy'.*shape \(2, 3\), expected \(2, 2\)"):
        Sloppy().matmul(np.ones((2, 2)), np.ones((2, 2)))

    class Integer(CourseNaiveBackend):
        def matmul(self, a, b):
            return np.zeros((a.shape[0], b.shape[1]), dtype=np.int64)

    with pytest.raises(tinytorch.BackendError, match="dtype int64 for float32"):
        Integer().matmul(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32))


def test_set_backend_accepts_an_instance_and_every_call_reaches_it():
    calls = []

    class Counting(CourseNaiveBackend):
        def matmul(self, a, b):
            calls.append(a.shape)
            return super().matmul(a, b)

    backend = Counting()
    with tinytorch.use_backend(backend):
        assert tinytorch.get_backend() is backend
        a = np.arange(6, dtype=np.float32).reshape(2, 3)
        assert tinytorch.matmul(a, a.T).tolist() == [[5.0, 14.0], [14.0, 50.0]]
        tinytorch.get_backend().matmul(a, a.T)                       # the course's direct call
    # super().matmul is wrapped as well, so each call validates twice but computes once each
    assert calls == [(2, 3), (2, 3)]


def test_register_backend_for_this_process(fresh_registry):
    tinytorch.register_backend("mine", CourseNaiveBackend)
    records = {r.name: r for r in tinytorch.list_backends()}
    mine = records["mine"]
    assert (mine.origin, mine.status, mine.distribution) == ("runtime", "ok", None)
    assert mine.operations == ["matmul", "conv2d"]
    with tinytorch.use_backend("mine") as backend:
        assert isinstance(backend, CourseNaiveBackend) and backend.name == "mine"
    # a factory function works too, and re-registering a runtime name replaces it
    tinytorch.register_backend("mine", lambda: CourseNaiveBackend())
    assert isinstance(tinytorch.set_backend("mine"), CourseNaiveBackend)
    tinytorch.set_backend("naive")


def test_register_backend_refuses_taken_names_and_non_backends(fresh_registry):
    for core in ("naive", "numpy", "optimized"):
        with pytest.raises(ValueError, match=f"{core!r} is already registered by 'tinytorch'"):
            tinytorch.register_backend(core, CourseNaiveBackend)
    for bad in ("my backend", "Mine", "\u043eptimized", "pkg:Class", "$x^{$"):
        with pytest.raises(ValueError, match="invalid backend name .*lowercase ASCII"):
            tinytorch.register_backend(bad, CourseNaiveBackend)
    with pytest.raises(TypeError, match="not a tinytorch.backends.ComputeBackend subclass"):
        tinytorch.register_backend("plain", dict)
    with pytest.raises(TypeError, match="factory must be a ComputeBackend subclass or a callable"):
        tinytorch.register_backend("plain", 42)
    assert "plain" not in {r.name for r in tinytorch.list_backends(load=False)}


# ---------------------------------------------------------------- direct calls, no crash

BAD_CALLS = textwrap.dedent("""
    import numpy as np
    from tinytorch.backends import load_backend
    backend = load_backend(NAME)
    f32 = lambda *shape: np.ones(shape, dtype=np.float32)
    calls = [
        ("matmul", lambda: backend.matmul(f32(2, 3), f32(4, 5))),
        ("matmul 1-D", lambda: backend.matmul(f32(3), f32(3, 2))),
        ("matmul int", lambda: backend.matmul(np.ones((2, 2), int), np.ones((2, 2), int))),
        ("matmul mixed", lambda: backend.matmul(f32(2, 2), np.ones((2, 2)))),
        ("batched", lambda: backend.batched_matmul(f32(2, 3, 4), f32(3, 4, 5))),
        ("conv channels", lambda: backend.conv2d(f32(1, 3, 8, 8), f32(4, 2, 3, 3), 1, 0)),
        ("conv big kernel", lambda: backend.conv2d(f32(1, 1, 2, 2), f32(1, 1, 5, 5), 1, 0)),
        ("conv stride 0", lambda: backend.conv2d(f32(1, 1, 4, 4), f32(1, 1, 3, 3), 0, 0)),
        ("conv 3-D", lambda: backend.conv2d(f32(3, 8, 8), f32(4, 3, 3, 3), 1, 0)),
        ("grad input", lambda: backend.conv2d_grad_input(f32(1, 4, 9, 9), f32(4, 3, 3, 3),
                                                         (1, 3, 8, 8), 1, 0)),
        ("grad weight", lambda: backend.conv2d_grad_weight(f32(1, 3, 8, 8), f32(1, 4, 5, 5),
                                                           (4, 3, 3, 3), 1, 0)),
    ]
    for label, call in calls:
        try:
            call()
        except (ValueError, TypeError) as exc:
            print(f"{label}: {type(exc).__name__}: {exc}")
        else:
            print(f"{label}: NO ERROR")
""")


def _bad_calls(name, *paths):
    done = python(f"NAME = {name!r}\n" + BAD_CALLS, *paths)
    assert done.returncode == 0, f"{name} crashed (exit {done.returncode}): {done.stderr}"
    return dict(line.split(": ", 1) for line in done.stdout.splitlines())


def _assert_clear(errors):
    assert len(errors) == 11 and "NO ERROR" not in errors.values()
    assert errors["matmul"] == "ValueError: matmul: inner dimensions differ: a (2, 3) @ b (4, 5)"
    assert errors["matmul 1-D"].startswith("ValueError: matmul: a must be 2-D")
    assert errors["matmul int"].startswith("TypeError: matmul: inputs must be both float32")
    assert "float32, float64" in errors["matmul mixed"]
    assert "(2, 3, 4) @ b (3, 4, 5)" in errors["batched"]
    assert "3 channels but weight expects 2" in errors["conv channels"]
    assert "larger than the padded input" in errors["conv big kernel"]
    assert "stride must be an integer >= 1, got 0" in errors["conv stride 0"]
    assert "x must be 4-D" in errors["conv 3-D"]
    assert "grad_out has shape (1, 4, 9, 9)" in errors["grad input"]
    assert "grad_out has shape (1, 4, 5, 5)" in errors["grad weight"]


@pytest.mark.parametrize("name", ["naive", "optimized"])
def test_direct_bad_calls_on_core_backends_are_clear_errors(name):
    _assert_clear(_bad_calls(name))


@pytest.mark.parametrize("name,module", [("alice", "alice_kernels"), ("bob", "bob_kernels")])
def test_direct_bad_calls_on_compiled_submissions_without_bounds_checks(name, module):
    """alice and bob compile with boundscheck=False: only the contract stands between."""
    if importlib.util.find_spec(module) is None:
        skip_or_fail(f"{name} is not installed (pip install -e submissions/{name})")
    _assert_clear(_bad_calls(name))
