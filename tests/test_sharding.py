"""`--shard K/N`: clear errors for bad specs, a stable split, references in every shard."""
import pytest

import argparse

from tinytorch.arena.sharding import (Shard, candidates, file_stem, parse_shard,
                                     shard_argument, shard_index)

FIELD = [f"student{i:03d}" for i in range(300)]


@pytest.mark.parametrize("spec, words", [
    ("3/2", ["3/2", "between 1 and 2"]),
    ("0/0", ["0/0", "at least 1"]),
    ("x/4", ["'x/4'", "K/N"]),
    ("0/3", ["0/3", "count from 1"]),
    ("2", ["'2'", "K/N"]),
    ("-1/3", ["'-1/3'", "K/N"]),
])
def test_bad_shard_specs_are_clear_errors(spec, words):
    with pytest.raises(ValueError) as err:
        parse_shard(spec)
    for word in words:
        assert word in str(err.value)


def test_good_specs_parse_and_print_back():
    assert parse_shard("2/5") == Shard(2, 5)
    assert parse_shard(" 1 / 1 ") == Shard(1, 1)
    assert str(parse_shard("3/3")) == "3/3"


def test_every_candidate_runs_in_exactly_one_shard():
    count = 7
    seen = []
    for k in range(1, count + 1):
        seen += candidates(FIELD, Shard(k, count))
    assert sorted(seen) == sorted(FIELD)


def test_argparse_shows_the_reason_not_a_generic_message(capsys):
    parser = argparse.ArgumentParser(prog="tinytorch compete")
    parser.add_argument("--shard", type=shard_argument)
    with pytest.raises(SystemExit):
        parser.parse_args(["--shard", "3/2"])
    assert "argument --shard: '3/2': shards count from 1, so K must be between 1 and 2" \
        in capsys.readouterr().err
    assert parser.parse_args(["--shard", "2/3"]).shard == Shard(2, 3)


def test_shards_of_one_run_write_different_files():
    assert file_stem("slurm-42", Shard(2, 3)) == "slurm-42.shard-2-of-3"
    assert file_stem("slurm-42", None) == "slurm-42"


def test_adding_or_removing_a_backend_moves_nobody_else():
    before = {n: shard_index(n, 20) for n in FIELD}
    grown = FIELD + ["latecomer"]
    assert {n: shard_index(n, 20) for n in grown if n != "latecomer"} == before
    assert {n: shard_index(n, 20) for n in FIELD[1:]} == {n: before[n] for n in FIELD[1:]}


def test_one_more_shard_moves_about_one_in_n_plus_one():
    moved = sum(shard_index(n, 20) != shard_index(n, 21) for n in FIELD)
    assert moved < 2 * len(FIELD) / 21          # a modulo hash would move ~95%
    assert all(shard_index(n, 21) == 21 for n in FIELD if shard_index(n, 20) != shard_index(n, 21))


def test_the_split_is_reasonably_even():
    sizes = [sum(shard_index(n, 20) == k for n in FIELD) for k in range(1, 21)]
    assert min(sizes) >= 5 and max(sizes) <= 30      # 15 expected per shard


def test_no_shard_means_the_whole_field():
    assert candidates(FIELD, None) == sorted(FIELD)


# ---------------------------------------------------------------- sharded runs end to end

TINY_EVENTS = """
[rules]
quick_repeats = 1
min_batch_ms = 5.0

[[events]]
name = "matmul"
kind = "matmul"
dtypes = ["float32"]
shapes = [{ m = 16, k = 16, n = 16 }]
"""


def _compete(tmp_path, *args):
    import sys
    from conftest import run
    events = tmp_path / "events.toml"
    events.write_text(TINY_EVENTS)
    return run([sys.executable, "-m", "tinytorch", "compete", "--quick", "--config", events,
                "--results-dir", tmp_path / "results", "--board-dir", tmp_path / "board", *args],
               cwd=tmp_path)


def test_an_empty_shard_still_writes_its_reference_rows(tmp_path):
    from tinytorch.arena import results
    assert shard_index("alice", 3) == 3
    done = _compete(tmp_path, "--shard", "2/3", "--run-id", "r1", "--backends", "alice")
    doc = results.load(tmp_path / "results" / "r1.shard-2-of-3.json")
    assert doc["shard"] == "2/3" and doc["run_id"] == "r1" and doc["complete"]
    assert sorted(doc["backends"]) == ["naive", "numpy", "optimized"]
    assert all(row["reference"] and row["complete"] for row in doc["backends"].values())
    assert all(row["seconds"]["check"] > 0 for row in doc["backends"].values())
    assert doc["field"] == ["alice"] and doc["machine"]["cpu"]
    assert not (tmp_path / "board").exists()          # shards never write the board
    assert "tinytorch leaderboard" in done.stdout and "r1.shard-*.json" in done.stdout


def test_shard_runs_only_its_slice(tmp_path):
    from tinytorch.arena import results
    _compete(tmp_path, "--shard", "3/3", "--run-id", "r2", "--backends", "alice")
    doc = results.load(tmp_path / "results" / "r2.shard-3-of-3.json")
    assert sorted(doc["backends"]) == ["alice", "naive", "numpy", "optimized"]
    assert not doc["backends"]["alice"]["reference"]


def test_bad_shard_spec_on_the_command_line_is_one_clear_line(tmp_path):
    import subprocess
    import sys
    for spec, words in (("3/2", "between 1 and 2"), ("0/0", "at least 1"), ("x/4", "K/N")):
        done = subprocess.run([sys.executable, "-m", "tinytorch", "compete", "--shard", spec],
                              capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 2
        assert f"argument --shard: '{spec}'" in done.stderr and words in done.stderr
        assert "Traceback" not in done.stderr
