"""The label space: eight Adience age groups x two genders, its encodings and decoding.

Every other module speaks in ``(age_index, gender_index)`` pairs; the encodings here
(10-dim 2-hot, joint class 0..15) exist so that models with different heads can be
compared on one footing, and decoding exists once so both backends share it.
"""
from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass

import numpy as np

AGE_GROUPS: tuple[tuple[int, int], ...] = (
    (0, 2), (4, 6), (8, 12), (15, 20), (25, 32), (38, 43), (48, 53), (60, 100),
)
GENDERS: tuple[str, ...] = ("m", "f")
GENDER_WORDS: tuple[str, ...] = ("male", "female")
N_AGE = len(AGE_GROUPS)
N_GENDER = len(GENDERS)
N_TWO_HOT = N_AGE + N_GENDER
N_JOINT = N_AGE * N_GENDER

# Exact ages map to the group whose range is nearest: the cut points sit at the
# midpoints of the gaps between groups, giving 0-3, 4-7, 8-13, 14-22, 23-35,
# 36-45, 46-56, 57+. Each number is the first age of the next group.
_AGE_CUTS = (4, 8, 14, 23, 36, 46, 57)

DEFAULT_THRESHOLD = 0.0
# Below this, an output row is "all values near 0": no digit was switched on.
_NEAR_ZERO = 1e-3


def age_label(index: int) -> str:
    lo, hi = AGE_GROUPS[index]
    return f"({lo}, {hi})"


def age_to_group(age: float) -> int:
    """Map an exact age in years to its age-group index."""
    if age is None or not math.isfinite(age) or age < 0:
        raise ValueError(f"age must be a non-negative finite number, got {age!r}")
    return bisect.bisect_right(_AGE_CUTS, age)


def ages_to_groups(years) -> np.ndarray:
    """Vectorised :func:`age_to_group`: exact (or predicted) ages -> group indices."""
    years = np.asarray(years, dtype=np.float64)
    if not np.isfinite(years).all() or (years < 0).any():
        raise ValueError("ages must be non-negative finite numbers")
    return np.searchsorted(_AGE_CUTS, years, side="right")


_RANGE = re.compile(r"^\(\s*(\d+)\s*,\s*(\d+)\s*\)$")
_NUMBER = re.compile(r"^\d+$")


@dataclass(frozen=True)
class ParsedAge:
    group: int | None      # None when the string is not an age at all
    canonical: bool        # exactly one of the eight published group strings


def parse_adience_age(text: str) -> ParsedAge:
    """Interpret an Adience ``age`` cell: ``(25, 32)``, ``35``, ``(27, 32)``, ``None``...

    Canonical group strings map to their group. Other ranges map by their midpoint
    and single numbers as exact ages, both by the same midpoint rule as
    :func:`age_to_group`; anything else is not an age.
    """
    text = (text or "").strip()
    match = _RANGE.match(text)
    if match:
        lo, hi = int(match.group(1)), int(match.group(2))
        if (lo, hi) in AGE_GROUPS:
            return ParsedAge(AGE_GROUPS.index((lo, hi)), True)
        return ParsedAge(age_to_group((lo + hi) / 2), False)
    if _NUMBER.match(text):
        return ParsedAge(age_to_group(int(text)), False)
    return ParsedAge(None, False)


def parse_gender(text: str) -> int | None:
    """``m``/``f``/``male``/``female``/``0``/``1`` -> 0 or 1; anything else -> None."""
    key = str(text).strip().lower()
    return {"m": 0, "male": 0, "0": 0, "f": 1, "female": 1, "1": 1}.get(key)


# --- encodings -------------------------------------------------------------

def _check(age: np.ndarray, gender: np.ndarray) -> None:
    if np.any((age < 0) | (age >= N_AGE)):
        raise ValueError(f"age index must be in 0..{N_AGE - 1}")
    if np.any((gender < 0) | (gender >= N_GENDER)):
        raise ValueError(f"gender index must be in 0..{N_GENDER - 1}")


def to_two_hot(age, gender) -> np.ndarray:
    """(age_index, gender_index) -> 10-dim vector: 8 age digits then 2 gender digits."""
    age, gender = np.asarray(age, dtype=int), np.asarray(gender, dtype=int)
    _check(age, gender)
    out = np.zeros(age.shape + (N_TWO_HOT,), dtype=np.float32)
    np.put_along_axis(out, age[..., None], 1.0, axis=-1)
    np.put_along_axis(out, (N_AGE + gender)[..., None], 1.0, axis=-1)
    return out


