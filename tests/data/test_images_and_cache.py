import numpy as np
import pytest
from PIL import Image

from harness.data import cache
from harness.data.images import ImageError, Preprocessing, load_image, open_image, to_float


@pytest.fixture
def bad_files(tmp_path, utkface_sample):
    good = utkface_sample["path"].iloc[0]
    data = open(good, "rb").read()
    files = {
        "corrupt.jpg": data[:200] + bytes(range(256)) * 20,
        "truncated.jpg": data[: len(data) // 2],
        "empty.jpg": b"",
        "text.jpg": b"this is not an image\n",
    }
    paths = {}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
        paths[name] = str(tmp_path / name)
    paths["missing.jpg"] = str(tmp_path / "missing.jpg")
    return paths


@pytest.mark.parametrize("name,reason", [
    ("corrupt.jpg", "cannot decode"), ("truncated.jpg", "cannot decode"),
    ("empty.jpg", "empty file"), ("text.jpg", "not an image in one of the formats taken"),
    ("missing.jpg", "file not found"),
])
def test_unusable_images_raise_with_a_reason(bad_files, name, reason):
    with pytest.raises(ImageError, match=reason):
        open_image(bad_files[name])


@pytest.mark.parametrize("prep", [
    Preprocessing(size=32), Preprocessing(size=48, crop=0.8, equalize=True),
    Preprocessing(size=32, color="grayscale", equalize=True), Preprocessing(size=32, color="ycbcr"),
])
def test_preprocessing_shapes_and_ranges(utkface_sample, prep):
    array = load_image(utkface_sample["path"].iloc[0], prep)
    assert array.shape == prep.shape and array.dtype == np.uint8
    scaled = to_float(array[None], prep)
    assert scaled.dtype == np.float32 and scaled.min() == 0.0 and scaled.max() == 1.0


def test_equalization_spreads_the_luminance(utkface_sample):
    path = utkface_sample["path"].iloc[3]
    plain = load_image(path, Preprocessing(size=64, color="grayscale"))
    flat = load_image(path, Preprocessing(size=64, color="grayscale", equalize=True))
    hist = np.bincount(flat.ravel(), minlength=256)
    assert np.abs(np.cumsum(hist) / hist.sum() - np.linspace(0, 1, 256)).max() < \
        np.abs(np.cumsum(np.bincount(plain.ravel(), minlength=256)) / plain.size
               - np.linspace(0, 1, 256)).max()


def test_modes_and_exif_rotation(tmp_path):
    pixels = np.zeros((40, 80, 3), dtype=np.uint8)
    pixels[:, :40] = 255   # left half white
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6       # "rotate 90 CW to view"
    image.save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    upright = open_image(tmp_path / "rotated.jpg")
    assert upright.size == (40, 80)
    assert np.asarray(upright)[:20].mean() > 200 and np.asarray(upright)[-20:].mean() < 50
    Image.fromarray(pixels[..., 0]).save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([pixels, np.full((40, 80), 255, np.uint8)])).save(tmp_path / "rgba.png")
    for name in ("gray.png", "rgba.png"):
        assert open_image(tmp_path / name).mode == "RGB"


def test_minmax_of_a_constant_image_is_zero_not_nan():
    out = to_float(np.full((1, 4, 4, 3), 7, np.uint8), Preprocessing())
    assert np.isfinite(out).all() and (out == 0).all()


def test_cache_builds_once_and_keeps_labels_aligned(tmp_path, utkface_sample, bad_files):
    prep = Preprocessing(size=32)
    table = utkface_sample.iloc[:150]
    ids = list(table["id"]) + [f"bad:{n}" for n in bad_files]
    paths = list(table["path"]) + list(bad_files.values())
    built = cache.build(ids, paths, prep, cache_dir=tmp_path / "c", workers=2)
    assert sorted(built.skipped["path"]) == sorted(bad_files.values())
    assert set(built.valid_ids()) == set(table["id"])
    # Every cached row is exactly the face of its own id: nothing shifted past the bad files.
    for image_id, path in list(zip(table["id"], table["path"]))[::37]:
        expected = to_float(load_image(path, prep)[None], prep)[0]
        np.testing.assert_array_equal(built.arrays([image_id])[0], expected)
    again = cache.build(ids, paths, prep, cache_dir=tmp_path / "c", workers=2)
    assert again.directory == built.directory
    assert len(list((tmp_path / "c").iterdir())) == 1
    streamed = np.concatenate(list(built.batches(list(table["id"]), batch_size=64)))
    np.testing.assert_array_equal(streamed, built.arrays(list(table["id"])))


