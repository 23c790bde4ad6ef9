"""What faces go in, labelled and split how.

dataset files -> :mod:`.datasets` (adience, utkface, csv) -> the unified table ->
:mod:`.splits` (a split manifest) -> :mod:`.images` / :mod:`.faces` (decode, detect,
align, describe) -> :mod:`.cache` (arrays and descriptors, content-addressed).
:mod:`.labels` holds the 8 age groups, 2 genders and the 2-hot label. Imports nothing
from the other wings.
"""
__all__ = ['CachedArrays', 'Preprocessing', 'SplitManifest', 'SplitSpec', 'UnifiedDataset', 'build_cache', 'load_dataset', 'make_splits']

_ENTRY_POINTS = {'load_dataset': 'harness.data.datasets:load', 'UnifiedDataset': 'harness.data.datasets', 'SplitSpec': 'harness.data.splits', 'SplitManifest': 'harness.data.splits', 'make_splits': 'harness.data.splits', 'Preprocessing': 'harness.data.images', 'CachedArrays': 'harness.data.cache', 'build_cache': 'harness.data.cache:build'}


def __getattr__(name: str):
    # Entry points load on first use: importing the wing (as every submodule import
    # does) costs nothing beyond what the caller itself needs.
    if name in _ENTRY_POINTS:
        import importlib

        module, _, attribute = _ENTRY_POINTS[name].partition(":")
        return getattr(importlib.import_module(module), attribute or name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
