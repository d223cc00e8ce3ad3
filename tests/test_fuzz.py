"""Fuzzed boundaries: random input at every public entry point gets a right answer or a clear error.

"Clear" means the documented exception type with a message naming the
operation (or file, or key) — never an exception from deep inside numpy or
pickle, a crash, a hang, or a silently wrong result. Valid inputs are checked
against float64 references computed here, independently of tinytorch.
"""
from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import tinytorch  # noqa: E402

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
BACKENDS = ("naive", "numpy", "optimized")
DTYPES = (np.float32, np.float64, np.float16, np.int32, np.int64, np.bool_, np.complex64)
TOLERANCE = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}

small = st.integers(0, 5)


def arrays(draw, shape, dtype):
    """Random values of `dtype` in `shape`, sometimes as a non-contiguous view."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    layout = draw(st.sampled_from(["c", "fortran", "strided"]))
    if layout == "strided" and len(shape) >= 1:
        big = rng.standard_normal((*shape[:-1], shape[-1] * 2))
        values = big[..., ::2]
    else:
        values = rng.standard_normal(shape)
        if layout == "fortran":
            values = np.asfortranarray(values)
    return values.astype(dtype, copy=False) if dtype != np.bool_ else values > 0


def relative_error(out, ref):
    ref_norm = np.linalg.norm(ref)
    diff = np.linalg.norm(np.asarray(out, dtype=np.float64) - ref)
    return diff / ref_norm if ref_norm > 0 else diff


def assert_clear(exc_info, *words):
    """The exception's message names the problem (any of `words`)."""
    message = str(exc_info.value)
    assert any(w in message for w in words), f"unclear message: {message!r}"


# ------------------------------------------------------------------ matmul dispatch

@st.composite
def matmul_case(draw):
    dtype_a = draw(st.sampled_from(DTYPES[:2]) if draw(st.booleans()) else st.sampled_from(DTYPES))
    dtype_b = dtype_a if draw(st.integers(0, 3)) else draw(st.sampled_from(DTYPES))
    shape_a = draw(st.lists(small, min_size=1, max_size=3)) if draw(st.integers(0, 4)) == 0 \
        else [draw(small), draw(small)]
    if draw(st.integers(0, 4)) == 0:
        shape_b = draw(st.lists(small, min_size=1, max_size=3))
    else:
        shape_b = [shape_a[-1], draw(small)]
    return arrays(draw, tuple(shape_a), dtype_a), arrays(draw, tuple(shape_b), dtype_b)


@pytest.mark.parametrize("backend", BACKENDS)
@FUZZ
@given(case=matmul_case())
def test_matmul_dispatch_answers_or_names_the_problem(backend, case):
    a, b = case
    with tinytorch.use_backend(backend):
        valid_dtype = a.dtype == b.dtype and a.dtype in TOLERANCE
        valid_shape = a.ndim == 2 and b.ndim == 2 and a.shape[1] == b.shape[0]
        if not valid_dtype:
            with pytest.raises(TypeError) as info:
                tinytorch.matmul(a, b)
            assert_clear(info, "matmul")
            return
        if not valid_shape:
            with pytest.raises(ValueError) as info:
                tinytorch.matmul(a, b)
            assert_clear(info, "matmul")
            return
        out = tinytorch.matmul(a, b)
    assert isinstance(out, np.ndarray) and out.dtype == a.dtype
    assert out.shape == (a.shape[0], b.shape[1])
    ref = a.astype(np.float64) @ b.astype(np.float64)
    assert relative_error(out, ref) <= TOLERANCE[a.dtype]
    assert not np.may_share_memory(out, a) and not np.may_share_memory(out, b)


# ------------------------------------------------------------------ conv2d dispatch

