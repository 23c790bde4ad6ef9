from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.door_fixtures import door_exports, door_runs  # noqa: F401  (shared by export and serve tests)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
UTKFACE = SHARED / "UTKFace"
ADIENCE = SHARED / "adience"


@pytest.fixture(scope="session")
def utkface_dataset():
    from harness.data.datasets import load_utkface

    return load_utkface(UTKFACE)


@pytest.fixture(scope="session")
def utkface_sample(utkface_dataset):
    """A few hundred real UTKFace faces, every age group and gender present."""
    table = utkface_dataset.table
    shuffled = table.sample(frac=1, random_state=0)
    return shuffled.groupby(["age_group", "gender"]).head(20).reset_index(drop=True)


@pytest.fixture(scope="session")
def adience_images(tmp_path_factory, request):
    """Generated images at the real ``aligned/`` paths of a few hundred real metadata rows."""
    from harness.data.datasets import load_adience

    root = tmp_path_factory.mktemp("adience_images")
    table = load_adience(ADIENCE, images=root).table
    rows = table.sample(frac=1, random_state=1).groupby("fold").head(60)
    rng = np.random.default_rng(0)
    for path in rows["path"]:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(96, 80, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, format="JPEG")
    return root, rows.reset_index(drop=True)


# Module fixtures that train models: a test asking for any of them trains (see pytest.ini).
TRAINING_FIXTURES = {"door_runs", "door_exports", "server", "models", "trials", "jax_run", "two_nodes",
                     "finished", "results", "gated_run", "door", "door_model"}


def pytest_collection_modifyitems(config, items):
    """``trains`` on every end-to-end test and on every test that uses a training fixture,
    so that ``make test-fast`` (-m 'not trains and not browser') never trains."""
    for item in items:
        if "/tests/e2e/" in str(item.path) or TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.trains)
