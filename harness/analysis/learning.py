"""Did a model learn? The rule, stated once, from a trial's own test confusion matrices.

A trial *did not learn* when, on its test faces (those it described):

- nearly all its age answers are one group (the most common answer holds at least
  :data:`ONE_GROUP_SHARE` of them), or
- its exact-age accuracy is within noise of always answering the most common true
  group: at most that group's share plus :data:`NOISE_SE` standard errors
  (√(m(1 − m)/n)), or
- its gender accuracy is within noise of always answering the more common gender, by
  the same test.

Such a model's accuracy is a fact about the test split, not about the model, so the
report marks it, lists it in the summary, and leaves it out of framework verdicts and
design comparisons (``harness report --include-degenerate`` keeps it in, saying so).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["did_not_learn", "ONE_GROUP_SHARE", "NOISE_SE", "DID_NOT_LEARN"]

ONE_GROUP_SHARE = 0.95
NOISE_SE = 2.0
DID_NOT_LEARN = "did not learn"


def _against_majority(confusion, what: str) -> str | None:
    counts = np.asarray(confusion, dtype=float)
    total = counts.sum()
    if counts.ndim != 2 or total <= 0:
        return None
    accuracy = np.trace(counts) / total
    majority = counts.sum(axis=1).max() / total
    noise = NOISE_SE * math.sqrt(majority * (1 - majority) / total)
    if accuracy <= majority + noise:
        return f"{what} {accuracy:.1%}, within noise of always answering the most common ({majority:.1%})"
    return None


def did_not_learn(metrics: dict) -> str | None:
    """Why a trial's test metrics (``metrics.json``) show it did not learn, or None. A
    metrics file without confusion matrices (an older one) is never flagged."""
    reasons = []
    ages = metrics.get("age_confusion")
    if ages is not None:
        counts = np.asarray(ages, dtype=float)
        total = counts.sum()
        if counts.ndim == 2 and total > 0:
            top = counts.sum(axis=0).max() / total
            if top >= ONE_GROUP_SHARE:
                reasons.append(f"{top:.0%} of its age answers one group")
        reasons.append(_against_majority(ages, "age exact"))
    if metrics.get("gender_confusion") is not None:
        reasons.append(_against_majority(metrics["gender_confusion"], "gender"))
    found = [r for r in reasons if r]
    return "; ".join(found) if found else None
