"""Every backend (TFLearn, and Keras on TensorFlow and on JAX), trained for real in worker
processes on a few hundred UTKFace faces."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from harness.data.images import Preprocessing
from harness.models import heads
from harness.models.backends import BACKENDS as REGISTERED_BACKENDS
from harness.models.backends import DEFAULT_BACKENDS
from harness.models.spec import FCN, ORIGINAL_STUDY, LeviHassner, ModelSpec, Regularizer, SmallCNN, TrainingSpec
from harness.runs.trial import TrialConfig
from tests.helpers.backend_runs import ROOT, make_trial, metrics_of, train_all, worker

# Every backend the registry lists, and the two frameworks the original study compared.
BACKENDS = list(REGISTERED_BACKENDS)
STUDY_BACKENDS = list(DEFAULT_BACKENDS)


@pytest.fixture(scope="module")
def trials(tmp_path_factory, utkface_sample):
    """One finished 2-epoch run of every head on every backend."""
    base = tmp_path_factory.mktemp("trials")
    runs = {(backend, head): make_trial(base / f"{backend}_{head}", utkface_sample, base / "cache", backend, head)
            for backend in BACKENDS for head in heads.HEADS}
    train_all(runs.values())
    return runs


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("head", list(heads.HEADS))
def test_every_head_trains_on_both_backends(trials, backend, head):
    run_dir = trials[backend, head]
    for name in ("history.csv", "predictions.npz", "metrics.json", "env.json", "log.txt",
                 "DONE", "splits.csv", "config.json"):
        assert (run_dir / name).is_file(), name
    if backend != "keras-jax":   # Keras writes TensorBoard logs through TensorFlow only
        assert any((run_dir / "tensorboard").rglob("*")), "no TensorBoard logs"
    history = pd.read_csv(run_dir / "history.csv")
    assert history["epoch"].tolist() == [1, 2]
    assert np.isfinite(history[["loss", "val_loss", "seconds"]].to_numpy()).all()
    env = json.loads((run_dir / "env.json").read_text())
    assert env["framework"] == backend and env["device"] == "CPU"
    predictions = np.load(run_dir / "predictions.npz")
    outputs = predictions["outputs"]
    assert outputs.shape == (len(predictions["age"]), heads.output_size(head))
    start = 0
    for part in heads.parts(head):
        if part.activation == "softmax":
            np.testing.assert_allclose(outputs[:, start:start + part.units].sum(1), 1, atol=1e-5)
        start += part.units
    result = metrics_of(run_dir)
    assert result["n"] == len(outputs) > 50
    for key in ("gender_accuracy", "age_exact_accuracy", "age_one_off_accuracy", "joint_accuracy"):
        assert 0.0 <= result[key] <= 1.0
    assert result["age_exact_accuracy"] <= result["age_one_off_accuracy"]
    assert np.array(result["age_confusion"]).sum() == result["n"]
    # The framework's chatter is in the log, not on the terminal.
    assert "epoch" in (run_dir / "log.txt").read_text().lower()


def test_metrics_are_recomputable_from_the_predictions(trials):
    from harness.models import metrics
    run_dir = trials["tflearn", "joint16"]
    saved = np.load(run_dir / "predictions.npz")
    again = metrics.compute("joint16", saved["outputs"], saved["age"], saved["gender"])
    assert again == {k: v for k, v in metrics_of(run_dir).items() if k in again}


def test_worker_keeps_framework_output_off_the_terminal(tmp_path, utkface_sample):
    run_dir = make_trial(tmp_path / "run", utkface_sample, tmp_path / "cache", "tflearn")
    result = worker(run_dir)
    assert "Training Step" not in result.stdout + result.stderr
    assert "Training Step" in (run_dir / "log.txt").read_text()


def shipped_architectures():
    return [*ORIGINAL_STUDY.values(), LeviHassner(), SmallCNN(),
            LeviHassner(filters=(24, 64, 96), dense=[128, 128]), SmallCNN(filters=[16, 32], dense=[32]),
            FCN(widths=[32, 16], regularizer=Regularizer(kind="l1_l2", l1=1e-4)),
            FCN(widths=[32], standardize=True)]


def test_parameter_counts_match_for_every_shipped_architecture(tmp_path):
    # A head is the last layers only: every trunk with one head, every head on one trunk.
    pairs = [(arch, "two_heads") for arch in shipped_architectures()] + \
            [(FCN(widths=[32, 16]), head) for head in heads.HEADS]
    entries = [{"model": ModelSpec(architecture=arch, head=head).model_dump(mode="json"),
                "input_shape": [227, 227, 3] if arch == LeviHassner() else [64, 64, 3]}
               for arch, head in pairs]
    specs = tmp_path / "specs.json"
    specs.write_text(json.dumps(entries))
    counts = {b: json.loads(worker("count-params", b, specs).stdout.strip().splitlines()[-1])
              for b in BACKENDS}
    assert counts["keras"] == counts["tflearn"] == counts["keras-jax"]
    assert len(set(counts["keras"])) > 10 and min(counts["keras"]) > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_backend_same_metrics(tmp_path, trials, utkface_sample, backend):
    again = make_trial(tmp_path / "again", utkface_sample, tmp_path / "cache", backend)
    worker(again)
    first = np.load(trials[backend, "two_heads"] / "predictions.npz")["outputs"]
    np.testing.assert_array_equal(np.load(again / "predictions.npz")["outputs"], first)
    assert metrics_of(again)["joint_accuracy"] == metrics_of(trials[backend, "two_heads"])["joint_accuracy"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_saved_model_reloads_to_the_same_probabilities(tmp_path, trials, backend):
    run_dir = trials[backend, "two_heads"]
    worker("predict", run_dir, tmp_path / "reloaded.npz")
    reloaded = np.load(tmp_path / "reloaded.npz")
    saved = np.load(run_dir / "predictions.npz")
    assert (reloaded["ids"] == saved["ids"]).all()
    np.testing.assert_allclose(reloaded["outputs"], saved["outputs"], atol=1e-5, rtol=0)


# What each backend keeps as FCN's standardize statistics, read back from its saved model.
_STATISTICS = {
    "keras": "m = b.load(run, None, None, None); mean, std = m.get_layer('standardize').get_weights()",
    "tflearn": ("m = b.load(run, c.model, c.training, c.preprocessing.shape); "
                "v = {x.op.name: x for x in m.graph.get_collection('variables')}; "
                "mean, std = (m.dnn.get_weights(v['standardize/' + n]) for n in ('mean', 'std'))"),
}


@pytest.mark.parametrize("backend", STUDY_BACKENDS)
def test_a_standardized_fcn_keeps_the_training_faces_statistics_in_its_saved_model(tmp_path, utkface_sample,
                                                                                    backend):
    from harness.runs.trial import load_splits, read_config

    run = make_trial(tmp_path / "run", utkface_sample, tmp_path / "cache", backend,
                     architecture=FCN(widths=[16], standardize=True), training=TrainingSpec(epochs=1, seed=7))
    worker(run)
    code = (f"import json, numpy as np; from backends.loading import backend_module; "
            f"from harness.runs.trial import read_config; from pathlib import Path; run = Path({str(run)!r}); "
            f"c = read_config(run); b = backend_module({backend!r}); {_STATISTICS[backend]}; "
            "print(json.dumps([np.asarray(mean).tolist(), np.asarray(std).tolist()]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    mean, std = map(np.asarray, json.loads(out.stdout.strip().splitlines()[-1]))
    train = load_splits(run, read_config(run), ["train"])["train"].x.reshape(-1, mean.size).astype(np.float64)
    np.testing.assert_allclose(mean, train.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(std, np.maximum(train.std(axis=0), 1e-6), rtol=1e-4)
    # ... and the reloaded model answers as the trained one did.
    worker("predict", run, tmp_path / "reloaded.npz")
    np.testing.assert_allclose(np.load(tmp_path / "reloaded.npz")["outputs"],
                               np.load(run / "predictions.npz")["outputs"], atol=1e-5, rtol=0)


def test_keras_model_loads_in_safe_mode(trials):
    # A fresh process with only Keras: safe_mode=True refuses arbitrary code, so this
    # also proves the custom LRN layer is registered rather than a lambda.
    code = ("import keras, backends.keras; "
            f"m = keras.saving.load_model({str(trials['keras', 'two_heads'] / 'model.keras')!r}, "
            "compile=False, safe_mode=True); print(m.count_params())")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip().splitlines()[-1]) > 0


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory, utkface_sample):
    """A Levi & Hassner net (LRN included) trained, reloaded and run on the JAX engine in one
    process, and the top-level packages that process had imported."""
    base = tmp_path_factory.mktemp("jax_run")
    run_dir = make_trial(base / "run", utkface_sample, base / "cache", "keras-jax",
                         architecture=LeviHassner(filters=(8, 16, 16), dense=[16, 16]),
                         prep=Preprocessing(size=48))
    code = ("import json, sys; from pathlib import Path; from backends import training; "
            f"run = Path({str(run_dir)!r}); training.train(run); "
            "training.predict(run, run / 'again.npz'); "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'tflearn'})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return run_dir, json.loads(out.stdout.strip().splitlines()[-1])


def test_keras_on_jax_never_imports_tensorflow(jax_run):
    run_dir, imported = jax_run
    assert imported == []
    env = json.loads((run_dir / "env.json").read_text())
    assert env["engine"] == "jax" and env["framework"] == "keras-jax" and "jax" in env
    assert env["device"] == "CPU"
    np.testing.assert_allclose(np.load(run_dir / "again.npz")["outputs"],
                               np.load(run_dir / "predictions.npz")["outputs"], atol=1e-5, rtol=0)


def test_a_keras_on_jax_run_predicts_photos_and_exports_through_tensorflow(jax_run, utkface_sample, tmp_path):
    run_dir, _ = jax_run
    photo = utkface_sample["path"].iloc[0]
    out = subprocess.run([sys.executable, "-m", "harness", "predict", "--model", str(run_dir), photo, "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    (face,) = json.loads(out.stdout)
    assert face["undefined_reason"] is None and face["gender"] in ("male", "female")
    # The .keras file does not depend on the engine: TFLite export loads it on TensorFlow,
    # and parity is measured against the JAX model's own test predictions.
    exported = subprocess.run([sys.executable, "-m", "harness", "export", str(run_dir), "--out", str(tmp_path / "e")],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert exported.returncode == 0, exported.stderr[-3000:]
    parity = json.loads((tmp_path / "e" / "export.json").read_text())["parity"]
    assert parity["passed"] is True and parity["decoded_agreement"] == 1.0


def test_keras_on_jax_lrn_is_tensorflows_formula():
    """The LRN written in keras.ops (for engines other than TensorFlow) against TensorFlow's
    kernel, side by side in one process whose Keras runs on JAX."""
    code = ("import os; os.environ['KERAS_BACKEND'] = 'jax'; import numpy as np; "
            "from backends.loading import backend_module; k = backend_module('keras-jax'); "
            "x = np.random.default_rng(0).normal(size=(2, 5, 5, 7)).astype('float32'); "
            "ours = np.asarray(k.LocalResponseNormalization(**k.LRN)(x)); "
            "import tensorflow as tf; theirs = tf.nn.local_response_normalization(x, **k.LRN).numpy(); "
            "print(float(np.abs(ours - theirs).max()), float(np.abs(theirs - x).max()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    difference, effect = map(float, out.stdout.split()[-2:])
    assert difference < 1e-6 and effect > 1e-5   # equal, and the layer does change its input


def test_harness_catches_the_tuple_accuracy_artifact(tmp_path, utkface_sample):
    """The study's tuple model: the framework's argmax 'accuracy' looks excellent.

    On a 2-unit (age_index, gender_index) output, argmax just asks whether the age index
    beats the gender index, true for nearly every face; the harness scores the labels.
    """
    for backend in STUDY_BACKENDS:
        run_dir = make_trial(tmp_path / backend, utkface_sample, tmp_path / "cache", backend,
                             "tuple_original", ORIGINAL_STUDY["tuple_fcn"],
                             TrainingSpec(epochs=15, batch_size=32, loss="mean_squared_error"))
        worker(run_dir)
        framework = pd.read_csv(run_dir / "history.csv")["val_framework_accuracy"].iloc[-1]
        harness = metrics_of(run_dir)["joint_accuracy"]
        assert framework > 0.75, (backend, framework)
        assert framework - harness > 0.4, (backend, framework, harness)


def test_max_norm_is_enforced_by_tflearn_clipping(tmp_path, utkface_sample):
    arch = FCN(widths=[64, 32], regularizer=Regularizer(kind="max_norm", max_norm=0.3))
    run_dir = make_trial(tmp_path / "run", utkface_sample, tmp_path / "cache", "tflearn",
                         architecture=arch, training=TrainingSpec(epochs=1, learning_rate=0.05))
    worker(run_dir)
    code = f"""
