"""harness serve: the API against a real server process, and the door page in a real browser."""
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from harness.deploy.door import VERDICTS
from tests.helpers.browser import chromium_executable

TOKEN = "door-test-token-0123456789"
ADMIN = "door-admin-token-9876543210"
SCREENSHOTS_ENV = "HARNESS_SCREENSHOTS"   # keep the browser tests' screenshots here


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``harness serve`` in a process of its own, in an empty working and temporary folder."""

    def __init__(self, model: Path, scratch: Path, *options: str):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cwd, self.tmp = scratch / "cwd", scratch / "tmp"
        self.cwd.mkdir(parents=True)
        self.tmp.mkdir()
        self.log = open(scratch / "server.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "harness", "serve", "--model", str(model), "--port", str(self.port), *options],
            cwd=self.cwd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "TMPDIR": str(self.tmp), "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited: {(scratch / 'server.log').read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise AssertionError("the server did not answer /healthz within 120 s")

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)
        self.log.close()


def auth(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def server(door_exports, tmp_path_factory):
    # A test model is too small to be fit for a door: served as a demo (the page says so).
    running = Server(door_exports["keras"], tmp_path_factory.mktemp("server"), "--token", TOKEN,
                     "--max-upload-mb", "1", "--max-megapixels", "2", "--allow-unfit", "--admin-token", ADMIN)
    yield running
    running.stop()


def upload(server, path_or_bytes, route="/v1/predict", name="photo.jpg", headers=None, **params):
    data = path_or_bytes.read_bytes() if isinstance(path_or_bytes, Path) else path_or_bytes
    return httpx.post(server.url + route, files={"image": (name, data, "application/octet-stream")},
                      headers=auth() if headers is None else headers, params=params, timeout=120)


def test_a_face_gets_its_age_group_and_gender(server, face_photo):
    response = upload(server, face_photo)
    assert response.status_code == 200, response.text
    (face,) = response.json()
    assert face["file"] == "photo.jpg" and face["face"] == 0 and face["undefined_reason"] is None
    assert face["age_group"] in face["age_probabilities"] and face["gender"] in ("male", "female")
    assert face["sentence"].startswith(f"a {face['gender']} ")
    assert sum(face["age_probabilities"].values()) == pytest.approx(1, abs=1e-3)
    # The same answer as `harness predict --json` on the same photo and model.
    cli = subprocess.run([sys.executable, "-m", "harness", "predict", "--model", str(server_model(server)),
                          str(face_photo), "--json"], capture_output=True, text=True, timeout=300)
    (expected,) = json.loads(cli.stdout)
    assert {k: v for k, v in face.items() if k != "file"} == {k: v for k, v in expected.items() if k != "file"}


def server_model(server) -> Path:
    return Path(server.process.args[server.process.args.index("--model") + 1])


def test_the_gate_answers_one_of_three_verdicts_with_the_threshold_used(server, face_photo):
    response = upload(server, face_photo, "/v1/gate")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["verdict"] in ("allow", "ask_for_id", "deny") and answer["min_age"] == 18 and answer["why"]
    assert answer["threshold"] == 0.5 and answer["threshold_source"] == "default"
    p = answer["adult_probability"]
    assert 0 <= p <= 1
    # Sure on either side of the threshold, or borderline (within 0.1 of it: ask for ID).
    assert answer["verdict"] == ("ask_for_id" if abs(p - 0.5) < 0.1 else answer["faces"][0]["gate"]) or (
        answer["verdict"] == "ask_for_id" and answer["faces"][0]["gate"] == "deny" and p >= 0.5)


def _frame_jpeg(frame: Image.Image) -> bytes:
    """A camera frame as the page sends it: 480 px wide, JPEG."""
    out = io.BytesIO()
    frame.resize((480, 360), Image.Resampling.BILINEAR).save(out, "JPEG", quality=85)
    return out.getvalue()


def _live_check(server, frames, headers=None):
    return httpx.post(server.url + "/v1/gate", headers=auth() if headers is None else headers, timeout=120,
                      files=[("frame", (f"frame{n}.jpg", _frame_jpeg(f), "image/jpeg")) for n, f in enumerate(frames)])


def test_a_live_check_is_a_run_of_frames_and_only_a_blink_passes_it(server, face_photo):
    from harness.deploy.liveness.sequences import blink_sequence, still_sequence

    face = Image.open(face_photo)
    blinking = _live_check(server, blink_sequence(face, np.random.default_rng(7)))
    assert blinking.status_code == 200, blinking.text
    seen = blinking.json()
    assert seen["liveness"]["state"] == "blink" and seen["liveness"]["passed"] is True
    assert seen["liveness"]["frames"] == 20 and 1 <= seen["frame"] <= 20 and seen["verdict"] in VERDICTS
    held = _live_check(server, still_sequence(face, np.random.default_rng(0))).json()
    assert held["liveness"]["state"] in ("no_blink", "too_few_faces") and held["verdict"] != "allow"
    assert "blink" in held["liveness"]["why"] or "look at the camera" in held["liveness"]["why"]
    one = upload(server, face_photo, "/v1/gate").json()
    assert one["liveness"]["state"] == "not_checked" and one["verdict"] != "allow" and one["frame"] is None
    assert httpx.get(server.url + "/v1/info", headers=auth(), timeout=10).json()["liveness"] == "blink"


def test_a_live_checks_bad_frame_or_too_many_frames_are_refused_by_name(server, face_photo):
    good = face_photo.read_bytes()
    bad = httpx.post(server.url + "/v1/gate", headers=auth(), timeout=60, files=[
        ("frame", ("a.jpg", good)), ("frame", ("b.jpg", good)), ("frame", ("c.jpg", b"not an image at all"))])
    assert bad.status_code == 415 and "camera frame 3" in bad.json()["error"], bad.text
    many = httpx.post(server.url + "/v1/gate", headers=auth(), timeout=60,
                      files=[("frame", (f"{n}.jpg", good)) for n in range(41)])
    assert many.status_code == 422 and "at most 40 frames" in many.json()["error"], many.text
    assert upload(server, face_photo, "/v1/gate").status_code == 200   # and the server goes on


def test_the_minimum_age_is_the_operators_and_a_request_changes_it_only_with_the_admin_token(server, face_photo):
    refused = upload(server, face_photo, "/v1/gate", min_age=16)
    assert refused.status_code == 403 and "only with the admin token" in refused.json()["error"]
    assert upload(server, face_photo, "/v1/predict", min_age=16).status_code == 403
    wrong = upload(server, face_photo, "/v1/gate", headers={**auth(), "X-Admin-Token": "x" * len(ADMIN)}, min_age=16)
    assert wrong.status_code == 403
    assert upload(server, face_photo, "/v1/gate", min_age=18).status_code == 200   # the server's own age
    # With the admin token the age is the request's: at 100 nobody is let in.
    answer = upload(server, face_photo, "/v1/gate", headers={**auth(), "X-Admin-Token": ADMIN}, min_age=100).json()
    assert answer["min_age"] == 100 and answer["verdict"] in ("deny", "ask_for_id")


def test_info_says_the_model_is_a_demo_with_its_measured_figures_in_words(server):
    info = httpx.get(server.url + "/v1/info", headers=auth(), timeout=10).json()
    assert info["demo"] is True and info["min_age_fixed"] is True and info["photos_stored"] is False
    assert info["door"]["fit"] is False and "no threshold calibrated" in info["door"]["problems"][0]
    assert info["door"]["words"] == "not measured on test faces at 18"


def test_noise_is_no_face_retake(server):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(buffer, "PNG")
    response = upload(server, buffer.getvalue(), "/v1/gate", name="noise.png")
    assert response.status_code == 200
    assert response.json()["verdict"] == "retake" and response.json()["why"].startswith("no face")


def _png(width, height) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 120, 120)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("case, status, message", [
    ("over the size cap", 413, "over the limit of 1,048,576 bytes"),
    ("over the pixel cap", 413, "too large to decode safely"),
    ("not an image", 415, "not an image in one of the formats taken"),
    ("truncated", 422, "image file is truncated"),
    ("empty", 422, "empty file"),
    ("no image field", 422, "send it as the file field 'image'"),
    ("a form without a file", 415, "'application/x-www-form-urlencoded' is not taken"),
    ("malformed form", 422, "multipart"),
    ("min_age out of range", 422, "min_age: a minimum age must be more than 0 and at most 100 years"),
])
def test_each_bad_request_gets_its_status_and_message_and_the_server_goes_on(server, face_photo, case, status,
                                                                             message):
    good = face_photo.read_bytes()
    if case == "over the size cap":
        response = upload(server, os.urandom(1_200_000))
    elif case == "over the pixel cap":
        response = upload(server, _png(2000, 1500), name="huge.png")     # 3 MP, under 1 MB as a file
    elif case == "not an image":
        response = upload(server, b"%PDF-1.4 not a photo" * 20, name="doc.pdf")
    elif case == "truncated":
        response = upload(server, good[:len(good) // 3])
    elif case == "empty":
        response = upload(server, b"")
    elif case == "no image field":
        response = httpx.post(server.url + "/v1/predict", files={"note": (None, "hello")}, headers=auth(),
                              timeout=30)
    elif case == "a form without a file":
        response = httpx.post(server.url + "/v1/predict", data={"note": "hello"}, headers=auth(), timeout=30)
    elif case == "malformed form":
        response = httpx.post(server.url + "/v1/predict", content=b"--x\r\nnonsense",
                              headers={**auth(), "Content-Type": "multipart/form-data"}, timeout=30)
    else:
        response = upload(server, good, "/v1/gate", headers={**auth(), "X-Admin-Token": ADMIN}, min_age=-3)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
    assert upload(server, good).status_code == 200


def test_a_token_is_required_and_checked(server, face_photo):
    assert upload(server, face_photo, headers={}).status_code == 401
    wrong = upload(server, face_photo, headers=auth("x" * len(TOKEN)))
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert httpx.get(server.url + "/v1/info", timeout=10).status_code == 401
    assert httpx.get(server.url + "/v1/info", headers=auth(), timeout=10).json()["min_age"] == 18
    assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200   # probes need no token


def test_the_page_is_an_installable_app(server):
    manifest = httpx.get(server.url + "/static/manifest.webmanifest", timeout=10)
    assert manifest.status_code == 200 and manifest.headers["content-type"].startswith("application/manifest+json")
    for icon in manifest.json()["icons"]:
        got = httpx.get(server.url + icon["src"], timeout=10)
        assert got.status_code == 200 and got.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(got.content)).size == tuple(int(v) for v in icon["sizes"].split("x"))
    worker = httpx.get(server.url + "/sw.js", timeout=10)
    assert worker.status_code == 200 and "javascript" in worker.headers["content-type"]
    assert 'url.pathname.startsWith("/v1/")' in worker.text   # the API is never answered from the cache


def test_security_headers_and_no_cors(server):
    page = httpx.get(server.url + "/", headers={"Origin": "https://elsewhere.example"}, timeout=10)
    assert page.status_code == 200 and "Door check" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["x-frame-options"] == "DENY"
    assert "access-control-allow-origin" not in page.headers
    assert "server" not in page.headers
    # Everything the page loads comes from this server.
    for asset in ("/static/app.js", "/static/app.css"):
        assert httpx.get(server.url + asset, timeout=10).status_code == 200
    assert "http" not in page.text.replace("http-equiv", "")
    assert httpx.get(server.url + "/static/..%2Fserve.py", timeout=10).status_code == 404


def test_health_answers_while_photos_wait_and_nothing_is_written(server, face_photo):
    big = Image.open(face_photo).resize((1400, 1400))
    buffer = io.BytesIO()
    big.save(buffer, "JPEG", quality=90)
    statuses = []
    threads = [threading.Thread(target=lambda: statuses.append(upload(server, buffer.getvalue()).status_code))
               for _ in range(6)]
    for thread in threads:
        thread.start()
    health = httpx.get(server.url + "/healthz", timeout=10)
    assert health.status_code == 200
    for thread in threads:
        thread.join()
    assert statuses == [200] * 6
    # Uploads are neither stored nor spooled: the server's folders stay empty.
    assert list(server.cwd.iterdir()) == [] and list(server.tmp.iterdir()) == []


def test_concurrent_photos_each_get_their_own_faces_and_the_network_counts_them(server, photos):
    from concurrent.futures import ThreadPoolExecutor

    files = [photos / name for name in ("face0.jpg", "face1.jpg", "face2.jpg", "gray.png", "rgba.png", "noise.png")]
    alone = {f.name: upload(server, f).json() for f in files}
    before = httpx.get(server.url + "/healthz", timeout=10).json()["network"]
    with ThreadPoolExecutor(len(files) * 2) as pool:   # every photo twice, all at once
        together = list(pool.map(lambda f: (f.name, upload(server, f)), files * 2))
    after = httpx.get(server.url + "/healthz", timeout=10).json()["network"]
    for name, response in together:
        assert response.status_code == 200, response.text
        for face, expected in zip(response.json(), alone[name], strict=True):
            assert face["sentence"] == expected["sentence"] and face["box"] == expected["box"], name
            for group, p in face["age_probabilities"].items():
                assert p == pytest.approx(expected["age_probabilities"][group], abs=1e-5), name
    faces = 2 * sum(len([f for f in alone[n] if f["age_probabilities"]]) for n in alone)
    assert after["faces"] - before["faces"] == faces and after["calls"] - before["calls"] <= faces
    assert "detect;dur=" in together[0][1].headers["server-timing"]


def test_listening_beyond_this_machine_needs_a_token(door_exports):
    result = subprocess.run([sys.executable, "-m", "harness", "serve", "--model", str(door_exports["keras"]),
                             "--host", "0.0.0.0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "needs --token" in result.stderr
    short = subprocess.run([sys.executable, "-m", "harness", "serve", "--model", str(door_exports["keras"]),
                            "--token", "short"], capture_output=True, text=True, timeout=120)
    assert short.returncode == 2 and "at least 16 characters" in short.stderr


def test_an_unfit_model_is_refused_at_start_naming_its_measured_figures(door_runs, gated_run):
    uncalibrated = subprocess.run([sys.executable, "-m", "harness", "serve", "--model", str(door_runs["keras"]),
                                   "--port", str(_free_port())], capture_output=True, text=True, timeout=300)
    assert uncalibrated.returncode == 2 and "is not fit for the door at 18" in uncalibrated.stderr
    assert "no threshold calibrated on validation faces" in uncalibrated.stderr and "--allow-unfit" in uncalibrated.stderr
    run, gate = gated_run
    too_many = subprocess.run([sys.executable, "-m", "harness", "serve", "--model", str(run),
                               "--port", str(_free_port())], capture_output=True, text=True, timeout=300)
    assert too_many.returncode == 2, too_many.stderr[-2000:]
    assert (f"let in {gate['test_false_accept_rate']:.1%} of its {gate['test_minors']} test faces under 18, "
            "above the limit of 5.0%") in too_many.stderr
    assert "Traceback" not in too_many.stderr


def test_a_fit_model_is_served_with_its_measured_figures_and_no_demo_banner(gated_run, face_photo, tmp_path):
    run, gate = gated_run
    running = Server(run, tmp_path, "--max-false-accept", "1.0", "--liveness", "off", "--borderline", "auto")
    try:
        info = httpx.get(running.url + "/v1/info", timeout=10).json()
        assert info["demo"] is False and info["door"]["fit"] is True and info["liveness"] == "off"
        # The band calibrated with the gate, and what it did on the test faces, in words.
        assert info["borderline"] == gate["borderline"]["margin"]
        assert info["borderline_source"].startswith("calibrated: the 10% of validation faces nearest the threshold")
        assert info["door"]["false_accept_rate"] == gate["test_false_accept_rate"]
        minors, adults = gate["test_minors"], gate["test_adults"]
        assert info["door"]["words"].startswith("lets in about ") and (
            f"measured on {minors + adults} test faces ({minors} under 18)") in info["door"]["words"]
        assert info["gate_threshold"] == gate["threshold"] and info["gate_threshold_source"].startswith("calibrated")
        answer = upload(running, face_photo, "/v1/gate", headers={}).json()
        assert answer["verdict"] in VERDICTS and answer["threshold"] == gate["threshold"]
        # Without liveness a single photo decides as the model does (here: its face's own gate).
        face = answer["faces"][0]
        assert answer["liveness"]["state"] == "off"
        if face["gate"] == "allow" and abs(face["adult_probability"] - gate["threshold"]) >= info["borderline"]:
            assert answer["verdict"] == "allow"
    finally:
        running.stop()


def test_a_calibrated_borderline_band_is_refused_for_a_model_without_one(door_runs):
    refused = subprocess.run([sys.executable, "-m", "harness", "serve", "--model", str(door_runs["keras"]),
                              "--allow-unfit", "--borderline", "auto", "--port", str(_free_port())],
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "has no calibrated borderline band" in refused.stderr, refused.stderr[-2000:]
    assert "give --borderline MARGIN" in refused.stderr and "Traceback" not in refused.stderr


def test_a_trained_run_directory_is_served_too(door_runs, face_photo, tmp_path):
    """The framework model itself (TFLearn here), without exporting it first."""
    running = Server(door_runs["tflearn"], tmp_path, "--allow-unfit")
    try:
        response = upload(running, face_photo, "/v1/gate", headers={})
        assert response.status_code == 200, response.text
        assert response.json()["verdict"] in ("allow", "ask_for_id", "deny")
    finally:
        running.stop()


# --- the door page in a real browser -------------------------------------------------

PHONE = {"width": 390, "height": 844}


def _screenshots(tmp_path) -> Path:
    folder = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _y4m(frames, out: Path, fps: int = 10) -> Path:
    """A Y4M clip (what Chromium's fake camera plays, in a loop) of 640x480 RGB frames."""
    with open(out, "wb") as handle:
        handle.write(f"YUV4MPEG2 W640 H480 F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            ycbcr = np.asarray(frame.convert("YCbCr"))
            cb = np.asarray(Image.fromarray(ycbcr[:, :, 1]).resize((320, 240)))
            cr = np.asarray(Image.fromarray(ycbcr[:, :, 2]).resize((320, 240)))
            handle.write(b"FRAME\n" + ycbcr[:, :, 0].tobytes() + cb.tobytes() + cr.tobytes())
    return out


def _fake_camera_video(face_photo: Path, out: Path) -> Path:
    """A clip of the face in a 640x480 frame, still."""
    frame = Image.new("RGB", (640, 480), (200, 200, 195))
    frame.paste(Image.open(face_photo).convert("RGB").resize((360, 360)), (140, 60))
    return _y4m([frame] * 10, out)


def camera_page(playwright, origin: str, clip: Path):
    """(browser, page): Chromium at a phone's size whose camera plays ``clip``, allowed
    to use it on ``origin``."""
    browser = playwright.chromium.launch(executable_path=chromium_executable(), args=[
        "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={clip}"])
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    context.grant_permissions(["camera"], origin=origin)
    return browser, context.new_page()


# Selectors, not wait_for_function: that evaluates strings in the page, which the page's
# Content-Security-Policy (script-src 'self') rightly forbids.
def _verdict(page) -> tuple[str, str]:
    page.wait_for_selector(", ".join(f"#verdict[data-verdict={kind}]" for kind in VERDICTS + ("undefined",)),
                           state="attached", timeout=120_000)
    return page.get_attribute("#verdict", "data-verdict"), page.inner_text("#verdict-detail")


@pytest.mark.browser
def test_the_phone_page_judges_an_uploaded_photo(server, face_photo, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_executable(), args=["--no-sandbox"])
        page = browser.new_page(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
        errors = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(f"{server.url}/#token={TOKEN}")
        page.wait_for_selector("#model:has-text('export')")
        assert "token" not in page.url          # the token leaves the address bar at once
        page.set_input_files("#photo", str(face_photo))
        verdict, sentence = _verdict(page)
        assert verdict in ("allow", "ask_for_id", "deny"), page.inner_text("#error")
        assert " between " in sentence and "adult" in sentence
        assert page.locator("#faces li").count() == 1
        # A demo says so on the screen; the age is shown, not editable; photos are not stored.
        assert page.is_visible("#demo") and "DEMO — not for real checks" in page.inner_text("#demo")
        assert page.inner_text("#min-age") == "Minimum age 18:" and page.locator("input[type=number]").count() == 0
        assert "not stored" in page.inner_text("#privacy") and page.is_visible("#privacy")
        # Installable: a manifest with its icons, and a service worker that caches the shell, never /v1.
        assert page.evaluate("navigator.serviceWorker.ready.then((r) => r.active !== null)") is True
        cached = page.evaluate("caches.open('door-shell-v1').then((c) => c.keys())"
                               ".then((keys) => keys.map((r) => new URL(r.url).pathname))")
        assert {"/", "/static/app.js", "/static/icon-192.png"} <= set(cached)
        assert not any(path.startswith("/v1") for path in cached)
        assert page.evaluate("document.getElementById('view').width") > 0
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        page.screenshot(path=str(_screenshots(tmp_path) / "door_photo_390.png"), full_page=True)
        assert not errors
        browser.close()


@pytest.mark.browser
def test_the_phone_page_judges_the_live_camera(server, face_photo, tmp_path):
    from playwright.sync_api import sync_playwright

    clip = _fake_camera_video(face_photo, tmp_path / "face.y4m")
    with sync_playwright() as playwright:
        browser, page = camera_page(playwright, server.url, clip)
        page.goto(f"{server.url}/#token={TOKEN}")
        page.click("#camera")
        deadline = time.monotonic() + 30
        while page.evaluate("document.getElementById('video').videoWidth") != 640:
            assert time.monotonic() < deadline, "the fake camera did not start"
            page.wait_for_timeout(200)
        verdict, sentence = _verdict(page)    # a live check: 3 s of frames
        assert verdict in ("allow", "ask_for_id", "deny"), page.inner_text("#error") or sentence
        assert " between " in sentence
        page.screenshot(path=str(_screenshots(tmp_path) / "door_camera_390.png"), full_page=True)
        page.click("#stop")
        assert page.is_hidden("#live")
        browser.close()


# --- issue 23: serve's options are checked before the model loads -------------------------

@pytest.mark.parametrize("options,message", [
    (["--port", "70000"], "a TCP port is between 1 and 65535, got 70000"),
    (["--port", "0"], "a TCP port is between 1 and 65535, got 0"),
    (["--min-age", "0"], "a minimum age must be more than 0 and at most 100 years, got 0"),
    (["--min-age", "120"], "a minimum age must be more than 0 and at most 100 years, got 120"),
    (["--min-age", "150"], "a minimum age must be more than 0 and at most 100 years, got 150"),
    (["--max-upload-mb", "inf"], "must be a finite positive number, got inf"),
    (["--max-upload-mb", "nan"], "must be a finite positive number, got nan"),
    (["--max-megapixels", "inf"], "must be a finite positive number, got inf"),
    (["--ssl-keyfile", "key.pem"], "--ssl-keyfile needs --ssl-certfile"),
    (["--ssl-certfile", "missing.pem"], "--ssl-certfile missing.pem: no such file"),
    (["--ssl-certfile", "not-pem.txt"], "not a PEM certificate"),
    (["--token", " " * 16], "printable characters with no space at either end"),
    (["--header-timeout", "inf"], "must be a finite positive number, got inf"),
    (["--max-buffered-mb", "4"], "--max-buffered-mb 4 is less than --max-upload-mb 10"),
    (["--audit-log", "."], "--audit-log .: a folder; give a file path"),
    (["--borderline", "0.6"], "--borderline 0.6: an adult-probability margin from 0 to below 0.5"),
    (["--token", "t" * 20, "--admin-token", "t" * 20], "--admin-token must differ from --token"),
])
def test_bad_serve_options_are_refused_before_the_model_loads(tmp_path, options, message):
    (tmp_path / "key.pem").write_text("key")
    (tmp_path / "not-pem.txt").write_text("hello")
    result = subprocess.run([sys.executable, "-m", "harness", "serve", "--model", str(tmp_path / "no-model"),
                             *options], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert result.returncode == 2, result.stdout
    assert message in result.stderr and "Traceback" not in result.stderr
    assert "no such run directory" not in result.stderr   # refused before the model was looked for


def test_an_ipv6_loopback_host_in_brackets_is_served(door_exports, tmp_path):
    port = _free_port()
    log = open(tmp_path / "server.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "harness", "serve", "--model", str(door_exports["keras"]),
                                "--host", "[::1]", "--port", str(port), "--allow-unfit"], stdout=log,
                               stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        deadline, answer = time.monotonic() + 120, None
        while time.monotonic() < deadline and answer is None:
            assert process.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                answer = httpx.get(f"http://[::1]:{port}/healthz", timeout=2)
            except httpx.HTTPError:
                time.sleep(0.3)
        assert answer is not None and answer.status_code == 200
        assert f"on http://[::1]:{port}/" in (tmp_path / "server.log").read_text()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


@pytest.mark.browser
def test_lan_prints_a_url_and_qr_code_with_a_new_token_over_https_with_a_reused_certificate(door_exports,
                                                                                          tmp_path):
    """``--lan ADDRESS`` (127.0.0.1 here; a bare ``--lan`` finds the LAN address): the URL it
    prints opens the page and the API over HTTPS with the token it made, and its QR code
    is that URL; a second start reuses the certificate."""
    from harness.deploy.serve.lan import qr_text

    config = tmp_path / "config"
    env = {**os.environ, "XDG_CONFIG_HOME": str(config), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    port = _free_port()
    out = open(tmp_path / "lan.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "harness", "serve", "--model", str(door_exports["keras"]),
                                "--lan", "127.0.0.1", "--port", str(port), "--allow-unfit"], stdout=out,
                               stderr=subprocess.STDOUT, start_new_session=True, env=env)
    cert = config / "agegender-harness" / "tls" / "127.0.0.1.pem"
    try:
        deadline, url = time.monotonic() + 120, None
        while time.monotonic() < deadline and url is None:
            assert process.poll() is None, (tmp_path / "lan.log").read_text()[-3000:]
            for line in (tmp_path / "lan.log").read_text().splitlines():
                if line.startswith("open on the phone (same network): "):
                    url = line.split(": ", 1)[1]
            time.sleep(0.3)
        assert url and url.startswith(f"https://127.0.0.1:{port}/#token=")
        token = url.split("#token=", 1)[1]
        assert len(token) >= 24
        assert qr_text(url) in (tmp_path / "lan.log").read_text()
        assert "accept it" in (tmp_path / "lan.log").read_text()
        import ssl

        trusted = ssl.create_default_context(cafile=str(cert))   # the phone accepts it once; here we trust it
        page = httpx.get(url.split("#")[0], verify=trusted, timeout=10)
        assert page.status_code == 200 and "Door check" in page.text
        assert httpx.get(url.split("#")[0] + "v1/info", verify=trusted, timeout=10).status_code == 401
        info = httpx.get(url.split("#")[0] + "v1/info", verify=trusted, headers=auth(token), timeout=10)
        assert info.status_code == 200 and info.json()["min_age"] == 18
        assert oct(os.stat(cert.with_suffix(".key")).st_mode & 0o777) == "0o600"
        # The phone: the URL as printed opens the page, which reads its token from the
        # fragment and reaches the API with it (the certificate warning accepted once).
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_executable(), args=["--no-sandbox"])
            context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, ignore_https_errors=True)
            page = context.new_page()
            page.goto(url)
            page.wait_for_selector("#model:has-text('export')", timeout=30_000)
            assert "token" not in page.url and page.is_hidden("#error")
            assert page.inner_text("#min-age") == "Minimum age 18:"
            browser.close()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        out.close()
    made = cert.stat().st_mtime_ns
    from harness.deploy.serve.lan import self_signed

    assert self_signed("127.0.0.1", config / "agegender-harness")[0].stat().st_mtime_ns == made   # reused
