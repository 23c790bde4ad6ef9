"""The backends: every fact about them in one place.

A backend is a framework (and, for Keras, an engine) that translates a model spec,
trains it and predicts. Everything else in the harness (the experiment schema, the
trial config, the worker, tables and plots) reads the list and its properties here.
Nothing in this module imports a framework.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["BACKENDS", "BackendName", "DEFAULT_BACKENDS", "Backend", "REGISTRY", "display_name", "ordered"]


@dataclass(frozen=True)
class Backend:
    name: str                   # what experiment files and trial configs say
    display: str                # what tables and plots say
    colour: str                 # its colour in every plot
    translation: str            # the module under backends/ that translates the spec
    packages: tuple[str, ...]   # what it imports (checked before anything runs)
    saved_model: str            # the file (or checkpoint prefix) a finished trial's model is saved as
    saved_parts: tuple[str, ...] = ("",)   # the files it is made of: saved_model + each of these
    install: str = "pip install -e ."
    keras_engine: str | None = None   # a Keras backend runs on this engine (KERAS_BACKEND)

    def saved_files(self) -> list[str]:
        return [self.saved_model + part for part in self.saved_parts]


# In the order tables show them: the study's two frameworks, then Keras on JAX.
REGISTRY: dict[str, Backend] = {b.name: b for b in (
    # A TensorFlow checkpoint: its graph, its index of variables, and their values.
    Backend("tflearn", "TFLearn", "#dd8452", "tflearn", ("tflearn", "tensorflow"), "model.tflearn",
            (".meta", ".index", ".data-00000-of-00001")),
    Backend("keras", "Keras", "#4c72b0", "keras", ("keras", "tensorflow"), "model.keras", keras_engine="tensorflow"),
    Backend("keras-jax", "Keras (JAX)", "#55a868", "keras", ("keras", "jax"), "model.keras",
            install="pip install -e '.[jax]'", keras_engine="jax"),
)}
BACKENDS: tuple[str, ...] = ("keras", "tflearn", "keras-jax")   # the order choices are listed in messages
assert set(BACKENDS) == set(REGISTRY)
BackendName = Literal[BACKENDS]
# What an experiment runs when it names no backends: the study's two frameworks.
DEFAULT_BACKENDS = ("keras", "tflearn")
ORDER = list(REGISTRY)


def display_name(backend: str) -> str:
    known = REGISTRY.get(backend)
    return known.display if known else backend


def ordered(present) -> list[str]:
    """``present`` backends in table order (unknown names last, sorted)."""
    present = set(present)
    return [b for b in ORDER if b in present] + sorted(present - set(ORDER))


def colour(backend: str, default: str | None = None) -> str | None:
    known = REGISTRY.get(backend)
    return known.colour if known else default
