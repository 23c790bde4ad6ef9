"""The layout rule of docs/design.md, checked on the real tree and shown to catch a break."""
from __future__ import annotations

from pathlib import Path

from harness.wings import violations, wing_of


def test_no_import_runs_back_up_the_flow():
    assert violations() == []


def _module(root: Path, dotted: str, text: str) -> None:
    path = root.joinpath(*dotted.split(".")).with_suffix(".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    for parent in path.parents:
        if parent == root:
            break
        (parent / "__init__.py").touch()
    path.write_text(text)


def test_the_check_names_each_import_that_runs_back_up(tmp_path):
    _module(tmp_path, "harness.paths", "")
    _module(tmp_path, "harness.runs.trial", "from harness.data import labels\nfrom harness.paths import x\n")
    _module(tmp_path, "harness.data.labels", "def f():\n    from harness.runs.trial import TrialConfig\n")
    _module(tmp_path, "harness.analysis.report", "import backends.keras\n")
    _module(tmp_path, "backends.keras", "from harness.models import heads\n")
    _module(tmp_path, "harness.models.heads", "from harness import cli\n")
    _module(tmp_path, "harness.cli.main", "from harness.deploy import serve\n")
    found = violations(tmp_path)
    assert len(found) == 3, found
    assert any(f.startswith("harness/data/labels.py:2: data imports harness.runs.trial") for f in found)
    assert any("analysis imports backends.keras (backends), which stands beside it" in f for f in found)
    assert any(f.startswith("harness/models/heads.py:1: models imports harness.cli") for f in found)


def test_every_module_belongs_to_a_wing():
    assert wing_of("harness.runs.executors.ray") == "runs"
    assert wing_of("backends.training") == "backends"
    assert wing_of("harness.processes") == "root"
    assert wing_of("numpy") is None