import numpy as np, tensorflow as tf
reader = tf.train.load_checkpoint({str(run_dir / 'model.tflearn')!r})
norms = [np.linalg.norm(reader.get_tensor(name), axis=0).max()
         for name in reader.get_variable_to_shape_map() if name.endswith('/W')]
print(len(norms), max(norms))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    count, largest = out.stdout.split()
    assert int(count) == 4 and float(largest) <= 0.3 + 1e-5


@pytest.mark.parametrize("bad,match", [
    (lambda: FCN(widths=[64, 0]), "widths"),
    (lambda: FCN(widths=[8], dropout=1.0), "dropout"),
    (lambda: FCN(widths=[8, 4], dropout=[0.1]), "dropout has 1 values for 2 layers"),
    (lambda: TrainingSpec(optimizer="adamw"), "optimizer"),
    (lambda: TrainingSpec(epochs=-1), "epochs"),
    (lambda: ModelSpec(architecture={"type": "rnn"}), "type"),
    (lambda: ModelSpec(architecture=FCN(widths=[8]), head="softmax3"), "head"),
    (lambda: Regularizer(kind="max_norm", max_norm=0), "max_norm"),
    (lambda: TrialConfig(backend="pytorch", model=ModelSpec(architecture=FCN(widths=[8])),
                         threads=1, data_fingerprint="d", cache_entry="x"), "backend"),
    (lambda: TrialConfig(backend="keras", model=ModelSpec(architecture=FCN(widths=[8]), head="tuple_sound"),
                         training=TrainingSpec(loss="hinge"), threads=1, data_fingerprint="d",
                         cache_entry="x"), "fixes its losses"),
])
def test_invalid_specs_stop_before_training(bad, match):
    with pytest.raises((ValidationError, ValueError), match=match):
        bad()


