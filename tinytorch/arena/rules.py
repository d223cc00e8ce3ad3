"""The competition's rule violations: their names, and how a worker notices them.

Every violation has one short name that the results file and the board show,
so an instructor reads the same words for the same offence in every run.
The parent is trusted and the worker is not, so nothing here is the only
line of defence: the parent reads its own clock, computes the references and
checks the outputs; the isolation in sandbox.py stops writes and limits
resources. What the worker checks here (outputs that alias, tampered
modules, attempts to write protected files, BLAS or libc reached through
ctypes) turns quiet cheating into a named failure instead of a lucky rank.
"""
from __future__ import annotations

import os
import re
import sys

import numpy as np

#: name -> what the board says about it.
VIOLATIONS = {
    "blas": "called vendor BLAS while the rules forbid it",
    "aliasing": "returned an array sharing memory with an input or an earlier output",
    "clock-tampering": "replaced the clock the harness reads",
    "harness-tampering": "patched the harness, the reference or the random generator",
    "protected-write": "tried to write the results or the leaderboard",
    "thread-hog": "used more CPU time than its threads allow",
    "too-many-processes": "started more processes than allowed",
    "memory": "exceeded the memory limit",
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


# ------------------------------------------------------------------ aliasing

def _byte_bounds(array):
    try:
        from numpy.lib.array_utils import byte_bounds     # numpy >= 2.0
    except ImportError:
        byte_bounds = np.byte_bounds
    return byte_bounds(array)


def check_fresh(outputs, inputs=()) -> None:
    """Violation("aliasing") if any output shares memory with an input or another output.

    `outputs` and `inputs` are flat lists over every call of one batch; the
    check sorts byte ranges, so thousands of calls cost milliseconds.
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


# ------------------------------------------------------------------ tampering

#: module -> attributes the harness relies on; replacing one is tampering.
_CLOCK = ("time", ("perf_counter", "perf_counter_ns", "monotonic", "monotonic_ns", "time",
                   "time_ns", "process_time", "sleep"))
_WATCHED = {
    "numpy.random": ("default_rng", "Generator", "PCG64", "SeedSequence", "seed", "rand",
                     "randn", "standard_normal", "random"),
    "numpy": ("may_share_memory", "asarray", "array", "empty", "save", "load",
              "ascontiguousarray"),
}
#: method names of numpy's Generator a harness draws with.
_GENERATOR_METHODS = ("standard_normal", "random", "integers", "normal", "uniform")


class Integrity:
    """A snapshot of what the harness relies on, taken before the backend is imported."""

    def __init__(self):
        import numpy.random
        self._clock = {a: getattr(sys.modules[_CLOCK[0]], a) for a in _CLOCK[1]}
        self._objects = {(m, a): getattr(sys.modules[m], a)
                         for m, attrs in _WATCHED.items() for a in attrs}
        self._generator = {a: numpy.random.Generator.__dict__.get(a) for a in _GENERATOR_METHODS}
        self._harness = {}            # "module" or "module.Class" -> {attribute: object}
        for name, module in list(sys.modules.items()):
            if not (name.startswith(("tinytorch.arena", "tinytorch.backends.base")) and module):
                continue
            self._harness[name] = {a: v for a, v in vars(module).items() if callable(v)}
            for attr, value in vars(module).items():
                if isinstance(value, type) and value.__module__ == name:
                    self._harness[f"{name}.{attr}"] = {
                        a: v for a, v in vars(value).items() if callable(v)
                        or isinstance(v, (staticmethod, classmethod, property))}

    def check(self) -> None:
        """Violation naming the first replaced clock, harness or generator attribute."""
        import numpy.random
        time_module = sys.modules[_CLOCK[0]]
        for attr, original in self._clock.items():
            if getattr(time_module, attr, None) is not original:
                raise Violation("clock-tampering", f"time.{attr} was replaced")
        for (module, attr), original in self._objects.items():
            if getattr(sys.modules.get(module), attr, None) is not original:
                raise Violation("harness-tampering", f"{module}.{attr} was replaced")
        for attr, original in self._generator.items():
            if numpy.random.Generator.__dict__.get(attr) is not original:
                raise Violation("harness-tampering",
                                f"numpy.random.Generator.{attr} was replaced")
        for name, namespace in self._harness.items():
            owner = sys.modules.get(name)
            if owner is None:     # "module.Class": find the class in its module
                module_name, _, class_name = name.rpartition(".")
                owner = getattr(sys.modules.get(module_name), class_name, None)
            if owner is None:
                raise Violation("harness-tampering", f"{name} was removed")
            current = vars(owner)
            for attr, original in namespace.items():
                if current.get(attr) is not original:
                    raise Violation("harness-tampering", f"{name}.{attr} was replaced")


# ------------------------------------------------------------------ writes

#: audit event -> positions of the arguments naming a path it changes.
_CHANGING_EVENTS = {
    "os.rename": (0, 1), "os.remove": (0,), "os.rmdir": (0,), "os.truncate": (0,),
    "os.chmod": (0,), "os.chown": (0,), "os.utime": (0,), "os.link": (1,),
    "os.symlink": (1,), "os.mkdir": (0,), "shutil.rmtree": (0,), "shutil.move": (0, 1),
    "shutil.copyfile": (1,),
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _writes(mode, flags) -> bool:
    if isinstance(mode, str) and any(c in mode for c in "wax+"):
        return True
    return isinstance(flags, int) and flags & _WRITE_FLAGS != 0


def guard_writes(allowed_dirs, on_violation) -> None:
    """Refuse (and report) any Python-level write, rename or delete outside `allowed_dirs`.

    A submission has no business writing anywhere but its temporary folder;
    the results and the board are the files it would want to. An audit hook
    cannot be removed once added. guard_ctypes refuses libc's file functions
    through ctypes; the unprivileged user of sandbox.py (under root) is what
    stops writes from C code and from child processes.
    """
    roots = [os.path.realpath(d) for d in allowed_dirs if d]

    def allowed(path) -> bool:
        try:
            real = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return True               # a file descriptor: already open, nothing new
        return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots)

    def hook(event, args):
        if event == "open":
            paths = args[:1] if len(args) >= 3 and _writes(args[1], args[2]) else ()
        else:
            paths = [args[i] for i in _CHANGING_EVENTS.get(event, ()) if i < len(args)]
        for path in paths:
            if isinstance(path, (str, bytes, os.PathLike)) and not allowed(path):
                violation = Violation("protected-write", f"tried to write {os.fsdecode(path)} "
                                      f"({event}); a submission may write only in its "
                                      f"temporary folder")
                on_violation(violation)
                raise PermissionError(violation.reason)

    sys.addaudithook(hook)


# ------------------------------------------------------------------ ctypes

#: a BLAS or LAPACK library's file name (libscipy_openblas64_, libmkl_rt, libblis, liblapack).
_BLAS_LIBRARY = re.compile(r"openblas|mkl|blis|blas|lapack", re.IGNORECASE)
#: a BLAS routine however it is exported: sgemm_, cblas_dgemm, scipy_cblas_sdot64_, scipy_daxpy_.
_BLAS_SYMBOL = re.compile(r"cblas_|^(?:scipy_)?[sdcz](?:gemm|gemv|dot|axpy|syrk|symm|trmm|trsm)",
                          re.IGNORECASE)
#: libc functions that create, change or delete files, and the loader's own lookups (which
#: would hand out any of them, or BLAS, without another audit event).
_UNGUARDED_SYMBOL = re.compile(
    r"_*(?:open|openat|creat|fopen|freopen|truncate|rename|renameat2?|unlink|unlinkat|remove"
    r"|link|linkat|symlink|symlinkat|mkdir|mkdirat|rmdir|chmod|fchmodat|chown|lchown|fchownat"
    r"|utimes?|utimensat|mknod|mknodat|syscall|dlopen|dlmopen|dlsym|dlvsym)(?:64)?(?:_2)?")


def guard_ctypes(forbid_blas: bool, on_violation, harness_libraries=()) -> None:
    """Refuse (and report) ctypes routes around the BLAS shim and the write guard.

    Looking a BLAS routine up on the library's own handle
    (`ctypes.CDLL(numpy's openblas).scipy_cblas_sdot64_`) skips the preloaded
    shim, and libc's `open` through ctypes skips guard_writes (the only guard
    when workers keep our user, without root). Both need a `ctypes.dlopen` or
    `ctypes.dlsym` audit event, refused here. Install it after the harness's
    own ctypes use (threadpoolctl, the shim) and before the backend is
    imported: from then on every ctypes lookup is the backend's.
    `harness_libraries` are paths that are not BLAS despite their name (the shim).
    """
    exempt = {os.path.realpath(p) for p in harness_libraries}

    def blas_library(name) -> bool:
        if not isinstance(name, (str, bytes, os.PathLike)):
            return False                  # None: the process's global namespace
        path = os.fsdecode(name)
        return os.path.realpath(path) not in exempt and bool(
            _BLAS_LIBRARY.search(os.path.basename(path)))

    def refuse(name, detail):
        violation = Violation(name, detail)
        on_violation(violation)
        raise violation

    def hook(event, args):
        if event == "ctypes.dlopen":
            if forbid_blas and args and blas_library(args[0]):
                refuse("blas", f"opened the BLAS library {os.fsdecode(args[0])} through ctypes "
                               f"(directly or through threadpoolctl); the rules forbid BLAS")
        elif event in ("ctypes.dlsym", "ctypes.dlsym/handle") and len(args) >= 2:
            symbol = args[1] if isinstance(args[1], str) else ""
            library = getattr(args[0], "_name", None)
            if _UNGUARDED_SYMBOL.fullmatch(symbol):
                refuse("protected-write", f"looked up {symbol}() through ctypes; file and "
                                          f"loader calls from C skip the write guard")
            if forbid_blas and (_BLAS_SYMBOL.search(symbol) or blas_library(library)):
                refuse("blas", f"looked up {symbol or args[1]!r} in "
                               f"{library or 'a library handle'} through ctypes; the rules "
                               f"forbid BLAS")

    sys.addaudithook(hook)
