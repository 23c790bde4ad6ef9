"""The results index: one JSON line per finished trial, appended atomically.

A record is appended only after the trial's DONE marker exists, so the index never
claims a result whose files are incomplete; a torn last line (a kill during the append)
is ignored on read, and the trial is recorded again from its files.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

INDEX_FILE = "index.jsonl"
TRIALS_DIR = "trials"


def read_index(results_dir: str | Path) -> dict[str, dict]:
    """trial_id -> latest record."""
    path = Path(results_dir) / INDEX_FILE
    records: dict[str, dict] = {}
    if not path.is_file():
        return records
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue   # a torn final line from an interrupted append
        records[record["trial_id"]] = record
    return records


def append_record(results_dir: str | Path, record: dict) -> None:
    line = json.dumps(record, sort_keys=True) + "\n"
    fd = os.open(Path(results_dir) / INDEX_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def trial_dir(results_dir: str | Path, trial_id: str) -> Path:
    return Path(results_dir) / TRIALS_DIR / trial_id
