"""``harness run``: expand an experiment into trials and run the ones not yet done.

The runner schedules; the worker trains. Resumable by construction: a trial whose
directory has DONE (written last by the worker) is never run again; a directory
without it is a partial trial and is wiped and redone. A failing trial is recorded
with its error and log tail, and the others go on. A trial's id covers the data it
reads, and a results directory holding a different experiment is refused, so an old
result is never reported under a new experiment.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from harness.runs.executors import Job
from harness.runs.experiment import Experiment
from harness.runs.grid import Trial
from harness.runs.index import append_record, read_index, repair_index, trial_dir
from harness.runs.layout import DONE_FILE, LOG_FILE, METRICS_FILE, finished, finished_status
from harness.runs.prepare import Prepared, prepare, save_prepared
from harness.runs.results_dir import check_results_dir, hold
from harness.runs.trial import write_trial

__all__ = ["run", "run_trials", "record_finished"]


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


def run(experiment: Experiment, results_dir: str | Path, executor, progress: bool = True,
        prepared: Prepared | None = None) -> dict:
    """Run every trial not yet done. Returns counts: completed, failed, already_done.

    On an interrupt (KeyboardInterrupt, or any exception) the executor's running workers
    are killed and nothing is recorded for them; the exception then propagates.
    """
    results_dir = Path(results_dir)
    with hold(results_dir):
        return _run(experiment, results_dir, executor, progress, prepared)


def _run(experiment: Experiment, results_dir: Path, executor, progress: bool, prepared: Prepared | None) -> dict:
    check_results_dir(experiment, results_dir)
    prepared = prepared or prepare(experiment)
    save_prepared(experiment, prepared, results_dir)
    if experiment.search is not None:
        from harness.runs.search import search

        return search(experiment, results_dir, executor, prepared, progress)
    return run_trials(experiment, results_dir, executor, prepared, prepared.trials, progress)


def record_finished(results_dir: Path, trials: list[Trial]) -> set[str]:
    """Ids of the finished ``trials``; each whose index record does not say what its files
    do (the runner died before recording it, or its configuration was pruned after it
    ended) is recorded again. A finished trial is never rerun."""
    index, done = read_index(results_dir), set()
    for trial in trials:
        run_dir = trial_dir(results_dir, trial.trial_id)
        if finished(run_dir, trial.trial_id):
            done.add(trial.trial_id)
            recorded = index.get(trial.trial_id, {})
            if recorded.get("status") != finished_status(run_dir):
                append_record(results_dir, _record(trial, finished_status(run_dir), recorded.get("seconds", 0.0),
                                                   run_dir))
    return done


def run_trials(experiment: Experiment, results_dir: Path, executor, prepared: Prepared, trials: list[Trial],
               progress: bool = True, desc: str | None = None) -> dict:
    """Run those of ``trials`` not yet done (the results folder held and prepared).
    Returns counts: completed, failed, already_done."""
    repair_index(results_dir)
    todo, counts = [], {"completed": 0, "failed": 0, "already_done": 0}
    done = record_finished(results_dir, trials)
    for trial in trials:
        run_dir = trial_dir(results_dir, trial.trial_id)
        if trial.trial_id in done:
            counts["already_done"] += 1
            continue
        if run_dir.exists():
            shutil.rmtree(run_dir)   # a partial trial: start it again from nothing
        write_trial(run_dir, trial.config, prepared.table, prepared.manifest)
        todo.append(trial)

    by_id = {t.trial_id: t for t in todo}
    jobs = [Job(t.trial_id, str(trial_dir(results_dir, t.trial_id)), experiment.time_limit_s,
                t.config.threads, t.config.backend, f"{t.config.data_fingerprint}/{t.config.round}")
            for t in todo]
    bar = None
    if progress and todo:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), desc=desc or experiment.name, unit="trial")
    try:
        for trial_id, outcome in executor.map_unordered(jobs):
            trial, run_dir = by_id[trial_id], trial_dir(results_dir, trial_id)
            if outcome.returncode == 0 and (run_dir / DONE_FILE).is_file():
                append_record(results_dir, _record(trial, finished_status(run_dir), outcome.seconds, run_dir))
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
    except BaseException:
        executor.stop()
        raise
    finally:
        if bar is not None:
            bar.close()
    return counts
