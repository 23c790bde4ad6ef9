"""Frame sequences made from real faces, to test and measure the blink check.

A *still* sequence is one photo of a face held up to the camera: the same picture in
every frame, moved, turned, tilted away and lit a little differently from frame to
frame as a hand holds it, and JPEG-compressed as the page sends it. A *blink* sequence
is the same with the eyes closing and opening again over four frames (half, closed,
closed, half: about 0.4 s at the page's 8 frames a second). A *rocked* sequence is a
still photo tipped back and forth once over four frames, its heights shrunk to 80, 60,
60 and 80 %: to a measure of the eye's height over its width, that is a blink.

Nobody's eyes were photographed closed here: a face's eyes are closed by painting the
lids shut along its own 68 landmarks (the eye opening filled with the skin above and
below it, blended, and a lash line where the lids meet). The fill's proportions were
chosen by eye on other faces than those ``benchmarks/liveness.py`` measures.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from harness.deploy.liveness.blink import eye_landmarks

__all__ = ["close_eyes", "still_sequence", "blink_sequence", "rocked_sequence", "FRAMES", "BLINK"]

FRAMES = 20                    # 2.5 s at 8 frames a second, what the page sends
BLINK = (0.5, 1.0, 1.0, 0.5)   # how far the lids are closed in the blink's frames
ROCK = (0.2, 0.4, 0.4, 0.2)    # how much a rocked photo's heights shrink in those frames
FRAME_SIZE = (640, 480)
_LID_REACH = 0.4               # the painted lid starts this many eye-widths above the lid line
_SKIN_BELOW = 0.8              # the lid's colour: this much from below the eye, the rest from above


def close_eyes(image: Image.Image, points: np.ndarray, amount: float) -> Image.Image:
    """``image`` with both eyes closed by ``amount`` (0 open, 1 shut), along its landmarks."""
    pixels = np.asarray(image.convert("RGB"), dtype=float)
    height, width = pixels.shape[:2]
    out = pixels.copy()
    for eye, brow in ((points[36:42], points[17:22]), (points[42:48], points[22:27])):
        upper, lower = eye[[0, 1, 2, 3]], eye[[0, 5, 4, 3]]
        eye_width = eye[3, 0] - eye[0, 0]
        if eye_width <= 2:
            continue
        columns = np.arange(int(np.floor(eye[0, 0] - 0.25 * eye_width)), int(np.ceil(eye[3, 0] + 0.25 * eye_width)) + 1)
        columns = columns[(columns >= 0) & (columns < width)]
        top = np.interp(columns, upper[:, 0], upper[:, 1], left=np.nan, right=np.nan) - _LID_REACH * eye_width
        bottom = np.interp(columns, lower[:, 0], lower[:, 1], left=np.nan, right=np.nan) + 0.1 * eye_width
        brow_line = np.interp(columns, brow[:, 0], brow[:, 1])
        fill, mask, lash = out.copy(), np.zeros((height, width)), np.zeros((height, width))
        for column, start, end, brow_y in zip(columns, top, bottom, brow_line):
            if np.isnan(start) or end <= start:
                continue
            lid = start + amount * (end - start)
            above = pixels[int(np.clip(round((start + _LID_REACH * eye_width + brow_y) / 2), 0, height - 1)), column]
            below = pixels[int(np.clip(round(end + 0.08 * eye_width), 0, height - 1)), column]
            rows = np.arange(max(0, int(np.floor(start))), min(height, int(np.ceil(lid))))
            fill[rows, column] = above * (1 - _SKIN_BELOW) + below * _SKIN_BELOW
            mask[rows, column] = 1
            if amount > 0.6:
                lash[int(np.clip(round(lid - 0.2 * (end - start) * amount), 0, height - 1)), column] = 1
        mask = gaussian_filter(mask, 0.12 * eye_width)
        lash = gaussian_filter(lash, 0.04 * eye_width + 0.5)
        lash /= max(lash.max(), 1e-6)
        out = (out * (1 - mask[..., None]) + fill * mask[..., None]) * (1 - 0.45 * lash[..., None])
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def _placed(face: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The face as a camera at the door sees it: 180-300 px in a 640x480 frame."""
    side = int(rng.integers(180, 301))
    frame = Image.new("RGB", FRAME_SIZE, tuple(int(v) for v in rng.integers(60, 200, 3)))
    left = int(rng.integers(40, FRAME_SIZE[0] - side - 40))
    top = int(rng.integers(20, FRAME_SIZE[1] - side - 20))
    frame.paste(face.convert("RGB").resize((side, side), Image.Resampling.BICUBIC), (left, top))
    return frame


