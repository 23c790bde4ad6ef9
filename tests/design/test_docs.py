"""The manual builds with no warnings, and the README's runnable commands run as written."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_generated_pages_are_up_to_date():
    """The CLI reference and the benchmark page are what docs/generate.py makes now."""
    checked = subprocess.run([sys.executable, "docs/generate.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_the_manual_builds_strictly(tmp_path):
    cli = (ROOT / "docs" / "reference" / "cli.md").read_text()
    assert "## `harness run`" in cli and "--check-faces" in cli   # from the parser, not typed
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                           cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert (tmp_path / "site" / "design" / "index.html").is_file()
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()


def runnable_commands(markdown: str) -> list[str]:
    blocks = re.findall(r"<!-- runnable -->\s*```sh\n(.*?)```", markdown, re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_readme_has_runnable_commands_and_they_run(tmp_path):
    commands = runnable_commands((ROOT / "README.md").read_text())
    assert len(commands) >= 3
    for command in commands:
        words = shlex.split(command.split("  #")[0])
        assert words[0] == ".venv/bin/harness", command
        # The interpreter running the tests stands in for .venv/bin (a fresh clone's is that one).
        result = subprocess.run([sys.executable, "-m", "harness", *words[1:]], cwd=ROOT, capture_output=True,
                                text=True, timeout=300, env={**os.environ, "HARNESS_CACHE": str(tmp_path / "cache")})
        assert result.returncode == 0, f"{command}\n{result.stderr[-2000:]}"
    assert not (tmp_path / "cache").exists()   # the dry run computed nothing


def test_every_option_of_every_command_says_what_it_does():
    import argparse

    from harness.cli import build_parser

    missing = []

    def walk(parser, name):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    walk(sub, f"{name} {sub_name}")
            elif action.option_strings and not action.help and action.dest != "help":
                missing.append(f"{name} {action.option_strings[0]}")

    walk(build_parser(), "harness")
    assert missing == []


@pytest.mark.parametrize("argv", [["--version"], ["--help"]])
def test_version_and_top_level_help(argv):
    result = subprocess.run([sys.executable, "-m", "harness", *argv], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0
    if argv == ["--version"]:
        from harness import __version__
        assert result.stdout.strip() == f"harness {__version__}"
    else:
        assert "examples:" in result.stdout and "harness predict --model results/quickstart/best" in result.stdout
