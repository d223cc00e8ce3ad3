"""The `tinytorch` command: one subcommand per concern, each implemented beside it.

Every command module provides `add_arguments(parser)` and `run(args) -> int`.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# (command, module implementing it, one-line help)
COMMANDS = (
    ("backends", "tinytorch.backends.listing", "list registered backends and whether they load"),
    ("compete", "tinytorch.arena.compete", "run the competition and publish the leaderboard"),
    ("leaderboard", "tinytorch.arena.leaderboard_cmd", "re-render the leaderboard from result files; --csv for a gradebook"),
    ("check", "tinytorch.testing", "check a backend against the contract; --bench also times it"),
    ("new-submission", "tinytorch.scaffold", "create a ready-to-build backend package for a student"),
)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = argparse.ArgumentParser(
        prog="tinytorch",
        description="tinytorch: pluggable compute backends, their checks and the competition.")
    parser.add_argument("--version", action="version", version=f"tinytorch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name, help_text in COMMANDS:
        module = importlib.import_module(module_name)
        sub = commands.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
