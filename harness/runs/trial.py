"""A trial: one backend training one model on one round of one split, as files.

``write_trial`` lays out a trial directory's inputs (resolved config, split manifest,
labels); ``python -m backends.worker RUN_DIR`` trains from them and writes the outputs
next to them. Any executor that can start that process where the files are visible can
run a trial.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer, model_validator

from harness.data.cache import CachedArrays
from harness.data.images import Preprocessing
from harness.data.splits import SplitManifest
from harness.models.backends import REGISTRY, BackendName
from harness.models.gate import GateSpec
from harness.models.heads import part_losses, predicted_years, residual_quantiles
from harness.models.spec import ModelSpec, TrainingSpec, drop_neutral
from harness.runs.layout import CONFIG_FILE, HISTORY_FILE, LABELS_FILE, METRICS_FILE, VAL_PREDICTIONS_FILE


class TrialConfig(BaseModel):
    """Everything that decides a trial's result, fully resolved."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: BackendName
    model: ModelSpec
    training: TrainingSpec = TrainingSpec()
    preprocessing: Preprocessing = Preprocessing()
    round: int = Field(0, ge=0)
    threshold: float = Field(0.0, ge=0.0, le=1.0, description="decode confidence for Undefined")
    threads: int = Field(ge=1, le=1024, description="framework threads; the same count gives the same numbers")
    data_fingerprint: str = Field(min_length=1, description="what the trial reads: see data_fingerprint()")
    cache_entry: str = Field(description="directory of the array-cache entry the worker reads")
    gate: GateSpec | None = Field(None, description="calibrate the door gate on the validation split")

    @model_serializer(mode="wrap")
    def _drop_neutral(self, handler):
        return drop_neutral(handler(self), {"gate": None})

    @model_validator(mode="after")
    def _loss_fits_head(self):
        part_losses(self.model.head, self.training.loss)   # raises with the reason
        return self

    def trial_id(self) -> str:
        """Short hash of the result-deciding config (not where the arrays live)."""
        payload = self.model_dump(mode="json", exclude={"cache_entry"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def data_fingerprint(cache_key: str, manifest: SplitManifest, round_: int, table: pd.DataFrame) -> str:
    """Identity of the data one round of a trial reads.

    ``cache_key`` already covers every image file (id, path, bytes) and the
    preprocessing; adding the ids of each role with their labels covers the dataset's
    labels, ``limit``, the split protocol, its folds, seed and validation share. Any
    change to those gives new trial ids, so no earlier result is taken for a new one.
    """
    labels = table.set_index("id")[["age_group", "gender", "age"]]
    digest = hashlib.sha256(f"cache {cache_key}\n".encode())
    for role in ("train", "val", "test"):
        ids = sorted(manifest.ids(round_, role))
        rows = labels.loc[ids]
        digest.update(f"role {role} {len(ids)}\n".encode())
        for image_id, age_group, gender, age in zip(ids, rows["age_group"], rows["gender"], rows["age"]):
            digest.update(f"{image_id}\0{age_group}\0{gender}\0{age}\n".encode())
    return digest.hexdigest()[:20]


def write_trial(run_dir: str | Path, config: TrialConfig, table: pd.DataFrame,
                manifest: SplitManifest) -> Path:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if config.round not in manifest.rounds:
        raise ValueError(f"round {config.round} not in the manifest's rounds {manifest.rounds}")
    manifest.save(run_dir)
    # group (UTKFace's race) only where the dataset states one: for the fairness breakdown.
    columns = ["id", "age_group", "gender", "age"] + (["group"] if table.get("group") is not None
                                                      and table["group"].notna().any() else [])
    table[columns].to_csv(run_dir / LABELS_FILE, index=False)
    (run_dir / CONFIG_FILE).write_text(config.model_dump_json(indent=2))
    return run_dir


class TrialFileError(ValueError):
    """A trial directory whose files are missing or damaged; names the file."""


def read_config(run_dir: str | Path) -> TrialConfig:
    path = Path(run_dir) / CONFIG_FILE
    try:
        return TrialConfig.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise TrialFileError(f"{path}: missing (is {Path(run_dir)} a trial directory?)") from None
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'top level'}: {e['msg']}"
                             for e in err.errors()[:5])
        raise TrialFileError(f"{path}: not a valid trial config ({problems})") from None


class RoleData(NamedTuple):
    """One role of a trial's round: images with their labels, in the same order."""

    ids: list[str]
    x: np.ndarray            # float inputs
    age: np.ndarray          # age-group indices
    gender: np.ndarray       # gender indices
    years: np.ndarray        # exact ages in years; NaN where the dataset has none
    group: np.ndarray | None = None   # each face's group (UTKFace's race); None where the dataset has none


def exports_whole_door(config: "TrialConfig") -> bool:
    """A run on port descriptors exports as ONE network from the aligned chip (the face
    ResNet, then the trained model): nothing but detection and alignment is left to the
    host. Runs on dlib's descriptors export their model alone (dlib computes the input)."""
    prep = config.preprocessing
    return prep.embedding and prep.descriptor_engine != "dlib"


