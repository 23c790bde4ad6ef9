"""The report's questions as tables: does the framework change the result, and which
design choices matter? Plain frames in (one row per trial), plain frames out.

A configuration is everything a trial trains except its backend, its round and its
seed; a round of a comparison is one (split round, seed) pair. Differences are in
percentage points; intervals and p-values come from :mod:`harness.analysis.statistics`.
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd

from harness.analysis import statistics
from harness.data.splits import SplitManifest, SplitSpec
from harness.models import backends

ACCURACIES = [("gender_accuracy", "gender"), ("age_exact_accuracy", "age exact"),
              ("age_one_off_accuracy", "age 1-off"), ("joint_accuracy", "joint")]
PAIR_KEYS = ["round", "seed"]
# The first backend of a pair (in the registry's order) is the reference: differences
# read "Keras − TFLearn".
LABEL_KEYS = ["head", "optimizer", "learning_rate", "loss_fn", "batch_size", "epochs", "extras"]
ONE_BACKEND = "one backend only"


def ordered_backends(frame: pd.DataFrame) -> list[str]:
    return backends.ordered(frame["backend"])


def short_labels(frame: pd.DataFrame) -> dict[str, str]:
    """configuration -> a short unique label: its model name, plus the options in which it
    differs from what most configurations use (the full text goes in the legend)."""
    specs = frame.drop_duplicates("configuration").set_index("configuration")
    usual = {key: Counter(map(str, specs[key])).most_common(1)[0][0] for key in LABEL_KEYS if key in specs}
    labels = {}
    for configuration, row in specs.iterrows():
        words = [f"{_short_key(key)}={_compact(row[key])}" if key not in ("head", "optimizer", "extras") else str(row[key])
                 for key in usual if str(row[key]) != usual[key] and str(row[key])
                 and not (key == "head" and str(row[key]) in str(row["model_name"]))]   # a model fixes its head
        labels[configuration] = " ".join([str(row["model_name"]), *words])
    # Alike so far (a search varies widths or dropout within one grid model): the
    # architecture fields in which each differs from the others of its label.
    for label in [label for label, n in Counter(labels.values()).items() if n > 1]:
        alike = [c for c, given in labels.items() if given == label]
        names = sorted({k for c in alike for k in _architecture(specs.loc[c]) if k != "type"})
        for name in names:
            common = Counter(str(_architecture(specs.loc[c]).get(name)) for c in alike).most_common(1)[0][0]
            for c in alike:
                value = _architecture(specs.loc[c]).get(name)
                if str(value) != common:
                    labels[c] += f" {name}={_compact(value)}"
    seen, numbered = Counter(labels.values()), Counter()
    for configuration in sorted(labels):   # still alike (they differ only where labels do not look): numbered
        if seen[labels[configuration]] > 1:
            numbered[labels[configuration]] += 1
            labels[configuration] = f"{labels[configuration]} #{numbered[labels[configuration]]}"
    return labels


def _compact(value) -> str:
    """A sampled number (0.002381063184266903) to three significant digits in a label."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _architecture(row) -> dict:
    spec = row["spec"] if "spec" in row and isinstance(row["spec"], dict) else {}
    return spec.get("architecture", {})


def _short_key(key: str) -> str:
    return {"learning_rate": "lr", "loss_fn": "loss", "batch_size": "batch"}.get(key, key)


def test_train_ratio(manifest: SplitManifest | None, spec: SplitSpec | None) -> float:
    """Test faces / training faces of a round: the overlap correction's factor."""
    if manifest is not None and len(manifest.assignments):
        counts = manifest.counts()
        if "test" in counts and "train" in counts and (counts["train"] > 0).all():
            return float((counts["test"] / counts["train"]).mean())
    spec = spec or SplitSpec()
    test = spec.test_size if spec.protocol == "random" else 1.0 / (spec.folds if spec.protocol != "adience_folds" else 5)
    return test / ((1.0 - test) * (1.0 - spec.val_fraction))


def _per_round(part: pd.DataFrame, metric: str) -> pd.Series:
    return part.set_index(PAIR_KEYS)[metric]


