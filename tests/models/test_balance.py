"""Balanced sampling by group (issue 25 §3: what was tried to narrow the gap)."""
import re

import numpy as np
import pandas as pd
import pytest

from harness.models.balance import balanced_rows


def test_every_group_is_repeated_up_to_the_largest_and_nothing_is_lost():
    groups = ["White"] * 6 + ["Asian"] * 2 + ["Black"] * 3 + [None]
    rows = balanced_rows(groups, seed=0)
    picked = pd.Series([groups[r] for r in rows], dtype=object)
    assert picked.value_counts().to_dict() == {"White": 6, "Asian": 6, "Black": 6}
    assert picked.isna().sum() == 1                              # a face without a group, kept once
    assert sorted(set(rows.tolist())) == list(range(len(groups)))  # every face at least once
    assert np.array_equal(rows, balanced_rows(groups, seed=0))   # seeded
    assert not np.array_equal(rows, balanced_rows(groups, seed=1))


def test_faces_without_groups_cannot_be_balanced():
    with pytest.raises(ValueError, match="training.balance: group needs each training face's group"):
        balanced_rows([None, float("nan")], seed=0)


@pytest.mark.trains
def test_the_worker_trains_on_the_balanced_faces_and_scores_the_untouched_ones(tmp_path, utkface_sample):
    from harness.models.spec import FCN, TrainingSpec
    from harness.runs.trial import load_splits, read_config
    from tests.helpers.backend_runs import make_trial, metrics_of, worker

    assert utkface_sample["group"].notna().all()
    run = make_trial(tmp_path / "run", utkface_sample, tmp_path / "cache", "keras", architecture=FCN(widths=[16]),
                     training=TrainingSpec(epochs=1, batch_size=32, seed=3, balance="group"))
    worker(run)
    splits = load_splits(run, read_config(run))
    counts = pd.Series(splits["train"].group).value_counts()
    trained = int(re.search(r"^train (\d+) val", (run / "log.txt").read_text(), re.M).group(1))
    assert trained == counts.max() * len(counts) > len(splits["train"].ids)
    assert metrics_of(run)["n"] == len(splits["test"].ids)   # the test faces as they are
