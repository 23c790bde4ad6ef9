"""Paired tests over rounds, and the report's comparison tables built from them."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from harness.analysis import comparisons, statistics
from harness.runs import experiment_file, grid
from tests.helpers.experiments import TINY, write


def test_the_corrected_t_test_widens_the_variance_by_the_test_train_ratio():
    differences = np.array([1.0, 2.0, 0.5, 1.5, 1.0])
    ratio = 0.25
    interval, p = statistics.corrected_interval(differences, ratio)
    n, mean, var = 5, differences.mean(), differences.var(ddof=1)
    corrected = math.sqrt((1 / n + ratio) * var)
    assert interval.mean == pytest.approx(mean)
    half = scipy_stats.t.ppf(0.975, n - 1) * corrected
    assert (interval.low, interval.high) == pytest.approx((mean - half, mean + half))
    assert p == pytest.approx(2 * scipy_stats.t.sf(mean / corrected, n - 1))
    # Without the overlap term it is the ordinary paired t-test, which is less cautious.
    plain = scipy_stats.ttest_1samp(differences, 0.0).pvalue
    assert statistics.corrected_interval(differences, 0.0)[1] == pytest.approx(plain)
    assert p > plain


def test_verdicts_name_the_higher_side_only_when_the_test_says_so():
    keras = [0.90, 0.91, 0.92, 0.90, 0.93, 0.91]
    tflearn = [0.80, 0.80, 0.81, 0.79, 0.82, 0.80]
    names = ("Keras", "TFLearn")
    assert statistics.compare(keras, tflearn, 0.25, names).verdict == "Keras higher"
    assert statistics.compare(tflearn, keras, 0.25, names).verdict == "TFLearn higher"
    noisy = statistics.compare([0.9, 0.7, 0.85, 0.75, 0.8, 0.82], [0.8, 0.8, 0.8, 0.8, 0.8, 0.8], 0.25, names)
    assert noisy.verdict == "no detectable difference" and noisy.p_value > 0.05
    assert 0.0 <= noisy.wilcoxon_p <= 1.0   # six pairs: Wilcoxon is given


def test_one_round_is_never_significant_and_wilcoxon_needs_six_pairs():
    one = statistics.compare([0.95], [0.50], 0.25, ("a", "b"))
    assert one.verdict == "not enough rounds" and math.isnan(one.p_value)
    assert one.difference.mean == pytest.approx(0.45)
    five = statistics.compare([0.9] * 4 + [0.91], [0.8] * 5, 0.25, ("a", "b"))
    assert math.isnan(five.wilcoxon_p) and not math.isnan(five.p_value)
    same = statistics.compare([0.8] * 6, [0.8] * 6, 0.25, ("a", "b"))
    assert same.verdict == "no detectable difference" and same.p_value == 1.0 and same.wilcoxon_p == 1.0
    with pytest.raises(ValueError, match="round for round"):
        statistics.compare([0.1, 0.2], [0.1], 0.25, ("a", "b"))


def _trial(configuration, backend, round_, seed, joint, model="m", optimizer="adam"):
    spec = {"architecture": {"type": "fcn", "widths": [8]}, "head": "two_heads",
            "training": {"optimizer": optimizer, "learning_rate": 0.001}}
    return {"configuration": configuration, "backend": backend, "round": round_, "seed": seed,
            "model_name": model, "head": "two_heads", "optimizer": optimizer, "learning_rate": 0.001,
            "loss_fn": "default", "batch_size": 64, "epochs": 2, "extras": "", "spec": spec,
            "gender_accuracy": joint + 0.2, "age_exact_accuracy": joint + 0.1,
            "age_one_off_accuracy": joint + 0.3, "joint_accuracy": joint}


def test_framework_pairs_pair_by_round_and_seed_and_ignore_unpaired_rounds():
    rows = []
    for round_ in range(3):
        for seed in (0, 1):
            rows.append(_trial("A", "tflearn", round_, seed, 0.50 + 0.01 * round_))
            rows.append(_trial("A", "keras", round_, seed, 0.55 + 0.01 * round_ + 0.001 * seed))
    rows.append(_trial("A", "keras", 9, 0, 0.99))          # no TFLearn partner: left out
    rows.append(_trial("B", "keras", 0, 0, 0.40, model="b"))   # one backend only
    pairs = comparisons.framework_pairs(pd.DataFrame(rows), 0.5)
    joint = pairs[(pairs["configuration"] == "A") & (pairs["metric"] == "joint")].iloc[0]
    assert joint["pairs"] == 6
    assert joint["difference"] == pytest.approx(5.05)     # points, Keras − TFLearn
    assert joint["verdict"] == "Keras higher"
    only = pairs[pairs["configuration"] == "B"]
    assert set(only["verdict"]) == {comparisons.ONE_BACKEND} and (only["pairs"] == 0).all()


def test_the_baseline_comparison_names_what_changed_and_ranking_orders_by_joint():
    rows = []
    for round_ in range(4):
        for backend in ("tflearn", "keras"):
            rows.append(_trial("base", backend, round_, 0, 0.50 + 0.02 * round_))
            rows.append(_trial("sgd", backend, round_, 0, 0.40 + 0.02 * round_, optimizer="sgd"))
    frame = pd.DataFrame(rows)
    baseline = comparisons.baseline_configuration(frame, {"model": "m", "training": {"optimizer": "adam"}})
    assert baseline == "base"
    assert comparisons.baseline_configuration(frame, {"model": "m"}) is None   # ambiguous: names two
    versus = comparisons.against_baseline(frame, baseline, 0.3)
    assert set(versus["backend"]) == {"tflearn", "keras"}
    assert (versus["changes"] == "optimizer: adam → sgd").all()
    assert versus["joint difference"].tolist() == pytest.approx([-10.0, -10.0])
    assert set(versus["joint verdict"]) == {"baseline higher"}
    ranked = comparisons.ranking(frame, 0.3)
    assert ranked["configuration"].tolist()[:2] == ["base", "base"] and ranked["rank"].tolist() == [1, 2, 3, 4]
    assert (ranked["joint ci_low"] <= ranked["joint mean"]).all()


def test_changes_name_a_different_kind_of_network_once():
    fcn = {"architecture": {"type": "fcn", "widths": [8]}, "head": "two_heads", "training": {"optimizer": "adam"}}
    cnn = {"architecture": {"type": "small_cnn", "filters": [4]}, "head": "joint16", "training": {"optimizer": "adam"}}
    assert comparisons.changes(fcn, cnn) == ("architecture: small_cnn → fcn (see the configurations table); "
                                             "head: joint16 → two_heads")


def test_short_labels_are_unique_and_name_the_unusual_options():
    frame = pd.DataFrame([_trial("x", "keras", 0, 0, 0.5), _trial("y", "keras", 0, 0, 0.5),
                          _trial("z", "keras", 0, 0, 0.5, optimizer="sgd")])
    frame.loc[1, "model_name"] = "other"
    labels = comparisons.short_labels(frame)
    assert labels == {"x": "m", "y": "other", "z": "m sgd"}


def test_configurations_of_one_grid_model_that_differ_in_architecture_get_labels_that_say_how():
    """A search varies widths or dropout within one grid model: every such configuration
    was labelled just "m", so the report's tables showed rows no reader could tell apart."""
    rows = [_trial(c, "keras", 0, 0, 0.5) for c in ("a", "b", "c", "d")]
    for row, (widths, dropout) in zip(rows, [([8], 0.1), ([8], 0.4), ([16], 0.1), ([8], 0.1)]):
        row["spec"] = {**row["spec"], "architecture": {"type": "fcn", "widths": widths, "dropout": dropout}}
    rows[3]["optimizer"] = "sgd"
    labels = comparisons.short_labels(pd.DataFrame(rows))
    assert labels == {"a": "m", "b": "m dropout=0.4", "c": "m widths=[16]", "d": "m sgd"}
    assert len(set(labels.values())) == 4


