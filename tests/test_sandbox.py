"""The arena's boundary, piece by piece (the whole hostile field: test_hostile.py).

- the sandbox: an unprivileged user with no capabilities, no network, its own
  processes only, a read-only file system without the instructor's files, a
  private /tmp that vanishes, no way back to a user namespace; the same as an
  ordinary user;
- freezing: a frozen worker does not run, and CPU time it gains anyway is named;
  nothing it starts outlives it;
- the BLAS guard: armed by the parent, it kills the worker on the first BLAS or
  LAPACK call and tells the parent which, whatever the worker does to its
  environment; numpy's own import-time call before arming is fine;
- the parent's reads: stderr kept as a capped tail, a folder's FIFOs, symlinks
  and huge files never opened, compiled extensions checked for forbidden imports;
- the parent never runs submission code: `tinytorch compete` lists contestants
  without importing them.
"""
from __future__ import annotations

import functools
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import skip_or_fail
from fixtures import hostile_field
from fixtures.plugins import add_distribution, python
from tinytorch.arena import cgroups, sandbox, submission_files, violations
from tinytorch.arena.runner import WorkerFailure, spawn_worker
from tinytorch.arena.sandbox import Limits, Sandbox


@pytest.fixture(autouse=True, scope="module")
def _bubblewrap():
    if shutil.which("bwrap") is None:
        skip_or_fail("bubblewrap is needed for the sandbox (apt-get install bubblewrap)")


def _in_sandbox(code: str, limits=Limits(allow_blas=True), **kwargs) -> sandbox.Finished:
    return sandbox.run_confined([sys.executable, "-c", textwrap.dedent(code)], limits,
                                timeout=60, **kwargs)


PROBE = """
    import os, socket, subprocess
    def attempt(label, action):
        try:
            print(label, action())
        except Exception as exc:
            print(label, type(exc).__name__)
    attempt("uid", os.getuid)
    attempt("caps", lambda: [l.split()[1] for l in open("/proc/self/status")
                             if l.startswith(("CapEff", "CapPrm", "CapBnd"))])
    attempt("nonewprivs", lambda: [l.split()[1] for l in open("/proc/self/status")
                                   if l.startswith("NoNewPrivs")][0])
    attempt("secret", lambda: open({secret!r}).read())
    attempt("shadow", lambda: open("/etc/shadow").read())
    attempt("home", lambda: sorted(os.listdir({home!r})))
    attempt("write", lambda: open({outside!r}, "w").write("x"))
    attempt("tmp", lambda: open("/tmp/scratch", "w").write("fine"))
    attempt("processes", lambda: len([p for p in os.listdir("/proc") if p.isdigit()]))
    attempt("network", lambda: socket.create_connection(("1.1.1.1", 53), timeout=2))
    attempt("userns", lambda: subprocess.run(["unshare", "-U", "true"]).returncode)
"""


@pytest.fixture
def probe_answers(tmp_path):
    """The probe's answers in a sandbox, as root when we are root."""
    return _probe(tmp_path)


def _probe(tmp_path, uid=None):
    home = Path("/root") if os.geteuid() == 0 else Path.home()
    secret = home / f"tinytorch-sandbox-secret-{os.getpid()}"
    secret.write_text("the instructor's own")
    os.chmod(secret, 0o600)
    outside = tmp_path / "written-from-the-sandbox"
    os.chmod(tmp_path, 0o777)
    code = PROBE.format(secret=str(secret), home=str(home), outside=str(outside))
    try:
        if uid is None:
            done = _in_sandbox(code)
            out = done.stdout.decode()
        else:   # the whole parent as an unprivileged user, its script where that user can read
            script = Path(tempfile.mkdtemp(prefix="tinytorch-probe-")) / "probe.py"
            os.chmod(script.parent, 0o755)
            script.write_text(f"""
import sys, textwrap
from tinytorch.arena import sandbox
done = sandbox.run_confined([sys.executable, "-c", textwrap.dedent({code!r})],
                            sandbox.Limits(allow_blas=True), timeout=60)
sys.stdout.write(done.stdout.decode() + done.stderr_tail.decode())
""")
            os.chmod(script, 0o644)
            argv = hostile_field.as_user([sys.executable, str(script)], uid, [])
            out = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                                 env={**os.environ, "HOME": str(script.parent)}).stdout
            shutil.rmtree(script.parent)
    finally:
        secret.unlink()
    answers = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    answers["outside_written"] = outside.exists()
    return answers


