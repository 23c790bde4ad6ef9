"""Putting a report in place without losing anything: its files are written into a staging
folder inside the report folder, then moved in one by one, ``report.md`` and ``report.html``
last, and only then are the previous report's leftover files removed.

So a kill at any moment leaves a ``report.md`` whose every link resolves (the old one with
its old plots, or the new one with its new plots). Only files the harness wrote are ever
removed or replaced: each report lists its files in ``.report-files.json``; a file under
``tables/`` or ``plots/`` that no report listed is the user's and is kept, and one the new
report would overwrite is refused. A folder given as ``--out`` may hold nothing but a report.
"""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from harness.processes import pid_alive
from harness.runs.layout import (
    REPORT_FILES,
    REPORT_HTML,
    REPORT_MD,
    REPORT_PLOTS_DIR,
    REPORT_STAGING_PREFIX,
    REPORT_TABLES_DIR,
    kind_of,
)

__all__ = ["staged_report", "check_out"]

_REPORT_ENTRIES = {REPORT_MD, REPORT_HTML, REPORT_TABLES_DIR, REPORT_PLOTS_DIR, REPORT_FILES}
_FOLDERS = (REPORT_TABLES_DIR, REPORT_PLOTS_DIR)


def check_out(out: Path, results_dir: Path | None = None) -> None:
    """Refuse an ``--out`` that is not (or would not become) a folder holding only a report.

    ``results_dir`` is the folder being reported on: its own report goes inside it."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: not a folder; --out takes a folder for the report")
    if results_dir is not None and out.exists() and out.resolve() == results_dir.resolve():
        return
    kind = kind_of(out)
    if kind != "unknown":
        raise ValueError(f"{out}: a {kind.replace('_', ' ')} folder, not a report folder; the report of "
                         f"a results folder goes into it without --out, and --out takes a folder of its own")
    if out.is_dir():
        others = sorted(p.name for p in out.iterdir()
                        if p.name not in _REPORT_ENTRIES and not p.name.startswith(REPORT_STAGING_PREFIX))
        if others:
            listed = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            raise ValueError(f"{out}: holds files that are not a report ({listed}); --out takes an empty "
                             "folder or one an earlier report was written into")


def _written_before(out: Path) -> set[str]:
    """Files (relative to ``out``) that earlier reports wrote here."""
    listing = out / REPORT_FILES
    try:
        names = json.loads(listing.read_text())
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            return set(names)
    except (OSError, json.JSONDecodeError):
        pass
    # Reports before the listing existed wrote only CSV tables and PNG plots.
    found = {f"{folder}/{p.name}" for folder in _FOLDERS for p in (out / folder).glob("*")
             if p.is_file() and p.suffix in (".csv", ".png")}
    return found | {n for n in (REPORT_MD, REPORT_HTML) if (out / n).is_file()}


def _write_listing(out: Path, names: set[str]) -> None:
    partial = out / (REPORT_FILES + ".partial")
    partial.write_text(json.dumps(sorted(names), indent=1) + "\n")
    os.replace(partial, out / REPORT_FILES)


def _clear_stale_staging(out: Path) -> None:
    for stale in out.glob(REPORT_STAGING_PREFIX + "*"):
        pid = stale.name[len(REPORT_STAGING_PREFIX):]
        if not (pid.isdigit() and pid_alive(int(pid))):
            shutil.rmtree(stale, ignore_errors=True)


def _files(stage: Path) -> set[str]:
    return {p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file()}


@contextmanager
def staged_report(out: Path, results_dir: Path | None = None):
    """Yield a fresh folder to write the report into (the same layout as ``out``); on a
    clean exit its files replace the previous report's in ``out``. On an error nothing
    in ``out`` changes."""
    check_out(out, results_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        _clear_stale_staging(out)
        stage = out / f"{REPORT_STAGING_PREFIX}{os.getpid()}"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
    except OSError as err:
        raise ValueError(f"{out}: cannot write a report here ({err.strerror or err}); "
                         "give --out with a folder you can write") from None
    try:
        for folder in _FOLDERS:
            (stage / folder).mkdir()
        yield stage
        _swap_in(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _swap_in(stage: Path, out: Path) -> None:
    new, old = _files(stage), _written_before(out)
    clobbered = sorted(n for n in new if n not in old and (out / n).exists())
    if clobbered:
        raise ValueError(f"{out / clobbered[0]}: not written by a report, and the new report would "
                         "replace it; move it away (or choose another --out)")
    _write_listing(out, old | new)   # a kill from here on leaves every file we own listed
    last = {REPORT_MD, REPORT_HTML}
    for folder in _FOLDERS:
        (out / folder).mkdir(exist_ok=True)
    for name in sorted(new - last):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage / name, out / name)
    for name in (REPORT_HTML, REPORT_MD):   # the report's links all resolve from here on
        if name in new:
            os.replace(stage / name, out / name)
    for name in sorted(old - new):
        (out / name).unlink(missing_ok=True)
    _write_listing(out, new)
