"""The faces of many photos through one network call: which faces go together, that each
photo gets its own answers back, and that one bad photo fails alone.

The predictor here is a stand-in whose calls can be held and inspected (the thing under
test is the batcher's grouping, not a model); the real models go through the same path in
test_predict.py and test_serve*.py."""
import threading
import time

import numpy as np
import pytest

from harness.deploy.batching import ReadoutBatcher, classify_files


class _Recorder:
    """readouts(chips) -> each chip's own number (so a mixed-up answer shows), recording
    every call; the first call waits until ``release`` is set, so that photos queue up
    behind it as they do behind a busy network."""

    def __init__(self, refuse=None):
        self.calls: list[list[int]] = []
        self.release = threading.Event()
        self.started = threading.Event()
        self.refuse = refuse

    def readouts(self, chips):
        self.started.set()
        self.release.wait(10)
        self.calls.append(list(chips))
        if self.refuse is not None and self.refuse in chips:
            raise ValueError(f"face {self.refuse} cannot be read")
        return np.asarray(chips, dtype=np.float64)[:, None] * np.ones((1, 3))


def _queued_behind_a_busy_network(recorder, batcher, photos):
    first = batcher.submit([0])
    assert recorder.started.wait(10)
    futures = [batcher.submit(chips) for chips in photos]
    recorder.release.set()
    return first, futures


def test_photos_waiting_while_the_network_is_busy_go_through_it_together():
    recorder = _Recorder()
    with ReadoutBatcher(recorder, max_faces=64) as batcher:
        first, futures = _queued_behind_a_busy_network(recorder, batcher, [[1, 2], [3], [4, 5, 6]])
        answers = [f.result(10) for f in futures]
    assert recorder.calls == [[0], [1, 2, 3, 4, 5, 6]]
    assert [a[:, 0].tolist() for a in answers] == [[1, 2], [3], [4, 5, 6]]
    assert first.result(10)[:, 0].tolist() == [0]
    assert batcher.stats() == {"calls": 2, "faces": 7, "largest": 6}


def test_a_batch_stops_at_max_faces_and_never_splits_a_photo():
    recorder = _Recorder()
    with ReadoutBatcher(recorder, max_faces=4) as batcher:
        _, futures = _queued_behind_a_busy_network(recorder, batcher, [[1, 2], [3], [4, 5], [6, 7, 8, 9, 10]])
        answers = [f.result(10) for f in futures]
    assert recorder.calls == [[0], [1, 2, 3], [4, 5], [6, 7, 8, 9, 10]]   # a photo of 5 goes alone
    assert [a[:, 0].tolist() for a in answers] == [[1, 2], [3], [4, 5], [6, 7, 8, 9, 10]]


def test_one_bad_photo_in_a_batch_fails_alone():
    recorder = _Recorder(refuse=4)
    with ReadoutBatcher(recorder) as batcher:
        _, futures = _queued_behind_a_busy_network(recorder, batcher, [[1, 2], [3, 4], [5]])
        with pytest.raises(ValueError, match="face 4 cannot be read"):
            futures[1].result(10)
        assert futures[0].result(10)[:, 0].tolist() == [1, 2]
        assert futures[2].result(10)[:, 0].tolist() == [5]


def test_a_photo_cancelled_before_its_batch_never_reaches_the_network():
    recorder = _Recorder()
    with ReadoutBatcher(recorder) as batcher:
        first = batcher.submit([0])
        assert recorder.started.wait(10)
        kept, gone = batcher.submit([1]), batcher.submit([2])
        assert gone.cancel()
        recorder.release.set()
        assert kept.result(10)[:, 0].tolist() == [1]
        first.result(10)
    assert recorder.calls == [[0], [1]]


def test_a_batch_needs_faces_and_a_positive_size():
    with pytest.raises(ValueError, match="max_faces 0"):
        ReadoutBatcher(_Recorder(), max_faces=0)
    recorder = _Recorder()
    recorder.release.set()
    with ReadoutBatcher(recorder) as batcher, pytest.raises(ValueError, match="at least one face"):
        batcher.submit([])


class _Chips:
    """Stands in for the model on real photos: one readout per face, from the chip's pixels
    (so a face given another face's answer shows), slow enough that photos queue up."""

    def readouts(self, chips):
        time.sleep(0.05)
        means = np.array([np.asarray(chip, dtype=np.float64).mean() / 255 for chip in chips])
        ages = np.full((len(chips), 8), 1 / 8)
        return np.column_stack([ages, means, 1 - means])


def test_a_folder_keeps_its_order_and_each_photo_its_own_faces(photos, tmp_path):
    from harness.deploy.classify import classify

    files = sorted(photos.iterdir()) * 3 + [tmp_path / "missing.jpg"]
    model = _Chips()
    one_by_one = [classify(model, path, gate_at=0.5) for path in files]
    with ReadoutBatcher(model) as batcher:
        batched = list(classify_files(model, files, batcher=batcher))
        stats = batcher.stats()
    assert [path for path, _ in batched] == files
    assert [[r.to_dict() for r in results] for _, results in batched] == \
        [[r.to_dict() for r in results] for results in one_by_one]
    assert batched[-1][1][0].error == "file not found" and batched[-1][1][0].file.endswith("missing.jpg")
    # Photos were detected while the network worked: some calls carried several photos' faces.
    faces = sum(len([r for r in results if r.age_probabilities]) for _, results in batched)
    assert stats["faces"] == faces and stats["calls"] < faces and stats["largest"] > 1


def test_a_caller_that_stops_early_leaves_no_thread_running(photos):
    # Threads of its own: another test in this process (a server app) may hold a batcher.
    before = set(threading.enumerate())
    files = sorted(photos.iterdir()) * 20
    results = classify_files(_Chips(), files)
    next(results)
    results.close()
    assert not [t.name for t in set(threading.enumerate()) - before if t.name.startswith(("detect", "readouts"))]


def test_detection_processes_answer_as_the_thread_does(photos, tmp_path):
    from harness.deploy.batching import detection_processes

    files = sorted(photos.iterdir()) + [tmp_path / "missing.jpg"]
    threaded = [[r.to_dict() for r in results] for _, results in classify_files(_Chips(), files)]
    pool = detection_processes(2, files[0])
    try:
        pooled = [[r.to_dict() for r in results] for _, results in classify_files(_Chips(), files, detector=pool)]
    finally:
        pool.shutdown()
    assert pooled == threaded and pooled[-1][0]["error"] == "file not found"
