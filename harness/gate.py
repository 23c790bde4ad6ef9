"""The age gate: allow, deny or undefined for "only people aged A or over".

Rule (the README states it once, the same way): a face is ``allow``-ed only when both

1. the probability mass on the age groups whose *lower bound* is at least A reaches the
   threshold (default 0.5), and
2. the age group the face is labelled with (the most likely one, the group in its
   sentence) is itself such a group.

A group that straddles A counts as under A: at A = 18, (15, 20) is under 18. So a face
whose sentence says 15-20 is always refused, even when the adult groups together hold
more than the threshold (0.45 on 15-20 against 0.30 + 0.25 on two adult groups): the
gate never lets in someone it describes as a minor. This errs toward refusing adults
near the boundary (false rejects) to keep false accepts of minors down. ``undefined``
when there is no usable prediction (no face, too small, or an output that is not a
valid 2-hot, or under the decode threshold).
"""
from __future__ import annotations

import numpy as np

from harness.labels import AGE_GROUPS, N_AGE, Decoded

DEFAULT_GATE_THRESHOLD = 0.5


def adult_groups(min_age: float) -> np.ndarray:
    """Boolean mask over the eight groups: entirely at or above ``min_age``."""
    return np.array([lo >= min_age for lo, _ in AGE_GROUPS])


def gate(scores, decoded: Decoded, min_age: float, threshold: float = DEFAULT_GATE_THRESHOLD) -> tuple[str, float | None]:
    """-> (decision, probability mass on groups at or above ``min_age``)."""
    if not decoded.defined:
        return "undefined", None
    adult = adult_groups(min_age)
    age = np.asarray(scores, dtype=np.float64)[:N_AGE]
    mass = float(age[adult].sum() / age.sum())
    return ("allow" if mass >= threshold and adult[decoded.age] else "deny"), mass


def gate_rates(scores, exact_ages, min_age: float = 18,
               threshold: float = DEFAULT_GATE_THRESHOLD) -> dict:
    """False-accept rate (under ``min_age`` let in) and false-reject rate (adults refused)."""
    from harness.labels import decode

    scores, ages = np.asarray(scores, dtype=np.float64), np.asarray(exact_ages, dtype=np.float64)
    allowed = np.array([gate(row, decode(row), min_age, threshold)[0] == "allow" for row in scores])
    minors, adults = ages < min_age, ages >= min_age
    return {
        "min_age": min_age, "threshold": threshold,
        "minors": int(minors.sum()), "adults": int(adults.sum()),
        "false_accept_rate": float(allowed[minors].mean()) if minors.any() else None,
        "false_reject_rate": float((~allowed[adults]).mean()) if adults.any() else None,
    }
