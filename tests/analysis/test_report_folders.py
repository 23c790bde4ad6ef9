"""Where reports are written (issue 23 §4 and its bullets): nothing of the user's is deleted,
a kill leaves a report whose links resolve, and refusals say why in one line."""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers.files import read_only

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "results" / "report_fixture"


def harness(*args, user=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, user=user)


def _links(folder: Path) -> list[str]:
    md = (folder / "report.md").read_text()
    html = (folder / "report.html").read_text() if (folder / "report.html").exists() else ""
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md) + re.findall(r'src="(plots/[^"]+)"', html)


def _copy(tmp_path, name="results") -> Path:
    copy = tmp_path / name
    shutil.copytree(FIXTURE, copy)
    return copy


def test_a_report_keeps_the_users_files_and_removes_only_its_own(tmp_path):
    out = tmp_path / "published"
    assert harness("report", FIXTURE, "--out", out).returncode == 0
    listed = set(json.loads((out / ".report-files.json").read_text()))
    assert "report.md" in listed and any(n.startswith("plots/") for n in listed)
    (out / "tables" / "notes.txt").write_text("mine")
    (out / "plots" / "mine.png").write_bytes(b"\x89PNG mine")
    stale = out / "plots" / "from_an_older_report.png"   # a plot an earlier report wrote, no longer drawn
    stale.write_bytes(b"\x89PNG")
    (out / ".report-files.json").write_text(json.dumps(sorted(listed | {"plots/from_an_older_report.png"})))

    result = harness("report", FIXTURE, "--out", out)
    assert result.returncode == 0, result.stderr
    assert (out / "tables" / "notes.txt").read_text() == "mine"
    assert (out / "plots" / "mine.png").read_bytes() == b"\x89PNG mine"
    assert not stale.exists()
    assert all((out / link).is_file() for link in _links(out))
    assert not list(out.glob(".report-staging-*"))


def test_an_out_folder_with_other_files_or_a_results_folder_is_refused(tmp_path):
    crowded = tmp_path / "crowded"
    crowded.mkdir()
    (crowded / "thesis.tex").write_text("keep me")
    result = harness("report", FIXTURE, "--out", crowded)
    assert result.returncode == 2 and "thesis.tex" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in crowded.iterdir()) == ["thesis.tex"]

    other = _copy(tmp_path, "other_results")
    before = sorted(p.name for p in other.iterdir())
    for command in (("report", FIXTURE, "--out", other), ("compare", FIXTURE, _copy(tmp_path), "--out", other)):
        result = harness(*command)
        assert result.returncode == 2, result.stderr
        assert "results folder" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in other.iterdir()) == before


def test_a_report_written_over_a_users_file_is_refused_before_anything_moves(tmp_path):
    out = tmp_path / "published"
    (out / "tables").mkdir(parents=True)
    (out / "tables" / "trials.csv").write_text("my own table")
    (out / ".report-files.json").write_text("[]")   # an earlier report that wrote nothing there
    result = harness("report", FIXTURE, "--out", out)
    assert result.returncode == 2 and "trials.csv" in result.stderr
    assert (out / "tables" / "trials.csv").read_text() == "my own table"
    assert not (out / "report.md").exists() and not list(out.glob(".report-staging-*"))


def test_a_report_killed_at_any_moment_leaves_links_that_resolve(tmp_path):
    results = _copy(tmp_path)
    started = time.monotonic()
    assert harness("report", results).returncode == 0
    took = time.monotonic() - started
    for fraction in (0.55, 0.7, 0.8, 0.9, 0.97):
        process = subprocess.Popen([sys.executable, "-m", "harness", "report", str(results)], cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(took * fraction)
        process.send_signal(signal.SIGKILL)
        process.wait()
        missing = [link for link in _links(results) if not (results / link).is_file()]
        assert not missing, f"killed after {fraction:.0%} of a report: report.md links {missing}"
    result = harness("report", results)   # and the next report clears what the kills left
    assert result.returncode == 0, result.stderr
    assert not list(results.glob(".report-staging-*"))


def test_a_read_only_results_folder_says_so_and_points_at_out(tmp_path):
    results = _copy(tmp_path)
    with read_only(results):
        result = harness("report", results)
    assert result.returncode == 2, result.stderr
    assert f"{results}: cannot write a report here" in result.stderr and "--out" in result.stderr
    assert "Errno" not in result.stderr and "Traceback" not in result.stderr


def test_compare_refuses_an_experiment_against_itself(tmp_path):
    result = harness("compare", FIXTURE, FIXTURE, "--out", tmp_path / "out")
    assert result.returncode == 2 and "the same results folder" in result.stderr
    assert not (tmp_path / "out").exists()


def test_an_index_of_garbage_is_not_called_missing(tmp_path):
    results = _copy(tmp_path)
    (results / "index.jsonl").write_text("not json\n{\"also\": \"not a record\"}\n")
    for command in (("report", results), ("compare", results, FIXTURE, "--out", tmp_path / "out")):
        result = harness(*command)
        assert result.returncode == 2
        assert "none of its 2 line(s) is a trial record" in result.stderr, result.stderr
        assert "no results index" not in result.stderr


def test_compare_lists_a_damaged_trial_it_left_out(tmp_path):
    from tests.analysis.test_published_reports import _shifted_copy

    other = _shifted_copy(tmp_path, 0.05)
    damaged_id = sorted(p.name for p in (other / "trials").iterdir())[0]
    (other / "trials" / damaged_id / "metrics.json").write_text('{"gender_accuracy": ')
    result = harness("compare", other, FIXTURE, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert f"{damaged_id}/metrics.json" in (tmp_path / "out" / "tables" / "damaged.csv").read_text()
    assert "Damaged trials" in (tmp_path / "out" / "report.md").read_text()