def _assert_confined(answers):
    assert int(answers["uid"]) != 0, answers
    assert answers["caps"] == "['0000000000000000', '0000000000000000', '0000000000000000']" \
        or answers["caps"].count("0000000000000000") == 3, answers
    assert answers["nonewprivs"] == "1"
    assert answers["secret"] in ("FileNotFoundError", "PermissionError"), answers
    assert answers["shadow"] in ("FileNotFoundError", "PermissionError"), answers
    if answers["home"] not in ("FileNotFoundError", "PermissionError"):
        # only the way to the Python installation, when it lives in the home folder
        home = Path("/root") if os.geteuid() == 0 else Path.home()
        leading = sorted({Path(p).relative_to(home).parts[0] for p in sandbox.runtime_paths()
                          if Path(p).is_relative_to(home)})
        assert answers["home"] == str(leading), answers
    assert answers["write"] in ("FileNotFoundError", "PermissionError", "OSError"), answers
    assert not answers["outside_written"]
    assert answers["tmp"] == "4"
    assert int(answers["processes"]) <= 3, answers      # bwrap's init, python, the probe
    assert answers["network"] in ("OSError", "TimeoutError", "ConnectionRefusedError"), answers
    assert answers["userns"] not in ("0",), answers


def test_the_sandbox_confines_a_worker(probe_answers):
    _assert_confined(probe_answers)


def test_the_sandbox_confines_the_same_as_an_ordinary_user(tmp_path):
    uid = hostile_field.UNPRIVILEGED_UID if os.geteuid() == 0 else None
    _assert_confined(_probe(tmp_path, uid))


