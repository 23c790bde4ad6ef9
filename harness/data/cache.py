"""On-disk array cache: decoded, preprocessed faces in a NumPy memmap.

A cache entry is keyed by a fingerprint of the image list (ids, paths, sizes and
modification times) and the preprocessing, so a second load of the same data decodes
nothing, and any change to a file or a parameter builds a new entry. Entries are built
in a temporary folder and renamed into place, so a crash never leaves a half-written
entry that looks complete.

Workers write straight into the memmap and return only skips and notes: the parent never
holds the images, which keeps a build's memory flat in the number of images.
"""
from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.data.images import ImageError, Preprocessing, load_face, to_float
from harness.processes import pid_alive, quiet_child

CACHE_ENV = "HARNESS_CACHE"
IMAGES_FILE, INDEX_FILE = "images.npy", "index.json"
CHUNK = 128
SKIPPED, UNALIGNED, CHECKSUM = "skipped", "unaligned", "checksum"


class CacheError(RuntimeError):
    """Raised in strict mode when images could not be decoded; lists each one."""


class DamagedEntry(CacheError):
    """A cache entry whose files are not what its build wrote; names the entry and the file.
    :func:`build` removes such an entry and builds it again."""


# Entries whose checksums this process has verified: (path, size, mtime) of images.npy.
_VERIFIED: set[tuple[str, int, int]] = set()


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, ".cache/arrays"))


def fingerprint(ids: Sequence[str], paths: Sequence[str], prep: Preprocessing,
                missing: list[int] | None = None) -> str:
    """The cache key: the preprocessing and each image's id, path and bytes.

    By content, not modification time: a dataset copied or provisioned again keeps its
    entries (the face descriptors of UTKFace take half an hour to compute), while an
    image whose bytes change gets a new key. Hashing all of UTKFace takes about 2 s.
    ``missing`` collects the rows whose file cannot be read.
    """
    digest = hashlib.sha256(prep.model_dump_json().encode())
    for row, (image_id, path) in enumerate(zip(ids, paths, strict=True)):
        try:
            with open(path, "rb") as handle:
                signature = hashlib.blake2b(handle.read(), digest_size=16).hexdigest()
        except OSError:
            signature = "missing"
            if missing is not None:
                missing.append(row)
        digest.update(f"{image_id}\0{path}\0{signature}\n".encode())
    return digest.hexdigest()[:20]


