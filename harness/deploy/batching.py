"""Many photos through one model: the faces of several photos in one network call, and
the next photos' detection running while the network works on the current batch.

Two threads and the caller. dlib's detector holds Python's lock while it runs, and the
frameworks (TensorFlow, JAX, LiteRT) let go of it inside their kernels, so one thread
detecting and one running the network keep two cores busy. :class:`ReadoutBatcher`
answers whatever faces are waiting when the network is free, up to ``max_faces`` in one
call (dynamic batching: a busy door gets bigger batches; a quiet one waits for nothing).
:func:`classify_files` is ``harness predict DIR``; ``harness serve`` uses the batcher
for the photos of concurrent requests.

Detection is the slower stage (about 13 ms a photo against 3.5 for the face ResNet in
batches, on these cores), and one thread detects one photo at a time: a large folder
detects in processes of their own (:func:`detection_processes`), which start in about
2 s. (Light to import: the command line reads its defaults from here.)
"""
from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

__all__ = ["ReadoutBatcher", "classify_files", "detection_processes", "detect_processes_for", "DEFAULT_MAX_FACES",
           "DETECT_PROCESSES_FROM"]

DEFAULT_MAX_FACES = 64      # where the face ResNet's faces/s stop rising on these cores (batch 32-128)
LOOKAHEAD_PHOTOS = 128      # photos detected ahead of the network at most (memory: their chips)
# Detection processes take about 2 s to start on these 2 cores and save about 4 ms a photo
# (benchmarks/predict_vs_peer.py): from this many photos on, harness predict starts them.
DETECT_PROCESSES_FROM = 1000


def detect_processes_for(photos: int) -> int:
    """How many detection processes ``harness predict`` starts for a folder of ``photos``:
    one more than the cores (one is always ready while another hands back its faces),
    or none (one thread) below :data:`DETECT_PROCESSES_FROM`."""
    import os

    return (os.cpu_count() or 1) + 1 if photos >= DETECT_PROCESSES_FROM else 0


class ReadoutBatcher:
    """The model's readouts for faces of many photos, from one thread.

    :meth:`submit` returns a future of one photo's readouts; a future cancelled before its
    batch starts (a client that left) is skipped. When a batch fails, its photos are
    retried one by one, so that one bad photo fails alone.
    """

    def __init__(self, predictor, max_faces: int = DEFAULT_MAX_FACES):
        if max_faces < 1:
            raise ValueError(f"max_faces {max_faces}: must be at least 1")
        self.predictor = predictor
        self.max_faces = max_faces
        self.calls = self.faces = self.largest = 0     # network calls so far, their faces, the biggest
        self._waiting: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="readouts", daemon=True)
        self._thread.start()

    def submit(self, chips: list) -> Future:
        """A future of these faces' readouts (one photo's faces, at least one)."""
        if not len(chips):
            raise ValueError("submit needs at least one face")
        future: Future = Future()
        self._waiting.put((list(chips), future))
        return future

    def close(self) -> None:
        self._waiting.put(None)
        self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self) -> None:
        carried = None
        while True:
            item = carried if carried is not None else self._waiting.get()
            carried, stop = None, item is None
            batch, count = [], 0
            while item is not None:
                chips, future = item
                if future.set_running_or_notify_cancel():   # False: cancelled, skipped
                    batch.append(item)
                    count += len(chips)
                if count >= self.max_faces:
                    break
                try:
                    item = self._waiting.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                elif batch and count + len(item[0]) > self.max_faces:
                    carried = item     # it starts the next batch
                    break
            self._answer(batch)
            if stop:
                return

    def _answer(self, batch: list) -> None:
        if not batch:
            return
        chips = [chip for photo, _ in batch for chip in photo]
        try:
            readouts = self.predictor.readouts(chips)
            self._count(len(chips))
        except Exception as err:
            if len(batch) == 1:
                batch[0][1].set_exception(err)
                return
            for photo, future in batch:   # alone, each photo's own error (or answer)
                try:
                    future.set_result(self.predictor.readouts(photo))
                    self._count(len(photo))
                except Exception as own:
                    future.set_exception(own)
            return
        start = 0
        for photo, future in batch:
            future.set_result(readouts[start:start + len(photo)])
            start += len(photo)

    def _count(self, faces: int) -> None:
        self.calls += 1
        self.faces += faces
        self.largest = max(self.largest, faces)

    def stats(self) -> dict:
        """Network calls so far, the faces they answered, and the largest batch."""
        return {"calls": self.calls, "faces": self.faces, "largest": self.largest}


