"""The pieces the arena's enforcement is built from, one at a time (the whole run: test_hostile.py).

- blasguard: the LD_PRELOAD shim sees BLAS reached from numpy's C code and
  changes no result; without it (the numpy reference) nothing is counted.
- sandbox: the worker gets pinned threads and, under root, a user of its own
  that cannot write our files; close() leaves no process behind, not even a
  grandchild that escaped into a session of its own.
- rules: aliasing, tampering and writes outside the worker's folder are named;
  ctypes lookups of BLAS (past the shim) and of libc's file functions are refused.
- the parent never runs submission code: `tinytorch compete` lists contestants
  without importing them (an import-time attack would run as the parent).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from fixtures.plugins import add_distribution, python
from tinytorch.arena import blasguard, rules, sandbox

BLAS_SCRIPT = """
    import numpy as np
    from tinytorch.arena import blasguard
    print("armed", blasguard.arm())
    a = np.arange(36, dtype=np.float32).reshape(6, 6)
    expected = np.einsum("ik,kj->ij", a.astype(np.float64), a.astype(np.float64))
    print("einsum", blasguard.calls())
    c = a @ a
    print("matmul", blasguard.calls())
    d = a.dot(a)
    print("dot", blasguard.calls(), blasguard.last_symbol())
    print("same", bool(np.allclose(c, expected) and np.allclose(d, expected)))
"""


def _python(script, env):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_blasguard_counts_blas_reached_from_c_and_changes_nothing():
    done = _python(BLAS_SCRIPT, blasguard.worker_env(os.environ, allow_blas=False))
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert done.returncode == 0, done.stderr
    assert lines["armed"] == "True"
    assert lines["einsum"] == "0"                    # einsum without optimize is not BLAS
    assert lines["matmul"] == "1"
    assert lines["dot"].startswith("2 ") and "gemm" in lines["dot"]
    assert lines["same"] == "True"
    assert blasguard.reported_symbols(done.stderr), done.stderr   # told the parent too


@pytest.mark.parametrize("call", ["np.einsum('ik,kj->ij', a, a, optimize=True)",
                                  "np.tensordot(a, a, 1)", "a @ a[:, 0]", "a @ a.T",
                                  "scipy_blas.sgemm(1.0, a, a)"])
def test_blasguard_sees_every_route_to_blas(call):
    if "scipy" in call:
        pytest.importorskip("scipy.linalg")
    done = _python(f"""
        import numpy as np
        from tinytorch.arena import blasguard
        {"from scipy.linalg import blas as scipy_blas" if "scipy" in call else ""}
        blasguard.arm()
        a = np.ones((8, 8), np.float32)
        {call}
        print(blasguard.calls())
    """, blasguard.worker_env(os.environ, allow_blas=False))
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 1, f"{call} reached BLAS unseen"


def test_without_the_shim_nothing_is_counted():
    done = _python(BLAS_SCRIPT, blasguard.worker_env(os.environ, allow_blas=True))
    assert done.returncode == 0, done.stderr
    assert "armed False" in done.stdout and "matmul 0" in done.stdout
    assert blasguard.reported_symbols(done.stderr) == []


CTYPES_SCRIPT = """
    import _ctypes, ctypes, glob, os
    import numpy as np
    from tinytorch.arena import blasguard, rules
    openblas = glob.glob(os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs",
                                      "libscipy_openblas64_*"))[0]
    os.symlink(openblas, {renamed!r})              # a name that does not say BLAS
    seen, forbid = [], blasguard.arm()
    rules.guard_ctypes(forbid, seen.append, [blasguard.library_path()] if forbid else ())
    def attempt(label, lookup):
        try:
            lookup()
            print(label, "allowed")
        except rules.Violation as violation:
            print(label, violation.name)
    attempt("dlopen", lambda: ctypes.CDLL(openblas))
    attempt("renamed", lambda: ctypes.CDLL({renamed!r}).scipy_cblas_sdot64_)
    attempt("handle", lambda: _ctypes.dlsym(ctypes.CDLL({renamed!r})._handle, "scipy_cblas_sgemm64_"))
    attempt("libc-open", lambda: ctypes.CDLL(None).open)
    attempt("libc-dlsym", lambda: ctypes.CDLL(None).dlsym)
    attempt("libc-getpid", lambda: ctypes.CDLL(None).getpid)
    print("recorded", ",".join(v.name for v in seen))
