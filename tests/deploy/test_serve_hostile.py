"""harness serve under hostile clients (issue 23 §10–13, §16 and its serve bullets): real
sockets against a real server process; what is held is read from the server's /proc."""
from __future__ import annotations

import io
import os
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.deploy.test_serve import TOKEN, Server, auth
from tests.helpers.processes import wait_for

HEADER_TIMEOUT, BODY_TIMEOUT, CONNECTIONS = 1.5, 3, 60


@pytest.fixture(scope="module")
def hostile(door_exports, tmp_path_factory):
    running = Server(door_exports["keras"], tmp_path_factory.mktemp("hostile"), "--token", TOKEN,
                     "--max-upload-mb", "2", "--max-buffered-mb", "8", "--queue", "100", "--allow-unfit",
                     "--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT),
                     "--max-connections", str(CONNECTIONS))
    yield running
    running.stop()


def _descriptors(server) -> int:
    return len(os.listdir(f"/proc/{server.process.pid}/fd"))


def _rss_mb(server) -> float:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=30)


def _head(server, length: int, content_type="application/octet-stream", path="/v1/predict") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n").encode()


def _closed_by_server(sock: socket.socket, within: float) -> bytes | None:
    """What the server sent before closing ``sock`` within ``within`` seconds; None if it stays open."""
    sock.settimeout(within)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (TimeoutError, socket.timeout):
        return None
    except ConnectionResetError:
        pass
    return received


def _healthz(server) -> dict:
    answer = httpx.get(server.url + "/healthz", timeout=10)
    assert answer.status_code == 200
    return answer.json()


