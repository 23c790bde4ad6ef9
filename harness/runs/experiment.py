"""The experiment schema: what an experiment file may say, validated whole before anything runs.

An experiment is data (YAML, read by :mod:`harness.runs.experiment_file`); expanding it
(:mod:`harness.runs.grid`) gives trials: (model x training grid, plus includes, minus
excludes) x backends x rounds.
"""
from __future__ import annotations

import os
from importlib.util import find_spec
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    field_validator,
    model_validator,
)

from harness.data.images import Preprocessing
from harness.data.labels import N_JOINT
from harness.data.splits import SplitSpec
from harness.models.backends import DEFAULT_BACKENDS, REGISTRY, BackendName
from harness.models.gate import GateSpec
from harness.models.heads import YEARS_HEADS
from harness.models.spec import Architecture, HeadName, ModelSpec, TrainingSpec
from harness.runs.search_space import ARCHITECTURE_PREFIX, TRAINING_PREFIX, Dimension, SearchSpec


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
    search: SearchSpec | None = Field(None, description="choose configurations with a sampler instead of "
                                                        "running the whole grid (harness.runs.search)")
    space: dict[str, Dimension] = Field({}, description="search: what may vary, beside grid.training's lists")

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
        """Each model against what it will read (:mod:`harness.runs.model_inputs`): a face
        network that can train from its cut reads the cached activations whatever the
        experiment's preprocessing; one that reads the chip needs the chip; everything else
        but an FCN needs a pixel grid. Training options that change that are checked per
        combination when the grid expands."""
        from harness.models.face_resnet import CUTS, INPUT_SIZE, cut_of
        from harness.runs.model_inputs import chip_mismatch

        prep = self.preprocessing
        for n, model in enumerate(self.grid.models):
            arch = model.architecture
            if arch.type == "face_resnet" and arch.input != "chip" and arch.has_cut:
                cut = cut_of(arch.train_from)
                if prep.embedding and prep.descriptor_features in CUTS and prep.descriptor_features != cut:
                    raise ValueError(
                        f"grid.models.{n}.architecture: face_resnet with train_from {arch.train_from} reads the "
                        f"activations at {cut}, but preprocessing names descriptor_features "
                        f"{prep.descriptor_features} (leave descriptor_features out, or give {cut})")
                continue
            if arch.type == "face_resnet":
                wrong = chip_mismatch(prep)
                if wrong:
                    raise ValueError(
                        f"grid.models.{n}.architecture: face_resnet reads the aligned {INPUT_SIZE}x{INPUT_SIZE} "
                        "RGB chip as dlib does (preprocessing: {representation: pixels, align: dlib, size: "
                        f"{INPUT_SIZE}, color: rgb, scaling: unit}}), but preprocessing has " +
                        ", ".join(f"{key}: {value}" for key, value in wrong.items()) +
                        f" (with train_from {arch.train_from}{' and input chip' if arch.input == 'chip' else ''}; "
                        "a train_from of level0..level3 with weights dlib trains from the cached cut instead)")
                continue
            if prep.embedding and arch.type != "fcn":
                raise ValueError(
                    f"grid.models.{n}.architecture: {arch.type!r} needs a pixel grid, but preprocessing."
                    f"representation {prep.representation!r} gives "
                    f"{' x '.join(map(str, prep.shape))} numbers per face (allowed: fcn, or face_resnet "
                    "with a train_from of level0..level3, trained from the cached cut)")
        _check_face_resnet_weights(self)
        return self

    @model_validator(mode="after")
    def _space_names_what_it_sets(self):
        if self.space and self.search is None:
            raise ValueError("space: needs search: (a sampler to choose from it); a grid lists its values in "
                             "grid.training")
        if self.search is None:
            return self
        if self.include or self.exclude:
            raise ValueError("search: chooses configurations itself; include and exclude are for grids")
        varies = (len(self.grid.models) > 1 or self.space
                  or any(isinstance(v, list) and len(v) > 1 for v in self.grid.training.values()))
        if not varies:
            raise ValueError("search: nothing varies (give space:, lists in grid.training, or several grid models)")
        if self.split.val_fraction == 0:
            raise ValueError(f"search.metric: {self.search.metric} is a validation measure, and split.val_fraction "
                             "is 0 (no validation faces); the sampler must never see test faces")
        for key, dimension in self.space.items():
            where = f"space.{key}"
            if key.startswith(TRAINING_PREFIX):
                name = key[len(TRAINING_PREFIX):]
                if name not in TRAINING_KEYS:
                    raise ValueError(f"{where}: unknown training key {name!r} (allowed: {list(TRAINING_KEYS)})")
                if isinstance(self.grid.training.get(name), list):
                    raise ValueError(f"{where}: grid.training.{name} lists values too; say it in one place")
                check = lambda value, name=name: TrainingSpec(**{name: value})  # noqa: E731
            elif key.startswith(ARCHITECTURE_PREFIX):
                name = key[len(ARCHITECTURE_PREFIX):]
                lacking = [m.name for m in self.grid.models if name not in type(m.architecture).model_fields]
                if lacking or name == "type":
                    raise ValueError(f"{where}: {name!r} is not a field of the architecture of grid model(s) "
                                     f"{lacking or [m.name for m in self.grid.models]} (a space key sets one field "
                                     "every grid model has)")
                check = lambda value, name=name: [with_architecture(m.spec(), {name: value})  # noqa: E731
                                                  for m in self.grid.models]
            else:
                raise ValueError(f"{where}: a space key starts with {TRAINING_PREFIX!r} or {ARCHITECTURE_PREFIX!r} "
                                 f"(for example training.learning_rate)")
            if self.search.sampler == "grid" and dimension.kind != "choice":
                raise ValueError(f"{where}: sampler grid tries every value, so it needs choice: [...], not "
                                 f"{dimension.kind}")
            values = dimension.choice if dimension.kind == "choice" else list(
                dimension.log_uniform or dimension.uniform or dimension.integer)
            for value in values:
                try:
                    check(value)
                except ValueError as err:
                    raise ValueError(f"{where}: {value!r} is not allowed: {_first_error(err)}") from None
        self._check_curves()
        return self

    def _check_curves(self) -> None:
        """Every configuration has the search metric in its per-epoch validation row, and
        a pruner has epochs past min_epochs to cut."""
        search = self.search
        if search.learn_from != "mean" and search.learn_from not in self.backends:
            raise ValueError(f"search.learn_from: {search.learn_from!r} is neither mean nor one of the experiment's "
                             f"backends {list(self.backends)}")
        if search.metric == "val_age_mae":
            lacking = [m.name for m in self.grid.models if m.head not in YEARS_HEADS]
            if lacking:
                raise ValueError(f"search.metric: val_age_mae is measured only by years heads {list(YEARS_HEADS)}; "
                                 f"grid model(s) {lacking} have none (use val_joint_accuracy or val_loss)")
        if search.pruner == "none":
            return
        epochs = self.grid.training.get("epochs", TrainingSpec().epochs)
        dimension = self.space.get(TRAINING_PREFIX + "epochs")
        if dimension is not None:
            epochs = dimension.choice or list(dimension.integer)
        most = max(epochs) if isinstance(epochs, list) else epochs
        if most <= search.min_epochs:
            raise ValueError(f"search.pruner: {search.pruner} judges per-epoch validation curves after "
                             f"min_epochs {search.min_epochs}, and no configuration trains more than {most} "
                             "epoch(s): nothing could be pruned (more epochs, or pruner: none)")

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


