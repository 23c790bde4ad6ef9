"""A searched experiment: Optuna chooses configurations, the harness runs them.

Each configuration Optuna asks for becomes ordinary trials (:func:`harness.runs.grid.trials_of`):
every backend on every round listed, with the ids a grid with the same values would give,
run by the same executors in reused workers. The sampler is told the mean over those
trials of the search's validation metric, at the epoch each trial kept; a configuration
with a failed trial is told it failed. The study lives in the results folder as Optuna's
journal file (no server): a run killed at any moment resumes where it stopped, the
configurations it was training asked again first (their finished trials are not
retrained), so every configuration is trained once.

The sampler learns from configurations in batches: as many as ``--workers`` slots can
train side by side (``--workers`` over each configuration's trials, at least one; one at a
time with Ray), so that a configuration's trials run together and a pruner can stop them
together (:mod:`harness.runs.pruning`). With the same seed and the same ``--workers`` the
same configurations are asked in the same order, because each batch is asked before any
of it is told and a trial's numbers do not depend on which finished first. A sampler that
asks for a configuration already trained (random search over few choices can) finds its
trials finished: it is told the same score again, and that costs budget, not training.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from harness.files import write_atomic
from harness.runs.experiment import Experiment
from harness.runs.grid import Trial, check_combination, trials_of
from harness.runs.index import trial_dir
from harness.runs.layout import (
    CURRENT_TRIALS_FILE,
    PRUNE_FILE,
    SEARCH_FILE,
    SEARCH_IMPORTANCE_FILE,
    SEARCH_TABLE_FILE,
    finished,
)
from harness.runs.pruning import PruningMonitor, pruner_for
from harness.runs.search_space import ARCHITECTURE_PREFIX, TRAINING_PREFIX, SearchSpec
from harness.runs.trial import final_validation

__all__ = ["search", "dimensions", "configuration", "open_study", "sampler_for", "MODEL_KEY"]

MODEL_KEY = "model"             # the grid model, a choice when the grid has several
TRIAL_IDS_ATTR = "trial_ids"    # an Optuna trial's harness trials
FAILED_ATTR = "failed"          # why a configuration failed (an interrupted one has none)
PRUNED_ATTR = "pruned_at_epoch" # the step at which the pruner stopped a configuration


def _encoded(values: list) -> list[str]:
    # Optuna's choices are scalars; a value such as widths [512, 256] travels as JSON.
    return [json.dumps(v, sort_keys=True) for v in values]


def dimensions(experiment: Experiment) -> dict:
    """name -> Optuna distribution: the grid model (when several), every list in
    grid.training, and the space."""
    import optuna.distributions as d

    out = {}
    if len(experiment.grid.models) > 1:
        out[MODEL_KEY] = d.CategoricalDistribution(_encoded([m.name for m in experiment.grid.models]))
    for key, value in experiment.grid.training.items():
        if isinstance(value, list) and len(value) > 1:
            out[TRAINING_PREFIX + key] = d.CategoricalDistribution(_encoded(value))
    for key, dim in experiment.space.items():
        if dim.kind == "choice":
            out[key] = d.CategoricalDistribution(_encoded(dim.choice))
        elif dim.kind == "int":
            out[key] = d.IntDistribution(*dim.integer)
        else:
            out[key] = d.FloatDistribution(*(dim.log_uniform or dim.uniform), log=dim.kind == "log_uniform")
    return out


def configuration(experiment: Experiment, params: dict) -> tuple[str, object, dict]:
    """Optuna's params -> (grid model name, its spec, training values), as a grid
    combination would be written."""
    from harness.runs.experiment import with_architecture

    decoded = {k: json.loads(v) if isinstance(v, str) else v for k, v in params.items()}
    models = {m.name: m for m in experiment.grid.models}
    name = decoded.get(MODEL_KEY, experiment.grid.models[0].name)
    training = {k: (v[0] if isinstance(v, list) and len(v) == 1 else v) for k, v in experiment.grid.training.items()}
    architecture = {}
    for key, value in decoded.items():
        if key.startswith(TRAINING_PREFIX):
            training[key[len(TRAINING_PREFIX):]] = value
        elif key.startswith(ARCHITECTURE_PREFIX):
            architecture[key[len(ARCHITECTURE_PREFIX):]] = value
    return name, with_architecture(models[name].spec(), architecture), training


def sampler_for(spec: SearchSpec, space: dict, spent: int = 0):
    """The sampler for the batch after ``spent`` configurations, seeded by the search's seed
    and ``spent``: a sampler's random state does not survive its process, and one seeded
    afresh on resuming would ask its first configurations again. Every sampler's other
    state lives in the study (its trials), so a resumed search asks what an uninterrupted
    one would have."""
    import optuna

    if spec.sampler == "grid":   # its order is a shuffle by the seed, its ids index it: one seed throughout
        return _grid_sampler({k: list(dist.choices) for k, dist in space.items()}, spec.seed)
    seed = spec.seed * 1_000_003 + spent
    return {"random": lambda: optuna.samplers.RandomSampler(seed=seed),
            "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
            "gp": lambda: optuna.samplers.GPSampler(seed=seed),
            "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False),
            }[spec.sampler]()


def _grid_sampler(search_space: dict, seed: int):
    """Optuna's grid sampler without its stop at the last grid point: ``Study.stop`` works
    only inside ``optimize``, and this loop (ask and tell) ends at its own budget."""
    import optuna

    class GridSampler(optuna.samplers.GridSampler):
        def after_trial(self, study, trial, state, values) -> None:
            return None

    return GridSampler(search_space, seed=seed)


def open_study(experiment: Experiment, results_dir: Path, space: dict | None = None):
    """The experiment's study in ``results_dir/search.journal`` (created or reopened)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(results_dir / SEARCH_FILE)))
    return optuna.create_study(study_name=experiment.name, storage=storage, load_if_exists=True,
                               sampler=sampler_for(experiment.search, space if space is not None else dimensions(experiment)),
                               pruner=pruner_for(experiment.search, _fixed_epochs(experiment)),
                               direction=experiment.search.direction)


