"""Augmentation, soft age targets and the calibrated gate: generators and rules, then one
real trial per backend that uses all three."""
import json

import numpy as np
import pytest

from harness.data.labels import N_AGE, age_to_group, soft_age, to_two_hot
from harness.models import heads
from harness.models.augmentation import augment, mirror
from harness.models.gate import GateSpec, calibrate, false_accept_bound, gate_decisions
from harness.models.spec import Augmentation, TrainingSpec
from harness.runs import experiment_file
from harness.runs.experiment import ExperimentError
from tests.helpers.backend_runs import make_trial, metrics_of, worker

ALL = Augmentation(flip=True, shift=0.1, brightness=0.2, contrast=0.3)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((12, 16, 16, 3), dtype=np.float32)


def test_same_seed_and_epoch_give_the_same_images_and_other_epochs_differ(images):
    first = augment(images, ALL, seed=3, epoch=0)
    assert np.array_equal(first, augment(images, ALL, seed=3, epoch=0))
    assert not np.array_equal(first, augment(images, ALL, seed=3, epoch=1))
    assert not np.array_equal(first, augment(images, ALL, seed=4, epoch=0))
    assert first.shape == images.shape and first.dtype == np.float32
    assert first.min() >= 0.0 and first.max() <= 1.0


def test_each_option_does_only_what_it_says(images):
    before = images.copy()
    flipped = augment(images, Augmentation(flip=True), seed=0, epoch=0)
    assert np.array_equal(images, before), "the input must not change"
    mirrored = [np.array_equal(f, i[:, ::-1]) for f, i in zip(flipped, images)]
    kept = [np.array_equal(f, i) for f, i in zip(flipped, images)]
    assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)
    brighter = augment(images * 0.5 + 0.25, Augmentation(brightness=0.1), seed=0, epoch=0)
    offsets = (brighter - (images * 0.5 + 0.25)).reshape(len(images), -1)
    assert np.allclose(offsets, offsets[:, :1], atol=1e-6) and np.abs(offsets).max() <= 0.1 + 1e-6
    shifted = augment(images, Augmentation(shift=0.25), seed=0, epoch=0)
    assert not np.array_equal(shifted, images)
    # A shifted image is the original moved by whole pixels: some interior window matches.
    moved = 0
    for out, original in zip(shifted, images):
        moved += any(np.array_equal(out[4:12, 4:12], original[4 + dy:12 + dy, 4 + dx:12 + dx])
                     for dy in range(-4, 5) for dx in range(-4, 5))
    assert moved == len(images)


def test_turning_one_option_on_does_not_change_the_draws_of_another(images):
    flip_only = augment(images, Augmentation(flip=True), seed=5, epoch=2)
    flip_and_brightness = augment(images, Augmentation(flip=True, brightness=0.1), seed=5, epoch=2)
    # The same faces are mirrored in both.
    same = [np.allclose(np.clip(a + (b - a).mean(), 0, 1), b, atol=0.11) for a, b in zip(flip_only, flip_and_brightness)]
    assert all(same)


def test_augmentation_and_tta_refuse_descriptor_inputs():
    with pytest.raises(ValueError, match="embedding"):
        augment(np.zeros((4, 128), np.float32), ALL, 0, 0)
    with pytest.raises(ValueError, match="embedding_flip"):
        mirror(np.zeros((4, 128), np.float32))


def _experiment(tmp_path, **extra) -> str:
    spec = {"name": "options", "data": {"dataset": "utkface", "path": "x"},
            "grid": {"models": [{"name": "m", "architecture": {"type": "fcn", "widths": [8]}}]}}
    for dotted, value in extra.items():
        node = spec
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    path = tmp_path / "e.yaml"
    path.write_text(json.dumps(spec))
    return path


