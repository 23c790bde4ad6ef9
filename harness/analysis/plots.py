"""Figures drawn from plain tables (no framework imports, headless matplotlib)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from harness.data.labels import GENDER_WORDS, N_AGE, age_label  # noqa: E402
from harness.data.splits import ROLES, SplitManifest  # noqa: E402
from harness.models import backends  # noqa: E402

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




def forest_plot(rows: pd.DataFrame, metrics: list[str], path: str | Path, title: str, xlabel: str) -> Path:
    """Paired differences with their intervals, one panel per metric, zero marked.

    ``rows``: label, metric, difference, ci_low, ci_high, significant (bool), optionally
    tested (bool: False for a comparison with too few rounds, drawn as a grey cross) and
    backend (one marker per backend on each label's line). The panels share one x-scale,
    so their differences compare at a glance.
    """
    labels = list(dict.fromkeys(rows["label"]))
    groups = list(dict.fromkeys(rows["backend"])) if "backend" in rows else [None]
    height = 1.9 + 0.32 * len(labels)   # inches; the bottom 0.6 hold the legend
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics) + 2.5, height),
                             sharey=True, sharex=True, squeeze=False)
    y = {label: len(labels) - 1 - n for n, label in enumerate(labels)}
    for axis, metric in zip(axes[0], metrics):
        part = rows[rows["metric"] == metric]
        for k, group in enumerate(groups):
            mine = part if group is None else part[part["backend"] == group]
            offset = 0.0 if group is None else (k - (len(groups) - 1) / 2) * 0.25
            colour = backends.colour(group, "#333333") if group else "#333333"
            ys = np.array([y[label] for label in mine["label"]]) + offset
            errors = np.vstack([mine["difference"] - mine["ci_low"], mine["ci_high"] - mine["difference"]])
            axis.errorbar(mine["difference"], ys, xerr=np.nan_to_num(errors), fmt="none", ecolor=colour, lw=1.2)
            tested = mine["tested"].to_numpy(bool) if "tested" in mine else np.ones(len(mine), bool)
            filled = mine["significant"].to_numpy(bool) & tested
            axis.scatter(mine["difference"][filled], ys[filled], color=colour, s=22, zorder=3,
                         label=f"{group or 'difference'}: interval excludes 0")
            axis.scatter(mine["difference"][~filled & tested], ys[~filled & tested], facecolor="white",
                         edgecolor=colour, s=22, zorder=3, label=f"{group or 'difference'}: no detectable difference")
            if (~tested).any():
                axis.scatter(mine["difference"][~tested], ys[~tested], marker="x", color="#999999", s=22, zorder=3,
                             label=f"{group or 'difference'}: not tested (not enough rounds)")
        axis.axvline(0, color="grey", lw=1, ls="--")
        axis.set_title(metric, fontsize=9)
        axis.set_xlabel(xlabel, fontsize=8)
        axis.tick_params(labelsize=7)
    axes[0][0].set_yticks(list(y.values()), list(y.keys()), fontsize=7)
    axes[0][0].set_ylim(-0.7, len(labels) - 0.3)
    handles, names = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(4, len(names)), fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.6 / height, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
