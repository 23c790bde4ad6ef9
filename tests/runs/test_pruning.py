"""Pruning a searched configuration (issue 26 §2): the monitor judges the mean curve over a
configuration's trials and writes PRUNE into all of them; a real worker stops before its
next epoch when it finds one; a real search records pruned trials apart, tells Optuna
PRUNED, and its report lists them apart from the finished ones."""
import json
import subprocess
import sys

import optuna
import pandas as pd
import pytest

from harness.runs import experiment_file
from harness.runs.layout import DONE_FILE, HISTORY_FILE, METRICS_FILE, PROGRESS_FILE, PRUNE_FILE
from harness.runs.pruning import PruningMonitor, read_progress
from tests.helpers.experiments import ROOT, TINY, harness_cli, write


def _progress(run_dir, values, metric="val_joint_accuracy"):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / PROGRESS_FILE).write_text("".join(json.dumps({"epoch": e + 1, metric: v}) + "\n"
                                                 for e, v in enumerate(values)))


def _finish(run_dir, values, kept=None, metric="val_joint_accuracy"):
    _progress(run_dir, values, metric)
    pd.DataFrame({"epoch": range(1, len(values) + 1), metric: values}).to_csv(run_dir / HISTORY_FILE, index=False)
    training = {"training": {"epoch_kept": kept}} if kept else {}
    (run_dir / METRICS_FILE).write_text(json.dumps(training))
    (run_dir / DONE_FILE).write_text("x\n")


def _study_with_one_finished(curve):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    first = study.ask()
    for step, value in enumerate(curve, start=1):
        first.report(value, step)
    study.tell(first, curve[-1])
    return study


def test_the_monitor_judges_the_mean_over_every_trial_of_a_configuration_and_prunes_them_all(tmp_path):
    study = _study_with_one_finished([0.5, 0.6, 0.7])
    trial = study.ask()
    keras, tflearn = tmp_path / "keras", tmp_path / "tflearn"
    _progress(keras, [0.2, 0.3])
    monitor = PruningMonitor("val_joint_accuracy")
    monitor.watch(trial, [keras, tflearn])
    monitor.poll()   # tflearn has not ended an epoch: nothing is judged on keras alone
    assert study.trials[1].intermediate_values == {} and not (keras / PRUNE_FILE).exists()
    _progress(tflearn, [0.6])
    monitor.poll()   # step 1: the mean (0.4) is below the finished configuration's 0.5
    assert study.trials[1].intermediate_values == {1: pytest.approx(0.4)}
    assert monitor.pruned_at(trial) == 1
    assert (keras / PRUNE_FILE).read_text() == (tflearn / PRUNE_FILE).read_text() == "pruned at epoch 1\n"


def test_a_trial_that_ended_counts_at_its_kept_value_and_a_good_configuration_is_left_alone(tmp_path):
    study = _study_with_one_finished([0.5, 0.6, 0.7])
    trial = study.ask()
    stopped, running = tmp_path / "stopped", tmp_path / "running"
    _finish(stopped, [0.7, 0.9], kept=2)   # early stopping ended it after two epochs, kept the second
    _progress(running, [0.5, 0.5, 0.6])
    monitor = PruningMonitor("val_joint_accuracy")
    monitor.watch(trial, [stopped, running])
    monitor.poll()
    assert study.trials[1].intermediate_values == {1: pytest.approx(0.6), 2: pytest.approx(0.7),
                                                   3: pytest.approx(0.75)}
    assert monitor.pruned_at(trial) is None and not (running / PRUNE_FILE).exists()
    # Once every trial has ended the search tells the final value itself: no step is reported past the curves.
    _finish(running, [0.5, 0.5, 0.6])
    monitor.poll()
    assert max(study.trials[1].intermediate_values) == 3


def test_a_torn_last_progress_line_is_skipped(tmp_path):
    _progress(tmp_path, [0.1, 0.2])
    with open(tmp_path / PROGRESS_FILE, "a") as out:
        out.write('{"epoch": 3, "val_joint')
    assert [row["epoch"] for row in read_progress(tmp_path)] == [1, 2]


