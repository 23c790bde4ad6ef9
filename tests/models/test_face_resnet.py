"""dlib's face ResNet without dlib (issue 24 §1): the .dat reader against the real file,
and the network as written down (a NumPy forward pass) against dlib's own descriptors."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from harness.models import face_resnet
from harness.models.dlib_weights import DatError, default_weights_path, read_face_resnet

DAT = default_weights_path()
OTHER_MODELS = DAT.parent


@pytest.fixture(scope="module")
def weights():
    return read_face_resnet()


def test_every_array_has_the_networks_shape_and_the_count_adds_up(weights):
    shapes = face_resnet.parameter_shapes()
    assert {name: a.shape for name, a in weights.arrays.items()} == shapes
    # 29 convolutions (the stem and two per block of 3+4+3+3+1), their affines, the 256->128 projection.
    assert sum(name.endswith("/filters") for name in shapes) == 29
    assert face_resnet.parameter_count() == sum(a.size for a in weights.arrays.values()) == 5_614_592
    assert all(a.dtype == np.float32 and np.isfinite(a).all() for a in weights.arrays.values())
    assert weights.input_mean == pytest.approx(face_resnet.INPUT_MEAN, abs=1e-4) and weights.input_size == 150
    assert weights.layers[0] == "input_rgb_image_sized" and weights.layers[-1] == "fc_2"
    assert weights.layers.count("con_4") == 29 and weights.layers.count("add_prev_") == 14


@pytest.mark.parametrize("keep", [0.0, 0.000001, 0.3, 0.999999])
def test_a_truncated_file_names_the_file_and_the_byte(tmp_path, keep):
    data = DAT.read_bytes()
    cut = tmp_path / "cut.dat"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(DatError, match=rf"^{cut}: at byte [\d,]+: ") as caught:
        read_face_resnet(cut)
    reason = str(caught.value).split(": at byte ", 1)[1]   # (the test's folder name says "truncated" too)
    if keep == 0.0:
        assert "not dlib's face-recognition ResNet" in reason
    else:
        assert "where" in reason and "more were expected (truncated?)" in reason, reason


def test_corrupt_bytes_are_refused_where_they_stop_making_sense(tmp_path):
    data = bytearray(DAT.read_bytes())
    name = data.index(b"con_4", 5_000_000)
    data[name - 2] = 0x7F                               # a string length's control byte
    bad = tmp_path / "bad.dat"
    bad.write_bytes(bytes(data))
    with pytest.raises(DatError, match=rf"^{bad}: at byte {name - 2:,}: byte 0x7f does not start an integer"):
        read_face_resnet(bad)
    grown = tmp_path / "grown.dat"
    grown.write_bytes(DAT.read_bytes() + b"\x00" * 10)
    with pytest.raises(DatError, match="10 bytes after the network's last record"):
        read_face_resnet(grown)


@pytest.mark.parametrize("other, message", [
    ("shape_predictor_5_face_landmarks.dat", "at byte 0: not dlib's face-recognition ResNet: the file does not "
                                             "begin with a network's loss layer"),
    ("mmod_human_face_detector.dat", "the loss layer is 'loss_mmod_'"),
])
def test_another_dlib_model_is_refused_by_what_it_holds(other, message):
    with pytest.raises(DatError, match=message):
        read_face_resnet(OTHER_MODELS / other)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(DatError, match=f"{tmp_path / 'none.dat'}: cannot read the face ResNet's weights"):
        read_face_resnet(tmp_path / "none.dat")


def test_zero_padded_sums_are_dlibs_add_prev():
    block = np.ones((1, 3, 3, 4), np.float32)          # the block side: more channels, a smaller grid
    skip = np.full((1, 4, 4, 2), 2.0, np.float32)
    total = face_resnet.add_in_larger_shape(block, skip)
    assert total.shape == (1, 4, 4, 4)
    assert (total[0, :3, :3, :2] == 3).all() and (total[0, :3, :3, 2:] == 1).all()
    assert (total[0, 3, :, :2] == 2).all() and (total[0, 3, :, 2:] == 0).all()


def test_the_network_as_written_gives_dlibs_descriptors_on_real_faces(weights, utkface_sample):
    from harness.data.faces import first_chips
    from tests.helpers.faces import dlib_descriptors

    chips = first_chips(utkface_sample["path"], 48)
    expected = dlib_descriptors(chips)
    ours = face_resnet.reference_forward(weights.arrays, chips, weights.input_mean)
    assert ours.shape == (48, 128)
    assert np.abs(ours - expected).max() <= 1e-5
    pooled = face_resnet.reference_forward(weights.arrays, chips, weights.input_mean, features="pooled")
    assert pooled.shape == (48, 256) and np.allclose(pooled @ weights.arrays["fc/weights"], ours, atol=1e-6)


def test_every_engine_reads_the_same_150_pixel_chip():
    from harness.data.faces import descriptor_chip

    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8))
    pixels = descriptor_chip(big)
    assert pixels.shape == (150, 150, 3) and pixels.dtype == np.uint8 and pixels.flags["C_CONTIGUOUS"]
    assert (pixels == np.asarray(big.resize((150, 150), Image.Resampling.BILINEAR))).all()
    exact = Image.fromarray(pixels)
    assert (descriptor_chip(exact) == pixels).all()                    # already 150: untouched
    assert descriptor_chip(big.convert("L")).shape == (150, 150, 3)     # grey: as RGB


@pytest.mark.parametrize("train_from, levels", [
    ("head", set()), ("level0", {"level4"}), ("level1", {"level3", "level4"}),
    ("level3", {"level1", "level2", "level3", "level4"}), ("all", {"stem", "level0", "level1", "level2", "level3",
                                                                   "level4"}),
])
def test_train_from_counts_levels_from_the_output_as_dlib_does(train_from, levels):
    from harness.models.spec import FaceResNet

    arch = FaceResNet(train_from=train_from)
    assert {c.name.split("/")[0] for c in face_resnet.convolutions() if arch.trains(c.name)} == levels
    assert arch.trains("fc/weights") == (train_from != "head")
    assert FaceResNet(trainable=True).trains("stem/conv/filters")


def test_train_from_is_one_way_to_say_it_and_old_specs_keep_their_ids():
    from pydantic import ValidationError

    from harness.models.spec import FaceResNet

    with pytest.raises(ValidationError, match="trainable: true trains every level"):
        FaceResNet(trainable=True, train_from="level1")
    with pytest.raises(ValidationError, match="train_from"):
        FaceResNet(train_from="level4")
    assert "train_from" not in FaceResNet().model_dump()


def test_the_cuts_shapes_are_the_data_layers_and_each_network_spans_its_levels():
    from harness.data.faces import DESCRIPTOR_OUTPUTS

    for cut in face_resnet.CUTS:
        assert face_resnet.cut_shape(cut) == DESCRIPTOR_OUTPUTS[cut]
    stem, frozen, pooled = face_resnet.span("chip", "level0_input")
    assert stem and not pooled and frozen[-1].name == "level3/block2"
    stem, trained, pooled = face_resnet.span("level0_input", "embedding")
    assert not stem and pooled and [b.name for b in trained] == ["level4/block0"]
    assert [b.name for b in frozen + trained] == [b.name for b in face_resnet.blocks()]
    with pytest.raises(ValueError, match="that cut is below it"):
        face_resnet.span("level0_input", "level2_input")
