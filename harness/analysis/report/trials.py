"""Reading finished trials (and ensemble rounds) back from a results folder, checked: a
damaged trial is named and left out, never half read."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.analysis.learning import did_not_learn
from harness.analysis.report.tables import GATE_AGE, METRICS, YEARS_METRICS, describe_configuration
from harness.data.splits import SplitManifest, SplitSpec
from harness.models import heads
from harness.models.gate import gate_rates
from harness.models.spec import TrainingSpec
from harness.runs.index import experiment_records, trial_dir
from harness.runs.layout import (
    ENSEMBLES_DIR,
    ENV_FILE,
    EXPERIMENT_FILE,
    HISTORY_FILE,
    INDEX_FILE,
    LABELS_FILE,
    MEMBERS_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    SPLITS_DIR,
    VAL_PREDICTIONS_FILE,
)
from harness.runs.trial import age_residuals


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
    test_readouts: np.ndarray | None = None   # every test face's readout, exact age known or not ...
    test_labels: pd.DataFrame | None = None   # ... and its labels (age_group, gender, age, group if any)
    val_readouts: np.ndarray | None = None    # the validation faces' readouts and exact ages (a pooled
    val_ages: np.ndarray | None = None        # gate calibration reads them), where the trial kept them


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
    labels = _labels(run_dir)
    return TrialFiles(metrics, history, *_gate_columns(run_dir, head, labels), *_validation(run_dir, head, labels))


def _labels(run_dir: Path) -> pd.DataFrame:
    return _read(run_dir / LABELS_FILE, lambda p: pd.read_csv(p, dtype={"id": str}).set_index("id"))


def _validation(run_dir: Path, head: str, labels: pd.DataFrame) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The validation faces' readouts and exact ages, or (None, None) without them."""
    path = run_dir / VAL_PREDICTIONS_FILE
    if not path.is_file():
        return None, None
    saved = _read(path, lambda p: dict(np.load(p)))
    try:
        return (heads.readout(head, saved["outputs"], age_residuals(run_dir, head)),
                labels.loc[saved["ids"], "age"].to_numpy(dtype=float))
    except Exception as err:
        raise DamagedTrial(path, f"does not match {LABELS_FILE}: {type(err).__name__}: {err}") from None


def _gate_columns(run_dir: Path, head: str | None, labels: pd.DataFrame | None = None) -> tuple:
    """The age gate at 18 on this trial's test predictions, where exact ages are known (its
    rates, readouts and ages), then every test face's readout and labels. ``head`` None:
    the stored outputs are already readouts (an ensemble round's)."""
    labels = _labels(run_dir) if labels is None else labels
    saved = _read(run_dir / PREDICTIONS_FILE, lambda p: dict(np.load(p)))
    try:
        test_labels = labels.loc[saved["ids"]].reset_index()
        ages = test_labels["age"].to_numpy(dtype=float)
        readouts = (heads.readout(head, saved["outputs"], age_residuals(run_dir, head)) if head
                    else heads.readout(heads.readout_head(saved["outputs"]), saved["outputs"]))
    except Exception as err:
        raise DamagedTrial(run_dir / PREDICTIONS_FILE,
                           f"does not match {LABELS_FILE}: {type(err).__name__}: {err}") from None
    if np.isnan(ages).any():
        return {}, None, None, readouts, test_labels
    rates = gate_rates(readouts, ages, GATE_AGE)
    return ({"gate_far": rates["false_accept_rate"], "gate_frr": rates["false_reject_rate"]}, readouts, ages,
            readouts, test_labels)


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
            # Early stopping: the epoch whose weights were kept, and how many were trained.
            "epoch_kept": (metrics.get("training") or {}).get("epoch_kept"),
            "epochs_trained": (metrics.get("training") or {}).get("epochs_trained"),
            **{key: metrics[key] for key, _ in METRICS}, "undefined": metrics["undefined"],
            **{key: metrics[key] for key, _ in YEARS_METRICS if key in metrics},   # years heads only
            **loaded.gate, **_calibrated_columns(metrics),
            "test_faces": metrics.get("n"), "input": _input(config.get("preprocessing") or {}),
            "did_not_learn": did_not_learn(metrics),
        })
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["configuration"] = frame.apply(describe_configuration, axis=1)
        frame = frame.sort_values(["configuration", "backend", "round"]).reset_index(drop=True)
    damaged_frame = pd.DataFrame(damaged, columns=["trial_id", "file", "reason"]).sort_values("trial_id")
    return LoadedTrials(frame, files, damaged_frame.reset_index(drop=True))


