import json

import pandas as pd
import pytest

from harness.cli import main
from harness.data.datasets import DatasetError, load_adience, load_csv, load_utkface, merge
from tests.conftest import ADIENCE, UTKFACE

MALE = [716, 909, 929, 733, 2304, 1239, 392, 439]
FEMALE = [681, 1230, 1188, 907, 2575, 1054, 433, 427]


@pytest.fixture(scope="module")
def adience():
    return load_adience(ADIENCE)


def test_per_fold_unification_gives_the_published_table(adience):
    table = adience.crosstab()
    assert table.loc["Male"].tolist()[:8] == MALE
    assert table.loc["Female"].tolist()[:8] == FEMALE
    assert len(adience.table) == 16156
    assert adience.table["id"].is_unique


def test_per_fold_folds_are_subject_disjoint(adience):
    subjects_per_fold = adience.table.groupby("subject")["fold"].nunique()
    assert (subjects_per_fold == 1).all()
    assert sorted(adience.table["fold"].unique()) == [0, 1, 2, 3, 4]


def test_original_files_report_and_map_noncanonical_ages():
    mapped = load_adience(ADIENCE, metadata="original")
    dropped = load_adience(ADIENCE, metadata="original", noncanonical="drop")
    counts = mapped.notes["non_canonical_ages"]["counts"]
    assert counts["35"] > 0 and counts["(27, 32)"] > 0 and counts["(25, 23)"] > 0
    assert len(mapped.table) - len(dropped.table) == sum(counts.values())
    reasons = dropped.dropped_by_reason()
    assert reasons["non-canonical age"] == sum(counts.values())
    assert reasons["gender unknown (u)"] > 0 and reasons["age missing"] > 0


def test_both_image_roots(tmp_path):
    (tmp_path / "faces").mkdir()
    faces = load_adience(ADIENCE, images=tmp_path)
    assert faces.table["path"].str.contains("/faces/[^/]+/coarse_tilt_aligned_face\\.").all()
    aligned = load_adience(ADIENCE, images=tmp_path, image_dir="aligned")
    assert aligned.table["path"].str.contains("/aligned/[^/]+/landmark_aligned_face\\.").all()
    # Same faces, same order, whichever root.
    assert (faces.table["age_group"].values == aligned.table["age_group"].values).all()


def _copy_fold_tree(tmp_path):
    import shutil
    root = tmp_path / "adience"
    shutil.copytree(ADIENCE / "train_val_txt_files_per_fold", root / "train_val_txt_files_per_fold")
    return root


def test_bad_fold_file_lines_are_listed_with_file_and_line(tmp_path):
    root = _copy_fold_tree(tmp_path)
    target = root / "train_val_txt_files_per_fold/test_fold_is_2/age_test.txt"
    target.chmod(0o644)
    lines = target.read_text().splitlines()
    lines[4] = "garbage-without-label"
    lines[7] = lines[7].rsplit(" ", 1)[0] + " 9"
    target.write_text("\n".join(lines) + "\n")
    data = load_adience(root)
    bad = data.dropped[data.dropped["reason"] == "bad fold-file line"]
    assert set(bad["line"]) == {5, 8}
    assert bad["file"].str.endswith("test_fold_is_2/age_test.txt").all()
    assert "age label must be 0..7" in bad[bad["line"] == 8]["detail"].iloc[0]
    with pytest.raises(DatasetError, match=r"age_test\.txt:5: bad fold-file line"):
        load_adience(root, strict=True)


def test_missing_fold_file_names_it(tmp_path):
    root = _copy_fold_tree(tmp_path)
    (root / "train_val_txt_files_per_fold/test_fold_is_3/gender_val.txt").unlink()
    with pytest.raises(DatasetError, match="test_fold_is_3/gender_val.txt"):
        load_adience(root)


def test_utkface_labels_and_malformed_names(utkface_dataset):
    table = utkface_dataset.table
    assert len(table) + len(utkface_dataset.dropped) == len(list(UTKFACE.iterdir()))
    assert (utkface_dataset.dropped["reason"] == "malformed file name").all()
    row = table[table["id"] == "utkface:100_0_0_20170112213500903.jpg.chip.jpg"].iloc[0]
    assert (row.age, row.age_group, row.gender, row.group) == (100, 7, 0, "White")
    # The race digit of every name, in the dataset's words (the fairness breakdown's groups).
    assert set(table["group"]) == {"White", "Black", "Asian", "Indian", "Others"}
    assert (table["group"] == "Asian").sum() == sum(p.name.split("_")[2:3] == ["2"] for p in UTKFACE.iterdir()
                                                   if p.name.count("_") == 3)


def test_utkface_malformed_name_is_not_fatal(tmp_path):
    (tmp_path / "30_1_2_20170101.jpg.chip.jpg").write_bytes(b"")
    (tmp_path / "thirty_female.jpg").write_bytes(b"")
    data = load_utkface(tmp_path)
    assert len(data.table) == 1 and data.dropped["file"].str.endswith("thirty_female.jpg").all()


def test_csv_adapter_and_merge(tmp_path, utkface_sample):
    csv = tmp_path / "mine.csv"
    csv.write_text("path,age,gender,subject\n"
                   "a.jpg,30,f,s1\n"
                   "b.jpg,,m,s2\n"
                   "c.jpg,5,x,s3\n"
                   "d.jpg,70,male,s4\n")
    data = load_csv(csv)
    assert data.table["age_group"].tolist() == [4, 7]
    assert data.table["path"].iloc[0] == str(tmp_path / "a.jpg")
    assert data.dropped[["line", "reason"]].values.tolist() == [[3, "bad age"], [4, "bad gender"]]
    assert data.table["group"].tolist() == [None, None]   # no group column: none stated
    groups = tmp_path / "groups.csv"
    groups.write_text("path,age_group,gender\ne.jpg,\"(15, 20)\",1\nf.jpg,2,0\n")
    assert load_csv(groups).table["age_group"].tolist() == [3, 2]
    merged = merge([data, load_csv(groups)])
    assert sorted(merged.table["source"].unique()) == ["groups", "mine"]
    with pytest.raises(DatasetError, match="share"):
        merge([data, data])


def test_csv_without_required_columns_names_the_file(tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_text("file,years\nx.jpg,3\n")
    with pytest.raises(DatasetError, match="bad.csv.*'path', 'gender'"):
        load_csv(csv)


def test_cli_summary_json(capsys):
    assert main(["data", "summary", "--dataset", "adience", "--path", str(ADIENCE), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 16156
    assert list(summary["age_x_gender"]["Male"].values())[:8] == MALE
    assert summary["dropped"] == {"no age label": 1336, "no gender label": 1165}


def test_cli_reports_a_missing_path(capsys):
    assert main(["data", "summary", "--dataset", "utkface", "--path", "/no/such/dir"]) == 2
    assert "/no/such/dir" in capsys.readouterr().err


def test_unified_table_columns(adience, utkface_dataset):
    for data in (adience, utkface_dataset):
        assert list(data.table.columns) == ["id", "path", "age_group", "gender", "subject",
                                            "source", "age", "fold", "group"]
        assert isinstance(data.table, pd.DataFrame)
    assert adience.table["group"].isna().all()   # Adience states no group
