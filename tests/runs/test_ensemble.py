"""harness ensemble on a results directory: members chosen on validation, one run per
round, scored from the members' stored predictions, listed by the report.

The trials here are made of files (predictions, histories) without training: the
ensemble reads nothing else. Real models through predict are in test_predict.py.
"""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from harness.data.splits import SplitSpec, make_splits
from harness.models import heads, metrics
from harness.models.gate import GateSpec
from harness.models.spec import FCN, ModelSpec, TrainingSpec
from harness.runs import ensemble
from harness.runs.index import append_record, trial_dir
from harness.runs.trial import TrialConfig, write_trial
from tests.helpers.backend_runs import ROOT

VAL_JOINT = {"a": 0.50, "b": 0.70, "c": 0.60}


def _fake_trial(results, table, manifest, name, width, round_, rng):
    config = TrialConfig(backend="keras", model=ModelSpec(architecture=FCN(widths=[width])),
                         training=TrainingSpec(), round=round_, threads=1, data_fingerprint=f"d{round_}",
                         cache_entry="unused", gate=GateSpec(min_age=18, max_false_accept=0.2))
    run = trial_dir(results, config.trial_id())
    write_trial(run, config, table, manifest)
    labels = table.set_index("id")
    for role, file in (("test", "predictions.npz"), ("val", "val_predictions.npz")):
        ids = manifest.ids(round_, role)
        outputs = np.concatenate([rng.dirichlet(np.ones(8), len(ids)), rng.dirichlet(np.ones(2), len(ids))], 1)
        np.savez(run / file, ids=np.asarray(ids), outputs=outputs,
                 age=labels.loc[ids, "age_group"].to_numpy(), gender=labels.loc[ids, "gender"].to_numpy())
    saved = np.load(run / "predictions.npz")
    (run / "metrics.json").write_text(json.dumps(metrics.compute("two_heads", saved["outputs"], saved["age"],
                                                                 saved["gender"])))
    pd.DataFrame({"epoch": [1], "loss": [1.0], "val_loss": [1.0],
                  "val_joint_accuracy": [VAL_JOINT[name] + 0.01 * round_]}).to_csv(run / "history.csv", index=False)
    (run / "DONE").write_text(config.trial_id() + "\n")
    append_record(results, {"trial_id": config.trial_id(), "status": "completed", "model_name": name,
                            "backend": "keras", "round": round_, "config": config.model_dump(mode="json")})
    return config.trial_id()


@pytest.fixture(scope="module")
def results(tmp_path_factory, utkface_sample):
    results = tmp_path_factory.mktemp("results")
    manifest = make_splits(utkface_sample, SplitSpec(protocol="stratified_kfold", folds=2, val_fraction=0.3))
    rng = np.random.default_rng(0)
    ids = {(name, r): _fake_trial(results, utkface_sample, manifest, name, width, r, rng)
           for name, width in (("a", 4), ("b", 8), ("c", 16)) for r in (0, 1)}
    return results, ids


def test_top_k_is_chosen_on_validation_per_round_and_scored_as_the_mean(results):
    results_dir, ids = results
    groups = ensemble.members_by_rank(results_dir, 2)
    assert {r: [m.model_name for m in ms] for r, ms in groups.items()} == {0: ["b", "c"], 1: ["b", "c"]}
    scored = ensemble.build(results_dir, groups, results_dir / "ensembles" / "top2")
    for round_, result in scored.items():
        stored = [np.load(trial_dir(results_dir, ids[(n, round_)]) / "predictions.npz") for n in ("b", "c")]
        mean = np.mean([heads.scores("two_heads", s["outputs"]) for s in stored], axis=0)
        expected = metrics.compute("two_heads", mean, stored[0]["age"], stored[0]["gender"])
        assert result["joint_accuracy"] == expected["joint_accuracy"]
        assert result["age_confusion"] == expected["age_confusion"]
        assert result["gate"]["min_age"] == 18     # calibrated on the members' mean validation scores
    with pytest.raises(ensemble.EnsembleError, match="only 3 configuration"):
        ensemble.members_by_rank(results_dir, 4)
    with pytest.raises(ensemble.EnsembleError, match="--metric"):
        ensemble.members_by_rank(results_dir, 2, "loss")
    # --models: only those grid models compete (the years models apart from the group models).
    narrowed = ensemble.members_by_rank(results_dir, 2, models=["a", "c"])
    assert {r: [m.model_name for m in ms] for r, ms in narrowed.items()} == {0: ["c", "a"], 1: ["c", "a"]}
    with pytest.raises(ensemble.EnsembleError, match="--models z: no such model .*its models: a, b, c"):
        ensemble.members_by_rank(results_dir, 1, models=["a", "z"])


