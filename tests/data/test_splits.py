import numpy as np
import pytest
from pydantic import ValidationError

from harness.cli import main
from harness.data.splits import SplitManifest, SplitSpec, make_splits


def _roles_partition(manifest, table):
    for round_ in manifest.rounds:
        ids = [set(manifest.ids(round_, role)) for role in ("train", "val", "test")]
        assert sum(map(len, ids)) == len(table)
        assert set().union(*ids) == set(table["id"])


def test_adience_folds_follow_the_published_protocol(adience_images):
    _, rows = adience_images
    from harness.data.datasets import load_adience
    from tests.conftest import ADIENCE
    table = load_adience(ADIENCE).table
    manifest = make_splits(table, SplitSpec(protocol="adience_folds"))
    assert manifest.rounds == [0, 1, 2, 3, 4]
    _roles_partition(manifest, table)
    by_id = table.set_index("id")
    for round_ in manifest.rounds:
        test = manifest.ids(round_, "test")
        assert (by_id.loc[test, "fold"] == round_).all()
        # Validation is carved from train without sharing a subject with it.
        train_subjects = set(by_id.loc[manifest.ids(round_, "train"), "subject"])
        val_subjects = set(by_id.loc[manifest.ids(round_, "val"), "subject"])
        assert val_subjects and not train_subjects & val_subjects
        assert not set(by_id.loc[test, "subject"]) & (train_subjects | val_subjects)


def test_stratified_kfold_is_deterministic_and_balanced(utkface_dataset):
    table = utkface_dataset.table
    first = make_splits(table, SplitSpec(seed=3))
    again = make_splits(table.sample(frac=1, random_state=9), SplitSpec(seed=3))
    assert first.assignments.equals(again.assignments)
    other = make_splits(table, SplitSpec(seed=4))
    assert not first.assignments.equals(other.assignments)
    _roles_partition(first, table)
    tests = [set(first.ids(r, "test")) for r in first.rounds]
    assert set().union(*tests) == set(table["id"]) and sum(map(len, tests)) == len(table)
    # Every round's test set has about the dataset's class proportions.
    overall = table.groupby(["age_group", "gender"]).size() / len(table)
    test0 = table[table["id"].isin(tests[0])]
    share = test0.groupby(["age_group", "gender"]).size() / len(test0)
    assert np.abs(share - overall).max() < 0.005


def test_random_split_matches_the_original_study(utkface_sample):
    manifest = make_splits(utkface_sample, SplitSpec(protocol="random", val_fraction=0.0))
    test = manifest.ids(0, "test")
    assert manifest.rounds == [0]
    assert abs(len(test) / len(utkface_sample) - 0.33) < 0.01
    assert manifest.ids(0, "val") == []


def test_manifest_round_trips(tmp_path, utkface_sample):
    manifest = make_splits(utkface_sample, SplitSpec(folds=3))
    manifest.save(tmp_path)
    loaded = SplitManifest.load(tmp_path)
    assert loaded.spec == manifest.spec
    assert loaded.assignments.equals(manifest.assignments)


def test_bad_spec_values_are_rejected():
    with pytest.raises(ValidationError, match="folds"):
        SplitSpec(folds=1)
    with pytest.raises(ValidationError, match="protocol"):
        SplitSpec(protocol="leave_one_out")
    with pytest.raises(ValidationError, match="unknown_key|extra"):
        SplitSpec(unknown_key=1)


def test_adience_folds_need_fold_column(utkface_sample):
    with pytest.raises(ValueError, match="published fold"):
        make_splits(utkface_sample, SplitSpec(protocol="adience_folds"))


def test_plot_splits_writes_a_png_per_round(tmp_path, capsys):
    from tests.conftest import ADIENCE
    out = tmp_path / "plots"
    assert main(["data", "plot-splits", "--dataset", "adience", "--path", str(ADIENCE),
                 "--protocol", "adience_folds", "--out", str(out)]) == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 5 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert SplitManifest.load(out).rounds == [0, 1, 2, 3, 4]
