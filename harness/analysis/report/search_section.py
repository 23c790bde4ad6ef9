"""A searched experiment's section of the report: the configurations in the order the
sampler asked for them, each one's score and the best so far, and the optimisation
history as a plot. Read from ``search.csv`` (plain data the search writes), never from
the study itself."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.runs.layout import SEARCH_TABLE_FILE
from harness.runs.search_space import SEARCH_METRICS

__all__ = ["search_section"]


def _shown(value, percent: bool) -> str:
    if pd.isna(value):
        return "—"
    return f"{100 * value:.1f}" if percent else f"{value:.3f}"


def search_section(results_dir: Path, stored: dict, tables: Path, plots: Path):
    """(text, table, plot path or None) for the report, or None for a grid experiment."""
    path = Path(results_dir) / SEARCH_TABLE_FILE
    if not path.is_file():
        return None
    history = pd.read_csv(path, dtype={"params": str, "trial_ids": str, "why_failed": str, "state": str})
    history.to_csv(tables / SEARCH_TABLE_FILE, index=False)
    spec = stored.get("search") or {}
    metric = spec.get("metric", "val_joint_accuracy")
    percent = metric.endswith("accuracy")
    scored = history[history["state"] == "complete"]
    best = scored.loc[scored["value"].idxmax() if SEARCH_METRICS.get(metric) == "maximize"
                      else scored["value"].idxmin()] if len(scored) else None
    text = (f"Configurations chosen by Optuna's {spec.get('sampler', '?')} sampler (seed {spec.get('seed', 0)}), "
            f"{len(scored)} scored of a budget of {spec.get('trials') or 'the whole grid'}; each was trained by "
            f"every backend on every round, and its value is the mean over those trials of {metric} "
            f"({SEARCH_METRICS.get(metric, '?')}, {'%' if percent else 'as measured'}) at the epoch each kept, on "
            "validation faces only. A configuration a killed run was training is listed as failed and was asked "
            "again (its finished trials kept); one failed for a reason of its own says why."
            + (f" Best: configuration {int(best['configuration'])}, {_shown(best['value'], percent)}." if best is not None
               else ""))
    table = pd.DataFrame({
        "configuration": history["configuration"], "state": history["state"],
        metric: [_shown(v, percent) for v in history["value"]],
        "best so far": [_shown(v, percent) for v in history["best_so_far"]],
        "values": history["params"], "trials": history["trial_ids"].fillna(""),
        "why failed": history["why_failed"].fillna("")})
    return text, table, _history_plot(history, metric, percent, plots)


def _history_plot(history: pd.DataFrame, metric: str, percent: bool, plots: Path) -> Path | None:
    scored = history[history["state"] == "complete"]
    if scored.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = 100 if percent else 1
    plots.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(scored["configuration"], scale * scored["value"], "o", label="configuration")
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
