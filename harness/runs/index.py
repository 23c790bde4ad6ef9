"""The results index: one JSON line per finished trial, appended atomically; and what a
results folder offers as a model (its finished trials, its ``best``).

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

from harness.files import append_whole, write_atomic
from harness.paths import child_path
from harness.runs.layout import (
    BEST_FILE,
    BEST_LINK,
    CURRENT_TRIALS_FILE,
    DAMAGED_SUFFIX,
    INDEX_FILE,
    TRIAL_STATUSES,
    TRIALS_DIR,
    finished,
)
from harness.runs.trial import final_validation


def _parse(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("trial_id"), str) \
            or record.get("status") not in TRIAL_STATUSES:
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


def describe_missing_index(results_dir: str | Path) -> str:
    """Why :func:`read_index` found no record: no index at all, or one with no readable line."""
    path = Path(results_dir) / INDEX_FILE
    if not path.is_file():
        return "no results index (run the experiment first)"
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    if not lines:
        return f"{INDEX_FILE} is empty: no trial has finished yet (run the experiment first)"
    return (f"{path}: none of its {len(lines)} line(s) is a trial record (each line must be a JSON "
            "object with a trial_id and a status); run the experiment again to record its trials anew")


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
    append_whole(Path(results_dir) / INDEX_FILE, (json.dumps(record, sort_keys=True) + "\n").encode(), sync=True)


def trial_dir(results_dir: str | Path, trial_id: str) -> Path:
    return child_path(Path(results_dir) / TRIALS_DIR, trial_id, "trial id")


def ranked_trials(results_dir: Path) -> list[tuple[float | None, str, dict]]:
    """(validation joint accuracy of the epoch kept, trial id, index record) of each
    finished trial, best first; ties by trial id, trials without a validation score last."""
    rows = []
    for trial_id, record in experiment_records(results_dir).items():
        run_dir = trial_dir(results_dir, trial_id)
        if record.get("status") == "completed" and finished(run_dir):
            rows.append((final_validation(run_dir), trial_id, record))
    return sorted(rows, key=lambda row: (row[0] is None, -(row[0] or 0.0), row[1]))


def describe_results(results_dir: str | Path, shown: int = 10) -> str:
    """The finished trials of a results folder with their test accuracies, best first
    (by validation joint accuracy, as ``best.json``), and how to name one as a model."""
    results_dir = Path(results_dir)
    rows = ranked_trials(results_dir)
    if not rows:
        return "It has no finished trials yet (harness run it first)."
    lines = [f"Its {len(rows)} finished trial(s), best validation joint accuracy first:"]
    for _, trial_id, record in rows[:shown]:
        metrics = record.get("metrics") or {}
        scores = ", ".join(f"{label} {100 * metrics[key]:.1f} %" for key, label in
                           (("gender_accuracy", "gender"), ("age_exact_accuracy", "age exact"))
                           if isinstance(metrics.get(key), (int, float)))
        if isinstance(metrics.get("age_mae"), (int, float)):
            scores += f", age MAE {metrics['age_mae']:.2f} years"
        lines.append(f"  {trial_dir(results_dir, trial_id)}  {record.get('backend', '?')} "
                     f"{record.get('model_name', '?')} round {record.get('round', '?')}: {scores or 'no test metrics'}")
    if len(rows) > shown:
        lines.append(f"  ... and {len(rows) - shown} more (harness report {results_dir})")
    best = results_dir / BEST_LINK
    lines.append(f"Give one of them as --model{f', or {best} (written by harness report)' if best.exists() else ''}.")
    return "\n".join(lines)


def write_best(results_dir: str | Path) -> dict | None:
    """``best.json`` and the ``best`` link (-> ``trials/<id>``) of a results folder: its
    finished trial with the highest validation joint accuracy at the epoch it kept (never
    a test figure), so that ``--model RESULTS/best`` names it. None when no finished trial
    has a validation split (nothing is written then)."""
    ranked = ranked_trials(Path(results_dir))
    if not ranked or ranked[0][0] is None:
        return None
    results_dir = Path(results_dir)
    score, trial_id, record = ranked[0]
    chosen = {"trial_id": trial_id, "path": f"{TRIALS_DIR}/{trial_id}", "backend": record.get("backend"),
              "model_name": record.get("model_name"), "round": record.get("round"),
              "val_joint_accuracy": score, "chosen_by": "validation joint accuracy at the epoch kept",
              "test_metrics": {k: v for k, v in (record.get("metrics") or {}).items()
                               if k in ("gender_accuracy", "age_exact_accuracy", "age_one_off_accuracy",
                                        "joint_accuracy", "age_mae")}}
    write_atomic(results_dir / BEST_FILE, lambda p: p.write_text(json.dumps(chosen, indent=2) + "\n"))
    link, partial = results_dir / BEST_LINK, results_dir / (BEST_LINK + ".partial")
    if link.exists() and not link.is_symlink():
        return chosen   # a folder of the user's own: left alone (best.json still names the trial)
    partial.unlink(missing_ok=True)
    os.symlink(Path(TRIALS_DIR) / trial_id, partial, target_is_directory=True)
    os.replace(partial, link)
    return chosen
