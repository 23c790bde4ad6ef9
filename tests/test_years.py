"""Age in years: the two years heads' targets and readings, and their metrics (MAE,
CS(5), and group accuracies taken from the group of each predicted age)."""
import numpy as np
import pytest

from harness import heads, losses, metrics
from harness.labels import ages_to_groups, age_to_group


def _softmax_rows(years, gender, spread=0.0, rng=None):
    """years-head outputs: a distribution over 0..100 centred on ``years``, then gender."""
    grid = np.arange(heads.N_YEARS)
    width = np.maximum(spread, 1e-3)
    p = np.exp(-0.5 * ((grid[None, :] - np.asarray(years, float)[:, None]) / width) ** 2)
    p /= p.sum(axis=1, keepdims=True)
    return np.concatenate([p, np.eye(2)[gender]], axis=1)


def test_targets_and_predicted_years_round_trip_for_both_years_heads():
    years, gender = np.array([0.0, 3.5, 17.0, 18.0, 27.0, 100.0]), np.array([0, 1, 0, 1, 0, 1])
    groups = ages_to_groups(years)
    dex = heads.targets("years_softmax", groups, gender, years=years)
    assert dex.shape == (6, heads.N_YEARS + 2) and (dex[:, :heads.N_YEARS].argmax(1) == np.floor(years)).all()
    assert np.allclose(heads.predicted_years("years_softmax", dex), np.floor(years))
    regression = heads.targets("years_regression", groups, gender, years=years)
    assert regression.shape == (6, 3) and np.allclose(heads.predicted_years("years_regression", regression), years)
    # Out of range predictions are clipped to 0-100; NaN stays NaN (never a made-up age).
    assert heads.predicted_years("years_regression", np.array([[-0.3, .5, .5], [1.7, .5, .5],
                                                               [np.nan, .5, .5]])).tolist()[:2] == [0.0, 100.0]
    assert np.isnan(heads.predicted_years("years_regression", np.array([[np.nan, .5, .5]]))).all()
    for head in heads.YEARS_HEADS:
        with pytest.raises(ValueError, match="exact ages in years.*Adience"):
            heads.targets(head, [3, 4], [0, 1], years=[18.0, float("nan")])


def test_huber_is_squared_within_five_years_and_linear_beyond():
    y_true = np.zeros((3, 1))
    y_pred = np.array([[0.03], [0.05], [0.25]])          # 3, 5 and 25 years off
    loss = losses.huber(np, y_true, y_pred)
    assert np.allclose(loss, [0.5 * 0.03 ** 2, 0.5 * 0.05 ** 2, 0.05 * 0.25 - 0.5 * 0.05 ** 2])


def test_years_metrics_on_constructed_predictions():
    true = np.array([20.0, 30.0, 40.0, 50.0])
    predicted = np.array([22.0, 36.0, 40.0, 44.5])       # errors 2, 6, 0, 5.5
    scored = metrics.years_metrics(predicted, true)
    assert scored["age_mae"] == pytest.approx(13.5 / 4) and scored["age_cs5"] == pytest.approx(0.5)
    # A face without a prediction is a miss for CS and makes the MAE NaN, not dropped.
    with_nan = metrics.years_metrics([22.0, np.nan], [20.0, 30.0])
    assert np.isnan(with_nan["age_mae"]) and with_nan["age_cs5"] == 0.5


@pytest.mark.parametrize("head", heads.YEARS_HEADS)
def test_group_accuracies_are_those_of_the_predicted_ages_groups(head):
    rng = np.random.default_rng(0)
    true_years = rng.uniform(0, 90, 400).round()
    predicted = np.clip(true_years + rng.normal(0, 6, 400), 0, 100)
    gender = rng.integers(0, 2, 400)
    if head == "years_softmax":
        outputs = _softmax_rows(predicted, gender, spread=3.0)
        predicted = heads.predicted_years(head, outputs)
    else:
        outputs = np.concatenate([predicted[:, None] / heads.YEARS_SCALE, np.eye(2)[gender]], axis=1)
    true_groups = ages_to_groups(true_years)
    scored = metrics.compute(head, outputs, true_groups, gender, years=true_years)
    predicted_groups = np.array([age_to_group(a) for a in predicted])
    assert scored["age_exact_accuracy"] == pytest.approx(np.mean(predicted_groups == true_groups))
    assert scored["age_one_off_accuracy"] == pytest.approx(np.mean(np.abs(predicted_groups - true_groups) <= 1))
    assert scored["gender_accuracy"] == 1.0
    assert scored["age_mae"] == pytest.approx(np.mean(np.abs(predicted - true_years)))
    assert 0 < scored["age_cs5"] < 1 and np.isfinite(scored["loss"])
    # Without exact ages: group accuracies still, but no MAE and no loss (it is in years).
    without = metrics.compute(head, outputs, true_groups, gender)
    assert "age_mae" not in without and np.isnan(without["loss"])
    assert without["age_exact_accuracy"] == scored["age_exact_accuracy"]


def test_a_years_run_is_reported_in_years_beside_a_group_model(tmp_path):
    from harness.results import read_index
    from tests.test_experiments import TINY, harness_cli, write

    experiment = {**TINY, "backends": ["keras"], "grid": {
        "models": [{"name": "groups", "architecture": {"type": "fcn", "widths": [32]}},
                   {"name": "years", "head": "years_softmax", "architecture": {"type": "fcn", "widths": [32]}}],
        "training": {"epochs": 3, "batch_size": 32}}}
    result = harness_cli("run", write(tmp_path, experiment), "--results", tmp_path / "r",
                         cache=str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr[-2000:]
    records = {r["model_name"]: r for r in read_index(tmp_path / "r" / "tiny").values()}
    years = records["years"]["metrics"]
    assert 0 < years["age_mae"] < 60 and 0 <= years["age_cs5"] <= 1
    assert "age_mae" not in records["groups"]["metrics"]
    table = (tmp_path / "r" / "tiny" / "tables" / "age_in_years.csv").read_text().splitlines()
    assert len(table) == 2 and table[1].startswith("years years_softmax,Keras,1,")
    assert f",{years['age_mae']:.1f}," in table[1]
    assert "## Age in years" in (tmp_path / "r" / "tiny" / "report.md").read_text()