def test_seeds_cross_the_split_rounds(tmp_path):
    experiment = {**TINY, "split": {"protocol": "stratified_kfold", "folds": 2}, "seeds": [0, 1, 2]}
    loaded = experiment_file.load(write(tmp_path, experiment))
    trials = grid.expand(loaded, lambda prep: ("/x", {0: "d0", 1: "d1"}))
    assert len(trials) == 2 * 2 * 3    # backends x rounds x seeds
    assert {(t.config.round, t.config.training.seed) for t in trials} == {(r, s) for r in (0, 1) for s in (0, 1, 2)}
    rounds = pd.DataFrame([{"round": t.config.round, "seed": t.config.training.seed} for t in trials])
    sentence = comparisons.rounds_sentence(rounds, loaded.split)
    assert "2 split rounds" in sentence and "3 seeds" in sentence and "both the split and the initialisation" in sentence


def test_a_configuration_fine_tuned_from_the_chip_says_its_frozen_part_runs_every_epoch():
    from harness.analysis.report.tables import describe_configuration
    from harness.models.spec import FaceResNet, ModelSpec

    def label(architecture):
        spec = ModelSpec(architecture=architecture).model_dump(mode="json")
        return describe_configuration({"model_name": "m", "head": "two_heads", "spec": spec, "loss_fn": "default",
                                       "extras": "", "optimizer": "adam", "learning_rate": 0.001,
                                       "batch_size": 64, "epochs": 5})
    note = "frozen part run every epoch"
    assert note in label(FaceResNet(train_from="level1"))   # a trial that read the chip
    assert note not in label(FaceResNet(train_from="level1", input="cut"))
    assert note not in label(FaceResNet()) and note not in label(FaceResNet(train_from="all"))
