"""``harness report RESULTS_DIR``: tables, plots and report.md / report.html from stored results.

Reads only the results index and the trial directories; never trains. Rows and columns
are sorted so that regenerating a report from the same results gives identical tables.
"""
from __future__ import annotations

import html
import json
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness import heads
from harness.gate import DEFAULT_GATE_THRESHOLD, gate_rates
from harness.labels import N_AGE, age_label
from harness.results import INDEX_FILE, experiment_records, read_index, trial_dir
from harness.spec import TrainingSpec
from harness.splits import SplitManifest
from harness.trial import HISTORY_FILE, LABELS_FILE, METRICS_FILE, PREDICTIONS_FILE

METRICS = [("gender_accuracy", "gender"), ("age_exact_accuracy", "age exact"),
           ("age_one_off_accuracy", "age 1-off"), ("joint_accuracy", "joint"), ("loss", "loss")]
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
    scores: np.ndarray | None = None     # (N, 10) test scores, where exact ages are known
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


def _gate_columns(run_dir: Path, head: str) -> tuple[dict, np.ndarray | None, np.ndarray | None]:
    """The age gate at 18 on this trial's test predictions, where exact ages are known."""
    labels = _read(run_dir / LABELS_FILE, lambda p: pd.read_csv(p, dtype={"id": str}).set_index("id"))
    saved = _read(run_dir / PREDICTIONS_FILE, lambda p: dict(np.load(p)))
    try:
        ages = labels.loc[saved["ids"], "age"].to_numpy(dtype=float)
        scores = heads.scores(head, saved["outputs"])
    except Exception as err:
        raise DamagedTrial(run_dir / PREDICTIONS_FILE,
                           f"does not match {LABELS_FILE}: {type(err).__name__}: {err}") from None
    if np.isnan(ages).any():
        return {}, None, None
    rates = gate_rates(scores, ages, GATE_AGE)
    return {"gate_far": rates["false_accept_rate"], "gate_frr": rates["false_reject_rate"]}, scores, ages


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
            "images_per_second": metrics.get("train_images_per_second"),
            **{key: metrics[key] for key, _ in METRICS}, "undefined": metrics["undefined"],
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
    loss = "" if row["loss_fn"] == "default" else f" loss={row['loss_fn']}"
    extras = f" {row['extras']}" if row["extras"] else ""
    return (f"{row['model_name']} [{row['head']}] {row['optimizer']} lr={row['learning_rate']}{loss} "
            f"batch={row['batch_size']} epochs={row['epochs']} seed={row['seed']}{extras}")


def _mean_std(values: pd.Series, scale: float) -> str:
    values = values.dropna() * scale
    if values.empty:
        return "—"
    return f"{values.mean():.1f} ± {values.std(ddof=0):.1f}" if len(values) > 1 else f"{values.mean():.1f}"


