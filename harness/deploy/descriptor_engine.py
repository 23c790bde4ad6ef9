"""A run's descriptor engine at the door: the face ResNet in the backend that computed the
run's training descriptors (``preprocessing.descriptor_engine``), so that a photo's
descriptor is made exactly as the training faces' were.

Where this process already runs that backend (a Keras run whose descriptors Keras made)
the network is built here; otherwise it runs in a process of its own, started once and
kept (TFLearn and Keras cannot share a process, and a LiteRT export or an ensemble
imports no framework here at all). Faces are sent in batches: one call per photo's
faces, or per batch of photos.
"""
from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import sys

import numpy as np

__all__ = ["port_descriptors"]

REPLY_TIMEOUT_S = 600
_ENGINES: dict[tuple[str, str], object] = {}


class EngineError(RuntimeError):
    """The descriptor engine could not answer; says which engine and why."""


def port_descriptors(pixels: np.ndarray, engine: str, flip: bool = False, features: str = "embedding") -> np.ndarray:
    """uint8 150x150 chips (N, 150, 150, 3) -> (N, 128) descriptors from ``engine`` (or
    with ``features="pooled"`` the (N, 256) features before them); with ``flip`` the mean of
    each chip's and its mirror's (as the cache computed them)."""
    key = (engine, features)
    if key not in _ENGINES:
        _ENGINES[key] = _InProcess(engine, features) if _runs_here(engine) else _Child(engine, features)
    describe = _ENGINES[key].describe
    x = np.asarray(pixels, dtype=np.float32) / np.float32(255.0)
    values = describe(x)
    if flip:
        values = (values + describe(np.ascontiguousarray(x[:, :, ::-1]))) / 2
    return np.asarray(values, dtype=np.float32)


def _runs_here(engine: str) -> bool:
    """Whether this process already holds the engine's backend (importing another
    framework beside it is what must not happen)."""
    from harness.models.backends import REGISTRY

    wanted = REGISTRY[engine]
    module = sys.modules.get(f"backends.{wanted.translation}")
    if module is None:
        return False
    return wanted.keras_engine is None or getattr(module, "ENGINE", None) == wanted.keras_engine


class _InProcess:
    def __init__(self, engine: str, features: str):
        from backends.loading import backend_module
        from harness.models.spec import FaceResNet

        self.backend = backend_module(engine)
        self.network = self.backend.face_network(FaceResNet(features=features))

    def describe(self, x: np.ndarray) -> np.ndarray:
        return self.backend.describe(self.network, x)


class _Child:
    def __init__(self, engine: str, features: str):
        self.engine = engine
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(engine, features, child), daemon=True)
        self.process.start()
        child.close()
        self.connection = parent
        status, detail = self._receive()
        if status != "ready":
            self.close()
            raise EngineError(f"descriptor engine {engine}: {detail}")
        atexit.register(self.close)

    def _receive(self):
        try:
            if not self.connection.poll(REPLY_TIMEOUT_S):
                return "dead", f"no answer in {REPLY_TIMEOUT_S} s"
            return self.connection.recv()
        except (EOFError, OSError):
            return "dead", "its process ended unexpectedly"

    def describe(self, x: np.ndarray) -> np.ndarray:
        if not self.process.is_alive():
            raise EngineError(f"descriptor engine {self.engine}: its process has ended")
        self.connection.send(x)
        status, detail = self._receive()
        if status != "ok":
            raise EngineError(f"descriptor engine {self.engine}: {detail}")
        return detail

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.connection.send(None)
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()


def _serve(engine: str, features: str, connection) -> None:
    """The child: the engine's network, answering batches until told to stop."""
    import os
    from pathlib import Path

    from harness.processes import die_with_parent

    die_with_parent()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from backends.loading import output_to

    with output_to(Path(os.devnull)):
        try:
            engine_here = _InProcess(engine, features)
        except Exception as err:
            connection.send(("error", f"{type(err).__name__}: {err}"))
            return
        connection.send(("ready", None))
        while (x := connection.recv()) is not None:
            try:
                connection.send(("ok", engine_here.describe(x)))
            except Exception as err:
                connection.send(("error", f"{type(err).__name__}: {err}"))
