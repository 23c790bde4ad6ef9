"""The same worker slots on a Ray cluster that sees the results directory: reused workers
in Ray actors, or a fresh worker per Ray task. (``import ray`` here is the Ray package:
imports are absolute.)"""
from __future__ import annotations

import os

from harness.runs.executors.workers import Job, JobQueue, Outcome, Reuse, WorkerSlot, run_worker

__all__ = ["RayExecutor"]


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