def paired(a: pd.DataFrame, b: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The metric of ``a`` and ``b`` on the rounds both ran, in the same order."""
    left, right = _per_round(a, metric), _per_round(b, metric)
    common = left.index.intersection(right.index).sort_values()
    return left.loc[common].to_numpy(float), right.loc[common].to_numpy(float)


def _comparison_row(a: pd.DataFrame, b: pd.DataFrame, metric: str, ratio: float,
                    names: tuple[str, str]) -> dict:
    left, right = paired(a, b, metric)
    result = statistics.compare(100 * left, 100 * right, ratio, names)
    d = result.difference
    return {"pairs": d.n, "difference": d.mean, "ci_low": d.low, "ci_high": d.high,
            "p_corrected_t": result.p_value, "p_wilcoxon": result.wilcoxon_p, "verdict": result.verdict}


def framework_pairs(frame: pd.DataFrame, ratio: float) -> pd.DataFrame:
    """Per configuration and accuracy: each backend's mean over rounds, and the paired
    difference between backends (later in the registry's order minus earlier) with its tests."""
    present = ordered_backends(frame)
    rows = []
    for configuration, group in frame.groupby("configuration", sort=True):
        parts = {b: group[group["backend"] == b] for b in present}
        ran = [b for b in present if len(parts[b])]
        for metric, label in ACCURACIES:
            row = {"configuration": configuration, "metric": label}
            for backend in present:
                values = 100 * parts[backend][metric]
                row[f"{backend} mean"] = values.mean() if len(values) else math.nan
                row[f"{backend} std"] = values.std(ddof=0) if len(values) else math.nan
            if len(ran) >= 2:
                first, second = ran[0], ran[1]
                row.update(_comparison_row(parts[second], parts[first], metric, ratio,
                                           (backends.display_name(second), backends.display_name(first))))
            else:
                row.update({"pairs": 0, "difference": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                            "p_corrected_t": math.nan, "p_wilcoxon": math.nan, "verdict": ONE_BACKEND})
            rows.append(row)
    return pd.DataFrame(rows)


def _flat(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def changes(spec: dict, baseline: dict) -> str:
    """What a configuration changes relative to the baseline, in words ('' for none)."""
    mine, theirs = _flat(spec), _flat(baseline)
    words = []
    other_type = mine.get("architecture.type") != theirs.get("architecture.type")
    if other_type:   # a different kind of network: its options are not one-by-one changes
        words.append(f"architecture: {theirs.get('architecture.type')} → {mine.get('architecture.type')} "
                     "(see the configurations table)")
    for key in sorted(set(mine) | set(theirs)):
        if other_type and key.startswith("architecture."):
            continue
        if mine.get(key) != theirs.get(key):
            name = key.removeprefix("architecture.").removeprefix("training.")
            words.append(f"{name}: {_word(theirs.get(key))} → {_word(mine.get(key))}")
    return "; ".join(words)


def _word(value) -> str:
    return "default" if value is None else str(value)


def baseline_configuration(frame: pd.DataFrame, baseline: dict | None) -> str | None:
    """The configuration an experiment's ``baseline: {model, training}`` names, if it ran."""
    if not baseline or frame.empty:
        return None
    wanted = baseline.get("training") or {}
    specs = frame.drop_duplicates("configuration")
    found = [row["configuration"] for _, row in specs.iterrows()
             if row["model_name"] == baseline.get("model")
             and all(row["spec"]["training"].get(k) == v for k, v in wanted.items())]
    return found[0] if len(found) == 1 else None


def _versus(part: pd.DataFrame, reference: pd.DataFrame, ratio: float, names: tuple[str, str]) -> dict:
    row = {}
    for metric, label in ACCURACIES:
        result = _comparison_row(part, reference, metric, ratio, names)
        row.update({f"{label} {key}": value for key, value in result.items()})
    return row


def against_baseline(frame: pd.DataFrame, baseline: str, ratio: float) -> pd.DataFrame:
    """Each configuration minus the baseline, per backend, paired over rounds."""
    base_spec = frame.loc[frame["configuration"] == baseline, "spec"].iloc[0]
    rows = []
    for (configuration, backend), part in frame.groupby(["configuration", "backend"], sort=True):
        if configuration == baseline:
            continue
        reference = frame[(frame["configuration"] == baseline) & (frame["backend"] == backend)]
        rows.append({"configuration": configuration, "backend": backend,
                     "changes": changes(part["spec"].iloc[0], base_spec),
                     **_versus(part, reference, ratio, ("this", "baseline"))})
    return pd.DataFrame(rows)


def between_experiments(a: pd.DataFrame, b: pd.DataFrame, ratio: float) -> pd.DataFrame:
    """The same configuration and backend in two experiments (``a`` minus ``b``), paired
    over rounds: for what the experiments change outside the grid, such as the input
    representation. Meaningful only when their rounds test the same faces (the caller checks)."""
    rows = []
    for (configuration, backend), part in a.groupby(["configuration", "backend"], sort=True):
        reference = b[(b["configuration"] == configuration) & (b["backend"] == backend)]
        if len(reference):
            rows.append({"configuration": configuration, "backend": backend,
                         **_versus(part, reference, ratio, ("this", "baseline"))})
    return pd.DataFrame(rows)


def ranking(frame: pd.DataFrame, ratio: float) -> pd.DataFrame:
    """Every (configuration, backend) ranked by mean joint accuracy, with corrected intervals."""
    rows = []
    for (configuration, backend), part in frame.groupby(["configuration", "backend"], sort=True):
        row = {"configuration": configuration, "backend": backend, "rounds": len(part)}
        for metric, label in ACCURACIES:
            interval, _ = statistics.corrected_interval(100 * part[metric].to_numpy(float), ratio)
            row.update({f"{label} mean": interval.mean, f"{label} ci_low": interval.low,
                        f"{label} ci_high": interval.high})
        rows.append(row)
    table = pd.DataFrame(rows).sort_values(["joint mean", "configuration", "backend"],
                                           ascending=[False, True, True], kind="mergesort")
    table.insert(0, "rank", range(1, len(table) + 1))
    return table.reset_index(drop=True)


def rounds_sentence(frame: pd.DataFrame, spec: SplitSpec | None) -> str:
    """Which sources of variance the rounds sample, in one sentence."""
    rounds, seeds = sorted(map(int, frame["round"].unique())), sorted(map(int, frame["seed"].unique()))
    if spec is not None and spec.protocol == "random":
        split = "one random split"
    else:
        split = f"{len(rounds)} split round{'s' * (len(rounds) != 1)} (folds)"
    if len(seeds) > 1:
        what = ("the initialisation varies, the split does not" if len(rounds) == 1 else
                "both the split and the initialisation vary")
        return (f"Rounds: {split} × {len(seeds)} seeds {seeds} = {len(rounds) * len(seeds)} paired "
                f"observations per comparison; {what}.")
    what = "the split varies, the initialisation does not" if len(rounds) > 1 else "neither varies"
    return f"Rounds: {split}, one seed ({seeds[0]}): {len(rounds)} paired observation(s) per comparison; {what}."


def failures(frame: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(configuration, backend) -> why one of its trials did not learn
    (:mod:`harness.analysis.learning`; the frame's ``did_not_learn`` column)."""
    if "did_not_learn" not in frame or frame.empty:
        return {}
    found = {}
    for (c, b), part in frame.groupby(["configuration", "backend"]):
        bad = part[part["did_not_learn"].notna()]
        if len(bad):
            rounds = f"in {len(bad)} of {len(part)} rounds: " if len(part) > 1 else ""
            found[(c, b)] = rounds + str(bad["did_not_learn"].iloc[0])
    return found


def backend_names(found: list[str]) -> str:
    """Backends in the registry's order, by their display names: 'TFLearn and Keras'."""
    return " and ".join(backends.display_name(b) for b in backends.ordered(found))


def _set_aside(row: pd.Series, verdict_keys: list[str], number_keys: list[str], who: list[str],
               include: bool) -> pd.Series:
    row = row.copy()
    for key in verdict_keys:
        if include:
            row[key] = f"{row[key]} (compares a model that did not learn: {backend_names(who)})"
        else:
            row[key] = f"left out: {backend_names(who)} did not learn"
    if not include:
        for key in number_keys:
            row[key] = math.nan
    return row


_NUMBERS = ["difference", "ci_low", "ci_high", "p_corrected_t", "p_wilcoxon"]


def set_aside_framework(pairs: pd.DataFrame, failed: dict, include: bool = False) -> pd.DataFrame:
    """:func:`framework_pairs` with the verdicts of configurations where a backend did not
    learn replaced: left out (their numbers blanked), or with ``include`` kept and said to
    compare a failure."""
    if pairs.empty or not failed:
        return pairs
    rows = []
    for _, row in pairs.iterrows():
        who = [b for (c, b) in failed if c == row["configuration"]]
        rows.append(_set_aside(row, ["verdict"], _NUMBERS, who, include) if who else row)
    return pd.DataFrame(rows).reset_index(drop=True)


def set_aside_versus(table: pd.DataFrame, failed: dict, baseline: str, include: bool = False) -> pd.DataFrame:
    """:func:`against_baseline` likewise: a row is set aside when this configuration or
    the baseline did not learn on its backend."""
    if table.empty or not failed:
        return table
    verdicts = [f"{label} verdict" for _, label in ACCURACIES]
    numbers = [f"{label} {key}" for _, label in ACCURACIES for key in _NUMBERS]
    rows = []
    for _, row in table.iterrows():
        who = [row["backend"]] if ((row["configuration"], row["backend"]) in failed
                                   or (baseline, row["backend"]) in failed) else []
        rows.append(_set_aside(row, verdicts, numbers, who, include) if who else row)
    return pd.DataFrame(rows).reset_index(drop=True)
