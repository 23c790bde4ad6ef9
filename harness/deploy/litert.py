"""An exported model run by LiteRT, the runtime phones use; TensorFlow is never imported.

An export folder (see :mod:`harness.deploy.export`) holds ``model.tflite`` and ``export.json``,
which says everything needed to use the file without the run it came from: the
preprocessing, the input shape, the head and label order, the decode threshold and the
door gate's threshold. An ensemble's folder holds one such folder per member under
``members/`` and the mean of their scores is the ensemble's.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from harness.data.faces import DESCRIPTOR_CHIP
from harness.data.images import Preprocessing, to_float
from harness.models import heads
from harness.runs.layout import MANIFEST_FILE, kind_of

MANIFEST_VERSION = 1
# Faces per interpreter call: bounds the interpreter's tensors on a test split.
BATCH = 256


class Parity(BaseModel):
    """The export against the framework model, on the source run's test split."""

    model_config = ConfigDict(extra="forbid")

    test_faces: int
    max_abs_output_difference: float
    max_abs_probability_difference: float
    tolerance: float | None            # float32 exports must stay within it; None when quantized
    passed: bool | None
    decoded_agreement: float           # share of faces with the same age group and gender
    framework: dict[str, float]        # accuracies from the framework's own test predictions
    exported: dict[str, float]         # the same accuracies from the exported model
    accuracy_change_points: dict[str, float]
    bytes: int
    single_face_latency_ms: float      # median of repeated one-face calls, LiteRT


class ExportManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    manifest_version: int
    format: Literal["tflite"]
    kind: Literal["trial", "ensemble"]
    harness_version: str
    created: str
    source: dict                        # run_dir, trial_id, backend, round
    quantize: Literal["none", "dynamic", "int8"]
    tta: Literal["flip"] | None = None
    labels: dict                        # age_groups and genders, in output order
    decode_threshold: float
    gate: dict                          # default_threshold and the run's calibrated gate (or None)
    parity: Parity
    # A trial's export: its network.
    model_file: str | None = None
    sha256: str | None = None
    input_shape: list[int] | None = None
    input_dtype: Literal["float32"] | None = None
    preprocessing: Preprocessing | None = None
    head: str | None = None
    # What the model reads: the batch the run's preprocessing makes ("model_inputs"), or,
    # for a run on port descriptors, the aligned chip itself ("chip": the face ResNet is
    # inside the model), whose geometry ``chip`` states for another program to reproduce.
    input: Literal["model_inputs", "chip"] = "model_inputs"
    chip: dict | None = None
    # years_regression: 101 quantiles of its validation residuals (true - predicted years),
    # the spread its readout puts around a prediction (see harness.models.heads.years_readout).
    age_residuals: list[float] | None = None
    # An ensemble's export: its members' folders, each with a manifest of its own.
    members: list[str] | None = None
    combine: str | None = None


def read_manifest(export_dir: str | Path) -> ExportManifest:
    path = Path(export_dir) / MANIFEST_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: missing; not an export folder (make one with harness export)") from None
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not readable JSON: {err}") from None
    if not isinstance(data, dict) or data.get("manifest_version") != MANIFEST_VERSION:
        raise ValueError(f"{path}: manifest_version must be {MANIFEST_VERSION}, "
                         f"got {data.get('manifest_version') if isinstance(data, dict) else data!r}")
    try:
        manifest = ExportManifest.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        raise ValueError(f"{path}: key {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    if manifest.kind == "trial" and (manifest.model_file is None or manifest.preprocessing is None
                                     or manifest.head is None):
        raise ValueError(f"{path}: a trial export needs model_file, preprocessing and head")
    if manifest.kind == "ensemble" and not manifest.members:
        raise ValueError(f"{path}: an ensemble export needs members")
    return manifest


def is_export(path: str | Path) -> bool:
    return kind_of(path) == "export"


class LiteModel:
    """One ``.tflite`` network: float32 inputs in, raw outputs out, any batch size."""

    def __init__(self, path: str | Path, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        from backends.loading import output_to

        path = Path(path)
        # LiteRT announces its CPU delegate on stderr; predict's output stays the user's.
        with output_to(Path(os.devnull)):
            try:
                self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
                self.interpreter.allocate_tensors()
            except (ValueError, RuntimeError) as err:
                raise ValueError(f"{path}: not a loadable TFLite model: {err}") from None
        (self._input,) = self.interpreter.get_input_details()
        (self._output,) = self.interpreter.get_output_details()
        if len(self._input["shape"]) < 2 or len(self._output["shape"]) != 2:
            raise ValueError(f"{path}: expected one batched input and one (N, units) output")
        self.input_shape = tuple(int(n) for n in self._input["shape"][1:])
        self.output_units = int(self._output["shape"][-1])
        self._batch = int(self._input["shape"][0])

    def outputs(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != self.input_shape:
            raise ValueError(f"the model takes inputs of shape {self.input_shape}, got {x.shape[1:]}")
        chunks = [self._call(np.ascontiguousarray(x[i:i + BATCH])) for i in range(0, len(x), BATCH)]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.output_units), np.float32)

    def _call(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) != self._batch:
            self.interpreter.resize_tensor_input(self._input["index"], [len(batch), *self.input_shape])
            self.interpreter.allocate_tensors()
            self._batch = len(batch)
        self.interpreter.set_tensor(self._input["index"], batch)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output["index"]).copy()


