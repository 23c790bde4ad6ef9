"""Keras on JAX on the GPU: run a small grid, check env.json names the GPU, compare with CPU.

Run by benchmarks/gpu_check.sh on an accelerator machine (see there). It runs
experiments/gpu_check.yaml on keras-jax, fails unless every trial's env.json records
a GPU device, then trains the first trial again with JAX restricted to the CPU
(JAX_PLATFORMS=cpu) and prints training images/s on each (median of the epochs after
the first, which includes JIT compilation) and their ratio.

    python benchmarks/gpu_check.py [--data DIR] [--results DIR] [--allow-cpu]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.processes import worker_command  # noqa: E402

EXPERIMENT = ROOT / "experiments" / "gpu_check.yaml"
OUTPUTS = ("DONE", "metrics.json", "history.csv", "predictions.npz", "val_predictions.npz", "env.json",
           "model.keras", "log.txt")


def steady_rate(run_dir: Path) -> float:
    history = pd.read_csv(run_dir / "history.csv")
    rates = history["images_per_second"]
    return float((rates.iloc[1:] if len(rates) > 1 else rates).median())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "UTKFace"))
    parser.add_argument("--results", default="results")
    parser.add_argument("--experiment", default=str(EXPERIMENT), help="the grid (default experiments/gpu_check.yaml)")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="a rehearsal on a machine without a GPU: report instead of failing")
    args = parser.parse_args(argv)

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "harness", "run", args.experiment, "--data", args.data,
                    "--results", args.results, "--no-report"], cwd=ROOT, env=env, check=True)
    import yaml

    name = yaml.safe_load(Path(args.experiment).read_text())["name"]
    trials = sorted(p for p in (Path(args.results) / name / "trials").iterdir() if (p / "DONE").is_file())
    if not trials:
        print("gpu_check: no finished trial", file=sys.stderr)
        return 1
    devices = {t.name: json.loads((t / "env.json").read_text())["device"] for t in trials}
    on_gpu = {name: device for name, device in devices.items() if device != "CPU"}
    for name, device in devices.items():
        print(f"trial {name}: device {device}")
    if len(on_gpu) != len(devices) and not args.allow_cpu:
        print(f"gpu_check: {len(devices) - len(on_gpu)} of {len(devices)} trials did not train on a GPU "
              "(is JAX's CUDA build installed? `python -c 'import jax; print(jax.devices())'`)", file=sys.stderr)
        return 1

    first = trials[0]
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        again = Path(tmp) / first.name
        shutil.copytree(first, again, ignore=shutil.ignore_patterns(*OUTPUTS, "tensorboard"))
        subprocess.run(worker_command("train", again), cwd=ROOT, check=True,
                       env={**env, "JAX_PLATFORMS": "cpu"}, stdout=subprocess.DEVNULL)
        cpu_device = json.loads((again / "env.json").read_text())["device"]
        cpu_rate = steady_rate(again)
    config = json.loads((first / "config.json").read_text())
    gpu_rate = steady_rate(first)
    print(f"\n{config['model']['architecture']['type']} {config['model']['architecture']}, "
          f"batch {config['training']['batch_size']}; training images/s, median of epochs 2..:")
    print(f"| device | images/s |\n|---|---|\n| {devices[first.name]} | {gpu_rate:,.0f} |\n"
          f"| {cpu_device} (JAX_PLATFORMS=cpu, {os.cpu_count()} cores) | {cpu_rate:,.0f} |")
    print(f"GPU / CPU: {gpu_rate / cpu_rate:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
