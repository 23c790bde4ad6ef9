"""dlib's own descriptors of face chips: what every descriptor engine is held to."""
from __future__ import annotations

import numpy as np


def dlib_descriptors(chips: np.ndarray) -> np.ndarray:
    from harness.data.faces import _descriptor_model

    model = _descriptor_model()
    return np.stack([np.asarray(model.compute_face_descriptor(c, 0), np.float32) for c in chips])
