"""The blink check: a live person's eyes close and open again; a photo's never do.

Each frame's largest face gets dlib's 68 landmarks (the model ships in
``face-recognition-models``), and its *openness*: the mean height of the two eyes (the
two lid-to-lid distances of each, as in the eye aspect ratio of Soukupová and Čech, 2016)
divided by the distance from the eyes' midpoint to the bottom of the nose. Dividing by a
height of the same rigid part of the face, not by the eye's width, keeps a photo rocked
back and forth in front of the camera (all heights shrink together, widths do not) from
looking like a blink, and talking (the jaw) does not move it.

A blink is :data:`MIN_CLOSED_FRAMES` to :data:`MAX_CLOSED_FRAMES` frames in a row (of
those with a face) whose openness is below :data:`BLINK_CLOSED` of the session's open
level (its 80th percentile), with a frame at least :data:`BLINK_REOPENED` of it both
before and after: eyes that close and open again. Eyes closed throughout (a photo of a
closed-eyed face), eyes that only close (the session ends) and one frame's landmark
jitter are no blink; nor is a session in which more than :data:`MAX_CLOSED_SHARE` of the
frames look closed: the landmarks of narrow or squinting eyes can flicker between open
and shut on a still photo, and a flicker is not a blink. The thresholds were set on
validation faces by ``benchmarks/liveness.py``, which measures the check on other
people's faces.

What it does not stop: a video of the person blinking, played on a screen; a mask. A
head-turn challenge or a depth camera would be the next step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image

__all__ = ["Liveness", "check_frames", "blink_in", "openness", "eye_landmarks", "BLINK_CLOSED",
           "BLINK_REOPENED", "MIN_CLOSED_FRAMES", "MAX_CLOSED_FRAMES", "MAX_CLOSED_SHARE", "MIN_FACE_FRAMES",
           "MAX_FRAMES"]

BLINK_CLOSED = 0.75      # openness below this share of the open level: eyes closed
BLINK_REOPENED = 0.85    # back above this share: open again
MIN_CLOSED_FRAMES = 2    # closed in this many frames in a row at least (a blink lasts 0.1-0.4 s:
MAX_CLOSED_FRAMES = 5    # 1-3 frames at the page's 8 a second) and at most
MAX_CLOSED_SHARE = 0.25  # more of a session's frames looking closed: flickering landmarks
OPEN_LEVEL_PERCENTILE = 80
MIN_FACE_FRAMES = 6      # frames with a face a session needs before it can show a blink
MAX_FRAMES = 40          # frames one check takes (the page sends about 20: 2.5 s at 8 a second)
DETECT_SIDE = 480        # frames are searched for a face at most this size (landmarks at full size)

_LEFT, _RIGHT, _NOSE_BOTTOM = slice(36, 42), slice(42, 48), 33


@dataclass(frozen=True)
class Liveness:
    """What a session's frames showed: ``state`` is ``blink`` (passed), ``no_blink``,
    ``too_few_faces``, ``not_checked`` (one photo: nothing to compare) or ``off``."""

    state: str
    why: str
    frames: int = 0
    frames_with_face: int = 0
    openness: tuple = field(default=(), repr=False)   # per frame, None where no face was found

    @property
    def passed(self) -> bool:
        return self.state == "blink"

    def to_dict(self) -> dict:
        return {"passed": self.passed, "state": self.state, "why": self.why, "frames": self.frames,
                "frames_with_face": self.frames_with_face,
                "openness": [None if v is None else round(v, 4) for v in self.openness]}


@lru_cache(maxsize=1)
def _models():
    import dlib
    import face_recognition_models

    return (dlib, dlib.get_frontal_face_detector(),
            dlib.shape_predictor(face_recognition_models.pose_predictor_model_location()))


def eye_landmarks(image: Image.Image) -> np.ndarray | None:
    """The 68 landmarks (x, y) of the largest face in an RGB frame, or None."""
    dlib, detector, predictor = _models()
    image = image.convert("RGB")
    pixels = np.asarray(image)
    scale = min(1.0, DETECT_SIDE / max(image.size))
    small = pixels if scale == 1.0 else np.asarray(image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BILINEAR))
    found = detector(small, 0)
    if not len(found):
        found = detector(small, 1)   # a face of 40-80 px at the detection size
    if not len(found):
        return None
    rect = max(found, key=lambda r: r.area())
    rect = dlib.rectangle(*(int(round(v / scale)) for v in (rect.left(), rect.top(), rect.right(), rect.bottom())))
    shape = predictor(pixels, rect)
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=float)


def openness(points: np.ndarray) -> float:
    """How open a face's eyes are, from its 68 landmarks: the eyes' mean lid-to-lid height
    over the distance from the eyes to the bottom of the nose."""
    def height(eye):
        return (np.linalg.norm(eye[1] - eye[5]) + np.linalg.norm(eye[2] - eye[4])) / 2

    left, right = points[_LEFT], points[_RIGHT]
    eyes = (left.mean(axis=0) + right.mean(axis=0)) / 2
    span = np.linalg.norm(points[_NOSE_BOTTOM] - eyes)
    return float((height(left) + height(right)) / 2 / span) if span > 0 else 0.0


def blink_in(values, closed: float = BLINK_CLOSED, reopened: float = BLINK_REOPENED,
             min_face_frames: int = MIN_FACE_FRAMES) -> Liveness:
    """Whether a session's openness per frame (None: no face in that frame), in order,
    shows a blink."""
    values = tuple(values)
    seen = np.array([v for v in values if v is not None], dtype=float)
    if len(seen) < min_face_frames:
        return Liveness("too_few_faces", f"a face was found in {len(seen)} of {len(values)} frames, "
                        f"{min_face_frames} needed: look at the camera", len(values), len(seen), values)
    level = float(np.percentile(seen, OPEN_LEVEL_PERCENTILE))
    if level <= 0:
        return Liveness("no_blink", "the eyes were never seen open", len(values), len(seen), values)
    share = seen / level
    shut = share < closed
    if shut.mean() > MAX_CLOSED_SHARE:
        return Liveness("no_blink", f"no clear blink (the eyes looked shut in {shut.sum()} of {len(seen)} frames): "
                        "face the camera in good light and blink once, or check ID", len(values), len(seen), values)
    for start, end in _runs(shut):
        if (MIN_CLOSED_FRAMES <= end - start <= MAX_CLOSED_FRAMES and (share[:start] >= reopened).any()
                and (share[end:] >= reopened).any()):
            return Liveness("blink", f"a blink was seen (eyes at {share[start:end].min():.0%} of open)",
                            len(values), len(seen), values)
    return Liveness("no_blink", f"no blink in {len(values)} frames: blink once, or check ID", len(values),
                    len(seen), values)


def _runs(flags: np.ndarray):
    """(start, end) of each run of True in ``flags``."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(int), [0]])))
    return zip(edges[::2], edges[1::2])


def check_frames(frames: list[Image.Image]) -> Liveness:
    """The blink check on a live session's frames, in the order they were taken."""
    if len(frames) > MAX_FRAMES:
        raise ValueError(f"{len(frames)} frames: one check takes at most {MAX_FRAMES}")
    if len(frames) < 2:
        return Liveness("not_checked", "one photo cannot show a blink: use the live camera, or check ID",
                        len(frames))
    values = []
    for frame in frames:
        points = eye_landmarks(frame)
        values.append(None if points is None else openness(points))
    return blink_in(values)
