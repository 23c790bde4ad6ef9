"""TFLearn 0.5.0 needs two removed names restored; this fails when that changes."""
import subprocess
import sys

import pytest

from tests.helpers.backend_runs import ROOT


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


# Each test starts a TensorFlow/TFLearn process.
pytestmark = pytest.mark.trains


def test_the_shim_is_still_needed():
    missing = _run("from backends.tflearn_compat import missing_names; print(sorted(missing_names()))")
    # If this fails, TensorFlow or Pillow brought a name back: drop it from the shim.
    assert missing == str(["PIL.Image.ANTIALIAS", "tensorflow.python.util.nest.is_sequence"])


def test_plain_import_fails_and_the_shim_makes_it_work():
    plain = subprocess.run([sys.executable, "-c", "import tflearn"], cwd=ROOT,
                           capture_output=True, text=True)
    assert plain.returncode != 0 and ("is_sequence" in plain.stderr or "ANTIALIAS" in plain.stderr)
    assert _run("from backends.tflearn_compat import import_tflearn; "
                "t = import_tflearn(); print(t.DNN.__name__)") == "DNN"


def test_batch_ids_are_copies_not_views_of_the_shuffled_index():
    code = """
import threading, numpy as np
from backends.tflearn_compat import import_tflearn
import_tflearn()
from tflearn import data_flow
flow = data_flow.FeedDictFlow({'x': np.arange(10)}, coord=None, batch_size=4, shuffle=True,
                              continuous=True, index_array=np.arange(10))
ids = flow.next_batch_ids()
before = ids.copy()
flow.shuffle_samples()
print(bool((ids == before).all()) and ids.base is None)
"""
    assert _run(code) == "True"
