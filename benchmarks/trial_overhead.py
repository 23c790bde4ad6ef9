"""Per-trial overhead of fresh worker processes against reused ones, on a grid of small trials.

Runs one grid twice with ``harness run`` in this run, from the same warm array cache:
once with ``--fresh-process`` (a new process per trial) and once with reused workers
(the default). The grid is 40 cheap trials: FCNs on a UTKFace slice, both backends. It
checks that both runs produced identical outputs and metrics for every trial. Then it
prints, per backend and mode, each trial's overhead: its wall time in the runner minus
its training time (``metrics.json`` ``train_seconds``). It also prints the wall time of
each whole sweep and their ratio.

    python benchmarks/trial_overhead.py [--images 2000] [--size 32] [--epochs 3] [--workers 1]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record import write_result  # noqa: E402  (benchmarks/record.py, beside this script)

from harness.runs import experiment_file, prepare  # noqa: E402
from harness.runs.index import read_index  # noqa: E402

# 20 configurations x 2 backends = 40 trials.
LEARNING_RATES = [0.0005, 0.001, 0.002, 0.005, 0.01]
WIDTHS = [[64], [128], [256], [64, 32]]


def grid(path: str, images: int, size: int, epochs: int) -> dict:
    return {
        "name": "overhead",
        "data": {"dataset": "utkface", "path": path, "limit": images},
        "preprocessing": {"size": size},
        "split": {"protocol": "random", "val_fraction": 0.1},
        "backends": ["keras", "tflearn"],
        "grid": {"models": [{"name": f"fcn{'x'.join(map(str, w))}", "architecture": {"type": "fcn", "widths": w}}
                            for w in WIDTHS],
                 "training": {"learning_rate": LEARNING_RATES, "epochs": epochs, "batch_size": 64}},
        "time_limit_s": 600,
    }


def sweep(experiment_path: Path, results: Path, workers: int, fresh: bool) -> float:
    command = [sys.executable, "-m", "harness", "run", str(experiment_path), "--results", str(results),
               "--workers", str(workers), "--no-report"] + (["--fresh-process"] if fresh else [])
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def trials(results: Path) -> pd.DataFrame:
    rows = []
    for record in read_index(results / "overhead").values():
        run_dir = results / "overhead" / "trials" / record["trial_id"]
        if record["status"] != "completed":
            raise SystemExit(f"trial {record['trial_id']} {record['status']}: {record.get('error')}")
        metrics = json.loads((run_dir / "metrics.json").read_text())
        rows.append({"trial_id": record["trial_id"], "backend": record["backend"], "wall": record["seconds"],
                     "train": metrics["train_seconds"], "overhead": record["seconds"] - metrics["train_seconds"],
                     "worker_trial": json.loads((run_dir / "env.json").read_text())["worker"]["trial"]})
    return pd.DataFrame(rows).set_index("trial_id")


def same_results(a: Path, b: Path, ids) -> list[str]:
    """Trial ids whose outputs or (timing aside) metrics differ between the two runs."""
    differ = []
    for trial_id in ids:
        x, y = (root / "overhead" / "trials" / trial_id for root in (a, b))
        same_outputs = np.array_equal(np.load(x / "predictions.npz")["outputs"],
                                      np.load(y / "predictions.npz")["outputs"])
        mx, my = (json.loads((d / "metrics.json").read_text()) for d in (x, y))
        untimed = lambda m: {k: v for k, v in m.items() if "second" not in k}  # noqa: E731
        if not same_outputs or untimed(mx) != untimed(my):
            differ.append(trial_id)
    return differ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", default=str(ROOT.parent / "shared/datasets/UTKFace"))
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        experiment_path = tmp / "overhead.yaml"
        experiment_path.write_text(yaml.safe_dump(grid(args.path, args.images, args.size, args.epochs)))
        # Build the array cache first, so that neither sweep pays for it.
        prepared = prepare.prepare(experiment_file.load(experiment_path))
        print(f"{len(prepared.trials)} trials: FCNs {WIDTHS} x lr {LEARNING_RATES} x keras, tflearn; "
              f"{args.images} UTKFace faces at {args.size} px, {args.epochs} epochs, "
              f"{os.cpu_count()} cores, --workers {args.workers}")
        seconds = {"fresh": sweep(experiment_path, tmp / "fresh", args.workers, fresh=True),
                   "reused": sweep(experiment_path, tmp / "reused", args.workers, fresh=False)}
        frames = {mode: trials(tmp / mode) for mode in seconds}
        differ = same_results(tmp / "fresh", tmp / "reused", frames["fresh"].index)
    if differ:
        raise SystemExit(f"results differ between fresh and reused workers for trials {differ}")
    print(f"results: identical outputs and metrics for all {len(frames['fresh'])} trials\n")

    rows = []
    for mode, frame in frames.items():
        for backend, part in [("all", frame)] + list(frame.groupby("backend")):
            rows.append({"mode": mode, "backend": backend, "trials": len(part),
                         "overhead median s": part["overhead"].median(), "overhead mean s": part["overhead"].mean(),
                         "train mean s": part["train"].mean(), "wall mean s": part["wall"].mean(),
                         "worker starts": int((part["worker_trial"] == 1).sum())})
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    fresh, reused = frames["fresh"]["overhead"], frames["reused"]["overhead"]
    print(f"\nper-trial overhead (mean): fresh {fresh.mean():.2f} s, reused {reused.mean():.2f} s "
          f"(ratio {reused.mean() / fresh.mean():.2f}; goal: reused <= 0.5 s)")
    print(f"sweep: fresh {seconds['fresh']:.1f} s, reused {seconds['reused']:.1f} s, "
          f"ratio {seconds['reused'] / seconds['fresh']:.2f} (goal <= 0.5)")
    print(write_result("trial_overhead", f"{len(frames['fresh'])} small trials, fresh worker processes against "
                       f"reused workers in the same run, --workers {args.workers}.", {
        "per-trial overhead, fresh (mean s)": round(fresh.mean(), 2),
        "per-trial overhead, reused (mean s, goal <= 0.5)": round(reused.mean(), 2),
        "sweep, fresh (s)": round(seconds["fresh"], 1), "sweep, reused (s)": round(seconds["reused"], 1),
        "sweep reused / fresh (goal <= 0.5)": round(seconds["reused"] / seconds["fresh"], 2)}))


if __name__ == "__main__":
    main()
