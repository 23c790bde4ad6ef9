"""Command line: ``harness run | report | compare | ensemble | predict | export | serve``
and ``harness data summary | plot-splits | cache``.

Each command group is a module here that registers its own sub-parser; this module only
assembles them (in the order ``harness --help`` lists them) and turns errors into one line.
"""
from __future__ import annotations

import argparse
import sys

from harness import __version__
from harness.cli import data, deploy, ensemble, predict, report, run
from harness.data.datasets import DatasetError

__all__ = ["build_parser", "main"]

GROUPS = (run, predict, deploy, ensemble, report, data)

EXAMPLES = """examples:
  harness run experiments/quickstart.yaml --data ../shared/datasets/UTKFace
  harness run experiments/best_utkface.yaml --dry-run
  harness report results/quickstart
  harness predict --model results/quickstart/best photo.jpg --min-age 18
  harness export results/quickstart/best --out exports/door
  harness serve --model exports/door
  harness data summary --dataset utkface --path ../shared/datasets/UTKFace

Every command has its own --help."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__.split("\n\n")[0], epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:   # `harness run` handles its own; this is every other command
        print("\nharness: interrupted", file=sys.stderr)
        return 130
    except (DatasetError, ValueError, OSError, RuntimeError) as err:
        print(f"harness: error: {err}", file=sys.stderr)
        return 2