def with_architecture(model: ModelSpec, fields: dict[str, Any]) -> ModelSpec:
    """``model`` with these architecture fields set, validated as a written one is (so a
    configuration a search chooses has the trial ids the same grid's would have)."""
    if not fields:
        return model
    architecture = type(model.architecture).model_validate({**model.architecture.model_dump(), **fields})
    return ModelSpec(architecture=architecture, head=model.head)


def _first_error(err: ValueError) -> str:
    errors = getattr(err, "errors", None)
    if callable(errors):
        first = errors()[0]
        return f"{'.'.join(map(str, first['loc']))}: {first['msg']}" if first.get("loc") else first["msg"]
    return str(err)


def split_rounds(split: SplitSpec) -> list[int]:
    """The rounds a split protocol makes, known before any data is read."""
    if split.protocol == "random":
        return [0]
    return list(range(ADIENCE_FOLDS if split.protocol == "adience_folds" else split.folds))


def _check_face_resnet_weights(experiment) -> None:
    """dlib's weights, read once before anything runs when a model or the descriptor
    engine needs them: a missing, truncated or foreign .dat is refused here, naming the key,
    not in the first trial's worker."""
    prep = experiment.preprocessing
    needs = [f"grid.models.{n}.architecture.weights: dlib" for n, model in enumerate(experiment.grid.models)
             if model.architecture.type == "face_resnet" and model.architecture.weights == "dlib"]
    if prep.embedding and prep.descriptor_engine != "dlib":
        needs.append(f"preprocessing.descriptor_engine: {prep.descriptor_engine}")
    if not needs:
        return
    from harness.models.dlib_weights import DatError, read_face_resnet

    try:
        read_face_resnet()
    except DatError as err:
        raise ValueError(f"{needs[0]} needs dlib's face ResNet weights: {err} (allowed: weights dlib with a "
                         "readable dlib_face_recognition_resnet_model_v1.dat, or weights none; descriptor_engine "
                         "dlib reads them through dlib itself)") from None
