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
    learn_from: str = Field(
        "mean", description="mean: the sampler (and pruner) judge a configuration by the mean over every backend "
                            "and round; a backend's name: by that backend's trials only (every backend still "
                            "trains every configuration, so the framework pairs hold)")
    pruner: Literal["none", "median", "asha", "hyperband"] = Field(
        "none", description="stop a configuration's trials early when their validation curves are hopeless "
                            "(Optuna's MedianPruner, SuccessiveHalvingPruner, HyperbandPruner); needs every "
                            "trial to train more than min_epochs epochs with validation faces")
    min_epochs: PositiveInt | None = Field(
        None, description="median: no configuration is pruned before this epoch; asha/hyperband: the first "
                          "rung (min_resource). Default 1")
    reduction_factor: int | None = Field(
        None, ge=2, description="asha/hyperband: a rung keeps 1 in this many configurations (default 3)")
    startup_configurations: int | None = Field(
        None, ge=0, description="median: configurations that finish unpruned before pruning starts (default 5)")

    @property
    def direction(self) -> str:
        return SEARCH_METRICS[self.metric]

    @model_validator(mode="after")
    def _pruner_options_used(self):
        used = {"none": (), "median": ("min_epochs", "startup_configurations"),
                "asha": ("min_epochs", "reduction_factor"), "hyperband": ("min_epochs", "reduction_factor")}
        for option in ("min_epochs", "reduction_factor", "startup_configurations"):
            if getattr(self, option) is not None and option not in used[self.pruner]:
                raise ValueError(f"{option}: pruner {self.pruner} does not use it (it is for "
                                 f"{[p for p, options in used.items() if option in options]})")
        defaults = {"min_epochs": 1, "reduction_factor": 3, "startup_configurations": 5}
        for option in used[self.pruner]:
            if getattr(self, option) is None:
                object.__setattr__(self, option, defaults[option])
        return self

    @model_validator(mode="after")
    def _budget(self):
        if self.sampler != "grid" and self.trials is None:
            raise ValueError(f"trials: sampler {self.sampler} needs a budget (how many configurations to try)")
        return self
