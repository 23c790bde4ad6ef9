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


__all__ = ["COLUMNS", "DatasetError", "LOADERS", "UnifiedDataset", "load", "load_adience",
           "load_csv", "load_utkface", "merge"]
