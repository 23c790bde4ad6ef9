"""Helpers for tests that start real worker processes (one framework per process)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from harness.data import cache
from harness.data.images import Preprocessing
from harness.data.splits import SplitSpec, make_splits
from harness.models.spec import FCN, ModelSpec, TrainingSpec
from harness.processes import worker_command
from harness.runs.trial import TrialConfig, data_fingerprint, write_trial

ROOT = Path(__file__).resolve().parents[2]
PREP = Preprocessing(size=24)


def worker(*args, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run(worker_command(*args),
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    if check and result.returncode:
        raise AssertionError(f"worker {args} failed:\n{result.stdout}\n{result.stderr}")
    return result


def train_all(run_dirs, parallel: int = 2) -> None:
    """Train trial folders as ``harness run`` does: ``parallel`` slots of reused workers,
    so each framework is imported once per slot rather than once per trial."""
    from harness.runs.executors import Job, LocalExecutor, Reuse
    from harness.runs.trial import read_config

    configs = {str(d): read_config(d) for d in run_dirs}
    jobs = [Job(d, d, 600, c.threads, c.backend, c.data_fingerprint) for d, c in configs.items()]
    failed = {d: o.stderr_tail for d, o in LocalExecutor(parallel, Reuse()).map_unordered(jobs) if o.returncode != 0}
    if failed:
        raise AssertionError(f"trials failed: {failed}")


def make_trial(run_dir: Path, table, cache_dir: Path, backend: str, head: str = "two_heads",
               architecture=None, training: TrainingSpec | None = None, prep: Preprocessing = PREP,
               gate=None) -> Path:
    built = cache.build(table["id"], table["path"], prep, cache_dir=cache_dir)
    manifest = make_splits(table, SplitSpec(protocol="random", val_fraction=0.2, seed=0))
    config = TrialConfig(
        backend=backend, preprocessing=prep, cache_entry=str(built.directory), threads=2,
        data_fingerprint=data_fingerprint(built.directory.name, manifest, 0, table),
        model=ModelSpec(architecture=architecture or FCN(widths=[64, 32]), head=head),
        training=training or TrainingSpec(epochs=2, batch_size=32, seed=7), gate=gate)
    return write_trial(run_dir, config, table, manifest)


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())
