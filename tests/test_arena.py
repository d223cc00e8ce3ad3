"""The arena against deliberately broken backends: each fails with the right reason, the rest stands.

Backends come from tests/fixtures/arena_backends.py, loaded by the workers as
"module:Class" (the fixtures folder is put on PYTHONPATH, which workers inherit).
"""
import dataclasses
import os
import time
from pathlib import Path

import pytest

from fixtures.plugins import add_distribution, python, readable_by_all
from tinytorch.arena import results
from tinytorch.arena.compete import new_document, run_competition
from tinytorch.arena.competition import Arena, Contestant
from tinytorch.arena.events import load_events
from tinytorch.arena.merging import merge
from tinytorch.arena.scoring import PENALTY, score_run

FIXTURES = Path(__file__).parent / "fixtures"

EVENTS = """
[rules]
wall_time_s = 6.0
memory_mb = 400
threads = 1
min_batch_ms = 5.0
quick_repeats = 2

[[events]]
name = "matmul"
kind = "matmul"
dtypes = ["float32", "float64"]
naive_shapes = 1
shapes = [{ m = 12, k = 10, n = 14 }, { m = 48, k = 40, n = 56 }]
quick_shapes = [{ m = 12, k = 10, n = 14 }, { m = 48, k = 40, n = 56 }]

[[events]]
name = "conv2d"
kind = "conv2d"
dtypes = ["float32"]
shapes = [{ n = 1, c = 3, h = 6, w = 6, f = 2, k = 3, stride = 1, padding = 1 }]

[[events]]
name = "memory"
kind = "memory"
workload = "conv2d"
skip_backends = ["naive"]
shapes = [{ n = 2, c = 4, h = 8, w = 8, f = 4, k = 3, stride = 1, padding = 1 }]
"""

BROKEN = {   # fixture class -> (status of its matmul cases, words of the reason)
    "Raises": ("error", "raised ValueError: this kernel is not written yet"),
    "WrongValues": ("wrong", "wrong answer on fresh inputs"),
    "ReturnsNaN": ("nan", "NaN"),
    "Segfaults": ("crash", "SIGSEGV"),
    "Hangs": ("timeout", "timed out"),
    "AllocatesForever": ("memory", "memory limit"),
    "Memoises": ("wrong", "on timed inputs"),
}


def _events_file(folder):
    (folder / "events.toml").write_text(EVENTS)
    return folder / "events.toml"


@pytest.fixture(scope="module")
def run_doc(tmp_path_factory):
    """One quick competition over the references, a good candidate and every broken one."""
    mp = pytest.MonkeyPatch()
    mp.setenv("PYTHONPATH", str(FIXTURES))
    folder = tmp_path_factory.mktemp("arena")
    rules, events = load_events(_events_file(folder))
    contestants = [Contestant(name, name, True) for name in ("optimized", "numpy", "naive")]
    contestants += [Contestant(name, f"arena_backends:{name}", explicit=True)
                    for name in ["Good", *BROKEN]]
    doc = new_document(rules, events, quick=True)
    path = results.run_path(folder / "results", doc["run_id"])
    results.create(path, doc)
    arena = Arena(rules, events, quick=True)
    try:
        run_competition(arena, doc, path, contestants, jobs=4)
    finally:
        arena.close()
        mp.undo()
    return doc, path


def _cases(doc, name, event=None):
    return [c for c in doc["backends"][name]["cases"] if event is None or c["event"] == event]


def test_good_backends_are_complete_and_correct(run_doc):
    doc, _ = run_doc
    scores = score_run(doc)
    for name in ("optimized", "numpy", "Good"):
        for case in _cases(doc, name):
            assert case["status"] == "ok", (name, case)
            if case["kind"] == "memory":
                assert case["memory_mb"] >= 0
            else:
                assert case["error"] <= 1e-4
                assert case["time_ms"]["median"] > 0 and case["reference_time_ms"]["median"] > 0
                assert len(case["time_ms"]["samples"]) == 2
        assert scores[name]["score"] > 0 and scores[name]["unranked_reason"] is None
    assert scores["optimized"]["score"] == pytest.approx(1.0)
    assert scores["Good"]["ranked"] and not scores["optimized"]["ranked"]   # references never rank