def _fixed_epochs(experiment: Experiment) -> int | None:
    """The epochs every configuration trains, when the search does not vary them."""
    epochs = experiment.grid.training.get("epochs")
    if isinstance(epochs, list) or TRAINING_PREFIX + "epochs" in experiment.space:
        return None
    from harness.models.spec import TrainingSpec

    return epochs if epochs is not None else TrainingSpec().epochs


def _budget(experiment: Experiment, space: dict) -> int:
    if experiment.search.trials is not None:
        return experiment.search.trials
    return math.prod(len(dist.choices) for dist in space.values()) if space else 1


def _counted(trial) -> bool:
    """A configuration that used up budget: told its score, pruned, or failed for a reason
    of its own (not merely interrupted)."""
    import optuna

    return trial.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) or (
        trial.state == optuna.trial.TrialState.FAIL and FAILED_ATTR in trial.user_attrs)


def _resume(study) -> None:
    """Configurations a killed run was training: failed without a reason, then asked again
    first (with the same values, so their finished trials are found, not retrained)."""
    import optuna

    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, skip_if_exists=False)


def judged(experiment: Experiment, trials: list[Trial]) -> list[Trial]:
    """The trials of a configuration the sampler and pruner judge it by (``learn_from``)."""
    learn_from = experiment.search.learn_from
    return trials if learn_from == "mean" else [t for t in trials if t.config.backend == learn_from]


def _score(results_dir: Path, trials: list[Trial], metric: str) -> float | None:
    values = [final_validation(trial_dir(results_dir, t.trial_id), metric) for t in trials]
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)


def _record_current(results_dir: Path, study) -> None:
    """The report's trials (``trials.json``) and the search's history (``search.csv``:
    every configuration in the order asked, its score and the best so far), as plain data."""
    import pandas as pd

    trials = study.get_trials(deepcopy=False)
    ids = sorted({i for t in trials for i in t.user_attrs.get(TRIAL_IDS_ATTR, [])})
    write_atomic(results_dir / CURRENT_TRIALS_FILE, lambda p: p.write_text(json.dumps(ids, indent=0)))
    best, rows = None, []
    maximize = study.direction.name == "MAXIMIZE"
    for t in trials:
        if t.value is not None and (best is None or (t.value > best if maximize else t.value < best)):
            best = t.value
        rows.append({"configuration": t.number + 1, "state": t.state.name.lower(), "value": t.value,
                     "best_so_far": best if t.value is not None or best is not None else None,
                     "params": json.dumps({k: json.loads(v) if isinstance(v, str) else v for k, v in t.params.items()},
                                          sort_keys=True),
                     "pruned_at_epoch": t.user_attrs.get(PRUNED_ATTR),
                     "trial_ids": " ".join(t.user_attrs.get(TRIAL_IDS_ATTR, [])),
                     "why_failed": t.user_attrs.get(FAILED_ATTR, "")})
    frame = pd.DataFrame(rows, columns=["configuration", "state", "value", "best_so_far", "params",
                                        "pruned_at_epoch", "trial_ids", "why_failed"])
    write_atomic(results_dir / SEARCH_TABLE_FILE, lambda p: frame.to_csv(p, index=False))
    _record_importance(results_dir, study)


