"""Where a trial's worker process runs: a local process pool or Ray tasks.

An executor only starts ``python -m backends.worker RUN_DIR`` somewhere that sees the
files and reports how it ended; the runner decides everything else. A trial's thread
count is in its config (the worker applies it), never derived from how many trials run
at once, so ``--workers`` changes how long a grid takes and nothing it measures.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from harness.processes import die_with_parent

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Job:
    key: str
    run_dir: str
    time_limit_s: float
    threads: int          # the trial's own thread count: what the executor reserves


@dataclass
class Outcome:
    returncode: int | None      # None: killed for passing the time limit
    seconds: float
    stderr_tail: str


class Stopped(Exception):
    """The executor was stopped before this job's worker started."""


def _worker_child() -> None:
    # A worker must not outlive a runner killed with -9: an orphan could still be
    # writing into a trial directory that the restarted runner is redoing. Its own
    # session keeps the terminal's Ctrl-C for the runner, which stops workers itself.
    die_with_parent()
    os.setsid()


def run_worker(run_dir: str, time_limit_s: float, on_start=None) -> Outcome:
    """Run one trial's worker to completion (or the time limit) on this machine.

    ``on_start(process)`` is called once the process exists (the local executor keeps
    it so it can kill it on an interrupt) and may raise :class:`Stopped` to cancel.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    start = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "backends.worker", run_dir], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=_worker_child)
    if on_start is not None:
        on_start(process)
    try:
        _, stderr = process.communicate(timeout=time_limit_s)
        code = process.returncode
    except subprocess.TimeoutExpired:
        _kill_group(process)
        _, stderr = process.communicate()
        code = None
    return Outcome(code, time.monotonic() - start, (stderr or "")[-4000:])


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class LocalExecutor:
    """N trials at once on this machine; each worker uses its trial's own thread count."""

    def __init__(self, workers: int = 1):
        self.workers = max(1, workers)
        self._live: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._stopping = False

    def _run(self, job: Job) -> Outcome:
        def register(process):
            with self._lock:
                if self._stopping:
                    _kill_group(process)
                    process.wait()
                    raise Stopped(job.key)
                self._live.add(process)

        with self._lock:
            if self._stopping:
                raise Stopped(job.key)
        try:
            return run_worker(job.run_dir, job.time_limit_s, on_start=register)
        finally:
            with self._lock:
                self._live = {p for p in self._live if p.poll() is None}

    def map_unordered(self, jobs: list[Job]):
        """Yields (key, Outcome) as jobs finish. :meth:`stop` ends it early."""
        pool = ThreadPoolExecutor(self.workers)
        pending: dict[Future, str] = {pool.submit(self._run, job): job.key for job in jobs}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    key = pending.pop(future)
                    yield key, future.result()
        finally:
            if pending:
                self.stop()
            pool.shutdown(wait=True, cancel_futures=True)

    def stop(self) -> None:
        """Start no more workers and kill the running ones (with their process groups)."""
        with self._lock:
            self._stopping = True
            live = list(self._live)
        for process in live:
            _kill_group(process)
        for process in live:
            process.wait()


# A task whose node is lost (raylet gone, machine down) runs again on another node, up
# to this many times; each attempt is a fresh worker under the trial's time limit.
RAY_RETRIES = 3
# The Ray node a trial ran on, handed to its worker, which records it in env.json (on a
# cluster of one machine every node has the same host name).
RAY_NODE_ENV = "HARNESS_RAY_NODE_ID"


def _run_on_ray_node(run_dir: str, time_limit_s: float | None) -> Outcome:
    import ray

    os.environ[RAY_NODE_ENV] = ray.get_runtime_context().get_node_id()
    return run_worker(run_dir, time_limit_s)


class RayExecutor:
    """The same workers as Ray tasks, on a cluster that sees the results directory.

    Each task reserves as many CPUs as its trial has threads, so Ray packs trials onto
    nodes without changing what any of them computes.
    """

    def __init__(self, address: str | None = None):
        try:
            import ray
        except ImportError:
            raise RuntimeError("--executor ray needs Ray: pip install -e '.[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            # Without an address, a new local instance ("local"): plain ray.init() would join
            # any cluster already running on this machine, someone else's included.
            ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
                     num_cpus=None if address else (os.cpu_count() or 1))
        self.cpus = int(self.ray.cluster_resources().get("CPU", 1))
        self._refs: dict = {}

    def map_unordered(self, jobs: list[Job]):
        remote = self.ray.remote(_run_on_ray_node)
        self._refs = {remote.options(num_cpus=min(job.threads, self.cpus), max_retries=RAY_RETRIES)
                      .remote(job.run_dir, job.time_limit_s): job.key for job in jobs}
        try:
            while self._refs:
                done, _ = self.ray.wait(list(self._refs), num_returns=1)
                for ref in done:
                    yield self._refs.pop(ref), self._outcome(ref)
        finally:
            if self._refs:
                self.stop()

    def _outcome(self, ref) -> Outcome:
        """The worker's outcome; a task Ray could not finish (its node lost more often than
        it retries) is a failed trial, recorded like any other, never a crashed grid."""
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as err:
            return Outcome(1, 0.0, f"lost on the Ray cluster after {RAY_RETRIES} retries: "
                                   f"{type(err).__name__}: {err}"[-4000:])

    def stop(self) -> None:
        for ref in list(self._refs):
            self.ray.cancel(ref, force=True)
        self._refs = {}
