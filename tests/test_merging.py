"""Merging shard files into one board: one row per backend, missing shards, odd machines, refusals."""
import pytest

from tinytorch.arena import merging, results
from tinytorch.arena.sharding import shard_index

REFERENCES = ("optimized", "numpy", "naive")
EVENTS = [{"name": "mm", "kind": "matmul", "shapes": [{"m": 8, "k": 8, "n": 8}],
           "dtypes": ["float32"]}]
MACHINE = {"cpu": "Example CPU 9000", "cores": 2, "python": "3.11",
           "blas": [{"internal_api": "openblas", "version": "0.3.27", "architecture": "Zen"}]}
# One candidate per shard of three (the split depends only on the name).
FIELD = {"grace": 1, "erin": 2, "alice": 3, "bob": 3}


def _case(ms, ref_ms=1.0):
    return {"event": "mm", "kind": "matmul", "label": "8x8x8", "dtype": "float32",
            "status": "ok", "time_ms": {"median": ms}, "reference_time_ms": {"median": ref_ms},
            "gflops": 0.001 / ms}


def _row(name, ms, finished):
    return {"name": name, "reference": name in REFERENCES, "complete": True,
            "finished": finished, "cases": [_case(ms)]}


def _shard_doc(run_id, k, n, names, date, machine=MACHINE, complete=True, **extra):
    backends = {r: _row(r, {"optimized": 1.0, "numpy": 0.5, "naive": 500.0}[r], date)
                for r in REFERENCES}
    backends.update({b: _row(b, 2.0, date) for b in names})
    return {"schema_version": results.SCHEMA_VERSION, "run_id": run_id, "shard": f"{k}/{n}",
            "machine": {**machine, "date": date}, "quick": True, "rules": {}, "events": EVENTS,
            "field": sorted(FIELD), "shard_backends": [*REFERENCES, *names],
            "backends": backends, "complete": complete, **extra}


def _write(tmp_path, docs):
    paths = []
    for doc in docs:
        path = tmp_path / f"{doc['run_id']}.shard-{doc['shard'].replace('/', '-of-')}.json"
        results.write_atomic(path, doc)
        paths.append(path)
    return paths


def _shards(run_id="slurm-7", date="2026-11-26T10:00:00+00:00", skip=()):
    return [_shard_doc(run_id, k, 3, [b for b, s in FIELD.items() if s == k], date)
            for k in (1, 2, 3) if k not in skip]


def test_the_field_used_here_spreads_over_three_shards():
    assert {name: shard_index(name, 3) for name in FIELD} == FIELD


def test_three_shards_give_one_row_per_backend_and_no_missing_shard(tmp_path):
    board = merging.merge(merging.load_all(_write(tmp_path, _shards())))
    names = [row["name"] for row in board["rows"]]
    assert sorted(names) == sorted([*REFERENCES, *FIELD])
    assert board["missing_shards"] == []
    assert all(row["score"] == pytest.approx(0.5) for row in board["rows"] if row["name"] in FIELD)
    assert all(row["ranked"] for row in board["rows"] if row["name"] in FIELD)
    assert not any(row["ranked"] for row in board["rows"] if row["name"] in REFERENCES)
    assert any("every shard" in note for note in board["notes"])
    assert not any(row.get("machine_note") for row in board["rows"])


def test_a_dead_shard_is_listed_missing_and_the_others_rows_stand(tmp_path):
    board = merging.merge(merging.load_all(_write(tmp_path, _shards(skip=(2,)))))
    names = sorted(row["name"] for row in board["rows"])
    assert names == sorted([*REFERENCES, "grace", "alice", "bob"])
    assert board["missing_shards"] == [
        {"run_id": "slurm-7", "shard": "2/3", "status": "missing", "backends": ["erin"]}]
    assert any("shard 2/3 of run slurm-7 is missing: erin not measured" in n
               for n in board["notes"])


def test_an_unfinished_shard_is_listed_with_what_it_did_not_measure(tmp_path):
    docs = _shards()
    del docs[2]["backends"]["bob"]
    docs[2]["complete"] = False
    board = merging.merge(merging.load_all(_write(tmp_path, docs)))
    assert board["missing_shards"] == [{"run_id": "slurm-7", "shard": "3/3",
                                        "status": "unfinished",
                                        "file": "slurm-7.shard-3-of-3.json", "backends": ["bob"]}]