def test_cache_key_changes_with_preprocessing_and_files(tmp_path, utkface_sample):
    table = utkface_sample.iloc[:5]
    a = cache.fingerprint(table["id"], table["path"], Preprocessing(size=32))
    b = cache.fingerprint(table["id"], table["path"], Preprocessing(size=32, equalize=True))
    c = cache.fingerprint(table["id"][:4], table["path"][:4], Preprocessing(size=32))
    assert len({a, b, c}) == 3


def test_strict_mode_makes_bad_images_fatal(tmp_path, utkface_sample, bad_files):
    ids = [utkface_sample["id"].iloc[0], "bad"]
    paths = [utkface_sample["path"].iloc[0], bad_files["truncated.jpg"]]
    with pytest.raises(cache.CacheError, match="truncated.jpg"):
        cache.build(ids, paths, Preprocessing(size=16), cache_dir=tmp_path, strict=True)


def test_requesting_a_skipped_image_is_an_error(tmp_path, utkface_sample, bad_files):
    built = cache.build([utkface_sample["id"].iloc[0], "bad"],
                        [utkface_sample["path"].iloc[0], bad_files["empty.jpg"]],
                        Preprocessing(size=16), cache_dir=tmp_path, workers=1)
    with pytest.raises(KeyError, match="skipped"):
        built.arrays(["bad"])


def test_generated_adience_tree_caches(tmp_path, adience_images):
    root, rows = adience_images
    built = cache.build(rows["id"], rows["path"], Preprocessing(size=24), cache_dir=tmp_path)
    assert built.valid.all() and built.images.shape == (len(rows), 24, 24, 3)


def test_cli_cache_lists_skips(tmp_path, capsys, adience_images):
    from harness.cli import main
    from tests.conftest import ADIENCE
    root, rows = adience_images
    code = main(["data", "cache", "--dataset", "adience", "--path", str(ADIENCE), "--images",
                 str(root), "--size", "16", "--cache-dir", str(tmp_path), "--workers", "2"])
    out = capsys.readouterr().out
    # Only the generated few hundred exist; every other image is listed, not fatal.
    assert code == 0 and f"({len(rows)} images" in out and out.count("file not found") == 16156 - len(rows)


# --- align: dlib, one face geometry from training to prediction ---------------------------

def test_aligned_training_arrays_equal_what_predict_feeds_the_model(tmp_path, utkface_sample):
    from harness.data.faces import find_faces
    from harness.deploy.predictors import model_inputs

    prep = Preprocessing(size=32, align="dlib")
    rows = utkface_sample.iloc[::13].head(24)
    built = cache.build(rows["id"], rows["path"], prep, cache_dir=tmp_path, workers=2)
    unaligned = set(built.unaligned["id"])
    assert len(unaligned) <= 4, built.unaligned
    compared = 0
    for image_id, path in zip(rows["id"], rows["path"]):
        if image_id in unaligned:
            continue
        [row] = built.positions([image_id])
        fed = model_inputs([find_faces(open_image(path))[0].chip], prep)[0]   # what predict does
        assert np.array_equal(built.images[row], fed), image_id
        compared += 1
    assert compared >= 20
    plain = load_image(rows["path"].iloc[0], Preprocessing(size=32))
    assert not np.array_equal(plain, built.images[0]), "alignment changed nothing"


def test_an_image_without_a_face_falls_back_to_the_whole_image_and_is_listed(tmp_path, utkface_sample):
    from harness.data.images import UNALIGNED_NOTE, transform

    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(noise)
    paths = [str(noise)] + list(utkface_sample["path"].iloc[:3])
    prep = Preprocessing(size=24, align="dlib")
    built = cache.build(["noise", "a", "b", "c"], paths, prep, cache_dir=tmp_path / "c")
    assert built.valid.all()
    [row] = built.unaligned.itertuples()
    assert row.id == "noise" and row.reason == UNALIGNED_NOTE
    assert np.array_equal(built.images[0], transform(open_image(noise), prep))
    assert Preprocessing(size=24).model_dump_json() != prep.model_dump_json()   # its own cache entry


# --- dlib face embeddings as the input representation ------------------------------------

EMBEDDING = Preprocessing(representation="dlib_embedding")


