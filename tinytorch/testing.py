"""The conformance suite: is a backend right on every operation of the contract?

`check_backend(name_or_instance)` runs each operation on hand-picked edge cases
(1xN, Nx1, sizes that straddle block edges, non-contiguous and aliased inputs)
and then on cases drawn by hypothesis (random shapes, strides, paddings,
dtypes and memory layouts), and compares every result with a float64
reference at the competition's tolerance. It also checks that the backend
leaves its inputs untouched and returns the input dtype. A failure is shrunk
by hypothesis to a minimal example, which the report prints.

Three ways in:
  tinytorch check NAME [--bench]                          (the student's daily loop)
  tinytorch.check_backend("alice").passed                 (notebooks, scripts)
  pytest -p tinytorch.testing --pyargs tinytorch.testing --backend NAME
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import os
import sys

import numpy as np

from .backends.base import (OPERATIONS, ComputeBackend, backend_name, conv_output_shape,
                            implemented_operations)
from .backends.registry import load_backend
from .backends.staleness import stale_rebuild_command

#: Relative Frobenius error allowed against the float64 reference (the competition's rule).
TOLERANCE = {"float32": 1e-4, "float64": 1e-10}
LAYOUTS = ("contiguous", "transposed", "strided")
CONV_OPERATIONS = ("conv2d", "conv2d_grad_input", "conv2d_grad_weight")


# ---------------------------------------------------------------- one test case

@dataclasses.dataclass(frozen=True)
class Case:
    """One call of one operation, described by plain values so it prints and shrinks well."""
    op: str
    shapes: tuple            # shapes of the array arguments, in call order
    dtype: str = "float64"
    layouts: tuple = ("contiguous", "contiguous")
    stride: int = 1
    padding: int = 0
    shape_arg: tuple | None = None   # x_shape / w_shape of the gradient operations
    alias: bool = False              # the same array object passed as both array arguments
    seed: int = 0

    def arguments(self):
        """The positional arguments of the call, freshly generated from `seed`."""
        rng = np.random.default_rng(self.seed)
        arrays = [_make_array(shape, self.dtype, layout, rng)
                  for shape, layout in zip(self.shapes, self.layouts)]
        if self.alias:
            arrays[1] = arrays[0]
        args = list(arrays)
        if self.shape_arg is not None:
            args.append(self.shape_arg)
        if self.op in CONV_OPERATIONS:
            args += [self.stride, self.padding]
        return args

    def describe(self) -> str:
        names = {"matmul": "a b", "batched_matmul": "a b", "conv2d": "x w",
                 "conv2d_grad_input": "grad_out w", "conv2d_grad_weight": "x grad_out"}
        parts = [f"{name}: {self.dtype} {shape} {layout}" for name, shape, layout
                 in zip(names[self.op].split(), self.shapes, self.layouts)]
        if self.alias:
            parts[1] = f"{names[self.op].split()[1]}: the same array object as the first"
        if self.op == "conv2d_grad_input":
            parts.append(f"x_shape={self.shape_arg}")
        elif self.op == "conv2d_grad_weight":
            parts.append(f"w_shape={self.shape_arg}")
        if self.op in CONV_OPERATIONS:
            parts.append(f"stride={self.stride}, padding={self.padding}")
        return f"{self.op}({'; '.join(parts)})"


def _make_array(shape, dtype, layout, rng):
    """Standard-normal values in the requested memory layout (same values for every layout)."""
    if layout == "transposed":     # reversed axes: Fortran order, C-non-contiguous
        return rng.standard_normal(shape[::-1]).astype(dtype).T
    if layout == "strided":        # every other element of a wider array
        wide = np.zeros((*shape[:-1], 2 * shape[-1]), dtype=dtype)
        wide[..., ::2] = rng.standard_normal(shape)
        return wide[..., ::2]
    return rng.standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------- float64 references

def _windows(x, kh, kw, stride, oh, ow):
    """Slices of padded `x` that kernel offset (i, j) multiplies, for every (i, j)."""
    for i in range(kh):
        for j in range(kw):
            yield i, j, (slice(None), slice(None), slice(i, i + stride * oh, stride),
                         slice(j, j + stride * ow, stride))


def reference(case: Case, args) -> np.ndarray:
    """The exact answer in float64, computed independently of every backend."""
    arrays = [np.asarray(a, dtype=np.float64) for a in args if isinstance(a, np.ndarray)]
    if case.op in ("matmul", "batched_matmul"):
        return np.matmul(*arrays)
    s, p = case.stride, case.padding
    pad = ((0, 0), (0, 0), (p, p), (p, p))
    if case.op == "conv2d":
        x, w = arrays
        n, f = x.shape[0], w.shape[0]
        xp = np.pad(x, pad)
        oh, ow = (xp.shape[2] - w.shape[2]) // s + 1, (xp.shape[3] - w.shape[3]) // s + 1
        out = np.zeros((n, f, oh, ow))
        for i, j, window in _windows(xp, w.shape[2], w.shape[3], s, oh, ow):
            out += np.einsum("nchw,fc->nfhw", xp[window], w[:, :, i, j])
        return out
    if case.op == "conv2d_grad_input":
        grad_out, w = arrays
        n, c, h, wd = case.shape_arg
        grad_x = np.zeros((n, c, h + 2 * p, wd + 2 * p))
        for i, j, window in _windows(grad_x, w.shape[2], w.shape[3], s, *grad_out.shape[2:]):
            grad_x[window] += np.einsum("nfhw,fc->nchw", grad_out, w[:, :, i, j])
        return grad_x[:, :, p:p + h, p:p + wd]
    x, grad_out = arrays          # conv2d_grad_weight
    xp = np.pad(x, pad)
    grad_w = np.zeros(case.shape_arg)
    for i, j, window in _windows(xp, *case.shape_arg[2:], s, *grad_out.shape[2:]):
        grad_w[:, :, i, j] = np.einsum("nfhw,nchw->fc", grad_out, xp[window])
    return grad_w


# ---------------------------------------------------------------- running one case

def run_case(backend: ComputeBackend, case: Case):
    """(relative error, problem or None) of one call; never raises for a backend's fault."""
    args = case.arguments()
    arrays = [a for a in args if isinstance(a, np.ndarray)]
    before = [a.copy() for a in arrays]
    expected = reference(case, args)
    try:
        out = getattr(backend, case.op)(*args)
    except Exception as exc:  # noqa: BLE001 - a backend's exception is a finding, not a crash
        return float("inf"), f"raised {type(exc).__name__}: {exc}"
    if any(not np.array_equal(a, b, equal_nan=True) for a, b in zip(arrays, before)):
        return float("inf"), MODIFIED_INPUTS
    if not isinstance(out, np.ndarray):
        return float("inf"), f"returned {type(out).__name__}, not a numpy array"
    return compare(case, out, expected)


