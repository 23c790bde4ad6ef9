"""The door's policy: whether a model is fit to decide who comes in, and the three
verdicts a person at the door acts on.

A model is *fit* at a minimum age when its gate was calibrated on validation faces for
that age (``gate:`` in the experiment, or ``harness ensemble --gate-*``) and the rate of
minors it let in on its *test* faces at that threshold is at most the operator's limit.
Those figures are the run's own (``metrics.json``'s gate, an ensemble's, an export's
manifest), measured, never assumed. ``harness serve`` refuses an unfit model unless told
it is a demo; ``harness predict`` warns and goes on (research use).

The verdicts, for the face nearest the camera: **allow** and **deny** only when the
model is sure on either side of its threshold; **ask_for_id** when it is borderline
(within ``borderline`` of the threshold), cannot judge the face, the face is too small
to judge, or more than one face is in view; **retake** when there is no face at all. Where
the door checks liveness (``serve --liveness blink``, the default), an answer that would
allow becomes **ask_for_id** unless the live camera's frames showed a blink
(:mod:`harness.deploy.liveness`): a photo held up to the camera never allows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from harness.models.gate import door_cases

__all__ = ["Fitness", "door_fitness", "door_verdict", "calibrated_borderline", "VERDICTS",
           "DEFAULT_MAX_FALSE_ACCEPT", "DEFAULT_BORDERLINE", "MIN_FACE_PIXELS"]

DEFAULT_MAX_FALSE_ACCEPT = 0.05   # at most 5 in 100 minors let in, on the model's test faces
DEFAULT_BORDERLINE = 0.1          # adult probability within this of the threshold: ask for ID
MIN_FACE_PIXELS = 48              # a face box's shorter side below this: too small to judge
VERDICTS = ("allow", "ask_for_id", "deny", "retake")


@dataclass(frozen=True)
class Fitness:
    """A model's measured gate figures at the door's age, and whether they are good enough."""

    fit: bool
    problems: tuple[str, ...]
    min_age: float
    max_false_accept: float
    threshold: float | None = None
    false_accept_rate: float | None = None   # minors let in, of the test minors
    false_reject_rate: float | None = None   # adults refused, of the test adults
    test_minors: int | None = None
    test_adults: int | None = None

    def words(self) -> str:
        """The figures as a person reads them."""
        if self.false_accept_rate is None or self.false_reject_rate is None:
            return f"not measured on test faces at {self.min_age:g}"
        return (f"lets in about {_in_100(self.false_accept_rate)} in 100 minors, refuses about "
                f"{_in_100(self.false_reject_rate)} in 100 adults, measured on {self.test_minors + self.test_adults} "
                f"test faces ({self.test_minors} under {self.min_age:g})")

    def to_dict(self) -> dict:
        return {"fit": self.fit, "problems": list(self.problems), "min_age": self.min_age,
                "max_false_accept": self.max_false_accept, "threshold": self.threshold,
                "false_accept_rate": self.false_accept_rate, "false_reject_rate": self.false_reject_rate,
                "test_minors": self.test_minors, "test_adults": self.test_adults, "words": self.words()}


def _in_100(rate: float) -> str:
    shown = 100 * rate
    return f"{shown:.0f}" if shown >= 1 or shown == 0 else f"{shown:.1f}"


def door_fitness(calibrated: dict | None, min_age: float, max_false_accept: float = DEFAULT_MAX_FALSE_ACCEPT
                 ) -> Fitness:
    """Whether a model whose calibrated gate is ``calibrated`` (a predictor's
    ``calibrated_gate``) may decide at ``min_age``, and why not."""
    if not calibrated:
        return Fitness(False, ("it has no threshold calibrated on validation faces (add gate: to the experiment "
                               "and run it again, or build an ensemble with harness ensemble --gate-min-age), so "
                               "its false accepts at the door were never measured",), min_age, max_false_accept)
    if not math.isclose(float(calibrated.get("min_age", math.nan)), float(min_age)):
        return Fitness(False, (f"its threshold was calibrated for {float(calibrated['min_age']):g}, not for "
                               f"{min_age:g} (serve it with --min-age {float(calibrated['min_age']):g}, or "
                               f"calibrate for {min_age:g})",), min_age, max_false_accept)
    figures = dict(min_age=min_age, max_false_accept=max_false_accept, threshold=calibrated.get("threshold"),
                   false_accept_rate=calibrated.get("test_false_accept_rate"),
                   false_reject_rate=calibrated.get("test_false_reject_rate"),
                   test_minors=calibrated.get("test_minors"), test_adults=calibrated.get("test_adults"))
    if not calibrated.get("met"):
        return Fitness(False, (f"its calibration found no threshold that met its target: "
                               f"{calibrated.get('reason') or 'no reason recorded'}",), **figures)
    if figures["false_accept_rate"] is None or not figures["test_minors"]:
        return Fitness(False, (f"its false-accept rate was not measured on test faces under {min_age:g} "
                               "(the test split has none, or no exact ages)",), **figures)
    if figures["false_accept_rate"] > max_false_accept:
        return Fitness(False, (f"it let in {figures['false_accept_rate']:.1%} of its {figures['test_minors']} test "
                               f"faces under {min_age:g}, above the limit of {max_false_accept:.1%} "
                               "(--max-false-accept)",), **figures)
    return Fitness(True, (), **figures)


def calibrated_borderline(calibrated: dict | None) -> tuple[float, str]:
    """(margin, where it comes from) of the borderline band calibrated with the model's
    gate (``serve --borderline auto``); ValueError when it has none."""
    band = (calibrated or {}).get("borderline")
    if not band:
        raise ValueError("--borderline auto: this model's gate has no calibrated borderline band (it has no "
                         "calibrated threshold, or was calibrated before the band was); give --borderline MARGIN")
    measured = ""
    if band.get("test_asked") is not None:
        measured = f"; on its test faces it asked about {_in_100(band['test_asked'])} in 100"
        if band.get("test_false_accept_rate") is not None:
            measured += f" and let in about {_in_100(band['test_false_accept_rate'])} in 100 minors itself"
    return float(band["margin"]), (f"calibrated: the {band['ask_share']:.0%} of validation faces nearest the "
                                   f"threshold{measured}")


def door_verdict(faces: list, threshold: float, borderline: float = DEFAULT_BORDERLINE,
                 min_face_pixels: int = MIN_FACE_PIXELS, liveness=None) -> tuple[str, str]:
    """(verdict, why) for one photo's gated faces (:class:`harness.deploy.classify.FaceResult`,
    largest first): one of :data:`VERDICTS`. ``liveness``: the live check's
    :class:`harness.deploy.liveness.Liveness` where the door requires one, else None."""
    found = [f for f in faces if f.face is not None]
    if not found:
        return "retake", "no face: retake the photo with the face in view"
    if len(found) > 1:
        return "ask_for_id", f"{len(found)} faces in view: check the person at the door by ID"
    face = found[0]
    if face.box is not None and min(face.box[2] - face.box[0], face.box[3] - face.box[1]) < min_face_pixels:
        return "ask_for_id", "the face is too small to judge: come closer, or check ID"
    if face.adult_probability is None or face.gate in (None, "undefined"):
        return "ask_for_id", f"the model cannot judge this face ({face.undefined_reason or 'undefined'})"
    p = face.adult_probability
    # The face's gate says whether its most likely group is at or over the age where p
    # reaches the threshold (below it, the gate denies either way).
    case = door_cases([p], [face.gate == "allow"], threshold, borderline)[0]
    figures = f"adult {p:.0%} (needs {threshold:.0%})"
    if case == "borderline":
        return "ask_for_id", f"borderline: adult {p:.0%}, the door needs {threshold:.0%} (within {borderline:.0%})"
    if case == "allow":
        if liveness is not None and not liveness.passed:
            return "ask_for_id", f"{figures}, but {liveness.why}"
        return "allow", figures
    if case == "deny":
        return "deny", figures if p < threshold else f"{figures}, and the most likely age group is under the door's age"
    # Likely an adult, yet the most likely age group is under the door's age: not sure.
    return "ask_for_id", f"{figures}, but the most likely age group is under the door's age"
