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
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.cache import CachedArrays
from harness.heads import part_losses
from harness.images import Preprocessing
from harness.spec import ModelSpec, TrainingSpec
from harness.splits import SplitManifest

BACKENDS = ("keras", "tflearn")
CONFIG_FILE, LABELS_FILE = "config.json", "labels.csv"
HISTORY_FILE, PREDICTIONS_FILE = "history.csv", "predictions.npz"
METRICS_FILE, ENV_FILE, LOG_FILE, DONE_FILE = "metrics.json", "env.json", "log.txt", "DONE"


class TrialConfig(BaseModel):
    """Everything that decides a trial's result, fully resolved."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["keras", "tflearn"]
    model: ModelSpec
    training: TrainingSpec = TrainingSpec()
    preprocessing: Preprocessing = Preprocessing()
    round: int = Field(0, ge=0)
    threshold: float = Field(0.0, ge=0.0, le=1.0, description="decode confidence for Undefined")
    cache_entry: str = Field(description="directory of the array-cache entry the worker reads")

    @model_validator(mode="after")
    def _loss_fits_head(self):
        part_losses(self.model.head, self.training.loss)   # raises with the reason
        return self

    def trial_id(self) -> str:
        """Short hash of the result-deciding config (not where the arrays live)."""
        payload = self.model_dump(mode="json", exclude={"cache_entry"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def write_trial(run_dir: str | Path, config: TrialConfig, table: pd.DataFrame,
                manifest: SplitManifest) -> Path:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if config.round not in manifest.rounds:
        raise ValueError(f"round {config.round} not in the manifest's rounds {manifest.rounds}")
    manifest.save(run_dir)
    table[["id", "age_group", "gender", "age"]].to_csv(run_dir / LABELS_FILE, index=False)
    (run_dir / CONFIG_FILE).write_text(config.model_dump_json(indent=2))
    return run_dir


def read_config(run_dir: str | Path) -> TrialConfig:
    path = Path(run_dir) / CONFIG_FILE
    return TrialConfig.model_validate_json(path.read_text())


def load_splits(run_dir: str | Path, config: TrialConfig, roles=("train", "val", "test")) -> dict:
    """role -> (ids, float images, age indices, gender indices) for the trial's round.

    Images the cache had to skip are left out here, so labels and images stay paired.
    The cache index, manifest and labels are read once for all roles.
    """
    run_dir = Path(run_dir)
    cached = CachedArrays.open(Path(config.cache_entry))
    manifest = SplitManifest.load(run_dir)
    labels = pd.read_csv(run_dir / LABELS_FILE, dtype={"id": str}).set_index("id")
    usable = set(cached.valid_ids())
    splits = {}
    for role in roles:
        ids = [i for i in manifest.ids(config.round, role) if i in usable]
        x = cached.arrays(ids) if ids else np.zeros((0,) + config.preprocessing.shape, np.float32)
        rows = labels.loc[ids]
        splits[role] = (ids, x, rows["age_group"].to_numpy(int), rows["gender"].to_numpy(int))
    return splits