def reference_conv2d(x, w, stride, padding):
    """Direct float64 cross-correlation, written independently of tinytorch."""
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((n, f, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            out[:, :, i, j] = np.einsum("nckl,fckl->nf", patch, w.astype(np.float64))
    return out


@st.composite
def conv_case(draw):
    dtype = draw(st.sampled_from(DTYPES[:2])) if draw(st.integers(0, 5)) else draw(st.sampled_from(DTYPES))
    n, c, f = draw(st.integers(0, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    c_w = c if draw(st.integers(0, 5)) else draw(st.integers(1, 4))
    x_shape = (n, c, h, w) if draw(st.integers(0, 6)) else (c, h, w)
    stride = draw(st.one_of(st.integers(1, 3), st.sampled_from([0, -1, 1.5, True, "2", None])))
    padding = draw(st.one_of(st.integers(0, 2), st.sampled_from([-1, 0.5, False, "1", None])))
    return (arrays(draw, x_shape, dtype), arrays(draw, (f, c_w, kh, kw), dtype),
            stride, padding)


@pytest.mark.parametrize("backend", BACKENDS)
@FUZZ
@given(case=conv_case())
def test_conv2d_dispatch_answers_or_names_the_problem(backend, case):
    x, w, stride, padding = case
    good_param = (isinstance(stride, int) and not isinstance(stride, bool) and stride >= 1
                  and isinstance(padding, int) and not isinstance(padding, bool) and padding >= 0)
    good_dtype = x.dtype == w.dtype and x.dtype in TOLERANCE
    with tinytorch.use_backend(backend):
        if not good_param:
            with pytest.raises(ValueError) as info:
                tinytorch.conv2d(x, w, stride, padding)
            assert_clear(info, "stride", "padding")
            return
        if not good_dtype:
            with pytest.raises(TypeError) as info:
                tinytorch.conv2d(x, w, stride, padding)
            assert_clear(info, "conv2d")
            return
        fits = (x.ndim == 4 and x.shape[1] == w.shape[1]
                and w.shape[2] <= x.shape[2] + 2 * padding and w.shape[3] <= x.shape[3] + 2 * padding)
        if not fits:
            with pytest.raises(ValueError) as info:
                tinytorch.conv2d(x, w, stride, padding)
            assert_clear(info, "conv2d")
            return
        out = tinytorch.conv2d(x, w, stride, padding)
    ref = reference_conv2d(x, w, stride, padding)
    assert out.shape == ref.shape and out.dtype == x.dtype
    assert relative_error(out, ref) <= TOLERANCE[x.dtype]


# ------------------------------------------------------------------ backend hands back garbage

@FUZZ
@given(result=st.sampled_from(["input", "view", "wrong-shape", "int", "list", "none", "nan"]))
def test_a_backend_returning_garbage_is_named(result):
    class Careless(tinytorch.ComputeBackend):
        def matmul(self, a, b):
            return {"input": a, "view": a[:, :b.shape[1]], "wrong-shape": np.zeros(3, a.dtype),
                    "int": np.zeros((a.shape[0], b.shape[1]), np.int64),
                    "list": [[0.0]], "none": None,
                    "nan": np.full((a.shape[0], b.shape[1]), np.nan, a.dtype)}[result]

        def conv2d(self, x, w, stride=1, padding=0):
            raise NotImplementedError

    a = np.ones((3, 3), np.float32)
    backend = Careless()
    if result == "nan":   # the contract checks form, not values; the arena checks values
        assert np.isnan(backend.matmul(a, a)).all()
        return
    with pytest.raises(tinytorch.BackendError) as info:
        backend.matmul(a, a)
    assert_clear(info, "Careless")


# ------------------------------------------------------------------ Tensor ops

shapes = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)


@FUZZ
@given(shape_a=shapes, shape_b=shapes, op=st.sampled_from(["+", "-", "*", "/", "@"]),
       seed=st.integers(0, 1000))
@example(shape_a=(3,), shape_b=(3,), op="@", seed=0)     # vector @ vector is a scalar
def test_tensor_ops_match_numpy_or_name_the_shapes(shape_a, shape_b, op, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape_a).astype(np.float32) + 2.0
    b = rng.standard_normal(shape_b).astype(np.float32) + 2.0
    ta, tb = tinytorch.Tensor(a), tinytorch.Tensor(b)
    compute = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide,
               "@": np.matmul}[op]
    tensor_op = {"+": ta.__add__, "-": ta.__sub__, "*": ta.__mul__, "/": ta.__truediv__,
                 "@": ta.__matmul__}[op]
    try:
        expected = compute(a.astype(np.float64), b.astype(np.float64))
    except ValueError:
        with pytest.raises(ValueError) as info:
            tensor_op(tb)
        message = str(info.value).replace(" ", "")
        assert any(str(s).replace(" ", "") in message for s in (shape_a, shape_b)), message
        return
    out = tensor_op(tb)
    assert out.shape == expected.shape
    assert relative_error(out.data, expected) <= 1e-5


@FUZZ
@given(shape=shapes, new=st.lists(st.integers(-2, 5), min_size=0, max_size=3).map(tuple))
def test_tensor_reshape_matches_numpy_or_names_the_shapes(shape, new):
    data = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    try:
        expected = data.reshape(new)
    except ValueError:
        with pytest.raises(ValueError) as info:
            tinytorch.Tensor(data).reshape(*new)
        assert "reshape" in str(info.value)
        return
    assert np.array_equal(tinytorch.Tensor(data).reshape(*new).data, expected)


@FUZZ
@given(value=st.sampled_from(["text", None, {"a": 1}, object(), ["x", "y"], b"bytes"]))
def test_tensor_refuses_non_numeric_data(value):
    with pytest.raises(TypeError) as info:
        tinytorch.Tensor(value)
    assert "numeric" in str(info.value)


# ------------------------------------------------------------------ layer constructors

odd_sizes = st.one_of(st.integers(-3, 0), st.floats(0.5, 3.5), st.sampled_from([None, "4", True]))
sizes = st.one_of(st.integers(1, 6), odd_sizes)


def _is_size(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@st.composite
def layer_case(draw):
    from tinytorch import nn
    kind = draw(st.sampled_from(["Linear", "Conv2d", "BatchNorm2d", "LayerNorm", "Embedding",
                                 "MultiHeadAttention"]))
    args = {"Linear": 2, "Conv2d": 3, "BatchNorm2d": 1, "LayerNorm": 1, "Embedding": 2,
            "MultiHeadAttention": 2}[kind]
    values = [draw(sizes) for _ in range(args)]
    return getattr(nn, kind), values


@FUZZ
@given(case=layer_case())
def test_layer_constructors_build_or_name_the_argument(case):
    cls, values = case
    if all(_is_size(v) for v in values) and not (
            cls.__name__ == "MultiHeadAttention" and values[0] % values[1]):
        layer = cls(*values)
        assert all(np.all(np.isfinite(p.data)) for p in layer.parameters())
        return
    with pytest.raises((TypeError, ValueError)) as info:
        cls(*values)
    assert_clear(info, cls.__name__)


# ------------------------------------------------------------------ load_cifar10 on corrupt files

def _batch_bytes(kind, draw_bytes):
    good = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    return {
        "random": draw_bytes,
        "truncated": pickle.dumps(good)[:max(1, len(draw_bytes) % 200)],
        "empty": b"",
        "not-a-dict": pickle.dumps([1, 2, 3]),
        "wrong-shape": pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}),
        "label-mismatch": pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}),
        "missing-key": pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}),
    }[kind]


