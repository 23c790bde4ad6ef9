"""Per-image preprocessing: decode, orient, crop, resize, equalize, colour space.

Each image is processed on its own (never the whole dataset at once, which is what
exhausted memory in the original study); results are uint8 so the array cache stays
small, and scaling to [0, 1] happens per batch in :func:`to_float`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, Field


class Preprocessing(BaseModel):
    """How a face image becomes an array. Part of every cache key and trial config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(64, ge=8, le=1024, description="output side in pixels (square)")
    crop: float = Field(1.0, gt=0.0, le=1.0,
                        description="fraction of the shorter side kept by the centre crop")
    equalize: bool = Field(False, description="histogram-equalize the luminance")
    color: Literal["rgb", "ycbcr", "grayscale"] = "rgb"
    scaling: Literal["minmax", "unit"] = Field(
        "minmax", description="minmax: each image to [0, 1]; unit: divide by 255")

    @property
    def channels(self) -> int:
        return 1 if self.color == "grayscale" else 3

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.size, self.size, self.channels)


class ImageError(ValueError):
    """An image file that cannot be decoded; the message says why."""


def open_image(path: str | Path, draft_size: int | None = None) -> Image.Image:
    """Open and fully decode an image as upright RGB; raise :class:`ImageError` if unusable."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageError("empty file")
        with Image.open(path) as image:
            if draft_size and image.format == "JPEG":
                # Let libjpeg decode at a reduced scale when the target is much
                # smaller: the largest single speed-up available for JPEG faces.
                image.draft("RGB", (draft_size, draft_size))
            image.load()
            image = ImageOps.exif_transpose(image)
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                background = Image.new("RGB", image.size, (255, 255, 255))
                background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
                return background
            return image.convert("RGB")
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except Image.UnidentifiedImageError:
        raise ImageError("not a recognised image format") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"cannot decode: {err}") from None


def center_crop(image: Image.Image, fraction: float) -> Image.Image:
    width, height = image.size
    side = max(1, round(min(width, height) * fraction))
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def transform(image: Image.Image, prep: Preprocessing) -> np.ndarray:
    """An upright RGB face image -> uint8 array of ``prep.shape``."""
    image = center_crop(image, prep.crop)
    image = image.resize((prep.size, prep.size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    if prep.color == "grayscale":
        image = image.convert("L")
        if prep.equalize:
            image = ImageOps.equalize(image)
        return np.asarray(image, dtype=np.uint8)[..., None]
    if prep.equalize or prep.color == "ycbcr":
        y, cb, cr = image.convert("YCbCr").split()
        if prep.equalize:
            y = ImageOps.equalize(y)
        image = Image.merge("YCbCr", (y, cb, cr))
        if prep.color == "rgb":
            image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def load_image(path: str | Path, prep: Preprocessing) -> np.ndarray:
    """Decode a file and apply ``prep``: the single path from file to cached array."""
    return transform(open_image(path, draft_size=int(np.ceil(prep.size / prep.crop))), prep)


def to_float(batch: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """uint8 batch (N, H, W, C) -> float32 in [0, 1] as ``prep.scaling`` says."""
    batch = np.asarray(batch, dtype=np.float32)
    if prep.scaling == "unit":
        return batch / 255.0
    axes = tuple(range(1, batch.ndim))
    low = batch.min(axis=axes, keepdims=True)
    span = batch.max(axis=axes, keepdims=True) - low
    # A constant image has no range to stretch; it maps to zeros rather than NaN.
    return np.divide(batch - low, span, out=np.zeros_like(batch), where=span > 0)
