"""The unified table every dataset adapter produces, and the record of what it dropped."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from harness.data.labels import GENDER_WORDS, N_AGE, age_label

# ``group``: a demographic group the dataset states for the face (UTKFace: race), for the
# reports' fairness breakdown; None where a dataset states none (Adience).
COLUMNS = ["id", "path", "age_group", "gender", "subject", "source", "age", "fold", "group"]
DROPPED_COLUMNS = ["source", "file", "line", "reason", "detail"]


class DatasetError(ValueError):
    """A dataset file is missing or unusable as a whole (not one bad row)."""


@dataclass
class Dropped:
    """Rows an adapter left out, each with where it came from and why."""

    rows: list[dict] = field(default_factory=list)

    def add(self, source: str, file, line: int | None, reason: str, detail: str = "") -> None:
        self.rows.append({"source": source, "file": str(file), "line": line,
                          "reason": reason, "detail": detail})

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=DROPPED_COLUMNS)


@dataclass
class UnifiedDataset:
    """``table``: one row per usable face (columns :data:`COLUMNS`).

    ``dropped``: one row per left-out input row. ``notes``: adapter-specific counts
    worth reporting (e.g. how Adience's non-canonical age strings were handled).
    """

    table: pd.DataFrame
    dropped: pd.DataFrame
    notes: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return "+".join(sorted(self.table["source"].unique())) if len(self.table) else "empty"

    def crosstab(self) -> pd.DataFrame:
        """Age group x gender counts, with totals, in label order."""
        counts = pd.crosstab(self.table["gender"], self.table["age_group"])
        counts = counts.reindex(index=range(len(GENDER_WORDS)), columns=range(N_AGE), fill_value=0)
        counts.index = [w.capitalize() for w in GENDER_WORDS]
        counts.columns = [age_label(i) for i in range(N_AGE)]
        counts["Total"] = counts.sum(axis=1)
        counts.loc["Total"] = counts.sum(axis=0)
        return counts

    def dropped_by_reason(self) -> pd.Series:
        return self.dropped.groupby("reason").size().sort_values(ascending=False)


def make_table(records: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(records, columns=COLUMNS)
    frame["age_group"] = frame["age_group"].astype("int64")
    frame["gender"] = frame["gender"].astype("int64")
    frame["age"] = frame["age"].astype("float64")
    frame["fold"] = frame["fold"].astype("Int64")
    frame["subject"] = frame["subject"].astype("object")
    frame["group"] = frame["group"].astype("object").where(frame["group"].notna(), None)
    return frame.sort_values("id", kind="stable").reset_index(drop=True)


def merge(datasets: list[UnifiedDataset]) -> UnifiedDataset:
    """Stack several datasets into one; ids are source-prefixed so they stay unique."""
    if not datasets:
        raise DatasetError("merge needs at least one dataset")
    table = pd.concat([d.table for d in datasets], ignore_index=True)
    duplicated = table["id"][table["id"].duplicated()]
    if len(duplicated):
        raise DatasetError(
            f"merged datasets share {len(duplicated)} ids (first: {duplicated.iloc[0]!r}); "
            "give each dataset its own source name")
    dropped = pd.concat([d.dropped for d in datasets], ignore_index=True)
    notes = {d.name: d.notes for d in datasets if d.notes}
    return UnifiedDataset(make_table(table.to_dict("records")), dropped, notes)

