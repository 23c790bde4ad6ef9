"""The door gate at 18: years models' P(age >= 18) beside the best group model's, on the same faces.

Calibrates the gate on each round's validation faces for at most 2 % of minors let in,
from each trial's stored validation predictions, with the code a trial's own ``gate:``
runs (so without ``--confidence`` the figures are those its metrics.json holds), and
applies it to the test faces. Checks that the two experiments' rounds hold the same
test faces, and prints per model and backend: the rounds whose target was met, test
false accepts and false rejects (mean and std over rounds, and pooled over all test
faces), against the goals of issue 14 (at most 2 % of minors let in, at most 15 % of
adults refused). ``--confidence 0.9`` judges the validation rate by its one-sided
Clopper-Pearson upper bound instead. Trains nothing.

    python benchmarks/gate_years_vs_groups.py [--years results/years_utkface ...] [--groups results/best_utkface]
                                              [--confidence 0.9]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record import write_result  # noqa: E402  (benchmarks/record.py, beside this script)

from harness.models import heads, metrics  # noqa: E402
from harness.models.gate import GateSpec  # noqa: E402
from harness.runs.index import read_index, trial_dir  # noqa: E402
from harness.runs.layout import PREDICTIONS_FILE, VAL_PREDICTIONS_FILE  # noqa: E402
from harness.runs.trial import age_residuals  # noqa: E402

GOAL_FALSE_ACCEPT, GOAL_FALSE_REJECT = 0.02, 0.15


def trials(results_dir: Path, spec: GateSpec) -> list[dict]:
    """One row per completed trial: its model, backend, round, test faces and gate at ``spec``."""
    rows = []
    for record in read_index(results_dir).values():
        if record["status"] != "completed":
            continue
        run_dir = trial_dir(results_dir, record["trial_id"])
        config = record["config"]
        head = config["model"]["head"]
        labels = pd.read_csv(run_dir / "labels.csv", dtype={"id": str}).set_index("id")
        residuals = age_residuals(run_dir, head)
        roles = {}
        for role, file in (("val", VAL_PREDICTIONS_FILE), ("test", PREDICTIONS_FILE)):
            with np.load(run_dir / file) as saved:
                ids = saved["ids"].astype(str)
                roles[role] = (ids, heads.readout(head, saved["outputs"], residuals),
                               labels.loc[ids, "age"].to_numpy(float))
        gate = metrics.calibrated_gate(spec, *roles["val"][1:], *roles["test"][1:])
        target = config["training"].get("age_target")
        sigma = f", sigma {config['training'].get('age_sigma', 3.0):g}" if target == "soft" else ""
        rows.append({"model": record["model_name"] + (f" ({target} targets{sigma})" if target else ""),
                     "head": head, "backend": record["backend"], "round": record["round"],
                     "test_ids": frozenset(roles["test"][0]), **gate})
    return rows


def same_test_faces(rows: list[dict]) -> None:
    by_round: dict[int, frozenset] = {}
    for row in rows:
        if by_round.setdefault(row["round"], row["test_ids"]) != row["test_ids"]:
            raise SystemExit(f"round {row['round']}: {row['model']} ({row['backend']}) was tested on other faces "
                             "than the rest; the experiments must share their split")


def summary(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    out = []
    for (model, head, backend), part in frame.groupby(["model", "head", "backend"], sort=True):
        met = part[part["met"].fillna(False).astype(bool)]
        far, frr = met["test_false_accept_rate"], met["test_false_reject_rate"]
        pooled_far = (far * met["test_minors"]).sum() / met["test_minors"].sum() if len(met) else np.nan
        pooled_frr = (frr * met["test_adults"]).sum() / met["test_adults"].sum() if len(met) else np.nan
        out.append({"model": model, "head": head, "backend": backend, "rounds met": f"{len(met)}/{len(part)}",
                    "threshold": f"{met['threshold'].mean():.3f}" if len(met) else "—",
                    "minors let in %": f"{100 * far.mean():.1f} ± {100 * far.std():.1f}" if len(met) else "—",
                    "adults refused %": f"{100 * frr.mean():.1f} ± {100 * frr.std():.1f}" if len(met) else "—",
                    "pooled minors let in %": round(100 * pooled_far, 2),
                    "pooled adults refused %": round(100 * pooled_frr, 2),
                    "goals met": bool(pooled_far <= GOAL_FALSE_ACCEPT and pooled_frr <= GOAL_FALSE_REJECT),
                    "minors": int(met["test_minors"].sum()), "adults": int(met["test_adults"].sum())})
    return pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--years", type=Path, nargs="+",
                        default=[ROOT / "results/years_utkface", ROOT / "results/years_utkface_soft"])
    parser.add_argument("--groups", type=Path, default=ROOT / "results/best_utkface")
    parser.add_argument("--confidence", type=float, default=None)
    args = parser.parse_args()
    spec = GateSpec(min_age=18, max_false_accept=GOAL_FALSE_ACCEPT, confidence=args.confidence)
    rows = [row for results in (*args.years, args.groups) if results.is_dir() for row in trials(results, spec)]
    same_test_faces(rows)
    judged = f" (its upper {args.confidence:.0%} bound)" if args.confidence else ""
    print(f"door gate at 18, calibrated on validation for <= {GOAL_FALSE_ACCEPT:.0%} minors let in{judged}; "
          f"test faces of {len({r['round'] for r in rows})} rounds, the same in both experiments")
    table = summary(rows)
    print(table.to_string(index=False))
    print(write_result("gate_years_vs_groups", "The door gate at 18 on test faces, calibrated on each round's "
                       f"validation faces for <= {GOAL_FALSE_ACCEPT:.0%} minors let in{judged}.",
                       {" / ".join(str(v) for v in row[:2]): ", ".join(f"{k} {v}" for k, v in row[2:].items())
                        for _, row in table.iterrows()}))


if __name__ == "__main__":
    main()
