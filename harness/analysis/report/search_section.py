"""A searched experiment's sections of the report: the configurations in the order the
sampler asked for them (each one's score and the best so far), the pruned ones apart, and
what mattered (Optuna's fANOVA importance, a slice per searched value); with the
optimisation history, importance and slice plots. Read from ``search.csv`` and
``search_importance.csv`` (plain data the search writes), never from the study itself."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.analysis.report.search_plots import history_plot, importance_plot, slice_plot
from harness.runs.index import read_index
from harness.runs.layout import SEARCH_IMPORTANCE_FILE, SEARCH_TABLE_FILE
from harness.runs.search_space import SEARCH_METRICS

__all__ = ["search_sections"]


def _shown(value, percent: bool) -> str:
    if pd.isna(value):
        return "—"
    return f"{100 * value:.1f}" if percent else f"{value:.3f}"


def search_sections(results_dir: Path, stored: dict, tables: Path, plots: Path) -> tuple[list, list[Path]]:
    """([(title, text, table)], plot paths) for the report; both empty for a grid experiment."""
    path = Path(results_dir) / SEARCH_TABLE_FILE
    if not path.is_file():
        return [], []
    history = pd.read_csv(path, dtype={"params": str, "trial_ids": str, "why_failed": str, "state": str})
    if "pruned_at_epoch" not in history:   # written before pruning existed
        history["pruned_at_epoch"] = float("nan")
    history.to_csv(tables / SEARCH_TABLE_FILE, index=False)
    spec = stored.get("search") or {}
    metric = spec.get("metric", "val_joint_accuracy")
    percent = metric.endswith("accuracy")
    maximize = SEARCH_METRICS.get(metric) == "maximize"
    scored = history[history["state"] == "complete"]
    pruned = history[history["state"] == "pruned"]
    best = scored.loc[scored["value"].idxmax() if maximize else scored["value"].idxmin()] if len(scored) else None
    pruner = spec.get("pruner") or "none"
    text = (f"Configurations chosen by Optuna's {spec.get('sampler', '?')} sampler (seed {spec.get('seed', 0)}), "
            f"{len(scored)} scored of a budget of {spec.get('trials') or 'the whole grid'}"
            + (f", {len(pruned)} pruned ({pruner} pruner, listed apart below)" if pruner != "none" else "")
            + "; each was trained by every backend on every round, and its value is the mean over "
            + ("those trials" if spec.get("learn_from", "mean") == "mean" else
               f"its {spec['learn_from']} trials (learn_from; the other backends' are in the tables)")
            + f" of {metric} ({SEARCH_METRICS.get(metric, '?')}, {'%' if percent else 'as measured'}) at the epoch "
            "each kept, on validation faces only. A configuration a killed run was training is listed as failed "
            "and was asked again (its finished trials kept); one failed for a reason of its own says why."
            + (f" Best: configuration {int(best['configuration'])}, {_shown(best['value'], percent)}."
               if best is not None else ""))
    shown = history[history["state"] != "pruned"]
    table = pd.DataFrame({
        "configuration": shown["configuration"], "state": shown["state"],
        metric: [_shown(v, percent) for v in shown["value"]],
        "best so far": [_shown(v, percent) for v in shown["best_so_far"]],
        "values": shown["params"], "trials": shown["trial_ids"].fillna(""),
        "why failed": shown["why_failed"].fillna("")})
    sections = [("Search", text, table)]
    if len(pruned):
        sections.append(("Pruned configurations", _pruned_text(pruner, metric), _pruned_table(
            results_dir, pruned, metric, percent)))
    images = [history_plot(history, metric, percent, plots)]
    importance = _importance(results_dir, tables)
    if importance is not None:
        sections.append(("What mattered in the search",
                         "Optuna's fANOVA importance of each searched value: the share of the variance of the "
                         f"configurations' {metric} it explains (a random forest fitted to the {len(scored)} scored "
                         "configurations; pruned ones take no part), with a slice per value below: each scored "
                         "configuration's value against its setting. With few configurations these are rough.",
                         importance.assign(importance=[f"{v:.2f}" for v in importance["importance"]])))
        images.append(importance_plot(importance, plots))
    images.append(slice_plot(scored, stored.get("space") or {}, metric, percent, plots))
    return sections, [p for p in images if p is not None]


def _pruned_text(pruner: str, metric: str) -> str:
    return (f"Stopped by the {pruner} pruner from their validation curves: every trial of a configuration (both "
            "frameworks, every round) was stopped together, so no framework pair is broken and no pruned trial "
            "is compared with a finished one (the tables above and below hold finished configurations only). "
            f"The value is the mean {metric} over the configuration's trials at the epoch the pruner judged; "
            "each trial's epochs trained are listed (one that had already ended trained them all).")


def _pruned_table(results_dir: Path, pruned: pd.DataFrame, metric: str, percent: bool) -> pd.DataFrame:
    index = read_index(results_dir)

    def trained(trial_id: str) -> str:
        record = index.get(trial_id) or {}
        # A trial that ended unstopped (no training summary) trained every epoch it was given.
        epochs = (((record.get("metrics") or {}).get("training") or {}).get("epochs_trained")
                  or ((record.get("config") or {}).get("training") or {}).get("epochs"))
        backend = record.get("backend", "?")
        return f"{trial_id} ({backend}, {epochs if epochs is not None else '?'} epochs)"

    return pd.DataFrame({
        "configuration": pruned["configuration"],
        "pruned at epoch": [("—" if pd.isna(e) else int(e)) for e in pruned["pruned_at_epoch"]],
        metric + " then": [_shown(v, percent) for v in pruned["value"]],
        "values": pruned["params"],
        "trials": [", ".join(trained(i) for i in str(ids).split()) if isinstance(ids, str) else ""
                   for ids in pruned["trial_ids"]]})


def _importance(results_dir: Path, tables: Path) -> pd.DataFrame | None:
    path = Path(results_dir) / SEARCH_IMPORTANCE_FILE
    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    frame.to_csv(tables / SEARCH_IMPORTANCE_FILE, index=False)
    return frame
