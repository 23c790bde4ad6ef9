"""Hostile and unusual images: a decompression bomb is one listed skip, never a crash;
every mode Pillow opens becomes correctly scaled 8-bit RGB."""
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from harness.data import cache
from harness.data.faces import find_faces
from harness.data.images import ImageError, Preprocessing, load_image, open_image

BOMB_SIDE = 20000


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


@pytest.fixture(scope="session")
def bomb(tmp_path_factory):
    """A valid 20000x20000 grayscale PNG of 400 MB of pixels, 0.4 MB on disk."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    compressor, row = zlib.compressobj(9), b"\0" * (BOMB_SIDE + 1)   # filter byte + pixels
    data = b"".join(compressor.compress(row) for _ in range(BOMB_SIDE)) + compressor.flush()
    header = struct.pack(">IIBBBBB", BOMB_SIDE, BOMB_SIDE, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data)
                     + png_chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_is_an_image_error_naming_the_limit(bomb):
    with pytest.raises(ImageError, match="too large to decode safely.*HARNESS_MAX_IMAGE_PIXELS"):
        open_image(bomb)


@pytest.mark.parametrize("limit", [100_000_000, 300_000_000])   # under the bomb, and under half of it
def test_a_bomb_message_states_one_limit_only(bomb, monkeypatch, limit):
    import re

    monkeypatch.setenv("HARNESS_MAX_IMAGE_PIXELS", str(limit))
    with pytest.raises(ImageError) as caught:
        open_image(bomb)
    message = str(caught.value)
    assert message == (f"too large to decode safely: 400,000,000 pixels, over the limit of {limit:,} pixels "
                       "(raise HARNESS_MAX_IMAGE_PIXELS to allow more)")
    assert {int(n.replace(",", "")) for n in re.findall(r"[\d,]{6,}", message)} == {400_000_000, limit}


def test_the_pixel_limit_is_configurable(tmp_path, monkeypatch, utkface_sample):
    path = utkface_sample["path"].iloc[0]   # 200 x 200 = 40,000 pixels
    monkeypatch.setenv("HARNESS_MAX_IMAGE_PIXELS", "30000")
    with pytest.raises(ImageError, match="40,000 pixels, over the limit of 30,000 pixels"):
        open_image(path)
    monkeypatch.setenv("HARNESS_MAX_IMAGE_PIXELS", "40000")
    assert open_image(path).size == (200, 200)


def test_a_bomb_in_a_dataset_is_one_skip_and_the_rest_are_cached(tmp_path, bomb, utkface_sample):
    paths = list(utkface_sample["path"].iloc[:300]) + [str(bomb)]
    built = cache.build([f"i{n}" for n in range(len(paths))], paths, Preprocessing(size=16),
                        cache_dir=tmp_path, workers=2)
    assert len(built.valid_ids()) == 300
    [skipped] = built.skipped.itertuples()
    assert skipped.path == str(bomb) and "too large" in skipped.reason


def test_any_decoder_exception_is_an_image_error(tmp_path, monkeypatch, utkface_sample):
    def explode(self, *args, **kwargs):
        raise struct.error("unpack requires a buffer of 4 bytes")   # not an OSError

    monkeypatch.setattr(Image.Image, "load", explode)
    with pytest.raises(ImageError, match="cannot decode: error: unpack requires"):
        open_image(utkface_sample["path"].iloc[0])


# --- every mode, scaled right ------------------------------------------------------------

@pytest.fixture(scope="module")
def face(utkface_sample):
    return Image.open(utkface_sample["path"].iloc[5]).convert("RGB")


def _gray(face) -> np.ndarray:
    return np.asarray(face.convert("L"), dtype=np.float64)


MODES = {
    # name: (make the file from the 8-bit face, the 8-bit values it should decode to)
    "16-bit grayscale PNG (I;16)": (
        lambda face, path: Image.fromarray((_gray(face) * 257).astype(np.uint16)).save(path.with_suffix(".png")),
        lambda face: _gray(face)),
    "32-bit integer TIFF (I), 16-bit values": (
        lambda face, path: Image.fromarray((_gray(face) * 257).astype(np.int32)).save(path.with_suffix(".tif")),
        lambda face: _gray(face)),
    "32-bit integer TIFF (I), full range": (
        lambda face, path: Image.fromarray((_gray(face) * (2**31 - 1) / 255).astype(np.int32))
        .save(path.with_suffix(".tif")),
        lambda face: _gray(face)),
    "32-bit float TIFF (F), 0..1": (
        lambda face, path: Image.fromarray((_gray(face) / 255).astype(np.float32)).save(path.with_suffix(".tif")),
        lambda face: _gray(face)),
    "32-bit float TIFF (F), other range": (
        lambda face, path: Image.fromarray((_gray(face) * 4 - 100).astype(np.float32)).save(path.with_suffix(".tif")),
        lambda face: (_gray(face) - _gray(face).min()) / np.ptp(_gray(face)) * 255),
    "palette PNG (P)": (
        lambda face, path: face.convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(path.with_suffix(".png")),
        lambda face: np.asarray(face, dtype=np.float64)),
    "CMYK JPEG": (
        lambda face, path: face.convert("CMYK").save(path.with_suffix(".jpg"), quality=95),
        lambda face: np.asarray(face, dtype=np.float64)),
    "CMYK TIFF": (
        lambda face, path: face.convert("CMYK").save(path.with_suffix(".tif")),
        lambda face: np.asarray(face, dtype=np.float64)),
    "grayscale with alpha PNG (LA)": (
        lambda face, path: face.convert("LA").save(path.with_suffix(".png")),
        lambda face: _gray(face)),
    "palette with transparency PNG (P + tRNS)": (
        lambda face, path: face.convert("P", palette=Image.Palette.ADAPTIVE, colors=255)
        .save(path.with_suffix(".png"), transparency=255),
        lambda face: np.asarray(face, dtype=np.float64)),
    "bilevel PNG (1)": (
        lambda face, path: face.convert("L").point(lambda v: 255 if v > 128 else 0).convert("1")
        .save(path.with_suffix(".png")),
        lambda face: np.where(_gray(face) > 128, 255.0, 0.0)),
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_decodes_to_correctly_scaled_8_bit_rgb(tmp_path, face, mode):
    make, expected = MODES[mode]
    make(face, tmp_path / "face")
    [path] = tmp_path.iterdir()
    decoded = open_image(path)
    assert decoded.mode == "RGB" and decoded.size == face.size
    values = np.asarray(decoded, dtype=np.float64)
    target = expected(face)
    target = np.repeat(target[..., None], 3, axis=-1) if target.ndim == 2 else target
    # Palettes and JPEG lose a little; a clipped or mis-scaled decode is off by tens.
    assert np.abs(values - target).mean() < 3.0, (mode, values.mean(), target.mean())


def test_a_dark_16_bit_face_keeps_its_brightness_and_is_found(tmp_path, face):
    dark = (_gray(face) * 0.25 * 257).astype(np.uint16)   # mean near the 38.5 in 8-bit terms
    Image.fromarray(dark).save(tmp_path / "dark16.png")
    decoded = np.asarray(open_image(tmp_path / "dark16.png"), dtype=np.float64)
    assert decoded.mean() == pytest.approx(_gray(face).mean() * 0.25, abs=1.0)
    Image.fromarray((_gray(face) * 257).astype(np.uint16)).save(tmp_path / "face16.png")
    assert find_faces(open_image(tmp_path / "face16.png")), "the 16-bit face was not found"


def test_a_16_bit_file_trains_on_the_same_array_as_its_8_bit_original(tmp_path, face):
    face.convert("L").save(tmp_path / "face8.png")
    Image.fromarray((_gray(face) * 257).astype(np.uint16)).save(tmp_path / "face16.png")
    prep = Preprocessing(size=32, color="grayscale")
    assert np.array_equal(load_image(tmp_path / "face16.png", prep), load_image(tmp_path / "face8.png", prep))


@pytest.mark.parametrize("suffix", [".tga", ".pcx", ".eps", ".ppm"])
def test_only_photo_formats_are_opened(tmp_path, utkface_sample, suffix):
    """Issue 23 §14: a real face saved as TGA, PCX, EPS (Ghostscript's input) or PPM is refused
    as a format, in files and in uploads; the photo formats still open."""
    from harness.data.images import PHOTO_FORMATS, image_from_bytes

    face = Image.open(utkface_sample["path"].iloc[0]).convert("RGB")
    path = tmp_path / f"face{suffix}"
    face.save(path)
    for opening in (lambda: open_image(path), lambda: image_from_bytes(path.read_bytes())):
        with pytest.raises(ImageError, match="not an image in one of the formats taken") as caught:
            opening()
        assert caught.value.kind == "format"
    for name in ("face.jpg", "face.png", "face.webp", "face.bmp", "face.gif", "face.tif"):
        face.save(tmp_path / name)
        assert open_image(tmp_path / name).size == face.size
    assert "EPS" not in PHOTO_FORMATS
