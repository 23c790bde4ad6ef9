"""Age in years: the two years heads' targets and readings, and their metrics (MAE,
CS(5), and group accuracies taken from the group of each predicted age)."""
import numpy as np
import pytest

from harness.data.labels import age_to_group, ages_to_groups
from harness.models import heads, losses, metrics


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


@pytest.mark.trains
def test_a_years_run_is_reported_in_years_beside_a_group_model(tmp_path):
    from harness.runs.index import read_index
    from tests.helpers.experiments import TINY, harness_cli, write

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
    # (A model of three epochs may not learn; its label then says so: years years_softmax ⚠ ...)
    assert len(table) == 2 and table[1].startswith("years years_softmax") and ",Keras,1," in table[1]
    assert f",{years['age_mae']:.1f}," in table[1]
    assert "## Age in years" in (tmp_path / "r" / "tiny" / "report.md").read_text()


def test_a_regression_readout_spreads_its_prediction_by_the_validation_residuals():
    outputs = np.array([[0.30, 0.9, 0.1], [0.995, 0.2, 0.8], [np.nan, 0.5, 0.5]])   # 30 and 99.5 years
    residuals = np.random.default_rng(0).normal(4.0, 6.0, 2000)        # biased: the mean is taken out
    readout = heads.readout("years_regression", outputs, residuals)
    assert readout.shape == (3, heads.YEARS_READOUT) and heads.readout_head(readout) == "years_softmax"
    assert np.allclose(readout[:2, :heads.N_YEARS].sum(1), 1) and np.isnan(readout[2, :heads.N_YEARS]).all()
    # The distribution's mean is the model's own prediction (not moved by the residuals'
    # bias), except where clipping at 100 years cuts the spread off.
    assert heads.predicted_years("years_softmax", readout)[0] == pytest.approx(30.0, abs=1e-6)
    low, high = heads.years_interval(readout)
    # The central 80 %: about +-1.28 standard deviations of the residuals.
    assert low[0] == pytest.approx(30 - 1.28 * 6, abs=1.5) and high[0] == pytest.approx(30 + 1.28 * 6, abs=1.5)
    assert high[1] == 100 and np.isnan(low[2])
    # Without residuals all the mass sits at the prediction, shared by the two whole years around it.
    point = heads.readout("years_regression", np.array([[0.273, 0.5, 0.5]]))
    assert point[0, 27] == pytest.approx(0.7) and point[0, 28] == pytest.approx(0.3)


def test_the_interval_and_its_coverage_on_constructed_distributions():
    readout = _softmax_rows([30.0, 30.0, 60.0], [0, 1, 0], spread=4.0)
    low, high = heads.years_interval(readout)
    # A normal with sd 4 holds 80 % within +-5.1 years.
    assert low.tolist() == [25.0, 25.0, 55.0] and high.tolist() == [35.0, 35.0, 65.0]
    scored = metrics.years_metrics([30, 30, 60], [34.9, 36.0, 50.0], (low, high))
    assert scored["age_interval_coverage"] == pytest.approx(1 / 3)


def test_the_gate_reads_p_age_at_least_a_and_never_allows_a_face_described_as_under_a():
    from harness.data.labels import decode
    from harness.models.gate import GateSpec, adult_evidence, calibrate, gate, gate_rates

    p = np.zeros((3, heads.N_YEARS))
    p[0, 17], p[0, 19] = 0.3, 0.7      # 18.4 on average; P(>= 18) = 0.7
    p[1, 11], p[1, 20] = 0.45, 0.55    # 15.95 on average, yet P(>= 18) = 0.55
    p[2, 17] = 1.0                     # surely 17
    readouts = np.concatenate([p, np.tile([[0.6, 0.4]], (3, 1))], axis=1)
    probability, described = adult_evidence(readouts, 18)
    assert np.allclose(probability, [0.7, 0.55, 0.0]) and described.tolist() == [True, False, False]
    decisions = [gate(r, decode(heads.scores("years_softmax", r[None])[0]), 18, 0.5)[0] for r in readouts]
    assert decisions == ["allow", "deny", "deny"]
    # The gate at 18 itself, not at a group's edge: a 17-year-old and an 18-year-old apart.
    assert gate_rates(readouts[[0, 2]], [18.0, 17.0], 18, 0.5) == {
        "min_age": 18, "threshold": 0.5, "minors": 1, "adults": 1,
        "false_accept_rate": 0.0, "false_reject_rate": 0.0}
    # Calibration on years readouts: the lowest P(>= 18) that lets in at most 2 % of minors.
    rng = np.random.default_rng(1)
    ages = rng.uniform(5, 60, 600).round()
    rows = _softmax_rows(np.clip(ages + rng.normal(0, 4, 600), 0, 100), rng.integers(0, 2, 600), spread=4.0)
    chosen = calibrate(rows, ages, GateSpec(min_age=18, max_false_accept=0.02))
    assert chosen["met"] and chosen["val_false_accept_rate"] <= 0.02 and chosen["val_false_reject_rate"] < 0.3
    assert gate_rates(rows, ages, 18, chosen["threshold"])["false_accept_rate"] == chosen["val_false_accept_rate"]
    with pytest.raises(ValueError, match=r"\(N, 10\) group scores or \(N, 103\) years"):
        adult_evidence(np.zeros((2, 12)), 18)


def test_soft_years_targets_spread_each_age_over_its_neighbouring_years():
    from harness.data.labels import soft_years

    soft = soft_years([27.0, 0.0, 100.0], sigma=2.0)
    assert soft.shape == (3, heads.N_YEARS) and np.allclose(soft.sum(1), 1, atol=1e-6)
    assert soft[0].argmax() == 27 and soft[0, 26] == pytest.approx(soft[0, 28], rel=1e-5)
    assert soft[0, 25] < soft[0, 26] < soft[0, 27]
    # The ends keep the tails: nothing is lost below 0 or above 100.
    assert soft[1].argmax() == 0 and soft[2].argmax() == 100
    targets = heads.targets("years_softmax", [4, 0, 7], [0, 1, 0], soft, years=[27.0, 0.0, 100.0])
    assert np.array_equal(targets[:, :heads.N_YEARS], soft) and targets[:, heads.N_YEARS:].tolist()[1] == [0, 1]
    with pytest.raises(ValueError, match=r"shape \(3, 101\) for head 'years_softmax'"):
        heads.targets("years_softmax", [4, 0, 7], [0, 1, 0], soft[:, :8], years=[27.0, 0.0, 100.0])
    with pytest.raises(ValueError, match="no age softmax"):
        heads.targets("years_regression", [4, 0, 7], [0, 1, 0], soft, years=[27.0, 0.0, 100.0])
