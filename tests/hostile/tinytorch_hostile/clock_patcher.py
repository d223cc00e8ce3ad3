"""Makes every timer the worker could read run at a tenth of real speed."""
import time

from .honest import Honest

_perf_counter, _monotonic = time.perf_counter, time.monotonic
time.perf_counter = lambda: _perf_counter() / 10
time.monotonic = lambda: _monotonic() / 10


class ClockPatcher(Honest):
    pass