def test_bad_options_are_refused_before_anything_runs_naming_key_and_allowed_values(tmp_path):
    with pytest.raises(ExperimentError, match=r"augmentation\.flipp.*allowed: \['flip', 'shift', 'brightness', 'contrast'\]"):
        experiment_file.load(_experiment(tmp_path, grid__training={"augmentation": {"flipp": True}}))
    with pytest.raises(ExperimentError, match="training.augmentation: changes pixels.*dlib_embedding"):
        experiment_file.load(_experiment(tmp_path, grid__training={"augmentation": {"flip": True}},
                                     preprocessing={"representation": "dlib_embedding"}))
    with pytest.raises(ExperimentError, match="representation.*'pixels' or 'dlib_embedding'"):
        experiment_file.load(_experiment(tmp_path, preprocessing={"representation": "embedding"}))
    with pytest.raises(ExperimentError, match="age_target: soft needs a head with an age softmax"):
        experiment_file.load(_experiment(tmp_path, grid__training={"age_target": "soft"},
                                     grid__models=[{"name": "t", "head": "tuple_sound",
                                                    "architecture": {"type": "fcn", "widths": [8]}}]))
    with pytest.raises(ExperimentError, match="gate.max_false_accept"):
        experiment_file.load(_experiment(tmp_path, gate={"min_age": 18, "max_false_accept": 1.5}))


def test_soft_targets_and_the_gate_need_exact_ages_adience_is_refused(tmp_path, adience_images):
    from harness.runs.runner import prepare
    from tests.conftest import ADIENCE

    root, _ = adience_images
    years_head = [{"name": "years", "head": "years_softmax", "architecture": {"type": "fcn", "widths": [8]}}]
    for extra in ({"grid__training": {"age_target": "soft"}}, {"gate": {"min_age": 18}},
                  {"grid__models": years_head}):
        path = _experiment(tmp_path, data={"dataset": "adience", "path": str(ADIENCE), "images": str(root)},
                           split={"protocol": "adience_folds"}, **extra)
        with pytest.raises(ExperimentError, match="exact age in years.*only an age group") as refused:
            prepare(experiment_file.load(path), dry_run=True)
        if "grid__models" in extra:
            assert "head years_softmax (age in years)" in str(refused.value)


def test_soft_age_targets_keep_the_true_group_on_top_and_spread_to_neighbours():
    ages = np.arange(0, 101)
    soft = soft_age(ages, 2.0)
    assert soft.shape == (101, N_AGE) and np.allclose(soft.sum(1), 1, atol=1e-6)
    assert [int(g) for g in soft.argmax(1)] == [age_to_group(a) for a in ages]
    near_cut = soft[age_to_group(22)]
    assert soft[22, 4] > 0.2 and soft[22, 3] > soft[22, 4] and soft[28, 3] < 0.01 < soft[22, 4] + near_cut.sum()
    two_heads = heads.targets("two_heads", [3, 3], [0, 1], soft_age([16, 22], 2.0))
    assert np.allclose(two_heads[:, 8:], [[1, 0], [0, 1]]) and two_heads[1, 4] > two_heads[0, 4]
    joint = heads.targets("joint16", [3], [1], soft_age([16], 2.0))
    assert joint[0, :8].sum() == 0 and np.isclose(joint[0, 8:].sum(), 1)
    with pytest.raises(ValueError, match="no age softmax"):
        heads.targets("tuple_sound", [3], [1], soft_age([16], 2.0))
    with pytest.raises(ValueError, match="exact age"):
        soft_age([float("nan")], 2.0)


def test_options_left_at_their_neutral_values_keep_earlier_trial_ids():
    assert set(TrainingSpec().model_dump()) == {"optimizer", "learning_rate", "momentum", "loss",
                                                 "batch_size", "epochs", "seed"}
    soft = TrainingSpec(age_target="soft").model_dump()
    assert soft["age_target"] == "soft" and soft["age_sigma"] == 3.0
    assert TrainingSpec.model_validate(soft) == TrainingSpec(age_target="soft")


