"""The search's figures, drawn from its plain tables (``search.csv``, the importance
table): the optimisation history, the fANOVA importance and one slice per searched value."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

__all__ = ["history_plot", "importance_plot", "slice_plot"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def history_plot(history: pd.DataFrame, metric: str, percent: bool, plots: Path) -> Path | None:
    scored = history[history["state"] == "complete"]
    if scored.empty:
        return None
    plt = _pyplot()
    scale = 100 if percent else 1
    plots.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(scored["configuration"], scale * scored["value"], "o", label="configuration")
    pruned = history[history["state"] == "pruned"]
    if len(pruned):
        ax.plot(pruned["configuration"], scale * pruned["value"], "x", color="grey",
                label="pruned (value when judged)")
    ax.step(history["configuration"], scale * history["best_so_far"], where="post", label="best so far")
    ax.set_xlabel("configuration, in the order asked")
    ax.set_ylabel(metric + (" (%)" if percent else ""))
    ax.set_title("Search: optimisation history")
    ax.legend()
    fig.tight_layout()
    out = plots / "search_history.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def importance_plot(importance: pd.DataFrame, plots: Path) -> Path | None:
    if importance.empty:
        return None
    plt = _pyplot()
    plots.mkdir(parents=True, exist_ok=True)
    ordered = importance.sort_values("importance")
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(ordered)))
    ax.barh(ordered["parameter"], ordered["importance"])
    ax.set_xlabel("fANOVA importance (share of the variance explained)")
    ax.set_title("Search: what mattered")
    fig.tight_layout()
    out = plots / "search_importance.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def searched_values(scored: pd.DataFrame) -> dict[str, list]:
    """Each searched name -> the values the scored configurations had, in their order."""
    decoded = [json.loads(p) for p in scored["params"]]
    names = sorted({k for params in decoded for k in params})
    return {name: [params.get(name) for params in decoded] for name in names}


def slice_plot(scored: pd.DataFrame, space: dict, metric: str, percent: bool, plots: Path) -> Path | None:
    """One panel per searched value: each scored configuration's score against its setting
    (a log axis for a log_uniform range, one column per choice for the others)."""
    values = searched_values(scored) if len(scored) else {}
    if not values:
        return None
    plt = _pyplot()
    plots.mkdir(parents=True, exist_ok=True)
    scale = 100 if percent else 1
    columns = min(3, len(values))
    rows = math.ceil(len(values) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.3 * columns, 2.8 * rows), squeeze=False, sharey=True)
    scores = scale * scored["value"].to_numpy()
    order = scored["configuration"].to_numpy()
    for ax, (name, settings) in zip(axes.flat, values.items()):
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in settings)
        stored = space.get(name) if isinstance(space.get(name), dict) else {}
        kind = next((k for k, v in stored.items() if v is not None), "choice")
        if numeric and kind != "choice":
            points = ax.scatter(settings, scores, c=order, cmap="viridis", s=18)
            if kind == "log_uniform":
                ax.set_xscale("log")
        else:
            labels = sorted({json.dumps(v) for v in settings})
            points = ax.scatter([labels.index(json.dumps(v)) for v in settings], scores, c=order, cmap="viridis", s=18)
            ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=7)
        ax.set_title(name, fontsize=9)
    for ax in list(axes.flat)[len(values):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(metric + (" (%)" if percent else ""), fontsize=8)
    fig.colorbar(points, ax=axes, shrink=0.8, label="configuration (order asked)")
    fig.suptitle("Search: slices (scored configurations)", fontsize=10)
    fig.subplots_adjust(top=0.82, bottom=0.2)
    out = plots / "search_slices.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