@FUZZ
@given(kind=st.sampled_from(["random", "truncated", "empty", "not-a-dict", "wrong-shape",
                             "label-mismatch", "missing-key", "missing-file"]),
       noise=st.binary(min_size=0, max_size=300), victim=st.integers(0, 5))
def test_load_cifar10_names_the_corrupt_file(tmp_path_factory, kind, noise, victim):
    from tinytorch.data import cifar10
    folder = tmp_path_factory.mktemp("cifar") / cifar10.FOLDER
    folder.mkdir()
    good = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]})
    names = cifar10.TRAIN_FILES + cifar10.TEST_FILES
    for i, name in enumerate(names):
        if i == victim and kind == "missing-file":
            continue
        (folder / name).write_bytes(_batch_bytes(kind, noise) if i == victim else good)
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        tinytorch.load_cifar10(root=folder.parent)
    assert names[victim] in str(info.value)


# ------------------------------------------------------------------ events.toml

def toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"


scalars = st.one_of(st.integers(-3, 70), st.floats(-1, 100, allow_nan=False), st.booleans(),
                    st.sampled_from(["matmul", "conv2d", "memory", "float32", "float64", "", "x"]))
shape_tables = st.dictionaries(st.sampled_from(["m", "k", "n", "batch", "channels", "height",
                                                "width", "filters", "kernel", "stride",
                                                "padding", "bogus"]), scalars, max_size=8)
