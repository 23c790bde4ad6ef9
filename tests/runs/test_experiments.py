"""Experiment files, grid expansion, the runner (resume, failures, workers, Ray) and reports."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from harness.runs import experiment as experiment_schema
from harness.runs import experiment_file, grid
from harness.runs.experiment import ExperimentError
from harness.runs.index import read_index
from tests.conftest import UTKFACE
from tests.helpers.experiments import ROOT, TINY, harness_cli, write


def test_grid_is_a_cartesian_product_with_include_and_exclude(tmp_path):
    experiment = {**TINY, "grid": {
        "models": [{"name": "a", "architecture": {"type": "fcn", "widths": [8]}},
                   {"name": "b", "architecture": {"type": "small_cnn", "filters": [4]}}],
        "training": {"optimizer": ["adam", "sgd"], "learning_rate": [0.1, 0.01], "epochs": 1}},
        "include": [{"model": "a", "training": {"optimizer": "rmsprop", "epochs": 3}}],
        "exclude": [{"model": "b", "training": {"optimizer": "sgd"}}]}
    loaded = experiment_file.load(write(tmp_path, experiment))
    trials = grid.expand(loaded, lambda prep: ("/x", {0: "data0", 1: "data1"}))
    # (2 models x 2 optimizers x 2 rates) - 2 excluded + 2 included (the grid's rates, crossed)
    # = 8; x 2 backends x 2 rounds
    assert len(trials) == 8 * 2 * 2
    assert not [t for t in trials if t.model_name == "b" and t.config.training.optimizer == "sgd"]
    included = {(t.config.training.learning_rate, t.config.training.epochs)
                for t in trials if t.config.training.optimizer == "rmsprop"}
    assert included == {(0.1, 3), (0.01, 3)}
    assert len({t.trial_id for t in trials}) == len(trials)
    again = grid.expand(experiment_file.load(write(tmp_path, experiment, "copy.yaml")),
                        lambda prep: ("/elsewhere", {0: "data0", 1: "data1"}))
    assert [t.trial_id for t in again] == [t.trial_id for t in trials]


@pytest.mark.parametrize("change,key,allowed", [
    ({"unknown_key": 1}, "unknown_key", "Extra inputs are not permitted"),
    ({"time_limit_s": "soon"}, "time_limit_s", "integer"),
    ({"grid": {"models": [{"name": "a", "architecture": {"type": "fcn", "widths": [8, 0]}}]}},
     "grid.models.0.architecture.fcn.widths.1", "greater than 0"),
    ({"grid": {"models": [{"name": "a", "architecture": {"type": "fcn", "widths": [8]}}],
               "training": {"optimizer": ["adam", "adamw"]}}}, "optimizer", "'sgd', 'adam'"),
    ({"grid": {"models": [{"name": "a", "architecture": {"type": "fcn", "widths": [8]}}],
               "training": {"epochs": -1}}}, "epochs", "greater than 0"),
    ({"backends": ["keras", "caffe"]}, "backends.1", "'keras', 'tflearn' or 'keras-jax'"),
    ({"preprocessing": {"size": 16, "colour": "rgb"}}, "preprocessing.colour", "not permitted"),
])
def test_invalid_experiments_name_file_key_and_what_is_allowed(tmp_path, change, key, allowed):
    path = write(tmp_path, {**TINY, **change})
    with pytest.raises(ExperimentError) as err:
        experiment_file.load(path)
    message = str(err.value)
    assert str(path) in message and key in message and allowed in message


def test_a_backend_that_is_not_installed_is_refused(tmp_path, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(experiment_schema, "find_spec", lambda name: None if name == "tflearn" else real(name))
    with pytest.raises(ExperimentError, match="backend 'tflearn' needs tflearn, not installed"):
        experiment_file.load(write(tmp_path, TINY))


def test_shipped_experiments_are_valid():
    for path in sorted((ROOT / "experiments").glob("*.yaml")):
        experiment_file.load(path)


def test_dry_run_lists_trials_without_training(tmp_path):
    result = harness_cli("run", write(tmp_path, TINY), "--results", tmp_path / "r", "--dry-run",
                         cache=str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr
    assert "2 trials (0 already done)" in result.stdout
    assert not list((tmp_path / "r" / "tiny").glob("trials/*/history.csv"))


@pytest.mark.trains
def test_a_failing_trial_is_recorded_and_the_others_finish(tmp_path):
    experiment = {**TINY, "backends": ["keras"], "grid": {
        "models": [{"name": "tuple", "architecture": {"type": "fcn", "widths": [32], "activation": "linear"},
                    "head": "tuple_original"}],
        # A linear net under SGD at lr 10 grows ~1000x a step to an inf/NaN loss; lr 0.001 trains.
        "training": {"optimizer": "sgd", "learning_rate": [0.001, 10.0], "epochs": 3}}}
    result = harness_cli("run", write(tmp_path, experiment), "--results", tmp_path / "r",
                         cache=str(tmp_path / "cache"))
    assert result.returncode == 1, result.stderr
    records = list(read_index(tmp_path / "r" / "tiny").values())
    by_status = {r["status"]: r for r in records}
    assert len(records) == 2 and set(by_status) == {"completed", "failed"}
    failed = by_status["failed"]
    assert failed["config"]["training"]["learning_rate"] == 10.0
    assert "loss is nan" in failed["error"].lower() or "loss is inf" in failed["error"].lower()
    assert failed["log_tail"]
    assert (tmp_path / "r" / "tiny" / "report.md").read_text().count("Failed trials") == 1


def _children(pid: int) -> list[int]:
    ps = subprocess.run(["ps", "-eo", "pid,ppid"], capture_output=True, text=True).stdout
    return [int(child) for child, parent in (line.split() for line in ps.splitlines()[1:]) if int(parent) == pid]


@pytest.mark.trains
def test_resume_after_kill_9_of_the_runner(tmp_path):
    experiment = {**TINY, "grid": {**TINY["grid"], "training": {"epochs": [2, 3], "batch_size": 32}}}
    path, results = write(tmp_path, experiment), tmp_path / "r"
    env = {**os.environ, "HARNESS_CACHE": str(tmp_path / "cache")}
    runner = subprocess.Popen([sys.executable, "-m", "harness", "run", str(path), "--results", str(results)],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trials = results / "tiny" / "trials"
    deadline = time.time() + 300
    # Kill once one trial is complete and another is mid-training.
    while time.time() < deadline:
        done = list(trials.glob("*/DONE"))
        started = [d for d in trials.glob("*") if (d / "log.txt").is_file() and not (d / "DONE").exists()]
        if done and started:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the runner never got one trial done and another started")
    workers = _children(runner.pid)   # the reused worker(s), each serving many trials
    assert workers
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    first_done = {d.parent.name: d.stat().st_mtime_ns for d in trials.glob("*/DONE")}
    time.sleep(3)   # an orphaned worker would finish its 2-epoch trial in this time
    assert {d.parent.name for d in trials.glob("*/DONE")} == set(first_done), "a worker outlived the runner"
    assert not any(Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
                   for pid in workers), "a worker outlived the runner"
    result = harness_cli("run", path, "--results", results, cache=str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr
    index_lines = [json.loads(line) for line in (results / "tiny" / "index.jsonl").read_text().splitlines()]
    completed = [r["trial_id"] for r in index_lines if r["status"] == "completed"]
    assert len(completed) == len(set(completed)) == 4
    for trial_id, mtime in first_done.items():
        assert (trials / trial_id / "DONE").stat().st_mtime_ns == mtime, "a completed trial ran again"
    assert f"{len(first_done)} already done" in result.stdout


@pytest.mark.trains
def test_report_is_regenerated_identically(tmp_path):
    results = tmp_path / "r"
    assert harness_cli("run", write(tmp_path, TINY), "--results", results, "--workers", "2",
                       cache=str(tmp_path / "cache")).returncode == 0
    run_dir = results / "tiny"
    tables = {p.name: p.read_bytes() for p in (run_dir / "tables").glob("*.csv")}
    report = (run_dir / "report.md").read_text()
    assert harness_cli("report", run_dir, cache=str(tmp_path / "cache")).returncode == 0
    assert {p.name: p.read_bytes() for p in (run_dir / "tables").glob("*.csv")} == tables
    # Identical but for the stamp (the line after the summary: which command made it, at
    # which commit, when).
    again, before = (run_dir / "report.md").read_text().splitlines(), report.splitlines()
    stamp = next(n for n, line in enumerate(again) if line.startswith("Made by `harness report "))
    assert before[stamp].startswith("Made by `harness run") or before[stamp].startswith("Made by `harness report")
    assert again[:stamp] == before[:stamp] and again[stamp + 1:] == before[stamp + 1:]
    pairs = (run_dir / "tables" / "framework_pairs.csv").read_text()
    assert "keras mean" in pairs and "tflearn mean" in pairs and "p_corrected_t" in pairs
    assert "Levi & Hassner" in report and "86.8 ± 1.4" in report
    for png in ("grid_joint_accuracy.png", "learning_curves_0.png", "age_confusion_0.png"):
        assert (run_dir / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    assert (run_dir / "report.html").read_text().count("<img") >= 3


@pytest.mark.trains
def test_ray_executor_on_a_local_instance(tmp_path):
    experiment = {**TINY, "backends": ["keras"]}
    result = harness_cli("run", write(tmp_path, experiment), "--results", tmp_path / "r",
                         "--executor", "ray", "--workers", "1", cache=str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr[-3000:]
    records = list(read_index(tmp_path / "r" / "tiny").values())
    assert [r["status"] for r in records] == ["completed"]
    assert records[0]["metrics"]["n"] > 50
    (env_file,) = (tmp_path / "r" / "tiny" / "trials").glob("*/env.json")
    assert len(json.loads(env_file.read_text())["ray_node_id"]) >= 16   # the Ray node it ran on


def test_unreadable_images_are_listed_or_fatal_with_strict(tmp_path, utkface_sample):
    rows = ["path,age,gender"] + [f"{p},{int(a)},{g}" for p, a, g in
                                 utkface_sample[["path", "age", "gender"]].head(40).itertuples(index=False)]
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    rows.append(f"{tmp_path / 'broken.jpg'},30,f")
    (tmp_path / "faces.csv").write_text("\n".join(rows) + "\n")
    experiment = {**TINY, "data": {"dataset": "csv", "path": str(tmp_path / "faces.csv")},
                  "split": {"protocol": "random", "val_fraction": 0.0, "stratify": False}}
    path = write(tmp_path, experiment)
    lenient = harness_cli("run", path, "--results", tmp_path / "r", "--dry-run", "--check-faces",
                          cache=str(tmp_path / "c"))
    assert lenient.returncode == 0, lenient.stderr
    assert f"would skip image {tmp_path / 'broken.jpg'}: cannot decode" in lenient.stdout
    from harness.runs import prepare
    prepared = prepare.prepare(experiment_file.load(path), dry_run=True, check_faces=True)
    assert list(prepared.skipped_images["path"]) == [str(tmp_path / "broken.jpg")]
    assert not prepared.manifest.assignments["id"].str.contains("broken").any()
    strict = harness_cli("run", path, "--results", tmp_path / "r2", "--dry-run", "--check-faces", "--strict",
                         cache=str(tmp_path / "c"))
    assert strict.returncode == 2 and "broken.jpg" in strict.stderr


# --- names that become paths stay inside their parent ------------------------------------

@pytest.mark.parametrize("name", ["..", ".", ".hidden"])
def test_an_experiment_name_that_leaves_the_results_folder_is_refused(tmp_path, name):
    results = tmp_path / "nested" / "results"
    result = harness_cli("run", write(tmp_path, {**TINY, "name": name}), "--results", results, "--dry-run",
                         cache=str(tmp_path / "cache"))
    assert result.returncode == 2 and "name" in result.stderr and "inside" in result.stderr
    assert not (tmp_path / "nested").exists()


def test_trial_ids_and_dataset_rows_cannot_leave_their_folder(tmp_path):
    from harness.data.datasets import load_adience
    from harness.runs.index import trial_dir
    from tests.conftest import ADIENCE

    for bad in ("../x", "..", "a/b", "/etc"):
        with pytest.raises(ValueError, match="would not stay inside"):
            trial_dir(tmp_path, bad)
    metadata = tmp_path / "adience"
    shutil.copytree(ADIENCE, metadata)
    fold_file = metadata / "original_txt_files" / "fold_0_data.txt"
    lines = fold_file.read_text().splitlines()
    fields = lines[1].split("\t")
    lines[1] = "\t".join(["../../../escape"] + fields[1:])
    fold_file.write_text("\n".join(lines) + "\n")
    data = load_adience(metadata, images=tmp_path / "images", metadata="original")
    assert not any("escape" in p for p in data.table["path"])
    assert "path leaves the image folder" in set(data.dropped["reason"])


# --- everything about an experiment file is checked before anything runs -----------------

MODEL = {"name": "m", "architecture": {"type": "fcn", "widths": [8]}}


@pytest.mark.parametrize("change,key,allowed", [
    ({"include": [{"model": "fcn", "training": [1, 2]}]}, "include.0.training", "valid dictionary"),
    ({"include": [{"model": "nope"}]}, "include.0.model", "'fcn'"),
    ({"exclude": [{"model": "fcn", "trainig": {"epochs": 2}}]}, "exclude.0.trainig", "not permitted"),
    ({"exclude": [{"training": {"optimiser": "sgd"}}]}, "exclude.0.training", "'optimizer'"),
    ({"exclude": [{"training": {"epochs": 7}}]}, "exclude.0", "training.epochs has ['2']"),
    ({"exclude": [{"model": "fcn"}]}, "exclude", "removes all 1 combinations"),
    ({"grid": {"models": [{**MODEL, "head": "tuple_sound"}], "training": {"loss": "hinge"}}},
     "training.loss", "fixes its losses"),
    ({"rounds": [-1]}, "rounds.0", "greater than or equal to 0"),
    ({"rounds": [1]}, "rounds", "has rounds [0]"),
    ({"split": {"protocol": "stratified_kfold", "folds": 3}, "rounds": [3]}, "rounds", "[0, 1, 2]"),
    ({"data": {"dataset": "utkface", "path": str(UTKFACE), "limit": 5}}, "data.limit", "at least 16"),
    ({"threads": 0}, "threads", "greater than 0"),
    ({"seeds": [0, 0]}, "seeds", "distinct"),
    ({"seeds": [0, 1], "grid": {"models": [MODEL], "training": {"seed": [3, 4]}}}, "seeds",
     "grid.training"),
    ({"baseline": {"model": "nope"}}, "baseline.model", "'fcn'"),
    ({"grid": {"models": [{**MODEL, "name": "fcn"}], "training": {"optimizer": ["adam", "sgd"]}},
      "baseline": {"model": "fcn"}}, "baseline", "matches 2"),
])
def test_bad_combinations_are_caught_on_load_with_file_key_and_what_is_allowed(tmp_path, change, key, allowed):
    path = write(tmp_path, {**TINY, **change})
    with pytest.raises(ExperimentError) as err:
        experiment_file.load(path)
    message = str(err.value)
    assert str(path) in message and key in message and allowed in message, message
    assert "pydantic" not in message and "Traceback" not in message


def test_a_duplicate_yaml_key_is_refused_with_its_lines(tmp_path):
    text = yaml.safe_dump(TINY) + "time_limit_s: 10\n"
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ExperimentError, match=r"'time_limit_s' appears twice \(first on line \d+\)") as err:
        experiment_file.load(path)
    assert str(path) in str(err.value)


def test_a_binary_file_is_refused_as_not_text(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ExperimentError, match="not a text file.*expected an experiment YAML file"):
        experiment_file.load(path)


def test_bad_experiment_files_fail_on_the_command_line_without_a_traceback(tmp_path):
    path = write(tmp_path, {**TINY, "include": [{"model": "fcn", "training": [1, 2]}]})
    result = harness_cli("run", path, "--results", tmp_path / "r", cache=str(tmp_path / "cache"))
    assert result.returncode == 2 and "include.0.training" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "r").exists()


def test_adience_with_every_image_missing_says_so(tmp_path):
    from tests.conftest import ADIENCE

    experiment = {**TINY, "data": {"dataset": "adience", "path": str(ADIENCE), "images": str(tmp_path / "none")},
                  "split": {"protocol": "adience_folds"}}
    result = harness_cli("run", write(tmp_path, experiment), "--results", tmp_path / "r", "--dry-run",
                         cache=str(tmp_path / "cache"))
    assert result.returncode == 2
    assert "all 16156 images were not found under" in result.stderr and str(tmp_path / "none") in result.stderr
    assert "aligned/" in result.stderr


def test_data_summary_names_the_malformed_files(tmp_path, utkface_sample):
    folder = tmp_path / "faces"
    folder.mkdir()
    for path in utkface_sample["path"].iloc[:5]:
        (folder / Path(path).name).symlink_to(path)
    (folder / "61_1_20170109142408075.jpg.chip.jpg").symlink_to(utkface_sample["path"].iloc[6])
    text = harness_cli("data", "summary", "--dataset", "utkface", "--path", folder, cache=str(tmp_path / "c"))
    assert text.returncode == 0 and "61_1_20170109142408075.jpg.chip.jpg" in text.stdout
    as_json = harness_cli("data", "summary", "--dataset", "utkface", "--path", folder, "--json",
                          cache=str(tmp_path / "c"))
    [row] = json.loads(as_json.stdout)["dropped_rows"]
    assert row["file"].endswith("61_1_20170109142408075.jpg.chip.jpg") and row["reason"] == "malformed file name"


def test_an_aligned_run_lists_the_images_it_could_not_align(tmp_path, utkface_sample):
    from harness.runs import prepare

    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (90, 90, 3), dtype=np.uint8)).save(noise)
    rows = ["path,age,gender"] + [f"{p},{int(a)},{g}" for p, a, g in
                                 utkface_sample[["path", "age", "gender"]].head(40).itertuples(index=False)]
    rows.append(f"{noise},30,f")
    (tmp_path / "faces.csv").write_text("\n".join(rows) + "\n")
    experiment = {**TINY, "data": {"dataset": "csv", "path": str(tmp_path / "faces.csv")},
                  "preprocessing": {"size": 16, "align": "dlib"},
                  "split": {"protocol": "random", "val_fraction": 0.0, "stratify": False}}
    path = write(tmp_path, experiment)
    prepared = prepare.prepare(experiment_file.load(path), dry_run=True, check_faces=True)
    assert str(noise) in set(prepared.unaligned_images["path"])
    result = harness_cli("run", path, "--results", tmp_path / "r", "--dry-run", "--check-faces",
                         cache=str(tmp_path / "c"))
    assert result.returncode == 0 and "would be used whole (align: dlib)" in result.stdout
    bad = write(tmp_path, {**experiment, "preprocessing": {"size": 16, "align": "opencv"}}, "bad.yaml")
    with pytest.raises(ExperimentError, match="preprocessing.align.*'none' or 'dlib'"):
        experiment_file.load(bad)


def test_a_convolutional_model_on_embeddings_is_refused(tmp_path):
    experiment = {**TINY, "preprocessing": {"representation": "dlib_embedding"},
                  "grid": {"models": [{"name": "cnn", "architecture": {"type": "small_cnn", "filters": [4]}}]}}
    with pytest.raises(ExperimentError, match="grid.models.0.architecture: 'small_cnn' needs a pixel grid.*allowed: fcn"):
        experiment_file.load(write(tmp_path, experiment))


def test_a_dry_run_computes_nothing_and_quotes_the_last_build(tmp_path, utkface_sample):
    """Issue 22 §5: a dry run on uncached images decodes none of them (no cache entry, no
    staging folder), counts them, gives the same trial ids as the real run, and quotes
    how long the last build with the same preprocessing took (the cache's own timing)."""
    rows = ["path,age,gender"] + [f"{p},{int(a)},{g}" for p, a, g in
                                 utkface_sample[["path", "age", "gender"]].head(60).itertuples(index=False)]
    rows.append(f"{tmp_path / 'gone.jpg'},30,f")
    (tmp_path / "faces.csv").write_text("\n".join(rows) + "\n")
    experiment = {**TINY, "data": {"dataset": "csv", "path": str(tmp_path / "faces.csv")},
                  "split": {"protocol": "random", "val_fraction": 0.0, "stratify": False}}
    path = write(tmp_path, experiment)
    cache = tmp_path / "cache"
    first = harness_cli("run", path, "--results", tmp_path / "r", "--dry-run", cache=str(cache))
    assert first.returncode == 0, first.stderr
    assert not cache.exists(), "a dry run computed image arrays"
    assert "61 images' image arrays are not cached yet and would be computed first" in first.stdout
    assert f"would skip image {tmp_path / 'gone.jpg'}: file not found" in first.stdout
    assert "the last build" not in first.stdout   # nothing was ever built with this preprocessing
    dry_ids = [line.split()[0] for line in first.stdout.splitlines() if " round " in line]

    checked = harness_cli("run", path, "--results", tmp_path / "r", "--dry-run", "--check-faces",
                          cache=str(cache))
    assert checked.returncode == 0 and not cache.exists()
    assert [line.split()[0] for line in checked.stdout.splitlines() if " round " in line] == dry_ids

    from harness.data import cache as array_cache
    from harness.data.images import Preprocessing
    other = utkface_sample.head(20)   # another build with the same preprocessing, timed by the cache
    array_cache.build(other["id"], other["path"], Preprocessing(size=16), cache_dir=cache)
    again = harness_cli("run", path, "--results", tmp_path / "r", "--dry-run", cache=str(cache))
    assert "the last build with this preprocessing took" in again.stdout and "for 20 images" in again.stdout
    assert [line.split()[0] for line in again.stdout.splitlines() if " round " in line] == dry_ids
    assert harness_cli("run", path, "--results", tmp_path / "r", "--check-faces",
                       cache=str(cache)).returncode == 2


def test_an_experiments_descriptors_come_from_the_port_unless_it_names_dlib(tmp_path):
    from harness.runs import experiment_file
    from tests.helpers.experiments import TINY, write

    embedding = {**TINY, "preprocessing": {"representation": "dlib_embedding"}}
    assert experiment_file.load(write(tmp_path, embedding)).preprocessing.descriptor_engine == "keras"
    pinned = {**TINY, "preprocessing": {"representation": "dlib_embedding", "descriptor_engine": "dlib"}}
    assert experiment_file.load(write(tmp_path, pinned, "pinned.yaml")).preprocessing.descriptor_engine == "dlib"
    assert experiment_file.load(write(tmp_path, TINY, "pixels.yaml")).preprocessing.descriptor_engine == "dlib"
    for name in ("framework_comparison_embedding", "years_utkface", "best_utkface"):   # published: as computed
        published = experiment_file.load(Path(__file__).resolve().parents[2] / "experiments" / f"{name}.yaml")
        assert published.preprocessing.descriptor_engine == "dlib"


def test_face_resnet_needs_the_chip_dlib_reads(tmp_path):
    from harness.runs import experiment_file
    from harness.runs.experiment import ExperimentError
    from tests.helpers.experiments import TINY, write

    face = {**TINY, "grid": {**TINY["grid"], "models": [{"name": "face", "architecture": {"type": "face_resnet"}}]}}
    with pytest.raises(ExperimentError, match="face_resnet reads the aligned 150x150 RGB chip.*size: 16, "
                                              "scaling: minmax"):
        experiment_file.load(write(tmp_path, face))
    face["preprocessing"] = {"align": "dlib", "size": 150, "scaling": "unit"}
    assert experiment_file.load(write(tmp_path, face, "ok.yaml")).grid.models[0].architecture.type == "face_resnet"


@pytest.mark.parametrize("damage", ["missing", "truncated", "another dlib model"])
def test_missing_or_corrupt_face_resnet_weights_are_refused_before_anything_runs(tmp_path, monkeypatch, damage):
    import face_recognition_models

    from harness.models.dlib_weights import WEIGHTS_ENV, default_weights_path
    from harness.runs import experiment_file
    from harness.runs.experiment import ExperimentError
    from tests.helpers.experiments import TINY, write

    weights = tmp_path / "weights.dat"
    if damage == "truncated":
        weights.write_bytes(default_weights_path().read_bytes()[:100_000])
    elif damage == "another dlib model":
        weights.write_bytes(Path(face_recognition_models.pose_predictor_five_point_model_location()).read_bytes())
    monkeypatch.setenv(WEIGHTS_ENV, str(weights))
    face = {**TINY, "preprocessing": {"align": "dlib", "size": 150, "scaling": "unit"},
            "grid": {**TINY["grid"], "models": [{"name": "face", "architecture": {"type": "face_resnet"}}]}}
    with pytest.raises(ExperimentError) as err:
        experiment_file.load(write(tmp_path, face))
    assert "grid.models.0.architecture.weights: dlib needs dlib's face ResNet weights" in str(err.value)
    assert str(weights) in str(err.value) and "weights none" in str(err.value)
    # The descriptor engine reads them too; weights: none does not.
    port = {**TINY, "preprocessing": {"representation": "dlib_embedding", "descriptor_engine": "keras"}}
    with pytest.raises(ExperimentError, match="preprocessing.descriptor_engine: keras needs dlib's face ResNet"):
        experiment_file.load(write(tmp_path, port, "port.yaml"))
    face["grid"]["models"][0]["architecture"]["weights"] = "none"
    assert experiment_file.load(write(tmp_path, face, "none.yaml"))


def test_a_trunk_fine_tuned_from_the_cut_reads_the_cached_activations_below_its_level(tmp_path):
    """Issue 25 §1: a face network training the levels above a frozen part reads the
    activations at its cut, cached once, whatever the experiment's own preprocessing:
    descriptor FCNs and fine-tuned networks share one experiment (and its test faces).
    Pixel augmentation or input: chip keeps the chip; contradictions are refused."""
    chip = {"align": "dlib", "size": 150, "scaling": "unit"}
    models = [{"name": "fcn", "architecture": {"type": "fcn", "widths": [8]}},
              {"name": "top", "architecture": {"type": "face_resnet", "train_from": "level1"}},
              {"name": "head_only", "architecture": {"type": "face_resnet"}}]
    mixed = {**TINY, "preprocessing": {"representation": "dlib_embedding"},
             "grid": {**TINY["grid"], "models": models[:2]}}
    loaded = experiment_file.load(write(tmp_path, mixed))
    by_model = {t.model_name: t.config for t in grid.expand(loaded, lambda prep: ("/x", {0: "d0"}))}
    assert by_model["fcn"].preprocessing == loaded.preprocessing
    assert by_model["fcn"].preprocessing.descriptor_features == "embedding"
    top = by_model["top"]
    assert top.model.architecture.input == "cut" and top.model.architecture.reads == "level1_input"
    assert top.preprocessing.shape == (8, 8, 128) and top.preprocessing.descriptor_engine == "keras"
    assert grid.inputs_needed(loaded) == [by_model["fcn"].preprocessing, top.preprocessing]

    # On the chip: the cut where nothing touches the pixels, the chip where augmentation does.
    training = {**TINY["grid"]["training"], "augmentation": [None, {"flip": True}]}
    pixels = {**TINY, "preprocessing": chip, "grid": {"models": models[1:], "training": training}}
    trials = grid.expand(experiment_file.load(write(tmp_path, pixels, "pixels.yaml")), lambda p: ("/x", {0: "d0"}))
    reads = {(t.model_name, t.config.training.augments): (t.config.model.architecture.reads,
                                                           t.config.preprocessing.representation) for t in trials}
    assert reads == {("top", False): ("level1_input", "dlib_embedding"), ("top", True): ("chip", "pixels"),
                     ("head_only", False): ("chip", "pixels"), ("head_only", True): ("chip", "pixels")}
    # A chip trial's config says nothing of its input, as every trial from before the choice.
    chip_trial = next(t for t in trials if t.model_name == "top" and t.config.training.augments)
    assert "input" not in json.loads(chip_trial.config.model_dump_json())["model"]["architecture"]

    asked = {**pixels, "grid": {"models": [{"name": "top", "architecture": {
        "type": "face_resnet", "train_from": "level1", "input": "chip"}}], "training": TINY["grid"]["training"]}}
    assert {t.config.model.architecture.reads for t in grid.expand(
        experiment_file.load(write(tmp_path, asked, "asked.yaml")), lambda p: ("/x", {0: "d0"}))} == {"chip"}

    # Refused, naming the keys: augmentation on the cached cut, a head-only trunk on
    # descriptors, a cut the preprocessing contradicts, a cut with no frozen part.
    insisted = {**pixels, "grid": {"models": [{"name": "top", "architecture": {
        "type": "face_resnet", "train_from": "level1", "input": "cut"}}], "training": training}}
    with pytest.raises(ExperimentError, match="training.augmentation: changes pixels, but the model reads the "
                                              "activations at level1_input.*input: chip"):
        experiment_file.load(write(tmp_path, insisted, "insisted.yaml"))
    with pytest.raises(ExperimentError, match="face_resnet reads the aligned 150x150 RGB chip.*representation: "
                                              "dlib_embedding.*with train_from head"):
        experiment_file.load(write(tmp_path, {**mixed, "grid": {**mixed["grid"], "models": models[2:]}}, "h.yaml"))
    contradicted = {**mixed, "preprocessing": {"representation": "dlib_embedding",
                                               "descriptor_features": "level0_input"}}
    with pytest.raises(ExperimentError, match="reads the activations at level1_input, but preprocessing names "
                                              "descriptor_features level0_input"):
        experiment_file.load(write(tmp_path, contradicted, "wrong.yaml"))
    for architecture, why in (({"train_from": "all", "input": "cut"}, "train_from 'all' has no such cut"),
                              ({"train_from": "level0", "input": "cut", "weights": "none"},
                               "weights: none has no such frozen part")):
        bad = {**mixed, "grid": {**mixed["grid"], "models": [
            {"name": "x", "architecture": {"type": "face_resnet", **architecture}}]}}
        with pytest.raises(ExperimentError, match=why):
            experiment_file.load(write(tmp_path, bad, "bad.yaml"))


def test_pretrained_lr_scale_needs_pretrained_levels_that_train(tmp_path):
    fcn = {**TINY, "grid": {**TINY["grid"], "training": {**TINY["grid"]["training"], "pretrained_lr_scale": 0.1}}}
    with pytest.raises(ExperimentError, match="training.pretrained_lr_scale: .*'fcn' has none"):
        experiment_file.load(write(tmp_path, fcn))
    tuned = {**fcn, "preprocessing": {"representation": "dlib_embedding"}, "grid": {**fcn["grid"], "models": [
        {"name": "top", "architecture": {"type": "face_resnet", "train_from": "level0"}}]}}
    (scale,) = {t.config.training.pretrained_lr_scale for t in grid.expand(
        experiment_file.load(write(tmp_path, tuned, "tuned.yaml")), lambda p: ("/x", {0: "d0"}))}
    assert scale == 0.1


def test_balancing_by_group_is_refused_on_faces_without_groups(tmp_path, utkface_sample):
    rows = ["path,age,gender"] + [f"{p},{int(a)},{g}" for p, a, g in
                                 utkface_sample[["path", "age", "gender"]].head(40).itertuples(index=False)]
    (tmp_path / "faces.csv").write_text("\n".join(rows) + "\n")
    experiment = {**TINY, "data": {"dataset": "csv", "path": str(tmp_path / "faces.csv")},
                  "split": {"protocol": "random", "val_fraction": 0.2, "stratify": False},
                  "grid": {**TINY["grid"], "training": {**TINY["grid"]["training"], "balance": "group"}}}
    out = harness_cli("run", write(tmp_path, experiment), "--results", tmp_path / "r", "--dry-run",
                      cache=str(tmp_path / "cache"))
    assert out.returncode != 0
    assert "training.balance: group: needs each face's group, but the csv faces have none" in out.stderr
