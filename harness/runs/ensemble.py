"""Ensembles: the mean age/gender probabilities of finished trials, scored like a trial.

Members average their readouts (:func:`harness.models.heads.readout`): group models their 10
scores, years models their distributions over 0..100 years; the two kinds do not mix.

An ensemble directory holds ``ensemble.json`` (how the members were chosen) and one run
directory per round, ``round-<r>/``: the members of that round (trials of one split and
round, any backends and inputs), their mean test and validation scores, and metrics
from the same code that scores a trial. ``harness predict --model DIR/round-<r>`` runs
each member through its own backend, in its own process. Members are chosen on the
validation split (``--top K``), never on the test faces they are scored on.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.data.splits import SplitManifest
from harness.files import write_atomic
from harness.models import heads, metrics
from harness.models.gate import GateSpec
from harness.paths import PROJECT_ROOT
from harness.processes import die_with_parent, worker_command, worker_env
from harness.runs.index import experiment_records, trial_dir
from harness.runs.layout import (
    DONE_FILE,
    ENSEMBLE_FILE,
    HISTORY_FILE,
    LABELS_FILE,
    MEMBERS_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    ROUND_PREFIX,
    VAL_PREDICTIONS_FILE,
    finished,
    kind_of,
)
from harness.runs.trial import TrialConfig, age_residuals, final_validation, read_config

TTA_CHOICES = ("flip",)
RANK_METRICS = ("joint_accuracy", "gender_accuracy", "age_exact_accuracy")



class EnsembleError(ValueError):
    """Members that cannot be averaged; the message names them and why."""


@dataclass(frozen=True)
class Member:
    trial_id: str
    run_dir: Path
    config: TrialConfig
    model_name: str

    @property
    def label(self) -> str:
        return f"{self.trial_id} ({self.config.backend} {self.model_name})"


def _member(results_dir: Path, trial_id: str, model_name: str | None = None) -> Member:
    run_dir = trial_dir(results_dir, trial_id)
    if not finished(run_dir):
        raise EnsembleError(f"trial {trial_id}: not a finished trial of {results_dir} (no {run_dir / DONE_FILE})")
    return Member(trial_id, run_dir, read_config(run_dir), model_name or trial_id)


def members_by_ids(results_dir: str | Path, trial_ids: list[str]) -> dict[int, list[Member]]:
    """The named trials, which must share one split and round."""
    results_dir = Path(results_dir)
    names = {r["trial_id"]: r.get("model_name") for r in experiment_records(results_dir).values()}
    members = [_member(results_dir, t, names.get(t)) for t in dict.fromkeys(trial_ids)]
    _check_same_round(members)
    return {members[0].config.round: members}


def _check_same_round(members: list[Member]) -> None:
    if len({m.config.round for m in members}) > 1:
        raise EnsembleError("trials from different rounds cannot be averaged: " + "; ".join(
            f"{m.label} is round {m.config.round}" for m in members))


def _configuration_key(config: TrialConfig) -> str:
    """What a trial is apart from its round: trials with one key are one configuration."""
    return json.dumps(config.model_dump(mode="json", exclude={"round", "data_fingerprint", "cache_entry"}),
                      sort_keys=True)


def _validation_score(run_dir: Path, metric: str) -> float:
    score = final_validation(run_dir, f"val_{metric}")
    if score is None:
        raise EnsembleError(f"{run_dir / HISTORY_FILE}: has no val_{metric} to rank by (no validation split?)")
    return score


def members_by_rank(results_dir: str | Path, top: int, metric: str = "joint_accuracy",
                    models: list[str] | None = None) -> dict[int, list[Member]]:
    """Per round, the trials of the ``top`` configurations with the best mean validation ``metric``.

    A configuration is a trial's config apart from its round; its score is the mean over
    its rounds of the last epoch's validation value. Rounds where any chosen
    configuration has no finished trial are left out; ``models``: only these grid models
    compete. The validation value is the epoch
    each trial's saved model is from (the one early stopping kept).
    """
    if metric not in RANK_METRICS:
        raise EnsembleError(f"--metric {metric!r}: choose from {list(RANK_METRICS)}")
    if top < 1:
        raise EnsembleError(f"--top must be at least 1, got {top}")
    results_dir = Path(results_dir)
    records = experiment_records(results_dir).values()
    if models:
        known = {r.get("model_name") for r in records}
        unknown = sorted(set(models) - known)
        if unknown:
            raise EnsembleError(f"--models {' '.join(unknown)}: no such model in {results_dir} (its models: "
                                f"{', '.join(sorted(str(k) for k in known))})")
    by_key: dict[str, dict[int, Member]] = {}
    for record in records:
        if record.get("status") != "completed" or (models and record.get("model_name") not in models):
            continue
        member = _member(results_dir, record["trial_id"], record.get("model_name"))
        by_key.setdefault(_configuration_key(member.config), {})[member.config.round] = member
    if len(by_key) < top:
        raise EnsembleError(f"--top {top}: {results_dir} has only {len(by_key)} configuration(s) with finished trials")
    ranked = sorted(by_key, key=lambda k: -np.mean([_validation_score(m.run_dir, metric)
                                                    for m in by_key[k].values()]))[:top]
    rounds = sorted(set.intersection(*(set(by_key[k]) for k in ranked)))
    if not rounds:
        raise EnsembleError(f"the top {top} configurations share no round with a finished trial each")
    return {r: [by_key[k][r] for k in ranked] for r in rounds}


def _check_same_split(members: list[Member]) -> None:
    reference = members[0]
    ref_manifest = SplitManifest.load(reference.run_dir)
    for member in members[1:]:
        manifest = SplitManifest.load(member.run_dir)
        for role in ("train", "val", "test"):
            if set(manifest.ids(member.config.round, role)) != set(ref_manifest.ids(reference.config.round, role)):
                raise EnsembleError(f"trials from different splits cannot be averaged: the {role} faces of "
                                    f"{member.label} differ from those of {reference.label}")


def member_readouts(member: Member, role: str, tta: str | None = None) -> dict | None:
    """ids, readouts of one member on one role; None if it has none saved.

    Stored predictions without test-time augmentation; with it, the member's own backend
    predicts again in a worker process of its own.
    """
    if tta is None:
        path = member.run_dir / (PREDICTIONS_FILE if role == "test" else VAL_PREDICTIONS_FILE)
        if not path.is_file():
            return None
        saved = dict(np.load(path))
    else:
        with tempfile.TemporaryDirectory(prefix="harness-tta-") as tmp:
            out = Path(tmp) / "out.npz"
            result = subprocess.run(worker_command("predict", member.run_dir, out, "--role", role, "--tta", tta),
                                    cwd=PROJECT_ROOT, capture_output=True, text=True, env=worker_env(),
                                    preexec_fn=die_with_parent)
            if result.returncode:
                raise EnsembleError(f"{member.label}: predicting the {role} split with --tta {tta} failed: "
                                    f"{(result.stderr or result.stdout).strip().splitlines()[-1:]}")
            saved = dict(np.load(out))
    head = member.config.model.head
    return {"ids": saved["ids"].astype(str),
            "readouts": heads.readout(head, saved["outputs"], age_residuals(member.run_dir, head)),
            "age": saved["age"], "gender": saved["gender"]}


def _mean_readouts(members: list[Member], role: str, tta: str | None) -> dict | None:
    parts = [member_readouts(m, role, tta) for m in members]
    if any(p is None for p in parts):
        return None
    ids = parts[0]["ids"]
    for member, part in zip(members[1:], parts[1:]):
        if not np.array_equal(part["ids"], ids):
            raise EnsembleError(f"{member.label}: its {role} predictions cover other faces than "
                                f"{members[0].label}'s (different images skipped by their caches)")
    return {**parts[0], "readouts": np.mean([p["readouts"] for p in parts], axis=0)}


def build_round(members: list[Member], out: Path, tta: str | None = None, gate: GateSpec | None = None) -> dict:
    """Score one round's ensemble and write its run directory; returns its metrics.

    ``gate`` calibrates the door gate on the members' stored validation predictions
    (default: the members' own ``gate:``), so a new target needs no retraining.
    """
    if not members:
        raise EnsembleError("an ensemble needs at least one member")
    if tta is not None and tta not in TTA_CHOICES:
        raise EnsembleError(f"--tta {tta!r}: choose from {list(TTA_CHOICES)}")
    if tta is not None:
        embedded = [m.label for m in members if m.config.preprocessing.embedding]
        if embedded:
            raise EnsembleError(f"--tta {tta}: members {embedded} read cached face descriptors, which "
                                "cannot be mirrored; train them with embedding_flip instead")
    _check_same_round(members)
    _check_same_split(members)
    _check_same_readout(members)
    test = _mean_readouts(members, "test", tta)
    val = _mean_readouts(members, "val", tta)
    out.mkdir(parents=True, exist_ok=True)
    (out / DONE_FILE).unlink(missing_ok=True)
    labels = pd.read_csv(members[0].run_dir / LABELS_FILE, dtype={"id": str}).set_index("id")
    result = metrics.compute(heads.readout_head(test["readouts"]), test["readouts"], test["age"], test["gender"],
                             threshold=members[0].config.threshold,
                             years=labels.loc[test["ids"], "age"].to_numpy(float))
    gate_spec = gate or members[0].config.gate
    if gate is not None and val is None:
        raise EnsembleError(f"--gate-*: {members[0].label} and the others need stored validation "
                            f"predictions ({VAL_PREDICTIONS_FILE}) to calibrate on; train them again")
    if gate_spec is not None:
        val_readouts = val["readouts"] if val else np.zeros((0, test["readouts"].shape[1]))
        val_years = labels.loc[val["ids"], "age"].to_numpy(float) if val else np.zeros(0)
        result["gate"] = metrics.calibrated_gate(gate_spec, val_readouts, val_years, test["readouts"],
                                                 labels.loc[test["ids"], "age"].to_numpy(float))
    result["members"] = len(members)
    description = {
        "round": members[0].config.round, "tta": tta, "gate": gate_spec and gate_spec.model_dump(),
        "threshold": members[0].config.threshold,
        "members": [{"trial_id": m.trial_id, "backend": m.config.backend, "model_name": m.model_name,
                     "options": m.config.training.extras(),
                     "run_dir": os.path.relpath(m.run_dir.resolve(), out.resolve())} for m in members],
    }
    for name, role in ((PREDICTIONS_FILE, test), (VAL_PREDICTIONS_FILE, val)):
        if role is not None:
            write_atomic(out / name, lambda p, r=role: _save(p, r))
    labels.loc[test["ids"]].reset_index().to_csv(out / LABELS_FILE, index=False)
    write_atomic(out / MEMBERS_FILE, lambda p: p.write_text(json.dumps(description, indent=2)))
    write_atomic(out / METRICS_FILE, lambda p: p.write_text(json.dumps(result, indent=2)))
    (out / DONE_FILE).write_text("ensemble\n")
    return result


def _check_same_readout(members: list[Member]) -> None:
    in_years = [m for m in members if m.config.model.head in heads.YEARS_HEADS]
    if in_years and len(in_years) < len(members):
        others = [m for m in members if m.config.model.head not in heads.YEARS_HEADS]
        raise EnsembleError(f"years models ({', '.join(m.label for m in in_years)}) and age-group models "
                            f"({', '.join(m.label for m in others)}) cannot be averaged: one gives a "
                            "distribution over years, the other over 8 groups; ensemble each kind apart")


def _save(path: Path, role: dict) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, ids=role["ids"], outputs=role["readouts"], age=role["age"], gender=role["gender"])


def build(results_dir: str | Path, groups: dict[int, list[Member]], out: str | Path,
          tta: str | None = None, selection: str = "", gate: GateSpec | None = None) -> dict[int, dict]:
    """One run directory per round under ``out``; ``ensemble.json`` says how it was chosen.

    Built in a sibling folder and renamed into place: a refused or failed build leaves
    nothing (not even an empty folder), and an earlier ensemble of that name stays whole
    until the new one is."""
    out = Path(out)
    if out.exists() and kind_of(out) != "ensemble" and (not out.is_dir() or any(out.iterdir())):
        raise EnsembleError(f"{out}: exists and is not an ensemble folder; give a new or empty folder")
    # Created here, removed again on failure: the first ensemble of a results folder makes ensembles/.
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"   # a sibling: members' relative paths hold
    try:
        partial.mkdir(parents=True)
        scored = {r: build_round(members, partial / f"{ROUND_PREFIX}{r}", tta, gate)
                  for r, members in sorted(groups.items())}
        write_atomic(partial / ENSEMBLE_FILE, lambda p: p.write_text(json.dumps(
            {"results_dir": os.path.relpath(Path(results_dir).resolve(), partial.resolve()), "selection": selection,
             "tta": tta, "rounds": sorted(groups)}, indent=2)))
        if out.exists():
            aside = out.parent / f".{out.name}.replaced-{os.getpid()}"
            out.rename(aside)
            partial.rename(out)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        for folder in created:   # innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return scored


def is_ensemble_run(path: str | Path) -> bool:
    return kind_of(path) == "ensemble_round"


def member_dirs(run_dir: str | Path) -> tuple[list[Path], dict]:
    """The member trial directories of one ensemble round, and its description; an
    unreadable ``members.json`` or a member that is gone is named, with the ensemble."""
    run_dir = Path(run_dir)
    path = run_dir / MEMBERS_FILE
    try:
        description = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise EnsembleError(f"{path}: not valid JSON ({'empty' if not path.read_text().strip() else err}); "
                            "build the ensemble again (harness ensemble)") from None
    members = description.get("members") if isinstance(description, dict) else None
    if not isinstance(members, list) or not members or not all(
            isinstance(m, dict) and isinstance(m.get("run_dir"), str) for m in members):
        raise EnsembleError(f"{path}: expected an object whose 'members' is a non-empty list of objects "
                            "with a 'run_dir'; build the ensemble again (harness ensemble)")
    dirs = [(run_dir / m["run_dir"]).resolve() for m in members]
    for index, (member, folder) in enumerate(zip(members, dirs)):
        if not finished(folder):
            why = "no such folder" if not folder.exists() else f"not a finished trial (no {DONE_FILE})"
            raise EnsembleError(f"ensemble {run_dir}: member {index} (trial {member.get('trial_id', '?')}, "
                                f"{folder}): {why}; restore the trial or build the ensemble again")
    return dirs, description
