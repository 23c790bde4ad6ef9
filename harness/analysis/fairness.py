"""Who the model fails: its test-face accuracy, error and door decisions per slice of people.

Slices: every face; per ``group`` (the race UTKFace states; none for Adience); per gender;
per age band (0-12, 13-15, 16-17, 18-20, 21-25, 26+, where exact ages are known); and per
group among adults and among children (under 13), where a model's gender errors differ
most. For each slice and trial: the faces, gender accuracy, age exact and 1-off, MAE in
years (years models), and the door at ``min_age``: minors let in and adults refused, at
the trial's own gate threshold (the calibrated one where the experiment asked for it).
Rounds are combined as everywhere in the reports: the mean over rounds with the corrected
resampled interval, and the counts behind each figure summed over rounds.

Plain data in and out: readouts (:func:`harness.models.heads.readout`) and a labels frame.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from harness.analysis import statistics
from harness.data.labels import GENDER_WORDS, N_AGE, N_GENDER
from harness.models import heads
from harness.models.gate import DEFAULT_GATE_THRESHOLD, gate_decisions

__all__ = ["AGE_BANDS", "band_names", "slices", "trial_breakdown", "combine_rounds", "FIGURES"]

# (first, last) whole years; None: and older. 16-17 is the door's hardest case at 18.
AGE_BANDS = ((0, 12), (13, 15), (16, 17), (18, 20), (21, 25), (26, None))
CHILD_AGE = 13

# Per-slice figures: (column, numerator count, denominator count), as shares in %.
FIGURES = (("gender %", "gender_correct", "faces"), ("age exact %", "age_exact", "faces"),
           ("age 1-off %", "age_one_off", "faces"), ("minors let in %", "minors_allowed", "minors"),
           ("adults refused %", "adults_refused", "adults"))


def band_names() -> list[str]:
    return [f"{low}–{high}" if high is not None else f"{low}+" for low, high in AGE_BANDS]


def slices(labels: pd.DataFrame) -> list[tuple[str, str, np.ndarray]]:
    """(kind, name, mask) of every slice of these faces that has any."""
    ages = labels["age"].to_numpy(dtype=float)
    out = [("all", "all faces", np.ones(len(labels), bool))]
    groups = labels["group"] if "group" in labels else pd.Series([None] * len(labels), index=labels.index)
    named = sorted({g for g in groups if isinstance(g, str) and g})
    for group in named:
        out.append(("group", group, (groups == group).to_numpy()))
    for index, word in enumerate(GENDER_WORDS):
        out.append(("gender", word, labels["gender"].to_numpy() == index))
    if not np.isnan(ages).all():
        whole = np.floor(ages)
        for (low, high), name in zip(AGE_BANDS, band_names()):
            out.append(("age band", name, (whole >= low) & ((whole <= high) if high is not None else True)))
        for group in named:
            is_group = (groups == group).to_numpy()
            out.append(("group, adults (18+)", group, is_group & (whole >= 18)))
            out.append((f"group, children (under {CHILD_AGE})", group, is_group & (whole < CHILD_AGE)))
    return [(kind, name, mask) for kind, name, mask in out if mask.any()]


def trial_breakdown(readouts: np.ndarray, labels: pd.DataFrame, min_age: float = 18,
                    threshold: float = DEFAULT_GATE_THRESHOLD) -> pd.DataFrame:
    """One trial's test faces -> one row of counts per slice (see the module's docstring).

    ``labels``: the faces' ``age_group``, ``gender``, ``age`` (NaN where unknown) and
    optional ``group``, in the order of ``readouts``."""
    readouts = np.asarray(readouts, dtype=np.float64)
    if len(readouts) != len(labels):
        raise ValueError(f"{len(readouts)} readouts for {len(labels)} faces")
    groups = heads.group_probabilities(readouts).argmax(axis=1)
    genders = readouts[:, -N_GENDER:].argmax(axis=1)
    true_groups, true_genders = labels["age_group"].to_numpy(int), labels["gender"].to_numpy(int)
    ages = labels["age"].to_numpy(dtype=float)
    years = (heads.predicted_years("years_softmax", readouts) if readouts.shape[1] != N_AGE + N_GENDER
             else np.full(len(readouts), np.nan))
    allowed = gate_decisions(readouts, min_age, [threshold])[0]
    minors, adults = ages < min_age, ages >= min_age   # NaN ages are neither
    rows = []
    for kind, name, mask in slices(labels):
        error = np.abs(years - ages)[mask]
        error = error[~np.isnan(error)]
        rows.append({"kind": kind, "slice": name, "faces": int(mask.sum()),
                     "gender_correct": int((genders == true_genders)[mask].sum()),
                     "age_exact": int((groups == true_groups)[mask].sum()),
                     "age_one_off": int((np.abs(groups - true_groups) <= 1)[mask].sum()),
                     "years_faces": len(error), "abs_error_sum": float(error.sum()),
                     "minors": int((mask & minors).sum()), "minors_allowed": int((mask & minors & allowed).sum()),
                     "adults": int((mask & adults).sum()), "adults_refused": int((mask & adults & ~allowed).sum())})
    return pd.DataFrame(rows)


def combine_rounds(per_round: list[pd.DataFrame], test_train_ratio: float) -> pd.DataFrame:
    """The rounds of one configuration and backend -> one row per slice: each figure's mean
    over rounds (%) with its corrected 95 % interval, and the counts summed over rounds."""
    stacked = pd.concat([frame.assign(round=i) for i, frame in enumerate(per_round)], ignore_index=True)
    order = list(dict.fromkeys(zip(stacked["kind"], stacked["slice"])))
    rows = []
    for kind, name in order:
        part = stacked[(stacked["kind"] == kind) & (stacked["slice"] == name)]
        row = {"kind": kind, "slice": name, "rounds": len(part), "faces": int(part["faces"].sum()),
               "minors": int(part["minors"].sum()), "adults": int(part["adults"].sum())}
        for column, numerator, denominator in FIGURES:
            scored = part[part[denominator] > 0]
            shares = 100.0 * scored[numerator] / scored[denominator]
            interval, _ = statistics.corrected_interval(shares.to_numpy(), test_train_ratio)
            row[column], row[f"{column} low"], row[f"{column} high"] = interval.mean, interval.low, interval.high
        with_years = part[part["years_faces"] > 0]
        maes = (with_years["abs_error_sum"] / with_years["years_faces"]).to_numpy()
        interval, _ = statistics.corrected_interval(maes, test_train_ratio)
        row["MAE (years)"], row["MAE (years) low"], row["MAE (years) high"] = interval.mean, interval.low, interval.high
        rows.append(row)
    return pd.DataFrame(rows)
