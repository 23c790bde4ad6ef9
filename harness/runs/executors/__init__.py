"""Where a trial's worker runs: a local pool of worker slots or Ray actors.

An executor only hands trial directories to ``python -m backends.worker`` somewhere
that sees the files and reports how each ended; the runner decides everything else. A
trial's thread count is in its config (the worker applies it), never derived from how
many trials run at once, so ``--workers`` changes how long a grid takes and nothing it
measures.

By default a worker process is reused for many trials of one backend and thread count
(``worker serve``; Ray Tune calls this ``reuse_actors``): the framework is imported once
and a trial's arrays stay in memory for the next trial on the same data. Each trial
still starts from a clean framework state, so its results are bit-identical to a fresh
process's. A worker whose trial failed, was killed or passed its time limit is gone;
the slot starts a new one for the next trial. A worker is also retired after
``Reuse.max_trials`` trials or above ``Reuse.max_memory_mb``, so leaks cannot pile up.
``reuse=None`` (``--fresh-process``) starts one process per trial, as before.
"""
from __future__ import annotations

from typing import Iterator, Protocol

from harness.runs.executors.local import LocalExecutor
from harness.runs.executors.ray import RayExecutor
from harness.runs.executors.workers import Job, Outcome, Reuse

__all__ = ["Executor", "Job", "Outcome", "Reuse", "LocalExecutor", "RayExecutor"]


class Executor(Protocol):
    """What the runner needs of an executor: run jobs, report each as it ends, stop."""

    def map_unordered(self, jobs: list[Job]) -> Iterator[tuple[str, Outcome]]:
        """Run every job; yield ``(job.key, Outcome)`` in the order they finish."""

    def stop(self) -> None:
        """Start nothing more and kill what runs (an interrupt, or an error in the runner)."""
