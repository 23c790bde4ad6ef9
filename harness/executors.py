"""Where a trial's worker process runs: a local process pool or Ray tasks.

An executor only starts ``python -m backends.worker RUN_DIR`` somewhere that sees the
files and reports how it ended; the runner decides everything else.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
THREADS_ENV = "HARNESS_THREADS"   # read by backends.common.thread_counts


@dataclass
class Outcome:
    returncode: int | None      # None: killed for passing the time limit
    seconds: float
    stderr_tail: str


def _die_with_parent() -> None:
    # A worker must not outlive a runner killed with -9: an orphan could still be
    # writing into a trial directory that the restarted runner is redoing.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    os.setsid()


def run_worker(run_dir: str, time_limit_s: float, threads: int | None) -> Outcome:
    """Run one trial's worker to completion (or the time limit) on this machine."""
    env = dict(os.environ)
    if threads:
        env[THREADS_ENV] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    start = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "backends.worker", run_dir], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=_die_with_parent)
    try:
        _, stderr = process.communicate(timeout=time_limit_s)
        code = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate()
        code = None
    return Outcome(code, time.monotonic() - start, (stderr or "")[-4000:])


class LocalExecutor:
    """N trials at once on this machine, each worker given cores / N threads."""

    def __init__(self, workers: int = 1):
        self.workers = max(1, workers)
        self.threads = max(1, (os.cpu_count() or 1) // self.workers)

    def map_unordered(self, jobs: list[tuple[str, str, float]]):
        """jobs: (key, run_dir, time_limit_s) -> yields (key, Outcome) as they finish."""
        with ThreadPoolExecutor(self.workers) as pool:
            pending: dict[Future, str] = {
                pool.submit(run_worker, run_dir, limit, self.threads): key
                for key, run_dir, limit in jobs}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield pending.pop(future), future.result()


class RayExecutor:
    """The same workers as Ray tasks, on a cluster that sees the results directory."""

    def __init__(self, address: str | None = None, workers: int | None = None):
        try:
            import ray
        except ImportError:
            raise RuntimeError("--executor ray needs Ray: pip install -e '.[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     num_cpus=None if address else (os.cpu_count() or 1))
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.cpus_per_trial = max(1, cpus // max(1, workers or cpus))
        self.remote = ray.remote(num_cpus=self.cpus_per_trial)(run_worker)

    def map_unordered(self, jobs):
        refs = {self.remote.remote(run_dir, limit, self.cpus_per_trial): key
                for key, run_dir, limit in jobs}
        while refs:
            done, _ = self.ray.wait(list(refs), num_returns=1)
            for ref in done:
                yield refs.pop(ref), self.ray.get(ref)
