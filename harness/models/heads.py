"""Heads as plain data: what each one outputs, what it is trained on, how it is read.

Every head's output is a concatenation of dense "parts" (units, activation); both
backends build exactly these parts, and the loss is a sum of one loss per part. Reading
an output back into 10-dim age/gender scores happens here, once, for both backends.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.data.labels import N_AGE, N_GENDER, N_JOINT, ages_to_groups, to_joint, to_two_hot

# Age in years: a softmax over 0, 1, ..., 100 (DEX, Rothe et al. 2015), or one linear unit.
N_YEARS = 101
# The regression unit predicts years / 100, so that its output and its loss live on the
# scale of the other heads' (a raw unit starting at 0 would crawl towards 30 years).
YEARS_SCALE = 100.0


@dataclass(frozen=True)
class Part:
    units: int
    activation: str        # "softmax" or "linear"
    default_loss: str
    fixed_loss: bool = False   # True: the part's loss is part of the head's definition


HEADS: dict[str, tuple[Part, ...]] = {
    # The sound unified model: an 8-way and a 2-way softmax, one loss each.
    "two_heads": (Part(N_AGE, "softmax", "categorical_crossentropy"),
                  Part(N_GENDER, "softmax", "categorical_crossentropy")),
    # The original study's model: one softmax over the 2-hot target (which sums to 2).
    "softmax10": (Part(N_AGE + N_GENDER, "softmax", "categorical_crossentropy"),),
    "joint16": (Part(N_JOINT, "softmax", "categorical_crossentropy"),),
    # The study's tuple model: 2 linear units fitted to (age_index, gender_index).
    "tuple_original": (Part(2, "linear", "mean_squared_error"),),
    # Its sound variant: regress the age index, classify gender.
    "tuple_sound": (Part(1, "linear", "mean_squared_error", fixed_loss=True),
                    Part(N_GENDER, "softmax", "categorical_crossentropy", fixed_loss=True)),
    # Age in years and gender: the expected value of a distribution over years ...
    "years_softmax": (Part(N_YEARS, "softmax", "categorical_crossentropy"),
                      Part(N_GENDER, "softmax", "categorical_crossentropy")),
    # ... or a regressed age under a robust loss (Huber: a far-off face is not squared).
    "years_regression": (Part(1, "linear", "huber", fixed_loss=True),
                         Part(N_GENDER, "softmax", "categorical_crossentropy", fixed_loss=True)),
}
# Heads trained on exact ages: a dataset without them (Adience) cannot train these.
YEARS_HEADS = ("years_softmax", "years_regression")


def parts(head: str) -> tuple[Part, ...]:
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose from {sorted(HEADS)}")
    return HEADS[head]


def output_size(head: str) -> int:
    return sum(p.units for p in parts(head))


def part_losses(head: str, loss: str | None) -> list[str]:
    """The loss of each part; ``loss`` overrides every part whose loss is not fixed."""
    chosen = []
    for part in parts(head):
        if loss is not None and part.fixed_loss and loss != part.default_loss:
            fixed = " and ".join(p.default_loss for p in parts(head))
            raise ValueError(f"head {head!r} fixes its losses ({fixed}, age then gender); "
                             f"loss={loss!r} is not allowed")
        chosen.append(part.default_loss if loss is None or part.fixed_loss else loss)
    return chosen


# Heads with an age softmax, whose age target may be a distribution (soft ages): over the
# 8 groups, or for years_softmax over 0..100 years (label distribution learning).
SOFT_AGE_HEADS = ("two_heads", "softmax10", "joint16", "years_softmax")


def targets(head: str, age, gender, age_distribution=None, years=None) -> np.ndarray:
    """Training targets for ``head`` from label indices (and exact ages for years heads).

    ``age_distribution`` (N, 8), or (N, 101) for years_softmax, when given, replaces the
    one-hot age part (see :func:`harness.data.labels.soft_age` and
    :func:`~harness.data.labels.soft_years`); gender stays one-hot.
    """
    age, gender = np.asarray(age, dtype=int), np.asarray(gender, dtype=int)
    if age_distribution is not None and head not in SOFT_AGE_HEADS:
        raise ValueError(f"head {head!r} has no age softmax, so it cannot take soft age targets "
                         f"(heads that can: {list(SOFT_AGE_HEADS)})")
    soft = None if age_distribution is None else np.asarray(age_distribution, dtype=np.float32)
    n_age = N_YEARS if head == "years_softmax" else N_AGE
    if soft is not None and soft.shape != (len(age), n_age):
        raise ValueError(f"age_distribution must have shape ({len(age)}, {n_age}) for head {head!r}, "
                         f"got {soft.shape}")
    if head in YEARS_HEADS:
        years = np.asarray(years if years is not None else np.full(len(age), np.nan), dtype=np.float64)
        if len(years) != len(age) or not np.isfinite(years).all() or (years < 0).any():
            raise ValueError(f"head {head!r} trains on exact ages in years; some faces have none "
                             "(Adience labels only groups: use UTKFace or a CSV with an 'age' column)")
        gender_hot = np.eye(N_GENDER, dtype=np.float32)[gender]
        if head == "years_softmax":
            year_hot = np.eye(N_YEARS, dtype=np.float32)[np.clip(np.floor(years), 0, N_YEARS - 1).astype(int)]
            return np.concatenate([year_hot if soft is None else soft, gender_hot], axis=1)
        return np.concatenate([(years / YEARS_SCALE)[:, None].astype(np.float32), gender_hot], axis=1)
    if soft is not None:
        gender_hot = np.eye(N_GENDER, dtype=np.float32)[gender]
        if head == "joint16":   # joint = gender * 8 + age: the age distribution in the gender's row
            return (gender_hot[:, :, None] * soft[:, None, :]).reshape(len(age), N_JOINT)
        return np.concatenate([soft, gender_hot], axis=1)
    if head in ("two_heads", "softmax10"):
        return to_two_hot(age, gender)
    if head == "joint16":
        return np.eye(N_JOINT, dtype=np.float32)[to_joint(age, gender)]
    if head == "tuple_original":
        return np.stack([age, gender], axis=-1).astype(np.float32)
    if head == "tuple_sound":
        return np.concatenate([age[:, None].astype(np.float32),
                               np.eye(N_GENDER, dtype=np.float32)[gender]], axis=-1)
    raise ValueError(f"unknown head {head!r}")


def _one_hot_rounded(values: np.ndarray, n: int) -> np.ndarray:
    """Regressed indices -> one-hot of the nearest valid index; NaN stays NaN."""
    out = np.zeros(values.shape + (n,), dtype=np.float64)
    finite = np.isfinite(values)
    index = np.clip(np.rint(np.where(finite, values, 0)), 0, n - 1).astype(int)
    np.put_along_axis(out, index[..., None], 1.0, axis=-1)
    out[~finite] = np.nan
    return out


def predicted_years(head: str, outputs) -> np.ndarray:
    """A years head's outputs -> the predicted age of each face in years (NaN if invalid):
    the softmax's expected value, or the regressed unit, within 0-100."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if head == "years_softmax":
        p = outputs[:, :N_YEARS]
        with np.errstate(invalid="ignore", divide="ignore"):
            years = (p * np.arange(N_YEARS)).sum(axis=1) / p.sum(axis=1)
    elif head == "years_regression":
        years = outputs[:, 0] * YEARS_SCALE
    else:
        raise ValueError(f"head {head!r} does not predict years; years heads: {list(YEARS_HEADS)}")
    return np.where(np.isfinite(years), np.clip(years, 0, N_YEARS - 1), np.nan)