def test_a_backend_in_two_runs_keeps_the_newest_row_and_the_board_says_so(tmp_path):
    old = _shards("slurm-7", "2026-11-20T10:00:00+00:00")
    new = _shard_doc("slurm-9", 3, 3, ["alice"], "2026-11-26T10:00:00+00:00")
    new["backends"]["alice"]["cases"] = [_case(0.5)]          # alice got faster
    board = merging.merge(merging.load_all(_write(tmp_path, [*old, new])))
    alices = [row for row in board["rows"] if row["name"] == "alice"]
    assert len(alices) == 1
    assert alices[0]["run_id"] == "slurm-9" and alices[0]["score"] == pytest.approx(2.0)
    assert alices[0]["replaced"] == ["slurm-7.shard-3-of-3.json"]
    note = next(n for n in board["notes"] if n.startswith("alice:"))
    assert "slurm-9.shard-3-of-3.json" in note and "slurm-7.shard-3-of-3.json" in note


def test_order_of_files_does_not_decide_which_row_wins(tmp_path):
    old = _shard_doc("slurm-7", 3, 3, ["alice"], "2026-11-20T10:00:00+00:00")
    new = _shard_doc("slurm-9", 3, 3, ["alice"], "2026-11-26T10:00:00+00:00")
    for docs in ([old, new], [new, old]):
        files = merging.load_all(_write(tmp_path, docs))
        alice = next(r for r in merging.merge(files)["rows"] if r["name"] == "alice")
        assert alice["run_id"] == "slurm-9"


def test_rows_from_a_machine_unlike_the_majority_are_flagged(tmp_path):
    docs = _shards()
    docs[1]["machine"] = {**docs[1]["machine"], "cpu": "Other CPU 1", "cores": 64}
    board = merging.merge(merging.load_all(_write(tmp_path, docs)))
    erin = next(r for r in board["rows"] if r["name"] == "erin")
    assert "Other CPU 1, 64 cores" in erin["machine_note"]
    assert "Example CPU 9000, 2 cores" in erin["machine_note"]
    assert not any(r.get("machine_note") for r in board["rows"] if r["name"] in ("grace", "bob"))
    note = next(n for n in board["notes"] if "different machine" in n)
    assert note.startswith("erin: ") and "slurm-7.shard-2-of-3.json" in note


def test_files_split_evenly_between_machines_flag_every_row(tmp_path):
    docs = _shards()
    other = {**MACHINE, "cpu": "Other CPU 1", "cores": 64}
    docs.append(_shard_doc("slurm-8", 1, 1, ["carol"], "2026-11-26T09:00:00+00:00",
                           machine=other))
    docs[1]["machine"] = {**other, "date": docs[1]["machine"]["date"]}    # two files each
    for order in (docs, docs[::-1]):          # which file comes first must not pick a side
        board = merging.merge(merging.load_all(_write(tmp_path, order)))
        assert all("no majority machine" in row["machine_note"] for row in board["rows"])
        assert board["machine_majority"] is None
        note = next(n for n in board["notes"] if n.startswith("no majority machine"))
        assert "Other CPU 1, 64 cores" in note and "Example CPU 9000, 2 cores" in note
        assert not any("than most files" in n for n in board["notes"])


def test_a_different_blas_counts_as_a_different_machine(tmp_path):
    docs = _shards()
    docs[0]["machine"] = {**docs[0]["machine"],
                          "blas": [{"internal_api": "mkl", "version": "2024.1"}]}
    board = merging.merge(merging.load_all(_write(tmp_path, docs)))
    grace = next(r for r in board["rows"] if r["name"] == "grace")
    assert "mkl 2024.1" in grace["machine_note"]


def test_different_schema_versions_are_refused_naming_the_files(tmp_path):
    docs = _shards()
    docs[2]["schema_version"] = results.SCHEMA_VERSION + 1
    paths = _write(tmp_path, docs)
    with pytest.raises(results.ResultsError) as err:
        merging.load_all(paths)
    message = str(err.value)
    assert "schema version" in message
    assert "slurm-7.shard-3-of-3.json" in message and "slurm-7.shard-1-of-3.json" in message


def test_different_event_sets_are_refused_naming_the_files(tmp_path):
    docs = _shards()
    docs[1]["events"] = [{**EVENTS[0], "name": "mm-big"}]
    with pytest.raises(results.ResultsError) as err:
        merging.merge(merging.load_all(_write(tmp_path, docs)))
    message = str(err.value)
    assert "different event sets" in message
    assert "slurm-7.shard-2-of-3.json: events mm-big" in message
    assert "slurm-7.shard-1-of-3.json" in message


def test_quick_and_full_runs_are_not_merged(tmp_path):
    docs = _shards()
    docs[0]["quick"] = False
    with pytest.raises(results.ResultsError, match="--quick"):
        merging.merge(merging.load_all(_write(tmp_path, docs)))


def test_a_missing_or_broken_file_is_named(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(results.ResultsError, match="broken.json"):
        merging.load_all([broken])
    with pytest.raises(results.ResultsError, match="nowhere.json"):
        merging.load_all([tmp_path / "nowhere.json"])
