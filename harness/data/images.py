"""Per-image preprocessing: decode, orient, crop, resize, equalize, colour space.

Each image is processed on its own (never the whole dataset at once, which is what
exhausted memory in the original study); results are uint8 so the array cache stays
small, and scaling to [0, 1] happens per batch in :func:`to_float`.
"""
from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from harness.data.faces import DESCRIPTOR_OUTPUTS

# What an experiment's dlib_embedding is computed by when it names no descriptor_engine:
# the port, batched on every core (Preprocessing's own default, "dlib", is what stored
# entries and runs from before the choice existed were computed by).
EXPERIMENT_DESCRIPTOR_ENGINE = "keras"


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
    align: Literal["none", "dlib"] = Field(
        "none", description="dlib: detect and align the face exactly as harness predict does")
    representation: Literal["pixels", "dlib_embedding"] = Field(
        "pixels", description="dlib_embedding: dlib's 128-D ResNet face descriptor of the aligned face")
    embedding_jitters: int = Field(0, ge=0, le=100, description="dlib's num_jitters: random re-crops averaged")
    embedding_flip: bool = Field(False, description="average the descriptor of the face and of its mirror")
    # Who computes the descriptor: dlib itself, or the face ResNet translated by a backend
    # (harness.models.face_resnet; within 1e-4 of dlib's). "dlib" is what every entry and
    # run from before the field existed was computed by, so it is left out of dumps (their
    # fingerprints and trial ids hold); an experiment names none and gets "keras".
    descriptor_engine: Literal["dlib", "keras", "keras-jax", "tflearn"] = Field(
        "dlib", description="dlib_embedding: dlib, or the face ResNet in this backend (batched, every core)")
    # Which of the network's outputs the model reads: the 128-D descriptor, or the 256-D
    # average-pooled features before its last (linear) layer. Left out of dumps when it is
    # the descriptor, for the same reason as the engine.
    descriptor_features: Literal["embedding", "pooled", "level0_input", "level1_input", "level2_input",
                                 "level3_input"] = Field(
        "embedding", description="dlib_embedding with a port engine: the 128-D descriptor, the 256-D pooled "
                                 "features before it, or the activations a fine-tuned level reads (levelK_input)")

    @model_serializer(mode="wrap")
    def _drop_defaults_of_older_runs(self, handler):
        data = handler(self)
        if data.get("descriptor_engine") == "dlib":
            data.pop("descriptor_engine")
        if data.get("descriptor_features") == "embedding":
            data.pop("descriptor_features")
        return data

    @model_validator(mode="after")
    def _engine_reads_descriptors(self):
        if self.descriptor_engine != "dlib":
            if not self.embedding:
                raise ValueError(f"descriptor_engine {self.descriptor_engine!r} computes face descriptors: it "
                                 "needs representation dlib_embedding")
            if self.embedding_jitters:
                raise ValueError("embedding_jitters are dlib's own random re-crops: they need descriptor_engine "
                                 "dlib")
            if self.embedding_flip and self.descriptor_features not in ("embedding", "pooled"):
                raise ValueError(f"embedding_flip averages a face's and its mirror's features; the activations at "
                                 f"{self.descriptor_features} are a map, which a mirror does not match")
        elif self.descriptor_features != "embedding":
            raise ValueError(f"descriptor_features {self.descriptor_features!r}: dlib gives its 128-D descriptor "
                             "only; other outputs need a port engine (descriptor_engine keras, keras-jax "
                             "or tflearn)")
        return self

    @model_validator(mode="before")
    @classmethod
    def _embeddings_are_aligned(cls, data):
        # The descriptor is defined on dlib's aligned chip: an embedding run aligns.
        if isinstance(data, dict) and data.get("representation") == "dlib_embedding":
            if data.get("align", "dlib") != "dlib":
                raise ValueError("representation dlib_embedding is computed on the aligned face: "
                                 "align must be dlib (or left out)")
            data = {**data, "align": "dlib"}
        return data

    @property
    def embedding(self) -> bool:
        return self.representation == "dlib_embedding"

    @property
    def channels(self) -> int:
        return 1 if self.color == "grayscale" else 3

    @property
    def shape(self) -> tuple[int, ...]:
        if self.embedding:
            return DESCRIPTOR_OUTPUTS[self.descriptor_features]
        return (self.size, self.size, self.channels)

    @property
    def dtype(self) -> type:
        """What the cache stores: uint8 pixels, or float32 descriptors."""
        return np.float32 if self.embedding else np.uint8