def test_naive_runs_only_its_sizes_and_gives_speedups(run_doc):
    doc, _ = run_doc
    statuses = {(c["event"], c["label"], c["dtype"]): c["status"] for c in _cases(doc, "naive")}
    assert statuses[("matmul", "12x10x14", "float32")] == "ok"
    assert statuses[("matmul", "48x40x56", "float32")] == "skipped"
    assert statuses[("memory", "2x4x8x8 * 4x3x3 s1 p1", "float32")] == "skipped"
    good = {(c["event"], c["label"], c["dtype"]): c for c in score_run(doc)["Good"]["cases"]}
    assert good[("matmul", "12x10x14", "float32")]["speedup_vs_naive"] > 0   # a ratio, not a race
    assert good[("matmul", "48x40x56", "float32")]["speedup_vs_naive"] is None


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_each_broken_backend_fails_its_event_with_the_right_reason(run_doc, name):
    doc, _ = run_doc
    status, words = BROKEN[name]
    for case in _cases(doc, name, "matmul"):
        assert case["status"] == status, case
        assert words in case["reason"], case["reason"]
    for case in _cases(doc, name, "conv2d"):   # only matmul is broken: the rest stands
        assert case["status"] == "ok", case
    scored = score_run(doc)[name]
    if status in ("timeout", "memory"):
        assert scored["events"]["matmul"] == pytest.approx(PENALTY)
        assert scored["ranked"] and scored["score"] < scored["events"]["conv2d"]
    else:
        assert not scored["ranked"] and scored["score"] is None
        assert words in scored["unranked_reason"]


def test_the_run_file_round_trips(run_doc):
    doc, path = run_doc
    loaded = results.load(path)
    assert loaded["run_id"] == doc["run_id"] and loaded["schema_version"] == results.SCHEMA_VERSION
    assert set(loaded["backends"]) == set(doc["backends"])
    assert score_run(loaded)["Good"]["score"] == pytest.approx(score_run(doc)["Good"]["score"])
    assert loaded["machine"]["cpu"] and loaded["machine"]["python"]


def test_the_run_file_holds_each_backends_scores_of_this_run(run_doc):
    """Ratios, score and unranked reason are in the file; the board still scores raw times."""
    _, path = run_doc
    loaded = results.load(path)
    for name, scored in score_run(loaded).items():
        stored = loaded["backends"][name]["single_run_scores"]
        assert stored == {key: scored[key] for key in ("events", "score", "ranked", "unranked_reason")}
    good, raises = (loaded["backends"][n]["single_run_scores"] for n in ("Good", "Raises"))
    assert good["ranked"] and good["score"] > 0 and set(good["events"]) == {"matmul", "conv2d", "memory"}
    assert good["events"]["matmul"] > 0
    assert not raises["ranked"] and "this kernel is not written yet" in raises["unranked_reason"]
    assert loaded["backends"]["optimized"]["single_run_scores"]["score"] == pytest.approx(1.0)

    score, good["score"] = good["score"], 1e9      # a stale or edited copy is never read
    board = merge([(path, loaded)])
    assert [r["score"] for r in board["rows"] if r["name"] == "Good"] == [pytest.approx(score)]


def test_a_stale_build_is_named_with_the_command_that_rebuilds_it(tmp_path):
    """A .pyx edited after its extension was built: compete says so, naming `pip install -e`,
    from file times alone (the parent never imports a submission)."""
    project = tmp_path / "stale_project"
    package = project / "stale_kernels"
    package.mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'stale-kernels'\n")
    (package / "__init__.py").write_text("raise SystemExit('never imported by the parent')\n")
    built = package / "_kernels.cpython-311-x86_64-linux-gnu.so"
    built.write_bytes(b"")
    (package / "_kernels.pyx").write_text("# edited after the build\n")
    os.utime(built, (1, 1))
    site = add_distribution(tmp_path / "site", "stale-kernels", {"stale": "stale_kernels:Backend"})
    done = python("""
        from tinytorch.arena.compete import contestants
        (stale,) = [c for c in contestants(["stale"]) if c.name == "stale"]
        print(stale.provenance["stale"])
    """, site, project)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"pip install -e {project}"
    assert "warning: backend stale is a stale build" in done.stderr