def test_embeddings_are_deterministic_cached_and_what_predict_computes(tmp_path, utkface_sample, monkeypatch):
    from harness.data import faces
    from harness.data.faces import find_faces
    from harness.deploy.predictors import model_inputs

    rows = utkface_sample.iloc[::29].head(10)
    built = cache.build(rows["id"], rows["path"], EMBEDDING, cache_dir=tmp_path, workers=2)
    vectors = built.arrays(list(rows["id"]))
    assert vectors.shape == (10, 128) and vectors.dtype == np.float32 and np.isfinite(vectors).all()
    assert EMBEDDING.align == "dlib"
    for image_id, path in zip(rows["id"], rows["path"]):
        if image_id in set(built.unaligned["id"]):
            continue
        [row] = built.positions([image_id])
        assert np.array_equal(built.images[row], model_inputs([find_faces(open_image(path))[0].chip], EMBEDDING)[0])
    # A second build of the same images computes nothing: it is a cache hit.
    monkeypatch.setattr(faces, "embed", lambda *a, **k: pytest.fail("recomputed an embedding"))
    again = cache.build(rows["id"], rows["path"], EMBEDDING, cache_dir=tmp_path, workers=2)
    assert again.directory == built.directory and np.array_equal(again.arrays(list(rows["id"])), vectors)