@pytest.mark.parametrize("change,message", [
    ({"pruner": "median", "reduction_factor": 2}, "reduction_factor: pruner median does not use it"),
    ({"pruner": "asha", "startup_configurations": 2}, "startup_configurations: pruner asha does not use it"),
    ({"min_epochs": 2}, "min_epochs: pruner none does not use it"),
    ({"pruner": "asha", "min_epochs": 0}, "search.min_epochs"),
    ({"pruner": "hyperband", "reduction_factor": 1}, "search.reduction_factor"),
    ({"pruner": "median", "min_epochs": 2}, "no configuration trains more than 2 epoch(s): nothing could be pruned"),
    ({"pruner": "successive_halving"}, "search.pruner"),
    ({"metric": "val_age_mae"}, "val_age_mae is measured only by years heads"),
    ({"learn_from": "pytorch"}, "'pytorch' is neither mean nor one of the experiment's backends"),
])
def test_a_pruner_that_cannot_work_is_refused_on_load(tmp_path, change, message):
    from harness.runs.experiment import ExperimentError

    experiment = {**TINY, "search": {"sampler": "random", "trials": 2, **change},
                  "space": {"training.learning_rate": {"log_uniform": [1e-4, 1e-2]}}}
    path = write(tmp_path, experiment)
    with pytest.raises(ExperimentError) as err:
        experiment_file.load(path)
    assert str(path) in str(err.value) and message in str(err.value)


