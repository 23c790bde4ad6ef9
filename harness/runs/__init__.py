"""How an experiment file becomes finished trials.

:mod:`.experiment` (schema) and :mod:`.experiment_file` (reading it), :mod:`.grid`
(expansion into trials), :mod:`.trial` (one trial's config and files), :mod:`.layout`
(every results-folder file name; :func:`~.layout.kind_of` and :func:`~.layout.finished`),
:mod:`.index`, :mod:`.prepare`, :mod:`.results_dir` (the guard), :mod:`.runner`
(scheduling only), :mod:`.executors` (local slots or Ray) and :mod:`.ensemble`.
"""
__all__ = ['Experiment', 'ExperimentError', 'expand', 'finished', 'kind_of', 'load_experiment', 'run']

_ENTRY_POINTS = {'Experiment': 'harness.runs.experiment', 'ExperimentError': 'harness.runs.experiment', 'expand': 'harness.runs.grid', 'run': 'harness.runs.runner', 'kind_of': 'harness.runs.layout', 'finished': 'harness.runs.layout', 'load_experiment': 'harness.runs.experiment_file:load'}


def __getattr__(name: str):
    # Entry points load on first use: importing the wing (as every submodule import
    # does) costs nothing beyond what the caller itself needs.
    if name in _ENTRY_POINTS:
        import importlib

        module, _, attribute = _ENTRY_POINTS[name].partition(":")
        return getattr(importlib.import_module(module), attribute or name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
