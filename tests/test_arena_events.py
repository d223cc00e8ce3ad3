"""leaderboard/events.toml: the shipped file loads, and every mistake names the file and the key."""
from pathlib import Path

import pytest

from tinytorch.arena.events import EventsFileError, load_events
from tinytorch.arena.problems import PROBLEMS

REPO = Path(__file__).resolve().parents[1]

GOOD = """
[rules]
wall_time_s = 30
threads = 1

[[events]]
name = "mm"
kind = "matmul"
dtypes = ["float32", "float64"]
naive_shapes = 1
shapes = [{ m = 8, k = 8, n = 8 }, { m = 64, k = 64, n = 64 }]
quick_shapes = [{ m = 4, k = 4, n = 4 }]
"""


def test_the_shipped_events_cover_every_kind_at_several_shapes_and_both_dtypes():
    rules, events = load_events(REPO / "leaderboard" / "events.toml")
    assert rules.allow_blas is False
    assert {e.kind for e in events} >= {"matmul", "conv2d", "conv2d_backward", "memory",
                                        "mlp_train_step", "resnet_inference", "transformer_forward"}
    for event in events:
        if event.kind in ("matmul", "conv2d", "conv2d_backward"):
            assert len(event.shapes) >= 2 and set(event.dtypes) == {"float32", "float64"}
        naive = event.shapes_for("naive", quick=False)
        assert len(naive) < len(event.shapes), f"naive must not run every size of {event.name}"
        # Each event says how long one request may take, and a timed event how often it repeats.
        assert event.time_budget_s and (event.kind == "memory" or event.repeats), event.name


def test_naive_runs_only_its_shapes_and_quick_its_quick_ones(tmp_path):
    path = tmp_path / "events.toml"
    path.write_text(GOOD)
    rules, (event,) = load_events(path)
    assert rules.wall_time_s == 30.0 and rules.tolerance("float32") == 1e-4
    assert [s["m"] for s in event.shapes_for("optimized", quick=False)] == [8, 64]
    assert [s["m"] for s in event.shapes_for("naive", quick=False)] == [8]
    assert [s["m"] for s in event.shapes_for("alice", quick=True)] == [4]


@pytest.mark.parametrize("edit, where", [
    (('kind = "matmul"', 'kind = "matmull"'), "events[0] (mm).kind"),
    (("m = 8, k = 8, n = 8", "m = 8, k = 8"), "events[0] (mm).shapes[0]: missing 'n'"),
    (("m = 8, k = 8, n = 8", "m = 8, k = 8, n = 0"), "events[0] (mm).shapes[0].n"),
    (("m = 8, k = 8, n = 8", "m = 8, k = 8, n = 8, q = 1"), "events[0] (mm).shapes[0].q"),
    (('dtypes = ["float32", "float64"]', 'dtypes = ["float16"]'), "events[0] (mm).dtypes"),
    (("threads = 1", "threads = 0"), "rules.threads"),
    (("threads = 1", "thread = 1"), "rules.thread"),
    (("wall_time_s = 30", 'wall_time_s = "long"'), "rules.wall_time_s"),
    (('name = "mm"', 'name = "mm"\nrepeat = 3'), "events[0].repeat"),
    (("naive_shapes = 1", "naive_shapes = -1"), "events[0] (mm).naive_shapes"),
    (("naive_shapes = 1", "naive_shapes = 1\nthreads = 0"), "events[0] (mm).threads"),
    (("naive_shapes = 1", "naive_shapes = 1\ntime_budget_s = 0"), "events[0] (mm).time_budget_s"),
])
def test_mistakes_name_the_file_and_the_key(tmp_path, edit, where):
    path = tmp_path / "events.toml"
    path.write_text(GOOD.replace(*edit))
    with pytest.raises(EventsFileError) as raised:
        load_events(path)
    assert str(raised.value).startswith(f"events.toml: {where}")
    assert str(path) in str(raised.value)


def test_a_memory_event_needs_a_known_workload(tmp_path):
    path = tmp_path / "events.toml"
    path.write_text(GOOD.replace('kind = "matmul"', 'kind = "memory"\nworkload = "fft"'))
    with pytest.raises(EventsFileError, match=r"events\[0\] \(mm\)\.workload"):
        load_events(path)


def test_missing_and_malformed_files_are_named(tmp_path):
    with pytest.raises(EventsFileError, match="does not exist"):
        load_events(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("[[events]\n")
    with pytest.raises(EventsFileError, match="not valid TOML"):
        load_events(tmp_path / "bad.toml")


def test_every_kind_has_a_problem_with_the_shape_keys_it_documents():
    for kind, problem in PROBLEMS.items():
        assert problem.kind == kind and problem.keys and problem.input_count >= 1


def test_model_references_from_parallel_checks_do_not_disturb_each_other():
    """`compete --jobs 2` checks in threads; no_grad and the backend are process-wide.

    A ResNet reference (under no_grad) running beside an MLP train-step reference
    (which needs a graph) must leave both correct, every time.
    """
    import threading

    import numpy as np
    mlp, resnet = PROBLEMS["mlp_train_step"], PROBLEMS["resnet_inference"]
    mlp_p = {"batch": 8, "features": 64, "hidden": 32, "layers": 2, "classes": 10}
    resnet_p = {"batch": 1, "size": 16, "width": 8, "stages": 2, "blocks": 1}
    rng = np.random.default_rng(0)
    mlp_inputs = mlp.make_inputs(mlp_p, np.float32, rng)
    resnet_inputs = resnet.make_inputs(resnet_p, np.float32, rng)
    expected = mlp.reference(mlp_p, mlp_inputs)
    errors = []

    def hammer(run):
        try:
            for _ in range(30):
                run()
        except Exception as exc:        # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    def mlp_run():
        got = mlp.reference(mlp_p, mlp_inputs)
        assert all(np.array_equal(a, b) for a, b in zip(got, expected))

    threads = [threading.Thread(target=hammer, args=(mlp_run,)),
               threading.Thread(target=hammer, args=(lambda: resnet.reference(resnet_p, resnet_inputs),))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
