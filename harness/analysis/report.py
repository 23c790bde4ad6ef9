"""``harness report RESULTS_DIR``: tables, plots and report.md / report.html from stored results.

Reads only the results index and the trial directories; never trains. Rows and columns
are sorted so that regenerating a report from the same results gives identical tables.
"""
from __future__ import annotations

import json
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.analysis import comparisons, statistics
from harness.data.labels import N_AGE, age_label
from harness.data.splits import SplitManifest, SplitSpec
from harness.models import backends, heads
from harness.models.gate import DEFAULT_GATE_THRESHOLD, gate_rates
from harness.models.spec import TrainingSpec
from harness.runs.index import experiment_records, read_index, trial_dir
from harness.runs.layout import HISTORY_FILE, INDEX_FILE, LABELS_FILE, METRICS_FILE, PREDICTIONS_FILE
from harness.runs.trial import age_residuals

METRICS = [("gender_accuracy", "gender"), ("age_exact_accuracy", "age exact"),
           ("age_one_off_accuracy", "age 1-off"), ("joint_accuracy", "joint"), ("loss", "loss")]
# Years heads are also scored in years (harness.models.metrics.years_metrics).
YEARS_METRICS = [("age_mae", "age MAE (years)"), ("age_cs5", "CS(5) %"),
                 ("age_interval_coverage", "80 % interval coverage %")]
GATE_AGE = 18
REFERENCE = pd.DataFrame([
    {"source": "Levi & Hassner 2015 (CNN per task)", "dataset": "Adience, 5 subject-disjoint folds",
     "gender": "86.8 ± 1.4", "age exact": "50.7 ± 5.1", "age 1-off": "84.7 ± 2.2"},
])


class DamagedTrial(Exception):
    """A trial whose files cannot be read; ``file`` and ``reason`` say which and why."""

    def __init__(self, file: Path, reason: str):
        super().__init__(f"{file}: {reason}")
        self.file, self.reason = file, reason


@dataclass
class TrialFiles:
    """What the report reads of one trial, read once and checked."""

    metrics: dict
    history: pd.DataFrame
    gate: dict
    readouts: np.ndarray | None = None   # test readouts (heads.readout), where exact ages are known
    ages: np.ndarray | None = None       # their exact ages


REQUIRED_METRICS = [key for key, _ in METRICS] + ["undefined", "age_confusion"]
REQUIRED_HISTORY = ["epoch", "loss", "val_loss"]


def _read(path: Path, reader):
    if not path.is_file():
        raise DamagedTrial(path, "missing")
    try:
        return reader(path)
    except Exception as err:   # whatever the file holds, one trial never stops the report
        raise DamagedTrial(path, f"unreadable: {type(err).__name__}: {str(err)[:200]}") from None


def _read_trial(run_dir: Path, head: str) -> TrialFiles:
    metrics = _read(run_dir / METRICS_FILE, lambda p: json.loads(p.read_text()))
    missing = [k for k in REQUIRED_METRICS if not isinstance(metrics, dict) or k not in metrics]
    if missing:
        raise DamagedTrial(run_dir / METRICS_FILE, f"lacks {missing}")
    history = _read(run_dir / HISTORY_FILE, pd.read_csv)
    missing = [c for c in REQUIRED_HISTORY if c not in history.columns]
    if missing:
        raise DamagedTrial(run_dir / HISTORY_FILE, f"lacks columns {missing}")
    return TrialFiles(metrics, history, *_gate_columns(run_dir, head))


def _gate_columns(run_dir: Path, head: str | None) -> tuple[dict, np.ndarray | None, np.ndarray | None]:
    """The age gate at 18 on this trial's test predictions, where exact ages are known.
    ``head`` None: the stored outputs are already readouts (an ensemble round's)."""
    labels = _read(run_dir / LABELS_FILE, lambda p: pd.read_csv(p, dtype={"id": str}).set_index("id"))
    saved = _read(run_dir / PREDICTIONS_FILE, lambda p: dict(np.load(p)))
    try:
        ages = labels.loc[saved["ids"], "age"].to_numpy(dtype=float)
        readouts = (heads.readout(head, saved["outputs"], age_residuals(run_dir, head)) if head
                    else heads.readout(heads.readout_head(saved["outputs"]), saved["outputs"]))
    except Exception as err:
        raise DamagedTrial(run_dir / PREDICTIONS_FILE,
                           f"does not match {LABELS_FILE}: {type(err).__name__}: {err}") from None
    if np.isnan(ages).any():
        return {}, None, None
    rates = gate_rates(readouts, ages, GATE_AGE)
    return {"gate_far": rates["false_accept_rate"], "gate_frr": rates["false_reject_rate"]}, readouts, ages


def _calibrated_columns(metrics: dict) -> dict:
    """The gate calibrated on validation faces when the trial ran (``gate:`` in the experiment)."""
    chosen = metrics.get("gate")
    if not isinstance(chosen, dict):
        return {}
    return {"cal_min_age": chosen.get("min_age"), "cal_target": chosen.get("max_false_accept"),
            "cal_met": bool(chosen.get("met")), "cal_threshold": chosen.get("threshold"),
            "cal_val_far": chosen.get("val_false_accept_rate"),
            "cal_test_far": chosen.get("test_false_accept_rate"),
            "cal_test_frr": chosen.get("test_false_reject_rate"), "cal_reason": chosen.get("reason")}


@dataclass
class LoadedTrials:
    frame: pd.DataFrame                  # one row per readable completed trial
    files: dict[str, TrialFiles]         # trial_id -> what was read
    damaged: pd.DataFrame                # trial_id, file, reason