# --- readouts: what ensembles, predict, the gate and exports average and read ---------
#
# A group model's readout is its (N, 10) scores. A years model's is a distribution over
# 0..100 then the gender softmax, years_softmax's own output layout, whichever years head
# produced it: averaging readouts (over mirrored faces, ensemble members) stays a mean of
# probabilities, and one reader serves both years heads.
YEARS_READOUT = N_YEARS + N_GENDER
# The age interval predict reports: the central 80 % of the predicted distribution.
AGE_INTERVAL = 0.8


def residual_quantiles(residuals) -> np.ndarray | None:
    """Validation residuals (true - predicted years) -> 101 evenly spaced quantiles, the
    spread a regression head's readout puts around each prediction; None without any."""
    residuals = np.asarray(residuals if residuals is not None else [], dtype=np.float64)
    residuals = residuals[np.isfinite(residuals)]
    if not len(residuals):
        return None
    return np.quantile(residuals, (np.arange(N_YEARS) + 0.5) / N_YEARS)


def _spread_over_years(values: np.ndarray) -> np.ndarray:
    """(N, K) ages -> (N, 101) distribution: each age shares its unit of mass between the
    two whole years around it (so the distribution's mean is the mean of the ages)."""
    values = np.clip(values, 0, N_YEARS - 1)
    low = np.floor(values).astype(int)
    upper_share = values - low
    high = np.minimum(low + 1, N_YEARS - 1)
    out = np.zeros((len(values), N_YEARS))
    rows = np.repeat(np.arange(len(values)), values.shape[1])
    np.add.at(out, (rows, low.ravel()), (1 - upper_share).ravel())
    np.add.at(out, (rows, high.ravel()), upper_share.ravel())
    return out / values.shape[1]


