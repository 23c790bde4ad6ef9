"""The door gate calibrated on every round's validation faces at once, beside each round's own.

A round's threshold is chosen on its own validation faces: about 300 minors in a
UTKFace fold, so one minor more or less let in moves the false-accept rate by a third of
a point, and the threshold with it. Pooling the validation faces of all rounds (out of
fold: no round's test faces are among them) chooses one threshold on five times as many
minors; each round's test faces are then judged at it. This table puts the two side by
side for every configuration and backend whose trials calibrated a gate.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from harness.analysis.report.tables import _mean_std
from harness.models import backends
from harness.models.gate import GateSpec, calibrate, gate_rates

__all__ = ["pooled_gate_table"]


def _spec(metrics: dict) -> GateSpec | None:
    chosen = metrics.get("gate")
    if not isinstance(chosen, dict):
        return None
    try:
        return GateSpec(min_age=chosen["min_age"], max_false_accept=chosen["max_false_accept"],
                        confidence=chosen.get("confidence"))
    except (KeyError, TypeError, ValueError):
        return None


def _share(values) -> str:
    """Rates (0-1, None where a round had no one to judge) as mean ± std over rounds in %."""
    return _mean_std(pd.Series(values, dtype=float), 100.0)


def pooled_gate_table(frame: pd.DataFrame, files: dict) -> pd.DataFrame:
    """Per configuration and backend with a calibrated gate and two or more rounds: the
    threshold chosen on all rounds' validation faces and its test rates per round, beside
    the rounds' own thresholds and rates (mean ± std over rounds)."""
    rows = []
    if frame.empty or "cal_met" not in frame:
        return pd.DataFrame()
    for (configuration, backend), part in frame.dropna(subset=["cal_met"]).groupby(["configuration", "backend"],
                                                                                   sort=True):
        trials = [files[t] for t in part.sort_values("round")["trial_id"] if t in files]
        trials = [t for t in trials if t.val_readouts is not None and t.readouts is not None]
        spec = _spec(trials[0].metrics) if trials else None
        if spec is None or part["round"].nunique() < 2 or len(trials) != len(part):
            continue
        chosen = calibrate(np.concatenate([t.val_readouts for t in trials]),
                           np.concatenate([t.val_ages for t in trials]), spec)
        row = {"configuration": configuration, "backend": backends.display_name(backend), "rounds": len(trials),
               "pooled validation minors": chosen["val_minors"]}
        if chosen["met"]:
            rates = [gate_rates(t.readouts, t.ages, spec.min_age, chosen["threshold"]) for t in trials]
            row.update({"pooled threshold": f"{chosen['threshold']:.3f}",
                        "test false accept % (pooled)": _share([r["false_accept_rate"] for r in rates]),
                        "test false reject % (pooled)": _share([r["false_reject_rate"] for r in rates])})
        else:
            row.update({"pooled threshold": f"not met: {chosen['reason']}", "test false accept % (pooled)": "—",
                        "test false reject % (pooled)": "—"})
        own = part[part["cal_met"].astype(bool)]
        row.update({"per-round thresholds": (f"{own['cal_threshold'].mean():.3f} ± {own['cal_threshold'].std(ddof=0):.3f}"
                                             if len(own) else "—"),
                    "test false accept % (per round)": _share(list(own["cal_test_far"])),
                    "test false reject % (per round)": _share(list(own["cal_test_frr"]))})
        rows.append(row)
    return pd.DataFrame(rows)