HANGING = {   # module -> its source: a backend whose import hangs, one whose every call hangs
    "hangs_on_import": "import time\ntime.sleep(3600)\n",
    "hangs_always": ("import time\nfrom arena_backends import Good\n\n\n"
                     "class Backend(Good):\n"
                     "    def matmul(self, a, b):\n        time.sleep(3600)\n\n"
                     "    def conv2d(self, x, w, stride, padding):\n        time.sleep(3600)\n"),
}
HANG_EVENTS = """
[rules]
wall_time_s = 4.0

[[events]]
name = "matmul"
kind = "matmul"
dtypes = ["float32", "float64"]
shapes = [{ m = 4, k = 4, n = 4 }, { m = 8, k = 8, n = 8 }, { m = 12, k = 12, n = 12 }]

[[events]]
name = "conv2d"
kind = "conv2d"
dtypes = ["float32", "float64"]
shapes = [{ n = 1, c = 2, h = 5, w = 5, f = 2, k = 3, stride = 1, padding = 1 },
          { n = 1, c = 2, h = 6, w = 6, f = 2, k = 3, stride = 1, padding = 0 }]
"""


@pytest.mark.parametrize("module, workers, words", [
    ("hangs_on_import", 1, {"matmul": "could not load backend: timed out",
                            "conv2d": "could not load backend: timed out"}),
    ("hangs_always", 2, {"matmul": "timed out", "conv2d": "timed out"}),
])
def test_a_hanging_backend_is_waited_for_once_not_once_per_case(tmp_path, monkeypatch,
                                                                 module, workers, words):
    """One hang costs one wall time: a failed load fails every case, a timeout its event."""
    (tmp_path / f"{module}.py").write_text(HANGING[module])
    readable_by_all(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(FIXTURES)]))
    (tmp_path / "events.toml").write_text(HANG_EVENTS)
    rules, events = load_events(tmp_path / "events.toml")
    arena = Arena(rules, events)
    started, start = [], arena.start
    monkeypatch.setattr(arena, "start", lambda *a: started.append(a) or start(*a))
    began = time.monotonic()
    rows = arena.check(Contestant(module, f"{module}:Backend", explicit=True))
    elapsed = time.monotonic() - began
    assert len(rows) == 10 and len(started) == workers
    # Waiting once per case would take 10 x 4 s; once per worker leaves plenty of room.
    assert elapsed < 5 * rules.wall_time_s, elapsed
    for event in ("matmul", "conv2d"):
        first, *rest = [r for r in rows if r["event"] == event]
        assert first["status"] == "timeout" and words[event] in first["reason"], first
        for row in rest:
            assert row["status"] == "timeout", row
            assert row["reason"] == (first["reason"] if module == "hangs_on_import" else
                                     f"skipped: an earlier shape of this event timed out "
                                     f"({first['label']} {first['dtype']})")


OVERRIDE_EVENTS = """
[rules]
wall_time_s = 60.0
threads = 1
repeats = 4
quick_repeats = 3
min_batch_ms = 1.0

[[events]]
name = "rules' limits"
kind = "matmul"
shapes = [{ m = 4, k = 4, n = 4 }]

[[events]]
name = "own limits"
kind = "matmul"
repeats = 2
threads = 2
shapes = [{ m = 4, k = 4, n = 4 }]

[[events]]
name = "own budget"
kind = "conv2d"
time_budget_s = 2.0
shapes = [{ n = 1, c = 2, h = 5, w = 5, f = 2, k = 3, stride = 1, padding = 1 }]
"""
REPORTS_LIMITS = """import os
import time
from arena_backends import Good


class Backend(Good):
    def matmul(self, a, b):
        raise ValueError(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")

    def conv2d(self, x, w, stride, padding):
        time.sleep(3600)
"""


