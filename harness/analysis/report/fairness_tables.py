"""The report's "Who the model fails" section: :mod:`harness.analysis.fairness` per
configuration and backend (all of them in ``tables/fairness.csv``), and on the page the
one chosen on validation faces, with the door's 16-17-year-olds first."""
from __future__ import annotations

import math

import pandas as pd

from harness.analysis import fairness
from harness.analysis.report.tables import GATE_AGE, _interval
from harness.models import backends
from harness.models.gate import DEFAULT_GATE_THRESHOLD
from harness.runs.trial import kept_validation

__all__ = ["fairness_frame", "fairness_section"]

DOOR_BAND = "16–17"


def _threshold(metrics: dict) -> float:
    """The trial's own gate threshold at 18: the one calibrated on its validation faces, if any."""
    chosen = metrics.get("gate")
    if isinstance(chosen, dict) and chosen.get("met") and float(chosen.get("min_age", -1)) == GATE_AGE:
        return float(chosen["threshold"])
    return DEFAULT_GATE_THRESHOLD


def _validation_score(files) -> float:
    """The trial's validation joint accuracy at the epoch it kept (its last, without early stopping)."""
    score = kept_validation(files.history, files.metrics)
    return math.nan if score is None else score


def fairness_frame(frame: pd.DataFrame, files: dict, labels: dict[str, str], ratio: float) -> pd.DataFrame:
    """Every configuration and backend: one row per slice (combined over its rounds), with
    the mean validation joint accuracy its trials kept (what chooses the one shown)."""
    parts = []
    for (configuration, backend), group in frame.groupby(["configuration", "backend"], sort=True):
        rounds = [files[t] for t in group.sort_values("round")["trial_id"] if t in files]
        rounds = [f for f in rounds if f.test_readouts is not None and f.test_labels is not None]
        if not rounds:
            continue
        per_round = [fairness.trial_breakdown(f.test_readouts, f.test_labels, GATE_AGE, _threshold(f.metrics))
                     for f in rounds]
        combined = fairness.combine_rounds(per_round, ratio)
        scores = [_validation_score(f) for f in rounds]
        parts.append(combined.assign(configuration=labels.get(configuration, configuration),
                                     backend=backends.display_name(backend),
                                     validation_joint=sum(scores) / len(scores)))
    if not parts:
        return pd.DataFrame()
    out = pd.concat(parts, ignore_index=True)
    first = ["configuration", "backend", "validation_joint"]
    return out[first + [c for c in out.columns if c not in first]]


def _shown(value: float, low: float, high: float) -> str:
    """A share in % and its interval, clipped to 0-100 (the report's own formatting)."""
    return _interval(value, low, high, signed=False)


def _years(value: float, low: float, high: float) -> str:
    if pd.isna(value):
        return "—"
    return f"{value:.2f}" + ("" if pd.isna(low) else f" [{max(low, 0):.2f}, {high:.2f}]")


def fairness_section(table: pd.DataFrame) -> tuple[str, pd.DataFrame] | None:
    """(text, display table) for the configuration and backend with the best mean
    validation joint accuracy; None when there is nothing to break down."""
    if table.empty:
        return None
    best = table.sort_values("validation_joint", ascending=False, na_position="last").iloc[0]
    chosen = table[(table["configuration"] == best["configuration"]) & (table["backend"] == best["backend"])]
    rows = []
    for _, row in chosen.iterrows():
        shown = {"who": row["kind"] if row["kind"] != "all" else "", "slice": row["slice"], "faces": row["faces"]}
        for column, _, _ in fairness.FIGURES[:3]:
            shown[column] = _shown(row[column], row[f"{column} low"], row[f"{column} high"])
        if not pd.isna(row["MAE (years)"]):
            shown["MAE (years)"] = _years(row["MAE (years)"], row["MAE (years) low"], row["MAE (years) high"])
        shown["minors let in % (of minors)"] = f"{_let_in(row)} (of {row['minors']})" if row["minors"] else "—"
        shown["adults refused % (of adults)"] = (
            f"{_shown(row['adults refused %'], row['adults refused % low'], row['adults refused % high'])} "
            f"(of {row['adults']})" if row["adults"] else "—")
        rows.append(shown)
    display = pd.DataFrame(rows)
    if "MAE (years)" in display:
        display["MAE (years)"] = display["MAE (years)"].fillna("—")
    rounds = int(chosen["rounds"].max())
    text = (f"{best['configuration']} on {best['backend']} (the best mean validation joint accuracy, "
            f"{100 * best['validation_joint']:.1f} %), on its test faces: each figure is the mean over "
            f"{rounds} round(s) in %" + (" with the corrected 95 % interval" if rounds > 1 else "") +
            ", and the faces behind it summed over rounds. The door decides at "
            f"{GATE_AGE} at each trial's own threshold (calibrated on its validation faces where the experiment "
            "asked for it, else 0.5). Every configuration and backend: tables/fairness.csv.")
    door = chosen[(chosen["kind"] == "age band") & (chosen["slice"] == DOOR_BAND)]
    if len(door) and door["minors"].iloc[0]:
        everyone = chosen[chosen["kind"] == "all"].iloc[0]
        text = (f"**At the door: {_let_in(door.iloc[0])} % of {door['minors'].iloc[0]} test faces aged 16–17 "
                f"were let in at {GATE_AGE}** (all {everyone['minors']} minors: {_let_in(everyone)} %). " + text)
    return text, display


def _let_in(row) -> str:
    return _shown(row["minors let in %"], row["minors let in % low"], row["minors let in % high"])
