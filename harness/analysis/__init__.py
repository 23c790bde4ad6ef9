"""What the finished trials say: :mod:`.statistics` (corrected resampled t-tests,
intervals), :mod:`.comparisons` (framework and design pairs), :mod:`.plots` and
:mod:`.report` (tables, figures, report.md/html, ``harness compare``).
"""
__all__ = ['write_comparison', 'write_report']

_ENTRY_POINTS = {'write_report': 'harness.analysis.report', 'write_comparison': 'harness.analysis.report'}


def __getattr__(name: str):
    # Entry points load on first use: importing the wing (as every submodule import
    # does) costs nothing beyond what the caller itself needs.
    if name in _ENTRY_POINTS:
        import importlib

        module, _, attribute = _ENTRY_POINTS[name].partition(":")
        return getattr(importlib.import_module(module), attribute or name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