def load_trials(results_dir: Path, records: dict[str, dict] | None = None) -> LoadedTrials:
    """Every completed trial of the experiment; damaged ones are listed, not fatal."""
    rows, files, damaged = [], {}, []
    for record in (records if records is not None else experiment_records(results_dir)).values():
        if record["status"] != "completed":
            continue
        try:
            run_dir = trial_dir(results_dir, record["trial_id"])
            config = record["config"]
            head, training = config["model"]["head"], config["training"]
            loaded = _read_trial(run_dir, head)
        except DamagedTrial as err:
            damaged.append({"trial_id": record["trial_id"], "file": str(err.file), "reason": err.reason})
            continue
        except (KeyError, TypeError, ValueError) as err:
            damaged.append({"trial_id": str(record.get("trial_id")), "file": str(results_dir / INDEX_FILE),
                            "reason": f"record unusable: {type(err).__name__}: {err}"})
            continue
        metrics = loaded.metrics
        files[record["trial_id"]] = loaded
        rows.append({
            "trial_id": record["trial_id"], "backend": record["backend"], "round": record["round"],
            "model_name": record["model_name"], "head": head,
            "optimizer": training["optimizer"], "learning_rate": training["learning_rate"],
            "loss_fn": training["loss"] or "default", "batch_size": training["batch_size"],
            "epochs": training["epochs"], "seed": training["seed"], "threads": config.get("threads"),
            "extras": TrainingSpec.model_validate(training).extras(),
            "spec": {"architecture": config["model"]["architecture"], "head": head,
                     "training": {k: v for k, v in training.items() if k != "seed"}},
            "images_per_second": metrics.get("train_images_per_second"),
            **{key: metrics[key] for key, _ in METRICS}, "undefined": metrics["undefined"],
            **{key: metrics[key] for key, _ in YEARS_METRICS if key in metrics},   # years heads only
            **loaded.gate, **_calibrated_columns(metrics),
        })
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["configuration"] = frame.apply(_describe, axis=1)
        frame = frame.sort_values(["configuration", "backend", "round"]).reset_index(drop=True)
    damaged_frame = pd.DataFrame(damaged, columns=["trial_id", "file", "reason"]).sort_values("trial_id")
    return LoadedTrials(frame, files, damaged_frame.reset_index(drop=True))


def trials_frame(results_dir: Path) -> pd.DataFrame:
    """One row per readable completed trial: its configuration columns and its metrics."""
    return load_trials(results_dir).frame


def _describe(row) -> str:
    """Everything a configuration trains with except backend, round and seed (those are
    what its trials are paired over)."""
    loss = "" if row["loss_fn"] == "default" else f" loss={row['loss_fn']}"
    extras = f" {row['extras']}" if row["extras"] else ""
    architecture = ", ".join(f"{k}={_regularizer(v) if k == 'regularizer' else v}"
                             for k, v in row["spec"]["architecture"].items()
                             if k != "type" and not (k == "regularizer" and v.get("kind") == "none"))
    return (f"{row['model_name']} [{row['head']}] {row['spec']['architecture']['type']}({architecture}) "
            f"{row['optimizer']} lr={row['learning_rate']}{loss} batch={row['batch_size']} "
            f"epochs={row['epochs']}{extras}")


def _regularizer(spec: dict) -> str:
    used = {"l2": ["l2"], "l1_l2": ["l1", "l2"], "max_norm": ["max_norm"]}.get(spec.get("kind"), [])
    return f"{spec.get('kind')}({', '.join(str(spec.get(k)) for k in used)})"


def _mean_std(values: pd.Series, scale: float) -> str:
    values = values.dropna() * scale
    if values.empty:
        return "—"
    return f"{values.mean():.1f} ± {values.std(ddof=0):.1f}" if len(values) > 1 else f"{values.mean():.1f}"


def _signed(value: float) -> str:
    return "—" if pd.isna(value) else f"{value:+.1f}".replace("-", "−")


def _interval(mean: float, low: float, high: float, signed: bool = True) -> str:
    """A difference with its interval, or (signed=False) an accuracy in %, whose interval
    is clipped to what an accuracy can be."""
    if pd.isna(mean):
        return "—"
    if not signed:
        low, high = max(low, 0.0), min(high, 100.0)
    show = _signed if signed else (lambda v: f"{v:.1f}")
    return show(mean) + ("" if pd.isna(low) else f" [{show(low)}, {show(high)}]")


def _p(value: float) -> str:
    return "—" if pd.isna(value) else "< 0.001" if value < 0.001 else f"{value:.3f}"


def years_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Trials of years heads: MAE and CS(5) beside the group accuracies their predicted
    ages give, per configuration and backend (mean ± std over rounds)."""
    scored = frame[frame["age_mae"].notna()] if "age_mae" in frame else frame.iloc[:0]
    rows = []
    for (configuration, backend), part in scored.groupby(["configuration", "backend"], sort=True):
        row = {"configuration": configuration, "backend": backends.display_name(backend), "rounds": len(part),
               YEARS_METRICS[0][1]: _mean_std(part["age_mae"], 1.0), YEARS_METRICS[1][1]: _mean_std(part["age_cs5"], 100.0)}
        if "age_interval_coverage" in part and part["age_interval_coverage"].notna().any():
            # How often the interval predict prints holds the true age (80 % if it is honest).
            row[YEARS_METRICS[2][1]] = _mean_std(part["age_interval_coverage"], 100.0)
        for key, label in METRICS[:3]:
            row[f"{label} %"] = _mean_std(part[key], 100.0)
        rows.append(row)
    return pd.DataFrame(rows)


def configurations_table(frame: pd.DataFrame, labels: dict[str, str]) -> pd.DataFrame:
    """The legend: each short label's full configuration, rounds and speed per backend."""
    rows = []
    for configuration, group in frame.groupby("configuration", sort=True):
        row = {"configuration": labels[configuration], "full specification": configuration}
        for backend in comparisons.ordered_backends(frame):
            part = group[group["backend"] == backend]
            name = backends.display_name(backend)
            row[f"{name} rounds"] = len(part)
            row[f"{name} images/s"] = f"{part['images_per_second'].mean():.0f}" if len(part) else "—"
        rows.append(row)
    return pd.DataFrame(rows)


