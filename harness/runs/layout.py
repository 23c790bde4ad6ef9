"""Every file and folder name in a results folder, and what a folder on disk is.

Writers (runner, worker, ensemble, export) and readers (report, predict, serve) import
these names; none of them types a file name of its own. :func:`kind_of` and
:func:`finished` are the one answer to "what is this folder?" and "is it finished?".

A results folder (``results/<experiment>/``)::

    experiment.json  splits/  table.csv  skipped_images.csv  dropped_rows.csv
    unaligned_images.csv  index.jsonl  trials.json  best.json  best -> trials/<id>
    search.journal  search.csv  search_importance.csv            (a searched experiment)
    trials/<trial id>/      config.json labels.csv history.csv progress.jsonl predictions.npz
                            val_predictions.npz metrics.json env.json log.txt DONE [PRUNE]
    ensembles/<name>/       ensemble.json  round-<r>/ (members.json, metrics.json, DONE, ...)

An export folder: ``export.json`` (the manifest), ``model.tflite`` or ``members/``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

__all__ = ["kind_of", "finished", "finished_status", "require_finished", "NotFinished", "Kind"]

# The results folder of one experiment.
EXPERIMENT_FILE = "experiment.json"
SPLITS_DIR = "splits"
TABLE_FILE = "table.csv"                  # inside SPLITS_DIR
SKIPPED_FILE = "skipped_images.csv"
UNALIGNED_FILE = "unaligned_images.csv"
DROPPED_FILE = "dropped_rows.csv"
INDEX_FILE = "index.jsonl"
DAMAGED_SUFFIX = ".damaged"
CURRENT_TRIALS_FILE = "trials.json"       # the ids the experiment's last run was made of
TRIALS_DIR = "trials"
BEST_FILE = "best.json"                   # written by `harness report`
SEARCH_FILE = "search.journal"            # a searched experiment's Optuna study (its journal storage)
SEARCH_TABLE_FILE = "search.csv"          # its configurations in the order asked, as plain data for the report
SEARCH_IMPORTANCE_FILE = "search_importance.csv"   # fANOVA importance of each searched value, for the report
BEST_LINK = "best"                        # -> trials/<id> of BEST_FILE
LOCK_SUFFIX = ".lock"                     # .<experiment>.lock beside the folder: who is running into it

# One trial's folder.
CONFIG_FILE, LABELS_FILE = "config.json", "labels.csv"
HISTORY_FILE, PREDICTIONS_FILE = "history.csv", "predictions.npz"
VAL_PREDICTIONS_FILE = "val_predictions.npz"
METRICS_FILE, ENV_FILE, LOG_FILE, DONE_FILE = "metrics.json", "env.json", "log.txt", "DONE"
PROGRESS_FILE = "progress.jsonl"          # one line per epoch as it ends (history.csv is written at the end)
PRUNE_FILE = "PRUNE"                      # written by a search's pruner: the worker stops before its next epoch

# What a trial folder's index record says of it: trained to its end, failed, or stopped
# (or merely judged) by a search's pruner, which a report never compares with a finished one.
TRIAL_STATUSES = ("completed", "failed", "pruned")

# Ensembles of finished trials: ENSEMBLES_DIR/<name>/ENSEMBLE_FILE and one round-<r>/ each.
ENSEMBLES_DIR = "ensembles"
ENSEMBLE_FILE, MEMBERS_FILE = "ensemble.json", "members.json"
ROUND_PREFIX = "round-"

# A report (`harness report`, `harness compare`): in the results folder or in --out.
REPORT_MD, REPORT_HTML = "report.md", "report.html"
REPORT_TABLES_DIR, REPORT_PLOTS_DIR = "tables", "plots"
REPORT_FILES = ".report-files.json"       # the files the last report wrote: only these are replaced
REPORT_STAGING_PREFIX = ".report-staging-"   # + pid: where a report is written before it is moved in

# An export folder.
MANIFEST_FILE = "export.json"
MODEL_FILE = "model.tflite"
MEMBERS_DIR = "members"

Kind = Literal["export", "ensemble", "ensemble_round", "trial", "results", "unknown"]


def kind_of(path: str | Path) -> Kind:
    """What the folder ``path`` is, by the file that only that kind of folder holds."""
    path = Path(path)
    if not path.is_dir():
        return "unknown"
    if (path / MANIFEST_FILE).is_file():
        return "export"
    if (path / ENSEMBLE_FILE).is_file():
        return "ensemble"
    if (path / MEMBERS_FILE).is_file():
        return "ensemble_round"
    if (path / CONFIG_FILE).is_file() or (path / DONE_FILE).is_file():
        return "trial"
    if (path / EXPERIMENT_FILE).is_file() or (path / INDEX_FILE).is_file():
        return "results"
    return "unknown"


def finished(path: str | Path, trial_id: str | None = None) -> bool:
    """A trial or ensemble round whose DONE marker exists (written last); with
    ``trial_id``, one whose DONE names that very trial (the worker writes the id it
    trained). An export is finished once its manifest exists."""
    path = Path(path)
    if (path / MANIFEST_FILE).is_file():
        return trial_id is None
    try:
        done = (path / DONE_FILE).read_text().strip()
    except OSError:
        return False
    return trial_id is None or done == trial_id


def finished_status(run_dir: str | Path) -> str:
    """The index status of a finished trial: ``pruned`` when a search's pruner stopped its
    configuration (whether or not this trial was still training then), else ``completed``."""
    return "pruned" if (Path(run_dir) / PRUNE_FILE).is_file() else "completed"


def log_writable(run_dir: str | Path) -> bool:
    """Whether a process may append to the trial's log.txt (a run folder can be read-only:
    a shared disk, an archive; reading a model must not need to write beside it)."""
    log = Path(run_dir) / LOG_FILE
    return os.access(run_dir, os.W_OK) and (not log.exists() or os.access(log, os.W_OK))


class NotFinished(ValueError):
    """The folder is not a finished model (trial, ensemble round or export); says what it is."""


def require_finished(path: str | Path, prefix: str = "") -> Path:
    """``path`` if it is a finished trial, ensemble round or export; otherwise raise
    :class:`NotFinished` saying what the folder is (and, for a results folder, which of its
    trials are finished and how to name one)."""
    path = Path(path)
    lead = f"{prefix}{path}"
    if not path.exists():
        raise NotFinished(f"{lead}: no such run directory")
    if not path.is_dir():
        raise NotFinished(f"{lead}: not a directory; give a trial directory (RUN_DIR)")
    kind = kind_of(path)
    if kind == "results":
        from harness.runs.index import describe_results

        raise NotFinished(f"{lead}: a results folder, not one model. {describe_results(path)}")
    if kind == "ensemble":
        rounds = sorted(p.name for p in path.glob(ROUND_PREFIX + "*") if kind_of(p) == "ensemble_round")
        raise NotFinished(f"{lead}: an ensemble with one model per round; give one round's "
                          f"directory, e.g. {path / (rounds[0] if rounds else ROUND_PREFIX + '0')}")
    if not finished(path):
        raise NotFinished(f"{lead}: not a finished run (no {DONE_FILE}); train it first")
    return path