MODIFIED_INPUTS = "modified its input arrays (a backend must leave them untouched)"


def compare(case: Case, out: np.ndarray, expected: np.ndarray):
    """(relative error, problem or None) of an output against the float64 reference."""
    if out.shape != expected.shape or out.dtype != np.dtype(case.dtype):
        return float("inf"), (f"returned {out.dtype} {out.shape}, expected {case.dtype} "
                              f"{expected.shape}")
    with np.errstate(all="ignore"):
        error = float(np.linalg.norm(out.astype(np.float64) - expected)
                      / max(np.linalg.norm(expected), np.finfo(np.float64).tiny))
    if not error <= TOLERANCE[case.dtype]:    # also catches NaN
        return error, (f"relative error {error:.3g} exceeds {TOLERANCE[case.dtype]:g} "
                       f"(||out - ref|| / ||ref||, reference in float64)")
    return error, None


# ---------------------------------------------------------------- the cases

def edge_cases(op: str) -> list[Case]:
    """Hand-picked cases every backend meets first: thin, ragged, non-contiguous, aliased."""
    c, t, s = LAYOUTS
    if op == "matmul":
        shapes = [(1, 1, 1), (1, 37, 5), (6, 29, 1), (1, 40, 1), (65, 33, 129), (3, 300, 260),
                  (17, 17, 17)]
        cases = [Case(op, ((m, k), (k, n)), dtype, seed=i)
                 for i, (m, k, n) in enumerate(shapes) for dtype in TOLERANCE]
        return cases + [Case(op, ((9, 13), (13, 7)), "float32", (t, s), seed=1),
                        Case(op, ((33, 33), (33, 33)), "float64", alias=True, seed=2)]
    if op == "batched_matmul":
        return [Case(op, ((1, 1, 1), (1, 1, 1))),
                Case(op, ((3, 1, 19), (3, 19, 5)), "float32"),
                Case(op, ((2, 17, 9), (2, 9, 33)), "float64", (t, s)),
                Case(op, ((2, 8, 8), (2, 8, 8)), "float32", alias=True)]
    if op == "conv2d":
        return [Case(op, ((1, 1, 5, 5), (1, 1, 3, 3))),
                Case(op, ((2, 3, 7, 6), (4, 3, 3, 2)), "float32", stride=2, padding=1),
                Case(op, ((2, 2, 8, 8), (3, 2, 1, 1)), "float64"),
                Case(op, ((1, 3, 5, 4), (2, 3, 5, 4)), "float32"),
                Case(op, ((1, 1, 1, 1), (1, 1, 3, 3)), "float64", padding=1),
                Case(op, ((2, 4, 9, 9), (5, 4, 3, 3)), "float64", (t, s), stride=3, padding=2),
                Case(op, ((2, 2, 3, 3), (2, 2, 3, 3)), "float32", alias=True)]
    grads = [((2, 3, 7, 6), (4, 3, 3, 2), "float32", (c, c), 2, 1, False),
             ((1, 2, 5, 5), (3, 2, 3, 3), "float64", (t, s), 1, 1, False),
             ((2, 2, 3, 3), (2, 2, 3, 3), "float64", (c, c), 1, 1, True)]  # 3x3 in, 3x3 out
    return [_gradient_case(op, *spec) for spec in grads]