def _input(preprocessing: dict) -> str:
    """What the network reads, in words: pixels of a size, or dlib's descriptor."""
    if preprocessing.get("representation") == "dlib_embedding":
        return "dlib face descriptors"
    size = preprocessing.get("size", 64)
    return f"{size}×{size} {preprocessing.get('color', 'rgb')} pixels" + (
        ", dlib-aligned" if preprocessing.get("align") == "dlib" else "")


def trials_frame(results_dir: Path) -> pd.DataFrame:
    """One row per readable completed trial: its configuration columns and its metrics."""
    return load_trials(results_dir).frame


def load_ensembles(results_dir: Path) -> tuple[pd.DataFrame, dict[str, TrialFiles]]:
    """One row per ensemble round under RESULTS_DIR/ensembles (see ``harness ensemble``)."""
    rows, files = [], {}
    for members_file in sorted((results_dir / ENSEMBLES_DIR).glob(f"*/round-*/{MEMBERS_FILE}")):
        run_dir = members_file.parent
        if run_dir.parent.name.startswith("."):
            continue   # an ensemble being built (or one a kill left half-built)
        try:
            description = json.loads(members_file.read_text())
            metrics = _read(run_dir / METRICS_FILE, lambda p: json.loads(p.read_text()))
            gate, readouts, ages, test_readouts, test_labels = _gate_columns(run_dir, None)
        except (DamagedTrial, ValueError, KeyError):
            continue   # an ensemble being written, or a damaged one: it is rebuilt by its command
        key = f"{run_dir.parent.name}/{run_dir.name}"
        files[key] = TrialFiles(metrics, pd.DataFrame(), gate, readouts, ages, test_readouts, test_labels)
        members = ", ".join(f"{m['model_name']}{' ' + m['options'] if m.get('options') else ''} ({m['backend']})"
                            for m in description["members"])
        tta = f", tta {description['tta']}" if description.get("tta") else ""
        rows.append({"trial_id": key, "backend": "ensemble", "round": description["round"],
                     "configuration": f"ensemble {run_dir.parent.name}: {members}{tta}",
                     **{k: metrics[k] for k, _ in METRICS}, **gate, **_calibrated_columns(metrics),
                     "test_faces": metrics.get("n"), "did_not_learn": did_not_learn(metrics)})
    return pd.DataFrame(rows), files


def stored_experiment(results_dir: Path) -> dict:
    try:
        stored = json.loads((results_dir / EXPERIMENT_FILE).read_text())
        return stored if isinstance(stored, dict) else {}
    except (OSError, ValueError):
        return {}


def stored_split_spec(stored: dict) -> SplitSpec | None:
    try:
        return SplitSpec(**stored["split"])
    except (KeyError, TypeError, ValueError):
        return None


def stored_manifest(results_dir: Path) -> SplitManifest | None:
    try:
        return SplitManifest.load(results_dir / SPLITS_DIR)
    except (OSError, ValueError, KeyError):
        return None


# The packages whose versions can move a trial's numbers, as env.json names them.
VERSIONED = ("tensorflow", "keras", "tflearn", "jax", "numpy")


def framework_versions(results_dir: Path, records: dict[str, dict]) -> str:
    """One sentence on the framework versions the trials ran under (from each trial's
    env.json), saying so when they differ between trials; empty when none recorded them."""
    seen: dict[str, dict[str, int]] = {}
    counted = 0
    for trial_id in records:
        try:
            environment = json.loads((trial_dir(results_dir, trial_id) / ENV_FILE).read_text())
        except (OSError, ValueError):
            continue
        counted += 1
        for package in VERSIONED:
            if isinstance(environment.get(package), str):
                versions = seen.setdefault(package, {})
                versions[environment[package]] = versions.get(environment[package], 0) + 1
    if not seen:
        return ""
    if all(len(versions) == 1 for versions in seen.values()):
        listed = ", ".join(f"{package} {next(iter(versions))}" for package, versions in seen.items())
        return f" Framework versions (from {counted} trials' env.json): {listed}."
    listed = "; ".join(f"{package} " + ", ".join(f"{v} ({n} trials)" for v, n in sorted(versions.items()))
                       for package, versions in seen.items())
    return f" **Its trials ran under different framework versions**: {listed}."
