"""Generated pages of the manual, written before ``mkdocs build`` (``make docs``) so they cannot drift:

- ``docs/index.md``: the README, its links made relative to ``docs/``;
- ``docs/reference/cli.md``: every command's ``--help``, from the argparse parser itself;
- ``docs/reference/benchmarks.md``: what each benchmark measures (its docstring) and the
  figures it wrote to ``benchmarks/results/NAME.json`` (date, commit, CPU, versions beside
  them), never retyped.

Both are committed, so that links to them work outside the site too; ``--check`` fails
when one is out of date (the test suite runs it).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

os.environ["COLUMNS"] = "100"   # argparse wraps help to the terminal: the same page on every machine

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


def benchmark_page() -> str:
    import ast

    parts = ["# Benchmarks", "",
             "Speed, memory and parity are measured by the scripts in `benchmarks/`, never asserted by tests. Each "
             "prints its figures, as ratios against a baseline measured in the same run where there is one, and "
             "writes them to `benchmarks/results/NAME.json` with the date, commit, CPU and versions; this page is "
             "rendered from those files by `docs/generate.py`. Figures measured before the scripts wrote files are "
             "in the benchmark log of `CHANGELOG.md`.", ""]
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        if script.stem == "record":
            continue
        doc = ast.get_docstring(ast.parse(script.read_text())) or ""
        parts += [f"## `{script.stem}`", "", doc.strip(), ""]
        result = RESULTS / f"{script.stem}.json"
        # A script run with an option that changes what it measures writes NAME_OPTION.json.
        variants = sorted(RESULTS.glob(f"{script.stem}_*.json"))
        if not result.is_file() and not variants:
            parts += [f"*Not measured since it writes `benchmarks/results/{script.stem}.json`.*", ""]
            continue
        for path in ([result] if result.is_file() else []) + variants:
            parts += _measurement(path)
    return "\n".join(parts)


def _measurement(path: Path) -> list[str]:
    record = json.loads(path.read_text())
    meta = record.get("measured", {})
    versions = ", ".join(f"{k} {v}" for k, v in sorted(meta.get("versions", {}).items()))
    lines = [f"**Measured** (`{path.name}`) {meta.get('date', '?')} at commit `{meta.get('commit', '?')}` on "
             f"{meta.get('cpu', '?')} ({meta.get('cores', '?')} cores; {versions}). "
             f"{record.get('description', '')}", "", "| figure | value |", "|---|---|"]
    return lines + [f"| {key} | {value} |" for key, value in record.get("figures", {}).items()] + [""]


def home_page() -> str:
    """The README as the site's home: links into docs/ lose their prefix, other repository
    files (CONTRIBUTING.md, ...) are named, not linked (they are not pages of the site)."""
    text = (ROOT / "README.md").read_text().replace("](docs/", "](")
    return re.sub(r"\[`?([\w./-]+\.md)`?\]\((?!https?:)([^)]*)\)",
                  lambda m: m.group(0) if (ROOT / "docs" / m.group(2)).is_file() else f"`{m.group(1)}`", text)


def pages() -> dict[Path, str]:
    return {ROOT / "docs" / "index.md": home_page(), REFERENCE / "cli.md": cli_reference(),
            REFERENCE / "benchmarks.md": benchmark_page()}


def main(argv: list[str] | None = None) -> int:
    check = "--check" in (sys.argv[1:] if argv is None else argv)
    stale = []
    for path, text in pages().items():
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"out of date: {', '.join(stale)} (run python docs/generate.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
