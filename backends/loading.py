"""How a process gets a backend: the engine chosen before Keras is imported, and the
framework's output sent to a log.

Used by the worker and by ``harness.deploy`` when it loads a trained model in a
process of its own. Importing this module imports no framework.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
from pathlib import Path

from harness.models.backends import BACKENDS, REGISTRY

__all__ = ["backend_module", "output_to", "export_backend"]


def backend_module(name: str):
    """Import the backend's translation; for a Keras engine, choose the engine first."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from {BACKENDS}")
    backend = REGISTRY[name]
    if backend.keras_engine is not None:
        engine = backend.keras_engine
        loaded = sys.modules.get("keras")
        if loaded is not None and loaded.backend.backend() != engine:
            raise RuntimeError(f"backend {name}: Keras is already running on {loaded.backend.backend()} "
                               f"in this process, and its engine cannot change")
        os.environ["KERAS_BACKEND"] = engine
    return importlib.import_module(f"backends.{backend.translation}")


def export_backend(name: str) -> str:
    """The backend that converts ``name``'s models to TFLite: TFLite conversion is
    TensorFlow's, so a Keras model of any engine is exported from Keras on TensorFlow
    (the .keras file does not depend on the engine)."""
    return "keras" if REGISTRY[name].keras_engine is not None else name


@contextlib.contextmanager
def output_to(log_path: Path):
    """Send this process's stdout and stderr, C-level included, to the log file."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    # Appended to, never through a symlink: a link planted as a log cannot make a worker
    # write over the file it points at.
    descriptor = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    with open(descriptor, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