@dataclass
class CachedArrays:
    """A built cache entry: ``images[i]`` is the face with ``ids[i]`` when ``valid[i]``."""

    directory: Path
    ids: np.ndarray
    images: np.ndarray           # memmap: uint8 pixels (N, H, W, C) or float32 descriptors (N, 128)
    valid: np.ndarray            # bool (N,)
    skipped: pd.DataFrame        # id, path, reason for each image that failed
    prep: Preprocessing
    unaligned: pd.DataFrame      # id, path, reason for each image cached without alignment

    @classmethod
    def open(cls, directory: Path) -> "CachedArrays":
        """Open a built entry, checked: its index must parse, its images file must have the
        shape and dtype the index implies, and its bytes the checksum the build recorded
        (verified once per process; entries built before checksums have only the first two)."""
        directory = Path(directory)
        try:
            index = json.loads((directory / INDEX_FILE).read_text())
            ids = np.asarray(index["ids"], dtype=object)
            prep = Preprocessing(**index["prep"])
            skipped = pd.DataFrame(index["skipped"], columns=["id", "path", "reason"])
            valid = np.ones(len(ids), dtype=bool)
            valid[index["skipped_rows"]] = False
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
            raise DamagedEntry(f"cache entry {directory}: {INDEX_FILE} is damaged ({type(err).__name__}: {err})") \
                from None
        images_file = directory / IMAGES_FILE
        try:
            images = np.load(images_file, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise DamagedEntry(f"cache entry {directory}: {IMAGES_FILE} cannot be read as the array its index "
                               f"describes ({err}); it is truncated or damaged") from None
        expected = (len(ids),) + tuple(prep.shape)
        if images.shape != expected or images.dtype != np.dtype(prep.dtype):
            raise DamagedEntry(f"cache entry {directory}: {IMAGES_FILE} holds {images.dtype} {images.shape}, its "
                               f"index says {np.dtype(prep.dtype)} {expected}")
        if "chunk_crc32" in index:
            _verify_rows(directory, images_file, images, index["chunk_crc32"], index["chunk_rows"])
        unaligned = pd.DataFrame(index.get("unaligned", []), columns=["id", "path", "reason"])
        return cls(directory, ids, images, valid, skipped, prep, unaligned)

    def positions(self, ids: Sequence[str]) -> np.ndarray:
        """Row of each requested id; raises on an id that is absent or was skipped."""
        lookup = {image_id: row for row, image_id in enumerate(self.ids)}
        try:
            rows = np.fromiter((lookup[i] for i in ids), dtype=np.int64, count=len(ids))
        except KeyError as err:
            raise KeyError(f"id {err.args[0]!r} is not in this cache entry") from None
        bad = rows[~self.valid[rows]]
        if len(bad):
            raise KeyError(f"{len(bad)} requested images were skipped while caching "
                           f"(first: {self.ids[bad[0]]!r}); filter with .valid_ids()")
        return rows

    def valid_ids(self) -> list[str]:
        return list(self.ids[self.valid])

    def arrays(self, ids: Sequence[str]) -> np.ndarray:
        """float32 images for ``ids`` in that order, scaled as the preprocessing says."""
        rows = self.positions(ids)
        return to_float(self.images[np.sort(rows)][np.argsort(np.argsort(rows))], self.prep)

    def batches(self, ids: Sequence[str], batch_size: int = 256) -> Iterator[np.ndarray]:
        """Stream float32 batches for ``ids`` without materialising them all."""
        rows = self.positions(ids)
        for start in range(0, len(rows), batch_size):
            yield to_float(self.images[rows[start:start + batch_size]], self.prep)


def _decode_into(images_file: str, start: int, paths: list[str], prep_json: str) -> list[tuple[int, str, str]]:
    """Decode one chunk into the memmap -> (row, kind, reason) of every skip or note."""
    prep = Preprocessing.model_validate_json(prep_json)
    target = np.load(images_file, mmap_mode="r+")
    events = []
    for offset, path in enumerate(paths):
        try:
            target[start + offset], note = load_face(path, prep)
            if note:
                events.append((start + offset, UNALIGNED, note))
        except ImageError as err:
            events.append((start + offset, SKIPPED, str(err)))
        except Exception as err:   # one bad item never takes the build down
            events.append((start + offset, SKIPPED, f"cannot process: {type(err).__name__}: {err}"))
    # The chunk's checksum, from the rows just written (no second read of the file).
    events.append((start, CHECKSUM, str(_chunk_crc32(target[start:start + len(paths)]))))
    # No flush: msync per chunk costs a quarter of the build rate, and the pages reach
    # every reader through the page cache anyway. Unmapping now keeps this worker's
    # resident memory from growing chunk after chunk.
    del target
    return events


def _chunk_crc32(rows: np.ndarray) -> int:
    """CRC-32 of a run of rows as stored: damage, not tampering, is what it looks for."""
    return zlib.crc32(memoryview(np.ascontiguousarray(rows)).cast("B"))


def _verified_key(images_file: Path) -> tuple[str, int, int]:
    """What a verification holds for: this very file, as long as its size and mtime stay."""
    stat = images_file.stat()
    return str(images_file.resolve()), stat.st_size, stat.st_mtime_ns


def _verify_rows(directory: Path, images_file: Path, images: np.ndarray, crcs: list[int], rows: int) -> None:
    """Each run of ``rows`` rows against the CRC-32 its build worker recorded, once per process
    (read through the memory map, no copies: about a tenth of a second for 250 MiB)."""
    key = _verified_key(images_file)
    if key in _VERIFIED:
        return
    for number, expected in enumerate(crcs):
        start = number * rows
        if _chunk_crc32(images[start:start + rows]) != expected:
            raise DamagedEntry(f"cache entry {directory}: {IMAGES_FILE} rows {start}-"
                               f"{min(start + rows, len(images)) - 1} do not have the checksum their build "
                               "recorded: the bytes changed since")
    _VERIFIED.add(key)


def entry_paths(directory: str | Path) -> dict[str, str]:
    """id -> image path of a built entry (what it was built from)."""
    index = json.loads((Path(directory) / INDEX_FILE).read_text())
    return dict(zip(index["ids"], index["paths"]))


def lookup(ids: Sequence[str], paths: Sequence[str], prep: Preprocessing,
           cache_dir: str | Path | None = None) -> CachedArrays | None:
    """The existing entry for these images, or None; never builds or writes anything."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entry = cache_dir / fingerprint(list(ids), [str(p) for p in paths], prep)
    if not (entry / INDEX_FILE).is_file():
        return None
    try:
        return CachedArrays.open(entry)
    except DamagedEntry:
        return None   # build() names it, removes it and builds it again


def build(
    ids: Sequence[str],
    paths: Sequence[str],
    prep: Preprocessing,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    strict: bool = False,
    progress: bool = False,
) -> CachedArrays:
    """Return the cache entry for these images, decoding them only if it does not exist."""
    ids, paths = list(ids), [str(p) for p in paths]
    if len(set(ids)) != len(ids):
        raise ValueError("image ids must be unique")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entry = cache_dir / fingerprint(ids, paths, prep)
    if (entry / INDEX_FILE).is_file() or entry.is_dir():
        try:
            CachedArrays.open(entry)
        except (DamagedEntry, FileNotFoundError) as err:
            print(f"harness: {err}: building it again", file=sys.stderr, flush=True)
            _discard(entry)
    if not (entry / INDEX_FILE).is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        _build_entry(entry, ids, paths, prep, workers or os.cpu_count() or 1, progress)
    cached = CachedArrays.open(entry)
    if strict and len(cached.skipped):
        lines = "\n".join(f"  {r.path}: {r.reason}" for r in cached.skipped.itertuples())
        raise CacheError(f"{len(cached.skipped)} images could not be decoded:\n{lines}")
    return cached


def last_build(prep: Preprocessing, cache_dir: str | Path | None = None) -> dict | None:
    """The timing of the most recent entry built with this preprocessing (any images):
    ``{"seconds", "images", "workers"}``, or None when no entry recorded one."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    wanted, best = prep.model_dump(mode="json"), None
    for index_file in cache_dir.glob(f"*/{INDEX_FILE}"):
        try:
            index = json.loads(index_file.read_text())
            mtime = index_file.stat().st_mtime
            timing = index.get("build")
            same = Preprocessing(**index["prep"]).model_dump(mode="json") == wanted
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            continue   # an older or damaged entry: no timing to quote
        if same and isinstance(timing, dict) and timing.get("images") and (best is None or mtime > best[0]):
            best = (mtime, timing)
    return best[1] if best else None


def _discard(entry: Path) -> None:
    """Take a damaged entry out of the way (renamed first, so no reader meets half of it)."""
    aside = entry.with_name(f"{entry.name}{STAGING_MARK}{os.getpid()}-damaged")
    try:
        entry.rename(aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


STAGING_MARK = ".building-"


def remove_stale_staging(cache_dir: Path) -> list[Path]:
    """Delete staging folders whose building process is gone (killed mid-build)."""
    removed = []
    for staging in cache_dir.glob(f"*{STAGING_MARK}*"):
        pid_text = staging.name.split(STAGING_MARK, 1)[1].split("-", 1)[0]
        if staging.is_dir() and not (pid_text.isdigit() and pid_alive(int(pid_text))):
            shutil.rmtree(staging, ignore_errors=True)
            removed.append(staging)
    return removed


def _build_entry(entry: Path, ids, paths, prep: Preprocessing, workers: int, progress: bool) -> None:
    remove_stale_staging(entry.parent)
    # The builder's pid is in the name, so a later build can tell a dead build's
    # leftovers from one still running in another process.
    staging = Path(tempfile.mkdtemp(prefix=f"{entry.name}{STAGING_MARK}{os.getpid()}-", dir=entry.parent))
    try:
        images_file = staging / IMAGES_FILE
        np.lib.format.open_memmap(images_file, mode="w+", dtype=prep.dtype,
                                  shape=(len(ids),) + prep.shape).flush()
        _reserve(images_file, entry.parent)
        started = time.monotonic()
        if prep.embedding and prep.descriptor_engine != "dlib":
            events = sorted(_port_descriptors(staging, images_file, paths, prep, workers, progress))
        else:
            events = sorted(_run_chunks(str(images_file), paths, prep.model_dump_json(), workers, progress))
        seconds = time.monotonic() - started
        failures = [(row, why) for row, kind, why in events if kind == SKIPPED]
        index = {
            "ids": ids, "paths": paths, "prep": prep.model_dump(),
            "skipped_rows": [row for row, _ in failures],
            "skipped": [{"id": ids[row], "path": paths[row], "reason": why} for row, why in failures],
            "unaligned": [{"id": ids[row], "path": paths[row], "reason": why}
                          for row, kind, why in events if kind == UNALIGNED],
            # What a dry run quotes for the next build with this preprocessing.
            "build": {"seconds": round(seconds, 3), "images": len(ids), "workers": workers},
            # What every later open checks the stored rows against (once per process).
            "chunk_rows": CHUNK,
            "chunk_crc32": [int(why) for _, kind, why in events if kind == CHECKSUM],
        }
        (staging / INDEX_FILE).write_text(json.dumps(index))
        try:
            staging.rename(entry)
        except OSError:
            # Another process finished the same entry first; theirs is identical.
            if not (entry / INDEX_FILE).is_file():
                raise
        else:
            # Its checksums were taken from the rows as they were written: nothing to read again.
            _VERIFIED.add(_verified_key(entry / IMAGES_FILE))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _reserve(images_file: Path, cache_dir: Path) -> None:
    """Allocate the whole images file now: a memmap written into a sparse file on a full
    disk gets SIGBUS from the kernel, which no handler can turn into a message."""
    size = images_file.stat().st_size
    fd = os.open(images_file, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(cache_dir).free
            raise CacheError(f"{cache_dir}: no space for a cache entry of {size:,} bytes ({free:,} bytes free); "
                             "free some space, or set HARNESS_CACHE to a folder on another disk") from None
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):   # a filesystem without it: written as before
            raise
    finally:
        os.close(fd)


def _port_descriptors(staging: Path, images_file: Path, paths: list[str], prep: Preprocessing, workers: int,
                      progress: bool) -> list[tuple[int, str, str]]:
    """descriptor_engine other than dlib (:mod:`.descriptors`): chips on every core, then
    the network in one backend worker; skipped rows stay zero, checksums as for pixels."""
    from harness.data import descriptors
    from harness.data.faces import DESCRIPTOR_CHIP

    chips_file = staging / descriptors.CHIPS_FILE
    np.lib.format.open_memmap(chips_file, mode="w+", dtype=np.uint8,
                              shape=(len(paths), DESCRIPTOR_CHIP, DESCRIPTOR_CHIP, 3)).flush()
    _reserve(chips_file, staging.parent)
    events = _run_chunks(str(chips_file), paths, prep.model_dump_json(), workers, progress, descriptors.chip_into)
    described = staging / "described.npy"
    descriptors.describe_chips(chips_file, described, prep, progress)
    chips_file.unlink()
    values = np.load(described, mmap_mode="r")
    target = np.load(images_file, mmap_mode="r+")
    target[:] = values
    target[[row for row, kind, _ in events if kind == SKIPPED]] = 0
    events += [(start, CHECKSUM, str(_chunk_crc32(target[start:start + CHUNK])))
               for start in range(0, len(paths), CHUNK)]
    target.flush()
    del target, values
    described.unlink()
    return events


def _run_chunks(images_file: str, paths: list[str], prep_json: str, workers: int, progress: bool,
                work=None):
    work = work or _decode_into
    starts = range(0, len(paths), CHUNK)
    if workers <= 1 or len(paths) <= CHUNK:
        return [f for s in starts for f in work(images_file, s, paths[s:s + CHUNK], prep_json)]
    failures = []
    # Forking a process that already runs TensorFlow's thread pools can deadlock the
    # children, so such callers pay for spawn; everyone else gets cheap forks.
    context = multiprocessing.get_context("spawn" if "tensorflow" in sys.modules else "fork")
    # The children die with this process (even on kill -9) and leave Ctrl-C to it.
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=quiet_child)
    try:
        futures = [pool.submit(work, images_file, s, paths[s:s + CHUNK], prep_json) for s in starts]
        done = as_completed(futures)
        if progress:
            from tqdm import tqdm
            done = tqdm(done, total=len(futures), desc="caching images", unit="chunk")
        for future in done:
            failures.extend(future.result())
    except BaseException:
        # Interrupted: drop the queued chunks instead of decoding them all first.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return failures