def _gradient_case(op, x_shape, w_shape, dtype, layouts, stride, padding, alias):
    """A gradient Case from the forward shapes (grad_out's shape follows from them)."""
    out_shape = conv_output_shape(x_shape, w_shape, stride, padding)
    shapes, shape_arg = {"conv2d_grad_input": ((out_shape, w_shape), x_shape),
                         "conv2d_grad_weight": ((x_shape, out_shape), w_shape)}[op]
    return Case(op, shapes, dtype, layouts, stride, padding, shape_arg, alias)


def case_strategy(op: str):
    """A hypothesis strategy drawing random, always-valid Cases of `op`."""
    from hypothesis import strategies as st

    # Small sizes, plus sizes just around common block edges (16, 32, 64).
    size = st.one_of(st.integers(1, 9), st.sampled_from([15, 16, 17, 31, 33, 63, 65]))
    dtype = st.sampled_from(sorted(TOLERANCE))
    layouts = st.tuples(st.sampled_from(LAYOUTS), st.sampled_from(LAYOUTS))
    seed = st.integers(0, 2**32 - 1)

    @st.composite
    def draw(draw):
        if op in ("matmul", "batched_matmul"):
            m, k, n = draw(size), draw(size), draw(size)
            alias = draw(st.booleans()) if m == k == n else False
            batch = (draw(st.integers(1, 3)),) if op == "batched_matmul" else ()
            return Case(op, ((*batch, m, k), (*batch, k, n)), draw(dtype), draw(layouts),
                        alias=alias, seed=draw(seed))
        n, c, f = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
        kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        stride, padding = draw(st.integers(1, 3)), draw(st.integers(0, 2))
        h = draw(st.integers(max(1, kh - 2 * padding), 11))
        w = draw(st.integers(max(1, kw - 2 * padding), 11))
        x_shape, w_shape = (n, c, h, w), (f, c, kh, kw)
        if op == "conv2d":
            return Case(op, (x_shape, w_shape), draw(dtype), draw(layouts), stride, padding,
                        seed=draw(seed))
        return dataclasses.replace(
            _gradient_case(op, x_shape, w_shape, draw(dtype), draw(layouts), stride, padding,
                           False), seed=draw(seed))

    return draw()


