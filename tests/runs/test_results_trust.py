"""Results that cannot be silently wrong: trial identity covers the data, a dry run and a
refused run write nothing, --workers changes no number, and a damaged results folder is
reported and repaired, not trusted."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from harness.runs import experiment_file, prepare
from harness.runs.index import read_index
from harness.runs.layout import INDEX_FILE
from tests.helpers.experiments import TINY, harness_cli, write

KERAS_TWO = {**TINY, "backends": ["keras"],
             "grid": {**TINY["grid"], "training": {"epochs": [1, 2], "batch_size": 32}}}


def tree(path):
    """Every file under ``path`` with its bytes: to show that nothing changed."""
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def utkface_folder(folder, utkface_sample, per_class=10):
    """A UTKFace-style folder of real faces (links to the shared files), every class present."""
    folder.mkdir()
    for path in utkface_sample.groupby(["age_group", "gender"]).head(per_class)["path"]:
        (folder / path.rsplit("/", 1)[-1]).symlink_to(path)
    return folder


def change_pixels(folder):
    """Same file name, other pixels: the first face mirrored."""
    victim = sorted(folder.iterdir())[0]
    mirrored = Image.open(victim).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    victim.unlink()
    mirrored.save(victim, format="JPEG")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A small finished experiment: two Keras trials, run once with --workers 1."""
    base = tmp_path_factory.mktemp("finished")
    path = write(base, KERAS_TWO)
    result = harness_cli("run", path, "--results", base / "r", cache=str(base / "cache"))
    assert result.returncode == 0, result.stderr[-3000:]
    return {"base": base, "yaml": path, "results": base / "r" / "tiny", "cache": str(base / "cache")}


def copy_results(finished, tmp_path):
    target = tmp_path / "r" / "tiny"
    shutil.copytree(finished["results"], target, symlinks=True)
    return target


# --- 1. a trial's identity covers its data ------------------------------------------------

