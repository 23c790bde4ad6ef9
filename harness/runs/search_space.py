"""The schema of a searched experiment: ``search:`` (how configurations are chosen) and
``space:`` (what may vary), validated whole before anything runs.

A search chooses *configurations*; the harness still owns the trials: each chosen
configuration is trained by every backend on every round listed, as a grid's would be
(same trial ids), so the framework comparison stays paired. Samplers and pruners are
Optuna's (:mod:`harness.runs.search`); nothing here imports it.

Space keys name what they set: ``training.<key>`` (a training option) or
``model.architecture.<key>`` (a field of the grid model's architecture). A list in
``grid.training`` is a choice the sampler makes too, so ``sampler: grid`` over a grid's
lists is that grid.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

__all__ = ["Dimension", "SearchSpec", "SEARCH_METRICS", "TRAINING_PREFIX", "ARCHITECTURE_PREFIX"]

TRAINING_PREFIX, ARCHITECTURE_PREFIX = "training.", "model.architecture."
# What a search may optimise (a validation measure every trial's history has) and which way.
SEARCH_METRICS = {"val_joint_accuracy": "maximize", "val_gender_accuracy": "maximize",
                  "val_age_exact_accuracy": "maximize", "val_age_mae": "minimize", "val_loss": "minimize"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Dimension(_Strict):
    """One of ``{log_uniform: [low, high]}``, ``{uniform: [low, high]}``, ``{int: [low, high]}``
    or ``{choice: [a, b, ...]}``."""

    log_uniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    integer: tuple[int, int] | None = Field(None, alias="int")
    choice: list[Any] | None = None

    @model_validator(mode="after")
    def _one_kind(self):
        given = [name for name in ("log_uniform", "uniform", "integer", "choice") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of log_uniform: [low, high], uniform: [low, high], int: [low, high] "
                             f"or choice: [values] (got {len(given)})")
        kind = given[0]
        if kind == "choice":
            distinct = {repr(v) for v in self.choice}
            if len(distinct) < 2 or len(distinct) != len(self.choice):
                raise ValueError(f"choice needs at least two distinct values, got {self.choice}")
            return self
        low, high = getattr(self, kind)
        if not low < high:
            raise ValueError(f"{self.kind}: low must be below high, got [{low}, {high}]")
        if kind == "log_uniform" and low <= 0:
            raise ValueError(f"log_uniform: both bounds must be positive, got [{low}, {high}]")
        return self

    @property
    def kind(self) -> str:
        for name, shown in (("log_uniform", "log_uniform"), ("uniform", "uniform"), ("integer", "int"),
                            ("choice", "choice")):
            if getattr(self, name) is not None:
                return shown
        raise AssertionError("validated to have one kind")


class SearchSpec(_Strict):
    sampler: Literal["grid", "random", "tpe", "gp", "cmaes"] = Field(
        "grid", description="grid: every combination of the choices; the others: Optuna's samplers")
    trials: PositiveInt | None = Field(
        None, description="configurations to try (each trained by every backend on every round); grid: all")
    seed: int = Field(0, description="the sampler's seed: the same seed and --workers give the same configurations")
    metric: Literal[tuple(SEARCH_METRICS)] = Field(
        "val_joint_accuracy", description="what the sampler optimises: the mean over a configuration's trials of "
                                          "this validation measure, at the epoch each trial kept")
    # Pruning from the per-epoch validation curves (median, ASHA, Hyperband) is still to
    # come (issue 26 §2): until then "none" is the only value, so no option is ignored.
    pruner: Literal["none"] = "none"

    @property
    def direction(self) -> str:
        return SEARCH_METRICS[self.metric]

    @model_validator(mode="after")
    def _budget(self):
        if self.sampler != "grid" and self.trials is None:
            raise ValueError(f"trials: sampler {self.sampler} needs a budget (how many configurations to try)")
        return self
