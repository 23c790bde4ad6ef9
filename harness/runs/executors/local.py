"""N worker slots on this machine, each in a thread of the runner's process."""
from __future__ import annotations

import subprocess
import threading
from queue import Queue

from harness.runs.executors.workers import Job, JobQueue, Reuse, Stopped, WorkerSlot, kill_group

__all__ = ["LocalExecutor"]


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
                kill_group(process)
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
            kill_group(process)
        for process in live:
            process.wait()