def framework_display(pairs: pd.DataFrame, frame: pd.DataFrame, labels: dict[str, str]) -> pd.DataFrame:
    """Each metric's values on both backends next to each other, with the paired difference."""
    present = comparisons.ordered_backends(frame)
    names = [backends.display_name(b) for b in present]
    difference = f"{' − '.join(reversed(names[:2]))} (points, 95 % CI)" if len(names) >= 2 else "difference"
    rows, previous = [], None
    for _, pair in pairs.iterrows():
        row = {"configuration": labels[pair["configuration"]] if pair["configuration"] != previous else "",
               "metric": pair["metric"]}
        previous = pair["configuration"]
        for backend, name in zip(present, names):
            mean, std = pair[f"{backend} mean"], pair[f"{backend} std"]
            row[name] = "—" if pd.isna(mean) else f"{mean:.1f} ± {std:.1f}"
        row.update({difference: _interval(pair["difference"], pair["ci_low"], pair["ci_high"]),
                    "p (corrected t)": _p(pair["p_corrected_t"]), "p (Wilcoxon)": _p(pair["p_wilcoxon"]),
                    "pairs": pair["pairs"], "verdict": pair["verdict"]})
        rows.append(row)
    return pd.DataFrame(rows)


def _arrow(verdict: str) -> str:
    return {"this higher": " ▲", "baseline higher": " ▼"}.get(verdict, "")


def versus_display(table: pd.DataFrame, labels: dict[str, str], than: str = "baseline") -> pd.DataFrame:
    """Rows of :func:`comparisons.against_baseline` or :func:`comparisons.between_experiments`."""
    rows = []
    for _, row in table.iterrows():
        shown = {"configuration": labels[row["configuration"]],
                 "backend": backends.display_name(row["backend"])}
        if "changes" in row:
            shown["changes"] = row["changes"]
        for _, label in comparisons.ACCURACIES:
            shown[f"{label} Δ"] = (_interval(row[f"{label} difference"], row[f"{label} ci_low"],
                                             row[f"{label} ci_high"]) + _arrow(row[f"{label} verdict"]))
        shown["joint p (corrected t / Wilcoxon)"] = f"{_p(row['joint p_corrected_t'])} / {_p(row['joint p_wilcoxon'])}"
        shown["pairs"] = row["joint pairs"]
        shown["verdict (joint)"] = row["joint verdict"].replace("this higher", f"higher than {than}") \
            .replace("baseline higher", f"lower than {than}")
        rows.append(shown)
    return pd.DataFrame(rows)


def ranking_display(table: pd.DataFrame, labels: dict[str, str]) -> pd.DataFrame:
    rows = []
    for _, row in table.iterrows():
        shown = {"rank": row["rank"], "configuration": labels[row["configuration"]],
                 "backend": backends.display_name(row["backend"]), "rounds": row["rounds"]}
        for _, label in reversed(comparisons.ACCURACIES):
            shown[f"{label} % [95 % CI]"] = _interval(row[f"{label} mean"], row[f"{label} ci_low"],
                                                       row[f"{label} ci_high"], signed=False)
        rows.append(shown)
    return pd.DataFrame(rows)


def _numeric_csv(table: pd.DataFrame, path: Path) -> None:
    """Numbers rounded so that regenerating from the same results writes the same bytes."""
    table.round(6).to_csv(path, index=False)


def gate_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per configuration and backend: false-accept / false-reject rates of the gate at 18."""
    if "gate_far" not in frame or frame["gate_far"].isna().all():
        return pd.DataFrame()
    rows = []
    for (configuration, backend), part in frame.groupby(["configuration", "backend"], sort=True):
        rows.append({"configuration": configuration, "backend": backends.display_name(backend),
                     "false accept % (under 18 let in)": _mean_std(part["gate_far"], 100.0),
                     "false reject % (18+ refused)": _mean_std(part["gate_frr"], 100.0)})
    return pd.DataFrame(rows)


def calibrated_gate_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per configuration and backend: the threshold chosen on validation faces, and its test rates."""
    if "cal_met" not in frame or frame["cal_met"].isna().all():
        return pd.DataFrame()
    rows = []
    for (configuration, backend), part in frame.dropna(subset=["cal_met"]).groupby(["configuration", "backend"], sort=True):
        met = part[part["cal_met"].astype(bool)]
        reasons = sorted(set(part.loc[~part["cal_met"].astype(bool), "cal_reason"].dropna()))
        rows.append({"configuration": configuration, "backend": backends.display_name(backend),
                     "min age": f"{part['cal_min_age'].iloc[0]:g}",
                     "target false accept %": f"{100 * part['cal_target'].iloc[0]:.1f}",
                     "rounds met": f"{len(met)}/{len(part)}",
                     "threshold": (f"{met['cal_threshold'].mean():.3f}" + (
                         f" ± {met['cal_threshold'].std(ddof=0):.3f}" if len(met) > 1 else "")) if len(met) else "—",
                     "val false accept %": _mean_std(met["cal_val_far"], 100.0) if len(met) else "—",
                     "test false accept %": _mean_std(met["cal_test_far"], 100.0) if len(met) else "—",
                     "test false reject %": _mean_std(met["cal_test_frr"], 100.0) if len(met) else "—",
                     "not met because": "; ".join(reasons)})
    return pd.DataFrame(rows)


