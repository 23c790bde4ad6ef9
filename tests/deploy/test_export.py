"""harness export: TFLite folders with measured parity; harness predict on LiteRT."""
import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.helpers.backend_runs import ROOT
from tests.helpers.door_fixtures import harness

FRAMEWORK_MODULES = ("tensorflow", "keras", "tflearn")


@pytest.mark.parametrize("name", ["keras", "tflearn", "embedding"])
def test_a_float_export_gives_the_framework_models_probabilities(door_runs, door_exports, name):
    from harness.deploy.litert import read_manifest
    from harness.runs.trial import read_config

    manifest = read_manifest(door_exports[name])
    config = read_config(door_runs[name])
    parity = manifest.parity
    assert parity.passed is True and parity.tolerance == 1e-4
    assert parity.max_abs_probability_difference <= 1e-4
    assert parity.test_faces > 0 and parity.decoded_agreement == 1.0
    assert parity.exported == parity.framework
    # The folder describes itself: enough to use the file without the run.
    assert manifest.preprocessing == config.preprocessing
    assert manifest.input_shape == list(config.preprocessing.shape)
    assert manifest.head == config.model.head and manifest.source["trial_id"] == config.trial_id()
    # A regression head's spread comes with it: an export has no validation predictions.
    assert (len(manifest.age_residuals) == 101) if name == "embedding" else manifest.age_residuals is None
    assert manifest.labels["age_groups"][3] == "(15, 20)" and manifest.labels["genders"] == ["male", "female"]
    assert manifest.gate["default_threshold"] == 0.5
    model_file = door_exports[name] / manifest.model_file
    assert hashlib.sha256(model_file.read_bytes()).hexdigest() == manifest.sha256
    assert parity.bytes == model_file.stat().st_size


def test_parity_is_measured_on_the_runs_test_faces(door_runs, door_exports):
    """The manifest's figures, recomputed here from the exported file and stored predictions."""
    from harness.deploy.litert import LiteModel, read_manifest
    from harness.models import metrics
    from harness.runs.trial import load_splits, read_config

    run = door_runs["tflearn"]
    config = read_config(run)
    test = load_splits(run, config, ["test"])["test"]
    outputs = LiteModel(door_exports["tflearn"] / "model.tflite").outputs(test.x)
    stored = np.load(run / "predictions.npz")
    assert list(stored["ids"].astype(str)) == test.ids
    assert np.abs(outputs - stored["outputs"]).max() <= 1e-4
    manifest = read_manifest(door_exports["tflearn"])
    scored = metrics.compute(config.model.head, outputs, test.age, test.gender)
    assert manifest.parity.exported["age_exact_accuracy"] == scored["age_exact_accuracy"]
    assert manifest.parity.test_faces == len(test.ids)


@pytest.mark.parametrize("quantize", ["dynamic", "int8"])
def test_a_quantized_export_reports_its_accuracy_change_and_size(door_runs, door_exports, tmp_path, quantize):
    from harness.deploy.litert import LiteModel, read_manifest
    from harness.models import metrics
    from harness.runs.trial import load_splits, read_config

    run = door_runs["tflearn"]
    result = harness("export", run, "--quantize", quantize, "--out", tmp_path / quantize)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_manifest(tmp_path / quantize)
    parity, float_parity = manifest.parity, read_manifest(door_exports["tflearn"]).parity
    assert manifest.quantize == quantize and parity.passed is None and parity.tolerance is None
    assert parity.bytes < float_parity.bytes
    config = read_config(run)
    test = load_splits(run, config, ["test"])["test"]
    scored = metrics.compute(config.model.head, LiteModel(tmp_path / quantize / "model.tflite").outputs(test.x),
                             test.age, test.gender)
    for key, change in parity.accuracy_change_points.items():
        assert parity.exported[key] == scored[key]
        assert change == pytest.approx(100 * (scored[key] - parity.framework[key]), abs=1e-3)


@pytest.fixture(scope="module")
def faces(tmp_path_factory, utkface_sample):
    out = tmp_path_factory.mktemp("faces")
    for i, path in enumerate(utkface_sample["path"].iloc[30:36]):
        Image.open(path).convert("RGB").save(out / f"face{i}.jpg")
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (200, 240, 3), dtype=np.uint8)).save(out / "noise.png")
    return out


