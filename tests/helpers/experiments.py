"""A tiny experiment on real UTKFace faces, written to a file, and the CLI run on it."""
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import UTKFACE

ROOT = Path(__file__).resolve().parents[2]

TINY = {
    "name": "tiny",
    "data": {"dataset": "utkface", "path": str(UTKFACE), "limit": 300},
    "preprocessing": {"size": 16},
    "split": {"protocol": "random", "val_fraction": 0.2},
    "backends": ["keras", "tflearn"],
    "grid": {"models": [{"name": "fcn", "architecture": {"type": "fcn", "widths": [32]}}],
             "training": {"epochs": 2, "batch_size": 32}},
    "time_limit_s": 300,
}


def write(tmp_path, experiment, name="exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(experiment))
    return path


def harness_cli(*args, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "HARNESS_CACHE": kwargs.pop("cache")}
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900, **kwargs)
