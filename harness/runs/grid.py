"""Grid expansion: an experiment -> its trials, (model x training grid, plus includes, minus
excludes) x backends x rounds. Each trial's id is a hash of its fully resolved config, so
it is the same in every run."""
from __future__ import annotations

from typing import Callable

from pydantic import BaseModel, ConfigDict, ValidationError
from sklearn.model_selection import ParameterGrid

from harness.data.images import Preprocessing
from harness.models.heads import SOFT_AGE_HEADS, YEARS_HEADS, part_losses
from harness.models.spec import Augmentation, ModelSpec, TrainingSpec
from harness.runs.experiment import Exclude, Experiment
from harness.runs.model_inputs import chip_mismatch, model_inputs
from harness.runs.trial import TrialConfig

__all__ = ["Trial", "expand", "trials_of", "check_combination", "inputs_needed", "baseline_combination", "exact_age_uses", "group_uses"]


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


def expand_specs(experiment: Experiment) -> list[dict]:
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
        check_combination(experiment, combo["model"], models[combo["model"]].spec(), combo["training"])
    return combos


def check_combination(experiment: Experiment, name: str, spec: ModelSpec, training_dict: dict) -> TrainingSpec:
    """One combination (grid model ``name`` as ``spec``, these training values) checked the
    way every combination of a grid is, raising ValueError naming the key; its training."""
    where = f"model {name!r} with training {training_dict}"
    try:
        training = TrainingSpec(**training_dict)
    except ValidationError as err:
        first = err.errors()[0]
        message = first["msg"]
        if first["type"] == "extra_forbidden" and first["loc"][0] == "augmentation":
            message = f"unknown augmentation key (allowed: {list(Augmentation.model_fields)})"
        raise ValueError(f"grid.training.{'.'.join(map(str, first['loc']))}: "
                         f"{message} ({where})") from None
    head = spec.head
    try:
        part_losses(head, training.loss)
    except ValueError as err:
        raise ValueError(f"training.loss: {err} ({where})") from None
    arch = spec.architecture
    if training.pretrained_lr_scale != 1.0 and not (arch.type == "face_resnet" and arch.fine_tunes):
        raise ValueError(f"training.pretrained_lr_scale: scales the rate of a pretrained face network's levels "
                         f"that train, and {name!r} has none (allowed: a face_resnet with weights dlib "
                         f"and a train_from other than head; {where})")
    resolved, prep = model_inputs(experiment.preprocessing, spec, training)
    if training.augments and prep.embedding:
        if resolved.architecture.type == "face_resnet":
            raise ValueError(f"training.augmentation: changes pixels, but the model reads the activations at "
                             f"{resolved.architecture.reads}, computed once and cached; give the architecture "
                             f"input: chip to run its frozen part on every augmented epoch ({where})")
        raise ValueError(f"training.augmentation: changes pixels, but preprocessing.representation "
                         f"{experiment.preprocessing.representation!r} feeds the model face "
                         f"descriptors; use embedding_flip for a mirrored face ({where})")
    if resolved.architecture.type == "face_resnet" and not prep.embedding and chip_mismatch(prep):
        raise ValueError(f"grid.models: {name!r} reads the aligned chip (its training augments the "
                         f"pixels, so the cached cut cannot be used), but preprocessing has "
                         + ", ".join(f"{k}: {v}" for k, v in chip_mismatch(prep).items())
                         + f" (the chip: representation pixels, align dlib, size 150, color rgb, scaling unit; "
                           f"{where})")
    for key, watched in (("early_stopping", training.early_stopping),
                         ("schedule", training.schedule if training.schedule and training.schedule.kind == "plateau"
                          else None)):
        if watched is not None and watched.metric == "val_age_mae" and head not in YEARS_HEADS:
            raise ValueError(f"training.{key}.metric: val_age_mae needs a head that predicts years "
                             f"(allowed: {list(YEARS_HEADS)}), not {head!r}; use val_joint_accuracy or "
                             f"val_loss ({where})")
    if training.age_target == "soft" and head not in SOFT_AGE_HEADS:
        raise ValueError(f"training.age_target: soft needs a head with an age softmax "
                         f"(allowed: {list(SOFT_AGE_HEADS)}), not {head!r} ({where})")
    return training