def comparison_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per configuration, per backend: each metric as mean ± std over rounds (accuracies in %)."""
    rows = []
    for configuration, group in frame.groupby("configuration", sort=True):
        row = {"configuration": configuration}
        for backend, part in group.groupby("backend", sort=True):
            for key, label in METRICS:
                row[f"{backend} {label}"] = _mean_std(part[key], 1.0 if key == "loss" else 100.0)
            row[f"{backend} images/s"] = f"{part['images_per_second'].mean():.0f}"
            row[f"{backend} rounds"] = len(part)
            row[f"_{backend}_joint"] = part["joint_accuracy"].mean()
        rows.append(row)
    table = pd.DataFrame(rows)
    for backend in sorted(frame["backend"].unique()):
        key = f"_{backend}_joint"
        if key in table:
            best = table[key].idxmax()
            table[f"{backend} best"] = ["★" if i == best else "" for i in table.index]
            table = table.drop(columns=key)
    return table


def gate_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per configuration and backend: false-accept / false-reject rates of the gate at 18."""
    if "gate_far" not in frame or frame["gate_far"].isna().all():
        return pd.DataFrame()
    rows = []
    for (configuration, backend), part in frame.groupby(["configuration", "backend"], sort=True):
        rows.append({"configuration": configuration, "backend": backend,
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
        rows.append({"configuration": configuration, "backend": backend,
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
    from harness.ensemble import ENSEMBLES_DIR, MEMBERS_FILE

    rows, files = [], {}
    for members_file in sorted((results_dir / ENSEMBLES_DIR).glob(f"*/round-*/{MEMBERS_FILE}")):
        run_dir = members_file.parent
        try:
            description = json.loads(members_file.read_text())
            metrics = _read(run_dir / METRICS_FILE, lambda p: json.loads(p.read_text()))
            gate, scores, ages = _gate_columns(run_dir, "two_heads")
        except (DamagedTrial, ValueError, KeyError):
            continue   # an ensemble being written, or a damaged one: it is rebuilt by its command
        key = f"{run_dir.parent.name}/{run_dir.name}"
        files[key] = TrialFiles(metrics, pd.DataFrame(), gate, scores, ages)
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

    from harness.gate import rate_curve

    usable = frame[[files[t].scores is not None for t in frame["trial_id"]]] if len(frame) else frame
    if usable.empty or "cal_min_age" not in usable or usable["cal_min_age"].isna().all():
        return None
    min_age = float(usable["cal_min_age"].dropna().iloc[0])
    fig, axis = plt.subplots(figsize=(8, 6))
    target = usable["cal_target"].dropna()
    top_far, right_frr = 0.0, 0.0
    for (configuration, backend), part in usable.groupby(["configuration", "backend"], sort=True):
        # Each round's own curve, averaged at each false-reject level, would need one
        # threshold grid; pooling the rounds' test faces gives one honest curve instead.
        scores = np.concatenate([files[t].scores for t in part["trial_id"]])
        ages = np.concatenate([files[t].ages for t in part["trial_id"]])
        curve = rate_curve(scores, ages, min_age)
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


def _plots(frame: pd.DataFrame, files: dict[str, TrialFiles], results_dir: Path, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.plots import plot_split_balance

    out.mkdir(parents=True, exist_ok=True)
    written = []
    summary = frame.groupby(["configuration", "backend"])["joint_accuracy"].agg(["mean", "std"]).unstack()
    fig, axis = plt.subplots(figsize=(10, 1.5 + 0.9 * len(summary)))
    summary["mean"].plot.barh(xerr=summary["std"].fillna(0), ax=axis)
    for container in axis.containers:
        if hasattr(container, "datavalues"):
            axis.bar_label(container, fmt="%.3f", fontsize=8, padding=3)
    axis.set_yticks(range(len(summary)), [textwrap.fill(c, 40) for c in summary.index], fontsize=8)
    axis.set_xlim(0, 1)
    axis.set_ylabel("")
    axis.set_xlabel("joint accuracy on the test split (age group and gender both right)")
    axis.set_title("Grid results by backend (mean ± std over rounds)")
    fig.tight_layout()
    written.append(out / "grid_joint_accuracy.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)

    for n, (configuration, group) in enumerate(frame.groupby("configuration", sort=True)):
        fig, (loss_axis, acc_axis) = plt.subplots(1, 2, figsize=(11, 4))
        for backend, part in group.groupby("backend", sort=True):
            histories = [files[t].history for t in part["trial_id"]]
            mean = pd.concat(histories).groupby("epoch").mean(numeric_only=True)
            for column, style in (("loss", "-"), ("val_loss", "--")):
                loss_axis.plot(mean.index, mean[column], style, label=f"{backend} {column}")
            for column, style in (("val_joint_accuracy", "-"), ("val_gender_accuracy", "--"),
                                  ("val_age_exact_accuracy", ":")):
                if column in mean:
                    acc_axis.plot(mean.index, mean[column], style, label=f"{backend} {column[4:]}")
        loss_axis.set_title("training (solid) and validation (dashed) loss")
        acc_axis.set_title("validation accuracy (harness metrics)")
        for axis in (loss_axis, acc_axis):
            axis.set_xlabel("epoch")
            axis.legend(fontsize=7)
        fig.suptitle(configuration, fontsize=9)
        fig.tight_layout()
        written.append(out / f"learning_curves_{n}.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)

        fig, axes = plt.subplots(1, group["backend"].nunique(), figsize=(5.5 * group["backend"].nunique(), 4.5),
                                 squeeze=False)
        for axis, (backend, part) in zip(axes[0], group.groupby("backend", sort=True)):
            matrix = sum(np.array(files[t].metrics["age_confusion"]) for t in part["trial_id"])
            axis.imshow(matrix, cmap="Blues")
            labels = [age_label(i) for i in range(N_AGE)]
            axis.set_xticks(range(N_AGE), labels, rotation=45, fontsize=7)
            axis.set_yticks(range(N_AGE), labels, fontsize=7)
            axis.set_xlabel("predicted age group")
            axis.set_ylabel("true age group")
            axis.set_title(f"{backend}: age confusion (all rounds)")
            for (i, j), value in np.ndenumerate(matrix):
                axis.text(j, i, str(value), ha="center", va="center", fontsize=6)
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
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def write_report(results_dir: str | Path) -> Path:
    results_dir = Path(results_dir)
    everything = read_index(results_dir)
    if not everything:
        raise ValueError(f"{results_dir}: no results index (run the experiment first)")
    index = experiment_records(results_dir, everything)
    earlier = len(everything) - len(index)
    loaded = load_trials(results_dir, index)
    frame, damaged = loaded.frame, loaded.damaged
    tables, plots = results_dir / "tables", results_dir / "plots"
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
    name = _experiment_name(results_dir)
    lines = [f"# Report: {name}", ""]
    images = []
    if not frame.empty:
        comparison = comparison_table(frame)
        frame.drop(columns="configuration").to_csv(tables / "trials.csv", index=False)
        comparison.to_csv(tables / "comparison.csv", index=False)
        images = _plots(frame, loaded.files, results_dir, plots)
        lines += ["## Frameworks side by side",
                  "Accuracies in % (mean ± std over rounds), from each model's saved test predictions; "
                  "★ marks each backend's best configuration by joint accuracy. " + _threads_note(frame), "",
                  _markdown_table(comparison), ""]
        gates = gate_table(frame)
        if len(gates):
            gates.to_csv(tables / "age_gate.csv", index=False)
            lines += [f"## Age gate at {GATE_AGE}",
                      f"`allow` needs the probability of groups starting at {GATE_AGE} or later to reach "
                      f"{DEFAULT_GATE_THRESHOLD}, and the face's own (most likely) group to start at "
                      f"{GATE_AGE} or later; (15, 20) counts as under {GATE_AGE}. Rates on the test "
                      "split, against the exact ages.", "", _markdown_table(gates), ""]
    ensembles, ensemble_files = load_ensembles(results_dir)
    calibrated = calibrated_gate_table(pd.concat([frame, ensembles], ignore_index=True)) \
        if len(frame) or len(ensembles) else pd.DataFrame()
    if len(calibrated):
        calibrated.to_csv(tables / "calibrated_gate.csv", index=False)
        lines += ["## Calibrated door gate",
                  "The threshold each trial chose on its validation faces (`gate:` in the experiment): the "
                  "lowest adult probability whose validation false-accept rate meets the target, which "
                  "refuses the fewest adults. Rates on the test faces at that threshold; a target no "
                  "threshold met is counted and its reason given, never clamped.", "",
                  _markdown_table(calibrated), ""]
    if len(ensembles):
        ensemble_summary = ensemble_table(ensembles)
        ensemble_summary.to_csv(tables / "ensembles.csv", index=False)
        lines += ["## Ensembles",
                  "Mean probabilities of the member trials (`harness ensemble`), scored with the same code "
                  "on the same test faces; % as mean ± std over rounds.", "", _markdown_table(ensemble_summary), ""]
    if len(frame) or len(ensembles):
        plots.mkdir(parents=True, exist_ok=True)
        tradeoff = _gate_plot(pd.concat([frame, ensembles], ignore_index=True),
                              {**loaded.files, **ensemble_files}, plots / "gate_tradeoff.png")
        images += [tradeoff] if tradeoff else []
    if earlier:
        lines += [f"{earlier} earlier trial(s) in the index are not part of the experiment as last run "
                  "(their data or configuration has changed since) and are not shown.", ""]
    lines += ["## Reference", "Measured on a different dataset than ours unless the dataset column says so.", "",
              _markdown_table(REFERENCE), ""]
    if len(failed):
        lines += ["## Failed trials", "", _markdown_table(failed), ""]
    if len(damaged):
        lines += ["## Damaged trials", f"{len(damaged)} completed trials have files that cannot be read; "
                  "they are left out of every table and plot above (listed in tables/damaged.csv). "
                  "Delete a damaged trial's folder and run the experiment again to redo it.", "",
                  _markdown_table(damaged), ""]
    skipped_file = results_dir / "skipped_images.csv"
    skipped = pd.read_csv(skipped_file) if skipped_file.is_file() and skipped_file.stat().st_size > 1 else None
    if skipped is not None and len(skipped):
        lines += ["## Skipped images", f"{len(skipped)} images could not be decoded and took no part "
                  "(all listed in skipped_images.csv):", "", _markdown_table(skipped.head(20)), ""]
    unaligned_file = results_dir / "unaligned_images.csv"
    unaligned = pd.read_csv(unaligned_file) if unaligned_file.is_file() and unaligned_file.stat().st_size > 1 else None
    if unaligned is not None and len(unaligned):
        lines += ["## Images without a detected face", f"{len(unaligned)} images had no face dlib could find "
                  "and were used whole, unaligned (all listed in unaligned_images.csv).", ""]
    dropped_file = results_dir / "dropped_rows.csv"
    dropped = pd.read_csv(dropped_file) if dropped_file.is_file() and dropped_file.stat().st_size > 1 else None
    if dropped is not None and len(dropped):
        lines += ["## Dropped dataset rows", f"{len(dropped)} rows of the dataset were left out by its adapter "
                  "(all listed in dropped_rows.csv):", "",
                  _markdown_table(dropped.groupby("reason").size().rename("rows").reset_index()), "",
                  _markdown_table(dropped.head(20).fillna("")), ""]
    lines += ["## Plots", ""] + [f"![{p.stem}]({p.relative_to(results_dir)})" for p in images]
    markdown = "\n".join(lines) + "\n"
    (results_dir / "report.md").write_text(markdown)
    (results_dir / "report.html").write_text(_html(name, frame, failed, damaged, images, results_dir,
                                                   {"Calibrated door gate": calibrated,
                                                    "Ensembles": ensemble_table(ensembles) if len(ensembles)
                                                    else pd.DataFrame()}))
    return results_dir / "report.md"


def _experiment_name(results_dir: Path) -> str:
    try:
        return json.loads((results_dir / "experiment.json").read_text())["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return results_dir.name


def _threads_note(frame: pd.DataFrame) -> str:
    counts = sorted({int(t) for t in frame["threads"].dropna()})
    if not counts:
        return ""
    return (f"Each trial ran with {' or '.join(map(str, counts))} framework thread(s), fixed by the "
            "experiment (`threads`) and recorded in each trial's env.json: on the same CPU the same "
            "count gives the same numbers, whatever `--workers` was.")


def _html(name, frame, failed, damaged, images, results_dir, extra: dict[str, pd.DataFrame]) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(name)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 6px}img{max-width:100%}</style></head><body>",
             f"<h1>Report: {html.escape(name)}</h1>"]
    if not frame.empty:
        parts += ["<h2>Frameworks side by side</h2>", comparison_table(frame).to_html(index=False)]
        if len(gate_table(frame)):
            parts += [f"<h2>Age gate at {GATE_AGE}</h2>", gate_table(frame).to_html(index=False)]
    for title, table in extra.items():
        if len(table):
            parts += [f"<h2>{html.escape(title)}</h2>", table.to_html(index=False)]
    parts += ["<h2>Reference</h2>", REFERENCE.to_html(index=False)]
    if len(failed):
        parts += ["<h2>Failed trials</h2>", failed.to_html(index=False)]
    if len(damaged):
        parts += ["<h2>Damaged trials</h2>", damaged.to_html(index=False)]
    parts += ["<h2>Plots</h2>"] + [f"<p><img src='{p.relative_to(results_dir)}'></p>" for p in images]
    return "\n".join(parts + ["</body></html>"]) + "\n"
