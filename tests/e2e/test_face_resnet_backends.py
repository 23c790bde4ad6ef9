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
             FaceResNet(trainable=True), FaceResNet(weights="none", trainable=True, features="pooled"),
             FaceResNet(train_from="level0"), FaceResNet(train_from="level3", features="pooled")]
    entries = [{"model": ModelSpec(architecture=arch, head=head).model_dump(mode="json"),
                "input_shape": [150, 150, 3]} for arch in archs for head in ("two_heads", "years_softmax")]
    # The same fine-tuned levels on the cached activations below them: the same trainable weights.
    entries.append({"model": ModelSpec(architecture=FaceResNet(train_from="level0", input="cut")).model_dump(
        mode="json"), "input_shape": list(face_resnet.cut_shape("level0_input"))})
    specs = tmp_path / "specs.json"
    specs.write_text(json.dumps(entries))
    counts = {b: json.loads(worker("count-params", b, specs).stdout.strip().splitlines()[-1]) for b in BACKENDS}
    assert counts["keras"] == counts["tflearn"] == counts["keras-jax"]
    head = {h: sum((features + 1) * p.units for p in heads.parts(h)) for h, features in
            (("two_heads", 128), ("years_softmax", 128))}
    frozen_two_heads, trainable_two_heads = counts["keras"][0], counts["keras"][6]
    assert frozen_two_heads == head["two_heads"]                                  # only the head learns
    assert trainable_two_heads == face_resnet.parameter_count() + head["two_heads"]
    # train_from levelK: levels 0..K from the output and the projection train, nothing below.
    shapes = face_resnet.parameter_shapes()
    trained = {k: sum(int(np.prod(v)) for n, v in shapes.items() if face_resnet.trains(n, k))
               for k in ("level0", "level3")}
    assert counts["keras"][10] == trained["level0"] + head["two_heads"] == counts["keras"][14]
    pooled_head = sum((face_resnet.POOLED_SIZE + 1) * p.units for p in heads.parts("two_heads"))
    assert counts["keras"][12] == trained["level3"] - 256 * 128 + pooled_head   # no projection when pooled


# Each backend's weights of a named trunk layer, from the trial's saved model and from one just built.
_WEIGHTS = {
    "keras": "w = lambda m, n: m.get_layer(n.replace('/', '_')).get_weights()[0]",
    "keras-jax": "w = lambda m, n: m.get_layer(n.replace('/', '_')).get_weights()[0]",
    "tflearn": ("w = lambda m, n: m.dnn.get_weights([v for v in m.graph.get_collection('variables') "
                "if v.op.name == 'face_resnet/' + n + '/filters'][0])"),
}


@pytest.mark.trains
@pytest.mark.parametrize("backend", ["keras", "tflearn"])
def test_fine_tuning_trains_the_levels_above_the_cut_and_leaves_the_rest_bit_identical(tmp_path, utkface_sample,
                                                                                      backend):
    import subprocess
    import sys

    from harness.data.images import Preprocessing
    from harness.models.spec import TrainingSpec
    from tests.helpers.backend_runs import ROOT, make_trial

    table = utkface_sample.head(48)
    prep = Preprocessing(align="dlib", size=150, scaling="unit")
    run = make_trial(tmp_path / "run", table, tmp_path / "cache", backend, prep=prep,
                     architecture=FaceResNet(train_from="level0"),
                     training=TrainingSpec(epochs=1, batch_size=16, seed=1, learning_rate=0.01))
    worker(run)
    # ours level3 is dlib's level1 (frozen under train_from level0); ours level4 is dlib's level0.
    names = ["stem/conv", "level0/block0/conv1", "level3/block0/conv2", "level4/block0/conv1", "level4/block0/conv2"]
    code = ("import json, numpy as np; from pathlib import Path; from backends.loading import backend_module; "
            "from harness.runs.trial import read_config; "
            f"run = Path({str(run)!r}); c = read_config(run); b = backend_module({backend!r}); "
            "trained = b.load(run, c.model, c.training, c.preprocessing.shape); "
            "fresh = b.build(c.model, c.training, c.preprocessing.shape); "
            f"{_WEIGHTS[backend]}; "
            f"print(json.dumps({{n: bool(np.array_equal(w(trained, n), w(fresh, n))) for n in {names!r}}}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    unchanged = json.loads(out.stdout.strip().splitlines()[-1])
    assert unchanged == {"stem/conv": True, "level0/block0/conv1": True, "level3/block0/conv2": True,
                         "level4/block0/conv1": False, "level4/block0/conv2": False}


_HEAD_WEIGHTS = {
    "keras": "h = lambda m: m.get_layer('head_0').get_weights()[0]",
    "keras-jax": "h = lambda m: m.get_layer('head_0').get_weights()[0]",
    "tflearn": ("h = lambda m: m.dnn.get_weights([v for v in m.graph.get_collection('trainable_variables') "
                "if not v.op.name.startswith('face_resnet/')][0])"),
}


@pytest.mark.trains
@pytest.mark.parametrize("backend", ["keras", "tflearn", "keras-jax"])
def test_pretrained_lr_scale_slows_the_pretrained_levels_and_not_the_heads(tmp_path, utkface_sample, backend):
    """Issue 25 §1: ``pretrained_lr_scale`` moves dlib's levels that train by that share of
    what they move at the full rate (Adam's steps are proportional to the rate), while the
    heads learn at the full rate either way."""
    import subprocess
    import sys

    from harness.data.images import Preprocessing
    from harness.models.spec import TrainingSpec
    from tests.helpers.backend_runs import ROOT, make_trial

    table = utkface_sample.head(48)
    cut = Preprocessing(representation="dlib_embedding", descriptor_engine="keras", descriptor_features="level0_input")
    moved = {}
    for scale in (1.0, 0.001):
        run = make_trial(tmp_path / f"run-{scale}", table, tmp_path / "cache", backend, prep=cut,
                         architecture=FaceResNet(train_from="level0", input="cut"),
                         training=TrainingSpec(epochs=2, batch_size=16, seed=1, learning_rate=0.001,
                                               pretrained_lr_scale=scale))
        worker(run)
        code = ("import json, numpy as np; from pathlib import Path; from backends.loading import backend_module; "
                "from harness.runs.trial import read_config; "
                f"run = Path({str(run)!r}); c = read_config(run); b = backend_module({backend!r}); "
                "trained = b.load(run, c.model, c.training, c.preprocessing.shape); "
                "fresh = b.build(c.model, c.training, c.preprocessing.shape); "
                f"{_WEIGHTS[backend]}; {_HEAD_WEIGHTS[backend]}; "
                "d = lambda a, b: float(np.abs(a - b).max()); "
                "print(json.dumps({'trunk': d(w(trained, 'level4/block0/conv1'), w(fresh, 'level4/block0/conv1')), "
                "'head': d(h(trained), h(fresh))}))")
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        moved[scale] = json.loads(out.stdout.strip().splitlines()[-1])
    full, slow = moved[1.0], moved[0.001]
    assert full["trunk"] > 0 and slow["trunk"] > 0
    assert slow["trunk"] < 0.01 * full["trunk"], moved      # about a thousandth, not merely less
    assert 0.5 < slow["head"] / full["head"] < 2.0, moved    # the heads' rate is untouched
