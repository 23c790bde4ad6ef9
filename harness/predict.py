"""``harness predict``: classify every face in photos with a trained run's model.

photo -> faces (detect, align) -> the run's own preprocessing -> the run's saved model
(through its backend's loader) -> decode (label, sentence, or Undefined) -> age gate.
One unreadable photo is reported and the others go on.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness import heads
from harness.faces import find_faces
from harness.gate import DEFAULT_GATE_THRESHOLD, gate
from harness.images import ImageError, face_array, open_image, to_float
from harness.labels import AGE_GROUPS, GENDER_WORDS, N_AGE, decode, undefined
from harness.trial import DONE_FILE, read_config

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


@dataclass
class FaceResult:
    file: str
    face: int | None                 # index in the photo; None when there is no face
    box: tuple[int, int, int, int] | None
    sentence: str
    age_group: str | None = None
    gender: str | None = None
    age_probabilities: dict = field(default_factory=dict)
    gender_probabilities: dict = field(default_factory=dict)
    undefined_reason: str | None = None
    gate: str | None = None          # allow / deny / undefined, with --min-age
    adult_probability: float | None = None
    error: str | None = None         # the photo could not be read at all

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


LOG_NAME = "predict-log.txt"


class Predictor:
    """A trained run's model with the run's preprocessing; loads its backend once.

    Framework output (TensorFlow's C++ start-up lines, TFLearn's deprecation notes) goes
    to ``RUN_DIR/predict-log.txt`` (or a temporary file when the run is read-only), not
    the terminal, as in the worker.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        if not self.run_dir.exists():
            raise ValueError(f"--model {self.run_dir}: no such run directory")
        if not self.run_dir.is_dir():
            raise ValueError(f"--model {self.run_dir}: not a directory; give a trial directory (RUN_DIR)")
        if not (self.run_dir / DONE_FILE).is_file():
            raise ValueError(f"--model {self.run_dir}: not a finished run (no {DONE_FILE}); train it first")
        self.config = read_config(self.run_dir)
        self.log = _log_file(self.run_dir)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        from backends.worker import backend_module, output_to

        self._quiet = lambda: output_to(self.log)
        with self._quiet():
            # The one place outside a worker that imports a framework: this process
            # serves one run, so one backend.
            self.backend = backend_module(self.config.backend)
            model_file = self.run_dir / self.backend.MODEL_FILE
            try:
                self.model = self.backend.load(self.run_dir, self.config.model, self.config.training,
                                               self.config.preprocessing.shape)
            except Exception as err:
                # The framework's own words are often wrong here (Keras says "File not
                # found" for a truncated file): they go to the log, and the user is told
                # which file is at fault and what to do.
                print(f"loading {model_file} failed: {type(err).__name__}: {err}", flush=True)
                present = sorted(self.run_dir.glob(model_file.name + "*"))
                if not present:
                    raise ValueError(f"{model_file}: missing; the run has no saved model") from None
                size = sum(p.stat().st_size for p in present)
                raise ValueError(f"{model_file}: cannot be loaded by {self.config.backend}: damaged or "
                                 f"incomplete ({size:,} bytes); restore it or train the run again "
                                 f"(details in {self.log})") from None

    def scores(self, chips) -> np.ndarray:
        """Aligned face chips -> (N, 10) age/gender scores."""
        prep = self.config.preprocessing
        batch = model_inputs(chips, prep)
        with self._quiet():
            outputs = self.backend.predict(self.model, to_float(batch, prep))
        return heads.scores(self.config.model.head, outputs)


def model_inputs(chips, prep) -> np.ndarray:
    """Aligned face chips -> the batch the model is fed, by the run's own preprocessing
    (the very function the array cache used in training)."""
    return np.stack([face_array(chip, prep) for chip in chips])


def _log_file(run_dir: Path) -> Path:
    path = run_dir / LOG_NAME
    try:
        with open(path, "w"):   # this invocation's chatter only
            return path
    except OSError:
        return Path(tempfile.gettempdir()) / f"harness-{LOG_NAME}"


def image_files(paths) -> list[Path]:
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(path)
    return files


def classify(predictor: Predictor, path: Path, threshold: float | None = None,
             min_age: float | None = None) -> list[FaceResult]:
    """Every face in one photo; a photo that cannot be processed is one error result."""
    try:
        return _classify(predictor, path, threshold, min_age)
    except ImageError as err:
        return [FaceResult(str(path), None, None, f"error: {err}", error=str(err))]
    except Exception as err:   # one bad photo never takes the batch down
        reason = f"cannot process: {type(err).__name__}: {err}"
        return [FaceResult(str(path), None, None, f"error: {reason}", error=reason)]


def _classify(predictor, path, threshold, min_age) -> list[FaceResult]:
    decode_threshold = threshold or 0.0
    gate_threshold = DEFAULT_GATE_THRESHOLD if threshold is None else threshold
    image = open_image(path)
    faces = find_faces(image)
    if not faces:
        result = undefined("no face found")
        return [FaceResult(str(path), None, None, result.sentence(), undefined_reason=result.reason,
                           gate="undefined" if min_age is not None else None)]
    usable = [f for f in faces if f.chip is not None]
    scores = iter(predictor.scores([f.chip for f in usable]) if usable else [])
    results = []
    for index, face in enumerate(faces):
        row = next(scores) if face.chip is not None else None
        decoded = decode(row, decode_threshold) if row is not None else undefined(face.reason)
        result = FaceResult(str(path), index, face.box, decoded.sentence(), decoded.age_group,
                            decoded.gender_word, undefined_reason=decoded.reason)
        if row is not None:
            result.age_probabilities = {f"({lo}, {hi})": round(float(p), 4)
                                        for (lo, hi), p in zip(AGE_GROUPS, row[:N_AGE])}
            result.gender_probabilities = {w: round(float(p), 4) for w, p in zip(GENDER_WORDS, row[N_AGE:])}
        if min_age is not None:
            result.gate, result.adult_probability = gate(row if row is not None else np.zeros(10),
                                                         decoded, min_age, gate_threshold)
        results.append(result)
    return results