# ---------------------------------------------------------------- the report

@dataclasses.dataclass
class OperationReport:
    """How one operation fared: cases tried, worst relative error, minimal failing example."""
    operation: str
    own: bool                   # implemented by the backend itself (else the contract's default)
    passed: bool
    cases: int
    worst_error: float          # over the calls that returned a comparable result
    failure: str | None = None  # "<minimal failing call>: <what went wrong>"
    example: Case | None = None  # the minimal failing case, to replay with run_case


@dataclasses.dataclass
class ConformanceReport:
    """Per-operation results of `check_backend`; `passed` only if every operation passed."""
    backend: str
    operations: list[OperationReport]
    stale: str | None = None    # the command that rebuilds a stale compiled extension
    random_cases: bool = True   # False: hypothesis is missing, only the edge cases ran
    float64_results: tuple = ()  # operations returning float64 for float32 inputs (cast back)

    @property
    def passed(self) -> bool:
        return all(op.passed for op in self.operations)

    def failures(self) -> list[OperationReport]:
        return [op for op in self.operations if not op.passed]

    def to_dict(self) -> dict:
        """The report as JSON-ready values (`tinytorch check --json`)."""
        return {"backend": self.backend, "passed": self.passed, "stale": self.stale,
                "random_cases": self.random_cases, "float64_results": list(self.float64_results),
                "operations": [{"operation": op.operation, "own": op.own, "passed": op.passed,
                                "cases": op.cases, "worst_error": op.worst_error,
                                "failure": op.failure} for op in self.operations]}

    def format(self) -> str:
        lines = [f"conformance of backend {self.backend!r} (tolerance: relative error "
                 f"<= {TOLERANCE['float32']:g} float32, {TOLERANCE['float64']:g} float64)"]
        width = max(len(op.operation) for op in self.operations)
        for op in self.operations:
            source = "own" if op.own else "default"
            lines.append(f"  {'PASS' if op.passed else 'FAIL'}  {op.operation:<{width}}  "
                         f"({source}, {op.cases} cases, worst relative error "
                         f"{op.worst_error:.2e})")
            if op.failure:
                lines.append(f"        minimal failing example: {op.failure}")
        if not self.random_cases:
            lines.append(f"warning: only the edge cases ran; {NO_HYPOTHESIS}")
        for op in self.float64_results:
            lines.append(f"note: {op} returns float64 for float32 inputs; the contract casts "
                         f"each result back, a copy of the whole output on every call: "
                         f"allocate the output with the input's dtype")
        verdict = "all operations pass" if self.passed else \
            f"{len(self.failures())} of {len(self.operations)} operations FAIL"
        lines.append(f"{self.backend}: {verdict}")
        return "\n".join(lines)


NO_HYPOTHESIS = ("the random cases need the hypothesis package, which is not installed "
                 "(pip install hypothesis)")


def hypothesis_available() -> bool:
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        return False
    return True


def _worse(worst, error):
    """The larger error; a call that gave no comparable output (it raised) does not count."""
    return max(worst, error) if np.isfinite(error) else worst


class _Mismatch(AssertionError):
    """Raised inside the hypothesis property so that it shrinks the failing case."""


def check_operation(backend: ComputeBackend, op: str, max_examples: int = 25,
                    seed: int = 0, run=None, own: bool | None = None) -> OperationReport:
    """Edge cases, then `max_examples` random cases of `op`, shrinking any failure.

    `run(case) -> (error, problem)` runs one case; by default in this process, on
    `backend` (the arena runs them in a sandboxed worker: arena/checking.py).
    """
    run = run or (lambda case: run_case(backend, case))
    own = op in implemented_operations(type(backend)) if own is None else own
    worst, tried, failed = 0.0, 0, None
    for case in edge_cases(op):
        error, problem = run(case)
        tried, worst = tried + 1, _worse(worst, error)
        if problem:
            failed = (case, problem)
            break
    # Even after an edge case failed, hypothesis looks for a smaller failing case.
    if max_examples > 0 and hypothesis_available():
        worst, tried, found = _search(run, op, max_examples, seed, worst, tried)
        failed = found or failed
    if failed is None:
        return OperationReport(op, own, True, tried, worst)
    case, problem = failed
    where = case.describe() if case is not None else "hypothesis"
    return OperationReport(op, own, False, tried, worst, f"{where}: {problem}", case)


