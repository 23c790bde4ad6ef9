"""The report's tables, computed from the trials frame (plain DataFrames in and out)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.analysis import comparisons
from harness.models import backends

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


def describe_configuration(row) -> str:
    """Everything a configuration trains with except backend, round and seed (those are
    what its trials are paired over)."""
    loss = "" if row["loss_fn"] == "default" else f" loss={row['loss_fn']}"
    extras = f" {row['extras']}" if row["extras"] else ""
    architecture = ", ".join(f"{k}={_regularizer(v) if k == 'regularizer' else v}"
                             for k, v in row["spec"]["architecture"].items()
                             if k != "type" and not (k == "regularizer" and v.get("kind") == "none"))
    arch = row["spec"]["architecture"]
    if (arch["type"] == "face_resnet" and arch.get("weights", "dlib") == "dlib" and arch.get("input") != "cut"
            and not arch.get("trainable") and arch.get("train_from", "head") not in ("head", "all")):
        # Fine-tuned from the chip (pixel augmentation, or input: chip asked for): the cost differs.
        architecture += ", frozen part run every epoch"
    return (f"{row['model_name']} [{row['head']}] {arch['type']}({architecture}) "
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
            if "epoch_kept" in part and part["epoch_kept"].notna().any():
                # Early stopping: each round's kept epoch / epochs trained, in round order.
                row[f"{name} epoch kept / trained"] = ", ".join(
                    f"{int(k)}/{int(t)}" for k, t in part.sort_values("round")[["epoch_kept", "epochs_trained"]]
                    .dropna().itertuples(index=False))
        rows.append(row)
    return pd.DataFrame(rows)


def framework_display(pairs: pd.DataFrame, frame: pd.DataFrame, labels: dict[str, str]) -> pd.DataFrame:
    """Each metric's values on both backends next to each other, with the paired difference."""
    present = comparisons.ordered_backends(frame)
    names = [backends.display_name(b) for b in present]
    difference = f"{' − '.join(reversed(names[:2]))} (points, 95 % CI)" if len(names) >= 2 else "difference"
    rows, previous = [], None
    for _, pair in pairs.iterrows():
        # The verdict right after the row's name: the answer is what a reader looks for first.
        row = {"configuration": labels[pair["configuration"]] if pair["configuration"] != previous else "",
               "metric": pair["metric"], "verdict": pair["verdict"]}
        previous = pair["configuration"]
        for backend, name in zip(present, names):
            mean, std = pair[f"{backend} mean"], pair[f"{backend} std"]
            row[name] = "—" if pd.isna(mean) else f"{mean:.1f} ± {std:.1f}"
        row.update({difference: _interval(pair["difference"], pair["ci_low"], pair["ci_high"]),
                    "p (corrected t)": _p(pair["p_corrected_t"]), "p (Wilcoxon)": _p(pair["p_wilcoxon"]),
                    "pairs": pair["pairs"]})
        rows.append(row)
    return pd.DataFrame(rows)


def _arrow(verdict: str) -> str:
    return {"this higher": " ▲", "baseline higher": " ▼"}.get(verdict, "")


def versus_display(table: pd.DataFrame, labels: dict[str, str], than: str = "baseline") -> pd.DataFrame:
    """Rows of :func:`comparisons.against_baseline` or :func:`comparisons.between_experiments`."""
    rows = []
    for _, row in table.iterrows():
        shown = {"configuration": labels[row["configuration"]],
                 "backend": backends.display_name(row["backend"]),
                 "verdict (joint)": row["joint verdict"].replace("this higher", f"higher than {than}")
                 .replace("baseline higher", f"lower than {than}")}
        for _, label in comparisons.ACCURACIES:
            shown[f"{label} Δ"] = (_interval(row[f"{label} difference"], row[f"{label} ci_low"],
                                             row[f"{label} ci_high"]) + _arrow(row[f"{label} verdict"]))
        shown["joint p (corrected t / Wilcoxon)"] = f"{_p(row['joint p_corrected_t'])} / {_p(row['joint p_wilcoxon'])}"
        shown["pairs"] = row["joint pairs"]
        if "changes" in row:
            shown["changes"] = row["changes"]
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


FRACTION_COLUMNS = {"validation_joint"}   # shares from 0 to 1 among the percentages and points


def numeric_csv(table: pd.DataFrame, path: Path) -> None:
    """A table's numbers as the report shows them: percentages and points to 0.1, shares
    to 0.001, p-values to three significant digits (so that a small one stays readable);
    the trials' raw values are in trials.csv. Regenerating from the same results writes
    the same bytes."""
    rounded = table.copy()
    for column in rounded.select_dtypes("number").columns:
        name = str(column)
        if name.startswith("p_") or " p_" in name:
            rounded[column] = rounded[column].map(lambda v: float(f"{v:.3g}") if pd.notna(v) else v)
        elif not pd.api.types.is_integer_dtype(rounded[column]):
            rounded[column] = rounded[column].round(3 if name in FRACTION_COLUMNS else 1)
    rounded.to_csv(path, index=False)


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