def test_flip_averages_the_face_and_its_mirror(utkface_sample):
    from harness.data.faces import embed, largest_chip

    chip = largest_chip(open_image(utkface_sample["path"].iloc[3]))
    plain, flipped = embed(chip), embed(chip, flip=True)
    mirror = embed(chip.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    assert np.array_equal(plain, embed(chip))
    assert np.allclose(flipped, (plain + mirror) / 2, atol=1e-6) and not np.allclose(flipped, plain)


def test_grayscale_and_tiny_images_get_embeddings(tmp_path, utkface_sample):
    Image.open(utkface_sample["path"].iloc[4]).convert("L").save(tmp_path / "gray.png")
    Image.open(utkface_sample["path"].iloc[5]).resize((20, 20)).save(tmp_path / "tiny.png")
    built = cache.build(["gray", "tiny"], [tmp_path / "gray.png", tmp_path / "tiny.png"], EMBEDDING,
                        cache_dir=tmp_path / "c")
    assert built.valid.all() and np.isfinite(built.arrays(["gray", "tiny"])).all()
    assert list(built.unaligned["id"]) == ["tiny"]   # too small to detect: embedded whole


@pytest.mark.parametrize("fields,message", [
    ({"representation": "vgg_face"}, "'pixels' or 'dlib_embedding'"),
    ({"representation": "dlib_embedding", "align": "none"}, "align must be dlib"),
    ({"embedding_jitters": -1}, "greater than or equal to 0"),
])
def test_bad_representation_settings_are_rejected(fields, message):
    with pytest.raises(ValueError, match=message):
        Preprocessing(**fields)


# --- issue 23 §3: a cache entry's contents are verified when it is opened ------------------

def _damage(kind: str, entry) -> None:
    images, index = entry / cache.IMAGES_FILE, entry / cache.INDEX_FILE
    if kind == "flipped bytes":
        data = bytearray(images.read_bytes())
        data[-5000:-3000] = bytes(b ^ 0x5A for b in data[-5000:-3000])
        images.write_bytes(bytes(data))
    elif kind == "truncated images":
        images.write_bytes(images.read_bytes()[: images.stat().st_size // 2])
    elif kind == "corrupt index":
        index.write_text(index.read_text()[:40] + "\n}")


@pytest.mark.parametrize("kind,message", [
    ("flipped bytes", "do not have the checksum their build recorded"),
    ("truncated images", "truncated or damaged"),
    ("corrupt index", "index.json is damaged"),
])
def test_a_damaged_cache_entry_is_named_and_built_again(tmp_path, utkface_sample, capfd, kind, message):
    rows = utkface_sample.head(40)
    prep = Preprocessing(size=16)
    built = cache.build(rows["id"], rows["path"], prep, cache_dir=tmp_path, workers=1)
    original = built.arrays(built.valid_ids())
    entry = built.directory
    del built
    _damage(kind, entry)
    with pytest.raises(cache.DamagedEntry, match=f"cache entry {entry}: .*{message}"):
        cache.CachedArrays.open(entry)
    assert cache.lookup(rows["id"], rows["path"], prep, cache_dir=tmp_path) is None   # never handed out
    again = cache.build(rows["id"], rows["path"], prep, cache_dir=tmp_path, workers=1)
    assert f"cache entry {entry}" in capfd.readouterr().err and again.directory == entry
    np.testing.assert_array_equal(again.arrays(again.valid_ids()), original)
    assert [p.name for p in tmp_path.iterdir()] == [entry.name]   # nothing left beside it


@pytest.mark.parametrize("workers", [1, 2])
def test_a_cache_build_on_a_full_disk_names_the_folder_and_the_bytes(tmp_path, utkface_sample, workers):
    import json
    import subprocess
    import sys

    from tests.helpers.files import small_filesystem

    rows = utkface_sample.head(120)
    listing = tmp_path / "images.json"
    listing.write_text(json.dumps({"ids": rows["id"].tolist(), "paths": [str(p) for p in rows["path"]]}))
    script = ("import json, sys; from harness.data import cache; from harness.data.images import Preprocessing; "
              "d = json.load(open(sys.argv[1])); "
              "cache.build(d['ids'], d['paths'], Preprocessing(size=64), cache_dir=sys.argv[2], workers=int(sys.argv[3]))")
    with small_filesystem(tmp_path / "cache", "512k") as full:   # 120 faces of 64x64x3 need 1.4 MB
        result = subprocess.run([sys.executable, "-c", script, str(listing), str(full), str(workers)],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 1, (result.returncode, result.stderr[-2000:])   # not SIGBUS (-7)
        assert f"{full}: no space for a cache entry of 1,474,688 bytes" in result.stderr
        assert "HARNESS_CACHE" in result.stderr and "terminated abruptly" not in result.stderr
        assert not list(full.iterdir())   # the staging folder is gone


@pytest.mark.trains   # starts a framework worker for the descriptors
def test_descriptors_from_the_port_equal_dlibs_and_live_in_their_own_entry(tmp_path, utkface_sample):
    from harness.data.images import Preprocessing

    rows = utkface_sample.head(40)
    port = Preprocessing(representation="dlib_embedding", descriptor_engine="keras")
    own = Preprocessing(representation="dlib_embedding")
    assert own.descriptor_engine == "dlib" and "descriptor_engine" not in own.model_dump()   # older ids hold
    built = cache.build(rows["id"], rows["path"], port, cache_dir=tmp_path, workers=2)
    reference = cache.build(rows["id"], rows["path"], own, cache_dir=tmp_path, workers=2)
    assert built.directory != reference.directory                 # never mistaken for each other
    assert cache.lookup(rows["id"], rows["path"], port, cache_dir=tmp_path).directory == built.directory
    valid = built.valid & reference.valid
    assert valid.sum() >= 38 and (built.valid == reference.valid).all()
    assert np.abs(np.asarray(built.images)[valid] - np.asarray(reference.images)[valid]).max() <= 1e-4
    assert not list(built.directory.glob("*.npy.partial")) and not (built.directory / "chips.npy").exists()
    again = cache.CachedArrays.open(built.directory)                 # its checksums verify
    assert again.images.shape == (40, 128)
    # The pooled features: an entry of their own, and the descriptor is their projection
    # by the network's last layer (dlib's fc weights, read by our reader).
    from harness.models.dlib_weights import read_face_resnet

    pooled = cache.build(rows["id"], rows["path"], port.model_copy(update={"descriptor_features": "pooled"}),
                         cache_dir=tmp_path, workers=2)
    assert pooled.directory not in (built.directory, reference.directory) and pooled.images.shape == (40, 256)
    projected = np.asarray(pooled.images)[valid] @ read_face_resnet().arrays["fc/weights"]
    assert np.abs(projected - np.asarray(built.images)[valid]).max() <= 1e-4


def test_a_port_engine_needs_descriptors_and_no_jitters():
    from pydantic import ValidationError

    from harness.data.images import Preprocessing

    with pytest.raises(ValidationError, match="needs representation dlib_embedding"):
        Preprocessing(descriptor_engine="keras")
    with pytest.raises(ValidationError, match="embedding_jitters are dlib's own"):
        Preprocessing(representation="dlib_embedding", descriptor_engine="keras", embedding_jitters=2)
    with pytest.raises(ValidationError, match="other outputs need a port engine"):
        Preprocessing(representation="dlib_embedding", descriptor_features="pooled")
    pooled = Preprocessing(representation="dlib_embedding", descriptor_engine="keras", descriptor_features="pooled")
    assert pooled.shape == (256,) and pooled.model_dump()["descriptor_features"] == "pooled"
    assert "descriptor_features" not in Preprocessing(representation="dlib_embedding").model_dump()   # ids hold
