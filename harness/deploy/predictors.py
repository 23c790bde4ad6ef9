"""How a finished model meets face chips: one :class:`Predictor` protocol, three kinds.

A trial's framework model (:class:`FrameworkPredictor`, its backend loaded once in this
process), an ensemble round (:class:`EnsemblePredictor`, each member in a process of its
own) and an export folder (:class:`ExportPredictor`, LiteRT: no framework imported).
:func:`open_model` picks one from what the folder is (:func:`harness.runs.layout.kind_of`)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import ImageOps

from harness.data.images import face_array, to_float
from harness.models import heads
from harness.runs.layout import METRICS_FILE, kind_of, require_finished
from harness.runs.trial import age_residuals, read_config, saved_model_problem

LOG_NAME = "predict-log.txt"


__all__ = ["Predictor", "FrameworkPredictor", "ExportPredictor", "open_model"]


@runtime_checkable
class Predictor(Protocol):
    """What classify, the gate and the server need of a model."""

    tta: str | None

    @property
    def calibrated_gate(self) -> dict | None:
        """The gate calibrated on the model's validation split (``metrics.json``'s gate), or None."""

    def readouts(self, chips) -> np.ndarray:
        """Aligned face chips -> one readout per face (:func:`harness.models.heads.readout`)."""

    def health(self) -> str | None:
        """None while the model can answer; otherwise why not (the server's /healthz says it)."""


class FrameworkPredictor:
    """A trained run's model with the run's preprocessing; loads its backend once.

    Framework output (TensorFlow's C++ start-up lines, TFLearn's deprecation notes) goes
    to ``RUN_DIR/predict-log.txt`` (or a temporary file when the run is read-only), not
    the terminal, as in the worker. ``tta="flip"`` averages each face with its mirror.
    """

    def __init__(self, run_dir: str | Path, tta: str | None = None):
        self.run_dir = _finished_run(run_dir)
        self.tta = _check_tta(tta)
        self.config = read_config(self.run_dir)
        problem = saved_model_problem(self.run_dir, self.config.backend)
        if problem:
            raise ValueError(problem)
        self.preprocessing = self.config.preprocessing
        self.residuals = age_residuals(self.run_dir, self.config.model.head)
        self.log = _log_file(self.run_dir)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        from backends.loading import backend_module, output_to

        self._quiet = lambda: output_to(self.log)
        with self._quiet():
            # The one place outside a worker that imports a framework: this process
            # serves one run, so one backend.
            self.backend = backend_module(self.config.backend)
            model_file = self.run_dir / self.backend.MODEL_FILE
            try:
                self.model = self.backend.load(self.run_dir, self.config.model, self.config.training,
                                               self.config.preprocessing.shape)
            except Exception as err:
                # The framework's own words are often wrong here (Keras says "File not
                # found" for a truncated file): they go to the log, and the user is told
                # which file is at fault and what to do.
                print(f"loading {model_file} failed: {type(err).__name__}: {err}", flush=True)
                present = sorted(self.run_dir.glob(model_file.name + "*"))
                if not present:
                    raise ValueError(f"{model_file}: missing; the run has no saved model") from None
                size = sum(p.stat().st_size for p in present)
                raise ValueError(f"{model_file}: cannot be loaded by {self.config.backend}: damaged or "
                                 f"incomplete ({size:,} bytes); restore it or train the run again "
                                 f"(details in {self.log})") from None

    @property
    def calibrated_gate(self) -> dict | None:
        return stored_gate(self.run_dir)

    def readouts_of(self, batches: list[np.ndarray]) -> np.ndarray:
        """Model input batches (the face, and its mirror with TTA) -> mean readouts
        (:func:`harness.models.heads.readout`: 10 group scores, or a years distribution)."""
        with self._quiet():
            return np.mean([heads.readout(self.config.model.head,
                                          self.backend.predict(self.model, to_float(batch, self.preprocessing)),
                                          self.residuals)
                            for batch in batches], axis=0)

    def readouts(self, chips) -> np.ndarray:
        """Aligned face chips -> readouts."""
        return self.readouts_of(model_batches(chips, self.preprocessing, self.tta))

    def health(self) -> str | None:
        return None   # loaded in this process: it answers as long as the process does


class ExportPredictor:
    """An export folder (:mod:`harness.deploy.export`) run by LiteRT: no framework is imported.

    The same faces, preprocessing, decoding and gate as :class:`FrameworkPredictor`; an exported
    ensemble averages its members' scores as the ensemble round did.
    """

    def __init__(self, export_dir: str | Path, tta: str | None = None, threads: int | None = None,
                 allow_failed_parity: bool = False):
        from harness.deploy.litert import open_networks

        self.run_dir = Path(export_dir)
        self.manifest, self.networks = open_networks(self.run_dir, threads, allow_failed_parity)
        self.tta = _check_tta(tta)

    @property
    def calibrated_gate(self) -> dict | None:
        return self.manifest.gate.get("calibrated")

    def readouts(self, chips) -> np.ndarray:
        batches: dict[str, list[np.ndarray]] = {}
        results = []
        for network in self.networks:
            key = "chip" if network.reads_chips else network.preprocessing.model_dump_json()
            if key not in batches:
                batches[key] = (chip_batches(chips, self.tta) if network.reads_chips
                                else model_batches(chips, network.preprocessing, self.tta))
            results.append(np.mean([network.readouts(batch) for batch in batches[key]], axis=0))
        return np.mean(results, axis=0)

    def health(self) -> str | None:
        return None


def open_model(path: str | Path, tta: str | None = None, allow_failed_parity: bool = False):
    """A trial run directory -> :class:`FrameworkPredictor`; an ensemble round ->
    :class:`EnsemblePredictor`; an export folder -> :class:`ExportPredictor` (verified
    against its manifest; one whose parity failed only with ``allow_failed_parity``)."""
    path = Path(path)
    kind = kind_of(path)
    if kind == "export":
        return ExportPredictor(path, tta, allow_failed_parity=allow_failed_parity)
    if kind == "ensemble_round":
        from harness.deploy.ensemble_members import EnsemblePredictor

        return EnsemblePredictor(path, tta)
    return FrameworkPredictor(path, tta)


def _finished_run(run_dir: str | Path) -> Path:
    return require_finished(run_dir, "--model ")


def _check_tta(tta: str | None) -> str | None:
    if tta not in (None, "flip"):
        raise ValueError(f"--tta {tta!r}: choose from ['flip']")
    return tta


def stored_gate(run_dir: Path) -> dict | None:
    """The gate threshold chosen on validation faces when the run was trained, if one was met."""
    try:
        gate_info = json.loads((run_dir / METRICS_FILE).read_text()).get("gate")
    except (OSError, ValueError, AttributeError):
        return None
    return gate_info if isinstance(gate_info, dict) and gate_info.get("met") else None


def model_batches(chips, prep, tta: str | None = None) -> list[np.ndarray]:
    """Aligned face chips -> the batches the model is fed: the faces, and with ``tta="flip"``
    their mirrors (for a descriptor input, the descriptor of the mirrored face)."""
    batches = [model_inputs(chips, prep)]
    if tta == "flip":
        batches.append(model_inputs([ImageOps.mirror(chip) for chip in chips], prep))
    return batches


def chip_batches(chips, tta: str | None = None) -> list[np.ndarray]:
    """Aligned face chips -> what a whole-door export reads: the 150-pixel chips (uint8),
    and with ``tta="flip"`` their mirrors."""
    from harness.data.faces import descriptor_chip

    faces = np.stack([descriptor_chip(chip) for chip in chips])
    return [faces] + ([np.ascontiguousarray(faces[:, :, ::-1])] if tta == "flip" else [])


def model_inputs(chips, prep) -> np.ndarray:
    """Aligned face chips -> the batch the model is fed, by the run's own preprocessing
    (the very function the array cache used in training; for descriptors the engine that
    computed the training faces', every face of the batch in one call)."""
    if prep.embedding and prep.descriptor_engine != "dlib":
        from harness.data.faces import descriptor_chip
        from harness.deploy.descriptor_engine import port_descriptors

        if not len(chips):
            return np.zeros((0,) + tuple(prep.shape), np.float32)
        return port_descriptors(np.stack([descriptor_chip(chip) for chip in chips]), prep.descriptor_engine,
                                prep.embedding_flip, prep.descriptor_features)
    return np.stack([face_array(chip, prep) for chip in chips])


def _log_file(run_dir: Path) -> Path:
    """``RUN_DIR/predict-log.txt``, emptied for this invocation's chatter; never through a
    symlink (which would truncate whatever it points at): a read-only run, or a log that is
    a link, gets a fresh temporary file instead."""
    path = run_dir / LOG_NAME
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644))
        return path
    except OSError:
        handle, name = tempfile.mkstemp(prefix="harness-predict-", suffix=".txt")
        os.close(handle)
        return Path(name)