def _constructed_validation():
    """40 minors and 60 adults with known adult probabilities, all decoded as adults."""
    rng = np.random.default_rng(1)
    minors = rng.uniform(0.5, 0.8, 40)
    adults = rng.uniform(0.6, 0.99, 60)
    mass = np.concatenate([minors, adults])
    scores = np.zeros((100, 10))
    scores[:, 4] = mass                  # (25, 32): an adult group, the most likely one
    scores[:, 2] = 1 - mass              # (8, 12)
    scores[:, 8] = 1.0
    ages = np.concatenate([np.full(40, 12.0), np.full(60, 30.0)])
    return scores, ages, minors, adults


def test_the_calibrated_threshold_meets_its_target_and_is_the_lowest_that_does():
    scores, ages, minors, adults = _constructed_validation()
    chosen = calibrate(scores, ages, GateSpec(min_age=18, max_false_accept=0.05))
    assert chosen["met"] and chosen["val_false_accept_rate"] <= 0.05
    allowed = gate_decisions(scores, 18, [chosen["threshold"]])[0]
    assert allowed[:40].mean() == chosen["val_false_accept_rate"]
    assert (~allowed[40:]).mean() == pytest.approx(chosen["val_false_reject_rate"])
    # The next lower threshold that changes a decision lets one minor more in: too many.
    masses = scores[:, 4]
    lower = masses[masses < chosen["threshold"]].max()
    assert gate_decisions(scores, 18, [lower])[0][:40].mean() > 0.05
    assert chosen["val_minors"] == 40 and chosen["val_adults"] == 60


def test_a_target_no_threshold_meets_is_reported_not_clamped():
    scores, ages, *_ = _constructed_validation()
    scores[:40, 4], scores[:40, 2] = 0.999, 0.001       # minors look surer adults than any adult
    chosen = calibrate(scores, ages, GateSpec(min_age=18, max_false_accept=0.0))
    assert not chosen["met"] and chosen["threshold"] is None
    assert "no threshold lets at most 0.0% of the 40 validation faces under 18 in" in chosen["reason"]
    no_ages = calibrate(scores, np.full(100, np.nan), GateSpec())
    assert not no_ages["met"] and "no exact ages" in no_ages["reason"]
    only_adults = calibrate(scores[40:], ages[40:], GateSpec())
    assert not only_adults["met"] and "0 faces under 18" in only_adults["reason"]


def test_the_calibrated_borderline_band_asks_about_a_tenth_of_the_validation_faces_and_is_measured_on_test():
    from harness.models.gate import band_rates, borderline_band
    from harness.models.metrics import calibrated_gate

    scores, ages, *_ = _constructed_validation()
    gate = calibrated_gate(GateSpec(min_age=18, max_false_accept=0.05), scores, ages, scores, ages)
    band = gate["borderline"]
    threshold, masses = gate["threshold"], scores[:, 4]
    assert band["margin"] == borderline_band(scores, 18, threshold)
    inside = np.abs(masses - threshold) < band["margin"]
    assert 0.08 <= inside.mean() <= 0.10                 # the tenth nearest the threshold (ties aside)
    # On the same faces as "test": those asked are the band's; outside it the door decides itself.
    assert band["test_asked"] == pytest.approx(inside.mean())
    allowed = ~inside & (masses >= threshold)
    assert band["test_false_accept_rate"] == pytest.approx(allowed[:40].mean())
    assert band["test_false_reject_rate"] == pytest.approx((~inside & (masses < threshold))[40:].mean())
    assert band["test_false_accept_rate"] <= gate["test_false_accept_rate"]   # a band only ever asks more
    # A face described under the age is never allowed, band or not; undecodable faces are asked.
    child = np.concatenate([[0, 0, 0.9, 0.1, 0, 0, 0, 0], [1, 0]])
    assert band_rates([child], [30.0], 18, 0.5, 0.0) == {"asked": 0.0, "false_accept_rate": None,
                                                          "false_reject_rate": 1.0}
    assert band_rates([np.full(10, np.nan)], [30.0], 18, 0.5, 0.1)["asked"] == 1.0


