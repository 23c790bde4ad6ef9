"""The age gate: allow, deny or undefined for "only people aged A or over".

It reads a face's readout (see :func:`harness.models.heads.readout`): a group model's 10 scores
or a years model's distribution over 0..100 years. Rule (the README states it once, the
same way): a face is ``allow``-ed only when both

1. its probability of being at least A reaches the threshold (default 0.5): for a group
   model the mass on the age groups whose *lower bound* is at least A, for a years
   model the mass on the years from A up, and
2. the face is described as at least A: the age group it is labelled with (the group in
   its sentence) is itself such a group, or the age its sentence tells (its predicted age
   in whole years completed, :func:`harness.models.heads.whole_years`) is at least A.

A group that straddles A counts as under A: at A = 18, (15, 20) is under 18. So a face
whose sentence says 15-20 is always refused, even when the adult groups together hold
more than the threshold (0.45 on 15-20 against 0.30 + 0.25 on two adult groups): the
gate never lets in someone it describes as a minor. For a group model this errs toward
refusing adults near the boundary (false rejects) to keep false accepts of minors down;
a years model can put the boundary at A itself. ``undefined`` when there is no usable
prediction (no face, too small, or an output that is not a valid 2-hot, or under the
decode threshold).
"""
from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_serializer

from harness.data.labels import AGE_GROUPS, N_AGE, N_TWO_HOT, Decoded
from harness.models.heads import N_YEARS, YEARS_READOUT, predicted_years, whole_years
from harness.models.spec import drop_neutral

DEFAULT_GATE_THRESHOLD = 0.5


def adult_groups(min_age: float) -> np.ndarray:
    """Boolean mask over the eight groups: entirely at or above ``min_age``."""
    return np.array([lo >= min_age for lo, _ in AGE_GROUPS])


def adult_evidence(readouts, min_age: float) -> tuple[np.ndarray, np.ndarray]:
    """Readouts -> per face, P(age >= ``min_age``) and whether the face is described as at
    least ``min_age`` (rule 2; a face that does not decode never is)."""
    from harness.data.labels import decode

    readouts = np.asarray(readouts, dtype=np.float64)
    if readouts.ndim != 2 or readouts.shape[1] not in (N_TWO_HOT, YEARS_READOUT):
        raise ValueError(f"the gate reads (N, {N_TWO_HOT}) group scores or (N, {YEARS_READOUT}) years "
                         f"readouts, got shape {readouts.shape}")
    if readouts.shape[1] == N_TWO_HOT:
        adult = adult_groups(min_age)
        decoded = [decode(row) for row in readouts]
        described = np.array([d.defined and bool(adult[d.age]) for d in decoded], dtype=bool)
        part, mask = readouts[:, :N_AGE], adult
    else:
        # Whole years (heads.whole_years: a face of 17.9 is 17), for the described age as
        # for the distribution's years: "at least A" is every year from ceil(A) up.
        years = whole_years(predicted_years("years_softmax", readouts))
        gender_ok = np.isfinite(readouts[:, N_YEARS:]).all(axis=1)
        with np.errstate(invalid="ignore"):
            described = np.isfinite(years) & (years >= np.ceil(min_age)) & gender_ok
        part, mask = readouts[:, :N_YEARS], np.arange(N_YEARS) >= np.ceil(min_age)
    with np.errstate(invalid="ignore", divide="ignore"):
        probability = part[:, mask].sum(1) / part.sum(1)
    return probability, described


def gate(readout, decoded: Decoded, min_age: float, threshold: float = DEFAULT_GATE_THRESHOLD) -> tuple[str, float | None]:
    """One face -> (decision, its probability of being at least ``min_age``)."""
    if not decoded.defined:
        return "undefined", None
    probability, described = adult_evidence(np.asarray(readout, dtype=np.float64)[None, :], min_age)
    mass = float(probability[0])
    return ("allow" if mass >= threshold and described[0] else "deny"), mass


def gate_rates(readouts, exact_ages, min_age: float = 18,
               threshold: float = DEFAULT_GATE_THRESHOLD) -> dict:
    """False-accept rate (under ``min_age`` let in) and false-reject rate (adults refused)."""
    ages = np.asarray(exact_ages, dtype=np.float64)
    allowed = gate_decisions(readouts, min_age, [threshold])[0]
    minors, adults = ages < min_age, ages >= min_age
    return {
        "min_age": min_age, "threshold": threshold,
        "minors": int(minors.sum()), "adults": int(adults.sum()),
        "false_accept_rate": float(allowed[minors].mean()) if minors.any() else None,
        "false_reject_rate": float((~allowed[adults]).mean()) if adults.any() else None,
    }