def test_worker_rejects_a_bad_config_without_training(tmp_path, utkface_sample):
    run_dir = make_trial(tmp_path / "run", utkface_sample, tmp_path / "cache", "keras")
    config = json.loads((run_dir / "config.json").read_text())
    config["training"]["learning_rate"] = -1
    (run_dir / "config.json").write_text(json.dumps(config))
    result = worker(run_dir, check=False)
    assert result.returncode != 0 and "learning_rate" in result.stderr
    assert not (run_dir / "history.csv").exists()


def test_metrics_of_all_nan_outputs_count_as_wrong_and_undefined():
    from harness.models import metrics
    result = metrics.compute("two_heads", np.full((4, 10), np.nan), [0, 1, 2, 3], [0, 1, 0, 1])
    assert result["joint_accuracy"] == 0.0 and result["undefined"] == 4
    assert np.array(result["age_confusion"]).sum() == 0


@pytest.mark.parametrize("backend", STUDY_BACKENDS)
def test_a_schedule_reaches_the_optimizer_and_early_stopping_keeps_the_best_epoch(tmp_path, utkface_sample, backend):
    from harness.models import metrics
    from harness.models.spec import EarlyStopping, Schedule

    # The rate falls a millionfold after two epochs: from then on the network stands still
    # (so the optimizer really got the rate), the validation accuracy stops improving, and
    # training stops two epochs after its best.
    training = TrainingSpec(epochs=12, batch_size=32, seed=7, learning_rate=0.003,
                            schedule=Schedule(kind="step", step_every=2, factor=1e-6),
                            early_stopping=EarlyStopping(metric="val_joint_accuracy", patience=2))
    run = make_trial(tmp_path / "run", utkface_sample, tmp_path / "cache", backend,
                     architecture=FCN(widths=[32]), training=training)
    worker(run)
    history = pd.read_csv(run / "history.csv")
    kept = metrics_of(run)["training"]
    assert kept["stopped_early"] and len(history) == kept["epochs_trained"] == kept["epoch_kept"] + 2 < 12
    np.testing.assert_allclose(history["learning_rate"], [0.003, 0.003] + [0.003e-6] * (len(history) - 2))
    loss = history["val_loss"].to_numpy()
    assert np.abs(loss[2:] - loss[1]).max() < 1e-4 < abs(loss[1] - loss[0])
    # The saved model is the kept epoch's: its validation predictions score what that epoch did.
    saved = np.load(run / "val_predictions.npz")
    again = metrics.compute("two_heads", saved["outputs"], saved["age"], saved["gender"])
    assert again["joint_accuracy"] == pytest.approx(history["val_joint_accuracy"].iloc[kept["epoch_kept"] - 1])


def test_both_frameworks_stop_at_the_same_epoch_on_the_same_validation_curve(tmp_path, utkface_sample):
    """Issue 25 §2: the stopping rule is the harness's, not a framework's. At a rate of
    1e-12 neither network moves, so both see the same curve, flat; each stops `patience`
    epochs after its first epoch (a flat curve never improves) and keeps that epoch."""
    from harness.models.spec import EarlyStopping

    training = TrainingSpec(epochs=10, batch_size=32, seed=7, learning_rate=1e-12,
                            early_stopping=EarlyStopping(metric="val_joint_accuracy", patience=3))
    stops = {}
    for backend in STUDY_BACKENDS:
        run = make_trial(tmp_path / backend, utkface_sample, tmp_path / "cache", backend,
                         architecture=FCN(widths=[32]), training=training)
        worker(run)
        curve = pd.read_csv(run / "history.csv")["val_joint_accuracy"].to_numpy()
        assert np.ptp(curve) == 0.0, (backend, curve)   # the same curve: flat
        kept = metrics_of(run)["training"]
        stops[backend] = (kept["epochs_trained"], kept["epoch_kept"], kept["stopped_early"], len(curve))
    assert set(stops.values()) == {(4, 1, True, 4)}, stops