def test_gate_decisions_follow_the_gate_rule_for_a_minor_group():
    row = np.concatenate([[0, 0, 0, 0.45, 0.30, 0.25, 0, 0], [1, 0]])   # decoded (15, 20)
    assert not gate_decisions([row], 18, [0.0, 0.5])[0].any()
    assert gate_decisions([to_two_hot(4, 0)], 18, [0.99])[0, 0]


def test_predict_uses_the_calibrated_threshold_unless_told_otherwise():
    from harness.deploy.classify import gate_threshold
    from harness.models.gate import DEFAULT_GATE_THRESHOLD

    class Run:
        calibrated_gate = {"min_age": 18.0, "threshold": 0.83, "max_false_accept": 0.02, "met": True}

    assert gate_threshold(Run(), 18)[0] == 0.83
    assert gate_threshold(Run(), 18, 0.6) == (0.6, "--threshold")
    assert gate_threshold(Run(), 21)[0] == DEFAULT_GATE_THRESHOLD     # calibrated for another age
    Run.calibrated_gate = None
    assert gate_threshold(Run(), 18)[0] == DEFAULT_GATE_THRESHOLD


@pytest.mark.trains
@pytest.mark.parametrize("backend", ["keras", "tflearn"])
def test_a_trial_with_augmentation_soft_ages_and_a_gate_trains_and_stores_it(tmp_path, utkface_sample, backend):
    from harness.runs.trial import read_config

    training = TrainingSpec(epochs=2, batch_size=32, seed=7, age_target="soft", age_sigma=2.0,
                            augmentation=ALL)
    run = make_trial(tmp_path / backend, utkface_sample, tmp_path / "cache", backend, training=training)
    config = read_config(run).model_copy(update={"gate": GateSpec(min_age=18, max_false_accept=0.1)})
    (run / "config.json").write_text(config.model_dump_json())
    worker(run)
    result = metrics_of(run)
    assert 0 <= result["age_exact_accuracy"] <= 1 and result["n"] > 0
    gate_result = result["gate"]
    assert gate_result["min_age"] == 18 and gate_result["val_minors"] + gate_result["val_adults"] > 0
    assert gate_result["met"] == (gate_result["threshold"] is not None)
    val = np.load(run / "val_predictions.npz")
    assert len(val["ids"]) == gate_result["val_minors"] + gate_result["val_adults"]
    assert len(open(run / "history.csv").read().splitlines()) == 3     # header + 2 epochs


def test_a_confidence_level_judges_the_upper_bound_and_refuses_more_to_be_sure():
    from scipy.stats import binomtest

    scores, ages, *_ = _constructed_validation()
    point = calibrate(scores, ages, GateSpec(min_age=18, max_false_accept=0.1))
    sure = calibrate(scores, ages, GateSpec(min_age=18, max_false_accept=0.1, confidence=0.9))
    assert point["met"] and sure["met"] and sure["threshold"] > point["threshold"]
    allowed = int(gate_decisions(scores, 18, [sure["threshold"]])[0][:40].sum())
    # The bound is the exact one-sided Clopper-Pearson limit: scipy's binomial test agrees.
    exact = binomtest(allowed, 40).proportion_ci(confidence_level=0.8, method="exact").high
    assert sure["val_false_accept_bound"] == pytest.approx(exact, abs=1e-9)
    assert sure["val_false_accept_bound"] <= 0.1
    at_point = int(gate_decisions(scores, 18, [point["threshold"]])[0][:40].sum())
    assert false_accept_bound(at_point, 40, 0.9) > 0.1     # the point estimate's threshold is not sure enough
    assert "confidence" not in GateSpec().model_dump()       # unused: earlier trial ids unchanged


