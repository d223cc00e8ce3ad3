"""A throwaway single-node Slurm cluster (munged + slurmctld + slurmd), for tests.

Everything lives in one temporary directory: a generated munge key and socket,
a generated slurm.conf (linuxproc process tracking, no cgroup plugin, no
accounting daemon), state and spool directories and the daemons' logs. The
daemons are started as root, each in a session of its own, and `stop()` kills
exactly those process groups, so nothing is left running. Commands run with
`SLURM_CONF` pointing at the generated file, so a system Slurm is never touched.

    with slurm_cluster(tmp_path) as cluster:
        array = cluster.sbatch(script)
        cluster.wait([array])
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "sinfo")
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
            "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


class SlurmUnavailable(RuntimeError):
    """Slurm cannot run here (not root, binaries missing, a daemon would not start)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_line() -> str:
    """`slurmd -C`'s description of this machine (real CPUs and memory) as a NodeName line."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    line = out.splitlines()[0]
    fields = dict(f.split("=", 1) for f in line.split())
    # Leave a little memory to the OS so slurmd never rejects its own node as too small.
    memory = max(int(int(fields["RealMemory"]) * 0.9), 1)
    return (f"NodeName={fields['NodeName']} NodeAddr=127.0.0.1 CPUs={fields['CPUs']} "
            f"Boards={fields['Boards']} SocketsPerBoard={fields['SocketsPerBoard']} "
            f"CoresPerSocket={fields['CoresPerSocket']} "
            f"ThreadsPerCore={fields['ThreadsPerCore']} RealMemory={memory} State=UNKNOWN")


class SlurmCluster:
    """The running cluster: its environment for client commands, submission and waiting."""

    def __init__(self, root: Path, partition: str = "debug"):
        self.root = Path(root)
        self.partition = partition
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        for var in [v for v in self.env if v.startswith(("SLURM_", "SBATCH_", "SQUEUE_"))]:
            if var != "SLURM_CONF":
                del self.env[var]
        self._procs: list[subprocess.Popen] = []

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> "SlurmCluster":
        if os.geteuid() != 0:
            raise SlurmUnavailable("starting munged/slurmctld/slurmd needs root")
        missing = [b for b in DAEMONS + CLIENTS + ("munge",) if shutil.which(b) is None]
        if missing:
            raise SlurmUnavailable(f"missing {', '.join(missing)} "
                                   "(apt-get install slurm-wlm munge)")
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)   # munged wants every directory above its socket searchable
        for sub in ("munge", "state", "spool", "log"):
            (self.root / sub).mkdir(exist_ok=True)
        self._start_munged()
        self._write_conf()
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf)])
        self._wait_for_idle_node(timeout)
        return self

    def stop(self) -> None:
        """Kill the daemons this cluster started (their whole process groups), newest first."""
        for proc in reversed(self._procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in reversed(self._procs):
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Job steps (slurmstepd) and the jobs' own processes outlive a killed slurmd.
        for pid in self._leftover_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._procs.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- clients ---------------------------------------------------------------------------
    def command(self, *args, check=True, timeout=30) -> subprocess.CompletedProcess:
        done = subprocess.run([str(a) for a in args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, args))} exited {done.returncode}: "
                               f"{done.stdout}{done.stderr}\n{self.logs()}")
        return done

    def sbatch(self, script: Path, *args, cwd: Path | None = None, env=None) -> str:
        """Submit a batch script (the job inherits `env`, default self.env); returns the job id."""
        done = subprocess.run(["sbatch", "--parsable", *map(str, args), str(script)],
                              env=env or self.env, capture_output=True, text=True, timeout=30,
                              cwd=cwd)
        if done.returncode != 0:
            raise RuntimeError(f"sbatch {script} failed: {done.stderr}\n{self.logs()}")
        return done.stdout.strip().split(";")[0]

    def job_states(self, job_id: str) -> dict[str, tuple[str, str]]:
        """{job id (array tasks as A_T): (state, exit code)} as the controller knows them."""
        done = self.command("scontrol", "-o", "show", "job", job_id, check=False)
        states = {}
        for line in done.stdout.splitlines():
            fields = dict(re.findall(r"(\w+)=(\S*)", line))
            if "JobId" not in fields:
                continue
            key = fields["JobId"]
            if fields.get("ArrayTaskId") and fields.get("ArrayJobId"):
                key = f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}"
            states[key] = (fields.get("JobState", "?"), fields.get("ExitCode", "?"))
        return states

    def wait(self, job_ids, timeout: float = 300) -> dict[str, tuple[str, str]]:
        """Wait until every job (and every array task) has finished; returns their states."""
        deadline = time.monotonic() + timeout
        while True:
            states = {}
            for job in job_ids:
                states.update(self.job_states(str(job)))
            # Pending array tasks share one record (e.g. 5_[2-3]) until they start: PENDING.
            if states and all(s in FINISHED for s, _ in states.values()):
                return states
            for proc in self._procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args[0]} died (exit {proc.returncode})\n"
                                       f"{self.logs()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs {job_ids} still running after {timeout:.0f}s: "
                                   f"{states}\n{self.logs()}")
            time.sleep(1)

    def logs(self, tail: int = 30) -> str:
        """The last lines of every daemon log, for failure messages."""
        parts = []
        for log in sorted((self.root / "log").glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"--- {log.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    # -- internals -------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.root / "log" / f"{name}.out.log", "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                start_new_session=True)
        log.close()
        self._procs.append(proc)
        return proc

    def _start_munged(self) -> None:
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        d = self.root / "munge"
        self._spawn("munged", [
            "munged", "--foreground", "--force", f"--key-file={key}",
            f"--socket={self.munge_socket}", f"--pid-file={d / 'munged.pid'}",
            f"--seed-file={d / 'munged.seed'}", f"--log-file={self.root / 'log' / 'munged.log'}"])
        deadline = time.monotonic() + 10
        while not self.munge_socket.exists():
            if self._procs[-1].poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SlurmUnavailable(f"munged did not start\n{self.logs()}")
            time.sleep(0.1)

    def _write_conf(self) -> None:
        r = self.root
        self.conf.write_text("\n".join([
            "# Generated for one test run: a single node, no cgroups, no accounting.",
            "ClusterName=tinytorch-test",
            "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "MpiDefault=none",
            "ReturnToService=2",
            "SchedulerType=sched/backfill",
            "MinJobAge=600",
            "InactiveLimit=0",
            "KillWait=5",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            _node_line(),
            f"PartitionName={self.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            ""]))

    def _wait_for_idle_node(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for proc in self._procs:
                if proc.poll() is not None:
                    self.stop()
                    raise SlurmUnavailable(f"{proc.args[0]} exited {proc.returncode}\n"
                                           f"{self.logs()}")
            done = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env,
                                  capture_output=True, text=True, timeout=30)
            last = (done.stdout + done.stderr).strip()
            if done.returncode == 0 and last.rstrip("*") in ("idle", "mixed", "allocated"):
                return
            time.sleep(0.5)
        self.stop()
        raise SlurmUnavailable(f"the node never became idle (sinfo: {last!r})\n{self.logs()}")

    def _leftover_pids(self) -> list[int]:
        """This cluster's job steps (slurmstepd started by our slurmd) and their descendants."""
        marker = f"SLURM_CONF={self.conf}".encode() + b"\0"
        parents, steps = {}, []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (proc / "stat").read_text()
                parents[int(proc.name)] = int(stat.rsplit(")", 1)[1].split()[1])
                if (proc / "cmdline").read_bytes().startswith(b"slurmstepd") and \
                        marker in (proc / "environ").read_bytes() + b"\0":
                    steps.append(int(proc.name))
        found, grew = set(steps), True
        while grew:
            children = {pid for pid, ppid in parents.items() if ppid in found} - found
            found |= children
            grew = bool(children)
        found.discard(os.getpid())
        return sorted(found)


@contextlib.contextmanager
def slurm_cluster(root: Path, partition: str = "debug"):
    """Start a single-node Slurm under `root`; always stop it on exit."""
    cluster = SlurmCluster(root, partition)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