def test_trial_ids_change_with_every_part_of_the_data(tmp_path, utkface_sample, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    folder = utkface_folder(tmp_path / "faces", utkface_sample)
    base = {**KERAS_TWO, "data": {"dataset": "utkface", "path": str(folder)}}

    def ids(experiment):
        return [t.trial_id for t in prepare.prepare(experiment_file.load(write(tmp_path, experiment)),
                                                  dry_run=True).trials]

    reference = ids(base)
    variants = {
        "limit": {**base, "data": {**base["data"], "limit": 130}},
        "split seed": {**base, "split": {**base["split"], "seed": 1}},
        "validation share": {**base, "split": {**base["split"], "val_fraction": 0.3}},
        "protocol": {**base, "split": {"protocol": "stratified_kfold", "folds": 2, "val_fraction": 0.2},
                     "rounds": [0]},
        "threads": {**base, "threads": 1},
    }
    for what, experiment in variants.items():
        assert not set(ids(experiment)) & set(reference), f"{what} did not change the trial ids"
    # The same files under another folder are other data too.
    other = tmp_path / "faces_copy"
    shutil.copytree(folder, other, symlinks=True)
    assert not set(ids({**base, "data": {**base["data"], "path": str(other)}})) & set(reference)
    # So is a changed image file under the same name.
    change_pixels(folder)
    assert not set(ids(base)) & set(reference)
    assert ids(base) == ids(base), "ids must be stable"


@pytest.mark.trains
def test_a_changed_experiment_is_refused_then_run_anew_or_overwritten(finished, tmp_path):
    results = copy_results(finished, tmp_path)
    before = tree(results)
    changed = {**KERAS_TWO, "data": {**KERAS_TWO["data"], "limit": 250}, "split": {**KERAS_TWO["split"], "seed": 1},
               "grid": {**KERAS_TWO["grid"], "training": {"epochs": 1, "batch_size": 32}}}
    path = write(tmp_path, changed)
    refused = harness_cli("run", path, "--results", tmp_path / "r", cache=finished["cache"])
    assert refused.returncode == 2
    assert "holds a different experiment" in refused.stderr
    assert "data.limit" in refused.stderr and "split.seed" in refused.stderr
    assert "already done" not in refused.stdout
    assert tree(results) == before, "a refused run changed the results directory"

    # --data pointing elsewhere is a different experiment too.
    refused = harness_cli("run", finished["yaml"], "--results", tmp_path / "r", "--data", tmp_path,
                          cache=finished["cache"])
    assert refused.returncode == 2 and "data.path" in refused.stderr

    # --new: a fresh directory beside it, every trial trained again.
    fresh = harness_cli("run", path, "--results", tmp_path / "r", "--new", cache=finished["cache"])
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert "1 completed, 0 failed, 0 already done" in fresh.stdout
    new_ids = set(read_index(tmp_path / "r" / "tiny-2"))
    assert len(new_ids) == 1 and not new_ids & set(read_index(results))
    assert tree(results) == before

    # --overwrite: the old results are discarded, the new experiment trained in their place.
    over = harness_cli("run", path, "--results", tmp_path / "r", "--overwrite", cache=finished["cache"])
    assert over.returncode == 0, over.stderr[-3000:]
    assert "1 completed, 0 failed, 0 already done" in over.stdout
    assert set(read_index(results)) == new_ids
    assert json.loads((results / "experiment.json").read_text())["data"]["limit"] == 250


@pytest.mark.trains
def test_a_description_or_time_limit_change_is_not_a_new_experiment(finished, tmp_path):
    copy_results(finished, tmp_path)
    path = write(tmp_path, {**KERAS_TWO, "description": "now with words", "time_limit_s": 200})
    again = harness_cli("run", path, "--results", tmp_path / "r", cache=finished["cache"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 completed, 0 failed, 2 already done" in again.stdout


@pytest.mark.trains
def test_trials_from_data_changed_on_disk_are_retrained_and_left_out_of_the_report(
        tmp_path, utkface_sample):
    folder = utkface_folder(tmp_path / "faces", utkface_sample)
    experiment = {**TINY, "backends": ["keras"], "data": {"dataset": "utkface", "path": str(folder)}}
    path, cache = write(tmp_path, experiment), str(tmp_path / "cache")
    first = harness_cli("run", path, "--results", tmp_path / "r", cache=cache)
    assert first.returncode == 0, first.stderr[-3000:]
    [old_id] = read_index(tmp_path / "r" / "tiny")
    change_pixels(folder)
    second = harness_cli("run", path, "--results", tmp_path / "r", cache=cache)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "1 completed, 0 failed, 0 already done" in second.stdout
    trials = (tmp_path / "r" / "tiny" / "tables" / "trials.csv").read_text()
    assert old_id not in trials and len(trials.strip().splitlines()) == 2
    assert "1 earlier trial(s)" in (tmp_path / "r" / "tiny" / "report.md").read_text()


@pytest.mark.trains
def test_a_trial_folder_finished_for_another_config_is_trained_again(finished, tmp_path):
    results = copy_results(finished, tmp_path)
    first, second = sorted(read_index(results))
    (results / "trials" / first / "DONE").write_text("0123456789ab\n")   # copied in from elsewhere
    again = harness_cli("run", finished["yaml"], "--results", tmp_path / "r", cache=finished["cache"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 completed, 0 failed, 1 already done" in again.stdout
    assert (results / "trials" / first / "DONE").read_text().strip() == first


# --- 2. a dry run, or a run that fails validation, writes nothing -------------------------

def test_a_dry_run_writes_nothing(finished, tmp_path):
    fresh_cache = tmp_path / "cache"
    result = harness_cli("run", finished["yaml"], "--results", tmp_path / "r", "--dry-run",
                         cache=str(fresh_cache))
    assert result.returncode == 0, result.stderr
    assert "2 trials (0 already done)" in result.stdout
    assert not (tmp_path / "r").exists() and not fresh_cache.exists()

    results = copy_results(finished, tmp_path / "existing")
    before = tree(results)
    result = harness_cli("run", finished["yaml"], "--results", tmp_path / "existing" / "r", "--dry-run",
                         cache=finished["cache"])
    assert result.returncode == 0 and "2 trials (2 already done)" in result.stdout
    assert tree(results) == before


@pytest.mark.parametrize("change,message", [
    ({"rounds": [3]}, "rounds"),                                                 # caught on load
    ({"data": {"dataset": "csv", "path": "MISSING_CSV"}}, "nope.csv"),           # caught on load of data
    ({"data": {"dataset": "csv", "path": "ALL_MISSING"}}, "were not found"),     # caught after caching
])
def test_a_run_that_fails_validation_writes_nothing(tmp_path, change, message):
    (tmp_path / "all_missing.csv").write_text("path,age,gender\n" + "".join(
        f"{tmp_path}/gone_{i}.jpg,{20 + i},m\n" for i in range(40)))
    experiment = json.loads(json.dumps({**TINY, **change})
                            .replace("ALL_MISSING", str(tmp_path / "all_missing.csv"))
                            .replace("MISSING_CSV", str(tmp_path / "nope.csv")))
    result = harness_cli("run", write(tmp_path, experiment), "--results", tmp_path / "r",
                         cache=str(tmp_path / "cache"))
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "r").exists()


# --- 3. the numbers do not depend on --workers ------------------------------------------

@pytest.mark.trains
def test_workers_change_no_number_and_threads_are_recorded(finished, tmp_path):
    result = harness_cli("run", finished["yaml"], "--results", tmp_path / "r", "--workers", "2",
                         cache=finished["cache"])
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = finished["results"] / "trials", tmp_path / "r" / "tiny" / "trials"
    ids = sorted(p.name for p in one.iterdir())
    assert ids == sorted(p.name for p in two.iterdir()) and len(ids) == 2
    for trial_id in ids:
        a, b = np.load(one / trial_id / "predictions.npz"), np.load(two / trial_id / "predictions.npz")
        assert np.array_equal(a["outputs"], b["outputs"]), "outputs differ between --workers 1 and 2"
        env = json.loads((two / trial_id / "env.json").read_text())
        threads = json.loads((two / trial_id / "config.json").read_text())["threads"]
        assert env["threads"]["intra_op"] == threads and env["cpu"]
    trials = (tmp_path / "r" / "tiny" / "tables" / "trials.csv").read_text()
    assert "threads" in trials.splitlines()[0]
    assert "framework thread(s)" in (tmp_path / "r" / "tiny" / "report.md").read_text()


# --- 12. a damaged trial is listed, the others reported -----------------------------------

@pytest.mark.trains
def test_report_lists_damaged_trials_and_reports_the_rest(finished, tmp_path):
    results = copy_results(finished, tmp_path)
    first, second = sorted(read_index(results))
    (results / "trials" / first / "metrics.json").write_text('{"gender_accuracy": 0.5, ')
    (results / "trials" / second / "history.csv").unlink()
    result = harness_cli("report", results, cache=finished["cache"])
    assert result.returncode == 0, result.stderr
    damaged = (results / "tables" / "damaged.csv").read_text()
    assert f"{first}/metrics.json" in damaged and "unreadable" in damaged
    assert f"{second}/history.csv" in damaged and "missing" in damaged
    assert "Damaged trials" in (results / "report.md").read_text()

    (results / "trials" / first / "metrics.json").write_text(
        (finished["results"] / "trials" / first / "metrics.json").read_text())
    result = harness_cli("report", results, cache=finished["cache"])
    assert result.returncode == 0, result.stderr
    assert first in (results / "tables" / "trials.csv").read_text()
    assert second not in (results / "tables" / "trials.csv").read_text()


# --- 13. a torn index line is repaired, not appended to ----------------------------------

@pytest.mark.trains
def test_a_torn_index_line_is_repaired_and_the_trial_recorded_again(finished, tmp_path):
    results = copy_results(finished, tmp_path)
    index = results / INDEX_FILE
    lines = index.read_text().splitlines()
    torn_id = json.loads(lines[-1])["trial_id"]
    index.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])   # a crash mid-write
    assert torn_id not in read_index(results)
    result = harness_cli("run", finished["yaml"], "--results", tmp_path / "r", cache=finished["cache"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "0 completed, 0 failed, 2 already done" in result.stdout
    records = [json.loads(line) for line in index.read_text().splitlines()]   # every line whole
    assert torn_id in {r["trial_id"] for r in records}
    assert (results / (INDEX_FILE + ".damaged")).read_text().strip() == lines[-1][: len(lines[-1]) // 2]
    assert torn_id in (results / "tables" / "trials.csv").read_text()


# --- issue 22 §5: a results folder names its best trial ----------------------------------

def test_the_report_names_the_best_trial_on_validation_and_predict_takes_it(finished, utkface_sample):
    from harness.runs.trial import final_validation

    results = finished["results"]
    best = json.loads((results / "best.json").read_text())
    scores = {d.name: final_validation(d) for d in (results / "trials").iterdir()}
    assert best["trial_id"] == max(scores, key=scores.get)
    assert best["val_joint_accuracy"] == pytest.approx(max(scores.values()))
    assert (results / "best").resolve() == (results / "trials" / best["trial_id"]).resolve()
    environment = json.loads((results / "best" / "env.json").read_text())
    from harness import __version__
    assert environment["harness"] == __version__ and environment["keras"] and environment["tensorflow"]
    assert environment["numpy"] == np.__version__
    assert "Framework versions (from 2 trials' env.json): tensorflow " in (results / "report.md").read_text()

    photo = utkface_sample["path"].iloc[0]
    predicted = harness_cli("predict", "--model", results / "best", photo, cache=finished["cache"])
    assert predicted.returncode == 0, predicted.stderr
    assert photo in predicted.stdout

    folder = harness_cli("predict", "--model", results, photo, cache=finished["cache"])
    assert folder.returncode == 2
    assert f"--model {results}: a results folder, not one model" in folder.stderr
    assert "Its 2 finished trial(s), best validation joint accuracy first:" in folder.stderr
    assert str(results / "trials" / best["trial_id"]) in folder.stderr.split("first:")[1].splitlines()[1]
    assert "age exact" in folder.stderr and f"or {results / 'best'}" in folder.stderr


@pytest.mark.trains
def test_a_second_run_into_a_busy_results_folder_is_refused_naming_the_first(tmp_path):
    """Issue 23 §7: two `harness run` of one experiment at once never train a trial twice."""
    import os
    import subprocess
    import sys

    from tests.helpers.experiments import ROOT
    from tests.helpers.processes import wait_for

    slow = {**KERAS_TWO, "grid": {**KERAS_TWO["grid"], "training": {"epochs": [12, 13], "batch_size": 32}}}
    path = write(tmp_path, slow)   # long enough that the second run starts while the first trains
    env = {**os.environ, "HARNESS_CACHE": str(tmp_path / "cache")}
    first = subprocess.Popen([sys.executable, "-m", "harness", "run", str(path), "--results", str(tmp_path / "r")],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "r" / ".tiny.lock"
    wait_for(lambda: (tmp_path / "r" / "tiny" / "trials").is_dir() and lock.is_file()
             and f"pid {first.pid}" in lock.read_text(), timeout=300, what="the first run to start its trials")
    second = harness_cli("run", path, "--results", tmp_path / "r", cache=str(tmp_path / "cache"))
    assert second.returncode == 2
    assert f"is being written by pid {first.pid} (harness run" in second.stderr and "Traceback" not in second.stderr
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    lines = (tmp_path / "r" / "tiny" / "index.jsonl").read_text().splitlines()
    assert len(lines) == len({json.loads(line)["trial_id"] for line in lines}) == 2
    again = harness_cli("run", path, "--results", tmp_path / "r", cache=str(tmp_path / "cache"))
    assert again.returncode == 0 and "2 already done" in again.stdout   # the lock went with its holder


def test_a_full_results_disk_names_the_path_and_says_the_run_resumes(tmp_path):
    """Issue 23 §8: the run's own writes (split table, manifests, index) on a full disk."""
    from tests.helpers.files import small_filesystem

    path = write(tmp_path, {**TINY, "backends": ["keras"]})
    with small_filesystem(tmp_path / "r", "16k") as full:   # the split table of 300 faces alone is larger
        result = harness_cli("run", path, "--results", full, "--no-report", cache=str(tmp_path / "cache"))
    assert result.returncode == 2, result.stderr[-2000:]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"harness: error: {full}/tiny/"), error
    assert "no space left on its disk" in error and "the run resumes" in error
    assert "Traceback" not in result.stderr
