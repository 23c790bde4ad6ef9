"""UTKFace: labels live in the file name ``[age]_[gender]_[race]_[datetime].jpg.chip.jpg``."""
from __future__ import annotations

import re
from pathlib import Path

from harness.data.datasets.table import DatasetError, Dropped, UnifiedDataset, make_table
from harness.data.labels import age_to_group

SOURCE = "utkface"
# The race digit of UTKFace's file names, in the dataset's own words.
RACES = ("White", "Black", "Asian", "Indian", "Others")
_NAME = re.compile(r"^(\d+)_([01])_([0-4])_(\d+)\.jpg\.chip\.jpg$")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def load_utkface(root: str | Path) -> UnifiedDataset:
    """Every image in ``root`` whose name parses; a malformed name is dropped and listed.

    UTKFace has no subject ids, so ``subject`` stays empty and splits can only be
    stratified, not subject-disjoint.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"UTKFace directory not found: {root}")
    records, dropped = [], Dropped()
    for path in sorted(p for p in root.iterdir() if p.name.lower().endswith(_IMAGE_SUFFIXES)):
        match = _NAME.match(path.name)
        if not match:
            dropped.add(SOURCE, path, None, "malformed file name",
                        "expected [age]_[gender 0|1]_[race 0-4]_[datetime].jpg.chip.jpg")
            continue
        age, gender = int(match.group(1)), int(match.group(2))
        records.append({
            "id": f"{SOURCE}:{path.name}", "path": str(path), "age_group": age_to_group(age),
            "gender": gender, "subject": None, "source": SOURCE, "age": float(age),
            "fold": None, "group": RACES[int(match.group(3))],
        })
    if not records:
        raise DatasetError(f"no UTKFace images with parseable names in {root}")
    return UnifiedDataset(make_table(records), dropped.frame())
