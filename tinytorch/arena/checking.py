"""`tinytorch check`, the competition's way: the backend in a sandboxed worker, the rest here.

The conformance suite (tinytorch/testing.py) draws the cases and computes
the float64 references in this process; only the backend's call runs in a
worker (runner.py), under the competition's rules: the BLAS guard, the
sandbox, the limits. So a kernel that writes out of bounds (boundscheck
off) costs a worker, not the student's session: the crash comes back as the
verdict of the case that caused it, and the next case gets a fresh worker.
A broken rule fails the operation at once, without shrinking its case.
"""
from __future__ import annotations

import numpy as np

from ..testing import MODIFIED_INPUTS, compare, reference
from .runner import WorkerFailure, spawn_worker
from .sandbox import Limits
from .wire import layout

CRASH_HINT = ("a kernel read or wrote out of bounds; rebuild with boundscheck=True "
              "(`# cython: boundscheck=True` at the top of the .pyx, then pip install -e "
              "again) to get an IndexError naming the line")


def _staged_form(array: np.ndarray, layout_name: str) -> np.ndarray:
    """The contiguous array a worker turns back into `array`'s layout."""
    if layout_name == "transposed":
        return np.ascontiguousarray(array.T)
    if layout_name == "strided":
        wide = np.zeros((*array.shape[:-1], 2 * array.shape[-1]), array.dtype)
        wide[..., ::2] = array
        return wide
    return np.ascontiguousarray(array)


class RemoteBackend:
    """Runs conformance cases on one backend in a worker, starting a new one after a crash."""

    def __init__(self, contestant, limits: Limits, *, isolate=True, hidden_paths=()):
        self.contestant, self.limits = contestant, limits
        self.isolate, self.hidden_paths = isolate, tuple(hidden_paths)
        self.worker = None
        self.fatal: dict[str, str] = {}  # operation -> the rule it broke: its later cases fail so
        self.operations: list[str] = []  # what the backend implements itself (as it says)
        self.float64_results: set[str] = set()  # operations cast back from float64

    def start(self):
        """The worker with the backend loaded (a new one after a failure)."""
        if self.worker is None:
            own = [self.contestant.location] if self.contestant.location else []
            worker = spawn_worker(self.limits, isolate=self.isolate, own_paths=own,
                                  hidden_paths=[p for p in self.hidden_paths if p not in own])
            try:
                reply, _ = worker.request(self.contestant.load_request())
            except WorkerFailure:
                worker.close()
                raise
            self.operations = [str(op) for op in reply.get("operations") or ()][:10]
            self.worker = worker
        return self.worker

    def run_case(self, case):
        """(relative error, problem or None) of one case, like testing.run_case."""
        if case.op in self.fatal:
            return float("inf"), self.fatal[case.op]
        args = case.arguments()
        expected = reference(case, args)
        try:
            worker = self.start()
            staged, specs, arrays = [], [], []
            for index, arg in enumerate(args):
                if not isinstance(arg, np.ndarray):
                    specs.append({"value": list(arg) if isinstance(arg, tuple) else arg})
                elif case.alias and index == 1:
                    specs.append({"same_as": 0})
                else:
                    name = case.layouts[index] if index < len(case.layouts) else "contiguous"
                    staged.append(_staged_form(arg, name))
                    specs.append({"layout": name})
            slots, end = layout([(a.shape, a.dtype) for a in staged])
            (out_slot,), end = layout([(expected.shape, case.dtype)], end)
            worker.staging.ensure(end, grow=True)
            for array, slot in zip(staged, slots):
                worker.staging.array(slot)[...] = array
            worker.staging.array(out_slot)[...] = np.nan
            slot_iter = iter(slots)
            for spec in specs:
                if "layout" in spec:
                    spec["slot"] = next(slot_iter)
            reply, _ = worker.request({"op": "call", "operation": case.op, "size": end,
                                       "args": specs, "output": out_slot})
        except WorkerFailure as failure:
            return float("inf"), self._failed(case.op, failure)
        if any(not np.array_equal(worker.staging.array(slot), array, equal_nan=True)
               for slot, array in zip(slots, staged)):
            return float("inf"), MODIFIED_INPUTS
        if reply.get("float64_result"):
            self.float64_results.add(case.op)
        if "returned" in reply:
            returned = str(reply["returned"])[:100]
            if " " not in returned:
                return float("inf"), f"returned {returned}, not a numpy array"
            return float("inf"), (f"returned {returned}, expected {case.dtype} "
                                  f"{tuple(expected.shape)}")
        return compare(case, worker.staging.array(out_slot).copy(), expected)

    def _failed(self, operation: str, failure: WorkerFailure) -> str:
        """The verdict of a case whose worker failed; the worker is replaced."""
        self.close()
        if failure.status == "violation":
            self.fatal[operation] = failure.reason
        if failure.status == "crash":
            return f"{failure.reason}: {CRASH_HINT}"
        return failure.reason

    def close(self):
        if self.worker is not None:
            self.worker.close()
            self.worker = None
