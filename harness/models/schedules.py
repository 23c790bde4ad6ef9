"""The learning rate per epoch and early stopping: written once here, for every backend.

Backends only apply what this says: before each epoch the rate :class:`LearningRate`
gives, and after each epoch they report the validation row of ``history.csv``, from
which :class:`EarlyStopper` decides whether to go on and which epoch's weights to keep.
Epochs are counted from 0 here and from 1 in ``history.csv``.
"""
from __future__ import annotations

import math

from harness.models.spec import EarlyStopping, Schedule, TrainingSpec

__all__ = ["LearningRate", "EarlyStopper", "lower_is_better", "STOP_METRICS"]

# Each watched measure and whether less of it is better.
STOP_METRICS = {"val_joint_accuracy": False, "val_age_mae": True, "val_loss": True}


def lower_is_better(metric: str) -> bool:
    return STOP_METRICS[metric]


class LearningRate:
    """The rate of each epoch from ``training.learning_rate`` and ``training.schedule``.

    - constant: the rate throughout;
    - cosine: from the rate down to ``floor`` × rate along half a cosine over the epochs
      after the warm-up;
    - step: × ``factor`` every ``step_every`` epochs after the warm-up;
    - plateau: × ``factor`` each time ``metric`` has not improved for ``patience`` epochs
      (it needs :meth:`observe` after every epoch).

    A warm-up of ``w`` epochs climbs linearly: epoch ``e < w`` gets rate × (e + 1) / (w + 1).
    """

    def __init__(self, training: TrainingSpec):
        self.base = training.learning_rate
        self.schedule = training.schedule or Schedule()
        self.epochs = training.epochs
        self._scale = 1.0             # plateau: the steps taken so far
        self._best: float | None = None
        self._since_best = 0

    def rate(self, epoch: int) -> float:
        s = self.schedule
        if epoch < s.warmup_epochs:
            return self.base * (epoch + 1) / (s.warmup_epochs + 1)
        after = epoch - s.warmup_epochs
        if s.kind == "cosine":
            span = max(1, self.epochs - s.warmup_epochs - 1)
            progress = min(1.0, after / span)
            return self.base * (s.floor + (1 - s.floor) * 0.5 * (1 + math.cos(math.pi * progress)))
        if s.kind == "step":
            return self.base * s.factor ** (after // s.step_every)
        if s.kind == "plateau":
            return self.base * self._scale
        return self.base

    def observe(self, row: dict) -> None:
        """After an epoch: its ``history.csv`` row (the plateau schedule watches its metric)."""
        if self.schedule.kind != "plateau":
            return
        value = _value(row, self.schedule.metric, "schedule.metric")
        if _improves(value, self._best, self.schedule.metric):
            self._best, self._since_best = value, 0
            return
        self._since_best += 1
        if self._since_best >= self.schedule.patience:
            self._scale *= self.schedule.factor
            self._since_best = 0


class EarlyStopper:
    """Watches one validation measure; says when to stop and which epoch was best.

    An epoch improves on the best only by being strictly better, so on a flat curve the
    earliest epoch is kept. Without ``early_stopping`` it never stops and keeps the last."""

    def __init__(self, spec: EarlyStopping | None):
        self.spec = spec
        self.best_epoch: int | None = None     # 0-based
        self.best_value: float | None = None
        self.last_epoch: int | None = None
        self.stopped = False

    def observe(self, epoch: int, row: dict) -> bool:
        """After epoch ``epoch``: True when it is the best so far (its weights are worth keeping)."""
        self.last_epoch = epoch
        if self.spec is None:
            self.best_epoch = epoch
            return False
        value = _value(row, self.spec.metric, "early_stopping.metric")
        improved = _improves(value, self.best_value, self.spec.metric)
        if improved:
            self.best_epoch, self.best_value = epoch, value
        elif epoch - self.best_epoch >= self.spec.patience:
            self.stopped = True
        return improved

    @property
    def restores(self) -> bool:
        """Whether the weights to keep are an earlier epoch's, not the last one's."""
        return (self.spec is not None and self.spec.restore_best and self.best_epoch is not None
                and self.best_epoch != self.last_epoch)

    def summary(self) -> dict:
        """What metrics.json records: the epochs trained and the epoch kept (1-based)."""
        kept = self.best_epoch if self.spec is not None and self.spec.restore_best else self.last_epoch
        return {"epochs_trained": None if self.last_epoch is None else self.last_epoch + 1,
                "epoch_kept": None if kept is None else kept + 1,
                "stopped_early": self.stopped,
                **({"early_stopping_metric": self.spec.metric, "early_stopping_best": self.best_value}
                   if self.spec is not None else {})}


def _value(row: dict, metric: str, key: str) -> float:
    value = row.get(metric)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise ValueError(f"{key} {metric}: no such validation measure this epoch (columns: "
                         f"{sorted(k for k in row if k.startswith('val_'))}); val_age_mae needs a years head "
                         "(and exact ages: UTKFace has them, Adience not) and every measure needs validation faces")
    return float(value)


def _improves(value: float, best: float | None, metric: str) -> bool:
    if best is None:
        return True
    return value < best if lower_is_better(metric) else value > best
