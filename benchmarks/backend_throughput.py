"""Training throughput of every backend on identical specs and arrays.

Trains the same FCN (the original study's largest) and the same CNN (Levi & Hassner's,
scaled for CPUs) on TFLearn, Keras on TensorFlow and Keras on JAX, from the same
UTKFace cache entry and split, each in its own worker process, and prints training
images/s (median over epochs after the first, which includes graph building or JIT
compilation) for each backend, and each backend's ratio to TFLearn.

    python benchmarks/backend_throughput.py [--images 4000] [--epochs 3] [--size 64] [--backends ...]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record import write_result  # noqa: E402  (benchmarks/record.py, beside this script)

from harness.data import cache  # noqa: E402
from harness.data.datasets import load_utkface  # noqa: E402
from harness.data.images import Preprocessing  # noqa: E402
from harness.data.splits import SplitSpec, make_splits  # noqa: E402
from harness.models.spec import ORIGINAL_STUDY, LeviHassner, ModelSpec, TrainingSpec  # noqa: E402
from harness.processes import worker_command  # noqa: E402
from harness.runs.trial import TrialConfig, data_fingerprint, write_trial  # noqa: E402

SPECS = {
    "fcn [1024,512,256,128,32]": ORIGINAL_STUDY["fcn_1024"],
    "levi_hassner (48,128,192) dense 256": LeviHassner(filters=(48, 128, 192), dense=[256, 256]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", default=str(ROOT.parent / "shared/datasets/UTKFace"))
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--backends", nargs="+", default=["tflearn", "keras", "keras-jax"])
    args = parser.parse_args()

    table = load_utkface(args.path).table.sample(args.images, random_state=0)
    prep = Preprocessing(size=args.size)
    built = cache.build(table["id"], table["path"], prep)
    manifest = make_splits(table, SplitSpec(protocol="random", val_fraction=0.1))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, arch in SPECS.items():
            for backend in args.backends:
                run_dir = Path(tmp) / f"{backend}-{len(rows)}"
                config = TrialConfig(backend=backend, model=ModelSpec(architecture=arch),
                                     training=TrainingSpec(epochs=args.epochs, batch_size=args.batch_size),
                                     preprocessing=prep, cache_entry=str(built.directory),
                                     threads=os.cpu_count() or 1,
                                     data_fingerprint=data_fingerprint(built.directory.name, manifest, 0, table))
                write_trial(run_dir, config, table, manifest)
                subprocess.run(worker_command(run_dir), cwd=ROOT,
                               check=True, stdout=subprocess.DEVNULL)
                history = pd.read_csv(run_dir / "history.csv")
                steady = history["images_per_second"].iloc[1:] if len(history) > 1 else history["images_per_second"]
                rows.append({"model": label, "backend": backend, "images_per_second": steady.median()})
    frame = pd.DataFrame(rows).pivot(index="model", columns="backend", values="images_per_second")
    frame = frame[[b for b in args.backends if b in frame.columns]]
    if "tflearn" in frame.columns:
        for backend in [b for b in args.backends if b != "tflearn"]:
            frame[f"{backend} / tflearn"] = frame[backend] / frame["tflearn"]
    print(f"{args.images} UTKFace images at {args.size}x{args.size}, batch {args.batch_size}, "
          f"{args.epochs} epochs; training images/s (median of epochs 2..{args.epochs})")
    print(frame.round(2).to_string())
    print(write_result("backend_throughput", f"Training images/s (median of epochs 2..{args.epochs}), "
                       f"{args.images} UTKFace images at {args.size}x{args.size}, batch {args.batch_size}.",
                       {f"{model}, {column}": round(float(value), 2) for model, row in frame.iterrows()
                        for column, value in row.items()}))


if __name__ == "__main__":
    main()
