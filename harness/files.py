"""Writing a file so that no reader ever sees half of it, and a failed write names its file."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: str | Path, write) -> None:
    """``write(partial_path)``, then rename into place: readers never see half a file.

    A failed write leaves no partial file behind, and its error names ``path`` (a write
    through a file object, as pandas and numpy make, raises an OSError that names none)."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    try:
        write(partial)
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(path)) if err.filename is None else err from None
    os.replace(partial, path)