event_tables = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["a", "b"]), scalars),
     "kind": st.sampled_from(["matmul", "conv2d", "memory", "batched_matmul", "nope", 3])},
    optional={"shapes": st.lists(st.one_of(shape_tables, scalars), max_size=2),
              "dtypes": st.lists(scalars, max_size=2), "repeats": scalars,
              "workload": scalars, "time_budget_s": scalars, "extra": scalars,
              "skip_backends": st.lists(scalars, max_size=2)})
rule_tables = st.dictionaries(st.sampled_from(["allow_blas", "wall_time_s", "memory_mb",
                                               "threads", "repeats", "bogus"]), scalars,
                              max_size=4)


@FUZZ
@given(rules=rule_tables, events=st.lists(event_tables, max_size=3),
       garbage=st.sampled_from(["", "[rules\n", "x = = 1\n", "[[events]]\n", "\x00"]))
def test_events_toml_loads_or_names_file_and_key(tmp_path_factory, rules, events, garbage):
    from tinytorch.arena.events import EventsFileError, load_events
    lines = ["[rules]"] + [f"{k} = {toml_value(v)}" for k, v in rules.items()]
    for event in events:
        lines += ["", "[[events]]"] + [f"{k} = {toml_value(v)}" for k, v in event.items()]
    path = tmp_path_factory.mktemp("events") / "events.toml"
    path.write_text("\n".join(lines) + "\n" + garbage)
    try:
        loaded_rules, loaded = load_events(path)
    except EventsFileError as exc:
        assert "events.toml" in str(exc)
        return
    assert loaded and all(e.kind in ("matmul", "conv2d", "memory", "batched_matmul",
                                     "conv2d_grad_input", "conv2d_grad_weight") for e in loaded)
    assert all(e.shapes and e.dtypes for e in loaded)
    assert isinstance(loaded_rules.allow_blas, bool)


# ------------------------------------------------------------------ results JSON

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=10)


def _case(event, label, status="ok", ms=1.0):
    case = {"event": event, "kind": "matmul", "workload": "matmul", "label": label,
            "dtype": "float32", "params": {"m": 8}, "flops": 1024.0, "status": status}
    if status == "ok":
        timing = {"median": ms, "min": ms, "max": ms, "spread": 0.0, "samples": [ms],
                  "calls_per_batch": 10}
        case.update(time_ms=timing, reference_time_ms=dict(timing), gflops=1e-3 / ms,
                    error=1e-7)
    else:
        case["reason"] = "wrong answer"
    return case


def _run_document(run_id):
    """A small run file as `tinytorch compete` writes it: three references and two submissions."""
    rows = {name: {"name": name, "spec": name, "reference": name not in ("alice", "bob"),
                   "load_error": None, "complete": True, "finished": "2026-11-27T00:00:00+00:00",
                   "cases": [_case("mm", "8x8x8", ms=ms), _case("mm", "16x16x16", status)]}
            for name, ms, status in (("optimized", 1.0, "ok"), ("numpy", 0.5, "ok"),
                                     ("naive", 50.0, "ok"), ("alice", 2.0, "ok"),
                                     ("bob", 1.5, "wrong"))}
    return {"schema_version": 1, "run_id": run_id, "shard": "1/2", "field": ["alice", "bob"],
            "shard_backends": ["alice", "bob"], "quick": False, "complete": True,
            "machine": {"cpu": "Example CPU", "cores": 2, "date": "2026-11-27T00:00:00+00:00",
                        "blas": [{"internal_api": "openblas", "version": "0.3.27",
                                  "architecture": "Haswell"}]},
            "rules": {"allow_blas": False}, "events": [{"name": "mm", "kind": "matmul",
                                                         "workload": None}],
            "backends": rows}


def _places(value, schema=()):
    """(schema path, container, key) of every value inside a JSON document, nested ones too.

    The schema path names the place with list indices and backend names left out,
    so that `machine.date` is as likely to be damaged as one of the many case fields.
    """
    items = value.items() if isinstance(value, dict) else enumerate(value) \
        if isinstance(value, list) else ()
    for key, inner in items:
        step = "*" if isinstance(key, int) or schema[-1:] == ("backends",) else key
        yield (*schema, step), value, key
        yield from _places(inner, (*schema, step))


