"""The guard on a results folder: one folder holds one experiment.

A results folder holding a different experiment is refused, naming what differs, so an
old result is never reported under a new experiment; ``--new`` picks ``NAME-2``, ...,
and ``--overwrite`` discards only a folder the harness wrote.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from pathlib import Path

from harness.paths import child_path
from harness.runs.experiment import Experiment
from harness.runs.layout import EXPERIMENT_FILE, INDEX_FILE, LOCK_SUFFIX

__all__ = ["ResultsConflict", "ResultsBusy", "check_results_dir", "experiment_changes", "new_results_dir",
           "discard_results", "hold"]

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




class ResultsBusy(ResultsConflict):
    """Another process is running an experiment into this results folder."""


# Folders this process holds, with how many times (holding is re-entrant within a process).
_HELD: dict[Path, list] = {}


def lock_path(results_dir: Path) -> Path:
    """The lock beside the folder (not inside it: --overwrite removes the folder)."""
    return results_dir.parent / f".{results_dir.name}{LOCK_SUFFIX}"


@contextlib.contextmanager
def hold(results_dir: str | Path):
    """Hold the results folder for one run: a second ``harness run`` into it, in another
    process, is refused naming the pid that holds it (an advisory ``flock``, released by the
    kernel when the holder exits, however it exits)."""
    results_dir = Path(results_dir).resolve()
    if results_dir in _HELD:
        _HELD[results_dir][1] += 1
        try:
            yield
        finally:
            _HELD[results_dir][1] -= 1
        return
    path = lock_path(results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ResultsBusy(f"{results_dir} is being written by {holder}; wait for that run to end (or stop it), "
                          "then run again: finished trials are kept") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} (harness run, since {time.strftime('%Y-%m-%d %H:%M:%S')})\n")
    handle.flush()
    _HELD[results_dir] = [handle, 1]
    try:
        yield
    finally:
        del _HELD[results_dir]
        handle.close()   # closing releases the lock