def test_a_worker_sees_its_own_package_but_not_the_others_or_the_results(tmp_path, monkeypatch):
    site = tmp_path / "site"
    mine, theirs, results = site / "mine", site / "theirs", tmp_path / "results"
    for folder in (mine, theirs, results):
        folder.mkdir(parents=True)
        (folder / "file.txt").write_text("here")
    for path in [tmp_path, *tmp_path.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    monkeypatch.setenv("PYTHONPATH", str(site))      # the site folder, as a --target install
    done = _in_sandbox(f"""
        import os
        for folder in {[str(mine), str(theirs), str(results)]!r}:
            print(os.path.basename(folder), os.path.exists(os.path.join(folder, "file.txt")))
    """, own_paths=[str(mine)], hidden_paths=[str(theirs), str(results)])
    assert done.stdout.decode().split() == ["mine", "True", "theirs", "False", "results", "False"]


# ------------------------------------------------------------------ freezing and ending

BUSY = """
    import threading, time
    def spin():
        while True:
            sum(range(10000))
    threading.Thread(target=spin, daemon=True).start()
    time.sleep(600)
"""


def test_a_frozen_worker_does_not_run_and_cpu_gained_while_frozen_is_named():
    with Sandbox(Limits(allow_blas=True, threads=2)) as box:
        box.spawn([sys.executable, "-c", textwrap.dedent(BUSY)])
        time.sleep(0.5)
        box.freeze()
        before = box.cpu_seconds()
        time.sleep(0.5)
        assert box.cpu_seconds() - before < 0.02, "a frozen worker kept running"
        box.thaw()
        assert box.violation is None
        time.sleep(0.2)
        box.freeze()
        for pid in box.members():        # as if a process had escaped the freeze
            os.kill(pid, 18)             # SIGCONT
        if box.group is not None:
            box.group.thaw()
        time.sleep(0.5)
        box.thaw()
        assert box.violation is not None and box.violation.name == "interference"
        assert "worked while another backend was timed" in box.violation.reason


def test_nothing_a_worker_starts_outlives_it():
    with Sandbox(Limits(allow_blas=True)) as box:
        box.spawn([sys.executable, "-c", textwrap.dedent("""
            import os, time
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    time.sleep(600)
                os._exit(0)
            time.sleep(600)
        """)])
        deadline = time.monotonic() + 30
        while len(box.members()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        tree = box.members()
        assert len(tree) >= 3, tree
    assert not [pid for pid in tree if os.path.exists(f"/proc/{pid}")
                and open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]


def _alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_sandbox_that_never_reports_its_pid_1_leaves_no_process(tmp_path, monkeypatch):
    """bubblewrap's child can hang before it binds itself to its parent's death (an
    upstream start-up race); a start that times out must still end that child."""
    fake = tmp_path / "bin" / "bwrap"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n(trap '' HUP TERM; exec sleep 600) &\necho $! > "
                    f"{tmp_path}/child\nexec sleep 600\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(Sandbox, "_read_child_pid",
                        functools.partialmethod(Sandbox._read_child_pid, timeout=2))
    with Sandbox(Limits(allow_blas=True)) as box:
        with pytest.raises(sandbox.SandboxUnavailable, match="did not start"):
            box.spawn(["true"])
        stuck = int((tmp_path / "child").read_text())
        groups = list(box.group.dirs.values()) if box.group else []
    assert not _alive(stuck)
    assert not [d for d in groups if os.path.exists(d)]


def test_groups_left_by_a_killed_competition_are_swept_by_the_next(tmp_path):
    """`kill -9` of a competition leaves its cgroups (and, in bubblewrap's start-up race,
    a process in them); the next competition that creates groups removes them."""
    probe = cgroups.WorkerGroup.create(1 << 30, 64)
    if probe is None:
        pytest.skip("needs cgroup v1 groups this process may create (root)")
    probe.destroy()
    gone = subprocess.Popen(["true"])
    gone.wait()                                  # a parent pid that no longer runs
    left = {c: os.path.join(parent, f"tinytorch-worker-{gone.pid}-0")
            for c, parent in cgroups.parent_dirs().items()}
    stuck = subprocess.Popen(["sh", "-c", "trap '' HUP TERM; exec sleep 600"])
    for path in left.values():
        os.mkdir(path)
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(stuck.pid))
    group = cgroups.WorkerGroup.create(1 << 30, 64)
    try:
        assert stuck.wait(timeout=10) == -9
        assert not [path for path in left.values() if os.path.exists(path)]
    finally:
        group.destroy()
        stuck.kill()


def test_the_watchdog_names_a_process_bomb():
    with Sandbox(Limits(allow_blas=True, processes=3)) as box:
        box.spawn([sys.executable, "-c", textwrap.dedent("""
            import os, time
            for _ in range(6):
                if os.fork() == 0:
                    time.sleep(600)
            time.sleep(600)
        """)])
        deadline = time.monotonic() + 30
        while box.check() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert box.violation is not None and box.violation.name == "too-many-processes"


def _resident_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_a_flood_on_stderr_is_kept_as_a_capped_tail(tmp_path, monkeypatch):
    from tinytorch.arena.runner import TAIL_BYTES
    (tmp_path / "flood.py").write_text(textwrap.dedent("""
        import sys
        from tinytorch.backends.naive import NaiveBackend
        class Flood(NaiveBackend):
            def __init__(self):
                for _ in range(300 << 10):
                    sys.stderr.write("x" * 1023 + "\\n")
                sys.stderr.write("the last words\\n")
    """))
    os.chmod(tmp_path, 0o755)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    before = _resident_kb()
    worker = spawn_worker(Limits(wall_time_s=60))
    try:
        worker.request({"op": "load", "entry_point": "flood:Flood"})
        grew = _resident_kb() - before
        tail = bytes(worker._tail)
    finally:
        worker.close()
    assert len(tail) <= TAIL_BYTES and tail.endswith(b"the last words\n")
    assert grew < 100 << 10, f"the parent grew by {grew} kB while the worker wrote 300 MB"


