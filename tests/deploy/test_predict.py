"""harness predict: real faces, no faces, odd image files, the age gate."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.data.faces import find_faces
from harness.data.labels import decode, to_two_hot
from harness.models.gate import adult_groups, gate, gate_rates
from tests.helpers.backend_runs import ROOT, make_trial, train_all, worker


@pytest.fixture(scope="module")
def models(tmp_path_factory, utkface_sample):
    base = tmp_path_factory.mktemp("models")
    runs = {backend: make_trial(base / backend, utkface_sample, base / "cache", backend)
            for backend in ("keras", "tflearn")}
    # Age-in-years models, one head on each backend.
    runs.update({head: make_trial(base / head, utkface_sample, base / "cache", backend, head=head)
                 for head, backend in (("years_softmax", "keras"), ("years_regression", "tflearn"))})
    train_all(runs.values())
    return runs


def predict(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", "predict", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("backend", ["keras", "tflearn"])
def test_photos_through_both_backends(models, photos, backend):
    result = predict("--model", models[backend], photos, "--json", "--min-age", "18")
    assert result.returncode == 0, result.stderr[-3000:]
    by_file = {}
    for face in json.loads(result.stdout):
        by_file.setdefault(face["file"].rsplit("/", 1)[-1], []).append(face)
    for name in ("face0.jpg", "face1.jpg", "face2.jpg", "exif_rotated.jpg", "gray.png", "rgba.png", "large.jpg"):
        face = by_file[name][0]
        assert face["undefined_reason"] is None and face["box"], (name, face)
        assert sum(face["age_probabilities"].values()) == pytest.approx(1, abs=1e-3)
        assert sum(face["gender_probabilities"].values()) == pytest.approx(1, abs=1e-3)
        assert face["sentence"].startswith(f"a {face['gender']} ")
        assert face["gate"] in ("allow", "deny")
    # No face the sentence calls a minor is let in.
    for face in json.loads(result.stdout):
        if face["gate"] == "allow":
            assert int(face["age_group"].strip("()").split(",")[0]) >= 18, face
    for name in ("noise.png", "scene.jpg"):
        [face] = by_file[name]
        assert face["sentence"] == "Undefined: no face found"
        assert face["age_group"] is None and face["gate"] == "undefined"
    # The EXIF-rotated photo was read upright: its box lies in the upright frame.
    left, top, right, bottom = by_file["exif_rotated.jpg"][0]["box"]
    assert right <= 200 and bottom <= 200
    # A face in a 4000x3000 photo is found (detection runs on a downscaled copy) and
    # boxed in the original photo's coordinates.
    left, top, right, bottom = by_file["large.jpg"][0]["box"]
    assert 1300 < left < 1700 and right - left > 700


def test_rotation_is_what_made_the_sideways_photo_readable(photos):
    sideways = Image.open(photos / "exif_rotated.jpg").convert("RGB")   # EXIF ignored
    from harness.data.images import open_image
    upright = open_image(photos / "exif_rotated.jpg")
    assert sideways.size[::-1] == upright.size
    assert find_faces(upright)


def test_a_corrupt_file_among_good_ones(models, photos, tmp_path):
    folder = tmp_path / "batch"
    folder.mkdir()
    for name in ("face0.jpg", "face1.jpg"):
        (folder / name).write_bytes((photos / name).read_bytes())
    (folder / "broken.jpg").write_bytes((photos / "face2.jpg").read_bytes()[:300])
    (folder / "notes.jpg").write_text("not a photo")
    out = tmp_path / "faces.csv"
    result = predict("--model", models["keras"], folder, "--csv", out)
    assert result.returncode == 1
    assert "broken.jpg" in result.stderr and "notes.jpg" in result.stderr
    rows = list(csv.DictReader(out.open()))
    files = {r["file"].rsplit("/", 1)[-1]: r for r in rows}
    assert set(files) == {"face0.jpg", "face1.jpg", "broken.jpg", "notes.jpg"}
    assert files["face0.jpg"]["age_group"] and not files["face0.jpg"]["error"]
    assert "not an image in one of the formats taken" in files["notes.jpg"]["error"]
    assert "p (25, 32)" in rows[0]


def test_a_face_smaller_than_the_minimum_is_undefined(photos):
    faces = find_faces(Image.open(photos / "face0.jpg").convert("RGB"), min_side=400)
    assert faces and faces[0].chip is None and "too small" in faces[0].reason


def test_a_run_that_is_not_finished_is_refused(tmp_path):
    result = predict("--model", tmp_path, tmp_path)
    assert result.returncode == 2 and "not a finished run" in result.stderr


# --- the gate rule, on crafted outputs ---------------------------------------

def scores(age_probs, gender=(0.9, 0.1)):
    return np.concatenate([np.asarray(age_probs, float), gender])


def test_15_to_20_counts_as_under_18():
    assert adult_groups(18).tolist() == [False, False, False, False, True, True, True, True]
    row = scores([0, 0, 0, 1.0, 0, 0, 0, 0])
    assert gate(row, decode(row), 18) == ("deny", 0.0)


@pytest.mark.parametrize("age_probs,threshold,expected", [
    ([0, 0, 0, 0, 0.9, 0.1, 0, 0], 0.5, ("allow", 1.0)),
    ([0, 0, 0, 0.45, 0.55, 0, 0, 0], 0.5, ("allow", 0.55)),
    ([0, 0, 0, 0.45, 0.55, 0, 0, 0], 0.6, ("deny", 0.55)),
    ([0.1, 0.1, 0.1, 0.3, 0.2, 0.1, 0.05, 0.05], 0.5, ("deny", 0.4)),
    # The adult groups hold 0.55 together, but the face is labelled 15-20: refused,
    # so the gate never lets in someone its own sentence calls a minor.
    ([0, 0, 0, 0.45, 0.30, 0.25, 0, 0], 0.5, ("deny", 0.55)),
])
def test_allow_needs_the_adult_mass_to_reach_the_threshold(age_probs, threshold, expected):
    row = scores(age_probs)
    decision, mass = gate(row, decode(row), 18, threshold)
    assert decision == expected[0] and mass == pytest.approx(expected[1])


def test_no_valid_output_is_undefined_at_the_gate():
    for row in (np.full(10, np.nan), np.zeros(10), scores([0.5, 0.5, 0, 0, 0, 0, 0, 0])):
        assert gate(row, decode(row), 18)[0] == "undefined"


def test_gate_rates_against_exact_ages():
    rows = np.stack([to_two_hot(4, 0), to_two_hot(4, 1), to_two_hot(2, 0), to_two_hot(3, 1)])
    rates = gate_rates(rows, [30, 16, 10, 19], 18)
    # The 16-year-old predicted 25-32 is a false accept; the 19-year-old predicted 15-20 a false reject.
    assert rates["false_accept_rate"] == 0.5 and rates["false_reject_rate"] == 0.5


# --- bad arguments and damaged runs are named, not dumped ---------------------------------

@pytest.mark.parametrize("args,message", [
    (["--threshold", "-1"], "--threshold: must be between 0 and 1"),
    (["--threshold", "1.5"], "--threshold: must be between 0 and 1"),
    (["--min-age", "nan"], "--min-age: a minimum age must be more than 0 and at most 100 years"),
    (["--min-age", "-3"], "--min-age: a minimum age must be more than 0 and at most 100 years"),
    (["--min-age", "inf"], "--min-age: a minimum age must be more than 0 and at most 100 years"),
])
def test_out_of_range_options_are_rejected(models, photos, args, message):
    result = predict("--model", models["keras"], photos / "face0.jpg", *args)
    assert result.returncode == 2 and message in result.stderr


def test_missing_and_damaged_runs_name_the_file_and_the_problem(models, photos, tmp_path):
    import shutil

    missing = predict("--model", tmp_path / "nope", photos / "face0.jpg")
    assert missing.returncode == 2 and "no such run directory" in missing.stderr

    truncated = tmp_path / "truncated"
    shutil.copytree(models["keras"], truncated)
    model_file = truncated / "model.keras"
    model_file.write_bytes(model_file.read_bytes()[:2000])
    result = predict("--model", truncated, photos / "face0.jpg")
    assert result.returncode == 2, result.stderr
    assert f"{model_file}: damaged, not a complete Keras archive" in result.stderr, result.stderr
    assert "File not found" not in result.stderr and "Traceback" not in result.stderr

    bad_config = tmp_path / "bad_config"
    shutil.copytree(models["keras"], bad_config)
    config = json.loads((bad_config / "config.json").read_text())
    config["training"]["epochs"] = "many"
    (bad_config / "config.json").write_text(json.dumps(config))
    result = predict("--model", bad_config, photos / "face0.jpg")
    assert result.returncode == 2
    assert f"{bad_config / 'config.json'}: not a valid trial config (training.epochs" in result.stderr
    assert "pydantic" not in result.stderr


def test_a_decompression_bomb_in_a_batch_is_one_error_line(models, photos, tmp_path):
    import struct
    import zlib

    from tests.data.test_hostile_images import BOMB_SIDE, png_chunk

    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "face0.jpg").write_bytes((photos / "face0.jpg").read_bytes())
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(b"\0" * (BOMB_SIDE + 1)) for _ in range(BOMB_SIDE)) + compressor.flush()
    (folder / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(
        ">IIBBBBB", BOMB_SIDE, BOMB_SIDE, 8, 0, 0, 0, 0)) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b""))
    out = tmp_path / "faces.csv"
    result = predict("--model", models["keras"], folder, "--csv", out)
    assert result.returncode == 1 and "bomb.png" in result.stderr and "too large" in result.stderr
    rows = {r["file"].rsplit("/", 1)[-1]: r for r in csv.DictReader(out.open())}
    assert rows["face0.jpg"]["age_group"] and "too large" in rows["bomb.png"]["error"]


@pytest.mark.parametrize("backend", ["keras", "tflearn"])
def test_the_terminal_shows_results_only_and_chatter_goes_to_the_log(models, photos, backend):
    result = predict("--model", models[backend], photos / "face0.jpg", "--min-age", "18")
    assert result.returncode == 0
    # No TensorFlow or TFLearn start-up lines: only the door's warning that this test model
    # was never calibrated for a door (harness serve would refuse it).
    assert result.stderr.startswith("warning: this model is not fit for a door at 18: it has no threshold "
                                    "calibrated"), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stdout.startswith(str(photos / "face0.jpg"))
    assert (models[backend] / "predict-log.txt").is_file()


@pytest.mark.trains
def test_predict_on_a_run_trained_on_face_embeddings(tmp_path, utkface_sample, photos):
    from harness.data.images import Preprocessing

    table = utkface_sample.groupby(["age_group", "gender"]).head(8).reset_index(drop=True)
    run = make_trial(tmp_path / "run", table, tmp_path / "cache", "keras",
                     prep=Preprocessing(representation="dlib_embedding"))
    worker(run)
    result = predict("--model", run, photos / "face0.jpg", photos / "noise.png", "--json", "--min-age", "18")
    assert result.returncode == 0, result.stderr[-2000:]
    by_file = {f["file"].rsplit("/", 1)[-1]: f for f in json.loads(result.stdout)}
    face = by_file["face0.jpg"]
    assert face["undefined_reason"] is None and face["gate"] in ("allow", "deny")
    assert sum(face["age_probabilities"].values()) == pytest.approx(1, abs=1e-3)
    assert by_file["noise.png"]["sentence"] == "Undefined: no face found"


@pytest.mark.trains
@pytest.mark.parametrize("backend", ["keras", "tflearn"])   # the engine in this process, and in one of its own
def test_a_run_on_port_descriptors_predicts_with_its_own_engine(tmp_path, utkface_sample, photos, backend):
    from harness.data.cache import CachedArrays
    from harness.data.images import Preprocessing
    from harness.deploy.predictors import model_inputs
    from harness.runs.trial import read_config

    table = utkface_sample.groupby(["age_group", "gender"]).head(8).reset_index(drop=True)
    prep = Preprocessing(representation="dlib_embedding", descriptor_engine="keras")
    run = make_trial(tmp_path / "run", table, tmp_path / "cache", backend, prep=prep)
    worker(run)
    result = predict("--model", run, photos / "face0.jpg", photos / "face1.jpg", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    faces = [f for f in json.loads(result.stdout) if f["undefined_reason"] is None]
    assert len(faces) >= 2 and all(sum(f["age_probabilities"].values()) == pytest.approx(1, abs=1e-3)
                                   for f in faces)
    # What predict feeds the model for a training face is what the cache trained it on.
    cached = CachedArrays.open(Path(read_config(run).cache_entry))
    from harness.data.images import aligned_chip

    rows = [i for i in range(6) if cached.valid[i]]
    chips = [aligned_chip(cached_path)[0] for cached_path in table.set_index("id").loc[cached.ids[rows], "path"]]
    assert np.abs(model_inputs(chips, prep) - np.asarray(cached.images)[rows]).max() <= 1e-5


def _members(models):
    from harness.runs.ensemble import Member
    from harness.runs.trial import read_config

    return [Member(f"t-{b}", models[b], read_config(models[b]), "fcn") for b in ("keras", "tflearn")]


def test_an_ensemble_of_both_backends_scores_its_mean_and_predicts_photos(models, photos, tmp_path):
    from harness.models import heads, metrics
    from harness.runs.ensemble import build_round

    members = _members(models)
    result = build_round(members, tmp_path / "round-0")
    stored = [np.load(m.run_dir / "predictions.npz") for m in members]
    mean = np.mean([heads.scores(m.config.model.head, s["outputs"]) for m, s in zip(members, stored)], axis=0)
    expected = metrics.compute("two_heads", mean, stored[0]["age"], stored[0]["gender"])
    for key in ("gender_accuracy", "age_exact_accuracy", "age_one_off_accuracy", "joint_accuracy", "undefined"):
        assert result[key] == expected[key], key
    assert result["members"] == 2
    # Photo -> face -> each member in its own process (TFLearn and Keras never share one).
    out = predict("--model", tmp_path / "round-0", photos / "face0.jpg", photos / "noise.png",
                  "--json", "--min-age", "18", "--tta", "flip")
    assert out.returncode == 0, out.stderr[-2000:]
    by_file = {f["file"].rsplit("/", 1)[-1]: f for f in json.loads(out.stdout)}
    face = by_file["face0.jpg"]
    assert face["gate"] in ("allow", "deny") and face["gate_threshold"] == 0.5
    assert sum(face["age_probabilities"].values()) == pytest.approx(1, abs=1e-3)
    assert by_file["noise.png"]["sentence"] == "Undefined: no face found"


def test_an_ensemble_refuses_trials_of_other_rounds_or_splits(models, tmp_path, utkface_sample):
    from harness.runs.ensemble import EnsembleError, Member, build_round
    from harness.runs.trial import read_config

    keras, tflearn = _members(models)
    other_round = Member("t-r1", tflearn.run_dir, tflearn.config.model_copy(update={"round": 1}), "fcn")
    with pytest.raises(EnsembleError, match="different rounds.*t-r1 \\(tflearn fcn\\) is round 1"):
        build_round([keras, other_round], tmp_path / "a")
    smaller = make_trial(tmp_path / "other", utkface_sample.iloc[10:], tmp_path / "cache", "keras")
    other_split = Member("t-other", smaller, read_config(smaller), "fcn")
    with pytest.raises(EnsembleError, match="different splits.*t-other"):
        build_round([keras, other_split], tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


YEARS_SENTENCE = r"^a (male|female), about (\d+) \((\d+)\u2013(\d+)\)$"


def test_a_years_model_says_about_how_old_within_an_interval_and_gates_on_it(models, photos):
    import re

    for head in ("years_softmax", "years_regression"):
        result = predict("--model", models[head], photos / "face0.jpg", photos / "face1.jpg", photos / "noise.png",
                         "--json", "--min-age", "18")
        assert result.returncode == 0, result.stderr[-2000:]
        faces = json.loads(result.stdout)
        judged = [f for f in faces if f["undefined_reason"] is None]
        assert len(judged) >= 2, faces
        for face in judged:
            match = re.match(YEARS_SENTENCE, face["sentence"])
            assert match, face["sentence"]
            about, low, high = map(int, match.groups()[1:])
            assert about == int(np.floor(face["age"])) and [low, high] == face["age_interval"]   # whole years
            assert 0 <= low <= high <= 100 and match.group(1) == face["gender"]
            assert sum(face["age_probabilities"].values()) == pytest.approx(1, abs=1e-3)
            assert 0 <= face["adult_probability"] <= 1
            # allow exactly when P(age >= 18) reaches the threshold and the face is called 18 or over.
            assert (face["gate"] == "allow") == (face["adult_probability"] >= face["gate_threshold"]
                                                  and face["age"] >= 18), face
        [nothing] = [f for f in faces if f["file"].endswith("noise.png")]
        assert nothing["age"] is None and nothing["gate"] == "undefined"


def test_an_ensemble_of_years_models_averages_their_distributions(models, photos, tmp_path):
    import re

    import pandas as pd

    from harness.models import heads, metrics
    from harness.runs.ensemble import EnsembleError, Member, build_round
    from harness.runs.trial import age_residuals, read_config

    members = [Member(f"t-{h}", models[h], read_config(models[h]), h) for h in ("years_softmax", "years_regression")]
    result = build_round(members, tmp_path / "round-0")
    stored = [np.load(m.run_dir / "predictions.npz") for m in members]
    mean = np.mean([heads.readout(m.config.model.head, s["outputs"], age_residuals(m.run_dir, m.config.model.head))
                    for m, s in zip(members, stored)], axis=0)
    ages = pd.read_csv(members[0].run_dir / "labels.csv", dtype={"id": str}).set_index("id").loc[
        stored[0]["ids"].astype(str), "age"].to_numpy(float)
    expected = metrics.compute("years_softmax", mean, stored[0]["age"], stored[0]["gender"], years=ages)
    for key in ("age_mae", "age_cs5", "age_interval_coverage", "gender_accuracy", "age_exact_accuracy"):
        assert result[key] == pytest.approx(expected[key]), key
    out = predict("--model", tmp_path / "round-0", photos / "face0.jpg", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    [face] = json.loads(out.stdout)
    assert re.match(YEARS_SENTENCE, face["sentence"]), face["sentence"]
    group_model = Member("t-groups", models["keras"], read_config(models["keras"]), "fcn")
    with pytest.raises(EnsembleError, match="years models .* and age-group models .* cannot be averaged"):
        build_round([members[0], group_model], tmp_path / "mixed")


# --- issue 23 §2: ensemble members stay in step; a dead member is started again --------

def _chips(photos, names):
    from harness.data.faces import find_faces
    from harness.data.images import open_image

    return [find_faces(open_image(photos / name))[0].chip for name in names]


def test_a_killed_ensemble_member_is_started_again_and_every_answer_is_its_own(models, photos, tmp_path):
    import os
    import signal

    from harness.deploy.ensemble_members import EnsemblePredictor
    from harness.runs.ensemble import build_round

    build_round(_members(models), tmp_path / "round-0")
    chips = _chips(photos, ["face0.jpg", "face1.jpg", "face2.jpg"])
    predictor = EnsemblePredictor(tmp_path / "round-0")
    try:
        reference = [predictor.readouts([chip]) for chip in chips]
        assert not np.allclose(reference[0], reference[1])   # different faces, different answers
        for victim, chip, expected in zip((1, 0, 1), chips, reference):
            os.kill(predictor._members[victim].process.pid, signal.SIGKILL)   # a real death
            predictor._members[victim].process.join(timeout=30)
            assert predictor.health() is not None and "is not running" in predictor.health()
            np.testing.assert_allclose(predictor.readouts([chip]), expected, rtol=0, atol=1e-6)
            assert predictor.health() is None
    finally:
        predictor.close()


def test_a_member_answers_each_request_by_its_id_and_a_stale_answer_is_drained(models, tmp_path):
    from harness.deploy.ensemble_members import Member
    from harness.deploy.predictors import FrameworkPredictor, model_batches

    local = FrameworkPredictor(models["keras"])
    rng = np.random.default_rng(0)
    chips = [Image.fromarray(rng.integers(0, 256, (150, 150, 3), dtype=np.uint8)) for _ in range(2)]
    batches = [model_batches([chip], local.preprocessing) for chip in chips]
    member = Member(0, models["keras"])
    member.start()
    try:
        member.send(1, batches[0])    # an answer nobody reads (its request failed in another member)
        member.send(2, batches[1])
        status, answer = member.answer(2)
        assert status == "ok"
        np.testing.assert_allclose(answer, local.readouts_of(batches[1]), atol=1e-6)
        assert not np.allclose(answer, local.readouts_of(batches[0]))
    finally:
        member.stop()


def test_a_member_that_cannot_start_again_makes_healthz_fail_without_server_paths(models, photos, tmp_path):
    import asyncio
    import os
    import signal

    import httpx

    from harness.deploy.ensemble_members import EnsemblePredictor
    from harness.deploy.serve import create_app
    from harness.runs.ensemble import build_round

    build_round(_members(models), tmp_path / "round-0")
    predictor = EnsemblePredictor(tmp_path / "round-0")
    app = create_app(predictor)

    async def get(path):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
            return await client.get(path)

    try:
        assert asyncio.run(get("/healthz")).status_code == 200
        member = predictor._members[1]
        saved = sorted(p for p in member.run_dir.iterdir() if p.name.startswith("model"))
        assert saved, "the TFLearn member has no saved model files"
        hidden = [p.rename(p.with_name("hidden-" + p.name)) for p in saved]
        os.kill(member.process.pid, signal.SIGKILL)
        member.process.join(timeout=30)
        with pytest.raises(ValueError, match="member 1"):
            predictor.readouts(_chips(photos, ["face0.jpg"]))
        answer = asyncio.run(get("/healthz"))
        assert answer.status_code == 503 and answer.json()["status"] == "failing"
        assert "member 1" in answer.json()["error"] and str(tmp_path) not in answer.text
        for path in hidden:
            path.rename(path.with_name(path.name.removeprefix("hidden-")))
        predictor.readouts(_chips(photos, ["face0.jpg"]))   # started again
        assert asyncio.run(get("/healthz")).status_code == 200
    finally:
        app.state.batcher.close()   # its network thread, which would outlive the test in this process
        app.state.pool.shutdown()
        predictor.close()


def test_a_predict_log_that_is_a_symlink_is_never_written_through(models, photos, tmp_path):
    """Issue 23 §17: the file a planted predict-log.txt points at stays as it was."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(models["keras"], run, symlinks=True)
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me\n")
    (run / "predict-log.txt").unlink(missing_ok=True)
    (run / "predict-log.txt").symlink_to(precious)
    out = predict("--model", run, photos / "face0.jpg")
    assert out.returncode == 0, out.stderr[-2000:]
    assert precious.read_text() == "keep me\n" and (run / "predict-log.txt").is_symlink()