def classify_files(predictor, files: Iterable[Path], threshold: float | None = None,
                   min_age: float | None = None, gate_at: float = 0.5,
                   max_faces: int = DEFAULT_MAX_FACES, batcher: ReadoutBatcher | None = None,
                   detector=None) -> Iterator[tuple[Path, list]]:
    """Each photo's results (as :func:`harness.deploy.classify.classify`), in order, while
    the photos after it are detected and the faces of several go through the model at once.
    One unreadable photo, or one the model fails on, is an error result; the others go on.

    ``detector``: where photos are detected (:func:`detection_processes`; default one
    thread, closed at the end; one given is the caller's to close)."""
    from harness.deploy.classify import detect_file, usable_chips

    own = batcher is None
    batcher = batcher or ReadoutBatcher(predictor, max_faces)
    own_detector = detector is None
    detector = detector or ThreadPoolExecutor(max_workers=1, thread_name_prefix="detect")
    detections: deque = deque()  # (path, future of its faces), in order
    pending: deque = deque()     # (path, faces, future of their readouts or None)
    try:
        files = iter(files)
        for path in files:
            detections.append((path, detector.submit(detect_file, path)))
            if len(detections) >= LOOKAHEAD_PHOTOS:
                break
        while detections:
            path, detection = detections.popleft()
            following = next(files, None)
            if following is not None:
                detections.append((following, detector.submit(detect_file, following)))
            found = detection.result()
            chips = usable_chips(found)
            pending.append((path, found, batcher.submit(chips) if chips else None))
            # Hand back every photo whose answer is in, in order, without waiting.
            while pending and (pending[0][2] is None or pending[0][2].done() or len(pending) > LOOKAHEAD_PHOTOS):
                yield _results(pending.popleft(), threshold, min_age, gate_at)
        while pending:
            yield _results(pending.popleft(), threshold, min_age, gate_at)
    finally:
        # A caller that stops early (Ctrl-C, a closed generator) leaves nothing running.
        if own_detector:
            detector.shutdown(wait=True, cancel_futures=True)
        else:
            for _, future in detections:
                future.cancel()
        for _, _, future in pending:
            if future is not None:
                future.cancel()
        if own:
            batcher.close()


def detection_processes(count: int, warm_up: Path | None = None):
    """``count`` processes that detect photos, each with dlib's models loaded (dlib holds
    Python's lock, so threads cannot detect two photos at once); ``warm_up``: a photo each
    detects first, so that their start-up is paid before the first photo of a folder."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from harness.deploy.classify import detect_file
    from harness.processes import die_with_parent

    pool = ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("spawn"), initializer=die_with_parent)
    if warm_up is not None:
        for future in [pool.submit(detect_file, warm_up) for _ in range(count)]:
            future.result()
    return pool


def _results(item, threshold, min_age, gate_at) -> tuple[Path, list]:
    from harness.deploy.classify import error_result, face_results

    path, found, future = item
    try:
        readouts = future.result() if future is not None else None
        return path, face_results(str(path), found, readouts, threshold, min_age, gate_at)
    except Exception as err:   # one bad photo never takes the batch down
        return path, [error_result(str(path), f"cannot process: {type(err).__name__}: {err}")]