def baseline_combination(experiment: Experiment, combos: list[dict] | None = None) -> dict | None:
    """The one combination ``baseline:`` names ({model, training}), or None when none is named.

    The baseline must pick exactly one combination of the grid as run, so that every
    comparison against it is between two things that were both trained.
    """
    pattern = experiment.baseline
    if pattern is None:
        return None
    combos = expand_specs(experiment) if combos is None else combos
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
    if any(TrainingSpec(**c["training"]).age_target == "soft" for c in expand_specs(experiment)):
        uses.append("training.age_target: soft")
    if experiment.gate is not None:
        uses.append("gate")
    uses += [f"grid.models {m.name}: head {m.head} (age in years)" for m in experiment.grid.models
             if m.head in YEARS_HEADS]
    return uses


def group_uses(experiment: Experiment) -> list[str]:
    """The experiment's keys that need every training face's group (UTKFace's race)."""
    return (["training.balance: group"] if any(TrainingSpec(**c["training"]).balance == "group"
                                                for c in expand_specs(experiment)) else [])


class Trial(BaseModel):
    """A trial is pure data: its label for reports, and its fully resolved config."""

    model_config = ConfigDict(frozen=True)

    trial_id: str
    model_name: str
    config: TrialConfig


def _resolved(experiment: Experiment):
    """(combination, its training with the seed), in order."""
    seeds = [{"seed": seed} for seed in experiment.seeds] if experiment.seeds else [{}]
    for combo, seed in ((c, s) for c in expand_specs(experiment) for s in seeds):
        yield combo, TrainingSpec(**combo["training"], **seed)


def inputs_needed(experiment: Experiment) -> list[Preprocessing]:
    """Every preprocessing the experiment's trials read (each one cache entry), in order:
    the experiment's own, and the cut of each face network trained from one."""
    models = {m.name: m for m in experiment.grid.models}
    needed: list[Preprocessing] = []
    for combo, training in _resolved(experiment):
        _, prep = model_inputs(experiment.preprocessing, models[combo["model"]].spec(), training)
        if prep not in needed:
            needed.append(prep)
    return needed


# preprocessing -> (the cache entry holding its arrays, round -> identity of the data that
# round reads: see harness.runs.trial.data_fingerprint)
Locate = Callable[[Preprocessing], tuple[str, dict[int, str]]]


def trials_of(experiment: Experiment, model_name: str, spec: ModelSpec, training: TrainingSpec,
              locate: Locate) -> list[Trial]:
    """One configuration's trials: every backend on every round ``locate`` gives."""
    model, prep = model_inputs(experiment.preprocessing, spec, training)
    cache_entry, fingerprints = locate(prep)
    trials = []
    for backend in experiment.backends:
        for round_, fingerprint in sorted(fingerprints.items()):
            config = TrialConfig(
                backend=backend, model=model, training=training, preprocessing=prep, round=round_,
                threshold=experiment.threshold, threads=experiment.resolved_threads(), gate=experiment.gate,
                data_fingerprint=fingerprint, cache_entry=cache_entry)
            trials.append(Trial(trial_id=config.trial_id(), model_name=model_name, config=config))
    return trials


def expand(experiment: Experiment, locate: Locate) -> list[Trial]:
    """Every trial of the experiment, in a stable order, duplicates removed. The rounds to
    run are the keys ``locate`` gives."""
    models = {m.name: m for m in experiment.grid.models}
    trials, seen = [], set()
    for combo, training in _resolved(experiment):
        for trial in trials_of(experiment, combo["model"], models[combo["model"]].spec(), training, locate):
            if trial.trial_id not in seen:
                seen.add(trial.trial_id)
                trials.append(trial)
    return trials