def _by_face(result) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    return {(r["file"].rsplit("/", 1)[-1], r["face"]): r for r in json.loads(result.stdout)}


@pytest.mark.parametrize("name", ["keras", "tflearn", "embedding"])
def test_litert_predict_matches_the_framework_model_on_real_faces(door_runs, door_exports, faces, name):
    framework = _by_face(harness("predict", "--model", door_runs[name], faces, "--json", "--min-age", "18"))
    exported = _by_face(harness("predict", "--model", door_exports[name], faces, "--json", "--min-age", "18"))
    assert framework.keys() == exported.keys()
    assert sum(r["face"] is not None for r in exported.values()) >= 5
    for key, ours in exported.items():
        theirs = framework[key]
        in_years = ours["age"] is not None   # the years model: "a male, about N (lo-hi)"
        for field in ("age_group", "gender", "gate", "undefined_reason", "box") + (() if in_years else ("sentence",)):
            assert ours[field] == theirs[field], (key, field)
        if in_years:
            # Outputs 1e-5 apart can move an interval's end across a whole year, not more.
            assert ours["age"] == pytest.approx(theirs["age"], abs=0.11), key   # printed to 0.1 years
            assert np.abs(np.subtract(ours["age_interval"], theirs["age_interval"])).max() <= 1, key
        assert in_years == (name == "embedding" and ours["face"] is not None), key
        # A regression unit's 1e-4 is 0.01 years, which moves a little mass across each year.
        for group, p in ours["age_probabilities"].items():
            assert p == pytest.approx(theirs["age_probabilities"][group], abs=2e-3 if in_years else 2e-4)
    assert exported[("noise.png", None)]["sentence"] == "Undefined: no face found"


def test_litert_predict_imports_no_framework(door_exports, faces):
    code = ("import sys, json; from harness.cli import main; "
            f"rc = main(['predict', '--model', {str(door_exports['tflearn'])!r}, {str(faces / 'face0.jpg')!r}, "
            "'--json']); "
            f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORK_MODULES!r})))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
    assert result.stderr == ""   # LiteRT's own start-up line does not reach the terminal


def test_an_ensemble_exports_one_folder_per_member(door_runs, faces, tmp_path):
    from harness.deploy.litert import read_manifest
    from harness.runs.ensemble import Member, build_round
    from harness.runs.trial import read_config

    members = [Member(f"t-{b}", door_runs[b], read_config(door_runs[b]), b) for b in ("keras", "tflearn")]
    build_round(members, tmp_path / "round-0")
    result = harness("export", tmp_path / "round-0", "--out", tmp_path / "export")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_manifest(tmp_path / "export")
    assert manifest.kind == "ensemble" and manifest.members == ["members/0", "members/1"]
    assert manifest.parity.passed is True and manifest.parity.decoded_agreement == 1.0
    assert {read_manifest(tmp_path / "export" / m).source["backend"] for m in manifest.members} == {"keras", "tflearn"}
    # The members' mean, as the ensemble round computes it, from the exported files.
    from harness.deploy.classify import classify
    from harness.deploy.predictors import ExportPredictor

    (face,) = classify(ExportPredictor(tmp_path / "export"), faces / "face0.jpg")
    assert face.undefined_reason is None and sum(face.age_probabilities.values()) == pytest.approx(1, abs=1e-3)


def test_bad_exports_are_refused_with_the_file_and_the_reason(door_runs, door_exports, tmp_path):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    result = harness("export", unfinished, "--out", tmp_path / "a")
    assert result.returncode == 2 and "not a finished run (no DONE)" in result.stderr
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    result = harness("export", door_runs["keras"], "--out", taken)
    assert result.returncode == 2 and "is not an export folder" in result.stderr
    assert (taken / "notes.txt").read_text() == "mine"
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    manifest = json.loads((door_exports["keras"] / "export.json").read_text())
    del manifest["head"], manifest["preprocessing"]
    (damaged / "export.json").write_text(json.dumps({**manifest, "quantize": "int4"}))
    result = harness("predict", "--model", damaged, tmp_path)
    assert result.returncode == 2 and "export.json: key quantize" in result.stderr


# --- issue 23 §1: an export is verified when it is opened ---------------------------------

