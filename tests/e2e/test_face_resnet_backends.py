"""face_resnet in every backend (issue 24 §2): one spec, the same parameter counts, and
dlib's own descriptors from each framework's translation, on real UTKFace faces."""
from __future__ import annotations

import json

import numpy as np
import pytest

from harness.data.faces import first_chips
from harness.models import face_resnet, heads
from harness.models.backends import BACKENDS
from harness.models.spec import FaceResNet, ModelSpec
from tests.helpers.backend_runs import worker
from tests.helpers.faces import dlib_descriptors

CHIPS = 200


@pytest.fixture(scope="module")
def chips(tmp_path_factory, utkface_sample):
    """200 real aligned chips as every engine reads them, and dlib's descriptors of them."""
    pixels = first_chips(utkface_sample["path"], CHIPS)
    path = tmp_path_factory.mktemp("chips") / "chips.npy"
    np.save(path, pixels)
    return path, pixels, dlib_descriptors(pixels)


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_backend_computes_dlibs_descriptor(chips, tmp_path, backend):
    path, pixels, expected = chips
    out = tmp_path / "descriptors.npy"
    worker("describe", backend, path, out)
    got = np.load(out)
    assert got.shape == (CHIPS, face_resnet.EMBEDDING_SIZE) and got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_backend_gives_the_pooled_features_of_the_network_as_written(chips, tmp_path, backend):
    from harness.models.dlib_weights import read_face_resnet

    _, pixels, _ = chips
    some = tmp_path / "some.npy"
    np.save(some, pixels[:40])
    out = tmp_path / "pooled.npy"
    worker("describe", backend, some, out, "--features", "pooled")
    weights = read_face_resnet()
    reference = face_resnet.reference_forward(weights.arrays, pixels[:40], weights.input_mean, features="pooled")
    assert np.abs(np.load(out) - reference).max() <= 1e-4


def test_face_resnet_has_the_same_parameter_count_in_every_backend(tmp_path):
    archs = [FaceResNet(), FaceResNet(features="pooled"), FaceResNet(weights="none"),
             FaceResNet(trainable=True), FaceResNet(weights="none", trainable=True, features="pooled")]
    entries = [{"model": ModelSpec(architecture=arch, head=head).model_dump(mode="json"),
                "input_shape": [150, 150, 3]} for arch in archs for head in ("two_heads", "years_softmax")]
    specs = tmp_path / "specs.json"
    specs.write_text(json.dumps(entries))
    counts = {b: json.loads(worker("count-params", b, specs).stdout.strip().splitlines()[-1]) for b in BACKENDS}
    assert counts["keras"] == counts["tflearn"] == counts["keras-jax"]
    head = {h: sum((features + 1) * p.units for p in heads.parts(h)) for h, features in
            (("two_heads", 128), ("years_softmax", 128))}
    frozen_two_heads, trainable_two_heads = counts["keras"][0], counts["keras"][6]
    assert frozen_two_heads == head["two_heads"]                                  # only the head learns
    assert trainable_two_heads == face_resnet.parameter_count() + head["two_heads"]
