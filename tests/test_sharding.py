"""`--shard K/N`: clear errors for bad specs, a stable split, references in every shard."""
import pytest

from tinytorch.arena.sharding import Shard, parse_shard, select, shard_index

REFERENCES = ("naive", "numpy", "optimized")
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


def test_every_candidate_runs_in_exactly_one_shard_and_references_in_all():
    count = 7
    seen = []
    for k in range(1, count + 1):
        refs, candidates = select(FIELD + list(REFERENCES), Shard(k, count), REFERENCES)
        assert refs == list(REFERENCES)
        assert not set(candidates) & set(REFERENCES)
        seen += candidates
    assert sorted(seen) == sorted(FIELD)


def test_an_empty_shard_still_runs_the_references():
    refs, candidates = select(list(REFERENCES), Shard(2, 3), REFERENCES)
    assert refs == list(REFERENCES) and candidates == []


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
    refs, candidates = select(FIELD + ["naive"], None, REFERENCES)
    assert candidates == sorted(FIELD)
