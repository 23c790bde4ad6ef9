"""Adience, from either published metadata form.

``per_fold`` reads ``train_val_txt_files_per_fold/test_fold_is_{k}/{age,gender}_*.txt``
(what the original study unified: 16,156 faces with both labels); ``original`` reads
``original_txt_files/fold_{k}_data.txt``. Either way a face's ``fold`` is the
subject-disjoint fold it is tested in, which is the paper's 5-fold protocol.

Images are not shipped with the metadata: download ``aligned.tar.gz`` (or
``faces.tar.gz``) from the Adience site, unpack it so ``<images>/aligned/<user_id>/...``
(or ``<images>/faces/...``) exists, and pass ``images=<images>``.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Literal

from harness.data.datasets.table import DatasetError, Dropped, UnifiedDataset, make_table
from harness.data.labels import N_AGE, N_GENDER, parse_adience_age, parse_gender
from harness.paths import child_path

SOURCE = "adience"
N_FOLDS = 5
PER_FOLD_DIR = "train_val_txt_files_per_fold"
ORIGINAL_DIR = "original_txt_files"
# aligned/ holds landmark-aligned crops, faces/ the coarse tilt-aligned ones; the
# file names differ only in this prefix.
IMAGE_PREFIX = {"aligned": "landmark_aligned_face", "faces": "coarse_tilt_aligned_face"}
_ROLES = ("train", "val", "test")


def _image_dir(images: Path, image_dir: str | None) -> str:
    if image_dir is not None:
        if image_dir not in IMAGE_PREFIX:
            raise DatasetError(f"image_dir must be one of {sorted(IMAGE_PREFIX)}, got {image_dir!r}")
        return image_dir
    return next((d for d in IMAGE_PREFIX if (images / d).is_dir()), "aligned")


class _Reader:
    """Collects rows and drops; ``strict`` turns the first bad line into an error."""

    def __init__(self, strict: bool):
        self.strict = strict
        self.dropped = Dropped()

    def bad(self, file, line, reason, detail=""):
        if self.strict:
            where = f"{file}:{line}" if line else str(file)
            raise DatasetError(f"{where}: {reason}" + (f" ({detail})" if detail else ""))
        self.dropped.add(SOURCE, file, line, reason, detail)


def _read_per_fold(root: Path, reader: _Reader):
    base = root / PER_FOLD_DIR
    if not base.is_dir():
        raise DatasetError(f"Adience per-fold metadata not found: {base}")
    labels: dict[str, dict] = {}
    for fold in range(N_FOLDS):
        for task, n_classes in (("age", N_AGE), ("gender", N_GENDER)):
            for role in _ROLES:
                file = base / f"test_fold_is_{fold}" / f"{task}_{role}.txt"
                if not file.is_file():
                    raise DatasetError(f"Adience fold file missing: {file}")
                for line_no, line in enumerate(file.read_text().splitlines(), start=1):
                    if not line.strip():
                        continue
                    fields = line.split()
                    if len(fields) != 2 or not fields[1].isdigit():
                        reader.bad(file, line_no, "bad fold-file line",
                                   f"expected '<user_id>/<image> <{task} label>', got {line!r}")
                        continue
                    rel, label = fields[0], int(fields[1])
                    if label >= n_classes or "/" not in rel:
                        reader.bad(file, line_no, "bad fold-file line",
                                   f"{task} label must be 0..{n_classes - 1} after a "
                                   f"'<user_id>/<image>' path, got {line!r}")
                        continue
                    entry = labels.setdefault(rel, {"where": (file, line_no)})
                    if task in entry and entry[task] != label:
                        reader.bad(file, line_no, "conflicting labels",
                                   f"{rel}: {task} {label} here, {entry[task]} earlier")
                        entry["conflict"] = True
                    entry[task] = label
                    if role == "test":
                        entry["fold"] = fold
    return labels


def _per_fold_records(root: Path, images: Path, image_dir: str, reader: _Reader):
    records = []
    for rel, entry in sorted(_read_per_fold(root, reader).items()):
        file, line = entry["where"]
        missing = [t for t in ("age", "gender") if t not in entry]
        if missing:
            reader.dropped.add(SOURCE, file, line, f"no {missing[0]} label", rel)
            continue
        if entry.get("conflict"):
            continue
        if "fold" not in entry:
            reader.dropped.add(SOURCE, file, line, "in no test fold", rel)
            continue
        user, name = rel.split("/", 1)
        name = name.replace(IMAGE_PREFIX["aligned"], IMAGE_PREFIX[image_dir], 1)
        if not _inside(images, image_dir, user, name):
            reader.bad(file, line, "path leaves the image folder", rel)
            continue
        records.append(_record(images, image_dir, user, name, entry["age"], entry["gender"],
                               entry["fold"]))
    return records


def _original_records(root: Path, images: Path, image_dir: str, reader: _Reader,
                      noncanonical: str, notes: Counter):
    base = root / ORIGINAL_DIR
    records = []
    for fold in range(N_FOLDS):
        file = base / f"fold_{fold}_data.txt"
        if not file.is_file():
            raise DatasetError(f"Adience fold file missing: {file}")
        lines = file.read_text().splitlines()
        for line_no, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 5 or not fields[2].strip().isdigit():
                reader.bad(file, line_no, "bad fold-file line",
                           "expected tab-separated 'user_id original_image face_id age gender ...'")
                continue
            user, original, face_id, age_text, gender_text = (f.strip() for f in fields[:5])
            parsed = parse_adience_age(age_text)
            gender = parse_gender(gender_text) if gender_text in ("m", "f") else None
            if parsed.group is None:
                reader.dropped.add(SOURCE, file, line_no, "age missing", repr(age_text))
                continue
            if gender is None:
                reason = "gender unknown (u)" if gender_text == "u" else "gender missing"
                reader.dropped.add(SOURCE, file, line_no, reason, repr(gender_text))
                continue
            if not parsed.canonical:
                notes[age_text] += 1
                if noncanonical == "drop":
                    reader.dropped.add(SOURCE, file, line_no, "non-canonical age", age_text)
                    continue
            name = f"{IMAGE_PREFIX[image_dir]}.{face_id}.{original}"
            if not _inside(images, image_dir, user, name):
                reader.bad(file, line_no, "path leaves the image folder", f"{user}/{name}")
                continue
            records.append(_record(images, image_dir, user, name, parsed.group, gender, fold))
    return records


def _inside(images: Path, image_dir: str, user: str, name: str) -> bool:
    """A metadata row names a file directly inside ``<images>/<image_dir>/<user>/``."""
    try:
        child_path(child_path(images / image_dir, user, "user id"), name, "image name")
    except ValueError:
        return False
    return True


def _record(images: Path, image_dir: str, user: str, name: str, age: int, gender: int, fold: int):
    return {
        "id": f"{SOURCE}:{user}/{name}", "path": str(images / image_dir / user / name),
        "age_group": age, "gender": gender, "subject": user, "source": SOURCE,
        "age": None, "fold": fold,
    }


def load_adience(
    root: str | Path,
    images: str | Path | None = None,
    metadata: Literal["per_fold", "original"] = "per_fold",
    image_dir: str | None = None,
    noncanonical: Literal["map", "drop"] = "map",
    strict: bool = False,
) -> UnifiedDataset:
    """Load Adience labels from ``root`` (the folder with the two metadata folders).

    ``images`` is where ``aligned/`` or ``faces/`` was unpacked (default: ``root``).
    ``noncanonical`` decides what happens to ages like ``35`` or ``(27, 32)`` in the
    original files: mapped to the nearest group by midpoint, or dropped; either way
    ``notes['non_canonical_ages']`` counts each string.
    """
    root = Path(root)
    images = Path(images) if images is not None else root
    if not root.is_dir():
        raise DatasetError(f"Adience metadata directory not found: {root}")
    if metadata not in ("per_fold", "original"):
        raise DatasetError(f"metadata must be 'per_fold' or 'original', got {metadata!r}")
    if noncanonical not in ("map", "drop"):
        raise DatasetError(f"noncanonical must be 'map' or 'drop', got {noncanonical!r}")
    image_dir = _image_dir(images, image_dir)
    reader = _Reader(strict)
    notes: dict = {"metadata": metadata, "image_dir": image_dir}
    if metadata == "per_fold":
        records = _per_fold_records(root, images, image_dir, reader)
    else:
        counts: Counter = Counter()
        records = _original_records(root, images, image_dir, reader, noncanonical, counts)
        notes["non_canonical_ages"] = {"action": noncanonical, "counts": dict(counts.most_common())}
    if not records:
        raise DatasetError(f"no usable Adience rows under {root}")
    return UnifiedDataset(make_table(records), reader.dropped.frame(), notes)
