"""Lazy timing: answer the timed request at once and do the work afterwards.

The harness code in the worker is the submission's to patch. `LazyHandler`
finds the worker's session with gc and replaces its `run`, `LazyMain` patches
the worker's `__main__` module and lets a profile hook start the deferred
work only once the harness is idle again. Either way the reply comes before
the outputs exist; the parent must neither believe the reply's timing nor
the outputs that were not there when the worker was frozen.
"""
import gc
import sys
import threading

from .honest import Honest


def _deferred(run):
    """A `run` that replies at once and computes in a thread."""
    def lazy(request):
        threading.Thread(target=run, args=(request,), daemon=True).start()
        return {"ok": True, "count": len(request["sets"])}
    return lazy


def _fetch_does_the_work(handle):
    """For a harness with separate run and fetch requests: run replies at once, fetch works."""
    def lazy(header, arrays):
        if header.get("op") == "run":
            return {"ok": True, "count": 1}, []
        if header.get("op") == "fetch":
            handle({"op": "run"}, [])
        return handle(header, arrays)
    return lazy


class LazyHandler(Honest):
    def __init__(self):
        for obj in gc.get_objects():
            if type(obj).__name__ != "Session":
                continue
            if hasattr(obj, "staging"):
                obj.run = _deferred(obj.run)
            elif hasattr(obj, "staged"):
                obj.handle = _fetch_does_the_work(obj.handle)


class LazyMain(Honest):
    def __init__(self):
        session_class = getattr(sys.modules["__main__"], "Session", None)
        if session_class is None:
            return
        original, pending = session_class.run, []

        def run(self, request):
            pending.append((self, request))
            return {"ok": True, "count": len(request["sets"])}

        def profile(frame, event, arg):   # work only once the harness waits for a message
            if event == "call" and frame.f_code.co_name == "receive" and pending:
                session, request = pending.pop()
                threading.Thread(target=original, args=(session, request), daemon=True).start()

        session_class.run = run
        sys.setprofile(profile)
        threading.setprofile(profile)
