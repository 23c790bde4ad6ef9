"""Reports: what a results folder's finished trials say, as Markdown, HTML, CSV tables and plots.

Loading (:mod:`.trials`) is apart from computing tables (:mod:`.tables`), drawing
(:mod:`.figures`) and writing (:mod:`.render`, :mod:`.write`, :mod:`.compare`).
"""
from harness.analysis.report.compare import write_comparison
from harness.analysis.report.trials import load_trials, trials_frame
from harness.analysis.report.write import write_report

__all__ = ["write_report", "write_comparison", "load_trials", "trials_frame"]
