"""Stored results for the report tests, made from the report fixture."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "results" / "report_fixture"


def as_learned(trial: Path) -> None:
    """Rewrite a trial's test confusion matrices (only what the did-not-learn rule reads,
    :mod:`harness.analysis.learning`) as those of a model that learned: most faces right.
    The fixture's own models did not learn (16x16 grayscale, two epochs)."""
    path = trial / "metrics.json"
    metrics = json.loads(path.read_text())
    n = int(np.asarray(metrics["age_confusion"]).sum())
    metrics["age_confusion"] = (np.eye(8) * (n // 8 - 8) + 1).astype(int).tolist()
    metrics["gender_confusion"] = [[n // 2 - 5, 5], [5, n // 2 - 5]]
    path.write_text(json.dumps(metrics))


def learned_copy(out: Path, which=lambda config: True) -> Path:
    """The fixture's results copied to ``out``, the trials whose config ``which`` picks made
    to look learned."""
    shutil.copytree(FIXTURE, out)
    for trial in (out / "trials").iterdir():
        if which(json.loads((trial / "config.json").read_text())):
            as_learned(trial)
    return out
