"""What is trained, and what its output means.

:mod:`.spec` (a model spec is plain data), :mod:`.heads` (output layouts and readouts),
:mod:`.losses`, :mod:`.metrics` (from predictions only), :mod:`.gate` (the door's rule
and its calibration), :mod:`.augmentation`, and :mod:`.backends`, the one registry of
backends. Imports only :mod:`harness.data`; never a framework.
"""
__all__ = ['BACKENDS', 'GateSpec', 'ModelSpec', 'REGISTRY', 'TrainingSpec']

_ENTRY_POINTS = {'ModelSpec': 'harness.models.spec', 'TrainingSpec': 'harness.models.spec', 'GateSpec': 'harness.models.gate', 'BACKENDS': 'harness.models.backends', 'REGISTRY': 'harness.models.backends'}


def __getattr__(name: str):
    # Entry points load on first use: importing the wing (as every submodule import
    # does) costs nothing beyond what the caller itself needs.
    if name in _ENTRY_POINTS:
        import importlib

        module, _, attribute = _ENTRY_POINTS[name].partition(":")
        return getattr(importlib.import_module(module), attribute or name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
