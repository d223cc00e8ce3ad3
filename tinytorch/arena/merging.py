"""One board from many result files: shards of a class-sized run, or several runs.

Each row keeps the scores of its own file (ratios against references timed on
the same machine in the same run). What the merge adds is honesty about the
files: it refuses files of different schema versions or event sets (naming
them), keeps one row per backend (the newest, and says which rows it
replaced), flags rows measured on a machine unlike the majority's (CPU model,
core count, BLAS; every row when no machine has a majority), and lists the
shards of a run that are missing or unfinished, with the backends they were to
measure.
"""
from __future__ import annotations

import collections
import json
import os

from . import display, results
from .scoring import score_run
from .sharding import shard_index


#: more backends measured in several files than this get one note, not one each.
REPLACEMENT_NOTES = 5


def _label(path) -> str:
    return os.path.basename(os.fspath(path))


def _where(doc) -> str:
    """`run RUN_ID` or `run RUN_ID shard K/N`, as notes name a file's origin."""
    return f"run {doc['run_id']}" + (f" shard {doc['shard']}" if doc.get("shard") else "")


def _grouped(files, key) -> dict:
    groups = collections.defaultdict(list)
    for path, doc in files:
        groups[key(doc)].append(_label(path))
    return groups


def _refuse_mixed(files) -> None:
    """ResultsError naming the files unless they share schema version, events and --quick."""
    versions = _grouped(files, lambda d: d.get("schema_version"))
    if len(versions) > 1:
        parts = "; ".join(f"schema version {v}: {', '.join(names)}" for v, names in versions.items())
        raise results.ResultsError(f"cannot merge results files of different schema versions "
                                   f"({parts})")
    events = _grouped(files, lambda d: (json.dumps(d["events"], sort_keys=True), bool(d.get("quick"))))
    if len(events) > 1:
        parts = []
        for signature, names in events.items():
            doc_events, quick = json.loads(signature[0]), signature[1]
            what = ", ".join(e.get("name", "?") for e in doc_events) + (" (--quick)" if quick else "")
            parts.append(f"{', '.join(names)}: events {what}")
        raise results.ResultsError("cannot merge results files measured on different event sets "
                                   "(or with and without --quick); re-run them with one "
                                   "events.toml: " + "; ".join(parts))


def machine_key(machine: dict) -> tuple:
    """What makes two machines comparable: CPU model, core count, BLAS library and kernel."""
    blas = tuple(sorted((b.get("internal_api") or "", b.get("version") or "",
                         b.get("architecture") or "") for b in machine.get("blas") or []))
    return machine.get("cpu"), machine.get("cores"), blas


def describe_machine(key: tuple) -> str:
    cpu, cores, blas = key
    libs = ", ".join(" ".join(p for p in b if p) for b in blas) or "no BLAS found"
    return f"{cpu}, {cores} cores, {libs}"


def _newest(doc, row) -> str:
    return row.get("finished") or doc["machine"].get("date") or ""


def load_all(paths) -> list[tuple[str, dict]]:
    """(path, document) for every file, refusing mixed schema versions before anything else."""
    raw = []
    for path in paths:
        try:
            with open(path) as f:
                doc = json.load(f)
        except FileNotFoundError:
            raise results.ResultsError(f"results file {path} does not exist") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise results.ResultsError(f"results file {path} is not valid JSON: {exc}") from None
        raw.append((path, doc if isinstance(doc, dict) else {}))
    if not raw:
        raise results.ResultsError("no results files given")
    known = [(p, d) for p, d in raw if "schema_version" in d]
    if len({d["schema_version"] for _, d in known}) > 1:
        _refuse_mixed(known)
    return [(path, results.load(path)) for path, _ in raw]