# A door's minimum age, wherever it is given (experiment, CLI, API): more than 0, at most 100 years.
DOOR_AGE_ABOVE, DOOR_AGE_MAX = 0.0, 100.0
DOOR_AGE_RANGE = f"more than {DOOR_AGE_ABOVE:g} and at most {DOOR_AGE_MAX:g} years"


def check_door_age(value: float) -> float:
    """``value`` as a door's minimum age, or ValueError saying the one range it must be in."""
    if not (math.isfinite(value) and DOOR_AGE_ABOVE < value <= DOOR_AGE_MAX):
        raise ValueError(f"a minimum age must be {DOOR_AGE_RANGE}, got {value:g}")
    return float(value)


class GateSpec(BaseModel):
    """A door rule from the experiment file: who may pass, and how many minors may slip by."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_age: float = Field(18, gt=DOOR_AGE_ABOVE, le=DOOR_AGE_MAX, description="allow only people this old or older")
    max_false_accept: float = Field(0.02, ge=0.0, lt=1.0,
                                    description="largest share of under-age faces let in")
    confidence: float | None = Field(
        None, ge=0.5, lt=1.0,
        description="None: the validation false-accept rate itself must meet the target; a level "
                    "such as 0.9: its one-sided Clopper-Pearson upper bound must")

    @model_serializer(mode="wrap")
    def _drop_neutral(self, handler):
        return drop_neutral(handler(self), {"confidence": None})


def false_accept_bound(allowed_minors: np.ndarray, minors: int, confidence: float | None) -> np.ndarray:
    """The false-accept rate a threshold is judged by: observed, or its upper confidence bound.

    A validation split holds a few hundred minors, so an observed 2 % can be 3 % on new
    faces; the Clopper-Pearson bound at ``confidence`` covers that sampling error.
    """
    allowed_minors = np.asarray(allowed_minors, dtype=np.float64)
    if confidence is None:
        return allowed_minors / minors
    from scipy.stats import beta

    bound = beta.ppf(confidence, allowed_minors + 1, minors - allowed_minors)
    return np.where(allowed_minors >= minors, 1.0, bound)


def _gated_probability(readouts, min_age: float) -> np.ndarray:
    """P(age >= min_age) where the face may be allowed at all, -inf where it may not."""
    probability, described = adult_evidence(readouts, min_age)
    return np.where(described & np.isfinite(probability), probability, -np.inf)


def gate_decisions(readouts, min_age: float, thresholds) -> np.ndarray:
    """(N, 10) or (N, 103) readouts x T thresholds -> (T, N) booleans: allowed at that
    threshold, by the same rule as :func:`gate`."""
    probability = _gated_probability(readouts, min_age)
    return probability[None, :] >= np.asarray(thresholds, dtype=np.float64)[:, None]


def rate_curve(readouts, exact_ages, min_age: float) -> dict:
    """False-accept and false-reject rates over every threshold that changes a decision."""
    ages = np.asarray(exact_ages, dtype=np.float64)
    probability = _gated_probability(readouts, min_age)
    candidates = np.unique(np.concatenate([[0.0], probability[np.isfinite(probability)],
                                           [np.nextafter(1.0, 2.0)]]))
    allowed = probability[None, :] >= candidates[:, None]
    minors, adults = ages < min_age, ages >= min_age
    far = allowed[:, minors].mean(1) if minors.any() else np.full(len(candidates), np.nan)
    frr = (~allowed[:, adults]).mean(1) if adults.any() else np.full(len(candidates), np.nan)
    return {"thresholds": candidates, "false_accept_rate": far, "false_reject_rate": frr,
            "minors": int(minors.sum()), "adults": int(adults.sum())}


def calibrate(readouts, exact_ages, spec: GateSpec) -> dict:
    """The lowest threshold whose validation false-accept rate meets the target.

    With ``spec.confidence``, the rate's one-sided upper confidence bound must meet it
    instead (see :func:`false_accept_bound`). The lowest such threshold refuses the
    fewest adults. ``met`` is False, with a
    ``reason``, when the validation faces cannot show the target was met: no exact
    ages, no minors or no adults among them, or only a threshold that refuses every
    adult keeps minors out well enough. Then ``threshold`` is None: an unmet target is
    reported, never clamped to a threshold that does not meet it.
    """
    ages = np.asarray(exact_ages, dtype=np.float64)
    result = {"min_age": spec.min_age, "max_false_accept": spec.max_false_accept,
              "confidence": spec.confidence, "met": False,
              "threshold": None, "val_false_accept_rate": None, "val_false_reject_rate": None,
              "val_minors": 0, "val_adults": 0, "reason": None}
    if len(ages) == 0 or np.isnan(ages).any():
        return {**result, "reason": "the validation split has no exact ages to calibrate on"}
    curve = rate_curve(readouts, ages, spec.min_age)
    result.update(val_minors=curve["minors"], val_adults=curve["adults"])
    if not curve["minors"] or not curve["adults"]:
        return {**result, "reason": f"the validation split has {curve['minors']} faces under "
                                    f"{spec.min_age:g} and {curve['adults']} at or over it; it needs both"}
    judged = false_accept_bound(np.rint(curve["false_accept_rate"] * curve["minors"]), curve["minors"],
                                spec.confidence)
    ok = (judged <= spec.max_false_accept) & (curve["false_reject_rate"] < 1.0)
    if not ok.any():
        admits_adults = curve["false_reject_rate"] < 1.0
        detail = (f"the lowest false-accept rate that allows an adult is "
                  f"{curve['false_accept_rate'][admits_adults].min():.1%}" if admits_adults.any() else
                  "no validation adult is described as an adult at all")
        bound = f" (upper {spec.confidence:.0%} confidence bound)" if spec.confidence else ""
        return {**result, "reason": (
            f"no threshold lets at most {spec.max_false_accept:.1%}{bound} of the {curve['minors']} "
            f"validation faces under {spec.min_age:g} in while allowing any adult ({detail})")}
    best = int(np.argmax(ok))   # thresholds ascend: the first that meets the target
    return {**result, "met": True, "threshold": float(curve["thresholds"][best]),
            "val_false_accept_rate": float(curve["false_accept_rate"][best]),
            "val_false_reject_rate": float(curve["false_reject_rate"][best]),
            "val_false_accept_bound": float(judged[best])}


DEFAULT_ASK_SHARE = 0.10   # a calibrated borderline band asks about this share of the validation faces


def borderline_band(val_readouts, min_age: float, threshold: float, share: float = DEFAULT_ASK_SHARE) -> float:
    """The half-width of the band around ``threshold`` holding ``share`` of the validation
    faces' adult probabilities: the faces the door sends to an ID check because the model
    is least sure of them (at most 0.49, the widest band a door may have)."""
    probability, _ = adult_evidence(val_readouts, min_age)
    distance = np.abs(probability[np.isfinite(probability)] - threshold)
    return float(min(np.quantile(distance, share), 0.49)) if len(distance) else 0.0


def door_cases(probability, described, threshold: float, margin: float) -> np.ndarray:
    """The door's rule, per face (``harness.deploy.door`` words it for one face): ``allow``,
    ``deny``, or one of the cases it asks for ID: ``borderline`` (within ``margin`` of the
    threshold), ``conflicting`` (adult by probability, at least even odds, yet the most
    likely group is under the age), ``undefined`` (no probability). A face whose two
    readings both say under the age is denied, whatever the threshold."""
    p = np.asarray(probability, dtype=np.float64)
    described = np.asarray(described, dtype=bool)
    finite = np.isfinite(p)
    p = np.where(finite, p, 0.0)
    borderline = finite & (np.abs(p - threshold) < margin)
    sure = finite & ~borderline
    allow = sure & (p >= threshold) & described
    deny = sure & ((p < threshold) | (~described & (p < 0.5)))
    cases = np.full(p.shape, "undefined", dtype=object)
    cases[sure & ~allow & ~deny] = "conflicting"
    cases[borderline], cases[allow], cases[deny] = "borderline", "allow", "deny"
    return cases


def band_rates(readouts, exact_ages, min_age: float, threshold: float, margin: float) -> dict:
    """What a door with this threshold and borderline band does with these faces
    (:func:`door_cases`): the share it asks for ID, and the minors it lets in and adults
    it refuses itself."""
    ages = np.asarray(exact_ages, dtype=np.float64)
    probability, described = adult_evidence(readouts, min_age)
    cases = door_cases(probability, described, threshold, margin)
    allowed, denied = cases == "allow", cases == "deny"
    minors, adults = ages < min_age, ages >= min_age
    return {"asked": float((~allowed & ~denied).mean()) if len(ages) else None,
            "false_accept_rate": float(allowed[minors].mean()) if minors.any() else None,
            "false_reject_rate": float(denied[adults].mean()) if adults.any() else None}
