"""Figures drawn from plain tables (no framework imports, headless matplotlib)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from harness.labels import GENDER_WORDS, N_AGE, age_label  # noqa: E402
from harness.splits import ROLES, SplitManifest  # noqa: E402

ROLE_COLOURS = {"train": "#4c72b0", "val": "#dd8452", "test": "#55a868"}


def split_class_counts(table: pd.DataFrame, manifest: SplitManifest) -> pd.DataFrame:
    """Long table: round, role, gender, age_group, count (zeros included)."""
    labelled = manifest.assignments.merge(table[["id", "age_group", "gender"]], on="id")
    counts = labelled.groupby(["round", "role", "gender", "age_group"]).size()
    full = pd.MultiIndex.from_product(
        [manifest.rounds, ROLES, range(len(GENDER_WORDS)), range(N_AGE)], names=counts.index.names)
    return counts.reindex(full, fill_value=0).rename("count").reset_index()


def plot_split_balance(table: pd.DataFrame, manifest: SplitManifest, out_dir: str | Path,
                       title: str = "") -> list[Path]:
    """One PNG per round: class counts per age group, male and female panels, bars per role."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = split_class_counts(table, manifest)
    written = []
    x = np.arange(N_AGE)
    width = 0.8 / len(ROLES)
    for round_ in manifest.rounds:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
        for gender, axis in enumerate(axes):
            for k, role in enumerate(ROLES):
                rows = counts[(counts["round"] == round_) & (counts["role"] == role)
                              & (counts["gender"] == gender)].sort_values("age_group")
                axis.bar(x + (k - 1) * width, rows["count"], width, label=role,
                         color=ROLE_COLOURS[role])
            axis.set_title(GENDER_WORDS[gender])
            axis.set_xticks(x, [age_label(i) for i in range(N_AGE)], rotation=30)
            axis.set_xlabel("age group")
        axes[0].set_ylabel("images")
        axes[0].legend()
        label = f"{manifest.spec.protocol}, round {round_}"
        fig.suptitle(f"{title} — {label}" if title else label)
        fig.tight_layout()
        path = out_dir / f"split_balance_round{round_}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