# ------------------------------------------------------------------ the BLAS guard

BLAS_CALLS = {
    "matmul": ("a @ a", "scipy_cblas_sgemm64_"),
    "dot": ("a.dot(a[:, 0])", "scipy_cblas_sgemv64_"),
    "einsum-optimize": ("np.einsum('ik,kj->ij', a, a, optimize=True)", "gemm"),
    "complex": ("a.astype(np.complex64) @ a.astype(np.complex64)", "scipy_cblas_cgemm64_"),
    "lapack": ("np.linalg.solve(a + 8 * np.eye(8, dtype=a.dtype), a)", "_64_"),
    "ctypes": ("ctypes.CDLL(glob.glob(os.path.join(os.path.dirname(np.__file__), '..', "
               "'numpy.libs', 'libscipy_openblas64_*'))[0])", "ctypes.CDLL(libscipy_openblas64_"),
}


@pytest.fixture(scope="module")
def guarded_worker_module(tmp_path_factory):
    """A module whose backend runs one BLAS route chosen by an environment-free file."""
    folder = tmp_path_factory.mktemp("blasroutes")
    routes = "\n".join(f"    {name!r}: lambda a: {code}," for name, (code, _) in BLAS_CALLS.items())
    (folder / "blas_routes.py").write_text(
        "import ctypes, glob, os\nimport numpy as np\n"
        "from tinytorch.backends.naive import NaiveBackend\n\n"
        f"ROUTES = {{\n{routes}\n}}\n\n"
        "class Route(NaiveBackend):\n"
        "    route = None\n"
        "    def matmul(self, a, b):\n"
        "        os.environ['TINYTORCH_GUARD_DIR'] = '/tmp/elsewhere'\n"
        "        ROUTES[self.route](a)\n"
        "        return super().matmul(a, b)\n\n"
        + "".join(f"class R{i}(Route):\n    route = {name!r}\n\n"
                  for i, name in enumerate(BLAS_CALLS)))
    os.chmod(folder, 0o755)
    os.chmod(folder / "blas_routes.py", 0o644)
    return folder


@pytest.mark.parametrize("index,route", list(enumerate(BLAS_CALLS)))
def test_the_guard_kills_every_route_to_blas_and_names_it(guarded_worker_module, monkeypatch,
                                                          index, route):
    monkeypatch.setenv("PYTHONPATH", str(guarded_worker_module))
    worker = spawn_worker(Limits(wall_time_s=60))
    try:
        worker.request({"op": "load", "entry_point": f"blas_routes:R{index}"})
        a = np.ones((8, 8), np.float32)
        with pytest.raises(WorkerFailure) as caught:
            worker.run("matmul", {"m": 8, "k": 8, "n": 8}, [[a, a]], [((8, 8), "float32")])
    finally:
        worker.close()
    assert caught.value.status == "violation"
    assert caught.value.reason.startswith("rule violation: blas: called ")
    assert BLAS_CALLS[route][1] in caught.value.reason


def test_without_the_guard_blas_runs_and_is_correct(guarded_worker_module, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(guarded_worker_module))
    worker = spawn_worker(Limits(wall_time_s=60, allow_blas=True))
    try:
        worker.request({"op": "load", "name": "numpy"})
        a = np.arange(64, dtype=np.float32).reshape(8, 8)
        _, (outputs,) = worker.run("matmul", {"m": 8, "k": 8, "n": 8}, [[a, a]],
                                   [((8, 8), "float32")])
    finally:
        worker.close()
    assert np.allclose(outputs[0], a @ a)


