"""Age-and-gender classification benchmarking harness.

Wings by the question they answer, arrows pointing one way (``docs/design.md``)::

    data -> models -> runs -> (backends, analysis) -> deploy -> cli
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("agegender-harness")
except PackageNotFoundError:   # run from a checkout that was never installed
    __version__ = "0.1.0+checkout"
