"""The JSON Schema of run files, generated from the tree results.load() checks them with.

The board publishes it beside index.html (`results.schema.json`) so that anyone
reading a run file knows what each key holds; because it is built from
`results.DOCUMENT`, a key load() starts checking appears here too. What JSON
Schema cannot say (numbers are finite, a shard's K <= N, a row's name is its
key) is in the descriptions.
"""
from __future__ import annotations

from . import results

SCHEMA_FILE = "results.schema.json"


def _schema(kind: results.Kind) -> dict:
    if kind.fields is None:
        schema = dict(kind.schema)
    else:
        item = {"type": "object",
                "properties": {key: _schema(inner) for key, (_, inner) in kind.fields.items()},
                "required": [key for key, (required, _) in kind.fields.items() if required]}
        schema = {"list": {"type": "array", "items": item},
                  "map": {"type": "object", "additionalProperties": item}}.get(kind.each, item)
    if kind.nullable:
        schema = {"anyOf": [schema, {"type": "null"}]}
    return {**schema, "description": kind.wanted}


def schema() -> dict:
    """The JSON Schema (draft 2020-12) of a run file of this tinytorch's schema version."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": f"tinytorch run file, schema version {results.SCHEMA_VERSION}",
            **_schema(results.DOCUMENT),
            "description": "leaderboard/results/<run_id>.json as `tinytorch compete` writes it. "
                           "Numbers are finite; a shard 'K/N' has 1 <= K <= N; each backend "
                           "row's name is its key in `backends`. Keys not listed are allowed "
                           "and not read by the board."}
