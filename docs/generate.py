"""Generated pages of the manual, written before ``mkdocs build`` (``make docs``) so they cannot drift:

- ``docs/reference/cli.md``: every command's ``--help``, from the argparse parser itself;
- ``docs/reference/benchmark-results.md``: the figures each benchmark wrote to
  ``benchmarks/results/NAME.json`` (date, commit, CPU, versions beside them), never retyped.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.cli import build_parser  # noqa: E402

REFERENCE = ROOT / "docs" / "reference"
RESULTS = ROOT / "benchmarks" / "results"


def _commands(parser: argparse.ArgumentParser, prefix: str):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{prefix} {name}")


def cli_reference() -> str:
    parts = ["# Command line reference", "",
             "Generated from the parser by `docs/generate.py` (`make docs`): what `--help` prints, command by command.", ""]
    for name, parser in _commands(build_parser(), "harness"):
        parser.prog = name
        parts += [f"## `{name}`", "", "```text", parser.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


def benchmark_results() -> str:
    parts = ["# Benchmark results", "",
             "Rendered by `docs/generate.py` from the JSON files the benchmarks write to `benchmarks/results/` "
             "(`python benchmarks/NAME.py ...`). Each says when, at which commit, on which CPU and with which "
             "versions it was measured.", ""]
    files = sorted(RESULTS.glob("*.json"))
    if not files:
        parts.append("No benchmark has written its results file yet.")
    for path in files:
        record = json.loads(path.read_text())
        meta = record.get("measured", {})
        parts += [f"## {path.stem}", "",
                  f"{record.get('description', '')}", "",
                  f"Measured {meta.get('date', '?')} at commit `{meta.get('commit', '?')}` on "
                  f"{meta.get('cpu', '?')} ({meta.get('cores', '?')} cores); "
                  + ", ".join(f"{k} {v}" for k, v in sorted(meta.get("versions", {}).items())) + ".", "",
                  "| figure | value |", "|---|---|"]
        for key, value in record.get("figures", {}).items():
            parts.append(f"| {key} | {value} |")
        parts.append("")
    return "\n".join(parts)


def main() -> int:
    REFERENCE.mkdir(parents=True, exist_ok=True)
    (REFERENCE / "cli.md").write_text(cli_reference())
    (REFERENCE / "benchmark-results.md").write_text(benchmark_results())
    print(f"wrote {REFERENCE / 'cli.md'} and {REFERENCE / 'benchmark-results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
