"""`tinytorch leaderboard`: re-render the board from result files, or export grades.

Several files merge into one board (runs on identical machines, shards of
one run); `--csv` prints name,score,rank of every candidate for a gradebook
(unranked candidates have an empty score and rank); `--gradescope DIR` writes
one Gradescope results.json per candidate (grades.py). Either export replaces
rendering.
"""
from __future__ import annotations

import glob
import os
import sys

from .board import render
from .grades import GRADESCOPE_FILE, write_csv, write_gradescope
from .merging import load_all, merge
from .results import ResultsError


def add_arguments(parser):
    parser.add_argument("files", nargs="*", metavar="RESULT_FILE",
                        help="run files to merge (default: every *.json in --results-dir)")
    parser.add_argument("--results-dir", default=os.path.join("leaderboard", "results"))
    parser.add_argument("--board-dir", default="leaderboard",
                        help="where README.md and index.html are written")
    parser.add_argument("--csv", action="store_true",
                        help="print name,score,rank for a gradebook instead of rendering")
    parser.add_argument("--gradescope", metavar="DIR",
                        help=f"write DIR/<backend>/{GRADESCOPE_FILE} in Gradescope's format "
                             f"per candidate instead of rendering")


def _export(args, files) -> None:
    board = merge(files)
    if args.csv:
        write_csv(board, sys.stdout)
    if args.gradescope:
        written = write_gradescope(board, args.gradescope)
        report = sys.stderr if args.csv else sys.stdout     # stdout may be the CSV
        print(f"{len(written)} {GRADESCOPE_FILE} file(s) written under {args.gradescope}",
              file=report)
        for name, path in written:
            if os.path.basename(os.path.dirname(path)) != name:    # a name outside [a-z0-9_-]
                print(f"  {name} -> {path}", file=report)


def run(args) -> int:
    paths = args.files or sorted(glob.glob(os.path.join(args.results_dir, "*.json")))
    if not paths:
        print(f"tinytorch leaderboard: no result files given and none in {args.results_dir}; "
              f"run `tinytorch compete` first", file=sys.stderr)
        return 2
    try:
        files = load_all(paths)
        if args.csv or args.gradescope:
            _export(args, files)
            return 0
        render(files, args.board_dir)
    except ResultsError as exc:
        print(f"tinytorch leaderboard: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"tinytorch leaderboard: cannot write {exc.filename}: {exc.strerror}",
              file=sys.stderr)
        return 2
    print(f"board written to {os.path.join(args.board_dir, 'README.md')} and "
          f"{os.path.join(args.board_dir, 'index.html')} from {len(paths)} file(s)")
    return 0
