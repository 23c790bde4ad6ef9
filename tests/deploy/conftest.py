"""Fixtures of the deploy tests."""
from pathlib import Path

import pytest
from PIL import Image

from harness.data.faces import find_faces


@pytest.fixture(scope="module")
def face_photo(tmp_path_factory, utkface_sample) -> Path:
    """A real UTKFace face that dlib finds, saved as a phone would send it."""
    out = tmp_path_factory.mktemp("door_photos")
    for path in utkface_sample["path"].iloc[40:]:
        image = Image.open(path).convert("RGB")
        if find_faces(image):
            image.save(out / "face.jpg", quality=92)
            return out / "face.jpg"
    raise AssertionError("no face found in the sample")
