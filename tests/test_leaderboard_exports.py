"""`tinytorch leaderboard --csv` and `--gradescope DIR`: what a gradebook and Gradescope receive.

Gradescope's results.json is checked against a JSON Schema written from
Gradescope's own specification (tests/schemas/), not from our code.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import jsonschema
import pytest

import board_runs as runs
from tinytorch.arena import merging
from tinytorch.arena.grades import write_csv
from tinytorch.cli import main

GRADESCOPE = json.loads((Path(__file__).parent / "schemas" / "gradescope_results.schema.json")
                        .read_text())


@pytest.fixture
def run_file(tmp_path):
    (path,) = runs.write(tmp_path / "results", [runs.run_document(runs.default_field())])
    return path


def _results(folder):
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(folder.rglob("results.json"))}


def test_gradescope_gets_one_results_json_per_student_in_its_format(run_file, tmp_path, capsys):
    folder = tmp_path / "gradescope"
    assert main(["leaderboard", str(run_file), "--gradescope", str(folder)]) == 0
    assert "3 results.json file(s) written" in capsys.readouterr().out
    graded = _results(folder)
    assert sorted(graded) == ["alice", "bob", "mallory"]           # students, not references
    for name, result in graded.items():
        jsonschema.validate(result, GRADESCOPE, cls=jsonschema.Draft202012Validator)
        assert [t["name"] for t in result["tests"]] == [e["name"] for e in runs.EVENTS], name

    alice = graded["alice"]
    assert alice["score"] == pytest.approx((1.5 * 1.04) ** 0.75 * 1.5 ** 0.25, rel=1e-3)
    assert alice["output"].startswith("Rank 1 of 2 ranked backends")
    matmul = alice["tests"][0]
    assert matmul["status"] == "passed" and matmul["max_score"] == 1.0
    assert matmul["score"] == pytest.approx(1.56)
    assert "64x64x64 float32: ok" in matmul["output"] and "GFLOP/s" in matmul["output"]

    mallory = graded["mallory"]
    assert mallory["score"] == 0.0
    assert mallory["output"].startswith("Unranked: matmul 64x64x64 float32: wrong answer")
    assert mallory["tests"][0]["status"] == "failed" and mallory["tests"][0]["score"] == 0.0
    assert "wrong answer on timed inputs" in mallory["tests"][0]["output"]
    assert "ms" not in mallory["tests"][1]["output"]          # unranked: no speed figures


def test_hostile_names_stay_inside_the_export_folder_and_out_of_formulas(tmp_path, capsys):
    evil = ["../../escaped", "=HYPERLINK(\"http://evil.example\")", runs.LOOKALIKE]
    (path,) = runs.write(tmp_path / "results", [runs.run_document(
        [runs.backend(name, 1.0) for name in evil] + [runs.backend("alice", 2.0)])])
    folder = tmp_path / "out" / "gradescope"
    assert main(["leaderboard", str(path), "--csv", "--gradescope", str(folder)]) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(captured.out)))           # stdout is only the CSV
    assert [r["name"] for r in rows][0] == "alice"
    assert all(r["name"][0] not in "=+-@\t\r" for r in rows), rows
    assert {r["name"] for r in rows} == {"alice", *(ascii(n) for n in evil)}
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("results.json"))
    assert len(written) == 4 and all(p.parts[:2] == ("out", "gradescope") for p in written)
    assert "'\\u043eptimized' -> " in captured.err           # where a renamed folder went
    for result in _results(folder).values():
        jsonschema.validate(result, GRADESCOPE, cls=jsonschema.Draft202012Validator)
        assert runs.LOOKALIKE not in json.dumps(result, ensure_ascii=False)


def test_the_csv_lists_unranked_students_without_a_score(run_file):
    out = io.StringIO()
    write_csv(merging.merge(merging.load_all([run_file])), out)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == ["name", "score", "rank"]
    assert [(name, rank) for name, _, rank in rows[1:]] == [("alice", "1"), ("bob", "2"),
                                                            ("mallory", "")]
    assert float(rows[1][1]) > float(rows[2][1]) > 0 and rows[3][1] == ""


def test_an_export_folder_that_cannot_be_written_is_named(run_file, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["leaderboard", str(run_file), "--gradescope", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert "tinytorch leaderboard: cannot write" in err and str(blocker) in err