CHIP_SHAPE = (DESCRIPTOR_CHIP, DESCRIPTOR_CHIP, 3)   # what harness.data.faces.descriptor_chip makes


def chip_geometry() -> dict:
    """How a whole-door export's input is made, for a program that is not the harness."""
    from harness.data.faces import CHIP_PADDING, CHIP_SIZE

    return {"size": [DESCRIPTOR_CHIP, DESCRIPTOR_CHIP, 3], "dtype": "float32 = uint8 RGB / 255",
            "alignment": f"dlib 5-point landmarks (shape_predictor_5_face_landmarks), dlib.get_face_chip(size="
                         f"{CHIP_SIZE}, padding={CHIP_PADDING}), then resized bilinearly to {DESCRIPTOR_CHIP}x"
                         f"{DESCRIPTOR_CHIP}",
            "detector": "dlib's HOG frontal face detector; the largest face"}


def verified_model_file(export_dir: Path, manifest: ExportManifest) -> Path:
    """The manifest's ``model_file``, inside the export folder and with the bytes the
    manifest's sha256 records: a file swapped for another model, or damaged, is refused
    before it answers a single photo."""
    where = export_dir / MANIFEST_FILE
    path = (export_dir / manifest.model_file).resolve()
    if Path(manifest.model_file).is_absolute() or export_dir.resolve() not in path.parents:
        raise ValueError(f"{where}: model_file {manifest.model_file!r} is outside the export folder")
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as err:
        raise ValueError(f"{export_dir / manifest.model_file}: cannot be read ({err.strerror or err}); "
                         f"{where} names it as the model") from None
    if digest != manifest.sha256:
        raise ValueError(f"{export_dir / manifest.model_file}: its sha256 is {digest[:16]}..., not the "
                         f"{(manifest.sha256 or 'none')[:16]}... that {where} records: the file was replaced "
                         "or damaged after it was exported; export the run again")
    return path


class ExportedNetwork:
    """A trial's export: its LiteRT model with its preprocessing and head, checked against
    the manifest when it is opened (the file's hash, its input and output shapes)."""

    def __init__(self, export_dir: Path, manifest: ExportManifest, threads: int | None = None):
        self.directory, self.manifest = export_dir, manifest
        where = export_dir / MANIFEST_FILE
        self.model = LiteModel(verified_model_file(export_dir, manifest), threads)
        if list(self.model.input_shape) != manifest.input_shape:
            raise ValueError(f"{where}: input_shape {manifest.input_shape} does not "
                             f"match {manifest.model_file}'s {list(self.model.input_shape)}")
        reads = CHIP_SHAPE if manifest.input == "chip" else tuple(manifest.preprocessing.shape)
        if reads != self.model.input_shape:
            raise ValueError(f"{where}: its {'chip' if manifest.input == 'chip' else 'preprocessing'} makes inputs of "
                             f"shape {list(reads)}, but {manifest.model_file} takes {list(self.model.input_shape)}")
        try:
            units = heads.output_size(manifest.head)
        except (KeyError, ValueError):
            raise ValueError(f"{where}: head {manifest.head!r} is not one the harness knows") from None
        if units != self.model.output_units:
            raise ValueError(f"{where}: head {manifest.head} has {units} outputs, but {manifest.model_file} "
                             f"gives {self.model.output_units}")
        self.preprocessing, self.head = manifest.preprocessing, manifest.head

    @property
    def reads_chips(self) -> bool:
        return self.manifest.input == "chip"

    def readouts(self, inputs: np.ndarray) -> np.ndarray:
        """Model inputs (uint8 pixels or descriptors, as the cache holds them; or uint8
        chips for a whole-door export) -> readouts (:func:`harness.models.heads.readout`)."""
        x = np.asarray(inputs, np.float32) / np.float32(255.0) if self.reads_chips else to_float(inputs, self.preprocessing)
        return heads.readout(self.head, self.model.outputs(x), self.manifest.age_residuals)


def _check_parity(export_dir: Path, manifest: ExportManifest, allow_failed_parity: bool) -> None:
    parity = manifest.parity
    if parity.passed is False and not allow_failed_parity:
        raise ValueError(f"{export_dir / MANIFEST_FILE}: its parity check failed (largest probability difference "
                         f"{parity.max_abs_probability_difference:.1e} from the framework model, tolerance "
                         f"{parity.tolerance:g}): it does not answer as the trained model does. Export the run "
                         "again, or give --allow-failed-parity to inspect it")


def open_networks(export_dir: str | Path, threads: int | None = None,
                  allow_failed_parity: bool = False) -> tuple[ExportManifest, list[ExportedNetwork]]:
    """The export's manifest and its networks (one, or an ensemble's members), each verified
    against its manifest; an export whose parity failed is refused unless allowed."""
    export_dir = Path(export_dir)
    manifest = read_manifest(export_dir)
    _check_parity(export_dir, manifest, allow_failed_parity)
    if manifest.kind == "trial":
        return manifest, [ExportedNetwork(export_dir, manifest, threads)]
    members = []
    for member in manifest.members:
        member_dir = (export_dir / member).resolve()
        if export_dir.resolve() not in member_dir.parents:
            raise ValueError(f"{export_dir / MANIFEST_FILE}: member {member!r} is outside the export folder")
        member_manifest = read_manifest(member_dir)
        _check_parity(member_dir, member_manifest, allow_failed_parity)
        members.append(ExportedNetwork(member_dir, member_manifest, threads))
    return manifest, members