def load_ensembles(results_dir: Path) -> tuple[pd.DataFrame, dict[str, TrialFiles]]:
    """One row per ensemble round under RESULTS_DIR/ensembles (see ``harness ensemble``)."""
    from harness.runs.layout import ENSEMBLES_DIR, MEMBERS_FILE

    rows, files = [], {}
    for members_file in sorted((results_dir / ENSEMBLES_DIR).glob(f"*/round-*/{MEMBERS_FILE}")):
        run_dir = members_file.parent
        try:
            description = json.loads(members_file.read_text())
            metrics = _read(run_dir / METRICS_FILE, lambda p: json.loads(p.read_text()))
            gate, readouts, ages = _gate_columns(run_dir, None)
        except (DamagedTrial, ValueError, KeyError):
            continue   # an ensemble being written, or a damaged one: it is rebuilt by its command
        key = f"{run_dir.parent.name}/{run_dir.name}"
        files[key] = TrialFiles(metrics, pd.DataFrame(), gate, readouts, ages)
        members = ", ".join(f"{m['model_name']}{' ' + m['options'] if m.get('options') else ''} ({m['backend']})"
                            for m in description["members"])
        tta = f", tta {description['tta']}" if description.get("tta") else ""
        rows.append({"trial_id": key, "backend": "ensemble", "round": description["round"],
                     "configuration": f"ensemble {run_dir.parent.name}: {members}{tta}",
                     **{k: metrics[k] for k, _ in METRICS}, **gate, **_calibrated_columns(metrics)})
    return pd.DataFrame(rows), files