def test_a_process_started_with_its_own_preload_is_stopped(tmp_path):
    """LD_PRELOAD would put a library's own definitions before the guard's."""
    done = _in_sandbox("""
        import os, subprocess, sys
        env = dict(os.environ, LD_PRELOAD="/usr/lib/x86_64-linux-gnu/libm.so.6")
        print(subprocess.run([sys.executable, "-c", "print('ran')"], env=env,
                             capture_output=True, text=True).returncode)
    """, limits=Limits())     # guarded, never armed: the check is at load
    assert done.stdout.decode().split() == ["-9"], done


# ------------------------------------------------------------------ the parent's reads

def test_the_code_hash_never_opens_fifos_or_follows_links_out(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "kernels.py").write_text("x = 1\n")
    os.mkfifo(tmp_path / "fifo")
    os.mkfifo(package / "trap.py")
    (package / "link.py").symlink_to(tmp_path / "fifo")
    (package / "outside.py").symlink_to("/etc/hostname")
    (package / "loop").symlink_to(package)
    started = time.monotonic()
    digest = submission_files.files_hash(str(package))
    assert time.monotonic() - started < 5 and digest
    (package / "kernels.py").write_text("x = 2\n")
    assert submission_files.files_hash(str(package)) != digest


def test_huge_files_are_skipped_not_read(tmp_path, monkeypatch):
    monkeypatch.setattr(submission_files, "MAX_FILE_BYTES", 1 << 10)
    (tmp_path / "big.py").write_bytes(b"#" * (1 << 12))
    (tmp_path / "small.py").write_text("y = 1\n")
    budget = submission_files._Budget()
    read = dict(submission_files._regular_files(str(tmp_path), (".py",), budget))
    assert list(read) == ["small.py"] and budget.skipped == ["big.py"]


@pytest.mark.parametrize("imports,named", [
    ("extern void sgemm_(void); void f(void) { sgemm_(); }", "sgemm_ (BLAS/LAPACK)"),
    ("#include <dlfcn.h>\nvoid *f(void) { return dlopen(\"x\", 0); }", "dlopen (run-time"),
    ("#include <sys/mman.h>\nint f(void *p) { return mprotect(p, 1, 0); }", "mprotect (changing"),
    ("int f(int x) { return x + 1; }", None),
])
def test_the_static_check_names_forbidden_imports_of_compiled_extensions(tmp_path, imports, named):
    if shutil.which("gcc") is None:
        skip_or_fail("gcc is needed to build the fixture extension")
    (tmp_path / "ext.c").write_text(imports + "\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(tmp_path / "_ext.so"),
                    str(tmp_path / "ext.c")], check=True)
    found = submission_files.forbidden_imports(str(tmp_path))
    if named is None:
        assert found == []
    else:
        assert len(found) == 1 and found[0].startswith("_ext.so: ") and named in found[0]


def test_outputs_sharing_memory_are_named():
    a, b = np.ones((4, 4)), np.ones((4, 4))
    violations.check_fresh([np.ones(3), np.ones(3)], [a, b])
    for outputs in ([a], [b[1:]], [np.ones(3)] * 2):
        with pytest.raises(violations.Violation) as info:
            violations.check_fresh(outputs, [a, b])
        assert info.value.name == "aliasing"


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


def test_without_bubblewrap_compete_refuses_and_says_how_to_install(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("prlimit", "setpriv", "sh"):
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    done = python("""
        import sys
        from tinytorch.cli import main
        sys.exit(main(["compete", "--quick", "--results-dir", "r", "--board-dir", "b"]))
    """, PATH=str(bin_dir))
    assert done.returncode == 2, done.stderr
    assert "bubblewrap" in done.stderr and "apt-get install bubblewrap" in done.stderr
    assert "--unsandboxed" in done.stderr
