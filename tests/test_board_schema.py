"""The published JSON Schema of run files says what results.load() accepts: they cannot drift.

The schema is generated from the tree load() checks with; here damaged run
documents go through both, and they must agree, except where JSON Schema
cannot say what load() checks (named below). Documents load() accepts also
render into a board, never a traceback.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import board_runs as runs
from test_fuzz import _run_document, damaged_run, json_values
from tinytorch.arena import results
from tinytorch.arena.board import render
from tinytorch.arena.results_schema import SCHEMA_FILE, schema

REPO = Path(__file__).resolve().parents[1]
VALIDATOR = jsonschema.Draft202012Validator(schema())
#: what load() refuses and JSON Schema cannot express (its descriptions say so instead).
INEXPRESSIBLE = re.compile(r"'K/N' with 1 <= K <= N|a row's name must be its key")
FUZZ = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _board_run(run_id):
    """A run with every kind of case the board draws: kernels, a model, memory, a failure."""
    return runs.run_document(runs.default_field(), run_id=run_id, isolation=runs.SANDBOXED)


def _loads(tmp_path, doc):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(doc))
    try:
        return results.load(path), None
    except results.ResultsError as exc:
        return None, str(exc)


def test_the_schema_is_valid_and_the_shipped_run_file_meets_it():
    jsonschema.Draft202012Validator.check_schema(schema())
    for path in sorted((REPO / "leaderboard" / "results").glob("*.json")):
        VALIDATOR.validate(json.loads(path.read_text()))
        results.load(path)


@FUZZ
@given(doc=st.one_of(damaged_run(), damaged_run(base=_board_run), json_values))
@example(doc={**_run_document("x"), "isolation": {"sandboxed": "yes"}})
@example(doc={**_run_document("x"), "isolation": {"tool": "bubblewrap"}})
@example(doc={**_run_document("x"), "machine": {"cores": 2.5}})
def test_the_schema_accepts_exactly_what_load_accepts(tmp_path_factory, doc):
    loaded, refusal = _loads(tmp_path_factory.mktemp("run"), doc)
    errors = [e.message for e in VALIDATOR.iter_errors(doc)]
    if loaded is not None:
        assert not errors, errors
    else:
        assert errors or INEXPRESSIBLE.search(refusal), refusal


def test_a_new_key_load_checks_names_the_file_and_key(tmp_path):
    doc = _run_document("x")
    doc["isolation"] = {"sandboxed": "no", "tool": None}
    _, refusal = _loads(tmp_path, doc)
    assert "run.json: isolation.sandboxed must be true or false, not a string" in refusal
    doc = _run_document("x")
    doc["backends"]["alice"]["cases"][0]["time_ms"]["spread"] = "wide"
    _, refusal = _loads(tmp_path, doc)
    assert "backends['alice'].cases[0].time_ms.spread must be a finite number or null" in refusal
    doc = _run_document("x")
    doc["backends"]["alice"]["name"] = "optimized"
    _, refusal = _loads(tmp_path, doc)
    assert "backends['alice'].name is 'optimized'; a row's name must be its key" in refusal


@settings(FUZZ, max_examples=12, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                         HealthCheck.filter_too_much])
@given(doc=st.one_of(damaged_run(), damaged_run(base=_board_run)))
def test_a_run_file_load_accepts_renders_into_a_board(tmp_path_factory, doc):
    folder = tmp_path_factory.mktemp("board")
    loaded, _ = _loads(folder, doc)
    assume(loaded is not None)
    render([(str(folder / "run.json"), loaded)], folder / "board")
    assert json.loads((folder / "board" / SCHEMA_FILE).read_text()) == schema()
