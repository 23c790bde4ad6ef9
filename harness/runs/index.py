"""The results index: one JSON line per finished trial, appended atomically.

A record is appended only after the trial's DONE marker exists, so the index never
claims a result whose files are incomplete. A damaged line (a torn last line from a kill
during an append, or an edit) is skipped on read and removed by :func:`repair_index`
before the runner appends again, so a new record is never glued onto a torn one; the
removed text is kept in ``index.jsonl.damaged``, and a finished trial whose record was
lost is recorded again from its files.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from harness.paths import child_path

INDEX_FILE = "index.jsonl"
CURRENT_TRIALS_FILE = "trials.json"   # the ids the experiment's last run was made of
TRIALS_DIR = "trials"


DAMAGED_SUFFIX = ".damaged"


def _parse(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("trial_id"), str) \
            or record.get("status") not in ("completed", "failed"):
        return None
    return record


def read_index(results_dir: str | Path) -> dict[str, dict]:
    """trial_id -> latest record; damaged lines are skipped."""
    path = Path(results_dir) / INDEX_FILE
    records: dict[str, dict] = {}
    if not path.is_file():
        return records
    for line in path.read_text(errors="replace").splitlines():
        record = _parse(line)
        if record is not None:
            records[record["trial_id"]] = record
    return records


def repair_index(results_dir: str | Path) -> int:
    """Rewrite the index without its damaged lines; returns how many were removed."""
    path = Path(results_dir) / INDEX_FILE
    if not path.is_file():
        return 0
    text = path.read_text(errors="replace")
    lines = text.splitlines()
    good = [line for line in lines if _parse(line) is not None]
    if len(good) == len(lines) and (not text or text.endswith("\n")):
        return 0
    damaged = [line for line in lines if _parse(line) is None]
    with open(path.with_name(INDEX_FILE + DAMAGED_SUFFIX), "a") as keep:
        keep.writelines(line + "\n" for line in damaged)
    write_atomic(path, lambda p: p.write_text("".join(line + "\n" for line in good)))
    return len(damaged)


def write_atomic(path: Path, write) -> None:
    """``write(partial_path)``, then rename into place: readers never see half a file."""
    partial = path.with_name(path.name + ".partial")
    write(partial)
    os.replace(partial, path)


def current_trials(results_dir: str | Path) -> set[str] | None:
    """Trial ids of the experiment as last prepared, or None when unknown (older results)."""
    path = Path(results_dir) / CURRENT_TRIALS_FILE
    try:
        return set(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def experiment_records(results_dir: str | Path, index: dict[str, dict] | None = None) -> dict[str, dict]:
    """Index records of the trials the experiment is made of now (all, for older results)."""
    index = read_index(results_dir) if index is None else index
    current = current_trials(results_dir)
    return index if current is None else {k: r for k, r in index.items() if k in current}


def append_record(results_dir: str | Path, record: dict) -> None:
    line = json.dumps(record, sort_keys=True) + "\n"
    fd = os.open(Path(results_dir) / INDEX_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def trial_dir(results_dir: str | Path, trial_id: str) -> Path:
    return child_path(Path(results_dir) / TRIALS_DIR, trial_id, "trial id")