#: values of every JSON type, including the edge values of each.
WRONG_TYPES = [None, False, 0, -1.5, 1e300, 10**400, "", "1/0", [], ["x"], [{}], {}, {"median": 0}]


@st.composite
def damaged_run(draw, base=_run_document):
    """A valid run document (`base(run_id)`) with one to three values replaced by random
    JSON or deleted."""
    doc = base("damaged")
    for _ in range(draw(st.integers(1, 3))):
        places = {}
        for schema, container, key in _places(doc):
            places.setdefault(schema, []).append((container, key))
        container, key = draw(st.sampled_from(places[draw(st.sampled_from(sorted(places)))]))
        if isinstance(container, dict) and draw(st.booleans()):
            del container[key]
        else:
            container[key] = draw(st.one_of(st.sampled_from(WRONG_TYPES), json_values))
    return doc


def _consume(paths_and_docs):
    """What `tinytorch leaderboard --csv` does with loaded files: merge, score, rank, print."""
    from tinytorch.arena import merging, scoring
    from tinytorch.arena.leaderboard_cmd import write_csv
    for _, doc in paths_and_docs:
        scoring.score_run(doc)
    board = merging.merge(paths_and_docs)
    write_csv(board, io.StringIO())
    return board


def test_the_undamaged_run_document_is_accepted_and_scored(tmp_path):
    from tinytorch.arena import results
    path = tmp_path / "run.json"
    path.write_text(json.dumps(_run_document("intact")))
    board = _consume([(str(path), results.load(path))])
    assert {r["name"]: r["ranked"] for r in board["rows"]} == {
        "optimized": False, "numpy": False, "naive": False, "alice": True, "bob": False}


@settings(FUZZ, max_examples=300)     # damaged_run has ~50 kinds of place to damage
@given(doc=st.one_of(json_values, damaged_run(), st.fixed_dictionaries(
    {"schema_version": st.one_of(st.just(1), json_values)},
    optional={"run_id": json_values, "machine": json_values, "events": json_values,
              "backends": json_values})),
    mangle=st.sampled_from(["none", "none", "truncate", "bytes"]))
@example(doc={"schema_version": 1, "run_id": "x", "machine": {}, "events": [], "backends": [1]},
         mangle="none")
@example(doc={"schema_version": 1, "run_id": "x", "machine": "m", "events": [], "backends": {}},
         mangle="none")
def test_results_json_loads_and_scores_or_names_the_file(tmp_path_factory, doc, mangle):
    """load(), then merging and scoring (alone and beside an intact file): a ResultsError or a board."""
    from tinytorch.arena import results
    folder = tmp_path_factory.mktemp("results")
    path, intact = folder / "run.json", folder / "intact.json"
    text = json.dumps(doc)
    data = {"none": text.encode(), "truncate": text.encode()[:len(text) // 2],
            "bytes": b"\xff\xfe" + text.encode()}[mangle]
    path.write_bytes(data)
    intact.write_text(json.dumps(_run_document("intact")))
    try:
        loaded = results.load(path)
    except results.ResultsError as exc:
        assert str(path) in str(exc)
        return
    assert isinstance(loaded, dict) and loaded["schema_version"] == results.SCHEMA_VERSION
    _consume([(str(path), loaded)])
    try:
        _consume([(str(intact), results.load(intact)), (str(path), loaded)])
    except results.ResultsError as exc:    # e.g. other events than the intact file: say which
        assert path.name in str(exc)


def test_leaderboard_names_the_file_and_key_of_a_damaged_run(tmp_path, capsys):
    from tinytorch.cli import main
    for doc, key in (({"schema_version": 1, "run_id": "x", "machine": {}, "events": [],
                       "backends": [1]}, "backends"),
                     ({"schema_version": 1, "run_id": "x", "machine": "m", "events": [],
                       "backends": {}}, "machine")):
        path = tmp_path / "run.json"
        path.write_text(json.dumps(doc))
        for csv in ([], ["--csv"]):
            assert main(["leaderboard", str(path), "--board-dir", str(tmp_path / "board"),
                         *csv]) == 2
            message = capsys.readouterr().err
            assert str(path) in message and f"{key} must be an object" in message, message
