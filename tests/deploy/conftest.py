"""Fixtures of the deploy tests."""
import json
from pathlib import Path

import numpy as np
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


@pytest.fixture(scope="module")
def photos(tmp_path_factory, utkface_sample):
    """Real faces plus the awkward files a person checking photos would meet."""
    out = tmp_path_factory.mktemp("photos")
    faces = [Image.open(p).convert("RGB") for p in utkface_sample["path"].iloc[20:26]]
    for i, face in enumerate(faces[:3]):
        face.save(out / f"face{i}.jpg")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(out / "noise.png")
    scene = np.zeros((300, 400, 3), np.uint8)
    scene[:150] = np.linspace(120, 230, 150, dtype=np.uint8)[:, None, None] * np.array([0.5, 0.7, 1.0]).astype(np.uint8)
    scene[150:] = (60, 120, 40)                     # grass
    scene[90:200, 250:330] = (150, 60, 40)          # a house
    scene[120:160, 270:300] = (230, 230, 200)       # its window
    Image.fromarray(scene).save(out / "scene.jpg")
    # Stored sideways, with EXIF saying "rotate 90 degrees clockwise to view".
    exif = Image.Exif()
    exif[0x0112] = 6
    faces[3].transpose(Image.Transpose.ROTATE_90).save(out / "exif_rotated.jpg", exif=exif.tobytes())
    faces[4].convert("L").save(out / "gray.png")
    faces[5].convert("RGBA").save(out / "rgba.png")
    canvas = Image.new("RGB", (4000, 3000), (90, 90, 90))
    canvas.paste(faces[0].resize((1200, 1200)), (1400, 900))
    canvas.save(out / "large.jpg", quality=85)
    return out


@pytest.fixture(scope="session")
def gated_run(tmp_path_factory, utkface_sample):
    """A model whose gate was calibrated on its validation faces (for at most 99 % false
    accepts: a target any model meets), so its test false-accept rate at 18 is measured."""
    from harness.models.gate import GateSpec
    from harness.models.spec import FCN, TrainingSpec
    from tests.helpers.backend_runs import make_trial, train_all

    base = tmp_path_factory.mktemp("gated")
    run = make_trial(base / "keras", utkface_sample, base / "cache", "keras", architecture=FCN(widths=[64]),
                     training=TrainingSpec(epochs=25, batch_size=16, seed=3),
                     gate=GateSpec(min_age=18, max_false_accept=0.99))
    train_all([run])
    gate = json.loads((run / "metrics.json").read_text())["gate"]
    assert gate["met"] and gate["test_minors"] > 0, gate
    return run, gate
