"""Searched experiments (issue 26): the schema refuses what cannot run, a configuration
chosen by a sampler has the trial ids a grid gives it, and a search killed with SIGKILL
resumes with every configuration trained once."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from harness.runs import experiment_file, grid
from harness.runs.experiment import ExperimentError
from tests.helpers.experiments import ROOT, TINY, write

SEARCH = {**TINY, "search": {"sampler": "random", "trials": 3, "seed": 0},
          "space": {"training.learning_rate": {"log_uniform": [1e-4, 1e-2]}}}


@pytest.mark.parametrize("change,message", [
    ({"space": {"training.learnig_rate": {"uniform": [0.1, 0.2]}}}, "space.training.learnig_rate: unknown training key"),
    ({"space": {"training.learning_rate": {"uniform": [0.2, 0.1]}}}, "uniform: low must be below high, got [0.2, 0.1]"),
    ({"space": {"training.learning_rate": {"log_uniform": [0.0, 0.1]}}}, "log_uniform: both bounds must be positive"),
    ({"space": {"model.architecture.widths": {"choice": [[32]]}}}, "choice needs at least two distinct values"),
    ({"space": {"model.architecture.filters": {"choice": [[4], [8]]}}}, "'filters' is not a field of the architecture"),
    ({"space": {"learning_rate": {"uniform": [0.1, 0.2]}}}, "a space key starts with 'training.'"),
    ({"space": {"training.learning_rate": {"uniform": [0.001, 20.0]}}}, "20.0 is not allowed: learning_rate"),
    ({"search": {"sampler": "random", "trials": 0}}, "search.trials"),
    ({"search": {"sampler": "tpe"}}, "trials: sampler tpe needs a budget"),
    ({"search": {"sampler": "grid"}}, "sampler grid tries every value, so it needs choice"),
    ({"search": {"sampler": "random", "trials": 2, "pruner": "median", "min_epochs": 5}}, "nothing could be pruned"),
    ({"split": {"protocol": "random", "val_fraction": 0.0}}, "split.val_fraction is 0"),
    ({"search": None}, "space: needs search:"),
])
def test_a_search_that_cannot_run_is_refused_on_load_naming_the_key(tmp_path, change, message):
    experiment = {k: v for k, v in {**SEARCH, **change}.items() if v is not None}
    path = write(tmp_path, experiment)
    with pytest.raises(ExperimentError) as err:
        experiment_file.load(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_a_configuration_a_sampler_chooses_has_the_trial_ids_the_grid_gives_it(tmp_path):
    from harness.runs import search

    lists = {"learning_rate": [0.01, 0.001], "batch_size": [16, 32], "epochs": 2}
    gridded = experiment_file.load(write(tmp_path, {**TINY, "grid": {**TINY["grid"], "training": lists}}))
    searched = experiment_file.load(write(tmp_path, {**TINY, "grid": {**TINY["grid"], "training": lists},
                                                     "search": {"sampler": "grid"}}, "searched.yaml"))
    locate = lambda prep: ("/x", {0: "d0", 1: "d1"})  # noqa: E731
    expected = {t.trial_id for t in grid.expand(gridded, locate)}
    space = search.dimensions(searched)
    assert set(space) == {"training.learning_rate", "training.batch_size"}
    got = set()
    for lr in space["training.learning_rate"].choices:
        for batch in space["training.batch_size"].choices:
            name, spec, training = search.configuration(
                searched, {"training.learning_rate": lr, "training.batch_size": batch})
            checked = grid.check_combination(searched, name, spec, training)
            got |= {t.trial_id for t in grid.trials_of(searched, name, spec, checked, locate)}
    assert got == expected and len(got) == 4 * 2 * 2   # 4 configurations x 2 backends x 2 rounds
    # An architecture field set by the space gives the ids the same field written in the grid gives.
    wide = experiment_file.load(write(tmp_path, {**TINY, "grid": {**TINY["grid"], "models": [
        {"name": "fcn", "architecture": {"type": "fcn", "widths": [64, 32]}}]}}, "wide.yaml"))
    spaced = experiment_file.load(write(tmp_path, {**SEARCH, "space": {
        "model.architecture.widths": {"choice": [[16], [64, 32]]}}}, "spaced.yaml"))
    name, spec, training = search.configuration(spaced, {"model.architecture.widths": "[64, 32]"})
    assert ({t.trial_id for t in grid.trials_of(spaced, name, spec, grid.check_combination(spaced, name, spec,
                                                                                          training), locate)}
            == {t.trial_id for t in grid.expand(wide, locate)})


def _configurations(path, results):
    from harness.runs import search

    study = search.open_study(experiment_file.load(path), results / "tiny")
    return [(t.state.name, t.params, t.user_attrs.get("trial_ids")) for t in study.get_trials()]


@pytest.mark.trains
def test_a_search_killed_at_any_moment_resumes_with_every_configuration_trained_once(tmp_path):
    experiment = {**SEARCH, "backends": ["keras"], "grid": {**TINY["grid"], "training": {"epochs": 1,
                                                                                       "batch_size": 32}}}
    path = write(tmp_path, experiment)
    results = tmp_path / "r"
    env = {**os.environ, "HARNESS_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "harness", "run", str(path), "--results", str(results), "--no-report"]
    runner = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              start_new_session=True)
    deadline, first = time.time() + 300, None
    while time.time() < deadline and first is None:
        done = sorted((results / "tiny" / "trials").glob("*/DONE"))
        first = done[0] if done else None
        time.sleep(0.2)
    assert first is not None, runner.communicate(timeout=5)
    os.killpg(runner.pid, signal.SIGKILL)   # the runner and its workers, mid-search
    runner.wait(timeout=30)
    kept = first.stat().st_mtime_ns

    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert first.stat().st_mtime_ns == kept              # a finished trial is never trained again
    states = _configurations(path, results)
    complete = [(params, ids) for state, params, ids in states if state == "COMPLETE"]
    assert len(complete) == 3 and all(state in ("COMPLETE", "FAIL") for state, _, _ in states)
    trial_ids = [i for _, ids in complete for i in ids]
    assert len(trial_ids) == len(set(trial_ids)) == 3     # three configurations, one trial each, none twice
    records = [json.loads(line) for line in (results / "tiny" / "index.jsonl").read_text().splitlines()]
    completed = [r["trial_id"] for r in records if r["status"] == "completed"]
    assert sorted(set(completed)) == sorted(trial_ids) and len(completed) == len(set(completed))
    assert sorted(json.loads((results / "tiny" / "trials.json").read_text())) == sorted(trial_ids)
    # What an uninterrupted search with the same seed asks, configuration by configuration.
    from harness.runs import search

    loaded = experiment_file.load(path)
    fresh = search.open_study(loaded, tmp_path)
    space = search.dimensions(loaded)
    for spent in range(3):
        fresh.sampler = search.sampler_for(loaded.search, space, spent)
        fresh.tell(fresh.ask(space), 0.5)
    assert [params for params, _ in complete] == [t.params for t in fresh.get_trials()]
    # The report's search section, from search.csv: every configuration in the order asked,
    # the interrupted one listed as failed, the best so far never worse.
    import pandas as pd

    from harness.analysis.report import write_report

    history = pd.read_csv(results / "tiny" / "search.csv")
    assert (history["state"] == "complete").sum() == 3 and history["best_so_far"].dropna().is_monotonic_increasing
    text = (write_report(results / "tiny")).read_text()
    assert "## Search" in text and text.count("| complete |") == 3
    assert "search_history.png" in text
    assert "search_slices.png" in text
    # Run again: nothing is left to do, and nothing is retrained.
    third = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0 and "0 completed, 0 failed, 0 already done" in third.stdout


def test_what_mattered_is_optunas_fanova_over_the_scored_configurations_with_a_slice_each(tmp_path):
    import optuna
    import optuna.distributions as d
    import pandas as pd

    from harness.analysis.report.search_section import search_sections
    from harness.runs import search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    space = {"training.learning_rate": d.FloatDistribution(1e-4, 1e-1, log=True),
             "model.architecture.widths": d.CategoricalDistribution(['[16]', '[64, 32]'])}
    for n in range(12):
        trial = study.ask(space)
        # The score follows the learning rate; the widths do nothing.
        study.tell(trial, -abs(math.log10(trial.params["training.learning_rate"]) + 2.5))
    pruned = study.ask(space)
    pruned.report(-9.0, 1)
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    search._record_current(tmp_path, study)
    importance = pd.read_csv(tmp_path / "search_importance.csv").set_index("parameter")["importance"]
    assert importance["training.learning_rate"] > 0.5 > importance["model.architecture.widths"]
    history = pd.read_csv(tmp_path / "search.csv")
    assert list(history["state"]).count("complete") == 12 and history["state"].iloc[-1] == "pruned"
    stored = {"search": {"sampler": "tpe", "metric": "val_loss", "pruner": "median"},
              "space": {"training.learning_rate": {"log_uniform": [1e-4, 1e-1], "uniform": None}}}
    (tmp_path / "tables").mkdir()
    sections, plots = search_sections(tmp_path, stored, tmp_path / "tables", tmp_path / "plots")
    titles = [title for title, _, _ in sections]
    assert titles == ["Search", "Pruned configurations", "What mattered in the search"]
    assert len(sections[0][2]) == 12 and len(sections[1][2]) == 1   # the pruned one listed apart only
    assert sorted(p.name for p in plots) == ["search_history.png", "search_importance.png", "search_slices.png"]


def test_fewer_than_two_distinct_scores_give_no_importance(tmp_path):
    import optuna

    from harness.runs import search

    study = optuna.create_study()
    for _ in range(3):
        study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), 0.5)
    (tmp_path / "search_importance.csv").write_text("stale")
    search._record_current(tmp_path, study)
    assert not (tmp_path / "search_importance.csv").exists()


def test_sampler_grid_asks_every_point_once_though_each_batch_has_its_own_sampler(tmp_path):
    """The search makes a sampler per batch; the grid sampler's order is a shuffle by its
    seed and its ids index that order, so a sampler reseeded per batch asked a point twice.
    The last point told must not stop the study either (Study.stop works only in optimize)."""
    import optuna

    from harness.runs import search
    from harness.runs.search_space import SearchSpec

    spec = SearchSpec(sampler="grid", seed=3)
    space = {"x": optuna.distributions.CategoricalDistribution(["1", "2", "3", "4", "5", "6"])}
    study = optuna.create_study(sampler=search.sampler_for(spec, space, 0))
    asked = []
    for spent in range(6):
        study.sampler = search.sampler_for(spec, space, spent)
        trial = study.ask(space)
        asked.append(trial.params["x"])
        study.tell(trial, 0.5)
    assert sorted(asked) == ["1", "2", "3", "4", "5", "6"]
