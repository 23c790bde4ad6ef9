"""Any labelled face set, as a CSV: ``path`` plus ``age`` or ``age_group``, plus ``gender``.

Optional columns: ``subject`` (enables subject-disjoint splits), ``id`` and ``group`` (a
demographic group, for the reports' fairness breakdown).
Relative paths are resolved against the CSV file's directory.
"""
from __future__ import annotations

import csv
from pathlib import Path

from harness.data.datasets.table import DatasetError, Dropped, UnifiedDataset, make_table
from harness.data.labels import N_AGE, age_to_group, parse_adience_age, parse_gender


def _age_group(row: dict) -> tuple[int | None, float | None, str]:
    """-> (group, exact age, error); accepts an exact age, a group index or '(25, 32)'."""
    if (row.get("age") or "").strip():
        try:
            age = float(row["age"])
            return age_to_group(age), age, ""
        except ValueError:
            return None, None, f"age {row['age']!r} is not a non-negative number"
    text = (row.get("age_group") or "").strip()
    if text.isdigit() and int(text) < N_AGE:
        return int(text), None, ""
    parsed = parse_adience_age(text)
    if parsed.group is not None and parsed.canonical:
        return parsed.group, None, ""
    return None, None, f"age_group {text!r} is not 0..{N_AGE - 1} or an Adience group like '(25, 32)'"


def load_csv(csv_path: str | Path, source: str | None = None) -> UnifiedDataset:
    csv_path = Path(csv_path)
    source = source or csv_path.stem
    if not csv_path.is_file():
        raise DatasetError(f"CSV file not found: {csv_path}")
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        missing = [c for c in ("path", "gender") if c not in columns]
        if missing or not columns & {"age", "age_group"}:
            raise DatasetError(
                f"{csv_path}: header must have 'path', 'gender' and 'age' or 'age_group'; "
                f"found {sorted(columns)}")
        records, dropped = [], Dropped()
        for line, row in enumerate(reader, start=2):
            group, age, error = _age_group(row)
            gender = parse_gender(row.get("gender", ""))
            if error:
                dropped.add(source, csv_path, line, "bad age", error)
                continue
            if gender is None:
                dropped.add(source, csv_path, line, "bad gender",
                            f"gender {row.get('gender')!r} is not m/f/male/female/0/1")
                continue
            path = Path(row["path"].strip())
            path = path if path.is_absolute() else csv_path.parent / path
            records.append({
                "id": f"{source}:{(row.get('id') or '').strip() or row['path'].strip()}",
                "path": str(path), "age_group": group, "gender": gender,
                "subject": (row.get("subject") or "").strip() or None, "source": source,
                "age": age, "fold": None, "group": (row.get("group") or "").strip() or None,
            })
    if not records:
        raise DatasetError(f"{csv_path}: no usable rows")
    return UnifiedDataset(make_table(records), dropped.frame())
