"""Which years head to make the default: MAE on validation faces (to choose) and on test
faces (to report), per head, from a finished experiment's stored predictions.

    python benchmarks/years_heads.py results/years_utkface

Reads each completed trial's ``val_predictions.npz`` and ``predictions.npz``; trains
nothing. The choice is made on validation only; test figures are printed beside it.
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
from harness.runs.index import read_index, trial_dir  # noqa: E402
from harness.runs.layout import PREDICTIONS_FILE, VAL_PREDICTIONS_FILE  # noqa: E402
from harness.runs.trial import read_config  # noqa: E402


def years_of(run_dir: Path, labels: pd.DataFrame, file: str, head: str) -> dict:
    saved = np.load(run_dir / file)
    true = labels.loc[saved["ids"].astype(str), "age"].to_numpy(float)
    return metrics.years_metrics(heads.predicted_years(head, saved["outputs"]), true)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    args = parser.parse_args()
    rows = []
    for record in read_index(args.results).values():
        if record["status"] != "completed":
            continue
        run_dir = trial_dir(args.results, record["trial_id"])
        config = read_config(run_dir)
        head = config.model.head
        if head not in heads.YEARS_HEADS:
            continue
        labels = pd.read_csv(run_dir / "labels.csv", dtype={"id": str}).set_index("id")
        val = years_of(run_dir, labels, VAL_PREDICTIONS_FILE, head)
        test = years_of(run_dir, labels, PREDICTIONS_FILE, head)
        rows.append({"head": head, "model": record["model_name"], "learning rate": config.training.learning_rate,
                     "options": config.training.extras() or "-",
                     "backend": config.backend, "round": config.round,
                     "val MAE": val["age_mae"], "val CS(5)": val["age_cs5"],
                     "test MAE": test["age_mae"], "test CS(5)": test["age_cs5"],
                     "test age exact": record["metrics"]["age_exact_accuracy"],
                     "test gender": record["metrics"]["gender_accuracy"]})
    if not rows:
        raise SystemExit(f"{args.results}: no completed trial of a years head")
    frame = pd.DataFrame(rows)
    keys = ["head", "model", "learning rate", "options", "backend"]
    summary = frame.groupby(keys).agg(
        rounds=("round", "count"), **{c: (c, "mean") for c in frame.columns if c not in keys + ["round"]})
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))
    chosen = summary["val MAE"].idxmin()
    print("\nlowest validation MAE: " + ", ".join(f"{k} {v}" for k, v in zip(keys, chosen)))
    print(write_result("years_heads", f"Years heads of {args.results}, mean over rounds; chosen on validation MAE.",
                       {" / ".join(map(str, key)) + f": {column}": round(float(summary.loc[key, column]), 3)
                        for key in summary.index for column in ("val MAE", "test MAE")}))


if __name__ == "__main__":
    main()