def years_readout(head: str, outputs, residuals=None) -> np.ndarray:
    """A years head's outputs -> (N, 103): P(age = 0..100 years), then P(male), P(female).

    years_softmax: its own normalised distribution. years_regression: its prediction plus
    each of ``residuals`` (validation ``true - predicted``, or their
    :func:`residual_quantiles`), centred so that the distribution's mean stays the
    prediction; without residuals all mass sits at the prediction. A face with a NaN
    output keeps NaN.
    """
    outputs = np.asarray(outputs, dtype=np.float64)
    gender = outputs[:, -N_GENDER:]
    with np.errstate(invalid="ignore", divide="ignore"):
        gender = gender / gender.sum(1, keepdims=True)
        if head == "years_softmax":
            p = outputs[:, :N_YEARS]
            return np.concatenate([p / p.sum(1, keepdims=True), gender], axis=1)
    if head != "years_regression":
        raise ValueError(f"head {head!r} does not predict years; years heads: {list(YEARS_HEADS)}")
    point = predicted_years(head, outputs)
    spread = np.asarray(residuals if residuals is not None else [0.0], dtype=np.float64)
    spread = spread - spread.mean()
    finite = np.isfinite(point)
    years = np.full((len(point), N_YEARS), np.nan)
    years[finite] = _spread_over_years(point[finite, None] + spread[None, :])
    return np.concatenate([years, gender], axis=1)


def readout(head: str, outputs, residuals=None) -> np.ndarray:
    """Model outputs -> readout: (N, 103) for years heads, (N, 10) scores for the others."""
    return years_readout(head, outputs, residuals) if head in YEARS_HEADS else scores(head, outputs)


def readout_width(head: str) -> int:
    return YEARS_READOUT if head in YEARS_HEADS else N_AGE + N_GENDER


def readout_head(readouts) -> str:
    """The head whose outputs have the layout of ``readouts``, to score or decode them."""
    width = np.shape(readouts)[-1]
    if width == YEARS_READOUT:
        return "years_softmax"
    if width == N_AGE + N_GENDER:
        return "two_heads"
    raise ValueError(f"a readout has {N_AGE + N_GENDER} (age groups and gender) or {YEARS_READOUT} "
                     f"(years and gender) values per face, got {width}")