def _search(run, op, max_examples, seed, worst, tried):
    """Let hypothesis look for a failing case and shrink it: (worst, tried, (case, problem))."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as fixed_seed

    state = {"worst": worst, "tried": tried, "failed": None}

    @fixed_seed(seed)
    @settings(max_examples=max_examples, deadline=None, database=None, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(case_strategy(op))
    def prop(case):
        error, problem = run(case)
        state["tried"] += 1
        state["worst"] = _worse(state["worst"], error)
        if problem:
            # Hypothesis replays the shrunk case last, so this ends up the minimal one.
            state["failed"] = (case, problem)
            raise _Mismatch(problem)

    try:
        prop()
    except Exception as exc:  # noqa: BLE001 - e.g. a backend giving different answers per call
        if state["failed"] is None:
            state["failed"] = (None, f"{type(exc).__name__}: {exc}")
    return state["worst"], state["tried"], state["failed"]


def _resolve(name_or_instance) -> ComputeBackend:
    if isinstance(name_or_instance, ComputeBackend):
        return name_or_instance
    if inspect.isclass(name_or_instance) and issubclass(name_or_instance, ComputeBackend):
        return name_or_instance()
    if isinstance(name_or_instance, str):
        return load_backend(name_or_instance)
    raise TypeError(f"check_backend() takes a registered backend name, a ComputeBackend "
                    f"instance or subclass, got {type(name_or_instance).__name__}")


def check_backend(name_or_instance, max_examples: int = 25, seed: int = 0,
                  operations=OPERATIONS) -> ConformanceReport:
    """Check every contract operation of a backend; see the module docstring."""
    backend = _resolve(name_or_instance)
    reports = [check_operation(backend, op, max_examples, seed) for op in operations]
    stale = stale_rebuild_command(inspect.getmodule(type(backend)))
    return ConformanceReport(backend_name(backend), reports, stale,
                             random_cases=max_examples <= 0 or hypothesis_available(),
                             float64_results=tuple(sorted(getattr(backend, "float64_results", ()))))


# ---------------------------------------------------------------- tinytorch check

def add_arguments(parser):
    parser.add_argument("name", help="registered backend name (see `tinytorch backends`)")
    parser.add_argument("--bench", action="store_true",
                        help="also time it the way the board does: the board's events and "
                             "rules, beside the references, through `tinytorch compete`'s code")
    parser.add_argument("--quick", action="store_true",
                        help="with --bench: the board's --quick shapes and repeats")
    parser.add_argument("--config", default=os.path.join("leaderboard", "events.toml"),
                        help="the board's events file, for its rules and --bench's events "
                             "(default: leaderboard/events.toml; its defaults if missing)")
    parser.add_argument("--examples", type=int, default=25, metavar="N",
                        help="random cases per operation after the edge cases (default: 25)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random cases")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (for graders and scripts) instead of text")


def _board_rules(config):
    """The board's rules and events from its events file, or the defaults without one."""
    from .arena.events import EventsFileError, Rules, load_events
    try:
        return load_events(config)
    except EventsFileError as exc:
        if os.path.exists(config):
            raise
        print(f"note: {exc}; using the default rules", file=sys.stderr)
        return Rules(), []


def _conformance(contestant, rules, args, isolate):
    """(report, error) of the conformance suite run in a sandboxed worker."""
    from .arena import sandbox
    from .arena.checking import RemoteBackend
    from .arena.runner import WorkerFailure
    limits = sandbox.Limits(wall_time_s=rules.wall_time_s, memory_mb=rules.memory_mb,
                            threads=rules.threads, allow_blas=rules.allow_blas)
    remote = RemoteBackend(contestant, limits, isolate=isolate)
    try:
        try:
            remote.start()
        except WorkerFailure as exc:
            return None, f"could not load backend: {exc.reason}"
        reports = [check_operation(None, op, args.examples, args.seed, run=remote.run_case,
                                   own=op in remote.operations) for op in OPERATIONS]
    finally:
        remote.close()
    return ConformanceReport(contestant.name, reports, contestant.provenance.get("stale"),
                             random_cases=args.examples <= 0 or hypothesis_available(),
                             float64_results=tuple(sorted(remote.float64_results))), None


