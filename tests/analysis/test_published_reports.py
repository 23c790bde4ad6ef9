"""Published reports: regenerated from stored results with identical tables, and readable
in a real browser at laptop and phone widths."""
import shutil
from pathlib import Path

import pytest

from harness.analysis.report import write_report
from tests.helpers.browser import chromium_executable

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "results" / "report_fixture"
PUBLISHED = ROOT / "tests" / "fixtures" / "report_fixture_report"   # what `make reports` wrote


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report_fixture"
    write_report(FIXTURE, out)
    return out


def test_a_published_report_is_regenerated_with_identical_tables(regenerated):
    published = sorted(p.name for p in (PUBLISHED / "tables").glob("*.csv"))
    assert "framework_pairs.csv" in published and "against_baseline.csv" in published
    assert sorted(p.name for p in (regenerated / "tables").glob("*.csv")) == published
    for name in published:
        assert (regenerated / "tables" / name).read_bytes() == (PUBLISHED / "tables" / name).read_bytes(), name
    text = (regenerated / "report.md").read_text()
    assert "2 split rounds (folds) × 2 seeds [0, 1] = 4 paired observations" in text
    for section in ("## Frameworks side by side", "## Design factors against the baseline", "## Ranking",
                    "## Who the model fails"):
        assert section in text


@pytest.mark.browser
@pytest.mark.parametrize("width,height", [(390, 844), (1280, 900)])
def test_the_html_report_reads_in_a_browser_after_its_folder_moves(regenerated, tmp_path, width, height):
    from playwright.sync_api import sync_playwright

    moved = tmp_path / "moved" / "elsewhere"
    shutil.copytree(regenerated, moved)   # images are relative: they must follow the folder
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_executable(),
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(moved.joinpath("report.html").as_uri())
            page.wait_for_load_state("load")
            images = page.evaluate("[...document.images].map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])")
            alts = page.evaluate("[...document.images].map(i => i.getAttribute('alt') || '')")
            page_width = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
            headings = page.locator("h2").all_inner_texts()
            tables = page.locator("table").count()
            hover = page.locator("td.label summary").first.get_attribute("title")
            # The summary: the first block after the title, and on screen without scrolling.
            first = page.evaluate("document.querySelector('h1').nextElementSibling.id")
            summary_box = page.locator("#summary").bounding_box()
            # The full specification opens with a tap (a details element), not only on hover.
            page.locator("td.label summary").first.click()
            opened = page.locator("td.label details").first.evaluate("d => d.open")
            # A table scrolled sideways keeps its first column (the row names) in view.
            sticky = page.evaluate("getComputedStyle(document.querySelector('td:first-child')).position")
            # At a laptop's width no table hides its verdict column off the table's box.
            hidden_verdicts = page.evaluate("""[...document.querySelectorAll('table')].filter(t => {
                const heads = [...t.querySelectorAll('th')].map(h => h.innerText);
                const v = heads.findIndex(h => h.startsWith('verdict'));
                if (v < 0) return false;
                const box = t.parentElement.getBoundingClientRect();
                const cell = t.querySelectorAll('th')[v].getBoundingClientRect();
                return cell.right > box.right + 1; }).length""")
            page.screenshot(path=str(tmp_path / f"report_{width}.png"), full_page=True)
        finally:
            browser.close()
    assert len(images) >= 5 and all(loaded for _, loaded in images), [src for src, ok in images if not ok]
    assert page_width[0] <= page_width[1], f"the page scrolls sideways at {width} px: {page_width}"
    assert {"Frameworks side by side", "Design factors against the baseline", "Ranking"} <= set(headings)
    assert tables >= 4
    assert hover and "fcn(" in hover   # a short label shows the full specification on hover
    assert opened is True and sticky == "sticky"
    assert first == "summary" and summary_box["y"] + min(summary_box["height"], 200) <= height
    assert all(len(alt) > 20 and not alt.endswith(".png") for alt in alts), alts
    if width >= 1280:
        assert hidden_verdicts == 0
    assert (tmp_path / f"report_{width}.png").stat().st_size > 10_000


def _shifted_copy(tmp_path, joint_shift: float) -> Path:
    """The fixture's results as if another experiment (other preprocessing) had scored
    every trial's joint accuracy ``joint_shift`` higher on the same faces (both made to
    look learned: a model that did not learn is never compared)."""
    import json

    from tests.helpers.reports import learned_copy

    copy = learned_copy(tmp_path / "other")
    experiment = json.loads((copy / "experiment.json").read_text())
    experiment["name"], experiment["preprocessing"]["size"] = "other", 24
    (copy / "experiment.json").write_text(json.dumps(experiment))
    for metrics_file in copy.glob("trials/*/metrics.json"):
        metrics = json.loads(metrics_file.read_text())
        metrics["joint_accuracy"] += joint_shift
        metrics_file.write_text(json.dumps(metrics))
    return copy