def from_two_hot(vectors) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`to_two_hot` for exact 2-hot vectors (raises otherwise)."""
    v = np.asarray(vectors)
    if v.shape[-1] != N_TWO_HOT:
        raise ValueError(f"2-hot vectors have {N_TWO_HOT} digits, got {v.shape[-1]}")
    if not (np.isin(v, (0, 1)).all()
            and (v[..., :N_AGE].sum(-1) == 1).all()
            and (v[..., N_AGE:].sum(-1) == 1).all()):
        raise ValueError("not an exact 2-hot vector: need one age digit and one gender digit set")
    return v[..., :N_AGE].argmax(-1), v[..., N_AGE:].argmax(-1)


def to_joint(age, gender) -> np.ndarray:
    """(age_index, gender_index) -> joint class ``gender * 8 + age`` in 0..15."""
    age, gender = np.asarray(age, dtype=int), np.asarray(gender, dtype=int)
    _check(age, gender)
    return gender * N_AGE + age


def from_joint(joint) -> tuple[np.ndarray, np.ndarray]:
    joint = np.asarray(joint, dtype=int)
    if np.any((joint < 0) | (joint >= N_JOINT)):
        raise ValueError(f"joint class must be in 0..{N_JOINT - 1}")
    return joint % N_AGE, joint // N_AGE


def soft_age(years, sigma: float) -> np.ndarray:
    """Exact ages -> (N, 8) age-group distributions: the mass of a Gaussian in years.

    An age of ``a`` whole years means somewhere in [a, a + 1), so the Gaussian (width
    ``sigma`` years) is centred at a + 0.5 and each group receives its mass between the
    cut points of :func:`age_to_group`. The group holding the age keeps the largest share
    for ``sigma`` up to about 3.5 years; a near miss is then penalised less than a far one.
    """
    return _gaussian_mass(years, sigma, np.array([-np.inf, *_AGE_CUTS, np.inf]))


# Whole years 0..100: year y holds [y, y + 1); the ends take the tails.
_YEAR_EDGES = np.array([-np.inf, *range(1, 101), np.inf])


def soft_years(years, sigma: float) -> np.ndarray:
    """Exact ages -> (N, 101) distributions over the whole years 0..100: the mass of the
    same Gaussian as :func:`soft_age` in each year (label distribution learning, Gao et
    al. 2017): a model trained on it is told that 26 is nearly right for 27."""
    return _gaussian_mass(years, sigma, _YEAR_EDGES)


def _gaussian_mass(years, sigma: float, edges: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr

    years = np.asarray(years, dtype=np.float64)
    if not np.isfinite(years).all() or (years < 0).any():
        raise ValueError("soft age targets need a finite, non-negative exact age for every face")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    cdf = ndtr((edges[None, :] - (years[:, None] + 0.5)) / sigma)
    mass = np.diff(cdf, axis=1)
    return (mass / mass.sum(axis=1, keepdims=True)).astype(np.float32)


# --- decoding model outputs ------------------------------------------------

@dataclass(frozen=True)
class Decoded:
    """One decoded output: a label, or Undefined with the reason it is not a label."""

    age: int | None
    gender: int | None
    age_probability: float | None = None
    gender_probability: float | None = None
    reason: str | None = None

    @property
    def defined(self) -> bool:
        return self.reason is None

    @property
    def age_group(self) -> str | None:
        return None if self.age is None else age_label(self.age)

    @property
    def gender_word(self) -> str | None:
        return None if self.gender is None else GENDER_WORDS[self.gender]

    def sentence(self) -> str:
        if not self.defined:
            return f"Undefined: {self.reason}"
        lo, hi = AGE_GROUPS[self.age]
        span = f"aged {lo} or over" if self.age == N_AGE - 1 else f"between {lo} and {hi}"
        return f"a {self.gender_word} {span}"

    def to_dict(self) -> dict:
        return {
            "defined": self.defined, "age_index": self.age, "age_group": self.age_group,
            "gender_index": self.gender, "gender": self.gender_word,
            "age_probability": self.age_probability,
            "gender_probability": self.gender_probability,
            "reason": self.reason, "sentence": self.sentence(),
        }


def undefined(reason: str) -> Decoded:
    return Decoded(None, None, reason=reason)


def _pick(part: np.ndarray, name: str, threshold: float) -> tuple[int | None, float, str | None]:
    total = float(part.sum())
    if part.max() < _NEAR_ZERO:
        return None, 0.0, f"all {name} outputs near 0"
    # Scores from a sigmoid or tanh head need not sum to 1; confidence is the
    # winner's share of the part so the threshold means the same for every head.
    probs = part / total if total > 0 else part
    top = int(part.argmax())
    if np.count_nonzero(np.isclose(part, part[top], rtol=0, atol=1e-6)) > 1:
        return None, float(probs[top]), f"tie for the highest {name} output"
    if probs[top] < threshold:
        return None, float(probs[top]), (
            f"{name} confidence {probs[top]:.2f} is under the threshold {threshold:.2f}")
    return top, float(probs[top]), None


def decode(output, threshold: float = DEFAULT_THRESHOLD) -> Decoded:
    """Decode one 10-dim output (2-hot scores) into a label or ``Undefined``.

    Undefined, never a guess, when: the length is not 10, a value is NaN or
    infinite or negative, the age or gender part is all near 0, there is a tie for
    a part's maximum, or a part's top share is under ``threshold``.
    """
    v = np.asarray(output, dtype=np.float64).ravel()
    if v.size != N_TWO_HOT:
        return undefined(f"expected {N_TWO_HOT} outputs, got {v.size}")
    if not np.isfinite(v).all():
        return undefined("output contains NaN or infinity")
    if (v < 0).any():
        return undefined("output contains negative scores")
    age, age_p, why = _pick(v[:N_AGE], "age", threshold)
    if why:
        return undefined(why)
    gender, gender_p, why = _pick(v[N_AGE:], "gender", threshold)
    if why:
        return undefined(why)
    return Decoded(age, gender, age_p, gender_p)


def decode_batch(outputs, threshold: float = DEFAULT_THRESHOLD) -> list[Decoded]:
    return [decode(row, threshold) for row in np.asarray(outputs)]
