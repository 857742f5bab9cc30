"""The `pinrel` command. Each subcommand lives in `pinrel.commands.<name>` and registers itself."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Order is the order in `pinrel --help`, which follows the data flow.
COMMANDS = ("data", "teacher", "candidates", "label", "embed", "distill", "serve", "eval")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="pinrel", description="Search relevance: teacher, labels, student, serving."
    )
    parser.add_argument("--version", action="version", version=f"pinrel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"pinrel.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"pinrel.commands.{name}":
                continue  # a stage not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .jobs import run_entrypoint

    return run_entrypoint(f"pinrel {args.command}", lambda: int(args.func(args) or 0))


if __name__ == "__main__":
    sys.exit(main())