def test_a_csv_path_that_would_replace_a_photo_or_cannot_be_written_is_refused_first(models, photos, tmp_path):
    """Issue 23 §6: checked before any photo is classified; the photo is left as it was."""
    import shutil

    mine = tmp_path / "photos"
    shutil.copytree(photos, mine)
    before = (mine / "face0.jpg").read_bytes()
    for target, message in ((mine / "face0.jpg", "it is one of the photos to classify"),
                            (mine, "a directory; give a file name"),
                            (tmp_path / "missing" / "out.csv", "does not exist")):
        out = predict("--model", models["keras"], mine, "--csv", target)
        assert out.returncode == 2 and message in out.stderr, (target, out.stderr)
        assert out.stdout == ""   # refused before the first photo
    assert (mine / "face0.jpg").read_bytes() == before


# --- issue 23: a years model's sentence, group and gate follow one rounding rule -----------

class _FixedReadouts:
    """A predictor whose every face gets this readout: the rounding under test is
    classify's and the gate's, not a model's."""

    def __init__(self, readout):
        self.readout = np.asarray(readout, dtype=np.float64)

    def readouts(self, chips):
        return np.repeat(self.readout[None, :], len(chips), axis=0)


def _years_readout(mass: dict[int, float]) -> np.ndarray:
    from harness.models.heads import N_YEARS

    years = np.zeros(N_YEARS)
    for year, p in mass.items():
        years[year] = p
    return np.concatenate([years, [0.9, 0.1]])


@pytest.mark.parametrize("mass, told", [
    ({17: 0.4, 18: 0.6}, 17),     # 17.6: "about 18" was denied at 18 before
    ({18: 1.0}, 18),
    ({45: 0.4, 46: 0.6}, 45),     # 45.6: "about 46" was labelled (38, 43) before
    ({22: 0.5, 23: 0.5}, 22),     # 22.5: on the cut between (15, 20) and (25, 32)
    ({35: 0.3, 36: 0.7}, 35),
])
def test_a_years_faces_sentence_group_and_gate_agree(photos, mass, told):
    import re

    from harness.data.images import open_image
    from harness.data.labels import age_label, age_to_group
    from harness.deploy.classify import classify_image

    (face,) = classify_image(_FixedReadouts(_years_readout(mass)), "face0.jpg", open_image(photos / "face0.jpg"),
                             None, 18, 0.5)
    said = int(re.search(r"about (\d+)", face.sentence).group(1))
    assert said == told, face.sentence
    assert face.age_group == age_label(age_to_group(said)), (face.sentence, face.age_group)
    assert face.gate == ("allow" if said >= 18 and face.adult_probability >= 0.5 else "deny"), \
        (face.sentence, face.gate, face.adult_probability)