def merge(files: list[tuple[str, dict]]) -> dict:
    """The board's input from (path, document) pairs: rows, notes, missing shards, flags."""
    _refuse_mixed(files)
    notes, missing = [], []
    machines = collections.Counter(machine_key(doc["machine"]) for _, doc in files)
    counts = machines.most_common()
    # A tie has no usual machine: which file came first must not pick one.
    majority = None if len(counts) > 1 and counts[0][1] == counts[1][1] else counts[0][0]

    kept: dict[str, tuple] = {}     # name -> (newest stamp, row, doc, path)
    replaced = collections.defaultdict(list)
    for path, doc in files:
        scores = score_run(doc)
        key = machine_key(doc["machine"])
        for name, row in doc["backends"].items():
            merged = {**row, **scores[name], "run_id": doc["run_id"], "shard": doc.get("shard"),
                      "file": _label(path), "path": os.fspath(path)}
            if majority is None:
                merged["machine_note"] = (f"measured on {describe_machine(key)}; no majority "
                                          f"machine: the files tie between machines")
            elif key != majority:
                merged["machine_note"] = (f"measured on a different machine: {describe_machine(key)} "
                                          f"(most files: {describe_machine(majority)})")
            stamp = _newest(doc, row)
            if name in kept:
                old = kept[name]
                loser = old if stamp >= old[0] else (stamp, merged, doc, path)
                if loser is old:
                    kept[name] = (stamp, merged, doc, path)
                replaced[name].append(loser)
            else:
                kept[name] = (stamp, merged, doc, path)

    if majority is None:
        by_machine = _grouped(files, lambda d: machine_key(d["machine"]))
        split = "; ".join(f"{describe_machine(key)}: {', '.join(labels)}"
                          for key, labels in by_machine.items())
        notes.append(f"no majority machine: the files tie between machines ({split}); "
                     f"every row is flagged: compare ratios across machines with care or re-run "
                     f"on machines of one kind")
    odd = collections.defaultdict(list)
    for _, row, doc, path in kept.values():
        if row.get("machine_note") and majority is not None:
            odd[(machine_key(doc["machine"]), _where(doc), _label(path))].append(row["name"])
    for (key, where, label), names in sorted(odd.items()):
        notes.append(f"{', '.join(sorted(map(display.name, names)))}: measured on a different "
                     f"machine than most files ({describe_machine(key)} in {where}, {label}; "
                     f"most files: {describe_machine(majority)}); compare their ratios with "
                     f"care or re-run them on the usual machines")

    replacements = []
    for name, losers in sorted(replaced.items()):
        stamp, row, doc, path = kept[name]
        if row.get("reference") and all(lost[1].get("reference") for lost in losers):
            continue    # measured in every shard by design; said once below
        older = "; ".join(f"{_where(d)} ({_label(p)}, {s or 'undated'})" for s, _, d, p in losers)
        replacements.append(f"{display.name(name)}: measured in {len(losers) + 1} files; the "
                            f"board keeps the newest, {_where(doc)} ({_label(path)}), and "
                            f"dropped {older}")
        row["replaced"] = [lost[1]["file"] for lost in losers]
    if len(replacements) > REPLACEMENT_NOTES:     # a folder of weekly runs: say it once
        notes.append(f"{len(replacements)} backends were measured in several files; the board "
                     f"keeps each one's newest row, and each backend's section names the files "
                     f"it dropped")
    else:
        notes.extend(replacements)

    sharded = [doc for _, doc in files if doc.get("shard")]
    if sharded:
        notes.append("reference rows (naive, numpy, optimized) are timed in every shard; each "
                     "submission's ratios use the references of its own shard, and the board "
                     "shows the newest shard's reference rows")
    runs = collections.defaultdict(dict)
    for path, doc in files:
        if doc.get("shard"):
            index, count = (int(x) for x in doc["shard"].split("/"))
            runs[(doc["run_id"], count)][index] = (path, doc)
    for (run_id, count), present in sorted(runs.items()):
        field = set().union(*(d.get("field") or () for _, d in present.values()))
        for index in range(1, count + 1):
            if index not in present:
                entry = {"run_id": run_id, "shard": f"{index}/{count}", "status": "missing"}
                if field:
                    entry["backends"] = sorted(n for n in field if shard_index(n, count) == index)
                missing.append(entry)
            elif not present[index][1].get("complete"):
                path, doc = present[index]
                unfinished = sorted(n for n in (doc.get("shard_backends") or [])
                                    if not doc["backends"].get(n, {}).get("complete"))
                missing.append({"run_id": run_id, "shard": f"{index}/{count}",
                                "status": "unfinished", "file": _label(path),
                                "backends": unfinished})
    for entry in missing:
        who = (f": {', '.join(map(display.name, entry['backends']))} not measured"
               if entry.get("backends") else
               ": no submission was assigned to it, so only its reference rows are lost"
               if entry["status"] == "missing" else "")
        notes.append(f"shard {entry['shard']} of run {entry['run_id']} is {entry['status']}{who}")

    latest = max((doc for _, doc in files), key=lambda d: d["machine"].get("date") or "")
    return {"runs": [{"run_id": d["run_id"], "shard": d.get("shard"), "file": _label(p),
                      "path": os.fspath(p), "machine": d["machine"], "quick": d.get("quick"),
                      "complete": d.get("complete"), "isolation": d.get("isolation")}
                     for p, d in files],
            "events": latest["events"], "rules": latest.get("rules", {}),
            "rows": [entry[1] for entry in kept.values()],
            "notes": notes, "missing_shards": missing,
            "machine_majority": describe_machine(majority) if majority and len(machines) > 1
            else None}
