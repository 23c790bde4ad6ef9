"""Experiment files: schema, validation with file/key messages, and grid expansion.

An experiment is data (YAML), validated whole before anything runs. Expanding it gives
trials: (model x training grid, plus includes, minus excludes) x backends x rounds.
Each trial's id is a hash of its fully resolved config, so it is the same in every run.
"""
from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator
from sklearn.model_selection import ParameterGrid

from harness.images import Preprocessing
from harness.spec import Architecture, HeadName, ModelSpec, TrainingSpec
from harness.splits import SplitSpec
from harness.trial import BACKENDS, TrialConfig


class ExperimentError(ValueError):
    """An experiment file that cannot run; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(_Strict):
    dataset: Literal["adience", "utkface", "csv"]
    path: str
    images: str | None = Field(None, description="Adience: folder holding aligned/ or faces/")
    metadata: Literal["per_fold", "original"] = "per_fold"
    noncanonical: Literal["map", "drop"] = "map"
    limit: PositiveInt | None = Field(None, description="stratified subsample of this many images")
    strict: bool = Field(False, description="stop at an unreadable image instead of skipping it")


class NamedModel(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    architecture: Architecture
    head: HeadName = "two_heads"

    def spec(self) -> ModelSpec:
        return ModelSpec(architecture=self.architecture, head=self.head)


class Grid(_Strict):
    models: list[NamedModel] = Field(min_length=1)
    # Each training key takes one value or a list of values; lists are crossed.
    training: dict[str, Any] = {}

    @model_validator(mode="after")
    def _unique_names(self):
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        return self


class Experiment(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    data: DataSpec
    preprocessing: Preprocessing = Preprocessing()
    split: SplitSpec = SplitSpec()
    rounds: list[int] | None = Field(None, description="rounds (folds) to run; default all")
    backends: list[Literal["keras", "tflearn"]] = Field(default=list(BACKENDS), min_length=1)
    grid: Grid
    include: list[dict[str, Any]] = []
    exclude: list[dict[str, Any]] = []
    threshold: float = Field(0.0, ge=0.0, le=1.0)
    time_limit_s: PositiveInt = 3600

    @model_validator(mode="after")
    def _backends_installed(self):
        for backend in self.backends:
            if find_spec(backend) is None:
                raise ValueError(f"backend {backend!r} is not installed in this environment")
        return self


def _format_errors(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid experiment"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        allowed = e.get("ctx", {}).get("expected")
        lines.append(f"  {key}: {e['msg']}" + (f" (allowed: {allowed})" if allowed else ""))
    return "\n".join(lines)


def load(path: str | Path, overrides: dict | None = None) -> Experiment:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ExperimentError(f"{path}: experiment file not found") from None
    except yaml.YAMLError as err:
        raise ExperimentError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ExperimentError(f"{path}: expected a mapping at the top level")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        experiment = Experiment.model_validate(raw)
        _expand_specs(experiment)   # catches bad training values before anything runs
    except ValidationError as err:
        raise ExperimentError(_format_errors(path, err)) from None
    except ValueError as err:
        raise ExperimentError(f"{path}: {err}") from None
    return experiment


def _training_grid(experiment: Experiment) -> list[dict]:
    training = {k: v if isinstance(v, list) else [v] for k, v in experiment.grid.training.items()}
    return list(ParameterGrid(training)) if training else [{}]


def _matches(combo: dict, pattern: dict) -> bool:
    for key, value in pattern.items():
        if key == "training":
            if any(combo["training"].get(k) != v for k, v in value.items()):
                return False
        elif combo.get(key) != value:
            return False
    return True


def _expand_specs(experiment: Experiment) -> list[dict]:
    """-> list of {model (name), training (dict)} combinations after include/exclude."""
    names = {m.name for m in experiment.grid.models}
    combos = [{"model": m.name, "training": t} for m in experiment.grid.models
              for t in _training_grid(experiment)]
    for extra in experiment.include:
        if extra.get("model") not in names:
            raise ValueError(f"include: model {extra.get('model')!r} is not one of {sorted(names)}")
        combos.append({"model": extra["model"], "training": dict(extra.get("training", {}))})
    combos = [c for c in combos if not any(_matches(c, p) for p in experiment.exclude)]
    for combo in combos:
        try:
            TrainingSpec(**combo["training"])
        except ValidationError as err:
            raise ValueError(f"grid.training: {err.errors()[0]['loc'][0]}: {err.errors()[0]['msg']}") from None
    return combos


class Trial(BaseModel):
    """A trial is pure data: its label for reports, and its fully resolved config."""

    model_config = ConfigDict(frozen=True)

    trial_id: str
    model_name: str
    config: TrialConfig


def expand(experiment: Experiment, rounds: list[int], cache_entry: str) -> list[Trial]:
    """Every trial of the experiment, in a stable order, duplicates removed."""
    models = {m.name: m for m in experiment.grid.models}
    trials, seen = [], set()
    for combo in _expand_specs(experiment):
        for backend in experiment.backends:
            for round_ in rounds:
                config = TrialConfig(
                    backend=backend, model=models[combo["model"]].spec(),
                    training=TrainingSpec(**combo["training"]),
                    preprocessing=experiment.preprocessing, round=round_,
                    threshold=experiment.threshold, cache_entry=cache_entry)
                trial_id = config.trial_id()
                if trial_id not in seen:
                    seen.add(trial_id)
                    trials.append(Trial(trial_id=trial_id, model_name=combo["model"], config=config))
    return trials