def _record_importance(results_dir: Path, study) -> None:
    """``search_importance.csv``: Optuna's fANOVA importance of each searched value over the
    configurations told a score (pruned ones are not), once at least two differ."""
    import optuna
    import pandas as pd

    path = results_dir / SEARCH_IMPORTANCE_FILE
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    varied = {name for name in (complete[0].params if complete else {})
              if len({json.dumps(t.params.get(name)) for t in complete}) > 1}
    if len(complete) < 2 or not varied or len({t.value for t in complete}) < 2:
        path.unlink(missing_ok=True)
        return
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    importances = optuna.importance.get_param_importances(study, evaluator=evaluator, params=sorted(varied))
    frame = pd.DataFrame({"parameter": list(importances), "importance": list(importances.values())})
    write_atomic(path, lambda p: frame.to_csv(p, index=False))


def _monitor(experiment: Experiment, results_dir: Path, chosen: list):
    """The batch's pruning monitor (a context that does nothing without a pruner)."""
    import contextlib

    if experiment.search.pruner == "none":
        return contextlib.nullcontext()
    monitor = PruningMonitor(experiment.search.metric)
    for trial, trials in chosen:
        run_dirs = [trial_dir(results_dir, t.trial_id) for t in trials]
        # A configuration asked again whose trials all finished before is told what it was
        # told then: judging its curves anew could mark a finished configuration pruned.
        if not all(finished(d, t.trial_id) for d, t in zip(run_dirs, trials)):
            monitor.watch(trial, run_dirs, [trial_dir(results_dir, t.trial_id) for t in judged(experiment, trials)])
    return monitor


def _pruned_at(results_dir: Path, trials: list[Trial]) -> int | None:
    """The epoch at which the configuration was pruned, or None. The trial folders say
    (``PRUNE``), also for a configuration pruned by a run that was then killed."""
    marks = [trial_dir(results_dir, t.trial_id) / PRUNE_FILE for t in trials]
    steps = [int(m.read_text().split()[-1]) for m in marks if m.is_file()]
    return min(steps) if steps else None


def search(experiment: Experiment, results_dir: Path, executor, prepared, progress: bool = True) -> dict:
    """Ask, run, tell until the budget of configurations is spent. Returns the runner's
    counts plus ``configurations`` (told this run) and ``failed_configurations``."""
    import optuna

    from harness.runs.runner import record_finished, run_trials

    space = dimensions(experiment)
    study = open_study(experiment, results_dir, space)
    _resume(study)
    _record_current(results_dir, study)   # the report's trials, also when nothing is left to run
    budget = _budget(experiment, space)
    per_configuration = len(experiment.backends) * max(1, len(prepared.rounds))
    batch_size = max(1, getattr(executor, "workers", 1) // per_configuration)   # one at a time on Ray
    totals = {"completed": 0, "failed": 0, "already_done": 0, "configurations": 0, "failed_configurations": 0,
              "pruned_configurations": 0}
    while (spent := sum(_counted(t) for t in study.get_trials(deepcopy=False))) < budget:
        study.sampler = sampler_for(experiment.search, space, spent)
        asked = [study.ask(space) for _ in range(min(batch_size, budget - spent))]
        chosen = []
        for trial in asked:
            name, spec, training = configuration(experiment, trial.params)
            try:
                checked = check_combination(experiment, name, spec, training)
                trials = trials_of(experiment, name, spec, checked, prepared.locate)
            except ValueError as err:   # a combination the space allows but the harness refuses
                trial.set_user_attr(FAILED_ATTR, str(err))
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                totals["failed_configurations"] += 1
                continue
            trial.set_user_attr(TRIAL_IDS_ATTR, [t.trial_id for t in trials])
            chosen.append((trial, trials))
        _record_current(results_dir, study)
        run = [t for _, trials in chosen for t in trials]
        with _monitor(experiment, results_dir, chosen):
            counts = run_trials(experiment, results_dir, executor, prepared, run, progress,
                                desc=f"{experiment.name} (configurations {spent + 1}-{spent + len(asked)} of {budget})")
        for key in ("completed", "failed", "already_done"):
            totals[key] += counts[key]
        for trial, trials in chosen:
            value = _score(results_dir, judged(experiment, trials), experiment.search.metric)
            pruned_at = _pruned_at(results_dir, trials)
            if pruned_at is not None:
                record_finished(results_dir, trials)   # recorded as pruned, whether or not they had ended
                trial.set_user_attr(PRUNED_ATTR, pruned_at)
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                totals["pruned_configurations"] += 1
            elif value is None:
                trial.set_user_attr(FAILED_ATTR, "a trial failed or has no validation score")
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                totals["failed_configurations"] += 1
            else:
                study.tell(trial, value)
                totals["configurations"] += 1
        _record_current(results_dir, study)
    return totals