def test_the_report_says_which_epoch_each_early_stopped_trial_kept(tmp_path):
    from tests.helpers.experiments import TINY, harness_cli, write

    experiment = {**TINY, "backends": ["keras"], "grid": {**TINY["grid"], "training": {
        "epochs": 8, "batch_size": 32, "schedule": {"kind": "step", "step_every": 2, "factor": 1e-6},
        "early_stopping": {"metric": "val_joint_accuracy", "patience": 2}}}}
    result = harness_cli("run", write(tmp_path, experiment), "--results", tmp_path / "r",
                         cache=str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr[-3000:]
    (trial,) = (tmp_path / "r" / "tiny" / "trials").iterdir()
    kept = metrics_of(trial)["training"]
    report = (tmp_path / "r" / "tiny" / "report.md").read_text()
    assert "epoch kept / trained" in report and f"{kept['epoch_kept']}/{kept['epochs_trained']}" in report
    assert "step" in report and "early stop val_joint_accuracy p=2" in report   # the configuration says so
    # Who it fails: UTKFace's races, from the trial's own labels, down to the door's 16-17s.
    assert "## Who the model fails" in report and "| group | White |" in report and "| age band | 16–17 |" in report


def test_the_report_calibrates_the_gate_on_every_rounds_validation_faces_too(tmp_path):
    import csv as csv_module

    from harness.models.gate import calibrate
    from harness.runs.trial import age_residuals, read_config
    from tests.helpers.experiments import TINY, harness_cli, write

    experiment = {**TINY, "backends": ["keras"], "split": {"protocol": "stratified_kfold", "folds": 2, "val_fraction": 0.3},
                  "rounds": [0, 1], "gate": {"min_age": 18, "max_false_accept": 0.1}}
    result = harness_cli("run", write(tmp_path, experiment), "--results", tmp_path / "r",
                         cache=str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr[-3000:]
    trials = sorted((tmp_path / "r" / "tiny" / "trials").iterdir())
    assert len(trials) == 2
    # What the report says, against the calibration redone here on both rounds' validation faces.
    readouts, ages = [], []
    for trial in trials:
        saved = np.load(trial / "val_predictions.npz")
        labels = {row["id"]: float(row["age"]) for row in csv_module.DictReader(open(trial / "labels.csv"))}
        head = read_config(trial).model.head
        readouts.append(heads.readout(head, saved["outputs"], age_residuals(trial, head)))
        ages.append([labels[i] for i in saved["ids"].astype(str)])
    chosen = calibrate(np.concatenate(readouts), np.concatenate(ages), GateSpec(min_age=18, max_false_accept=0.1))
    assert chosen["val_minors"] == sum(metrics_of(t)["gate"]["val_minors"] for t in trials)
    with open(tmp_path / "r" / "tiny" / "tables" / "pooled_gate.csv") as handle:
        (row,) = list(csv_module.DictReader(handle))
    assert int(row["pooled validation minors"]) == chosen["val_minors"] and row["rounds"] == "2"
    expected = f"{chosen['threshold']:.3f}" if chosen["met"] else "not met"
    assert row["pooled threshold"].startswith(expected)
    assert "## Door gate calibrated on every round's validation faces" in (
        tmp_path / "r" / "tiny" / "report.md").read_text()


def test_trials_are_ranked_by_the_epoch_their_saved_model_is_from(tmp_path):
    """An early-stopped trial's saved model is its kept epoch's: best.json and ensembles
    rank it by that epoch's validation score, not by the epochs it trained past it."""
    import json

    import pandas as pd

    from harness.runs.trial import final_validation

    run = tmp_path / "trial"
    run.mkdir()
    pd.DataFrame({"epoch": [1, 2, 3, 4], "loss": [1.0] * 4, "val_loss": [1.0] * 4,
                  "val_joint_accuracy": [0.50, 0.70, 0.62, 0.60]}).to_csv(run / "history.csv", index=False)
    assert final_validation(run) == 0.60   # no early stopping: the last epoch is the model's
    (run / "metrics.json").write_text(json.dumps({"training": {"epochs_trained": 4, "epoch_kept": 2}}))
    assert final_validation(run) == 0.70
    (run / "metrics.json").write_text("{not json")
    assert final_validation(run) == 0.60   # unreadable metrics: the last epoch, as before
