"""Trained runs and their exports, shared by the export and serve tests (one training)."""
import subprocess
import sys

import pytest

from harness.data.images import Preprocessing
from harness.models.spec import FCN, SmallCNN, TrainingSpec
from tests.helpers.backend_runs import ROOT, make_trial, train_all


def harness(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session")
def door_runs(tmp_path_factory, utkface_sample):
    """A Keras FCN on pixels, a TFLearn CNN with batch norm and dropout (the graph that
    needs its training branches cut), and a Keras FCN on dlib face descriptors that
    regresses the age in years (its export carries its validation residuals)."""
    base = tmp_path_factory.mktemp("export_runs")
    training = TrainingSpec(epochs=2, batch_size=32, seed=3)
    made = {
        "keras": make_trial(base / "keras", utkface_sample, base / "cache", "keras",
                            architecture=FCN(widths=[64, 32], dropout=0.2), training=training),
        "tflearn": make_trial(base / "tflearn", utkface_sample, base / "cache", "tflearn",
                              architecture=SmallCNN(filters=[8, 16], dense=[16], dropout=0.3),
                              training=training),
        "embedding": make_trial(base / "embedding", utkface_sample.groupby(["age_group", "gender"]).head(8)
                                .reset_index(drop=True), base / "cache", "keras",
                                architecture=FCN(widths=[32], dropout=0.2), training=training,
                                prep=Preprocessing(representation="dlib_embedding"), head="years_regression"),
    }
    train_all(made.values())
    return made


@pytest.fixture(scope="session")
def door_exports(door_runs, tmp_path_factory):
    base = tmp_path_factory.mktemp("exports")
    made = {}
    for name, run in door_runs.items():
        out = base / name
        result = harness("export", run, "--out", out)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "parity on" in result.stdout
        made[name] = out
    return made


