"""Models that did not learn (issue 28 §2): the rule on constructed confusion matrices, and
a report whose one configuration did not learn: marked everywhere, listed in the
summary, left out of the verdicts unless asked."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.analysis.learning import did_not_learn
from harness.analysis.report import write_report
from tests.helpers.reports import learned_copy


def _confusion(per_group_right: float, answers=None, n=400) -> list:
    """Eight groups, 50 faces each: ``per_group_right`` of each answered right, the rest
    one group below (or every answer the group ``answers``)."""
    counts = np.zeros((8, 8))
    for g in range(8):
        if answers is not None:
            counts[g, answers] = n // 8
        else:
            counts[g, g] = round(per_group_right * n / 8)
            counts[g, max(0, g - 1) if g else 1] += n // 8 - counts[g, g]
    return counts.tolist()


LEARNED_GENDER = [[170, 30], [40, 160]]


@pytest.mark.parametrize("metrics,why", [
    ({"age_confusion": _confusion(0.6), "gender_confusion": LEARNED_GENDER}, None),
    ({"age_confusion": _confusion(0, answers=4), "gender_confusion": LEARNED_GENDER}, "age answers one group"),
    ({"age_confusion": _confusion(0.14), "gender_confusion": LEARNED_GENDER},
     "age exact 14.0%, within noise of always answering the most common"),     # 12.5 % + noise
    ({"age_confusion": _confusion(0.6), "gender_confusion": [[105, 95], [100, 100]]},
     "gender 51.2%, within noise"),
    ({"gender_accuracy": 0.5}, None),   # an older metrics.json without confusion matrices: not judged
])
def test_a_model_did_not_learn_when_it_answers_one_group_or_the_majority_rate(metrics, why):
    found = did_not_learn(metrics)
    assert (found is None) if why is None else (why in found), found


@pytest.fixture(scope="module")
def one_failed(tmp_path_factory) -> Path:
    """The fixture's results (both configurations really did not learn: 16x16 grayscale,
    two epochs) with the baseline's trials made to look learned, so that only ``sgd`` fails."""
    return learned_copy(tmp_path_factory.mktemp("results") / "report_fixture",
                        lambda config: config["training"]["optimizer"] != "sgd")


def test_a_configuration_that_did_not_learn_is_marked_listed_and_left_out_of_verdicts(one_failed, tmp_path):
    out = tmp_path / "report"
    write_report(one_failed, out)
    text = (out / "report.md").read_text()
    summary = text.split("## Summary", 1)[1].split("Made by", 1)[0]
    assert "⚠ **did not learn**: fcn_32 sgd: TFLearn in 4 of 4 rounds" in summary
    assert "**Best**: fcn_32 on" in summary and "Left out of framework verdicts" in summary
    pairs = pd.read_csv(out / "tables" / "framework_pairs.csv")
    failed = pairs[pairs["configuration"].str.contains("sgd")]
    assert (failed["verdict"] == "left out: TFLearn and Keras did not learn").all() and len(failed) == 4
    assert failed["difference"].isna().all()                       # no number to read as a finding
    kept = pairs[~pairs["configuration"].str.contains("sgd")]
    assert not kept["verdict"].str.startswith("left out").any() and kept["difference"].notna().all()
    versus = pd.read_csv(out / "tables" / "against_baseline.csv")
    assert (versus["joint verdict"] == "left out: " + versus["backend"].map(
        {"keras": "Keras", "tflearn": "TFLearn"}) + " did not learn").all()
    # Marked in every table that names configurations.
    ranking = pd.read_csv(out / "tables" / "ranking.csv")
    assert ranking.loc[ranking["configuration"].str.contains("sgd"), "configuration"].str.endswith(
        "⚠ TFLearn and Keras did not learn").all()
    trials = pd.read_csv(out / "tables" / "trials.csv")
    assert trials.loc[trials["optimizer"] == "sgd", "did_not_learn"].notna().all()
    assert trials.loc[trials["optimizer"] != "sgd", "did_not_learn"].isna().all()
    html = (out / "report.html").read_text()
    assert html.index("id='summary'") < html.index("<small>Made by")   # the summary opens the page


def test_include_degenerate_keeps_them_and_says_each_compares_a_failure(one_failed, tmp_path):
    out = tmp_path / "report"
    write_report(one_failed, out, include_degenerate=True)
    pairs = pd.read_csv(out / "tables" / "framework_pairs.csv")
    failed = pairs[pairs["configuration"].str.contains("sgd")]
    assert failed["verdict"].str.endswith("(compares a model that did not learn: TFLearn and Keras)").all()
    assert failed["difference"].notna().all()
    assert "Kept in the comparisons (--include-degenerate)" in (out / "report.md").read_text()


def test_the_joint_confusion_counts_each_face_in_its_16_classes():
    from harness.analysis.report.figures import joint_confusion

    readouts = np.zeros((3, 10))
    readouts[0, [4, 8]] = 1      # (25, 32), male
    readouts[1, [4, 9]] = 1      # (25, 32), female
    readouts[2, [0, 9]] = 1      # (0, 2), female
    labels = pd.DataFrame({"age_group": [4, 4, 1], "gender": [0, 0, 1]})
    matrix = joint_confusion(readouts, labels)
    assert matrix.shape == (16, 16) and matrix.sum() == 3
    assert matrix[8, 8] == 1 and matrix[8, 9] == 1 and matrix[3, 1] == 1   # class = 2 x group + gender


def test_the_tables_csv_are_rounded_as_shown_and_the_plots_include_the_joint_confusion(one_failed, tmp_path):
    out = tmp_path / "report"
    write_report(one_failed, out)
    pairs = pd.read_csv(out / "tables" / "framework_pairs.csv")
    for column in ("tflearn mean", "keras std", "difference", "ci_low"):
        values = pairs[column].dropna()
        assert len(values) and (values == values.round(1)).all(), column
    assert (out / "plots" / "joint_confusion_0.png").stat().st_size > 10_000
    trials = pd.read_csv(out / "tables" / "trials.csv")    # the raw per-trial values stay unrounded
    assert (trials["joint_accuracy"] != trials["joint_accuracy"].round(1)).any()
