"""Metrics from saved predictions only: the same code scores every backend.

Never a framework's own "accuracy": the study's tuple model reported 96 % from
TFLearn's argmax-over-2-units metric; these numbers are what the labels say.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix

from harness.data.labels import N_AGE, N_GENDER, decode_batch
from harness.models import heads, losses
from harness.models.gate import DEFAULT_ASK_SHARE, GateSpec, band_rates, borderline_band, calibrate, gate_rates


def _argmax_or_invalid(part: np.ndarray) -> np.ndarray:
    """Row-wise argmax; -1 where the row has a NaN/inf (never counts as right)."""
    finite = np.isfinite(part).all(axis=1)
    return np.where(finite, np.argmax(np.where(np.isfinite(part), part, -np.inf), axis=1), -1)


def _confusion(true: np.ndarray, pred: np.ndarray, n: int) -> list[list[int]]:
    if len(true) == 0:   # every output was NaN: nothing to tabulate
        return np.zeros((n, n), dtype=int).tolist()
    return confusion_matrix(true, pred, labels=range(n)).tolist()


# Cumulative score: the share of faces whose predicted age is within this many years.
CS_YEARS = 5


def years_metrics(predicted, true, interval=None) -> dict:
    """Mean absolute error in years and CS(5) of predicted ages; NaN predictions count as
    misses for CS and make the MAE NaN (never silently dropped).

    ``interval``: (low, high) whole years of each face's predicted interval; its coverage
    is the share of faces whose age (in whole years) lies inside, which says whether the
    interval ``predict`` prints is honest (about 80 % for an 80 % interval).
    """
    predicted, true = np.asarray(predicted, dtype=np.float64), np.asarray(true, dtype=np.float64)
    error = np.abs(predicted - true)
    with np.errstate(invalid="ignore"):
        within = np.where(np.isfinite(error), error <= CS_YEARS, False)
    result = {"age_mae": float(error.mean()) if len(error) else float("nan"),
              f"age_cs{CS_YEARS}": float(within.mean()) if len(error) else float("nan")}
    if interval is not None:
        low, high = (np.asarray(v, dtype=np.float64) for v in interval)
        with np.errstate(invalid="ignore"):
            inside = (np.floor(true) >= low) & (np.floor(true) <= high)
        result["age_interval_coverage"] = float(inside.mean()) if len(true) else float("nan")
    return result


def compute(head: str, outputs, age, gender, loss: str | None = None,
            threshold: float = 0.0, years=None, residuals=None) -> dict:
    """All metrics for one set of test predictions (raw model outputs and true labels).

    ``years``: the faces' exact ages; a years head is then also scored in years (MAE,
    CS(5)). Its group accuracies come from the group of each predicted age. The coverage
    of its age interval is scored from its distribution: years_softmax's own, or for
    years_regression the spread of validation ``residuals`` (not scored without them).
    """
    outputs = np.asarray(outputs, dtype=np.float64)
    age, gender = np.asarray(age, dtype=int), np.asarray(gender, dtype=int)
    in_years = head in heads.YEARS_HEADS
    known = years is not None and np.isfinite(np.asarray(years, dtype=np.float64)).all()
    scores = heads.scores(head, outputs)
    pred_age = _argmax_or_invalid(scores[:, :N_AGE])
    pred_gender = _argmax_or_invalid(scores[:, N_AGE:])
    age_ok, gender_ok = pred_age == age, pred_gender == gender
    with np.errstate(invalid="ignore"):
        rounded = np.where(np.isfinite(scores), scores >= 0.5, False)
    exact = (rounded == heads.targets("two_heads", age, gender).astype(bool)).all(axis=1)
    if in_years and not known:   # its loss is on years: without them there is none
        per_sample = np.full(len(age), np.nan)
    else:
        per_sample = losses.per_sample(np, head, loss, heads.targets(head, age, gender, years=years), outputs)
    valid = (pred_age >= 0) & (pred_gender >= 0)
    extra = {}
    if in_years and known:
        has_spread = head == "years_softmax" or residuals is not None
        interval = heads.years_interval(heads.years_readout(head, outputs, residuals)) if has_spread else None
        extra = years_metrics(heads.predicted_years(head, outputs), years, interval)
    return {
        "n": int(len(age)),
        "gender_accuracy": float(gender_ok.mean()),
        "age_exact_accuracy": float(age_ok.mean()),
        "age_one_off_accuracy": float(((np.abs(pred_age - age) <= 1) & (pred_age >= 0)).mean()),
        "joint_accuracy": float((age_ok & gender_ok).mean()),
        "two_hot_exact_match": float(exact.mean()),
        "loss": float(np.mean(per_sample)) if np.isfinite(per_sample).all() else float("nan"),
        "undefined": int(sum(not d.defined for d in decode_batch(scores, threshold))),
        "age_confusion": _confusion(age[valid], pred_age[valid], N_AGE),
        "gender_confusion": _confusion(gender[valid], pred_gender[valid], N_GENDER),
        **extra,
    }


def calibrated_gate(spec: GateSpec, val_readouts, val_years, test_readouts, test_years) -> dict:
    """The gate's threshold chosen on validation faces, and its rates on the test faces
    (readouts: see :func:`harness.models.heads.readout`); with it, the borderline band
    that asks about a tenth of the validation faces and what it does on the test faces
    (``serve --borderline auto``)."""
    chosen = calibrate(val_readouts, val_years, spec)
    test_years = np.asarray(test_years, dtype=np.float64)
    if chosen["met"] and len(test_years) and not np.isnan(test_years).any():
        rates = gate_rates(test_readouts, test_years, spec.min_age, chosen["threshold"])
        chosen.update(test_false_accept_rate=rates["false_accept_rate"],
                      test_false_reject_rate=rates["false_reject_rate"],
                      test_minors=rates["minors"], test_adults=rates["adults"])
        margin = borderline_band(val_readouts, spec.min_age, chosen["threshold"])
        banded = band_rates(test_readouts, test_years, spec.min_age, chosen["threshold"], margin)
        chosen["borderline"] = {"ask_share": DEFAULT_ASK_SHARE, "margin": margin, "test_asked": banded["asked"],
                                "test_false_accept_rate": banded["false_accept_rate"],
                                "test_false_reject_rate": banded["false_reject_rate"]}
    return chosen
