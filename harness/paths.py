"""Names that become paths (experiment names, trial ids, dataset folders) stay inside their parent."""
from __future__ import annotations

import os
from pathlib import Path

# The checkout the harness runs from: worker processes import ``backends`` from here.
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def child_path(parent: str | Path, name: str, what: str) -> Path:
    """``parent / name``, refusing a name that would lead anywhere but directly inside.

    Checked on the normalised path (``..``, ``.``, separators, absolute names), not by
    following symlinks: a results folder linked to another disk is the user's choice.
    """
    parent = Path(parent)
    path = parent / str(name)
    if not isinstance(name, str) or not name or "\0" in name \
            or os.path.dirname(os.path.normpath(path)) != os.path.normpath(parent):
        raise ValueError(f"{what} {name!r} would not stay inside {parent}")
    return path