@pytest.mark.trains
@pytest.mark.parametrize("backend", ["keras", "tflearn"])
def test_a_worker_that_finds_prune_stops_after_the_epoch_it_is_in_and_says_so(tmp_path, monkeypatch, backend):
    from harness.runs.prepare import prepare
    from harness.runs.trial import write_trial

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    path = write(tmp_path, {**TINY, "backends": [backend],
                            "grid": {**TINY["grid"], "training": {"epochs": 5, "batch_size": 32}}})
    experiment = experiment_file.load(path)
    prepared = prepare(experiment)
    run_dir = tmp_path / "trial"
    write_trial(run_dir, prepared.trials[0].config, prepared.table, prepared.manifest)
    (run_dir / PRUNE_FILE).write_text("pruned at epoch 1\n")   # there before the first epoch ends
    done = subprocess.run([sys.executable, "-m", "backends.worker", "train", str(run_dir)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((run_dir / METRICS_FILE).read_text())
    # One fit over all epochs (no schedule, no early stopping) looks at the end of each epoch.
    assert metrics["pruned"] == {"epochs_trained": 1} and metrics["training"]["epochs_trained"] == 1
    assert [row["epoch"] for row in read_progress(run_dir)] == [1]
    assert len(pd.read_csv(run_dir / HISTORY_FILE)) == 1 and (run_dir / DONE_FILE).is_file()
    assert "pruned by the search after epoch 1" in (run_dir / "log.txt").read_text()


@pytest.mark.trains
def test_a_search_records_a_pruned_configuration_apart_and_its_report_never_compares_it(tmp_path):
    from harness.runs import search

    good, hopeless = 0.01, 1e-9
    experiment = {**TINY, "grid": {**TINY["grid"], "training": {"epochs": 40, "batch_size": 32}},
                  "search": {"sampler": "grid", "seed": 0, "metric": "val_loss", "pruner": "median",
                             "startup_configurations": 1},
                  "space": {"training.learning_rate": {"choice": [good, hopeless]}}}
    # The seed whose grid order trains the good configuration first (the median pruner
    # needs one finished configuration to compare with).
    for seed in range(20):
        experiment["search"]["seed"] = seed
        loaded = experiment_file.load(write(tmp_path, experiment))
        study = optuna.create_study(sampler=search.sampler_for(loaded.search, search.dimensions(loaded), 0))
        if json.loads(study.ask(search.dimensions(loaded)).params["training.learning_rate"]) == good:
            break
    path = write(tmp_path, experiment)
    results = tmp_path / "r"
    done = harness_cli("run", path, "--results", results, cache=str(tmp_path / "cache"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 configuration(s) told the sampler, 1 pruned, 0 failed" in done.stdout
    folder = results / "tiny"
    states = {json.loads(t.params["training.learning_rate"]): t
              for t in search.open_study(experiment_file.load(path), folder).get_trials()}
    assert states[good].state.name == "COMPLETE" and states[hopeless].state.name == "PRUNED"
    pruned_ids = states[hopeless].user_attrs["trial_ids"]
    records = {}
    for line in (folder / "index.jsonl").read_text().splitlines():
        record = json.loads(line)
        records[record["trial_id"]] = record
    assert {records[i]["status"] for i in pruned_ids} == {"pruned"}
    assert {records[i]["status"] for i in states[good].user_attrs["trial_ids"]} == {"completed"}
    # The second trial of the pruned configuration (trials run one at a time) was stopped early.
    trained = [json.loads((folder / "trials" / i / METRICS_FILE).read_text()).get("pruned") for i in pruned_ids]
    assert any(t is not None and t["epochs_trained"] < 40 for t in trained)
    history = pd.read_csv(folder / "search.csv")
    assert list(history["state"]) == ["complete", "pruned"] and history["pruned_at_epoch"].iloc[1] >= 1
    report = (folder / "report.md").read_text()
    pruned_section = report.split("## Pruned configurations")[1].split("\n## ")[0]
    assert all(f"{i} (" in pruned_section for i in pruned_ids) and "epochs)" in pruned_section
    # The trials table, the framework pairs and best.json hold the finished configuration's trials only.
    assert set(pd.read_csv(folder / "tables" / "trials.csv")["trial_id"]) == set(states[good].user_attrs["trial_ids"])
    assert not any(i in report.split("## Pruned configurations")[0] for i in pruned_ids)
    best = json.loads((folder / "best.json").read_text())
    assert best["trial_id"] in states[good].user_attrs["trial_ids"]
    # Run again: nothing is retrained, and the pruned trials stay pruned.
    again = harness_cli("run", path, "--results", results, "--no-report", cache=str(tmp_path / "cache"))
    assert again.returncode == 0 and "0 completed, 0 failed, 0 already done" in again.stdout


def test_a_finished_configuration_asked_again_is_not_judged_again(tmp_path):
    """A sampler may ask a configuration already trained (random search over few choices
    does). Its trials are finished and its score was told; judging their curves anew
    against configurations that finished since marked a *finished* configuration pruned
    (its trials then vanished from the report). Found in a real TPE + median search."""
    from harness.runs import grid, search
    from harness.runs.index import trial_dir

    experiment = experiment_file.load(write(tmp_path, {
        **TINY, "grid": {**TINY["grid"], "training": {"epochs": 5, "batch_size": 32}},
        "search": {"sampler": "random", "trials": 4, "pruner": "median", "startup_configurations": 1},
        "space": {"training.learning_rate": {"choice": [0.01, 0.001]}}}))
    locate = lambda prep: (str(tmp_path / "cache"), {0: "d0"})  # noqa: E731
    study = _study_with_one_finished([0.5, 0.6, 0.7, 0.8, 0.9])   # a better configuration, finished since
    trial = study.ask(search.dimensions(experiment))
    name, spec, training = search.configuration(experiment, trial.params)
    trials = grid.trials_of(experiment, name, spec, grid.check_combination(experiment, name, spec, training), locate)
    results = tmp_path / "results"
    for t in trials:   # trained before, with a worse curve than the one finished since
        run_dir = trial_dir(results, t.trial_id)
        _finish(run_dir, [0.2, 0.3, 0.3, 0.4, 0.4])
        (run_dir / DONE_FILE).write_text(t.trial_id + "\n")
    with search._monitor(experiment, results, [(trial, trials)]) as monitor:
        monitor.poll()
    assert not any((trial_dir(results, t.trial_id) / PRUNE_FILE).exists() for t in trials)
    assert study.trials[-1].intermediate_values == {}


def test_learn_from_one_backend_judges_by_its_trials_and_still_prunes_every_backend(tmp_path):
    from harness.runs import grid, search

    experiment = experiment_file.load(write(tmp_path, {
        **TINY, "search": {"sampler": "random", "trials": 2, "learn_from": "tflearn"},
        "space": {"training.learning_rate": {"choice": [0.01, 0.001]}}}))
    name, spec, training = search.configuration(experiment, {"training.learning_rate": "0.01"})
    trials = grid.trials_of(experiment, name, spec, grid.check_combination(experiment, name, spec, training),
                            lambda prep: ("/x", {0: "d0"}))
    assert [t.config.backend for t in search.judged(experiment, trials)] == ["tflearn"]
    study = _study_with_one_finished([0.5, 0.6])
    trial = study.ask()
    keras, tflearn = tmp_path / "keras", tmp_path / "tflearn"
    _progress(keras, [0.9])      # good on Keras ...
    _progress(tflearn, [0.1])    # ... hopeless on the backend the search learns from
    monitor = PruningMonitor("val_joint_accuracy")
    monitor.watch(trial, [keras, tflearn], [tflearn])
    monitor.poll()
    assert study.trials[1].intermediate_values == {1: pytest.approx(0.1)} and monitor.pruned_at(trial) == 1
    assert (keras / PRUNE_FILE).is_file() and (tflearn / PRUNE_FILE).is_file()
