"""Writing a file so that no reader ever sees half of it, and a failed write names its file."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_atomic", "append_whole"]


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


def append_whole(path: str | Path, data: bytes, sync: bool = False, mode: int = 0o644) -> None:
    """``data`` (whole lines) appended by one ``write`` on a file opened for appending, so a
    process killed at any moment leaves whole lines; an error names ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from None
    finally:
        os.close(fd)
