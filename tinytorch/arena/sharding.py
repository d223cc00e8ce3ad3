"""Splitting a class-sized field over machines: `--shard K/N` and which backends it runs.

A backend's shard depends only on its own name and N (rendezvous hashing: the
shard whose hash of (shard, name) is largest wins), so adding or removing a
submission never moves anybody else, and going from N to N+1 shards moves
only about 1/(N+1) of the field. Reference backends are not candidates: every
shard measures them itself, so each row's ratios come from references timed on
the same machine in the same run — including a shard with no candidates.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import re


@dataclasses.dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`, counting from 1 (`--shard 1/3` .. `3/3`)."""
    index: int
    count: int

    def __post_init__(self):
        if self.count < 1:
            raise ValueError(f"'{self.index}/{self.count}': the number of shards N must be "
                             "at least 1")
        if not 1 <= self.index <= self.count:
            raise ValueError(f"'{self.index}/{self.count}': shards count from 1, so K must be "
                             f"between 1 and {self.count}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def runs(self, name: str) -> bool:
        """Whether this shard times candidate `name`."""
        return shard_index(name, self.count) == self.index


def parse_shard(text: str) -> Shard:
    """Parse `K/N` (1 <= K <= N); anything else is a ValueError saying what is wrong."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if match is None:
        raise ValueError(f"{text!r}: expected K/N with whole numbers, e.g. 2/5 "
                         "(shard 2 of 5, counting from 1)")
    return Shard(int(match.group(1)), int(match.group(2)))


def shard_argument(text: str) -> Shard:
    """`--shard K/N` for argparse, which shows this message instead of a generic one."""
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def file_stem(run_id: str, shard: Shard | None) -> str:
    """A run file's name without `.json`: shards of one run share the run id."""
    return run_id if shard is None else f"{run_id}.shard-{shard.index}-of-{shard.count}"


def _weight(shard: int, name: str) -> int:
    digest = hashlib.sha256(f"{shard}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def shard_index(name: str, count: int) -> int:
    """The shard (1..count) that times candidate `name`: stable, whoever else is registered."""
    return max(range(1, count + 1), key=lambda k: _weight(k, name))


def candidates(names, shard: Shard | None) -> list[str]:
    """The candidates (never references: they run in every shard) that `shard` times, sorted."""
    return sorted(n for n in set(names) if shard is None or shard.runs(n))
