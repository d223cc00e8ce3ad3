"""`tinytorch.benchmark()`: time and memory of a block of code, as the course uses it.

    with tinytorch.benchmark() as bench:
        output = model(input)
    print(f"{bench.time_ms:.1f} ms, {bench.peak_memory_mb:.1f} MB")

Memory is the process's resident size (Linux /proc/self/status), not
tracemalloc: tracemalloc slows allocation-heavy code (and so the timing) and
misses what compiled kernels allocate outside Python. Before the block the
resident high-water mark is reset (/proc/self/clear_refs), so
`peak_memory_mb` is the block's peak above the resident size at its start
and `current_memory_mb` what it still holds at its end. Where the mark cannot
be reset, the peak is an upper bound: it may include an earlier, higher peak
of the process (`memory_exact` is False).
"""
from __future__ import annotations

import contextlib
import dataclasses
import resource
import sys
import time

MB = 1024 * 1024


@dataclasses.dataclass
class BenchmarkResult:
    """Filled in when the `benchmark()` block ends."""
    time_ms: float = 0.0
    peak_memory_mb: float = 0.0
    current_memory_mb: float = 0.0
    memory_exact: bool = True      # False: the peak could not be reset; it is an upper bound


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _resident() -> int:
    rss = _status_bytes("VmRSS")
    return rss if rss is not None else _peak()


def _peak() -> int:
    hwm = _status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    scale = 1 if sys.platform == "darwin" else 1024        # ru_maxrss: bytes on macOS, kB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


@contextlib.contextmanager
def benchmark():
    """Measure the wall time and resident memory of the block (see the module docstring)."""
    result = BenchmarkResult()
    result.memory_exact = _reset_peak()
    start_resident = _resident()
    start = time.perf_counter()
    try:
        yield result
    finally:
        result.time_ms = (time.perf_counter() - start) * 1000
        result.peak_memory_mb = max(0, _peak() - start_resident) / MB
        result.current_memory_mb = max(0, _resident() - start_resident) / MB


def compare_backends(fn, backends=("naive", "optimized"), repeat: int = 1, file=None) -> dict:
    """Run `fn()` under each backend, print time, memory and speedup over naive; return results.

    Each backend runs `fn` `repeat` times and keeps its fastest run. Speedups
    are over `naive` when it is among `backends`, else over the first one.
    """
    from .config import use_backend
    measured = {}
    for name in backends:
        best = None
        with use_backend(name):
            for _ in range(repeat):
                with benchmark() as result:
                    fn()
                if best is None or result.time_ms < best.time_ms:
                    best = result
        measured[name if isinstance(name, str) else type(name).__name__] = best
    baseline_name = "naive" if "naive" in measured else next(iter(measured))
    baseline = measured[baseline_name].time_ms
    width = max(len(n) for n in measured)
    print(f"{'backend':<{width}}  {'time (ms)':>10}  {'peak (MB)':>9}  speedup over {baseline_name}",
          file=file)
    for name, result in measured.items():
        speedup = baseline / result.time_ms if result.time_ms > 0 else float("inf")
        print(f"{name:<{width}}  {result.time_ms:>10.1f}  {result.peak_memory_mb:>9.1f}  "
              f"{speedup:.1f}x", file=file)
    return measured
