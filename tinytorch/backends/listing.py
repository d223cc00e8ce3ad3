"""`tinytorch backends`: every registered backend, loaded in a sandboxed subprocess each.

Loading a plugin runs its import-time code, so each is loaded in the arena's
sandbox (no network, nothing writable, an unprivileged user; see
tinytorch/arena/sandbox.py), with a time limit, and everything it prints is
read with caps. A plugin that hangs on import, crashes the interpreter or
raises is listed with its error; the other backends are listed as usual.
Where bubblewrap is missing the listing says so and loads nothing it has not
been told to trust: `--unsandboxed` loads them as you.
"""
from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor

from ..config import current_backend_name
from . import registry
from .staleness import stale_warning


def add_arguments(parser):
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list, one object per backend")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="time limit for loading each backend (default: 60)")
    parser.add_argument("--unsandboxed", action="store_true",
                        help="load the plugins without the sandbox, as you: only for plugins "
                             "you trust")


#: What a loaded record may say about itself, and how it must look.
_PROBED_FIELDS = {"status": str, "error": (str, type(None)), "operations": (list, type(None)),
                  "openmp": (bool, type(None)), "threads": (int, type(None))}


def _probe_in_sandbox(record, timeout, hidden, isolate):
    """Load the backend in a sandboxed interpreter; keep from its answer only what the
    parent cannot know itself (operations, OpenMP, threads, load errors), checked and cut."""
    from ..arena.runner import clip
    from ..arena.sandbox import Limits, run_confined
    own = [record.location] if record.location else []
    done = run_confined([sys.executable, "-m", "tinytorch.backends._probe", record.name,
                         record.distribution or ""],
                        Limits(wall_time_s=timeout, threads=0, allow_blas=True), timeout=timeout,
                        own_paths=own, hidden_paths=[h for h in hidden if h not in own],
                        isolate=isolate, max_stdout=1 << 16)
    if done.timed_out:
        record.status, record.error = "error", f"loading did not finish within {timeout:g} s"
        return record
    if done.returncode == 0:
        try:
            answer = json.loads(done.stdout.decode(errors="replace").strip().splitlines()[-1])
            for key, kind in _PROBED_FIELDS.items():
                if not isinstance(answer.get(key), kind):
                    raise TypeError(key)
            record.status = answer["status"] if answer["status"] in ("ok", "error") else "error"
            record.error = clip(answer["error"], 300) if answer["error"] else None
            record.operations = [o for o in answer["operations"] or () if o in registry.OPERATIONS] \
                if answer["operations"] is not None else None
            record.openmp, record.threads = answer["openmp"], answer["threads"]
            return record
        except (ValueError, IndexError, TypeError, AttributeError):
            pass
    last = done.stderr_tail.decode(errors="replace").strip().splitlines() or ["no output"]
    reason = (f"the import crashed the interpreter (signal {-done.returncode})"
              if done.returncode is not None and done.returncode < 0 else clip(last[-1], 300))
    record.status, record.error = "error", reason
    return record


def probe_all(timeout: float = 60.0, isolate: bool = True) -> list[registry.BackendRecord]:
    """Every backend's record, each loaded in its own sandbox, in parallel."""
    unloaded = [r for r in registry.list_backends(load=False) if r.origin != "runtime"]
    hidden = [r.location for r in unloaded if r.location and r.origin != "core"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        records = list(pool.map(lambda r: _probe_in_sandbox(r, timeout, hidden, isolate),
                                unloaded))
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


def _printable(text, limit: int = 120) -> str:
    """A plugin-controlled text safe for a terminal: control characters escaped, cut short."""
    text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(text))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def format_table(records) -> str:
    headers = ("", "NAME", "PACKAGE", "VERSION", "ENTRY POINT", "STATUS", "OWN OPERATIONS",
               "THREADS", "LOCATION")
    rows = [("*" if r.current else "", registry.display_name(r.name),
             _printable(r.distribution or "-", 40), _printable(r.version or "-", 20),
             _printable(r.entry_point or "-", 60), "ok" if r.status == "ok" else r.status,
             _operations(r), _threads(r), _printable(r.location or "-")) for r in records]
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip()
             for row in [headers, *rows]]
    notes = [f"{registry.display_name(r.name)} ({_printable(r.distribution, 40)}): error: "
             f"{_printable(r.error, 400)}" for r in records if r.error]
    notes += [stale_warning(registry.display_name(r.name), r.stale) for r in records if r.stale]
    notes.append("* = current backend; operations not listed come from the contract's defaults")
    return "\n".join(lines + [""] + notes)


def run(args) -> int:
    if not args.unsandboxed:
        from ..arena.sandbox import SandboxUnavailable, check_available
        try:
            check_available()
        except SandboxUnavailable as exc:
            print(f"tinytorch backends: not loading any plugin without a sandbox: {exc}. "
                  f"(--unsandboxed loads them as you, for plugins you trust.)", file=sys.stderr)
            return 2
    records = probe_all(args.timeout, isolate=not args.unsandboxed)
    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=2))
    else:
        print(format_table(records))
    for r in records:
        if r.stale and args.json:
            print(stale_warning(registry.display_name(r.name), r.stale), file=sys.stderr)
    return 0
