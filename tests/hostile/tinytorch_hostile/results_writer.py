"""Tries to rewrite the run's results and the board from inside its worker.

It finds them the way a clever student would: the parent's command line
(--results-dir, --board-dir) read relative to the parent's working folder,
falling back to its ./leaderboard.
"""
import glob
import os

from .honest import Honest


def _targets():
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
            argv = f.read().decode().split("\0")
    except OSError:
        argv = []
    parent_cwd = f"/proc/{os.getppid()}/cwd"
    dirs = [os.path.join(parent_cwd, argv[i + 1]) for i, arg in enumerate(argv[:-1])
            if arg in ("--results-dir", "--board-dir")] or [os.path.join(parent_cwd, "leaderboard")]
    files = [p for d in dirs for p in glob.glob(os.path.join(d, "*"))
             if os.path.isfile(p)]
    return dirs, files


class ResultsWriter(Honest):
    def __init__(self):
        self.attempts = []
        dirs, files = _targets()
        for path in files:
            try:
                with open(path, "a") as f:
                    f.write('\n"hostile_writer": "rank 1"\n')
            except OSError as exc:
                self.attempts.append(repr(exc))
        for folder in dirs:
            try:
                with open(os.path.join(folder, "forged.json"), "w") as f:
                    f.write("{}")
            except OSError as exc:
                self.attempts.append(repr(exc))
