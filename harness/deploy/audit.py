"""The door's audit log: one JSON line per decision, never a face.

Each line holds when, the verdict and why, the adult probability, the threshold and the
minimum age, which model decided, the liveness result (``null`` until the door checks
liveness) and the client's address: what a person responsible for the customers'
privacy can keep, and nothing from which a face could be rebuilt (no image, no
descriptor, no box). A line is written by one ``write`` on a file opened for appending, so
a server killed at any moment leaves whole lines (a torn one, should a disk lose it, is
skipped by the reader and counted). The file is rotated by size: ``PATH`` → ``PATH.1`` →
... → ``PATH.<keep>``, the oldest dropped.
"""
from __future__ import annotations

import datetime
import json
import os
import threading
from pathlib import Path

import pandas as pd

from harness.files import append_whole

__all__ = ["AuditLog", "read_log", "hourly_counts", "AUDIT_KEYS"]

AUDIT_KEYS = ("time", "verdict", "why", "adult_probability", "threshold", "min_age", "model", "liveness",
              "client", "faces")
DEFAULT_MAX_MB = 10
DEFAULT_KEEP = 5


class AuditLog:
    """Appends decisions to ``path``, rotating it past ``max_bytes``; thread-safe."""

    def __init__(self, path: str | Path, max_bytes: int = DEFAULT_MAX_MB * 2**20, keep: int = DEFAULT_KEEP):
        self.path, self.max_bytes, self.keep = Path(path), max_bytes, keep
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._append(b"")   # fails now, at start, if the folder cannot be written

    def record(self, answer: dict, model: str, client: str | None) -> None:
        """One gate answer (:func:`harness.deploy.serve.app.gate_answer`) as a line."""
        entry = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
                 "verdict": answer["verdict"], "why": answer.get("why"),
                 "adult_probability": answer.get("adult_probability"), "threshold": answer.get("threshold"),
                 "min_age": answer.get("min_age"), "model": model,
                 "liveness": (answer.get("liveness") or {}).get("state"),
                 "client": client, "faces": sum(f.get("face") is not None for f in answer.get("faces", []))}
        line = (json.dumps(entry, sort_keys=True) + "\n").encode()
        with self._lock:
            if self.path.exists() and self.path.stat().st_size + len(line) > self.max_bytes:
                self._rotate()
            self._append(line)

    def _append(self, data: bytes) -> None:
        append_whole(self.path, data, mode=0o600)

    def _rotate(self) -> None:
        for n in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))


def read_log(path: str | Path) -> tuple[pd.DataFrame, int]:
    """(every decision in ``path`` and its rotated files, oldest first; lines skipped as
    damaged). A missing log is an error naming the path."""
    path = Path(path)
    rotated = sorted((p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()),
                     key=lambda p: -int(p.suffix[1:]))   # PATH.<keep> is the oldest, PATH the newest
    files = rotated + ([path] if path.exists() else [])
    if not files:
        raise FileNotFoundError(f"{path}: no audit log (harness serve --audit-log {path} writes one)")
    rows, damaged = [], 0
    for file in files:
        for line in file.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict) or "verdict" not in entry or "time" not in entry:
                    raise ValueError
                rows.append(entry)
            except ValueError:
                damaged += 1
    frame = pd.DataFrame(rows, columns=list(AUDIT_KEYS))
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    return frame, damaged


def hourly_counts(frame: pd.DataFrame, day: datetime.date) -> pd.DataFrame:
    """A day's decisions (UTC) per hour: allowed, asked for ID, denied, retaken."""
    from harness.deploy.door import VERDICTS

    today = frame[frame["time"].dt.date == day]
    table = pd.crosstab(today["time"].dt.hour, today["verdict"]).reindex(columns=list(VERDICTS), fill_value=0)
    table.index.name = "hour (UTC)"
    return table.astype(int)
