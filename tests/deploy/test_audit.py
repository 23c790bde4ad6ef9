"""The door's audit log (issue 27 §5): one line per decision and never a face, rotated by
size, read back per hour by ``harness door-log``, whole lines after a kill -9."""
import datetime
import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from harness.deploy.audit import AUDIT_KEYS, AuditLog, hourly_counts, read_log
from tests.helpers.backend_runs import ROOT

ANSWER = {"verdict": "deny", "why": "adult 10% (needs 50%)", "adult_probability": 0.1, "threshold": 0.5,
          "min_age": 18, "faces": [{"face": 0, "box": [1, 2, 3, 4], "age_probabilities": {"(0, 2)": 0.9}}]}


def test_a_decision_is_one_line_with_no_face_in_it(tmp_path):
    log = AuditLog(tmp_path / "door.jsonl")
    log.record(ANSWER, "door-model", "192.0.2.7")
    line = (tmp_path / "door.jsonl").read_text()
    entry = json.loads(line)
    assert set(entry) == set(AUDIT_KEYS) and line.count("\n") == 1
    assert entry["verdict"] == "deny" and entry["client"] == "192.0.2.7" and entry["faces"] == 1
    assert "box" not in line and "age_probabilities" not in line and entry["liveness"] is None


def test_the_log_rotates_by_size_and_the_reader_reads_every_file_oldest_first(tmp_path):
    log = AuditLog(tmp_path / "door.jsonl", max_bytes=600, keep=2)
    for n in range(12):
        log.record({**ANSWER, "adult_probability": n / 100}, "m", None)
    assert (tmp_path / "door.jsonl.1").is_file() and (tmp_path / "door.jsonl.2").is_file()
    assert not (tmp_path / "door.jsonl.3").exists()      # keep 2: the oldest dropped
    frame, damaged = read_log(tmp_path / "door.jsonl")
    assert damaged == 0 and frame["adult_probability"].is_monotonic_increasing
    assert frame["adult_probability"].iloc[-1] == 0.11 and len(frame) < 12


def test_a_torn_last_line_is_skipped_and_counted(tmp_path):
    log = AuditLog(tmp_path / "door.jsonl")
    log.record(ANSWER, "m", None)
    with open(tmp_path / "door.jsonl", "a") as out:
        out.write('{"time": "2026-12-01T10:00:00+00:00", "verd')
    frame, damaged = read_log(tmp_path / "door.jsonl")
    assert len(frame) == 1 and damaged == 1
    with pytest.raises(FileNotFoundError, match="no audit log"):
        read_log(tmp_path / "none.jsonl")


def test_hourly_counts_of_a_day(tmp_path):
    path = tmp_path / "door.jsonl"
    lines = [{"time": f"2026-12-01T{hour:02d}:15:00+00:00", "verdict": verdict}
             for hour, verdict in [(21, "allow"), (21, "deny"), (22, "ask_for_id"), (22, "allow"), (23, "retake")]]
    lines.append({"time": "2026-11-30T22:00:00+00:00", "verdict": "allow"})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    frame, _ = read_log(path)
    table = hourly_counts(frame, datetime.date(2026, 12, 1))
    assert table.loc[21, "allow"] == 1 and table.loc[21, "deny"] == 1 and table.loc[22, "ask_for_id"] == 1
    assert int(table.to_numpy().sum()) == 5
    shown = subprocess.run([sys.executable, "-m", "harness", "door-log", str(path), "--day", "2026-12-01"],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "total: 2 allow, 1 ask for id, 1 deny, 1 retake" in shown.stdout


def test_the_server_logs_each_decision_and_a_kill_leaves_whole_lines(door_exports, face_photo, tmp_path):
    from tests.deploy.test_serve import Server, upload

    path = tmp_path / "audit" / "door.jsonl"
    server = Server(door_exports["keras"], tmp_path / "server", "--allow-unfit", "--audit-log", str(path))
    answers = [upload(server, face_photo, "/v1/gate", headers={}).json() for _ in range(3)]
    frame, damaged = read_log(path)
    assert damaged == 0 and list(frame["verdict"]) == [a["verdict"] for a in answers]
    assert set(frame["client"]) == {"127.0.0.1"} and set(frame["model"]) == {"keras"}
    text = path.read_bytes()
    assert b"\xff\xd8" not in text and face_photo.read_bytes()[:64] not in text and len(text) < 3 * 600
    # SIGKILL while photos keep coming: whatever is on disk is whole lines.
    stop = threading.Event()

    def flood():
        while not stop.is_set():
            try:
                upload(server, face_photo, "/v1/gate", headers={})
            except httpx.HTTPError:
                return

    senders = [threading.Thread(target=flood, daemon=True) for _ in range(3)]
    for sender in senders:
        sender.start()
    deadline = time.monotonic() + 60
    while len(path.read_text().splitlines()) < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=30)
    stop.set()
    frame, damaged = read_log(path)
    assert damaged == 0 and len(frame) >= 8 and path.read_bytes().endswith(b"\n")