def test_the_cli_refuses_other_rounds_and_the_report_lists_ensembles(results):
    results_dir, ids = results
    run = lambda *a: subprocess.run([sys.executable, "-m", "harness", *map(str, a)], cwd=ROOT,  # noqa: E731
                                    capture_output=True, text=True, timeout=300)
    mixed = run("ensemble", results_dir, "--trials", ids[("a", 0)], ids[("b", 1)])
    assert mixed.returncode != 0 and "different rounds" in mixed.stderr and ids[("b", 1)] in mixed.stderr
    made = run("ensemble", results_dir, "--trials", ids[("a", 0)], ids[("c", 0)], "--name", "ac")
    assert made.returncode == 0, made.stderr
    assert "round 0: 2 members" in made.stdout
    whole = run("predict", "--model", results_dir / "ensembles" / "ac", ROOT / "README.md")
    assert whole.returncode != 0 and "give one round's directory" in whole.stderr
    report = run("report", results_dir)
    assert report.returncode == 0, report.stderr
    text = (results_dir / "report.md").read_text()
    assert "## Ensembles" in text and "ensemble ac: a (keras), c (keras)" in text
    assert "## Calibrated door gate" in text and (results_dir / "plots" / "gate_tradeoff.png").is_file()


# --- issue 23: ensembles' messages and what a refused build leaves -------------------------

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def _ensemble_copy(results, tmp_path):
    import shutil

    results_dir, ids = results
    copy = tmp_path / "results"
    shutil.copytree(results_dir, copy, ignore=shutil.ignore_patterns("ensembles"))
    made = _cli("ensemble", copy, "--trials", ids[("a", 0)], ids[("c", 0)], "--name", "ac")
    assert made.returncode == 0, made.stderr
    return copy, ids, copy / "ensembles" / "ac" / "round-0"


def test_a_deleted_member_is_named_with_its_ensemble(results, tmp_path):
    import shutil

    copy, ids, round_dir = _ensemble_copy(results, tmp_path)
    shutil.rmtree(copy / "trials" / ids[("c", 0)])
    for command in (("predict", "--model", round_dir, ROOT / "README.md"), ("export", round_dir, "--out", tmp_path / "x")):
        result = _cli(*command)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert (f"ensemble {round_dir}: member 1 (trial {ids[('c', 0)]}, {copy / 'trials' / ids[('c', 0)]}): "
                "no such folder; restore the trial or build the ensemble again") in result.stderr, result.stderr


@pytest.mark.parametrize("content, message", [
    ("", "members.json: not valid JSON (empty)"),
    ('{"members": [', "members.json: not valid JSON (Expecting value: line 1 column 14"),
    ('{"members": "all of them"}', "members.json: expected an object whose 'members' is a non-empty list"),
    ("[]", "members.json: expected an object whose 'members' is a non-empty list"),
])
def test_a_corrupt_or_empty_members_file_is_named(results, tmp_path, content, message):
    _, _, round_dir = _ensemble_copy(results, tmp_path)
    (round_dir / "members.json").write_text(content)
    result = _cli("predict", "--model", round_dir, ROOT / "README.md")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{round_dir}/{message}" in result.stderr, result.stderr


def test_an_ensemble_name_stays_inside_the_results_folder(results, tmp_path):
    copy, ids, _ = _ensemble_copy(results, tmp_path)
    result = _cli("ensemble", copy, "--trials", ids[("a", 0)], "--name", "../../escaped")
    assert result.returncode == 2 and "--name '../../escaped' would not stay inside" in result.stderr
    assert not (tmp_path / "escaped").exists() and not (copy.parent.parent / "escaped").exists()


def test_a_refused_build_leaves_no_folder(results, tmp_path):
    results_dir, ids = results
    import shutil

    copy = tmp_path / "fresh"
    shutil.copytree(results_dir, copy, ignore=shutil.ignore_patterns("ensembles"))
    refused = _cli("ensemble", copy, "--trials", ids[("a", 0)], ids[("b", 1)], "--name", "mixed")
    assert refused.returncode == 2 and "different rounds" in refused.stderr
    assert not (copy / "ensembles").exists()
    (copy / "trials" / ids[("c", 0)] / "val_predictions.npz").rename(copy / "hidden.npz")
    failed = _cli("ensemble", copy, "--trials", ids[("a", 0)], ids[("c", 0)], "--name", "ac", "--gate-min-age", "18")
    assert failed.returncode == 2 and "need stored validation predictions" in failed.stderr
    assert not (copy / "ensembles").exists()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    result = _cli("ensemble", copy, "--trials", ids[("a", 0)], "--out", taken)
    assert result.returncode == 2 and "is not an ensemble folder" in result.stderr
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
