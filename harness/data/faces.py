"""Finding and aligning faces in a photo: dlib's HOG detector and 5-point landmarks.

Why dlib: its HOG detector ships inside the prebuilt ``dlib-bin`` wheel, and the
5-point landmark model inside ``face-recognition-models``, so both install from the
package registry with no compiler and no download at run time; and ``get_face_chip``
aligns on the eyes and nose the way the training sets were aligned (UTKFace's chips
and Adience's ``aligned/`` faces are landmark-aligned crops). OpenCV's bundled Haar
cascades have no landmarks, so alignment would need a second heuristic.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

# The detector works on at most this many pixels on the longer side: very large
# photos are downscaled for detection and the boxes scaled back.
DETECTION_MAX_SIDE = 1024
# Faces at the edge of a photo (or filling a crop, as in UTKFace) are found far more
# reliably with a margin around the image.
DETECTION_MARGIN = 0.25
# Padding of dlib's face chip that best matches UTKFace's 200x200 crops (compared by eye
# on real faces; 0.4 and above frames noticeably wider than the training images).
CHIP_PADDING = 0.25
CHIP_SIZE = 200
MIN_FACE_SIDE = 32   # pixels in the original photo; smaller boxes are too small to judge


@dataclass
class Face:
    box: tuple[int, int, int, int]       # left, top, right, bottom in the original photo
    chip: Image.Image | None             # aligned crop, None when the face is too small
    reason: str | None = None            # why this face cannot be classified

    @property
    def side(self) -> int:
        return min(self.box[2] - self.box[0], self.box[3] - self.box[1])


@lru_cache(maxsize=1)
def _models():
    import dlib
    import face_recognition_models

    return (dlib, dlib.get_frontal_face_detector(),
            dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location()))


@lru_cache(maxsize=1)
def _descriptor_model():
    import dlib
    import face_recognition_models

    return dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())


# dlib's ResNet reads 150x150 chips aligned with padding 0.25, the padding of CHIP_SIZE
# chips here: resizing the harness's chip gives it the framing it was trained on.
DESCRIPTOR_CHIP = 150
# What it gives: the 128-D descriptor, and the 256 average-pooled features the descriptor
# is a linear projection of (the port can hand out either; dlib the descriptor only).
EMBEDDING_SIZE = 128
POOLED_SIZE = 256
# Everything the port can hand out per face, and its shape: the descriptor, the pooled
# features, and the activations at each cut a fine-tuned trunk can start from (the input
# of dlib's level K, counted from the output; harness.models.face_resnet.cut_shape derives
# the same shapes from the network, and a test holds the two together).
DESCRIPTOR_OUTPUTS = {"embedding": (EMBEDDING_SIZE,), "pooled": (POOLED_SIZE,),
                      "level0_input": (4, 4, 256), "level1_input": (8, 8, 128),
                      "level2_input": (17, 17, 64), "level3_input": (35, 35, 32)}


def descriptor_chip(chip: Image.Image) -> np.ndarray:
    """An aligned chip as the face ResNet reads it, whichever engine runs it: RGB,
    resized (bilinear) to 150×150, uint8 (150, 150, 3)."""
    chip = chip.convert("RGB")
    if chip.size != (DESCRIPTOR_CHIP, DESCRIPTOR_CHIP):
        chip = chip.resize((DESCRIPTOR_CHIP, DESCRIPTOR_CHIP), Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(chip, dtype=np.uint8))


def first_chips(paths, count: int) -> np.ndarray:
    """The chips (:func:`descriptor_chip`) of the first ``count`` photos of ``paths`` in
    which a face is found, uint8 (count, 150, 150, 3): real faces for parity checks and
    benchmarks of the descriptor engines."""
    found = []
    for path in paths:
        chip = largest_chip(Image.open(path).convert("RGB"))
        if chip is not None:
            found.append(descriptor_chip(chip))
        if len(found) == count:
            return np.stack(found)
    raise ValueError(f"only {len(found)} photos with a face found, {count} wanted")


def embed(chip: Image.Image, jitters: int = 0, flip: bool = False) -> np.ndarray:
    """dlib's 128-D face descriptor of an aligned chip (float32); with ``flip``, the mean
    of the face's and its mirror's descriptors. Deterministic for ``jitters=0``."""
    model = _descriptor_model()
    pixels = descriptor_chip(chip)
    vectors = [np.asarray(model.compute_face_descriptor(pixels, jitters))]
    if flip:
        vectors.append(np.asarray(model.compute_face_descriptor(np.ascontiguousarray(pixels[:, ::-1]), jitters)))
    return np.mean(vectors, axis=0).astype(np.float32)


def find_faces(image: Image.Image, min_side: int = MIN_FACE_SIDE) -> list[Face]:
    """Every face in an upright RGB photo, largest first, each aligned into a chip."""
    dlib, detector, landmarks = _models()
    scale = min(1.0, DETECTION_MAX_SIDE / max(image.size))
    small = image if scale == 1.0 else image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BILINEAR)
    margin = round(DETECTION_MARGIN * max(small.size))
    # Edge-replicated, not black: the margin also surrounds the aligned chips of faces
    # at the border, and black bands are something no training image has.
    pixels = np.pad(np.asarray(small), ((margin, margin), (margin, margin), (0, 0)), mode="edge")
    detections = detector(pixels, 0)
    if not len(detections) and max(small.size) <= 640:
        # HOG finds faces down to about 80 px; a second pass at twice the size finds
        # ~40 px faces in small photos, at four times the cost, so only when needed.
        detections = detector(pixels, 1)
    faces = []
    for rect in sorted(detections, key=lambda r: -r.area()):
        box = tuple(int(round((v - margin) / scale)) for v in (rect.left(), rect.top(), rect.right(), rect.bottom()))
        box = (max(0, box[0]), max(0, box[1]), min(image.width, box[2]), min(image.height, box[3]))
        face = Face(box, None)
        if face.side < min_side:
            face.reason = f"face too small ({face.side} px, need {min_side})"
        else:
            chip = dlib.get_face_chip(pixels, landmarks(pixels, rect), size=CHIP_SIZE, padding=CHIP_PADDING)
            face.chip = Image.fromarray(chip)
        faces.append(face)
    return faces


def largest_chip(image: Image.Image) -> Image.Image | None:
    """The aligned chip of the largest face big enough to classify, or None."""
    return next((face.chip for face in find_faces(image) if face.chip is not None), None)
