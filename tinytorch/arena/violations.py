"""The competition's rule violations: their names, and the one a worker reports itself.

Every violation has one short name that the results file and the board show,
so an instructor reads the same words for the same offence in every run.
Almost all of them are found by the parent from outside the worker (the BLAS
guard's reports, the sandbox's watch over memory, processes and CPU time,
the static check of compiled extensions): the parent believes nothing the
worker says about them. The worker reports only `aliasing`, a property of
the values it returns, which the contract itself refuses.
"""
from __future__ import annotations

import numpy as np

#: name -> what the board says about it.
VIOLATIONS = {
    "blas": "called vendor BLAS or LAPACK while the rules forbid it",
    "forbidden-symbols": "its compiled extensions import functions the rules forbid",
    "aliasing": "returned an array sharing memory with an input or an earlier output",
    "thread-hog": "used more CPU time than its threads allow",
    "too-many-processes": "started more processes than allowed",
    "memory": "exceeded the memory limit",
    "interference": "worked while another backend was timed",
}


class Violation(Exception):
    """A rule broken by a backend; `name` is a key of VIOLATIONS."""

    def __init__(self, name: str, detail: str = ""):
        if name not in VIOLATIONS:
            raise ValueError(f"unknown violation {name!r}; known: {', '.join(VIOLATIONS)}")
        self.name, self.detail = name, detail
        super().__init__(self.reason)

    @property
    def reason(self) -> str:
        """`name: detail` as results and the board print it."""
        return f"{self.name}: {self.detail or VIOLATIONS[self.name]}"


def _byte_bounds(array):
    try:
        from numpy.lib.array_utils import byte_bounds     # numpy >= 2.0
    except ImportError:
        byte_bounds = np.byte_bounds
    return byte_bounds(array)


def check_fresh(outputs, inputs=()) -> None:
    """Violation("aliasing") if any output shares memory with an input or another output.

    The check sorts byte ranges, so thousands of arrays cost milliseconds.
    """
    spans = sorted((*_byte_bounds(a), is_output)
                   for arrays, is_output in ((outputs, True), (inputs, False))
                   for a in arrays if isinstance(a, np.ndarray) and a.nbytes)
    end, end_is_output = None, False
    for start, stop, is_output in spans:
        if end is not None and start < end and (is_output or end_is_output):
            raise Violation("aliasing", "an output shares memory with an input or with "
                                        "another output; return a new array from every call")
        if end is None or stop > end:
            end, end_is_output = stop, is_output


def aliasing_error(exc: BaseException) -> Violation | None:
    """The contract's own aliasing refusal (a BackendError) as the named violation."""
    from ..backends.base import BackendError
    if isinstance(exc, BackendError) and "shares memory" in str(exc):
        return Violation("aliasing", str(exc))
    return None
