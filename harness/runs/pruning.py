"""Pruning a searched configuration from its trials' validation curves, while they train.

A worker appends every epoch's row to its trial's ``progress.jsonl``. While a batch of
configurations trains, :class:`PruningMonitor` reads those files in a thread of the
runner's process: once *every* trial of a configuration (each backend, each round) has
ended epoch ``s``, it reports the mean of the search metric over them at step ``s`` to
the configuration's Optuna trial, the same quantity the sampler is told at the end, and
asks Optuna's pruner. A trial that already ended (early stopping) counts at its kept value
from then on. When the pruner says stop, the monitor writes ``PRUNE`` into every trial
folder of the configuration; each worker still training stops before its next epoch and
saves what it has. Those trials are recorded as ``pruned`` (their configuration was),
never as failed or completed, and the report lists them apart.

Because a configuration is judged only on the mean over all its trials, a configuration
is pruned as a whole, for both frameworks at once: the framework pairs of finished
configurations stay paired, and no pruned trial is compared with a finished one.

What holds for reproducibility: the median pruner compares with finished configurations
only, and those are of earlier batches, so the same seed and ``--workers`` give the same
decisions. ASHA and Hyperband compare with every configuration that reached a rung,
running ones included: with one configuration at a time (``--workers`` no more than its
trials) they are reproducible too; with more, as in Ray Tune or Optuna, the decisions
depend on which configuration reached a rung first. A pruned trial may train an epoch
or two past the step that decided (the worker looks between epochs); the value Optuna
keeps is the one at the deciding step.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

from harness.runs.layout import PROGRESS_FILE, PRUNE_FILE, finished
from harness.runs.search_space import SearchSpec
from harness.runs.trial import final_validation

__all__ = ["pruner_for", "PruningMonitor", "read_progress", "judged_value"]

POLL_S = 0.2


def pruner_for(spec: SearchSpec, max_epochs: int | None):
    """Optuna's pruner for ``spec.pruner`` (None for ``none``)."""
    import optuna

    if spec.pruner == "none":
        return None
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=spec.startup_configurations,
                                           n_warmup_steps=spec.min_epochs - 1)
    if spec.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=spec.min_epochs,
                                                      reduction_factor=spec.reduction_factor)
    return optuna.pruners.HyperbandPruner(min_resource=spec.min_epochs, max_resource=max_epochs or "auto",
                                          reduction_factor=spec.reduction_factor)


def read_progress(run_dir: Path) -> list[dict]:
    """The epochs a trial has ended so far, in order (a torn last line is skipped)."""
    try:
        text = (Path(run_dir) / PROGRESS_FILE).read_text()
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


class _Watched:
    def __init__(self, trial, run_dirs: list[Path], judged_dirs: list[Path]):
        self.trial, self.run_dirs, self.judged_dirs = trial, run_dirs, judged_dirs
        self.step = 0             # the last step reported
        self.pruned_at: int | None = None


class PruningMonitor:
    """Reports the configurations' curves to Optuna and prunes, in a thread, while a batch
    trains. Use as a context manager around the batch."""

    def __init__(self, metric: str, poll_s: float = POLL_S):
        self.metric, self.poll_s = metric, poll_s
        self.watched: list[_Watched] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def watch(self, trial, run_dirs: list[Path], judged_dirs: list[Path] | None = None) -> None:
        """Judge ``trial`` by the curves in ``judged_dirs`` (default all of ``run_dirs``,
        ``search.learn_from``) and prune every one of ``run_dirs``."""
        run_dirs = [Path(d) for d in run_dirs]
        self.watched.append(_Watched(trial, run_dirs, [Path(d) for d in judged_dirs] if judged_dirs else run_dirs))

    def pruned_at(self, trial) -> int | None:
        """The step at which ``trial``'s configuration was pruned (None: it was not)."""
        return next((w.pruned_at for w in self.watched if w.trial is trial), None)

    def __enter__(self):
        self._thread = threading.Thread(target=self._loop, daemon=True, name="pruning-monitor")
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        if exc[0] is None:
            self.poll()   # the epochs that ended between the last look and the end of the batch
            if self.error is not None:
                raise self.error

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
            except BaseException as err:   # surfaced when the batch ends, not lost in a thread
                self.error = err
                return

    def poll(self) -> None:
        for watched in self.watched:
            if watched.pruned_at is None:
                self._advance(watched)

    def _curve(self, run_dir: Path) -> tuple[list[float | None], float | None, bool]:
        """(the metric at each epoch ended, the value kept once the trial ended, ended?)."""
        values = [row.get(self.metric) for row in read_progress(run_dir)]
        if finished(run_dir):
            return values, final_validation(run_dir, self.metric), True
        return values, None, False

    def _advance(self, watched: _Watched) -> None:
        curves = [self._curve(d) for d in watched.judged_dirs]
        while (value := judged_value(curves, watched.step + 1)) is not None:
            watched.step += 1
            watched.trial.report(value, watched.step)
            if watched.trial.should_prune():
                watched.pruned_at = watched.step
                for run_dir in watched.run_dirs:
                    if run_dir.is_dir():
                        (run_dir / PRUNE_FILE).write_text(f"pruned at epoch {watched.step}\n")
                return


def judged_value(curves: list[tuple[list, float | None, bool]], step: int) -> float | None:
    """The mean over a configuration's trials of the metric at epoch ``step``, or None when
    it cannot be judged: a trial has not ended that epoch yet, a value is missing (a failed
    trial), or every trial has ended before it (the search tells the final value itself).
    ``curves``: per trial (its values at the epochs ended, its kept value, whether it ended);
    a trial that ended earlier counts at its kept value."""
    values = []
    for epochs, kept, ended in curves:
        if step <= len(epochs):
            values.append(epochs[step - 1])
        elif ended and epochs:
            values.append(kept)
        else:
            return None
    if all(ended and step > len(epochs) for epochs, _, ended in curves):
        return None
    if any(v is None for v in values):
        return None
    return sum(values) / len(values)