def _copy_export(source, target, **manifest_changes):
    import shutil

    shutil.copytree(source, target)
    if manifest_changes:
        manifest = json.loads((target / "export.json").read_text())
        for key, value in manifest_changes.items():
            if isinstance(value, dict):
                manifest[key] = {**manifest[key], **value}
            else:
                manifest[key] = value
        (target / "export.json").write_text(json.dumps(manifest))
    return target


def test_a_replaced_or_damaged_model_file_is_refused_naming_the_file_and_the_manifest(door_exports, faces,
                                                                                       tmp_path):
    photo = faces / "face0.jpg"
    good = harness("predict", "--model", door_exports["keras"], photo)
    assert good.returncode == 0, good.stderr

    flipped = _copy_export(door_exports["keras"], tmp_path / "flipped")
    data = bytearray((flipped / "model.tflite").read_bytes())
    middle = len(data) // 2
    data[middle:middle + 2000] = bytes(b ^ 0xFF for b in data[middle:middle + 2000])
    (flipped / "model.tflite").write_bytes(bytes(data))
    # Another valid model with the same input shape and head: the TFLearn CNN's file in the Keras FCN's folder.
    swapped = _copy_export(door_exports["keras"], tmp_path / "swapped")
    (swapped / "model.tflite").write_bytes((door_exports["tflearn"] / "model.tflite").read_bytes())
    zeros = _copy_export(door_exports["keras"], tmp_path / "zeros", sha256="0" * 64)
    for folder in (flipped, swapped, zeros):
        result = harness("predict", "--model", folder, photo)
        assert result.returncode == 2, (folder, result.stdout)
        assert f"{folder / 'model.tflite'}: its sha256 is" in result.stderr
        assert f"that {folder / 'export.json'} records" in result.stderr and "Traceback" not in result.stderr


def test_a_model_file_outside_the_export_and_shapes_that_do_not_fit_are_refused_at_load(door_exports, faces,
                                                                                          tmp_path):
    photo = faces / "face0.jpg"
    keras = door_exports["keras"]
    sha = json.loads((keras / "export.json").read_text())["sha256"]
    for name, model_file in (("climbs", "../../keras/model.tflite"), ("absolute", str(keras / "model.tflite"))):
        folder = _copy_export(keras, tmp_path / name, model_file=model_file, sha256=sha)
        result = harness("predict", "--model", folder, photo)
        assert result.returncode == 2 and f"model_file {model_file!r} is outside the export folder" in result.stderr
    bigger = _copy_export(keras, tmp_path / "bigger", preprocessing={"size": 32})
    result = harness("predict", "--model", bigger, photo)
    assert result.returncode == 2 and "its preprocessing makes inputs of shape [32, 32, 3]" in result.stderr
    years = _copy_export(keras, tmp_path / "years", head="years_softmax")
    result = harness("predict", "--model", years, photo)
    assert result.returncode == 2 and "head years_softmax has 103 outputs, but model.tflite gives 10" in result.stderr


def test_an_export_whose_parity_failed_is_refused_unless_asked_for(door_exports, faces, tmp_path):
    photo = faces / "face0.jpg"
    failed = _copy_export(door_exports["tflearn"], tmp_path / "failed", parity={"passed": False})
    refused = harness("predict", "--model", failed, photo)
    assert refused.returncode == 2 and "its parity check failed" in refused.stderr
    assert "--allow-failed-parity" in refused.stderr
    allowed = harness("predict", "--model", failed, photo, "--allow-failed-parity")
    assert allowed.returncode == 0, allowed.stderr
    server = harness("serve", "--model", failed, "--port", "1")   # refused while loading, before it binds
    assert server.returncode == 2 and "its parity check failed" in server.stderr


def test_a_killed_export_takes_its_converter_with_it(door_runs, tmp_path):
    """Issue 23 §9: kill -9 of `harness export` ends the conversion worker too; nothing is
    written into the export folder afterwards."""
    import os
    import signal
    import time

    from harness.processes import WORKER_MODULE
    from tests.helpers.processes import processes_mentioning, wait_for

    out = tmp_path / "export"
    exporter = subprocess.Popen([sys.executable, "-m", "harness", "export", str(door_runs["keras"]), "--out", str(out)],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    converter = wait_for(lambda: [line for line in processes_mentioning(f"{WORKER_MODULE} export")
                                  if str(tmp_path) in line], timeout=120, what="the conversion worker")
    pid = int(converter[0].split()[0])
    exporter.send_signal(signal.SIGKILL)
    exporter.wait(timeout=30)

    def gone():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, timeout=30, what="the conversion worker to end with its parent")
    time.sleep(3)   # what an orphan would have written by now
    assert not (out / "model.tflite").exists()


