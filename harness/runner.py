"""``harness run``: expand an experiment into trials and run the ones not yet done.

The runner schedules; the worker trains. Resumable by construction: a trial whose
directory has DONE (written last by the worker) is never run again; a directory
without it is a partial trial and is wiped and redone. A failing trial is recorded
with its error and log tail, and the others go on.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from harness import cache, datasets
from harness.experiments import Experiment, Trial, expand
from harness.labels import to_joint
from harness.results import append_record, read_index, trial_dir
from harness.splits import SplitManifest, make_splits
from harness.trial import DONE_FILE, LOG_FILE, METRICS_FILE, write_trial

EXPERIMENT_FILE = "experiment.json"
SPLITS_DIR = "splits"


@dataclass
class Prepared:
    table: pd.DataFrame
    manifest: SplitManifest
    trials: list[Trial]
    skipped_images: pd.DataFrame


def load_table(experiment: Experiment) -> pd.DataFrame:
    spec = experiment.data
    options = {}
    if spec.dataset == "adience":
        options = {"images": spec.images, "metadata": spec.metadata, "noncanonical": spec.noncanonical}
    table = datasets.load(spec.dataset, spec.path, **options).table
    if spec.limit and spec.limit < len(table):
        classes = to_joint(table["age_group"].to_numpy(), table["gender"].to_numpy())
        keep, _ = train_test_split(table.index, train_size=spec.limit, random_state=experiment.split.seed,
                                   stratify=classes)
        table = table.loc[sorted(keep)].reset_index(drop=True)
    return table


def prepare(experiment: Experiment, results_dir: Path, workers: int | None = None) -> Prepared:
    """Dataset -> table -> manifest (saved) -> cache -> trials. Deterministic."""
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / EXPERIMENT_FILE).write_text(experiment.model_dump_json(indent=2))
    table = load_table(experiment)
    built = cache.build(table["id"], table["path"], experiment.preprocessing, workers=workers,
                        strict=experiment.data.strict, progress=True)
    # Images that cannot be decoded leave the experiment here, listed, before any split.
    usable = table[table["id"].isin(set(built.valid_ids()))].reset_index(drop=True)
    manifest = make_splits(usable, experiment.split)
    manifest.save(results_dir / SPLITS_DIR)
    usable.to_csv(results_dir / SPLITS_DIR / "table.csv", index=False)
    built.skipped.to_csv(results_dir / "skipped_images.csv", index=False)
    rounds = experiment.rounds if experiment.rounds is not None else manifest.rounds
    missing = sorted(set(rounds) - set(manifest.rounds))
    if missing:
        raise ValueError(f"rounds {missing} do not exist; the split has rounds {manifest.rounds}")
    trials = expand(experiment, rounds, str(built.directory.resolve()))
    return Prepared(usable, manifest, trials, built.skipped)


def _record(trial: Trial, status: str, seconds: float, run_dir: Path, error: str | None = None) -> dict:
    metrics = {}
    if (run_dir / METRICS_FILE).is_file():
        metrics = {k: v for k, v in json.loads((run_dir / METRICS_FILE).read_text()).items()
                   if not k.endswith("confusion")}
    return {"trial_id": trial.trial_id, "status": status, "model_name": trial.model_name,
            "backend": trial.config.backend, "round": trial.config.round, "seconds": round(seconds, 3),
            "config": trial.config.model_dump(mode="json", exclude={"cache_entry"}),
            "metrics": metrics, "error": error, "finished_at": time.time()}


def _log_tail(run_dir: Path, lines: int = 20) -> str:
    log = run_dir / LOG_FILE
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.is_file() else ""


def _failure(outcome, time_limit_s) -> str:
    if outcome.returncode is None:
        return f"passed its time limit of {time_limit_s} s and was killed"
    if outcome.returncode < 0:
        return f"killed by signal {-outcome.returncode} (out of memory?)"
    last = [line for line in outcome.stderr_tail.splitlines() if line.strip()]
    return last[-1] if last else f"worker exited with code {outcome.returncode}"


def run(experiment: Experiment, results_dir: str | Path, executor, progress: bool = True) -> dict:
    """Run every trial not yet done. Returns counts: done, failed, skipped (already done)."""
    results_dir = Path(results_dir)
    prepared = prepare(experiment, results_dir)
    index = read_index(results_dir)
    todo, counts = [], {"completed": 0, "failed": 0, "already_done": 0}
    for trial in prepared.trials:
        run_dir = trial_dir(results_dir, trial.trial_id)
        if (run_dir / DONE_FILE).is_file():
            if index.get(trial.trial_id, {}).get("status") != "completed":
                # Finished, but the runner died before recording it: record, never rerun.
                append_record(results_dir, _record(trial, "completed", 0.0, run_dir))
            counts["already_done"] += 1
            continue
        if run_dir.exists():
            shutil.rmtree(run_dir)   # a partial trial: start it again from nothing
        write_trial(run_dir, trial.config, prepared.table, prepared.manifest)
        todo.append(trial)

    by_id = {t.trial_id: t for t in todo}
    jobs = [(t.trial_id, str(trial_dir(results_dir, t.trial_id)), experiment.time_limit_s) for t in todo]
    bar = None
    if progress and todo:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), desc=experiment.name, unit="trial")
    for trial_id, outcome in executor.map_unordered(jobs):
        trial, run_dir = by_id[trial_id], trial_dir(results_dir, trial_id)
        if outcome.returncode == 0 and (run_dir / DONE_FILE).is_file():
            append_record(results_dir, _record(trial, "completed", outcome.seconds, run_dir))
            counts["completed"] += 1
        else:
            error = _failure(outcome, experiment.time_limit_s)
            record = _record(trial, "failed", outcome.seconds, run_dir, error)
            record["log_tail"] = _log_tail(run_dir) or outcome.stderr_tail[-2000:]
            append_record(results_dir, record)
            counts["failed"] += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(failed=counts["failed"])
    if bar is not None:
        bar.close()
    return counts
