"""``harness predict``: classify every face in photos with a finished model.

photo -> faces (detect, align) -> the model's own preprocessing -> a
:class:`~harness.deploy.predictors.Predictor` -> decode (label, sentence, or Undefined)
-> age gate. One unreadable photo is reported and the others go on."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from harness.data.faces import Face, find_faces
from harness.data.images import ImageError, open_image
from harness.data.labels import GENDER_WORDS, N_GENDER, age_label, decode, undefined
from harness.models import heads
from harness.models.gate import DEFAULT_GATE_THRESHOLD, gate

if TYPE_CHECKING:   # light to import: detection processes import this module (harness.deploy.batching)
    from harness.deploy.predictors import Predictor

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


@dataclass
class FaceResult:
    file: str
    face: int | None                 # index in the photo; None when there is no face
    box: tuple[int, int, int, int] | None
    sentence: str
    age_group: str | None = None
    gender: str | None = None
    age: float | None = None         # years models: the predicted age in years ...
    age_interval: tuple[int, int] | None = None   # ... and its central 80 % interval
    age_probabilities: dict = field(default_factory=dict)
    gender_probabilities: dict = field(default_factory=dict)
    undefined_reason: str | None = None
    gate: str | None = None          # allow / deny / undefined, with --min-age
    adult_probability: float | None = None   # P(age >= --min-age)
    gate_threshold: float | None = None   # the adult probability the gate needed
    error: str | None = None         # the photo could not be read at all

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def image_files(paths) -> list[Path]:
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(path)
    return files


def gate_threshold(predictor, min_age: float | None, threshold: float | None = None) -> tuple[float, str]:
    """The adult probability ``--min-age`` needs, and where it comes from.

    An explicit ``--threshold`` wins; else the threshold calibrated on the run's
    validation faces for the same age (``gate:`` in the experiment); else 0.5.
    """
    if threshold is not None:
        return threshold, "--threshold"
    calibrated = predictor.calibrated_gate
    if min_age is not None and calibrated and float(calibrated["min_age"]) == float(min_age):
        return float(calibrated["threshold"]), (
            f"calibrated on validation faces for at most {calibrated['max_false_accept']:.1%} "
            f"false accepts at {min_age:g}")
    return DEFAULT_GATE_THRESHOLD, "default"


def classify(predictor: Predictor, path: Path, threshold: float | None = None,
             min_age: float | None = None, gate_at: float | None = None) -> list[FaceResult]:
    """Every face in one photo; a photo that cannot be processed is one error result.

    ``gate_at``: the gate's threshold (default: :func:`gate_threshold`). Many photos at
    once: :func:`harness.deploy.batching.classify_files` (faces batched, detection overlapped).
    """
    if gate_at is None:
        gate_at = gate_threshold(predictor, min_age, threshold)[0]
    found = detect_file(path)
    try:
        chips = usable_chips(found)
        return face_results(str(path), found, predictor.readouts(chips) if chips else None, threshold, min_age,
                            gate_at)
    except Exception as err:   # one bad photo never takes the batch down
        return [error_result(str(path), f"cannot process: {type(err).__name__}: {err}")]


def detect_file(path: Path) -> list[Face] | FaceResult:
    """A photo's faces (:func:`harness.data.faces.find_faces`), or the error result of a
    photo that cannot be read."""
    try:
        return find_faces(open_image(path))
    except ImageError as err:
        return error_result(str(path), str(err))
    except Exception as err:   # one bad photo never takes the batch down
        return error_result(str(path), f"cannot process: {type(err).__name__}: {err}")


def error_result(name: str, reason: str) -> FaceResult:
    return FaceResult(name, None, None, f"error: {reason}", error=reason)


def usable_chips(faces: list[Face] | FaceResult) -> list:
    """The chips of the faces the model can be asked about, in order (none for a photo
    that could not be read)."""
    return [face.chip for face in faces if face.chip is not None] if isinstance(faces, list) else []


def classify_image(predictor, name: str, image, threshold: float | None, min_age: float | None,
                   gate_at: float) -> list[FaceResult]:
    """Every face in one decoded photo (``name`` labels the results)."""
    faces = find_faces(image)
    chips = usable_chips(faces)
    return face_results(name, faces, predictor.readouts(chips) if chips else None, threshold, min_age, gate_at)


def face_results(name: str, faces: list[Face] | FaceResult, readouts: np.ndarray | None,
                 threshold: float | None, min_age: float | None, gate_at: float) -> list[FaceResult]:
    """A photo's faces and the model's readouts of its usable ones (in order) -> one result
    a face: decoded, described and gated. A photo's error result passes through."""
    if isinstance(faces, FaceResult):
        return [faces]
    path = name
    decode_threshold = threshold or 0.0
    if not faces:
        result = undefined("no face found")
        return [FaceResult(str(path), None, None, result.sentence(), undefined_reason=result.reason,
                           gate="undefined" if min_age is not None else None)]
    readouts = iter(readouts if readouts is not None else [])
    results = []
    for index, face in enumerate(faces):
        readout = next(readouts) if face.chip is not None else None
        head = heads.readout_head(readout) if readout is not None else None
        decoded = (decode(heads.scores(head, readout[None, :])[0], decode_threshold) if readout is not None
                   else undefined(face.reason))
        result = FaceResult(str(path), index, face.box, decoded.sentence(), decoded.age_group,
                            decoded.gender_word, undefined_reason=decoded.reason)
        if readout is not None:
            result.age_probabilities = {age_label(group): round(float(p), 4)
                                        for group, p in enumerate(heads.group_probabilities(readout[None, :])[0])}
            result.gender_probabilities = {w: round(float(p), 4)
                                           for w, p in zip(GENDER_WORDS, readout[-N_GENDER:])}
        if decoded.defined and head == "years_softmax":
            _describe_years(result, readout, decoded)
        if min_age is not None:
            # A face without a readout is undefined: the gate returns before reading it.
            result.gate, result.adult_probability = gate(readout, decoded, min_age, gate_at)
            result.gate_threshold = gate_at
        results.append(result)
    return results


def _describe_years(result: FaceResult, readout: np.ndarray, decoded) -> None:
    """A years model's face: "a male, about 27 (21-33)", its age and interval in years."""
    age = float(heads.predicted_years("years_softmax", readout[None, :])[0])
    low, high = (int(v[0]) for v in heads.years_interval(readout[None, :]))
    # To 0.1 year rounded down, so that its whole years are always the sentence's.
    result.age, result.age_interval = math.floor(age * 10) / 10, (low, high)
    # Told in whole years completed, the rule the age group and the gate follow too.
    result.sentence = f"a {decoded.gender_word}, about {int(heads.whole_years(age))} ({low}\u2013{high})"