def test_an_events_own_threads_time_budget_and_repeats_override_the_rules(tmp_path, monkeypatch):
    (tmp_path / "reports_limits.py").write_text(REPORTS_LIMITS)
    readable_by_all(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(FIXTURES)]))
    (tmp_path / "events.toml").write_text(OVERRIDE_EVENTS)
    rules, events = load_events(tmp_path / "events.toml")
    arena = Arena(rules, events)
    rows = {r["event"]: r for r in arena.check(Contestant("limits", "reports_limits:Backend", explicit=True))}
    assert rows["rules' limits"]["reason"].startswith("raised ValueError: OMP_NUM_THREADS=1 ")
    assert rows["own limits"]["reason"].startswith("raised ValueError: OMP_NUM_THREADS=2 ")
    assert rows["own budget"]["status"] == "timeout"
    assert "no answer within 2 s" in rows["own budget"]["reason"]   # not the rules' 60 s

    reference = Contestant("optimized", "optimized", True)
    for quick, wanted in ((False, {"rules' limits": 4, "own limits": 2}),
                          (True, {"rules' limits": 3, "own limits": 2})):   # quick: at most 3
        arena = Arena(rules, events[:2], quick=quick)
        timed = arena.measure(reference, arena.check(reference))
        assert {r["event"]: len(r["time_ms"]["samples"]) for r in timed} == wanted


def test_a_time_faster_than_twice_the_best_blas_rate_is_impossible():
    def row(gflops, reference=False):
        case = {"event": "matmul", "kind": "matmul", "label": "512x512x512", "dtype": "float32",
                "status": "ok", "gflops": gflops, "time_ms": {"median": 100 / gflops},
                "reference_time_ms": {"median": 10.0}}
        return {"reference": reference, "cases": [case]}
    doc = {"backends": {"numpy": row(100.0, True), "optimized": row(10.0, True),
                        "honest": row(150.0), "too_fast": row(250.0)}}
    scores = score_run(doc)
    assert scores["honest"]["ranked"] and scores["honest"]["score"] == pytest.approx(15.0)
    assert not scores["too_fast"]["ranked"] and scores["too_fast"]["score"] is None
    assert "impossible time: 250.0 GFLOP/s" in scores["too_fast"]["unranked_reason"]


def test_candidate_and_reference_batches_are_timed_in_the_same_conditions(tmp_path,
                                                                          monkeypatch):
    """The parent verifies a candidate's batch (for a model, a whole float64 run), which
    evicts the caches: the side timed right after a verification alternates, so neither
    the candidate nor the reference is always the one timed cold."""
    rules, events = load_events(_events_file(tmp_path))
    rules = dataclasses.replace(rules, quick_repeats=4)
    arena = Arena(rules, [e for e in events if e.name == "matmul"], quick=True)
    log = []
    run, verdict = Arena._run, Arena._verdict

    def logged_run(self, worker, case, input_sets):
        log.append("reference" if worker is self._reference else "candidate")
        return run(self, worker, case, input_sets)

    def logged_verdict(self, *args, **kwargs):
        log.append("verify")
        return verdict(self, *args, **kwargs)

    monkeypatch.setattr(Arena, "_run", logged_run)
    monkeypatch.setattr(Arena, "_verdict", logged_verdict)
    contestant = Contestant("numpy", "numpy", True)
    try:
        checked = arena.check(contestant)
        log.clear()
        rows = arena.measure(contestant, checked[:1])
    finally:
        arena.close()
    assert rows[0]["status"] == "ok", rows[0]
    for side in ("candidate", "reference"):
        batches = [i for i, entry in enumerate(log) if entry == side]
        cold = [i for i in batches if i > 0 and log[i - 1] == "verify"]
        assert len(cold) <= 0.6 * len(batches), (side, log)
