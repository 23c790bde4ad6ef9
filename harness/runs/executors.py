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

import json
import os
import select
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from queue import Queue

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
        _kill_group(process)
        _, stderr = process.communicate()
        code = None
    return Outcome(code, time.monotonic() - start, (stderr or "")[-4000:])


def _kill_group(process: subprocess.Popen) -> None:
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
            _kill_group(self.process)
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


class LocalExecutor:
    """N worker slots on this machine; each worker uses its trial's own thread count."""

    def __init__(self, workers: int = 1, reuse: Reuse | None = Reuse()):
        self.workers = max(1, workers)
        self.reuse = reuse
        self.memory_ceiling = reuse.ceiling_mb(self.workers) if reuse else None
        self._live: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._stopping = False

    def _register(self, process: subprocess.Popen) -> None:
        with self._lock:
            if self._stopping:
                _kill_group(process)
                process.wait()
                raise Stopped(str(process.pid))
            self._live = {p for p in self._live if p.poll() is None} | {process}

    def _slot(self, queue: JobQueue, results: Queue) -> None:
        slot = WorkerSlot(self.reuse, self.memory_ceiling, self._register)
        worker = data = None   # what the slot last ran: it goes on with the like
        try:
            while not self._stopping and (job := queue.take(worker, data)) is not None:
                results.put((job.key, slot.run(job)))
                worker, data = (job.backend, job.threads), job.data
        except Stopped:
            pass
        except BaseException as err:   # reach the runner, which stops everything
            results.put(err)
        finally:
            slot.close()
            results.put(None)          # this slot is done

    def map_unordered(self, jobs: list[Job]):
        """Yields (key, Outcome) as jobs finish. :meth:`stop` ends it early."""
        if not jobs:
            return
        queue, results = JobQueue(jobs), Queue()
        slots = [threading.Thread(target=self._slot, args=(queue, results), daemon=True,
                                  name=f"worker-slot-{i}") for i in range(min(self.workers, len(jobs)))]
        for thread in slots:
            thread.start()
        running = len(slots)
        try:
            while running:
                item = results.get()
                if item is None:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            if running:
                queue.clear()
                self.stop()
            for thread in slots:
                thread.join()

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


def _lost(err: Exception) -> Outcome:
    """A trial Ray could not finish (its node lost more often than it retries): a failed
    trial, recorded like any other, never a crashed grid."""
    return Outcome(1, 0.0, f"lost on the Ray cluster after {RAY_RETRIES} retries: {type(err).__name__}: {err}"[:4000])


class RaySlot:
    """A Ray actor holding one worker slot: Ray Tune's ``reuse_actors`` for trials. An
    actor restarted after its node was lost starts with a new worker."""

    def __init__(self, reuse: Reuse):
        import ray

        os.environ[RAY_NODE_ENV] = ray.get_runtime_context().get_node_id()
        self.slot = WorkerSlot(reuse, reuse.ceiling_mb(os.cpu_count() or 1))

    def run(self, job: Job) -> Outcome:
        return self.slot.run(job)


class RayExecutor:
    """The same workers on a Ray cluster that sees the results directory: reused workers
    in Ray actors, or (``reuse=None``) a fresh worker per Ray task.

    Each actor or task reserves as many CPUs as its trials have threads, so Ray packs
    trials onto nodes without changing what any of them computes.
    """

    def __init__(self, address: str | None = None, reuse: Reuse | None = Reuse()):
        try:
            import ray
        except ImportError:
            raise RuntimeError("--executor ray needs Ray: pip install -e '.[ray]'") from None
        self.ray, self.reuse = ray, reuse
        if not ray.is_initialized():
            # Without an address, a new local instance ("local"): plain ray.init() would join
            # any cluster already running on this machine, someone else's included.
            ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
                     num_cpus=None if address else (os.cpu_count() or 1))
        self.cpus = int(self.ray.cluster_resources().get("CPU", 1))
        self._refs: dict = {}
        self._actors: list = []

    def map_unordered(self, jobs: list[Job]):
        if self.reuse is None:
            yield from self._tasks(jobs)
        else:
            yield from self._slots(jobs)

    def _tasks(self, jobs: list[Job]):
        remote = self.ray.remote(_run_on_ray_node)
        self._refs = {remote.options(num_cpus=min(job.threads, self.cpus), max_retries=RAY_RETRIES)
                      .remote(job.run_dir, job.time_limit_s): job for job in jobs}
        yield from self._collect()

    def _slots(self, jobs: list[Job]):
        if not jobs:
            return
        # One thread count per experiment: every actor reserves the largest.
        cpus = min(max(job.threads for job in jobs), self.cpus)
        # Lost actors are replaced here rather than restarted by Ray: a call to an actor
        # whose node just died fails at once (ActorUnavailableError) and is not retried.
        actor_class = self.ray.remote(RaySlot).options(num_cpus=cpus, max_restarts=0)
        queue, attempts = JobQueue(jobs), {job.key: 0 for job in jobs}
        idle = [(actor_class.remote(self.reuse), None, None)
                for _ in range(min(len(jobs), max(1, self.cpus // cpus)))]
        self._actors = [actor for actor, _, _ in idle]
        try:
            while idle or self._refs:
                while idle and len(queue):
                    actor, worker, data = idle.pop()
                    job = queue.take(worker, data)
                    self._refs[actor.run.remote(job)] = (job, actor)
                # An idle actor holds its CPUs: with nothing left to give it, end it.
                for actor, _, _ in idle:
                    self._end(actor)
                idle = []
                if not self._refs:
                    break
                done, _ = self.ray.wait(list(self._refs), num_returns=1)
                for ref in done:
                    job, actor = self._refs.pop(ref)
                    try:
                        outcome = self.ray.get(ref)
                    except self.ray.exceptions.RayActorError as err:   # its node or process is gone
                        self._end(actor)
                        attempts[job.key] += 1
                        if attempts[job.key] <= RAY_RETRIES:
                            queue.put_back(job)    # a fresh worker elsewhere, under the same time limit
                        else:
                            yield job.key, _lost(err)
                        if not self._actors or self.ray.available_resources().get("CPU", 0) >= cpus:
                            actor = actor_class.remote(self.reuse)
                            self._actors.append(actor)
                            idle.append((actor, None, None))
                        continue
                    except self.ray.exceptions.RayError as err:
                        outcome = Outcome(1, 0.0, f"{type(err).__name__}: {err}"[:4000])
                    idle.append((actor, (job.backend, job.threads), job.data))
                    yield job.key, outcome
        finally:
            self.stop()

    def _end(self, actor) -> None:
        self.ray.kill(actor)
        self._actors = [a for a in self._actors if a is not actor]

    def _collect(self):
        try:
            while self._refs:
                done, _ = self.ray.wait(list(self._refs), num_returns=1)
                for ref in done:
                    yield self._refs.pop(ref).key, self._outcome(ref)
        finally:
            if self._refs:
                self.stop()

    def _outcome(self, ref) -> Outcome:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as err:
            return _lost(err)

    def stop(self) -> None:
        if self.reuse is None:   # tasks; an actor's task ends with its actor, killed below
            for ref in list(self._refs):
                self.ray.cancel(ref, force=True)
        for actor in self._actors:
            self.ray.kill(actor)
        self._refs, self._actors = {}, []
