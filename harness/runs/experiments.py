"""Experiment files: schema, validation with file/key messages, and grid expansion.

An experiment is data (YAML), validated whole before anything runs. Expanding it gives
trials: (model x training grid, plus includes, minus excludes) x backends x rounds.
Each trial's id is a hash of its fully resolved config, so it is the same in every run.
"""
from __future__ import annotations

import os
from importlib.util import find_spec
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator, BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, ValidationError,
    field_validator, model_validator,
)
from sklearn.model_selection import ParameterGrid

from harness.models.gate import GateSpec
from harness.models.heads import SOFT_AGE_HEADS, YEARS_HEADS, part_losses
from harness.data.images import Preprocessing
from harness.data.labels import N_JOINT
from harness.models.spec import Architecture, Augmentation, HeadName, ModelSpec, TrainingSpec
from harness.data.splits import SplitSpec
from harness.models.backends import DEFAULT_BACKENDS, REGISTRY, BackendName
from harness.runs.trial import TrialConfig


class ExperimentError(ValueError):
    """An experiment file that cannot run; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


TRAINING_KEYS = tuple(TrainingSpec.model_fields)
ADIENCE_FOLDS = 5


def _path_name(name: str) -> str:
    """A name that becomes a folder: it must stay inside its parent folder."""
    if name in (".", "..") or name.startswith("."):
        raise ValueError(f"{name!r} would not stay inside its parent folder (names may not start with '.')")
    return name


PathName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$"),
                     AfterValidator(_path_name)]


class DataSpec(_Strict):
    dataset: Literal["adience", "utkface", "csv"]
    path: str
    images: str | None = Field(None, description="Adience: folder holding aligned/ or faces/")
    metadata: Literal["per_fold", "original"] = "per_fold"
    noncanonical: Literal["map", "drop"] = "map"
    limit: PositiveInt | None = Field(None, description="stratified subsample of this many images")
    strict: bool = Field(False, description="stop at an unreadable image instead of skipping it")

    @field_validator("limit")
    @classmethod
    def _room_for_every_class(cls, value):
        if value is not None and value < N_JOINT:
            raise ValueError(f"must be at least {N_JOINT}, one image per age-group x gender class "
                             f"(a stratified subsample needs each class); got {value}")
        return value


class NamedModel(_Strict):
    name: PathName
    architecture: Architecture
    head: HeadName = "two_heads"

    def spec(self) -> ModelSpec:
        return ModelSpec(architecture=self.architecture, head=self.head)


def _training_keys(training: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(training) - set(TRAINING_KEYS))
    if unknown:
        raise ValueError(f"unknown training key(s) {unknown}; allowed: {list(TRAINING_KEYS)}")
    return training


class Grid(_Strict):
    models: list[NamedModel] = Field(min_length=1)
    # Each training key takes one value or a list of values; lists are crossed.
    training: Annotated[dict[str, Any], AfterValidator(_training_keys)] = {}

    @model_validator(mode="after")
    def _unique_names(self):
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        return self


class Include(_Strict):
    """Extra combinations: a grid model with these training values, the grid's own values
    for every training key not given (crossed where the grid lists several)."""

    model: str
    training: Annotated[dict[str, Any], AfterValidator(_training_keys)] = {}


class Exclude(_Strict):
    """A pattern of combinations to drop: every key given must match."""

    model: str | None = None
    training: Annotated[dict[str, Any], AfterValidator(_training_keys)] = {}


class Experiment(_Strict):
    name: PathName
    description: str = ""
    data: DataSpec
    preprocessing: Preprocessing = Preprocessing()
    split: SplitSpec = SplitSpec()
    rounds: list[NonNegativeInt] | None = Field(None, min_length=1, description="rounds (folds) to run; default all")
    backends: list[BackendName] = Field(default=list(DEFAULT_BACKENDS), min_length=1)
    grid: Grid
    include: list[Include] = []
    exclude: list[Exclude] = []
    threshold: float = Field(0.0, ge=0.0, le=1.0)
    gate: GateSpec | None = Field(None, description="calibrate the door gate's threshold on validation faces")
    seeds: list[int] | None = Field(
        None, min_length=1, description="initialisation seeds crossed with the split rounds; each "
                                        "(round, seed) is one paired observation in the report")
    baseline: Include | None = Field(
        None, description="the combination every other one is compared with in the report")
    threads: PositiveInt | None = Field(
        None, le=1024, description="framework threads per trial; default: this machine's cores")
    time_limit_s: PositiveInt = 3600

    @model_validator(mode="after")
    def _backends_installed(self):
        for backend in self.backends:
            missing = [package for package in REGISTRY[backend].packages if find_spec(package) is None]
            if missing:
                raise ValueError(f"backend {backend!r} needs {' and '.join(missing)}, not installed in this "
                                 f"environment ({REGISTRY[backend].install})")
        return self

    @model_validator(mode="after")
    def _rounds_exist(self):
        available = split_rounds(self.split)
        bad = sorted(set(self.rounds or []) - set(available))
        if bad:
            raise ValueError(f"rounds: {bad} do not exist; split protocol {self.split.protocol!r} "
                             f"has rounds {available}")
        return self

    @model_validator(mode="after")
    def _architectures_fit_the_input(self):
        if self.preprocessing.embedding:
            for n, model in enumerate(self.grid.models):
                if model.architecture.type != "fcn":
                    raise ValueError(
                        f"grid.models.{n}.architecture: {model.architecture.type!r} needs a pixel grid, but "
                        f"preprocessing.representation {self.preprocessing.representation!r} gives "
                        f"{self.preprocessing.shape[0]} numbers per face (allowed: fcn)")
        return self

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds):
        if seeds is not None and len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {seeds}")
        return seeds

    @model_validator(mode="after")
    def _one_place_for_seeds(self):
        if self.seeds is None:
            return self
        places = ["grid.training"] * ("seed" in self.grid.training) + [
            f"{kind}.{n}.training" for kind in ("include", "exclude")
            for n, item in enumerate(getattr(self, kind)) if "seed" in item.training]
        if self.baseline is not None and "seed" in self.baseline.training:
            places.append("baseline.training")
        if places:
            raise ValueError(f"seeds: given, so seed may not also be set in {', '.join(places)} "
                             "(seeds are rounds, not a design factor)")
        return self

    def resolved_threads(self) -> int:
        return self.threads or os.cpu_count() or 1


def split_rounds(split: SplitSpec) -> list[int]:
    """The rounds a split protocol makes, known before any data is read."""
    if split.protocol == "random":
        return [0]
    return list(range(ADIENCE_FOLDS if split.protocol == "adience_folds" else split.folds))


def _format_errors(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid experiment"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        allowed = e.get("ctx", {}).get("expected")
        message = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {key}: {message}" + (f" (allowed: {allowed})" if allowed else ""))
    return "\n".join(lines)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    f"in the mapping starting on line {node.start_mark.line + 1}", node.start_mark,
                    f"key {key!r} appears twice (first on line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path):
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ExperimentError(f"{path}: experiment file not found") from None
    except IsADirectoryError:
        raise ExperimentError(f"{path}: is a directory; expected an experiment YAML file") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ExperimentError(f"{path}: not a text file (byte {err.start} is not UTF-8); "
                              "expected an experiment YAML file") from None
    if "\0" in text:
        raise ExperimentError(f"{path}: not a text file (it contains NUL bytes); "
                              "expected an experiment YAML file")
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        raise ExperimentError(f"{path}: not valid YAML: {err}") from None


def load(path: str | Path, overrides: dict | None = None) -> Experiment:
    path = Path(path)
    raw = _read_yaml(path)
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
        _expand_specs(experiment)   # catches bad combinations before anything runs
    except ValidationError as err:
        raise ExperimentError(_format_errors(path, err)) from None
    except ValueError as err:
        raise ExperimentError(f"{path}: {err}") from None
    return experiment


def _training_grid(experiment: Experiment, fixed: dict | None = None) -> list[dict]:
    training = {k: v if isinstance(v, list) else [v] for k, v in experiment.grid.training.items()}
    training.update({k: [v] for k, v in (fixed or {}).items()})
    return list(ParameterGrid(training)) if training else [{}]


def _matches(combo: dict, pattern: Exclude) -> bool:
    if pattern.model is not None and combo["model"] != pattern.model:
        return False
    return all(combo["training"].get(k, TrainingSpec.model_fields[k].default) == v
               for k, v in pattern.training.items())


def _grid_values(combos: list[dict], key: str) -> list:
    values = {repr(c["training"].get(key, TrainingSpec.model_fields[key].default)) for c in combos}
    return sorted(values)


def _expand_specs(experiment: Experiment) -> list[dict]:
    """-> list of {model (name), training (dict)} combinations after include/exclude.

    Every include and exclude must refer to something real: an include names a grid
    model, and an exclude that matches nothing (a misspelled value, say) is an error,
    as is an exclude list that leaves nothing to run.
    """
    models = {m.name: m for m in experiment.grid.models}
    combos = [{"model": m.name, "training": t} for m in experiment.grid.models
              for t in _training_grid(experiment)]
    for n, extra in enumerate(experiment.include):
        if extra.model not in models:
            raise ValueError(f"include.{n}.model: {extra.model!r} is not a grid model "
                             f"(allowed: {sorted(models)})")
        combos += [{"model": extra.model, "training": t} for t in _training_grid(experiment, extra.training)]
    for n, pattern in enumerate(experiment.exclude):
        if pattern.model is not None and pattern.model not in models:
            raise ValueError(f"exclude.{n}.model: {pattern.model!r} is not a grid model "
                             f"(allowed: {sorted(models)})")
        if not any(_matches(c, pattern) for c in combos):
            values = "; ".join(f"training.{k} has {_grid_values(combos, k)}" for k in pattern.training)
            raise ValueError(f"exclude.{n}: matches no combination of the grid, so it would exclude "
                             f"nothing ({values or 'check the model name'})")
    unique = {(c["model"], repr(sorted(c["training"].items()))): c for c in combos}
    combos = list(unique.values())   # an include that repeats a grid combination adds nothing
    total = len(combos)
    combos = [c for c in combos if not any(_matches(c, p) for p in experiment.exclude)]
    if not combos:
        raise ValueError(f"exclude: removes all {total} combinations of the grid; nothing would run")
    if experiment.baseline is not None:
        baseline_combination(experiment, combos)
    for combo in combos:
        where = f"model {combo['model']!r} with training {combo['training']}"
        try:
            training = TrainingSpec(**combo["training"])
        except ValidationError as err:
            first = err.errors()[0]
            message = first["msg"]
            if first["type"] == "extra_forbidden" and first["loc"][0] == "augmentation":
                message = f"unknown augmentation key (allowed: {list(Augmentation.model_fields)})"
            raise ValueError(f"grid.training.{'.'.join(map(str, first['loc']))}: "
                             f"{message} ({where})") from None
        head = models[combo["model"]].head
        try:
            part_losses(head, training.loss)
        except ValueError as err:
            raise ValueError(f"training.loss: {err} ({where})") from None
        if training.augments and experiment.preprocessing.embedding:
            raise ValueError(f"training.augmentation: changes pixels, but preprocessing.representation "
                             f"{experiment.preprocessing.representation!r} feeds the model face "
                             f"descriptors; use embedding_flip for a mirrored face ({where})")
        if training.age_target == "soft" and head not in SOFT_AGE_HEADS:
            raise ValueError(f"training.age_target: soft needs a head with an age softmax "
                             f"(allowed: {list(SOFT_AGE_HEADS)}), not {head!r} ({where})")
    return combos


def baseline_combination(experiment: Experiment, combos: list[dict] | None = None) -> dict | None:
    """The one combination ``baseline:`` names ({model, training}), or None when none is named.

    The baseline must pick exactly one combination of the grid as run, so that every
    comparison against it is between two things that were both trained.
    """
    pattern = experiment.baseline
    if pattern is None:
        return None
    combos = _expand_specs(experiment) if combos is None else combos
    models = {m.name for m in experiment.grid.models}
    if pattern.model not in models:
        raise ValueError(f"baseline.model: {pattern.model!r} is not a grid model (allowed: {sorted(models)})")
    chosen = [c for c in combos if _matches(c, Exclude(model=pattern.model, training=pattern.training))]
    if len(chosen) != 1:
        found = "; ".join(str(c["training"]) for c in combos if c["model"] == pattern.model)
        raise ValueError(f"baseline: must match exactly one combination of the grid, matches {len(chosen)} "
                         f"(model {pattern.model!r} runs with training {found}); give the training "
                         "values that pick one")
    return chosen[0]


def exact_age_uses(experiment: Experiment) -> list[str]:
    """The experiment's keys that need every face's exact age (the dataset must have one)."""
    uses = []
    if any(TrainingSpec(**c["training"]).age_target == "soft" for c in _expand_specs(experiment)):
        uses.append("training.age_target: soft")
    if experiment.gate is not None:
        uses.append("gate")
    uses += [f"grid.models {m.name}: head {m.head} (age in years)" for m in experiment.grid.models
             if m.head in YEARS_HEADS]
    return uses


class Trial(BaseModel):
    """A trial is pure data: its label for reports, and its fully resolved config."""

    model_config = ConfigDict(frozen=True)

    trial_id: str
    model_name: str
    config: TrialConfig


def expand(experiment: Experiment, data_fingerprints: dict[int, str], cache_entry: str) -> list[Trial]:
    """Every trial of the experiment, in a stable order, duplicates removed.

    ``data_fingerprints``: round -> identity of the data that round reads (see
    :func:`harness.runs.trial.data_fingerprint`); the rounds to run are its keys.
    """
    threads = experiment.resolved_threads()
    models = {m.name: m for m in experiment.grid.models}
    seeds = [{"seed": seed} for seed in experiment.seeds] if experiment.seeds else [{}]
    trials, seen = [], set()
    for combo, seed in ((c, s) for c in _expand_specs(experiment) for s in seeds):
        for backend in experiment.backends:
            for round_, fingerprint in sorted(data_fingerprints.items()):
                config = TrialConfig(
                    backend=backend, model=models[combo["model"]].spec(),
                    training=TrainingSpec(**combo["training"], **seed),
                    preprocessing=experiment.preprocessing, round=round_,
                    threshold=experiment.threshold, threads=threads, gate=experiment.gate,
                    data_fingerprint=fingerprint, cache_entry=cache_entry)
                trial_id = config.trial_id()
                if trial_id not in seen:
                    seen.add(trial_id)
                    trials.append(Trial(trial_id=trial_id, model_name=combo["model"], config=config))
    return trials
