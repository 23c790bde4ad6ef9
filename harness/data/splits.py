"""Split protocols and the manifest that records them.

A manifest maps every image id to a role (train / val / test) in each round of a
protocol (a round is one fold held out as test). It is computed once from a seed, saved
with the run, and read by every backend, so both frameworks see exactly the same images
in the same roles.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

from harness.data.labels import to_joint
from harness.files import write_atomic

ROLES = ("train", "val", "test")
MANIFEST_CSV, MANIFEST_JSON = "splits.csv", "splits.json"


class SplitSpec(BaseModel):
    """Which protocol, with its parameters; plain data for experiment files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: Literal["adience_folds", "stratified_kfold", "random"] = "stratified_kfold"
    folds: int = Field(5, ge=2, le=20, description="rounds of stratified_kfold")
    test_size: float = Field(0.33, gt=0.0, lt=1.0, description="test share of random")
    stratify: bool = Field(True, description="stratify random by age group x gender")
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of train kept for validation")
    seed: int = 0


@dataclass
class SplitManifest:
    spec: SplitSpec
    assignments: pd.DataFrame          # columns: round, id, role
    meta: dict = field(default_factory=dict)

    @property
    def rounds(self) -> list[int]:
        return sorted(self.assignments["round"].unique().tolist())

    def ids(self, round_: int, role: str) -> list[str]:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        rows = self.assignments
        return rows.loc[(rows["round"] == round_) & (rows["role"] == role), "id"].tolist()

    def counts(self) -> pd.DataFrame:
        return self.assignments.groupby(["round", "role"]).size().unstack(fill_value=0)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic(directory / MANIFEST_CSV, lambda p: self.assignments.to_csv(p, index=False))
        write_atomic(directory / MANIFEST_JSON, lambda p: p.write_text(
            json.dumps({"spec": self.spec.model_dump(), **self.meta}, indent=2)))

    @classmethod
    def load(cls, directory: str | Path) -> "SplitManifest":
        directory = Path(directory)
        meta = json.loads((directory / MANIFEST_JSON).read_text())
        spec = SplitSpec(**meta.pop("spec"))
        frame = pd.read_csv(directory / MANIFEST_CSV, dtype={"id": str, "role": str})
        return cls(spec, frame, meta)


def _classes(table: pd.DataFrame) -> np.ndarray:
    return to_joint(table["age_group"].to_numpy(), table["gender"].to_numpy())


def _has_subjects(table: pd.DataFrame) -> bool:
    return bool(table["subject"].notna().all())


def _carve_validation(train: pd.DataFrame, spec: SplitSpec, seed: int) -> pd.Series:
    """Boolean mask over ``train``: True for the rows kept for validation."""
    mask = pd.Series(False, index=train.index)
    if spec.val_fraction == 0:
        return mask
    if _has_subjects(train):
        # Subject-disjoint like the folds themselves, or validation would flatter the model;
        # one fold of a stratified group k-fold keeps its size near val_fraction of the
        # images even when subjects have very different numbers of photos.
        splitter = StratifiedGroupKFold(max(2, round(1 / spec.val_fraction)), shuffle=True,
                                        random_state=seed)
        _, val = next(splitter.split(train, _classes(train), groups=train["subject"]))
    else:
        _, val = train_test_split(np.arange(len(train)), test_size=spec.val_fraction,
                                  random_state=seed, stratify=_stratify_or_none(train))
    mask.iloc[val] = True
    return mask


def _stratify_or_none(table: pd.DataFrame):
    classes = _classes(table)
    counts = np.bincount(classes)
    # sklearn cannot stratify when a class has a single member; fall back to plain shuffling.
    return classes if counts[counts > 0].min() >= 2 else None


def _manifest(table: pd.DataFrame, test_masks: list[np.ndarray], spec: SplitSpec) -> pd.DataFrame:
    parts = []
    for round_, is_test in enumerate(test_masks):
        train = table[~is_test]
        is_val = _carve_validation(train, spec, spec.seed + round_)
        role = pd.Series("train", index=table.index)
        role[is_test] = "test"
        role[is_val[is_val].index] = "val"
        parts.append(pd.DataFrame({"round": round_, "id": table["id"], "role": role}))
    return pd.concat(parts, ignore_index=True)


def make_splits(table: pd.DataFrame, spec: SplitSpec | None = None) -> SplitManifest:
    """Compute the manifest for ``table`` under ``spec``; the same inputs give the same manifest."""
    spec = spec or SplitSpec()
    if len(table) == 0:
        raise ValueError("cannot split an empty table")
    # Order by id so the manifest does not depend on how the table was assembled.
    table = table.sort_values("id", kind="stable").reset_index(drop=True)
    if spec.protocol == "adience_folds":
        if table["fold"].isna().any():
            raise ValueError("adience_folds needs the published fold of every image "
                             "(only the Adience adapter provides it)")
        masks = [(table["fold"] == k).to_numpy() for k in sorted(table["fold"].unique())]
        protocol_note = "published subject-disjoint Adience folds"
    elif spec.protocol == "stratified_kfold":
        classes = _classes(table)
        if _has_subjects(table):
            splitter = StratifiedGroupKFold(spec.folds, shuffle=True, random_state=spec.seed)
            folds = splitter.split(table, classes, groups=table["subject"])
            protocol_note = "stratified by age group x gender, subject-disjoint"
        else:
            splitter = StratifiedKFold(spec.folds, shuffle=True, random_state=spec.seed)
            folds = splitter.split(table, classes)
            protocol_note = "stratified by age group x gender (no subject ids)"
        masks = []
        for _, test in folds:
            mask = np.zeros(len(table), dtype=bool)
            mask[test] = True
            masks.append(mask)
    else:
        _, test = train_test_split(
            np.arange(len(table)), test_size=spec.test_size, random_state=spec.seed,
            stratify=_stratify_or_none(table) if spec.stratify else None)
        mask = np.zeros(len(table), dtype=bool)
        mask[test] = True
        masks = [mask]
        protocol_note = "single random split" + (" (stratified)" if spec.stratify else "")
    return SplitManifest(spec, _manifest(table, masks, spec),
                         {"n_images": len(table), "description": protocol_note})