def test_compare_pairs_two_experiments_on_the_same_faces(tmp_path):
    from harness.analysis.report import write_comparison
    from tests.helpers.reports import learned_copy

    other = _shifted_copy(tmp_path, 0.05)
    write_comparison(other, learned_copy(tmp_path / "fixture"), tmp_path / "out")
    import pandas as pd

    table = pd.read_csv(tmp_path / "out" / "tables" / "between.csv")
    assert len(table) == 4 and (table["joint pairs"] == 4).all()            # 2 configurations x 2 backends
    assert table["joint difference"].tolist() == pytest.approx([5.0] * 4)
    assert set(table["joint verdict"]) == {"this higher"}
    assert (table["gender difference"] == 0).all()
    text = (tmp_path / "out" / "report.md").read_text()
    assert "size: 16 → 24" in text and "(checked)" in text
    assert "**Compared** 4 configuration × backend pairs that ran in both, joint accuracy: other higher in 4" in text
    # Against the fixture as it is (its models did not learn), nothing is compared.
    write_comparison(other, FIXTURE, tmp_path / "as_is")
    failed = pd.read_csv(tmp_path / "as_is" / "tables" / "between.csv")
    assert failed["joint verdict"].str.startswith("left out: ").all() and failed["joint difference"].isna().all()
    assert (tmp_path / "out" / "plots" / "forest_between.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_refuses_rounds_that_test_different_faces(tmp_path):
    import pandas as pd

    from harness.analysis.report import write_comparison

    other = _shifted_copy(tmp_path, 0.0)
    splits = pd.read_csv(other / "splits" / "splits.csv", dtype=str)
    moved = splits.index[(splits["round"] == "1") & (splits["role"] == "test")][0]
    splits.loc[moved, "role"] = "train"
    splits.to_csv(other / "splits" / "splits.csv", index=False)
    with pytest.raises(ValueError, match="round 1 tests different faces"):
        write_comparison(other, FIXTURE, tmp_path / "out")


def _with_environments(tmp_path, versions) -> Path:
    """A copy of the fixture results whose trials carry env.json files with these versions."""
    copy = tmp_path / "report_fixture"
    shutil.copytree(FIXTURE, copy)
    trials = sorted((copy / "trials").iterdir())
    for trial, tensorflow in zip(trials, versions * len(trials)):
        (trial / "env.json").write_text(
            f'{{"framework": "keras", "keras": "3.15.1", "tensorflow": "{tensorflow}", "numpy": "2.4.6"}}')
    return copy


def test_the_report_stamps_the_framework_versions_and_says_when_they_differ(tmp_path):
    same = _with_environments(tmp_path / "same", ["2.21.0"])
    text = (write_report(same, tmp_path / "same-out")).read_text()
    assert "Framework versions (from 16 trials' env.json): tensorflow 2.21.0, keras 3.15.1, numpy 2.4.6." in text
    assert "different framework versions" not in text

    mixed = _with_environments(tmp_path / "mixed", ["2.20.0", "2.21.0"])
    text = (write_report(mixed, tmp_path / "mixed-out")).read_text()
    assert ("**Its trials ran under different framework versions**: tensorflow 2.20.0 (8 trials), "
            "2.21.0 (8 trials)") in text

    # The published fixture predates env.json: no claim about versions at all.
    assert "ramework versions" not in (PUBLISHED / "report.md").read_text()


def test_a_published_experiment_keeps_its_trial_ids(tmp_path):
    """Trial ids are hashes of resolved configs: the layout changes none of them, so published
    results resume and regenerate. A dry run (which computes nothing) gives today's ids."""
    import csv

    from tests.helpers.experiments import harness_cli

    dry = harness_cli("run", "experiments/framework_comparison.yaml", "--results", tmp_path, "--dry-run",
                      cache=str(tmp_path / "cache"))
    assert dry.returncode == 0, dry.stderr
    today = {line.split()[0] for line in dry.stdout.splitlines() if " round " in line}
    with open(ROOT / "docs" / "results" / "framework_comparison" / "tables" / "trials.csv") as handle:
        published = {row["trial_id"] for row in csv.DictReader(handle)}
    assert len(today) == 50 and today == published