def test_a_killed_re_export_keeps_the_earlier_export_and_a_retry_replaces_it(door_runs, faces, tmp_path):
    """Issue 23 §5: an export is built beside its folder and renamed into place."""
    import os
    import signal

    from harness.processes import WORKER_MODULE
    from tests.helpers.processes import processes_mentioning, wait_for

    out = tmp_path / "door"
    assert harness("export", door_runs["keras"], "--out", out).returncode == 0
    before = (out / "export.json").read_bytes()
    exporter = subprocess.Popen([sys.executable, "-m", "harness", "export", str(door_runs["keras"]), "--out", str(out)],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    converter = wait_for(lambda: [line for line in processes_mentioning(f"{WORKER_MODULE} export")
                                  if str(tmp_path) in line], timeout=120, what="the conversion worker")
    exporter.send_signal(signal.SIGKILL)
    exporter.wait(timeout=30)
    pid = int(converter[0].split()[0])
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower(),
             timeout=30, what="the conversion worker to end")
    assert (out / "export.json").read_bytes() == before   # the earlier export, whole
    assert harness("predict", "--model", out, faces / "face0.jpg").returncode == 0
    retry = harness("export", door_runs["keras"], "--out", out)
    assert retry.returncode == 0, retry.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["door"]   # nothing left beside it


def test_a_failed_export_leaves_nothing_and_a_half_written_one_is_replaced(door_runs, faces, tmp_path):
    import shutil

    broken = tmp_path / "broken-run"
    shutil.copytree(door_runs["keras"], broken)
    (broken / "model.keras").unlink()
    failed = harness("export", broken, "--out", tmp_path / "exports" / "door")
    assert failed.returncode != 0
    assert not (tmp_path / "exports").exists() or list((tmp_path / "exports").iterdir()) == []
    half = tmp_path / "half"
    half.mkdir()
    (half / "model.tflite").write_bytes(b"the first bytes of a conversion that was killed")
    replaced = harness("export", door_runs["keras"], "--out", half)
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert (half / "export.json").is_file()
    assert harness("predict", "--model", half, faces / "face0.jpg").returncode == 0


# --- issue 23, export messages: one line naming the file -----------------------------------

def _copy_run(run, target):
    import shutil

    shutil.copytree(run, target, ignore=shutil.ignore_patterns("tensorboard"))
    return target