def _big_photo(face_photo) -> bytes:
    buffer = io.BytesIO()
    Image.open(face_photo).resize((1400, 1400)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


# --- §10: multipart ---------------------------------------------------------------------

def test_a_form_of_countless_empty_parts_is_refused_at_the_part_cap(hostile, face_photo):
    part = b'--B\r\nContent-Disposition: form-data; name="x"\r\n\r\n\r\n'
    body = part * (2_000_000 // len(part)) + b"--B--\r\n"   # 40,000 parts, just under the upload cap
    answer = httpx.post(hostile.url + "/v1/predict", content=body, timeout=60,
                        headers={**auth(), "Content-Type": "multipart/form-data; boundary=B"})
    assert answer.status_code == 422 and "more than 48 parts" in answer.json()["error"]
    assert httpx.post(hostile.url + "/v1/predict", files={"image": ("f.jpg", face_photo.read_bytes())},
                      headers=auth(), timeout=60).status_code == 200


def test_the_form_is_read_up_to_its_first_file_only(hostile, face_photo):
    photo = face_photo.read_bytes()
    body = (b'--B\r\nContent-Disposition: form-data; name="image"; filename="f.jpg"\r\n\r\n' + photo
            + b"\r\n--B\r\n" + b"\x00 not a part at all " * 1000)   # a tail no parser would take
    answer = httpx.post(hostile.url + "/v1/predict", content=body, timeout=60,
                        headers={**auth(), "Content-Type": "multipart/form-data; boundary=B"})
    assert answer.status_code == 200, answer.text
    assert answer.json()[0]["file"] == "f.jpg"


# --- §11: deadlines, connection cap, header size -----------------------------------------

def test_bare_connects_partial_headers_and_partial_bodies_are_closed(hostile):
    baseline = _descriptors(hostile)
    bare = [_connect(hostile) for _ in range(10)]
    heads = [_connect(hostile) for _ in range(10)]
    for sock in heads:
        sock.sendall(f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:{hostile.port}\r\n".encode())
    bodies = [_connect(hostile) for _ in range(10)]
    for sock in bodies:
        sock.sendall(_head(hostile, 100_000) + b"\xff\xd8" + b"\x00" * 1000)
    for sock in bare + heads:
        assert _closed_by_server(sock, HEADER_TIMEOUT + 10) is not None, "a connection without headers stays open"
    for sock in bodies:
        answer = _closed_by_server(sock, BODY_TIMEOUT + 10)
        assert answer is not None and answer.startswith(b"HTTP/1.1 408"), answer
        assert b"did not arrive within 3 s" in answer
    for sock in bare + heads + bodies:
        sock.close()
    wait_for(lambda: _descriptors(hostile) <= baseline + 2, timeout=30, what="the server to let go of them")
    assert _healthz(hostile)["status"] == "ok"


def test_connections_beyond_the_cap_are_closed_at_once(hostile):
    held = [_connect(hostile) for _ in range(CONNECTIONS + 20)]
    try:
        closed = sum(_closed_by_server(sock, 0.5) is not None for sock in held[CONNECTIONS:])
        assert closed >= 15, f"only {closed} of the 20 connections over the cap were closed"
        assert _descriptors(hostile) < CONNECTIONS + 40
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: httpx.get(hostile.url + "/healthz", timeout=5).status_code == 200, timeout=30,
             what="the server to answer again")


def test_a_header_over_32_kb_is_refused(hostile):
    sock = _connect(hostile)
    sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{hostile.port}\r\nX-Big: ".encode()
                 + b"a" * 1_000_000 + b"\r\n\r\n")
    answer = _closed_by_server(sock, 10)
    sock.close()
    assert answer is not None and answer.startswith(b"HTTP/1.1 400"), answer[:200]


# --- §12: uploads are counted before they are buffered -----------------------------------

def test_unfinished_uploads_beyond_the_byte_budget_are_refused_before_they_are_read(hostile):
    before = _rss_mb(hostile)
    socks, refused = [], 0
    for _ in range(40):   # 40 uploads of 1.9 MB against a budget of 8 MB
        sock = _connect(hostile)
        sock.sendall(_head(hostile, 2_000_000))
        socks.append(sock)
    for sock in socks:
        sock.settimeout(0.3)
        try:
            sock.sendall(b"\x00" * 1_900_000)
        except OSError:
            pass
    for sock in socks:
        answer = _closed_by_server(sock, 0.5)
        refused += bool(answer and answer.startswith(b"HTTP/1.1 503"))
    grown = _rss_mb(hostile) - before
    for sock in socks:
        sock.close()
    assert refused >= 35, f"only {refused} of 40 uploads over the budget got 503"
    assert grown < 40, f"the server grew by {grown:.0f} MB holding 40 unfinished uploads"
    wait_for(lambda: _healthz(hostile)["waiting"] == 0, timeout=BODY_TIMEOUT + 20, what="the uploads to end")


# --- §13: abandoned requests -------------------------------------------------------------

def test_photos_whose_clients_left_are_not_inferred(hostile, face_photo):
    photo = _big_photo(face_photo)
    skipped_before = _healthz(hostile)["abandoned"]
    for _ in range(20):
        sock = _connect(hostile)
        sock.sendall(_head(hostile, len(photo)) + photo)
        sock.close()
    wait_for(lambda: _healthz(hostile)["waiting"] == 0, timeout=120, what="the queue to empty")
    skipped = _healthz(hostile)["abandoned"] - skipped_before
    assert skipped >= 10, f"only {skipped} of 20 abandoned photos were skipped"
    assert httpx.post(hostile.url + "/v1/predict", content=face_photo.read_bytes(), headers=auth(),
                      timeout=60).status_code == 200


# --- §16: the Host header ----------------------------------------------------------------

def test_a_host_header_of_another_name_is_refused(hostile):
    for path in ("/", "/v1/predict/", "/healthz"):
        answer = httpx.get(hostile.url + path, headers={"Host": "evil.example"}, timeout=10,
                           follow_redirects=False)
        assert answer.status_code == 421 and "Host" in answer.json()["error"]
        assert "evil.example" not in answer.headers.get("location", "")
    assert httpx.get(hostile.url + "/healthz", headers={"Host": f"localhost:{hostile.port}"},
                     timeout=10).status_code == 200


@pytest.mark.parametrize("bound, host, allowed", [
    ("127.0.0.1", "127.0.0.1:8000", True),
    ("127.0.0.1", "localhost", True),
    ("127.0.0.1", "[::1]:8000", True),
    ("127.0.0.1", "rebind.attacker.example", False),
    ("127.0.0.1", "192.168.1.20:8000", False),
    ("0.0.0.0", "192.168.1.20:8000", True),
    ("0.0.0.0", "[fe80::1]:8000", True),
    ("0.0.0.0", "rebind.attacker.example:8000", False),
    ("192.168.1.20", "192.168.1.20", True),
    ("192.168.1.20", "10.0.0.3", False),
])
def test_host_names_a_server_answers_to(bound, host, allowed):
    from harness.deploy.serve.guard import HostNames

    assert HostNames(bound).allows(host) is allowed
    assert HostNames(bound, ("door.example",)).allows("door.example:443")


# --- bullets: CORS on a 401, one error shape ---------------------------------------------

def test_a_401_under_cors_carries_its_cors_headers(door_exports, tmp_path):
    server = Server(door_exports["keras"], tmp_path, "--token", TOKEN, "--cors-origin", "https://door.example",
                    "--allow-unfit")
    try:
        answer = httpx.get(server.url + "/v1/info", headers={"Origin": "https://door.example"}, timeout=10)
        assert answer.status_code == 401
        assert answer.headers["access-control-allow-origin"] == "https://door.example"
        assert answer.headers["x-content-type-options"] == "nosniff"
    finally:
        server.stop()


def test_every_error_has_one_shape_and_echoes_no_input(hostile):
    answers = [httpx.post(hostile.url + "/v1/predict", params={"min_age": "<script>"}, content=b"x",
                          headers=auth(), timeout=10),
               httpx.get(hostile.url + "/no/such/page", timeout=10),
               httpx.get(hostile.url + "/v1/predict", headers=auth(), timeout=10),
               httpx.get(hostile.url + "/v1/info", timeout=10)]
    assert [a.status_code for a in answers] == [422, 404, 405, 401]
    for answer in answers:
        assert list(answer.json()) == ["error"] and isinstance(answer.json()["error"], str), answer.text
    assert answers[0].json()["error"].startswith("min_age: ") and "<script>" not in answers[0].text


def test_the_server_goes_on_while_a_slow_upload_trickles(hostile, face_photo):
    """A body that trickles in slower than its deadline gets 408; /healthz answers meanwhile."""
    sock = _connect(hostile)
    sock.sendall(_head(hostile, 50_000))
    stop = threading.Event()

    def trickle():
        while not stop.is_set():
            try:
                sock.sendall(b"\x00")
            except OSError:
                return
            time.sleep(0.2)

    feeder = threading.Thread(target=trickle)
    feeder.start()
    try:
        assert _healthz(hostile)["status"] == "ok"
        answer = _closed_by_server(sock, BODY_TIMEOUT + 10)
        assert answer is not None and answer.startswith(b"HTTP/1.1 408")
    finally:
        stop.set()
        feeder.join()
        sock.close()