def _held(frame: Image.Image, rng: np.random.Generator, tilt: float, tipped: float = 0.0) -> Image.Image:
    """One camera frame of a held-up picture: moved, turned, tilted (heights shrunk by
    up to ``tilt``, and by ``tipped`` more), lit and compressed a little differently each time."""
    w, h = frame.size
    angle = np.deg2rad(rng.uniform(-3, 3))
    scale = rng.uniform(0.97, 1.03)
    squash = (1 - rng.uniform(0, tilt)) * (1 - tipped)
    dx, dy = rng.uniform(-5, 5, 2)
    # Output (x, y) reads the input at A @ (x - c) + c + d: a turn, a scale and a squash
    # of the heights about the frame's centre.
    c, s = np.cos(angle), np.sin(angle)
    a = np.array([[c, -s], [s, c]]) @ np.diag([1 / scale, 1 / (scale * squash)])
    centre = np.array([w / 2, h / 2])
    offset = centre - a @ centre + (dx, dy)
    moved = frame.transform(frame.size, Image.Transform.AFFINE,
                            (a[0, 0], a[0, 1], offset[0], a[1, 0], a[1, 1], offset[1]), Image.Resampling.BILINEAR)
    lit = Image.fromarray(np.clip(np.asarray(moved, dtype=float) * rng.uniform(0.92, 1.08), 0, 255).astype(np.uint8))
    sent = io.BytesIO()
    lit.save(sent, "JPEG", quality=int(rng.integers(75, 92)))
    return Image.open(io.BytesIO(sent.getvalue())).convert("RGB")


def still_sequence(face: Image.Image, rng: np.random.Generator, frames: int = FRAMES,
                   tilt: float = 0.25) -> list[Image.Image]:
    """A photo of ``face`` held up to the camera for ``frames`` frames."""
    placed = _placed(face, rng)
    return [_held(placed, rng, tilt) for _ in range(frames)]


def _moment(rng: np.random.Generator, frames: int, shape: tuple) -> list[float]:
    """``shape`` placed at a random moment away from the ends of ``frames`` frames."""
    start = int(rng.integers(3, frames - len(shape) - 2))
    amounts = [0.0] * frames
    amounts[start:start + len(shape)] = shape
    return amounts


def rocked_sequence(face: Image.Image, rng: np.random.Generator, frames: int = FRAMES,
                    tilt: float = 0.1) -> list[Image.Image]:
    """A photo of ``face`` held up and tipped back once (heights to 60 % and back)."""
    placed = _placed(face, rng)
    return [_held(placed, rng, tilt, tipped) for tipped in _moment(rng, frames, ROCK)]


def blink_sequence(face: Image.Image, rng: np.random.Generator, frames: int = FRAMES,
                   tilt: float = 0.0) -> list[Image.Image] | None:
    """``face`` blinking once, at a random moment away from the ends; None when no
    landmarks are found on it (its eyes cannot be closed)."""
    placed = _placed(face, rng)
    points = eye_landmarks(placed)
    if points is None:
        return None
    amounts = _moment(rng, frames, BLINK)
    shut = {amount: close_eyes(placed, points, amount) for amount in set(BLINK)}
    return [_held(shut.get(amount, placed) if amount else placed, rng, tilt) for amount in amounts]