def _format_bench(name, bench) -> str:
    lines = [f"\nthe board's events{' (--quick)' if bench['quick'] else ''}, "
             f"{bench['threads']} thread(s), as `tinytorch compete` scores them "
             f"(t_optimized / t_{name}, higher is better; the memory event compares peak memory):"]
    for event, ratio in bench["events"].items():
        lines.append(f"  {event:<24} {'-' if ratio is None else f'{ratio:.3g}x':>9}")
    lines.append(f"unranked: {bench['unranked_reason']}" if bench["unranked_reason"] else
                 f"score: {bench['score']:.3f} (the optimized reference scores 1.000)")
    return "\n".join(lines)


def run(args) -> int:
    """Check one backend in a sandboxed worker (unsandboxed, with a note, without bubblewrap).

    Exit status: 0 all pass; 1 a failure, a broken rule or a stale build; 2 an unknown
    backend or an unusable events file.
    """
    from .arena import sandbox
    from .arena.compete import UnknownBackend, bench, contestants
    from .arena.events import EventsFileError
    from .backends.registry import display_name
    from .backends.staleness import stale_warning
    try:
        (contestant,) = [c for c in contestants([args.name]) if c.name == args.name]
        rules, events = _board_rules(args.config)
    except (UnknownBackend, EventsFileError) as exc:
        print(f"tinytorch check: {exc}", file=sys.stderr)
        return 2
    except ValueError:
        print(f"tinytorch check: backend {display_name(args.name)} is claimed by several "
              f"distributions; see `tinytorch backends`", file=sys.stderr)
        return 2
    shown = display_name(contestant.name)
    try:
        sandbox.check_available()
        isolate = True
    except sandbox.SandboxUnavailable as exc:
        print(f"note: checking {shown} unsandboxed, in a child process: {exc}", file=sys.stderr)
        isolate = False
    stale = contestant.provenance.get("stale")
    error = contestant.provenance.get("load_error") or contestant.provenance.get("violation")
    report = None
    if error is None:
        report, error = _conformance(contestant, rules, args, isolate)
    benched = bench(contestant, rules, events, args.quick, isolate) \
        if args.bench and error is None and events else None
    passed = error is None and report.passed and not stale
    if args.json:
        print(json.dumps({"backend": contestant.name, "passed": passed, "error": error,
                          "stale": stale, "report": report.to_dict() if report else None,
                          "bench": benched}, indent=1))
    else:
        print(f"{shown}: FAIL: {error}" if error else report.format())
        if benched:
            print(_format_bench(shown, benched))
        if stale:
            print(stale_warning(shown, stale))
    return 0 if passed else 1


# ---------------------------------------------------------------- the pytest entry

def pytest_addoption(parser):
    parser.addoption("--backend", action="append", default=[], metavar="NAME",
                     help="tinytorch backend(s) to run the conformance suite on")


def pytest_generate_tests(metafunc):
    # Called twice when this module is both the plugin (-p) and the test module: once is enough.
    if "conformance_backend" in metafunc.fixturenames and \
            not getattr(metafunc, "_tinytorch_parametrized", False):
        metafunc._tinytorch_parametrized = True
        names = metafunc.config.getoption("--backend", default=None) or []
        metafunc.parametrize("conformance_backend", names or ["naive"])
        metafunc.parametrize("conformance_operation", OPERATIONS)


def test_conformance(conformance_backend, conformance_operation):
    """One pytest test per (backend, operation); run with --backend NAME."""
    report = check_operation(load_backend(conformance_backend), conformance_operation)
    assert report.passed, f"{conformance_backend}: {report.failure}"