def years_interval(readouts, level: float = AGE_INTERVAL) -> tuple[np.ndarray, np.ndarray]:
    """Years readouts -> the central ``level`` interval of each face's age distribution,
    in whole years (lowest and highest year inside it); NaN where the readout is NaN."""
    p = np.asarray(readouts, dtype=np.float64)[:, :N_YEARS]
    with np.errstate(invalid="ignore", divide="ignore"):
        cdf = np.cumsum(p, axis=1) / p.sum(1, keepdims=True)
    tail = (1 - level) / 2
    finite = np.isfinite(cdf).all(axis=1)
    # A small tolerance: a cumulative sum that should reach the tail exactly may fall short by rounding.
    low = np.argmax(cdf >= tail - 1e-9, axis=1).astype(float)
    high = np.argmax(cdf >= 1 - tail - 1e-9, axis=1).astype(float)
    return np.where(finite, low, np.nan), np.where(finite, high, np.nan)


def group_probabilities(readouts) -> np.ndarray:
    """Readouts -> (N, 8) probability of each age group: a group model's own scores, a
    years model's mass on the years each group holds (the labels' mapping of ages)."""
    readouts = np.asarray(readouts, dtype=np.float64)
    if readout_head(readouts) != "years_softmax":
        return readouts[:, :N_AGE]
    p = readouts[:, :N_YEARS]
    by_group = p @ np.eye(N_AGE)[ages_to_groups(np.arange(N_YEARS))]
    with np.errstate(invalid="ignore", divide="ignore"):
        return by_group / p.sum(1, keepdims=True)


def whole_years(years) -> np.ndarray:
    """The one rounding rule of a predicted age: whole years completed, as people state
    their age (17.9 is 17). The sentence tells it ("about 17"), the age group is its
    group, and the gate judges it ("at least 18" means 18 or more whole years), so the
    three never disagree. Metrics (MAE, CS(5)) use the unrounded age."""
    return np.floor(np.asarray(years, dtype=np.float64))


def _groups_of_years(years: np.ndarray) -> np.ndarray:
    """Predicted ages -> one-hot age groups (the labels' own mapping); NaN stays NaN."""
    finite = np.isfinite(years)
    out = np.zeros((len(years), N_AGE), dtype=np.float64)
    out[np.flatnonzero(finite), ages_to_groups(whole_years(years[finite]))] = 1.0
    out[~finite] = np.nan
    return out


def scores(head: str, outputs) -> np.ndarray:
    """Model outputs -> (N, 10) scores: 8 age then 2 gender, each part summing to 1."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim != 2 or outputs.shape[1] != output_size(head):
        raise ValueError(f"head {head!r} outputs {output_size(head)} values per image, "
                         f"got shape {outputs.shape}")
    if head == "two_heads":
        return outputs.copy()
    if head == "softmax10":
        # Renormalise each part so its top share is comparable to the other heads'.
        age, gender = outputs[:, :N_AGE], outputs[:, N_AGE:]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.concatenate([age / age.sum(1, keepdims=True),
                                   gender / gender.sum(1, keepdims=True)], axis=1)
    if head == "joint16":
        grid = outputs.reshape(-1, N_GENDER, N_AGE)      # joint = gender * 8 + age
        return np.concatenate([grid.sum(axis=1), grid.sum(axis=2)], axis=1)
    if head in YEARS_HEADS:
        # The group is the predicted age's, as a face's exact age gives its label.
        return np.concatenate([_groups_of_years(predicted_years(head, outputs)), outputs[:, -N_GENDER:]], axis=1)
    if head == "tuple_original":
        return np.concatenate([_one_hot_rounded(outputs[:, 0], N_AGE),
                               _one_hot_rounded(outputs[:, 1], N_GENDER)], axis=1)
    return np.concatenate([_one_hot_rounded(outputs[:, 0], N_AGE), outputs[:, 1:]], axis=1)