class ImageError(ValueError):
    """An image file that cannot be decoded; the message says why.

    ``kind`` sorts the reasons for callers that answer differently to each (the
    server's status codes): empty, format, too_large, corrupt, missing.
    """

    def __init__(self, message: str, kind: str = "corrupt"):
        super().__init__(message)
        self.kind = kind


# Pillow's own guard against decompression bombs warns above its limit and raises only
# above twice that; the harness refuses anything above one limit, as a listed skip.
MAX_PIXELS_ENV = "HARNESS_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 89_478_485   # Pillow's default: 0.25 GiB of 24-bit pixels


# The formats a photo may be in. Pillow would otherwise try every plugin it has, EPS among
# them (which hands the bytes to Ghostscript where it is installed). Pillow's JPEG opener
# also takes the MPO files many phones write.
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")


def max_pixels() -> int:
    value = os.environ.get(MAX_PIXELS_ENV, "")
    if not value:
        return DEFAULT_MAX_PIXELS
    if not value.isdigit() or int(value) <= 0:
        raise ImageError(f"{MAX_PIXELS_ENV} must be a positive whole number of pixels, got {value!r}")
    return int(value)


def open_image(path: str | Path, draft_size: int | None = None) -> Image.Image:
    """Open and fully decode an image as upright 8-bit RGB; raise :class:`ImageError` if unusable.

    Every failure, whatever the decoder raises, becomes an :class:`ImageError` naming the
    reason, so one bad file is one listed skip and never a crash of the batch.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageError("empty file", "empty")
    except FileNotFoundError:
        raise ImageError("file not found", "missing") from None
    except IsADirectoryError:
        raise ImageError("a directory, not an image file", "missing") from None
    return _decode(path, max_pixels(), draft_size)


def image_from_bytes(data: bytes, limit: int | None = None) -> Image.Image:
    """:func:`open_image` for an image held in memory (an upload): nothing touches the disk.

    ``limit``: the most pixels accepted (default: :func:`max_pixels`).
    """
    if not data:
        raise ImageError("empty file", "empty")
    return _decode(io.BytesIO(data), limit or max_pixels())


def _decode(source, limit: int, draft_size: int | None = None) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = limit
            Image.init()   # every plugin registered, so each of PHOTO_FORMATS is known by name
            with Image.open(source, formats=PHOTO_FORMATS) as image:
                _check_size(image.size, limit)
                if draft_size and image.format == "JPEG":
                    # Let libjpeg decode at a reduced scale when the target is much
                    # smaller: the largest single speed-up available for JPEG faces.
                    image.draft("RGB", (draft_size, draft_size))
                image.load()
                return to_rgb(ImageOps.exif_transpose(image))
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError("file not found", "missing") from None
    except IsADirectoryError:
        raise ImageError("a directory, not an image file", "missing") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"not an image in one of the formats taken ({', '.join(PHOTO_FORMATS)})", "format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # Pillow's own words quote its limit, or twice it (where it raises rather than
        # warns): only the harness's one limit is stated.
        found = re.search(r"\((\d+) pixels\)", str(err))
        raise ImageError(_too_large(f"{int(found.group(1)):,} pixels" if found else "more pixels", limit),
                         "too_large") from None
    except MemoryError:
        raise ImageError("too large to decode in the memory available", "too_large") from None
    except Exception as err:   # decoders raise many types; none may take a batch down
        raise ImageError(f"cannot decode: {type(err).__name__}: {err}") from None


def _check_size(size: tuple[int, int], limit: int) -> None:
    width, height = size
    if width * height > limit:
        raise ImageError(_too_large(f"{width}x{height} = {width * height:,} pixels", limit), "too_large")


def _too_large(what: str, limit: int) -> str:
    return (f"too large to decode safely: {what}, over the limit of {limit:,} pixels (raise "
            f"{MAX_PIXELS_ENV} to allow more)")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any mode Pillow opens -> 8-bit RGB, scaled by the range of the mode's samples.

    Pillow's own ``convert("RGB")`` clips 16- and 32-bit samples at 255, which turns a
    16-bit photo almost white. Here integer images are scaled by their bit depth
    (``I;16*``: 65535; ``I``: the smallest of 8, 16 or 31 bits (signed 32) that holds the
    maximum, since 16-bit files also open as ``I``), float images in [0, 1] by 255 and
    any other float range by its own minimum and maximum. Transparency is flattened
    onto white.
    """
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_scale_to_8bit(np.asarray(image), mode)).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _scale_to_8bit(samples: np.ndarray, mode: str) -> np.ndarray:
    samples = samples.astype(np.float64)
    finite = samples[np.isfinite(samples)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if (mode == "F" and high > 1.0) or low < 0:   # no known range: the image's own
        span = high - low
        scaled = (samples - low) / span * 255.0 if span > 0 else np.zeros_like(samples)
    elif mode == "F":
        scaled = samples * 255.0
    else:
        depth = 65535.0 if mode.startswith("I;16") else next(
            (d for d in (255.0, 65535.0) if high <= d), 2147483647.0)
        scaled = samples * (255.0 / depth)
    return np.clip(np.nan_to_num(np.rint(scaled)), 0, 255).astype(np.uint8)


def center_crop(image: Image.Image, fraction: float) -> Image.Image:
    """The centred square of ``fraction`` of the shorter side."""
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


UNALIGNED_NOTE = "no face found: the whole image was used"


def load_image(path: str | Path, prep: Preprocessing) -> np.ndarray:
    """Decode a file and apply ``prep``: the single path from file to cached array."""
    return load_face(path, prep)[0]


def load_face(path: str | Path, prep: Preprocessing) -> tuple[np.ndarray, str | None]:
    """-> (array, note). The note says why the face could not be aligned, else None.

    With ``align: dlib`` the photo goes through what ``harness predict`` does to it (the
    same decode, :func:`harness.data.faces.find_faces`, the largest usable face's chip), so a
    model is trained on faces framed exactly as it will see them. Where no face is found
    the whole image is used (square centre crop, then ``crop``): for already-cropped
    faces such as UTKFace's that is the face itself.
    """
    if prep.align == "none":
        return transform(open_image(path, draft_size=int(np.ceil(prep.size / prep.crop))), prep), None
    chip, note = aligned_chip(path)
    return face_array(chip, prep), note


def aligned_chip(path: str | Path) -> tuple[Image.Image, str | None]:
    """The photo's largest usable face, aligned as ``harness predict`` aligns it, or the
    whole image (its centred square) with a note when no face is found."""
    from harness.data.faces import largest_chip

    image = open_image(path)   # no draft: exactly the pixels harness predict decodes
    chip = largest_chip(image)
    if chip is None:
        return center_crop(image, 1.0), UNALIGNED_NOTE
    return chip, None


def face_array(chip: Image.Image, prep: Preprocessing) -> np.ndarray:
    """An aligned face chip -> what the model reads: pixels (uint8) or a descriptor (float32)."""
    if prep.embedding:
        if prep.descriptor_engine != "dlib":   # never dlib's descriptor in place of the engine's
            raise ValueError(f"descriptor_engine {prep.descriptor_engine}: descriptors are computed in batches by "
                             "the engine (harness.data.descriptors, harness.deploy.predictors.model_inputs)")
        from harness.data.faces import embed

        return embed(chip, prep.embedding_jitters, prep.embedding_flip)
    return transform(chip, prep)


def to_float(batch: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """uint8 batch (N, H, W, C) -> float32 in [0, 1] as ``prep.scaling`` says."""
    batch = np.asarray(batch, dtype=np.float32)
    if prep.embedding:
        return batch   # descriptors are used as dlib gives them
    if prep.scaling == "unit":
        return batch / 255.0
    axes = tuple(range(1, batch.ndim))
    low = batch.min(axis=axes, keepdims=True)
    span = batch.max(axis=axes, keepdims=True) - low
    # A constant image has no range to stretch; it maps to zeros rather than NaN.
    return np.divide(batch - low, span, out=np.zeros_like(batch), where=span > 0)
