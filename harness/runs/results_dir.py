"""The guard on a results folder: one folder holds one experiment.

A results folder holding a different experiment is refused, naming what differs, so an
old result is never reported under a new experiment; ``--new`` picks ``NAME-2``, ...,
and ``--overwrite`` discards only a folder the harness wrote.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from harness.paths import child_path
from harness.runs.experiment import Experiment
from harness.runs.layout import EXPERIMENT_FILE, INDEX_FILE

__all__ = ["ResultsConflict", "check_results_dir", "experiment_changes", "new_results_dir", "discard_results"]

# Keys of an experiment that do not decide any trial's result: changing them in an
# existing results directory is allowed.
HARMLESS_KEYS = ("description", "time_limit_s", "data.strict", "baseline")  # none changes a trial


class ResultsConflict(ValueError):
    """The results directory holds a different experiment; nothing was written."""


def _flatten(value, prefix="") -> dict:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def experiment_changes(experiment: Experiment, results_dir: Path) -> list[str]:
    """Keys that differ from the experiment stored in ``results_dir`` (empty: same or none)."""
    stored_file = results_dir / EXPERIMENT_FILE
    if not stored_file.is_file():
        return []
    try:
        stored = _flatten(json.loads(stored_file.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return [f"{EXPERIMENT_FILE} (unreadable)"]
    current = _flatten(experiment.model_dump(mode="json"))
    keys = sorted(set(stored) | set(current))
    # A key absent from an older experiment.json equals a newer key left at null (an
    # option added since, not used): that is not a change.
    return [k for k in keys if stored.get(k) != current.get(k)
            and not any(k == h or k.startswith(h + ".") for h in HARMLESS_KEYS)]


def check_results_dir(experiment: Experiment, results_dir: Path) -> None:
    """Refuse a results directory that holds a different experiment, naming what differs."""
    changes = experiment_changes(experiment, results_dir)
    if changes:
        shown = ", ".join(changes[:8]) + (f" and {len(changes) - 8} more" if len(changes) > 8 else "")
        raise ResultsConflict(
            f"{results_dir} holds a different experiment (changed: {shown}); its results would "
            "be mixed with this one's. Use --new to write to a new results directory, "
            "--overwrite to discard the old results, or give the experiment another name.")


def new_results_dir(experiment: Experiment, results_root: Path) -> Path:
    """The first ``<name>-N`` that is free or holds this very experiment (so --new resumes)."""
    n = 2
    while True:
        candidate = child_path(results_root, f"{experiment.name}-{n}", "experiment name")
        if not candidate.exists() or ((candidate / EXPERIMENT_FILE).is_file()
                                      and not experiment_changes(experiment, candidate)):
            return candidate
        n += 1


def discard_results(results_dir: Path) -> None:
    """--overwrite: remove a results directory, but only one the harness wrote."""
    if not results_dir.exists():
        return
    if not ((results_dir / EXPERIMENT_FILE).is_file() or (results_dir / INDEX_FILE).is_file()):
        raise ResultsConflict(f"{results_dir} is not a harness results directory "
                              f"(no {EXPERIMENT_FILE}); refusing to delete it")
    shutil.rmtree(results_dir)


