"""Where a benchmark's figures go: ``benchmarks/results/NAME.json``, with when, where and
with what they were measured, for ``docs/generate.py`` to render (never retyped)."""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from backends.common import cpu_model

RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = ("tensorflow-cpu", "keras", "tflearn", "jax", "numpy", "dlib-bin", "ai-edge-litert")


def _versions() -> dict:
    found = {}
    for package in PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


def write_result(name: str, description: str, figures: dict) -> Path:
    """Write ``figures`` (name -> value, as printed) to ``benchmarks/results/NAME.json``."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=RESULTS.parent, text=True,
                                capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({
        "description": description, "figures": figures,
        "measured": {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                     "commit": commit, "cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                     "versions": _versions()},
    }, indent=2) + "\n")
    return path