@pytest.mark.parametrize("case, message", [
    ("tflearn without its checkpoint data", "model.tflearn.data-00000-of-00001: missing (the trial's saved model)"),
    ("keras archive cut short", "model.keras: damaged, not a complete Keras archive (File is not a zip file)"),
])
def test_a_run_with_damaged_model_files_is_refused_naming_the_file(door_runs, tmp_path, case, message):
    backend = "tflearn" if case.startswith("tflearn") else "keras"
    run = _copy_run(door_runs[backend], tmp_path / "run")
    if backend == "tflearn":
        (run / "model.tflearn.data-00000-of-00001").unlink()
    else:
        data = (run / "model.keras").read_bytes()
        (run / "model.keras").write_bytes(data[: len(data) // 2])
    for command in (("export", run, "--out", tmp_path / "out"), ("predict", "--model", run, tmp_path)):
        result = harness(*command)
        assert result.returncode == 2, result.stderr[-2000:]
        error = result.stderr.strip().splitlines()[-1]
        assert error == f"harness: error: {run}/{message}; delete the trial's folder and run its experiment again"
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_a_read_only_run_folder_is_exported(door_runs, tmp_path):
    from tests.helpers.files import read_only

    run = _copy_run(door_runs["keras"], tmp_path / "run")
    log_before = (run / "log.txt").read_bytes()
    with read_only(run):
        result = harness("export", run, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "export.json").is_file() and (run / "log.txt").read_bytes() == log_before


# --- issue 24 §4: a run on port descriptors is ONE network from the chip ---------------------

@pytest.fixture(scope="module")
def port_runs(tmp_path_factory, utkface_sample):
    from harness.data.images import Preprocessing
    from harness.models.spec import FCN, FaceResNet, TrainingSpec
    from tests.helpers.backend_runs import make_trial, train_all

    base = tmp_path_factory.mktemp("port_runs")
    table = utkface_sample.groupby(["age_group", "gender"]).head(8).reset_index(drop=True)
    prep = Preprocessing(representation="dlib_embedding", descriptor_engine="keras")
    pooled = Preprocessing(representation="dlib_embedding", descriptor_engine="keras", descriptor_features="pooled")
    # On the pooled features, standardized (what they need: see the models guide).
    runs = {name: make_trial(base / name, table, base / "cache", backend, prep=features,
                             architecture=FCN(widths=[32], standardize=features is pooled),
                             training=TrainingSpec(epochs=2, batch_size=32, seed=3))
            for name, backend, features in (("keras", "keras", prep), ("tflearn", "tflearn", prep),
                                            ("keras-pooled", "keras", pooled), ("tflearn-pooled", "tflearn", pooled))}
    # Fine-tuned from the cut: dlib's last level trains on the cached activations below it.
    cut = Preprocessing(representation="dlib_embedding", descriptor_engine="keras", descriptor_features="level0_input")
    runs.update({f"{backend}-cut": make_trial(base / f"{backend}-cut", table, base / "cache", backend, prep=cut,
                                              architecture=FaceResNet(train_from="level0", input="cut"),
                                              training=TrainingSpec(epochs=2, batch_size=16, seed=3))
                 for backend in ("keras", "tflearn")})
    train_all(runs.values())
    return runs


@pytest.mark.parametrize("name", ["keras", "tflearn", "keras-pooled", "tflearn-pooled", "keras-cut", "tflearn-cut"])
def test_a_port_descriptor_run_exports_one_network_from_the_chip(port_runs, faces, tmp_path, name):
    out = tmp_path / "door"
    result = harness("export", port_runs[name], "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["input"] == "chip" and manifest["input_shape"] == [150, 150, 3]
    assert "get_face_chip(size=200, padding=0.25)" in manifest["chip"]["alignment"]
    assert manifest["parity"]["passed"] is True and manifest["parity"]["max_abs_probability_difference"] <= 1e-4
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model.tflite"]
    assert (out / "model.tflite").stat().st_size > 20_000_000          # the face ResNet is inside
    framework = _by_face(harness("predict", "--model", port_runs[name], faces, "--json"))
    exported = _by_face(harness("predict", "--model", out, faces, "--json"))
    assert framework.keys() == exported.keys() and sum(k[1] is not None for k in exported) >= 5
    for key, ours in exported.items():
        assert ours["sentence"] == framework[key]["sentence"], key
        for group, p in ours["age_probabilities"].items():
            assert p == pytest.approx(framework[key]["age_probabilities"][group], abs=1e-4)
    code = ("import sys, json; from harness.cli import main; "
            f"main(['predict', '--model', {str(out)!r}, {str(faces / 'face0.jpg')!r}]); "
            f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORK_MODULES!r})))")
    alone = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert json.loads(alone.stdout.strip().splitlines()[-1]) == []    # dlib detects and aligns; LiteRT does the rest


def test_an_ensemble_of_port_descriptor_runs_measures_its_parity_on_the_chips(port_runs, tmp_path):
    from harness.deploy.litert import read_manifest
    from harness.runs.ensemble import Member, build_round
    from harness.runs.trial import read_config

    # Before, the ensemble's parity fed its whole-door members the test faces' descriptors.
    members = [Member(f"t-{n}", port_runs[n], read_config(port_runs[n]), n) for n in ("keras", "tflearn")]
    build_round(members, tmp_path / "round-0")
    result = harness("export", tmp_path / "round-0", "--out", tmp_path / "export")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_manifest(tmp_path / "export")
    assert manifest.parity.passed is True and manifest.parity.max_abs_probability_difference <= 1e-4
    assert [read_manifest(tmp_path / "export" / m).input for m in manifest.members] == ["chip", "chip"]