def ensemble_table(ensembles: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for configuration, part in ensembles.groupby("configuration", sort=True):
        row = {"ensemble": configuration, "rounds": len(part)}
        for key, label in METRICS[:4]:
            row[label] = _mean_std(part[key], 100.0)
        if "cal_met" in part and part["cal_met"].notna().any():
            met = part[part["cal_met"].fillna(False).astype(bool)]
            row["gate rounds met"] = f"{len(met)}/{len(part)}"
            row["gate test false accept %"] = _mean_std(met["cal_test_far"], 100.0) if len(met) else "—"
            row["gate test false reject %"] = _mean_std(met["cal_test_frr"], 100.0) if len(met) else "—"
        rows.append(row)
    return pd.DataFrame(rows)


def _gate_plot(frame: pd.DataFrame, files: dict[str, TrialFiles], path: Path) -> Path | None:
    """False accepts against false rejects over every threshold, test faces pooled over rounds;
    dots: each round at the threshold calibrated on its validation faces."""
    import matplotlib.pyplot as plt

    from harness.models.gate import rate_curve

    usable = frame[[files[t].readouts is not None for t in frame["trial_id"]]] if len(frame) else frame
    if usable.empty or "cal_min_age" not in usable or usable["cal_min_age"].isna().all():
        return None
    min_age = float(usable["cal_min_age"].dropna().iloc[0])
    fig, axis = plt.subplots(figsize=(8, 6))
    target = usable["cal_target"].dropna()
    top_far, right_frr = 0.0, 0.0
    for (configuration, backend), part in usable.groupby(["configuration", "backend"], sort=True):
        # Each round's own curve, averaged at each false-reject level, would need one
        # threshold grid; pooling the rounds' test faces gives one honest curve instead.
        readouts = np.concatenate([files[t].readouts for t in part["trial_id"]])
        ages = np.concatenate([files[t].ages for t in part["trial_id"]])
        curve = rate_curve(readouts, ages, min_age)
        label = textwrap.shorten(f"{backend}: {configuration}", 70)
        line, = axis.plot(100 * curve["false_reject_rate"], 100 * curve["false_accept_rate"], label=label, lw=1)
        met = part[part["cal_met"].fillna(False).astype(bool)] if "cal_met" in part else part.iloc[0:0]
        axis.scatter(100 * met["cal_test_frr"], 100 * met["cal_test_far"], color=line.get_color(), s=18)
        # Zoom on where the choice is made: up to where false accepts fall to a quarter of the target.
        low = curve["false_accept_rate"] <= (target.iloc[0] / 4 if len(target) else 0.0)
        right_frr = max(right_frr, curve["false_reject_rate"][np.argmax(low)] if low.any() else 1.0,
                        met["cal_test_frr"].max() if len(met) else 0.0)
        top_far = max(top_far, np.nanmax(curve["false_accept_rate"]))
    if len(target):
        axis.axhline(100 * target.iloc[0], color="grey", ls=":", lw=1, label="target false-accept rate")
    axis.set_xlabel(f"false reject % (people {min_age:g} or older refused)")
    axis.set_ylabel(f"false accept % (under {min_age:g} let in)")
    axis.set_xlim(0, min(100.0, 120 * right_frr) or 100)
    axis.set_ylim(0, min(100.0, 110 * top_far) or 100)
    axis.set_title(f"Door gate at {min_age:g} on the test faces: every threshold (lines), "
                   "calibrated on validation (dots)", fontsize=9)
    axis.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _curves_plot(configuration: str, group: pd.DataFrame, files: dict[str, TrialFiles], path: Path) -> Path:
    """Mean learning curves over rounds: one colour per backend, one line style per metric."""
    import matplotlib.pyplot as plt

    
    fig, (loss_axis, acc_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for backend, part in group.groupby("backend", sort=True):
        colour = backends.colour(backend)
        name = backends.display_name(backend)
        mean = pd.concat([files[t].history for t in part["trial_id"]]).groupby("epoch").mean(numeric_only=True)
        for column, style, words in (("loss", "-", "training loss"), ("val_loss", "--", "validation loss")):
            loss_axis.plot(mean.index, mean[column], style, color=colour, label=f"{name}: {words}")
        for column, style in (("val_joint_accuracy", "-"), ("val_gender_accuracy", "--"),
                              ("val_age_exact_accuracy", ":")):
            if column in mean:
                acc_axis.plot(mean.index, mean[column], style, color=colour,
                              label=f"{name}: {column[4:].replace('_', ' ')}")
    loss_axis.set_title("loss: training (solid), validation (dashed)", fontsize=9)
    acc_axis.set_title("validation accuracy: joint (solid), gender (dashed), age exact (dotted)", fontsize=9)
    for axis in (loss_axis, acc_axis):
        axis.set_xlabel("epoch")
        axis.legend(fontsize=7)
    fig.suptitle(textwrap.fill(configuration, 150), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _forest_rows(table: pd.DataFrame, labels: dict[str, str], backend: bool) -> pd.DataFrame:
    rows = []
    for _, row in table.iterrows():
        for _, metric in comparisons.ACCURACIES:
            prefix = f"{metric} " if backend else ""
            verdict = row[f"{prefix}verdict"] if backend else row["verdict"]
            if not backend and row["metric"] != metric:
                continue
            rows.append({"label": labels[row["configuration"]], "metric": metric,
                         "difference": row[f"{prefix}difference"], "ci_low": row[f"{prefix}ci_low"],
                         "ci_high": row[f"{prefix}ci_high"],
                         "significant": verdict.endswith("higher"),
                         **({"backend": row["backend"]} if backend else {})})
    return pd.DataFrame(rows)


def _plots(frame: pd.DataFrame, files: dict[str, TrialFiles], results_dir: Path, out: Path,
           labels: dict[str, str], pairs: pd.DataFrame, versus: pd.DataFrame, baseline: str | None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.analysis.plots import forest_plot, plot_split_balance

    out.mkdir(parents=True, exist_ok=True)
    written = []
    metrics = [label for _, label in comparisons.ACCURACIES]
    paired = pairs[pairs["pairs"] > 0]
    if len(paired):
        names = [backends.display_name(b) for b in comparisons.ordered_backends(frame)]
        written.append(forest_plot(_forest_rows(paired, labels, backend=False), metrics,
                                   out / "forest_frameworks.png",
                                   f"{names[1]} − {names[0]} per configuration: mean paired difference over rounds "
                                   "and its corrected 95 % interval (filled: p < 0.05)", "points"))
    if len(versus):
        written.append(forest_plot(_forest_rows(versus, labels, backend=True), metrics,
                                   out / "forest_baseline.png",
                                   f"Each configuration − the baseline ({labels[baseline]}), per backend "
                                   "(filled: p < 0.05)", "points"))

    summary = frame.groupby(["configuration", "backend"])["joint_accuracy"].agg(["mean", "std"]).unstack()
    fig, axis = plt.subplots(figsize=(10, 1.5 + 0.45 * len(summary) * max(1, summary["mean"].shape[1] / 2)))
    summary["mean"].rename(columns=comparisons.backend_name).plot.barh(
        xerr=summary["std"].fillna(0).rename(columns=comparisons.backend_name), ax=axis,
        color=[backends.colour(b) for b in summary["mean"].columns])
    for container in axis.containers:
        if hasattr(container, "datavalues"):
            axis.bar_label(container, fmt="%.3f", fontsize=7, padding=3)
    axis.set_yticks(range(len(summary)), [labels[c] for c in summary.index], fontsize=8)
    axis.set_xlim(0, 1)
    axis.set_ylabel("")
    axis.set_xlabel("joint accuracy on the test split (age group and gender both right)")
    axis.set_title("Grid results by backend (mean ± std over rounds)")
    fig.tight_layout()
    written.append(out / "grid_joint_accuracy.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)

    for n, (configuration, group) in enumerate(frame.groupby("configuration", sort=True)):
        written.append(_curves_plot(configuration, group, files, out / f"learning_curves_{n}.png"))
        fig, axes = plt.subplots(1, group["backend"].nunique(), figsize=(5.5 * group["backend"].nunique(), 4.5),
                                 squeeze=False)
        for axis, (backend, part) in zip(axes[0], group.groupby("backend", sort=True)):
            matrix = sum(np.array(files[t].metrics["age_confusion"]) for t in part["trial_id"])
            axis.imshow(matrix, cmap="Blues")
            ages = [age_label(i) for i in range(N_AGE)]
            axis.set_xticks(range(N_AGE), ages, rotation=45, fontsize=7)
            axis.set_yticks(range(N_AGE), ages, fontsize=7)
            axis.set_xlabel("predicted age group")
            axis.set_ylabel("true age group")
            axis.set_title(f"{backends.display_name(backend)}: age confusion (all rounds)", fontsize=9)
            for (i, j), value in np.ndenumerate(matrix):
                axis.text(j, i, str(value), ha="center", va="center", fontsize=6)
        fig.suptitle(labels[configuration], fontsize=9)
        fig.tight_layout()
        written.append(out / f"age_confusion_{n}.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)

    splits = results_dir / "splits"
    if (splits / "splits.csv").is_file():
        table = pd.read_csv(splits / "table.csv", dtype={"id": str})
        manifest = SplitManifest.load(splits)
        ran = set(frame["round"])
        manifest.assignments = manifest.assignments[manifest.assignments["round"].isin(ran)]
        written += plot_split_balance(table, manifest, out / "splits")
    return written


def _markdown_table(frame: pd.DataFrame) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(map(cell, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _stored_experiment(results_dir: Path) -> dict:
    try:
        stored = json.loads((results_dir / "experiment.json").read_text())
        return stored if isinstance(stored, dict) else {}
    except (OSError, ValueError):
        return {}


def _split_spec(stored: dict) -> SplitSpec | None:
    try:
        return SplitSpec(**stored["split"])
    except (KeyError, TypeError, ValueError):
        return None


def _manifest(results_dir: Path) -> SplitManifest | None:
    try:
        return SplitManifest.load(results_dir / "splits")
    except (OSError, ValueError, KeyError):
        return None


def _commit() -> str:
    """The harness's git commit, marked when its tracked files have uncommitted changes."""
    import subprocess

    where = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=where, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return commit + (" with uncommitted changes" if dirty else "")


def _stamp(command: str | None, records: dict[str, dict]) -> str:
    """Who made this report from what: the command, the commit, the date, and when the trials ran."""
    import datetime

    finished = sorted(r["finished_at"] for r in records.values() if isinstance(r.get("finished_at"), (int, float)))
    ran = ""
    if finished:
        day = [datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M") for t in
               (finished[0], finished[-1])]
        ran = f" Its {len(records)} trial records were written between {day[0]} and {day[1]} UTC."
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    made = f"`{command}`" if command else "`harness report`"
    return f"Made by {made} at commit {_commit()} on {today}.{ran}"


def write_report(results_dir: str | Path, out: str | Path | None = None, command: str | None = None) -> Path:
    """Write report.md, report.html, tables/ and plots/ into ``out`` (default: the results
    directory itself). Only tables/ and plots/ under ``out`` are replaced."""
    results_dir = Path(results_dir)
    out = Path(out) if out is not None else results_dir
    everything = read_index(results_dir)
    if not everything:
        raise ValueError(f"{results_dir}: no results index (run the experiment first)")
    index = experiment_records(results_dir, everything)
    earlier = len(everything) - len(index)
    loaded = load_trials(results_dir, index)
    frame, damaged = loaded.frame, loaded.damaged
    stored = _stored_experiment(results_dir)
    split_spec = _split_spec(stored)
    out.mkdir(parents=True, exist_ok=True)
    tables, plots = out / "tables", out / "plots"
    for stale in (tables, plots):   # everything shown is regenerated from the trials
        shutil.rmtree(stale, ignore_errors=True)
    tables.mkdir()
    failed = pd.DataFrame([{"trial_id": r["trial_id"], "model_name": r["model_name"], "backend": r["backend"],
                            "round": r["round"], "error": r["error"]}
                           for r in index.values() if r["status"] == "failed"],
                          columns=["trial_id", "model_name", "backend", "round", "error"]
                          ).sort_values("trial_id")
    failed.to_csv(tables / "failed.csv", index=False)
    REFERENCE.to_csv(tables / "reference.csv", index=False)
    damaged.to_csv(tables / "damaged.csv", index=False)
    name = stored.get("name") or results_dir.name
    stamp = _stamp(command, index)
    intro = [str(stored["description"])] if stored.get("description") else []
    sections: list[tuple[str, str, pd.DataFrame]] = []   # (title, text, table) for markdown and html
    images: list[Path] = []
    labels: dict[str, str] = {}
    if not frame.empty:
        labels = comparisons.short_labels(frame)
        ratio = comparisons.test_train_ratio(_manifest(results_dir), split_spec)
        pairs = comparisons.framework_pairs(frame, ratio)
        baseline = comparisons.baseline_configuration(frame, stored.get("baseline"))
        versus = comparisons.against_baseline(frame, baseline, ratio) if baseline else pd.DataFrame()
        ranked = comparisons.ranking(frame, ratio)
        trials = frame.drop(columns=["configuration", "spec"]).assign(
            configuration=frame["configuration"].map(labels))
        trials.to_csv(tables / "trials.csv", index=False)
        legend = configurations_table(frame, labels)
        legend.to_csv(tables / "configurations.csv", index=False)
        _numeric_csv(pairs.assign(configuration=pairs["configuration"].map(labels)), tables / "framework_pairs.csv")
        _numeric_csv(ranked.assign(configuration=ranked["configuration"].map(labels)), tables / "ranking.csv")
        images = _plots(frame, loaded.files, results_dir, plots, labels, pairs, versus, baseline)
        method = (f"{comparisons.rounds_sentence(frame, split_spec)} Paired differences in percentage points; "
                  "the interval and the first p-value come from the corrected resampled t-test (Nadeau & "
                  f"Bengio, 2003), which widens the variance by test/train = {ratio:.3f} because rounds share "
                  f"training faces; Wilcoxon's signed-rank p is given from {statistics.WILCOXON_MIN_PAIRS} pairs "
                  f"up. The verdict is the corrected test's at α = {statistics.ALPHA}; with fewer than "
                  f"{statistics.MIN_PAIRS} pairs it is \"{statistics.NOT_ENOUGH}\". " + _threads_note(frame))
        intro.append(method)
        sections += [("Configurations",
                      "Short labels used below: the model name and the options in which a configuration "
                      "differs from most of the others.", legend),
                     ("Frameworks side by side",
                      "Accuracies in % (mean ± std over rounds) from each model's saved test predictions, and "
                      "the paired difference between the frameworks on the same rounds.",
                      framework_display(pairs, frame, labels))]
        if baseline:
            _numeric_csv(versus.assign(configuration=versus["configuration"].map(labels)),
                         tables / "against_baseline.csv")
            sections.append(("Design factors against the baseline",
                             f"Baseline: {labels[baseline]} (`baseline:` in the experiment). Each configuration "
                             "minus the baseline on the same backend and rounds, in points with the 95 % interval; "
                             "▲ / ▼: higher / lower at α = 0.05 (corrected t-test).",
                             versus_display(versus, labels)))
        elif stored.get("baseline"):
            intro.append(f"The experiment's baseline {stored['baseline']} matches no single configuration "
                         "that ran, so there is no design-factor comparison.")
        sections.append(("Ranking", "Every configuration and backend by mean joint accuracy; intervals are "
                         "the corrected 95 % intervals of the mean over rounds.", ranking_display(ranked, labels)))
        in_years = years_table(frame.assign(configuration=frame["configuration"].map(labels)))
        if len(in_years):
            in_years.to_csv(tables / "age_in_years.csv", index=False)
            sections.append(("Age in years", "Models that predict an age in years: mean absolute error, the "
                             "share within 5 years (CS(5)), the share of faces whose age lies in the central 80 % "
                             "interval `predict` prints (80 % if the interval is honest), and the group accuracies "
                             "of their predicted ages (mapped to groups as exact ages are), on the test split.",
                             in_years))
        gates = gate_table(frame.assign(configuration=frame["configuration"].map(labels)))
        if len(gates):
            gates.to_csv(tables / "age_gate.csv", index=False)
            sections.append((f"Age gate at {GATE_AGE}",
                             f"`allow` needs the probability of groups starting at {GATE_AGE} or later to reach "
                             f"{DEFAULT_GATE_THRESHOLD}, and the face's own (most likely) group to start at "
                             f"{GATE_AGE} or later; (15, 20) counts as under {GATE_AGE}. A model of the age in "
                             f"years needs P(age ≥ {GATE_AGE}) to reach it and its predicted age to be {GATE_AGE} or "
                             "over. Rates on the test split, against the exact ages.", gates))
    ensembles, ensemble_files = load_ensembles(results_dir)
    calibrated = calibrated_gate_table(pd.concat(
        [frame.assign(configuration=frame["configuration"].map(labels)) if len(frame) else frame, ensembles],
        ignore_index=True)) if len(frame) or len(ensembles) else pd.DataFrame()
    if len(calibrated):
        calibrated.to_csv(tables / "calibrated_gate.csv", index=False)
        sections.append(("Calibrated door gate",
                         "The threshold each trial chose on its validation faces (`gate:` in the experiment): the "
                         "lowest adult probability (for a years model, P(age ≥ the gate's age)) whose "
                         "validation false-accept rate meets the target, which "
                         "refuses the fewest adults. Rates on the test faces at that threshold; a target no "
                         "threshold met is counted and its reason given, never clamped.", calibrated))
    if len(ensembles):
        ensemble_summary = ensemble_table(ensembles)
        ensemble_summary.to_csv(tables / "ensembles.csv", index=False)
        sections.append(("Ensembles", "Mean probabilities of the member trials (`harness ensemble`), scored "
                         "with the same code on the same test faces; % as mean ± std over rounds.", ensemble_summary))
    if len(frame) or len(ensembles):
        plots.mkdir(parents=True, exist_ok=True)
        with_labels = frame.assign(configuration=frame["configuration"].map(labels)) if len(frame) else frame
        tradeoff = _gate_plot(pd.concat([with_labels, ensembles], ignore_index=True),
                              {**loaded.files, **ensemble_files}, plots / "gate_tradeoff.png")
        images += [tradeoff] if tradeoff else []
    notes = []
    if earlier:
        notes.append(f"{earlier} earlier trial(s) in the index are not part of the experiment as last run "
                     "(their data or configuration has changed since) and are not shown.")
    sections.append(("Reference", "Measured on a different dataset than ours unless the dataset column says so.",
                     REFERENCE))
    if len(failed):
        sections.append(("Failed trials", "", failed))
    if len(damaged):
        sections.append(("Damaged trials", f"{len(damaged)} completed trials have files that cannot be read; "
                         "they are left out of every table and plot above (listed in tables/damaged.csv). "
                         "Delete a damaged trial's folder and run the experiment again to redo it.", damaged))
    sections += _data_sections(results_dir)
    lines = [f"# Report: {name}", "", stamp, ""] + [line for text in intro for line in (text, "")]
    for title, text, table in sections:
        lines += [f"## {title}"] + ([text, ""] if text else [""]) + ([_markdown_table(table), ""] if len(table) else [])
    lines += notes + ([""] if notes else [])
    lines += ["## Plots", ""] + [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in images]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    from harness.analysis.render import page

    (out / "report.html").write_text(page(name, stamp, intro,
                                          sections, [p.relative_to(out).as_posix() for p in images],
                                          {v: k for k, v in labels.items()}, notes))
    return out / "report.md"


def _data_sections(results_dir: Path) -> list[tuple[str, str, pd.DataFrame]]:
    """What the dataset adapter and the cache left out, from the run's own lists."""
    def read(name: str) -> pd.DataFrame | None:
        path = results_dir / name
        return pd.read_csv(path) if path.is_file() and path.stat().st_size > 1 else None

    sections = []
    skipped = read("skipped_images.csv")
    if skipped is not None and len(skipped):
        sections.append(("Skipped images", f"{len(skipped)} images could not be decoded and took no part "
                         "(all listed in skipped_images.csv):", skipped.head(20)))
    unaligned = read("unaligned_images.csv")
    if unaligned is not None and len(unaligned):
        sections.append(("Images without a detected face", f"{len(unaligned)} images had no face dlib could "
                         "find and were used whole, unaligned (all listed in unaligned_images.csv).", pd.DataFrame()))
    dropped = read("dropped_rows.csv")
    if dropped is not None and len(dropped):
        sections.append(("Dropped dataset rows", f"{len(dropped)} rows of the dataset were left out by its "
                         "adapter (all listed in dropped_rows.csv); by reason:",
                         dropped.groupby("reason").size().rename("rows").reset_index()))
    return sections


def _threads_note(frame: pd.DataFrame) -> str:
    counts = sorted({int(t) for t in frame["threads"].dropna()})
    if not counts:
        return ""
    return (f"Each trial ran with {' or '.join(map(str, counts))} framework thread(s), fixed by the "
            "experiment (`threads`) and recorded in each trial's env.json: on the same CPU the same "
            "count gives the same numbers, whatever `--workers` was.")


def _same_test_faces(first: Path, second: Path) -> list[int]:
    """The rounds both runs share, refusing any round whose test faces differ."""
    manifests = [_manifest(first), _manifest(second)]
    for where, manifest in zip((first, second), manifests):
        if manifest is None:
            raise ValueError(f"{where / 'splits'}: no split manifest, so which faces each round tests is unknown")
    shared = sorted(set(manifests[0].rounds) & set(manifests[1].rounds))
    if not shared:
        raise ValueError(f"{first} and {second} share no split round")
    for round_ in shared:
        tested = [set(m.ids(round_, "test")) for m in manifests]
        if tested[0] != tested[1]:
            raise ValueError(
                f"round {round_} tests different faces in {first} ({len(tested[0])}) and {second} "
                f"({len(tested[1])}; {len(tested[0] & tested[1])} in common): a paired comparison needs the "
                "same data, limit and split in both experiments")
    return shared


def _experiment_differences(first: dict, second: dict) -> str:
    ignore = ("name", "description", "baseline", "time_limit_s")
    return comparisons.changes({k: v for k, v in first.items() if k not in ignore},
                               {k: v for k, v in second.items() if k not in ignore})


def write_comparison(first: str | Path, second: str | Path, out: str | Path, command: str | None = None) -> Path:
    """``harness compare A B --out DIR``: each configuration and backend that ran in both
    experiments, A minus B, paired over the rounds (which must test the same faces)."""
    first, second, out = Path(first), Path(second), Path(out)
    records = [experiment_records(d) for d in (first, second)]
    frames = [load_trials(d, r).frame for d, r in zip((first, second), records)]
    for where, frame in zip((first, second), frames):
        if frame.empty:
            raise ValueError(f"{where}: no completed trials to compare")
    shared = _same_test_faces(first, second)
    frames = [f[f["round"].isin(shared)] for f in frames]
    stored = [_stored_experiment(d) for d in (first, second)]
    names = [s.get("name") or d.name for s, d in zip(stored, (first, second))]
    ratio = comparisons.test_train_ratio(_manifest(first), _split_spec(stored[0]))
    table = comparisons.between_experiments(frames[0], frames[1], ratio)
    if table.empty:
        raise ValueError(f"no configuration ran on the same backend in both {first} and {second}")
    labels = comparisons.short_labels(pd.concat(frames, ignore_index=True))
    out.mkdir(parents=True, exist_ok=True)
    for stale in (out / "tables", out / "plots"):
        shutil.rmtree(stale, ignore_errors=True)
    (out / "tables").mkdir()
    (out / "plots").mkdir()
    _numeric_csv(table.assign(configuration=table["configuration"].map(labels)), out / "tables" / "between.csv")
    from harness.analysis.plots import forest_plot

    plot = forest_plot(_forest_rows(table, labels, backend=True), [label for _, label in comparisons.ACCURACIES],
                       out / "plots" / "forest_between.png",
                       f"{names[0]} − {names[1]}, per configuration and backend (filled: p < 0.05)", "points")
    stamp = _stamp(command, {**records[0], **records[1]})
    differs = _experiment_differences(stored[0], stored[1]) or "nothing outside their names"
    intro = [f"Each configuration that ran in both `{names[0]}` and `{names[1]}`, on the same backend: "
             f"{names[0]} minus {names[1]}, paired over the rounds both ran, which test the same faces "
             f"(checked). The experiments differ in: {differs}.",
             f"{comparisons.rounds_sentence(frames[0], _split_spec(stored[0]))} Differences in points with the "
             f"corrected resampled t-test's 95 % interval (test/train = {ratio:.3f}); ▲ / ▼: {names[0]} higher / "
             f"lower at α = {statistics.ALPHA}; Wilcoxon's p beside it from {statistics.WILCOXON_MIN_PAIRS} pairs."]
    shown = versus_display(table, labels, than=names[1])
    lines = [f"# Comparison: {names[0]} − {names[1]}", "", stamp, ""] + [x for t in intro for x in (t, "")]
    lines += [f"## {names[0]} − {names[1]}", "", _markdown_table(shown), "", "## Plots", "",
              f"![{plot.stem}]({plot.relative_to(out).as_posix()})"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    from harness.analysis.render import page

    (out / "report.html").write_text(page(f"{names[0]} − {names[1]}", stamp, intro,
                                          [(f"{names[0]} − {names[1]}", "", shown)],
                                          [plot.relative_to(out).as_posix()], {}, []))
    return out / "report.md"