"""


@pytest.mark.parametrize("allow_blas", [False, True])
def test_ctypes_routes_around_the_shim_and_the_write_guard_are_refused(tmp_path, allow_blas):
    script = CTYPES_SCRIPT.format(renamed=str(tmp_path / "libinnocent.so"))
    done = _python(script, blasguard.worker_env(os.environ, allow_blas=allow_blas))
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    blas = "allowed" if allow_blas else "blas"
    assert (lines["dlopen"], lines["renamed"], lines["handle"]) == (blas, blas, blas)
    assert lines["libc-open"] == lines["libc-dlsym"] == "protected-write"
    assert lines["libc-getpid"] == "allowed"
    assert lines["recorded"].split(",") == [blas] * 3 * (not allow_blas) + ["protected-write"] * 2


def _spawn(box, code, **kwargs):
    return box.spawn([sys.executable, "-c", textwrap.dedent(code)], dict(os.environ),
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_worker_threads_are_pinned_and_root_is_dropped(tmp_path):
    protected = tmp_path / "board.md"
    protected.write_text("before")
    os.chmod(tmp_path, 0o755)
    with sandbox.Sandbox(sandbox.Limits(threads=2)) as box:
        proc = _spawn(box, f"""
            import os
            print(os.environ["OMP_NUM_THREADS"], os.environ["OPENBLAS_NUM_THREADS"], os.getuid())
            try:
                open({str(protected)!r}, "a").write("forged")
            except OSError as exc:
                print(type(exc).__name__)
        """)
        out, err = proc.communicate(timeout=60)
    threads_omp, threads_blas, uid, *rest = out.split()
    assert (threads_omp, threads_blas) == ("2", "2"), err
    if os.geteuid() == 0:
        assert int(uid) == box.uid and box.uid != 0
        assert rest == ["PermissionError"] and protected.read_text() == "before"


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_close_kills_escaped_grandchildren_and_reaps_them():
    with sandbox.Sandbox() as box:
        proc = _spawn(box, """
            import os, sys, time
            if os.fork() == 0:
                os.setsid()                      # leave the worker's session ...
                if os.fork() == 0:
                    time.sleep(600)              # ... and be orphaned
                os._exit(0)
            time.sleep(0.5)
            print(os.getpid(), flush=True)
            time.sleep(600)
        """)
        deadline = time.monotonic() + 30
        while len(box.members()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        tree = [p.pid for p in box.members()]
        assert proc.pid in tree and len(tree) >= 2, tree
    assert not [pid for pid in tree if _alive(pid)], "a process of the worker survived close()"
    assert proc.returncode is not None


def test_watchdog_names_a_process_bomb():
    with sandbox.Sandbox(sandbox.Limits(processes=3)) as box:
        _spawn(box, """
            import os, time
            for _ in range(6):
                if os.fork() == 0:
                    time.sleep(600)
            time.sleep(600)
        """)
        deadline = time.monotonic() + 30
        while box.check() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert box.violation is not None and box.violation.name == "too-many-processes"
    assert box.proc.returncode is not None


def test_outputs_sharing_memory_are_named():
    a, b = np.ones((4, 4)), np.ones((4, 4))
    rules.check_fresh([np.ones(3), np.ones(3)], [a, b])          # fresh arrays pass
    for outputs in ([a], [b[1:]], [np.ones(3)] * 2):
        with pytest.raises(rules.Violation) as info:
            rules.check_fresh(outputs, [a, b])
        assert info.value.name == "aliasing"


def test_replacing_the_clock_or_the_generator_is_named(monkeypatch):
    integrity = rules.Integrity()
    integrity.check()
    monkeypatch.setattr(time, "perf_counter", lambda: 0.0)
    with pytest.raises(rules.Violation, match="clock-tampering: time.perf_counter"):
        integrity.check()
    monkeypatch.undo()
    monkeypatch.setattr(np.random, "default_rng", lambda seed=None: None)
    with pytest.raises(rules.Violation, match="harness-tampering: numpy.random.default_rng"):
        integrity.check()


def test_writes_outside_the_workers_folder_are_refused_and_named(tmp_path):
    script = f"""
        import os
        from tinytorch.arena import rules
        seen = []
        rules.guard_writes([{str(tmp_path / "home")!r}], seen.append)
        os.makedirs({str(tmp_path / "home")!r}, exist_ok=True)
        open({str(tmp_path / "home" / "cache.bin")!r}, "w").write("fine")
        try:
            open({str(tmp_path / "results.json")!r}, "w")
        except PermissionError:
            pass
        print(seen[0].name if seen else "missed")
    """
    done = _python(script, dict(os.environ))
    assert done.stdout.strip() == "protected-write", done.stderr
    assert not (tmp_path / "results.json").exists()


def test_compete_lists_contestants_without_running_their_code(tmp_path):
    marker = tmp_path / "imported"
    site = add_distribution(tmp_path / "site", "sneaky-plugin", {"sneaky": "sneaky.kernels:Backend"},
                            {"sneaky/__init__.py": f"open({str(marker)!r}, 'w').write('ran')\n",
                             "sneaky/kernels.py": "raise SystemExit('never imported here')\n"})
    done = python("""
        from tinytorch.arena.compete import contestants
        (entry,) = [c for c in contestants(["sneaky"]) if c.name == "sneaky"]
        print(entry.provenance["location"])
    """, site)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("sneaky")      # located all the same
    assert not marker.exists(), "compete ran a submission's code in the parent process"
