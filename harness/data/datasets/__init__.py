"""Dataset adapters: each turns a dataset's own files into the unified table."""
from __future__ import annotations

from pathlib import Path

from harness.data.datasets.adience import load_adience
from harness.data.datasets.csv import load_csv
from harness.data.datasets.table import COLUMNS, DatasetError, UnifiedDataset, merge
from harness.data.datasets.utkface import load_utkface

LOADERS = {"adience": load_adience, "utkface": load_utkface, "csv": load_csv}


def load(kind: str, path: str | Path, **options) -> UnifiedDataset:
    """Load a dataset by adapter name: ``adience``, ``utkface`` or ``csv``."""
    if kind not in LOADERS:
        raise DatasetError(f"unknown dataset {kind!r}; choose from {sorted(LOADERS)}")
    return LOADERS[kind](path, **options)


def load_spec(spec, strict_metadata: bool = False) -> UnifiedDataset:
    """The one loader of the command line and the runner: ``spec`` names ``dataset`` and
    ``path`` and, for Adience, ``images``, ``metadata`` and ``noncanonical`` (an experiment's
    ``data:`` or ``harness data``'s arguments). ``strict_metadata`` stops at the first bad
    metadata line instead of listing it."""
    options = {}
    if spec.dataset == "adience":
        options = {"images": spec.images, "metadata": spec.metadata, "noncanonical": spec.noncanonical,
                   "strict": strict_metadata}
    return load(spec.dataset, spec.path, **options)


__all__ = ["COLUMNS", "DatasetError", "LOADERS", "UnifiedDataset", "load", "load_spec", "load_adience",
           "load_csv", "load_utkface", "merge"]
