"""One worker slot: a trial in a fresh worker process, or in a reused one (``worker serve``),
with its time limit, its memory ceiling and a process group that dies with the runner.
Shared by the local and the Ray executor."""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

from harness.processes import die_with_parent, worker_command, worker_env


@dataclass(frozen=True)
class Job:
    key: str
    run_dir: str
    time_limit_s: float
    threads: int          # the trial's own thread count: what the executor reserves
    backend: str = ""     # with threads: which reused worker can take the trial
    data: str = ""        # jobs on the same data go to the same worker in a row (arrays stay in memory)


@dataclass
class Outcome:
    returncode: int | None      # None: killed for passing the time limit
    seconds: float
    stderr_tail: str


@dataclass(frozen=True)
class Reuse:
    """How long a reused worker process lives."""

    max_trials: int = 100               # retired after this many trials
    max_memory_mb: float | None = None  # retired above this resident memory; None: see memory_ceiling_mb

    def ceiling_mb(self, slots: int) -> float:
        """The memory ceiling for one of ``slots`` workers on this machine."""
        return self.max_memory_mb or memory_ceiling_mb(slots)


def memory_ceiling_mb(slots: int) -> float:
    """The default ceiling: half of this machine's memory, shared by the slots."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 20
    except (ValueError, OSError):
        total = 8192.0
    return total / 2 / max(1, slots)


class Stopped(Exception):
    """The executor was stopped before this job's worker started."""


def _worker_child() -> None:
    # A worker must not outlive a runner killed with -9: an orphan could still be
    # writing into a trial directory that the restarted runner is redoing. Its own
    # session keeps the terminal's Ctrl-C for the runner, which stops workers itself.
    # (PR_SET_PDEATHSIG follows the *thread* that started the worker: a reused worker is
    # started and used by one slot thread, which outlives it.)
    die_with_parent()
    os.setsid()


def run_worker(run_dir: str, time_limit_s: float, on_start=None) -> Outcome:
    """Run one trial in a fresh worker process, to completion or the time limit.

    ``on_start(process)`` is called once the process exists (the local executor keeps
    it so it can kill it on an interrupt) and may raise :class:`Stopped` to cancel.
    """
    start = time.monotonic()
    process = subprocess.Popen(worker_command(run_dir), env=worker_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=_worker_child)
    if on_start is not None:
        on_start(process)
    try:
        _, stderr = process.communicate(timeout=time_limit_s)
        code = process.returncode
    except subprocess.TimeoutExpired:
        kill_group(process)
        _, stderr = process.communicate()
        code = None
    return Outcome(code, time.monotonic() - start, (stderr or "")[-4000:])


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class ReusedWorker:
    """One ``python -m backends.worker serve`` process: trials of one backend and thread
    count, one at a time. Requests go to its stdin; answers come on a pipe of their own,
    because each trial sends the worker's stdout and stderr to its log."""

    def __init__(self, backend: str, threads: int, on_start=None):
        self.key = (backend, threads)
        self.trials, self.rss_mb = 0, 0.0
        # stderr (what a trial did not send to its log: a crash's last words) goes to an
        # unnamed file: nothing to drain, nothing left on disk.
        self._stderr = tempfile.TemporaryFile()
        reply_read, reply_write = os.pipe()
        try:
            self.process = subprocess.Popen(
                worker_command("serve", backend, threads, "--reply-fd", reply_write),
                env=worker_env(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr,
                pass_fds=(reply_write,), preexec_fn=_worker_child, text=True)
        finally:
            os.close(reply_write)
        self._replies = os.fdopen(reply_read, "r")
        if on_start is not None:
            on_start(self.process)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def run(self, job: Job) -> Outcome:
        start, stderr_from = time.monotonic(), os.fstat(self._stderr.fileno()).st_size
        try:
            self.process.stdin.write(json.dumps({"run_dir": job.run_dir}) + "\n")
            self.process.stdin.flush()
            ready, _, _ = select.select([self._replies], [], [], job.time_limit_s)
            line = self._replies.readline() if ready else None
        except (BrokenPipeError, OSError, ValueError):   # the worker died before or while reading
            line = ""
        seconds = time.monotonic() - start
        if line is None:                      # the time limit passed
            self.close(kill=True)
            return Outcome(None, seconds, self._stderr_since(stderr_from))
        if not line:                          # the worker died mid-trial (a crash, an OOM kill)
            self.close()
            return Outcome(self.process.returncode, seconds, self._stderr_since(stderr_from))
        reply = json.loads(line)
        if not reply["ok"]:                   # the trial raised; the worker exits after saying so
            self.close()
            return Outcome(1, seconds, reply["error"])
        self.trials += 1
        self.rss_mb = float(reply["rss_mb"])
        return Outcome(0, seconds, "")

    def _stderr_since(self, offset: int) -> str:
        size = os.fstat(self._stderr.fileno()).st_size
        start = max(offset, size - 4000)
        return os.pread(self._stderr.fileno(), size - start, start).decode(errors="replace")

    def close(self, kill: bool = False) -> None:
        """End the worker: at the end of its input (it finishes nothing new), or killed."""
        if self.alive and not kill:
            try:
                self.process.stdin.close()
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                kill = True
        if self.alive or kill:
            kill_group(self.process)
        self.process.wait()
        for handle in (self.process.stdin, self._replies):
            try:
                handle.close()
            except OSError:
                pass


class WorkerSlot:
    """Runs jobs one at a time, keeping a reused worker between jobs while it may be kept.

    The same slot serves a local thread and a Ray actor.
    """

    def __init__(self, reuse: Reuse | None, memory_ceiling: float | None, on_start=None):
        self.reuse, self.memory_ceiling, self.on_start = reuse, memory_ceiling, on_start
        self.worker: ReusedWorker | None = None

    def run(self, job: Job) -> Outcome:
        if self.reuse is None:
            return run_worker(job.run_dir, job.time_limit_s, self.on_start)
        if self.worker is not None and self.worker.key != (job.backend, job.threads):
            self.close()   # another framework or thread count: they cannot share a process
        if self.worker is None:
            self.worker = ReusedWorker(job.backend, job.threads, self.on_start)
        outcome = self.worker.run(job)
        if (not self.worker.alive or self.worker.trials >= self.reuse.max_trials
                or self.worker.rss_mb > self.memory_ceiling):
            self.close()
        return outcome

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None


class JobQueue:
    """Jobs not yet started. A slot takes one for the same kind of worker as its last job,
    on the same data, if there is one, else one for the same kind of worker, else the
    first: a worker keeps its framework and arrays, and after a failure the slot's new
    worker goes on with the same backend."""

    def __init__(self, jobs: list[Job]):
        self._jobs, self._lock = list(jobs), threading.Lock()

    def __len__(self) -> int:
        return len(self._jobs)

    def take(self, worker: tuple | None = None, data: str | None = None) -> Job | None:
        with self._lock:
            if not self._jobs:
                return None
            same_worker = [i for i, j in enumerate(self._jobs) if (j.backend, j.threads) == worker]
            same_data = [i for i in same_worker if self._jobs[i].data == data]
            return self._jobs.pop((same_data or same_worker or [0])[0])

    def put_back(self, job: Job) -> None:
        """A job to run again (its worker was lost): first in line."""
        with self._lock:
            self._jobs.insert(0, job)

    def clear(self) -> None:
        with self._lock:
            self._jobs.clear()
