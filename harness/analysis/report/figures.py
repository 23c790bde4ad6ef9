"""The report's plots: learning curves, the gate trade-off, forest plots and bar charts,
drawn from tables and trial files."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from harness.analysis import comparisons, statistics
from harness.analysis.report.trials import TrialFiles
from harness.data.labels import N_AGE, N_GENDER, age_label
from harness.data.splits import MANIFEST_CSV, SplitManifest
from harness.models import backends, heads
from harness.runs.layout import SPLITS_DIR, TABLE_FILE


def gate_plot(frame: pd.DataFrame, files: dict[str, TrialFiles], path: Path) -> Path | None:
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
    styles: dict[str, int] = {}   # the backend's colour everywhere; its configurations by line style
    for (configuration, backend), part in usable.groupby(["configuration", "backend"], sort=True):
        # Each round's own curve, averaged at each false-reject level, would need one
        # threshold grid; pooling the rounds' test faces gives one honest curve instead.
        readouts = np.concatenate([files[t].readouts for t in part["trial_id"]])
        ages = np.concatenate([files[t].ages for t in part["trial_id"]])
        curve = rate_curve(readouts, ages, min_age)
        label = textwrap.shorten(f"{backends.display_name(backend)}: {configuration}", 70)
        styles[backend] = styles.get(backend, -1) + 1
        style = ("-", "--", ":", "-.")[styles[backend] % 4]
        line, = axis.plot(100 * curve["false_reject_rate"], 100 * curve["false_accept_rate"], style, label=label,
                          lw=1, color=backends.colour(backend, "#555555"))
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


def joint_confusion(readouts: np.ndarray, labels: pd.DataFrame) -> np.ndarray:
    """The 16 classes (age group × gender) of one trial's test faces: true (rows) against
    predicted (columns), class = 2 × group + gender."""
    groups = heads.group_probabilities(readouts).argmax(axis=1)
    genders = np.asarray(readouts)[:, -N_GENDER:].argmax(axis=1)
    true = 2 * labels["age_group"].to_numpy(int) + labels["gender"].to_numpy(int)
    return np.bincount(true * 2 * N_AGE + 2 * groups + genders, minlength=(2 * N_AGE) ** 2).reshape(2 * N_AGE, -1)


def _joint_plot(title: str, group: pd.DataFrame, files: dict[str, TrialFiles], path: Path) -> Path | None:
    """Per backend, the joint (16-class) confusion of all rounds together."""
    import matplotlib.pyplot as plt

    parts = [(backend, part) for backend, part in group.groupby("backend", sort=True)
             if all(files[t].test_readouts is not None and files[t].test_labels is not None for t in part["trial_id"])]
    if not parts:
        return None
    fig, axes = plt.subplots(1, len(parts), figsize=(7 * len(parts), 6.5), squeeze=False)
    names = [f"{'MF'[g]} {age_label(a)}" for a in range(N_AGE) for g in range(2)]
    for axis, (backend, part) in zip(axes[0], parts):
        matrix = sum(joint_confusion(files[t].test_readouts, files[t].test_labels) for t in part["trial_id"])
        axis.imshow(matrix, cmap="Purples")
        axis.set_xticks(range(2 * N_AGE), names, rotation=90, fontsize=6)
        axis.set_yticks(range(2 * N_AGE), names, fontsize=6)
        axis.set_xlabel("predicted (gender, age group)")
        axis.set_ylabel("true (gender, age group)")
        axis.set_title(f"{backends.display_name(backend)}: joint confusion, 16 classes (all rounds)", fontsize=9)
        for (i, j), value in np.ndenumerate(matrix):
            if value:
                axis.text(j, i, str(value), ha="center", va="center", fontsize=5)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def forest_rows(table: pd.DataFrame, labels: dict[str, str], backend: bool) -> pd.DataFrame:
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
                         "significant": verdict.split(" (compares")[0].endswith("higher"),
                         "tested": not verdict.startswith((statistics.NOT_ENOUGH, "left out")),
                         **({"backend": row["backend"]} if backend else {})})
    return pd.DataFrame(rows)


def draw_plots(frame: pd.DataFrame, files: dict[str, TrialFiles], results_dir: Path, out: Path,
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
        written.append(forest_plot(forest_rows(paired, labels, backend=False), metrics,
                                   out / "forest_frameworks.png",
                                   f"{names[1]} − {names[0]} per configuration: mean paired difference over rounds "
                                   "and its corrected 95 % interval (filled: p < 0.05)",
                                   f"points (← {names[0]} higher | {names[1]} higher →)"))
    if len(versus):
        written.append(forest_plot(forest_rows(versus, labels, backend=True), metrics,
                                   out / "forest_baseline.png",
                                   f"Each configuration − the baseline ({labels[baseline]}), per backend "
                                   "(filled: p < 0.05)", "points (← baseline higher | this higher →)"))

    summary = frame.groupby(["configuration", "backend"])["joint_accuracy"].agg(["mean", "std"]).unstack()
    fig, axis = plt.subplots(figsize=(10, 1.5 + 0.45 * len(summary) * max(1, summary["mean"].shape[1] / 2)))
    summary["mean"].rename(columns=backends.display_name).plot.barh(
        xerr=summary["std"].fillna(0).rename(columns=backends.display_name), ax=axis,
        color=[backends.colour(b) for b in summary["mean"].columns])
    for container in axis.containers:
        if hasattr(container, "datavalues"):
            axis.bar_label(container, fmt="%.3f", fontsize=7, padding=3)
    axis.set_yticks(range(len(summary)), [labels[c] for c in summary.index], fontsize=8)
    axis.set_xlim(0, 1)
    axis.set_ylabel("")
    axis.set_xlabel("joint accuracy on the test split (age group and gender both right)")
    one_round = frame.groupby(["configuration", "backend"]).size().max() == 1
    axis.set_title("Grid results by backend (" + ("one round" if one_round else "mean ± std over rounds") + ")")
    fig.tight_layout()
    written.append(out / "grid_joint_accuracy.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)

    for n, (configuration, group) in enumerate(frame.groupby("configuration", sort=True)):
        written.append(_curves_plot(configuration, group, files, out / f"learning_curves_{n}.png"))
        count = group["backend"].nunique()
        # Per backend its age confusion and, beside it, its gender confusion (all rounds).
        fig, axes = plt.subplots(1, 2 * count, figsize=(7.5 * count, 4.5), squeeze=False,
                                 gridspec_kw={"width_ratios": [4, 1.3] * count})
        for n_backend, (backend, part) in enumerate(group.groupby("backend", sort=True)):
            axis, gender_axis = axes[0][2 * n_backend], axes[0][2 * n_backend + 1]
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
            genders = [files[t].metrics.get("gender_confusion") for t in part["trial_id"]]
            if all(g is not None for g in genders):
                gender = sum(np.array(g) for g in genders)
                gender_axis.imshow(gender, cmap="Oranges")
                gender_axis.set_xticks(range(2), ["male", "female"], fontsize=7)
                gender_axis.set_yticks(range(2), ["male", "female"], fontsize=7)
                gender_axis.set_xlabel("predicted gender")
                gender_axis.set_title("gender", fontsize=9)
                for (i, j), value in np.ndenumerate(gender):
                    gender_axis.text(j, i, str(value), ha="center", va="center", fontsize=7)
            else:
                gender_axis.axis("off")
        fig.suptitle(labels[configuration], fontsize=9)
        fig.tight_layout()
        written.append(out / f"age_confusion_{n}.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
        joint = _joint_plot(labels[configuration], group, files, out / f"joint_confusion_{n}.png")
        written += [joint] if joint else []

    splits = results_dir / SPLITS_DIR
    if (splits / MANIFEST_CSV).is_file():
        table = pd.read_csv(splits / TABLE_FILE, dtype={"id": str})
        manifest = SplitManifest.load(splits)
        ran = set(frame["round"])
        manifest.assignments = manifest.assignments[manifest.assignments["round"].isin(ran)]
        written += plot_split_balance(table, manifest, out / SPLITS_DIR)
    return written
