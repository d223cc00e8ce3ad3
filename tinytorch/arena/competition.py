"""One competition run: check every backend, then time it, one backend at a time.

Phase 1 (may run for several backends at once, `jobs`): every case (event x
shape x dtype) is run once in the backend's worker on fresh inputs and
compared with a float64 reference. Phase 2 (serial): cases that passed are
timed in a fresh worker, batches of the candidate alternating with batches of
the `optimized` reference in its own worker, so both see the same machine
load; every timed output is spot-checked and, after timing, one more input set
drawn from a fresh secret seed is checked in full, so a memoised answer
fails. Memory events run their workload once in a fresh worker and record
the resident high-water mark above the worker's baseline.

Statuses of a case: ok, wrong, nan, error, crash (unranked); timeout, memory
(the event counts 0.01); skipped (too slow for this backend, not counted).
A hang is waited for once: a backend that cannot load fails every case with
that reason, and after a timeout the event's later cases fail as timeouts
without running.
"""
from __future__ import annotations

import dataclasses
import math
import secrets
import statistics

import numpy as np

from .events import MEMORY_KIND, Event, Rules
from .problems import PROBLEMS, has_nonfinite
from .runner import Worker, WorkerFailure, spawn_worker
from .sandbox import Limits

REFERENCE = "optimized"          # the backend every time is compared with
STAGING_BYTES = 256 << 20        # most input/output bytes one timed batch may hold


@dataclasses.dataclass
class Contestant:
    name: str                    # how the board lists it
    spec: str                    # what the worker loads: a registered name, or "module:Class"
    reference: bool = False      # naive, numpy, optimized: baselines, never candidates
    provenance: dict = dataclasses.field(default_factory=dict)
    explicit: bool = False       # `spec` is a "module:Class" the instructor gave, not a name

    def load_request(self) -> dict:
        """What the worker loads; a registered name is never parsed as "module:Class"."""
        return ({"op": "load", "entry_point": self.spec} if self.explicit
                else {"op": "load", "name": self.spec})

    @property
    def location(self) -> str | None:
        return self.provenance.get("location")


@dataclasses.dataclass(frozen=True)
class Case:
    event: Event
    params: dict
    dtype: str

    @property
    def problem(self):
        return PROBLEMS[self.event.problem_kind]

    def describe(self) -> dict:
        return {"event": self.event.name, "kind": self.event.kind,
                "workload": self.event.problem_kind, "label": self.problem.label(self.params),
                "dtype": self.dtype, "params": dict(self.params),
                "flops": self.problem.flops(self.params)}


def cases_for(events: list[Event], backend: str, quick: bool) -> list[Case]:
    return [Case(event, params, dtype) for event in events
            for params in event.shapes_for(backend, quick) for dtype in event.dtypes]


def skipped_cases(events, backend, quick) -> list[dict]:
    """Cases the event declares too slow for `backend`: listed, never counted."""
    ran = {(c.event.name, c.problem.label(c.params), c.dtype) for c in cases_for(events, backend, quick)}
    return [{**case.describe(), "status": "skipped", "reason": f"too slow for {backend}"}
            for case in cases_for(events, "", quick)
            if (case.event.name, case.problem.label(case.params), case.dtype) not in ran]


def _rng():
    """A generator from a secret seed: nothing a worker could predict."""
    return np.random.default_rng(secrets.randbits(128))


