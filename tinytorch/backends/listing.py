"""`tinytorch backends`: every registered backend, loaded in a subprocess each.

A plugin that hangs on import, crashes the interpreter or raises is listed
with its error; the other backends are listed as usual.
"""
from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from ..config import current_backend_name
from . import registry


def add_arguments(parser):
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list, one object per backend")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="time limit for loading each backend (default: 60)")


def _probe_in_subprocess(record, timeout):
    """Load the backend in a fresh interpreter; on failure keep the unloaded record."""
    cmd = [sys.executable, "-m", "tinytorch.backends._probe", record.name,
           record.distribution or ""]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        record.status, record.error = "error", f"loading did not finish within {timeout:g} s"
        return record
    if done.returncode == 0:
        try:
            return registry.BackendRecord(**json.loads(done.stdout.strip().splitlines()[-1]))
        except (ValueError, IndexError, TypeError):
            pass
    reason = (f"the import crashed the interpreter (signal {-done.returncode})"
              if done.returncode < 0 else
              (done.stderr.strip().splitlines() or ["no output"])[-1])
    record.status, record.error = "error", reason
    return record


def probe_all(timeout: float = 60.0) -> list[registry.BackendRecord]:
    """Every backend's record, each loaded in its own subprocess, in parallel."""
    unloaded = [r for r in registry.list_backends(load=False) if r.origin != "runtime"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        records = list(pool.map(lambda r: _probe_in_subprocess(r, timeout), unloaded))
    current = current_backend_name()
    for record in records:
        record.current = record.name == current and registry.winner(current) == record.distribution
    return records


def _threads(record):
    if record.threads is None:
        return "-"
    if record.openmp is False:
        return f"{record.threads} (serial build)"
    return f"{record.threads}" + (" (OpenMP)" if record.openmp else "")


def _operations(record):
    if record.operations is None:
        return "-"
    own = len(record.operations)
    return ", ".join(record.operations) if own < len(registry.OPERATIONS) else "all"


def format_table(records) -> str:
    headers = ("", "NAME", "PACKAGE", "VERSION", "ENTRY POINT", "STATUS", "OWN OPERATIONS",
               "THREADS", "LOCATION")
    rows = [("*" if r.current else "", r.name, r.distribution or "-", r.version or "-",
             r.entry_point or "-", "ok" if r.status == "ok" else r.status, _operations(r),
             _threads(r), r.location or "-") for r in records]
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip()
             for row in [headers, *rows]]
    notes = [f"{r.name} ({r.distribution}): error: {r.error}" for r in records if r.error]
    notes += [f"{r.name}: its compiled kernels are older than their .pyx sources; "
              f"rebuild with: {r.stale}" for r in records if r.stale]
    notes.append("* = current backend; operations not listed come from the contract's defaults")
    return "\n".join(lines + [""] + notes)


def run(args) -> int:
    records = probe_all(args.timeout)
    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=2))
    else:
        print(format_table(records))
    for r in records:
        if r.stale and args.json:
            print(f"warning: backend {r.name!r} is a stale build; rebuild with: {r.stale}",
                  file=sys.stderr)
    return 0
