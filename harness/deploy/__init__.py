"""How a finished model meets a new photo: :mod:`.predictors` (one ``Predictor``
protocol: framework, ensemble, export), :mod:`.classify`, :mod:`.export` and
:mod:`.litert` (a phone's file and runtime), :mod:`.serve` (HTTP API and door page).
"""
__all__ = ['Predictor', 'ServeOptions', 'open_model']

_ENTRY_POINTS = {'open_model': 'harness.deploy.predictors', 'Predictor': 'harness.deploy.predictors', 'ServeOptions': 'harness.deploy.serve'}


def __getattr__(name: str):
    # Entry points load on first use: importing the wing (as every submodule import
    # does) costs nothing beyond what the caller itself needs.
    if name in _ENTRY_POINTS:
        import importlib

        module, _, attribute = _ENTRY_POINTS[name].partition(":")
        return getattr(importlib.import_module(module), attribute or name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