class Arena:
    """The rules of one run and the workers they apply to."""

    def __init__(self, rules: Rules, events: list[Event], quick: bool = False,
                 advance=lambda: None, isolate: bool = True, hidden_paths=()):
        self.rules, self.events, self.quick, self.advance = rules, events, quick, advance
        #: False only for --unsandboxed (a trusted field).
        self.isolate = isolate
        #: What no worker may see: the results, the board, every contestant's package
        #: (a worker sees its own; see sandbox.py).
        self.hidden_paths = tuple(hidden_paths)
        self._reference: Worker | None = None

    # ---------------------------------------------------------------- workers

    def limits(self, case: Case | None = None) -> Limits:
        """The rules' limits, or the event's own time budget and threads where it sets them."""
        event = case.event if case else None
        return Limits((event and event.time_budget_s) or self.rules.wall_time_s,
                      self.rules.memory_mb, (event and event.threads) or self.rules.threads)

    def start(self, contestant: Contestant, case: Case | None = None) -> Worker:
        """A fresh worker with the backend loaded (WorkerFailure if it does not load)."""
        exempt = self.rules.allow_blas or (contestant.reference and contestant.spec == "numpy")
        limits = dataclasses.replace(self.limits(case), allow_blas=exempt)
        own = [contestant.location] if contestant.location else []
        try:
            worker = spawn_worker(limits, isolate=self.isolate, own_paths=own,
                                  hidden_paths=[p for p in self.hidden_paths if p not in own])
        except WorkerFailure as failure:
            raise WorkerFailure(failure.status, f"could not start: {failure.reason}") from None
        try:
            worker.request(contestant.load_request())
        except WorkerFailure as failure:
            worker.close()
            raise WorkerFailure(failure.status, f"could not load backend: {failure.reason}") from None
        return worker

    def _reusable(self, worker: Worker | None, case: Case) -> Worker | None:
        """`worker` if it was started under `case`'s time budget and threads, else None (closed)."""
        if worker is None:
            return None
        wanted = self.limits(case)
        if (worker.limits.wall_time_s, worker.limits.threads) == (wanted.wall_time_s, wanted.threads):
            return worker
        worker.close()
        return None

    def _run(self, worker: Worker, case: Case, input_sets):
        """(seconds, outputs per set) of one batch: the parent's clock, outputs it read itself."""
        specs = [(shape, case.dtype) for shape in case.problem.output_shapes(case.params)]
        return worker.run(case.problem.kind, case.params, input_sets, specs,
                          timeout=self.limits(case).wall_time_s)

    def _verdict(self, case: Case, inputs, outputs, full: bool, when: str) -> dict | None:
        """None if the outputs are right, else the failed case's status and reason."""
        if has_nonfinite(outputs):
            return {"status": "nan", "reason": f"returned NaN or Inf {when}"}
        problem, tolerance = case.problem, self.rules.tolerance(case.dtype)
        error = (problem.check(case.params, inputs, outputs) if full else
                 problem.spot_check(case.params, inputs, outputs, _rng()))
        if not error <= tolerance:
            return {"status": "wrong", "error": error,
                    "reason": f"wrong answer {when}: relative error {error:.3g} > {tolerance:g}"}
        return None

    # ---------------------------------------------------------------- phase 1

    def check(self, contestant: Contestant) -> list[dict]:
        """Run every case once on fresh inputs against a float64 reference.

        A hang costs the wall time once, not once per case: a backend that
        could not load fails every remaining case with that reason, and a case
        that timed out fails the rest of its event without running them.
        """
        results, worker, given_up = [], None, {}    # event name (None: every event) -> failure
        for case in cases_for(self.events, contestant.name, self.quick):
            row = case.describe()
            known = given_up.get(None) or given_up.get(case.event.name)
            worker = self._reusable(worker, case)
            try:
                if known:
                    raise known
                if worker is None:
                    try:
                        worker = self.start(contestant, case)
                    except WorkerFailure as failure:
                        given_up[None] = failure
                        raise
                inputs = case.problem.make_inputs(case.params, case.dtype, _rng())
                _, (outputs,) = self._run(worker, case, [inputs])
                row["error"] = case.problem.check(case.params, inputs, outputs)
                row.update(self._verdict(case, inputs, outputs, True, "on fresh inputs")
                           or {"status": "ok"})
            except WorkerFailure as failure:
                row.update(status=failure.status, reason=failure.reason)
                if worker is not None:
                    worker.close()
                worker = None
                if failure.status == "timeout" and not known:
                    given_up.setdefault(case.event.name, _timed_out_before(case))
            results.append(row)
            self.advance()
        if worker is not None:
            worker.close()
        return results

    # ---------------------------------------------------------------- phase 2

    def reference_worker(self, case: Case) -> Worker:
        """The `optimized` worker, under the same time budget and threads as `case`."""
        if self._reference is not None and self._reference.process.poll() is not None:
            self.close()
        self._reference = self._reusable(self._reference, case)
        if self._reference is None:
            self._reference = self.start(Contestant(REFERENCE, REFERENCE, True), case)
        return self._reference

    def close(self):
        if self._reference is not None:
            self._reference.close()
            self._reference = None

    def _timed_batch(self, worker, case, calls, cap):
        """(seconds per call, calls per batch, [(input_sets, outputs)]) of one batch of fresh
        inputs, with every run's outputs for `_verify` to check once the pair is timed.

        A batch that ends sooner than min_batch_ms is not a sample: it is run
        again with more calls (up to `cap`), so the round trip stays noise.
        """
        target, runs = self.rules.min_batch_ms / 1000, []
        while True:
            rng = _rng()
            input_sets = case.problem.make_batch(case.params, case.dtype, rng, calls)
            elapsed, outputs = self._run(worker, case, input_sets)
            runs.append((input_sets, outputs))
            if elapsed >= target or calls >= cap:
                return elapsed / calls, calls, runs
            calls = min(cap, math.ceil(calls * 1.25 * target / max(elapsed, 1e-7)))

    def _verify(self, case, runs) -> dict | None:
        """The first failed verdict over a batch's runs (None if every output is right)."""
        for input_sets, outputs in runs:
            for inputs, outs in zip(input_sets, outputs):
                failed = self._verdict(case, inputs, outs, False, "on timed inputs")
                if failed:
                    return failed
        return None

    def measure(self, contestant: Contestant, checked: list[dict]) -> list[dict]:
        """Time every case that passed phase 1; measure memory events in fresh workers."""
        cases = {(c.event.name, c.problem.label(c.params), c.dtype): c
                 for c in cases_for(self.events, contestant.name, self.quick)}
        results, worker, given_up = [], None, {}    # event name -> failure (a timeout)
        for row in checked:
            case = cases[(row["event"], row["label"], row["dtype"])]
            if row["status"] == "ok" and case.event.name in given_up:
                failure = given_up[case.event.name]
                row.update(status=failure.status, reason=failure.reason)
            elif row["status"] == "ok":
                try:
                    if case.event.kind == MEMORY_KIND:
                        row.update(self._memory(contestant, case))
                    else:
                        worker = self._reusable(worker, case) or self.start(contestant, case)
                        row.update(self._time(worker, contestant, case))
                except WorkerFailure as failure:
                    row.update(status=failure.status, reason=f"{failure.reason} while timing")
                    if worker is not None:
                        worker.close()
                    worker = None
                    if failure.status == "timeout":
                        given_up[case.event.name] = _timed_out_before(case)
            results.append(row)
            self.advance()
        if worker is not None:
            worker.close()
        return results

    def _time(self, worker, contestant, case) -> dict:
        problem = case.problem
        set_bytes = (sum(a.nbytes for a in problem.make_inputs(case.params, case.dtype, _rng()))
                     + problem.output_bytes(case.params, case.dtype))
        cap = max(1, min(STAGING_BYTES // max(set_bytes, 1), 10000))
        own = contestant.name == REFERENCE
        reference = None if own else self.reference_worker(case)
        # Warm-up (caches, lazy imports) and calibration of the calls per batch.
        self._run(worker, case, [problem.make_inputs(case.params, case.dtype, _rng())])
        _, calls, runs = self._timed_batch(worker, case, 1, cap)
        if not own:
            _, ref_calls, _ = self._timed_batch(reference, case, 1, cap)
        failed = self._verify(case, runs)
        if failed:
            return failed
        times, ref_times = [], []
        repeats = case.event.repeats or self.rules.repeats
        if self.quick:
            repeats = min(repeats, self.rules.quick_repeats)
        # Candidate and reference batches alternate, and so does which of them goes
        # first: verifying a batch (a float64 model run, for a model event) evicts
        # the caches, and the side timed right after it would always start cold.
        for repeat in range(repeats):
            candidate_first = own or repeat % 2 == 0
            if not candidate_first:
                ref_calls = self._reference_batch(reference, case, ref_calls, cap, ref_times)
            seconds, calls, runs = self._timed_batch(worker, case, calls, cap)
            times.append(seconds)
            if candidate_first and not own:
                ref_calls = self._reference_batch(reference, case, ref_calls, cap, ref_times)
            failed = self._verify(case, runs)
            if failed:
                return failed
        inputs = problem.make_inputs(case.params, case.dtype, _rng())   # secret re-draw
        _, (outputs,) = self._run(worker, case, [inputs])
        failed = self._verdict(case, inputs, outputs, True, "on inputs re-drawn after timing")
        if failed:
            return failed
        timing = _summary(times, calls)
        return {"time_ms": timing,
                "reference_time_ms": timing if own else _summary(ref_times, ref_calls),
                **problem.rates(case.params, timing["median"] / 1000)}

    def _reference_batch(self, reference, case, calls, cap, times) -> int:
        """Time one batch of the reference (its outputs are trusted); the calls it took."""
        try:
            seconds, calls, _ = self._timed_batch(reference, case, calls, cap)
        except WorkerFailure as failure:
            raise RuntimeError(f"the reference backend {REFERENCE!r} failed: "
                               f"{failure.reason}") from None
        times.append(seconds)
        return calls

    def _memory(self, contestant, case) -> dict:
        """Peak memory of one call above the fresh worker's baseline, in MB, read from outside."""
        worker = self.start(contestant, case)
        try:
            inputs = case.problem.make_inputs(case.params, case.dtype, _rng())
            specs = [(shape, case.dtype) for shape in case.problem.output_shapes(case.params)]
            peak, outputs = worker.memory_event(case.problem.kind, case.params, inputs, specs,
                                                timeout=self.limits(case).wall_time_s)
            method = ("peak of the worker's memory cgroup" if worker.sandbox.group is not None
                      else "peak resident memory of its processes plus its tmpfs")
        finally:
            worker.close()
        failed = self._verdict(case, inputs, outputs, True, "in the memory event")
        if failed:
            return failed
        return {"memory_mb": peak / (1 << 20), "memory_method": method}


def _timed_out_before(case: Case) -> WorkerFailure:
    """The failure given to the cases of an event after one of its cases timed out."""
    return WorkerFailure("timeout", f"skipped: an earlier shape of this event timed out "
                                    f"({case.problem.label(case.params)} {case.dtype})")


def _summary(per_call_seconds, reps) -> dict:
    ms = [t * 1000 for t in per_call_seconds]
    median = statistics.median(ms)
    return {"median": median, "min": min(ms), "max": max(ms),
            "spread": (max(ms) - min(ms)) / median if median > 0 else 0.0,
            "samples": ms, "calls_per_batch": reps}
