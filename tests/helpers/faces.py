"""Real aligned face chips, as every descriptor engine reads them, and dlib's descriptors of them."""
from __future__ import annotations

import numpy as np

from harness.data.faces import first_chips as real_chips  # noqa: F401  (the tests' name for it)


def dlib_descriptors(chips: np.ndarray) -> np.ndarray:
    from harness.data.faces import _descriptor_model

    model = _descriptor_model()
    return np.stack([np.asarray(model.compute_face_descriptor(c, 0), np.float32) for c in chips])
