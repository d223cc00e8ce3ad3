"""`tinytorch leaderboard`: re-render the board from result files, or export scores as CSV.

Several files merge into one board (runs on identical machines, shards of
one run); `--csv` prints name,score,rank of every candidate for a gradebook
(unranked candidates have an empty score and rank).
"""
from __future__ import annotations

import csv
import glob
import os
import sys

from .board import ranked_rows, render
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


def write_csv(board, stream) -> None:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(["name", "score", "rank"])
    for row in ranked_rows(board):
        if not row.get("reference"):
            score = "" if row["score"] is None or not row["ranked"] else f"{row['score']:.6g}"
            writer.writerow([row["name"], score, row["rank"] or ""])


def run(args) -> int:
    paths = args.files or sorted(glob.glob(os.path.join(args.results_dir, "*.json")))
    if not paths:
        print(f"tinytorch leaderboard: no result files given and none in {args.results_dir}; "
              f"run `tinytorch compete` first", file=sys.stderr)
        return 2
    try:
        files = load_all(paths)
        if args.csv:
            write_csv(merge(files), sys.stdout)
            return 0
        render(files, args.board_dir)
    except ResultsError as exc:
        print(f"tinytorch leaderboard: {exc}", file=sys.stderr)
        return 2
    print(f"board written to {os.path.join(args.board_dir, 'README.md')} and "
          f"{os.path.join(args.board_dir, 'index.html')} from {len(paths)} file(s)")
    return 0