def chips_of(config: "TrialConfig", ids: list[str]) -> np.ndarray:
    """The 150x150 chips (uint8) of these faces of the run, aligned again from their photos
    (the cache holds their descriptors only): what a whole-door export reads."""
    from harness.data.cache import entry_paths
    from harness.data.faces import descriptor_chip
    from harness.data.images import aligned_chip

    paths = entry_paths(config.cache_entry)
    return np.stack([descriptor_chip(aligned_chip(paths[face])[0]) for face in ids])


def saved_model_problem(run_dir: str | Path, backend: str) -> str | None:
    """What is wrong with a finished trial's saved model files, in one line naming the
    file, or None. Checked before a framework is started on them: a missing TensorFlow
    checkpoint part, or a truncated Keras archive (which Keras reports as "File not
    found"), would otherwise surface as the last line of a framework traceback."""
    import zipfile

    run_dir = Path(run_dir)
    for name in REGISTRY[backend].saved_files():
        path = run_dir / name
        if not path.is_file():
            return f"{path}: missing (the trial's saved model); delete the trial's folder and run its experiment again"
        if path.stat().st_size == 0:
            return f"{path}: empty (the trial's saved model); delete the trial's folder and run its experiment again"
        if path.suffix == ".keras":
            try:
                with zipfile.ZipFile(path) as archive:
                    broken = archive.testzip()
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                broken = str(err) or type(err).__name__
            if broken:
                return (f"{path}: damaged, not a complete Keras archive ({broken}); delete the trial's folder "
                        "and run its experiment again")
    return None


def load_splits(run_dir: str | Path, config: TrialConfig, roles=("train", "val", "test"),
                cached: CachedArrays | None = None) -> dict[str, RoleData]:
    """role -> :class:`RoleData` for the trial's round.

    Images the cache had to skip are left out here, so labels and images stay paired.
    The cache index, manifest and labels are read once for all roles. ``cached``: the
    trial's cache entry, already open (a reused worker opens each entry once).
    """
    run_dir = Path(run_dir)
    cached = cached or CachedArrays.open(Path(config.cache_entry))
    manifest = SplitManifest.load(run_dir)
    labels = pd.read_csv(run_dir / LABELS_FILE, dtype={"id": str}).set_index("id")
    usable = set(cached.valid_ids())
    splits = {}
    for role in roles:
        ids = [i for i in manifest.ids(config.round, role) if i in usable]
        x = cached.arrays(ids) if ids else np.zeros((0,) + config.preprocessing.shape, np.float32)
        rows = labels.loc[ids]
        splits[role] = RoleData(ids, x, rows["age_group"].to_numpy(int), rows["gender"].to_numpy(int),
                                rows["age"].to_numpy(float),
                                rows["group"].to_numpy(object) if "group" in rows else None)
    return splits


def age_residuals(run_dir: str | Path, head: str) -> np.ndarray | None:
    """A years_regression run's validation residuals (true - predicted age in years), as
    their 101 :func:`~harness.models.heads.residual_quantiles`, read from its stored validation
    predictions: the spread its readout puts around a prediction. None for other heads,
    or without validation predictions or exact ages."""
    run_dir = Path(run_dir)
    path = run_dir / VAL_PREDICTIONS_FILE
    if head != "years_regression" or not path.is_file():
        return None
    with np.load(path) as saved:
        ids, outputs = saved["ids"].astype(str), saved["outputs"]
    ages = pd.read_csv(run_dir / LABELS_FILE, dtype={"id": str}).set_index("id").loc[ids, "age"].to_numpy(float)
    return residual_quantiles(ages - predicted_years(head, outputs))


def kept_validation(history: pd.DataFrame, metrics: dict | None, column: str = "val_joint_accuracy") -> float | None:
    """A trial's validation ``column`` at the epoch its saved model is from: the epoch early
    stopping kept (``metrics.json``'s ``training.epoch_kept``), otherwise the last. Never
    from the test split. None when it has no such validation measure."""
    if column not in history or history[column].dropna().empty:
        return None
    kept = ((metrics or {}).get("training") or {}).get("epoch_kept")
    rows = history[history["epoch"] == kept] if kept and "epoch" in history else history
    values = rows[column].dropna()
    return float(values.iloc[-1]) if len(values) else None


def final_validation(run_dir: str | Path, column: str = "val_joint_accuracy") -> float | None:
    """A finished trial's validation score at the epoch its saved model is from (what
    ``best`` and ensembles rank by): :func:`kept_validation` of its files."""
    run_dir = Path(run_dir)
    try:
        history = pd.read_csv(run_dir / HISTORY_FILE)
    except (OSError, ValueError):
        return None
    try:
        metrics = json.loads((run_dir / METRICS_FILE).read_text())
    except (OSError, ValueError):
        metrics = None
    return kept_validation(history, metrics if isinstance(metrics, dict) else None, column)
