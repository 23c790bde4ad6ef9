"""Reused worker processes (``worker serve``): the same numbers as a fresh process for
each backend, a failed, killed or timed-out trial touches no other trial, workers are
retired after N trials or above a memory ceiling, and the arrays stay in memory."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from harness.runs.executors import Job, Reuse
from harness.runs.executors.workers import JobQueue, WorkerSlot
from harness.runs.index import read_index
from harness.runs.trial import read_config
from tests.helpers.experiments import TINY, harness_cli, write
from tests.helpers.processes import wait_for

ROOT = Path(__file__).resolve().parents[2]
# A linear net under SGD at lr 10 grows to an inf/NaN loss within 3 epochs in both
# frameworks; the other rates train. One thread, so two trials can run side by side.
FAILING_SECOND = {
    **TINY, "threads": 1,
    "grid": {"models": [{"name": "tuple", "head": "tuple_original",
                         "architecture": {"type": "fcn", "widths": [32], "activation": "linear"}}],
             "training": {"optimizer": "sgd", "learning_rate": [0.001, 10.0, 0.002, 0.003], "epochs": 3}},
}


def _trials(results: Path) -> dict[float, dict]:
    """(backend, learning rate) -> what each trial left: status, outputs, history, worker."""
    found = {}
    for record in read_index(results / "tiny").values():
        run_dir = results / "tiny" / "trials" / record["trial_id"]
        entry = {"status": record["status"], "error": record["error"]}
        if record["status"] == "completed":
            predictions = np.load(run_dir / "predictions.npz")
            entry.update(outputs=predictions["outputs"], metrics=json.loads((run_dir / "metrics.json").read_text()),
                         losses=(run_dir / "history.csv").read_text().splitlines()[1:],
                         worker=json.loads((run_dir / "env.json").read_text())["worker"],
                         log=(run_dir / "log.txt").read_text())
        found[(record["backend"], record["config"]["training"]["learning_rate"])] = entry
    return found


def _curves(history_rows: list[str], backend: str) -> list[list[str]]:
    """Each epoch's training loss, validation loss and validation accuracies.

    Not TFLearn's logged training loss and accuracy: TFLearn reads them from a summary
    evaluated in the same ``session.run`` as the weight update, and two fresh processes
    on one trial already disagree on them now and then (its weights, validation loss and
    outputs never differ)."""
    columns = (0, 3, 7, 8, 9) if backend == "tflearn" else (0, 1, 2, 3, 7, 8, 9)
    return [[row.split(",")[i] for i in columns] for row in history_rows]


def test_reused_workers_give_a_fresh_process_results_and_a_failure_touches_no_other_trial(tmp_path):
    cache = str(tmp_path / "cache")
    # The reference: the trials that train, each in a fresh process (a trial's id is its
    # config and data, so the same trials get the same ids in both results folders).
    # Not lr 0.002: it is the first trial of a new worker, which starts as a fresh process does.
    without_failure = {**FAILING_SECOND, "exclude": [{"training": {"learning_rate": 10.0}},
                                                     {"training": {"learning_rate": 0.002}}]}
    result = harness_cli("run", write(tmp_path, without_failure, "fresh.yaml"), "--results", tmp_path / "fresh",
                         "--no-report", "--fresh-process", "--workers", "2", cache=cache)
    assert result.returncode == 0, result.stderr[-2000:]
    # Reused: one slot, so the order is known: keras 0.001, 10 (fails), 0.002, 0.003, then
    # the same for tflearn.
    result = harness_cli("run", write(tmp_path, FAILING_SECOND), "--results", tmp_path / "reused", "--no-report",
                         "--workers", "1", cache=cache)
    assert result.returncode == 1, result.stderr[-2000:]    # the lr-10 trials failed
    fresh, reused = _trials(tmp_path / "fresh"), _trials(tmp_path / "reused")
    assert set(reused) - set(fresh) == {(b, lr) for b in ("keras", "tflearn") for lr in (10.0, 0.002)}
    assert len(fresh) == 4
    for backend in ("keras", "tflearn"):
        failed = reused[(backend, 10.0)]
        assert failed["status"] == "failed"
        assert "loss is nan" in failed["error"].lower() or "loss is inf" in failed["error"].lower()
        rest = [reused[(backend, lr)] for lr in (0.001, 0.002, 0.003)]
        assert all(trial["status"] == "completed" for trial in rest)
        # lr 0.003 came second on the worker started after the failure (its arrays in memory):
        # the case a fresh process is compared with.
        assert rest[2]["worker"]["trial"] == 2
        for lr, trial in ((0.001, rest[0]), (0.003, rest[2])):
            reference = fresh[(backend, lr)]
            # Bit-identical: every output, every epoch's losses and validation accuracies.
            assert np.array_equal(trial["outputs"], reference["outputs"]), (backend, lr)
            assert _curves(trial["losses"], backend) == _curves(reference["losses"], backend), (backend, lr)
            assert {k: v for k, v in trial["metrics"].items() if "second" not in k} == \
                   {k: v for k, v in reference["metrics"].items() if "second" not in k}
            assert reference["worker"]["trial"] == 1
        # In the reused run: the trial before the failure shared its worker with it, so
        # the failure came second; the two after it shared a new worker.
        before, after = rest[0], rest[1:]
        assert before["worker"]["trial"] == 1
        assert after[0]["worker"]["pid"] == after[1]["worker"]["pid"] != before["worker"]["pid"]
        assert sorted(t["worker"]["trial"] for t in after) == [1, 2]
        second = max(after, key=lambda t: t["worker"]["trial"])
        assert "(in memory from the previous trial)" in second["log"]


def _serve_workers(pid: int) -> list[int]:
    ps = subprocess.run(["ps", "-eo", "pid,ppid,args"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in ps.splitlines()[1:]
            if int(line.split()[1]) == pid and "backends.worker serve" in line]


def test_a_worker_killed_mid_trial_fails_that_trial_only_and_workers_are_recycled(tmp_path):
    # The second trial trains long enough to be killed (as the kernel's OOM killer would).
    experiment = {**TINY, "backends": ["keras"], "threads": 1,
                  "grid": {**TINY["grid"], "training": {"epochs": [2, 400, 3, 4, 5], "batch_size": 32}}}
    path, results = write(tmp_path, experiment), tmp_path / "r"
    runner = subprocess.Popen([sys.executable, "-m", "harness", "run", str(path), "--results", str(results),
                               "--no-report", "--worker-trials", "2"],
                              cwd=ROOT, env={**os.environ, "HARNESS_CACHE": str(tmp_path / "cache")},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    trials = results / "tiny" / "trials"

    def long_trial_training():
        for run_dir in trials.glob("*"):
            log = run_dir / "log.txt"   # written by the worker, after the runner wrote the config
            if log.is_file() and read_config(run_dir).training.epochs == 400 and "Epoch 2/400" in log.read_text():
                return run_dir
        return None

    long_trial = wait_for(long_trial_training, timeout=300, what="the long trial to train")
    (worker,) = _serve_workers(runner.pid)
    os.kill(worker, signal.SIGKILL)
    _, stderr = runner.communicate(timeout=600)
    assert runner.returncode == 1, stderr[-2000:]
    records = {r["config"]["training"]["epochs"]: r for r in read_index(results / "tiny").values()}
    assert records[400]["status"] == "failed" and "killed by signal 9" in records[400]["error"]
    assert records[400]["trial_id"] == long_trial.name
    assert all(records[e]["status"] == "completed" for e in (2, 3, 4, 5))
    workers = {e: json.loads((trials / records[e]["trial_id"] / "env.json").read_text())["worker"]
               for e in (2, 3, 4, 5)}
    # After the kill a new worker took the next two trials, then was retired (--worker-trials 2).
    assert workers[2]["pid"] != workers[3]["pid"] == workers[4]["pid"] != workers[5]["pid"]
    assert [workers[e]["trial"] for e in (2, 3, 4, 5)] == [1, 1, 2, 1]

    # One slot, on a finished trial's folder: a time limit kills the worker and fails the
    # trial; the next trial gets a new worker; a memory ceiling retires it after each trial.
    run_dir = str(trials / records[2]["trial_id"])
    slot = WorkerSlot(Reuse(max_memory_mb=1.0), memory_ceiling=1.0)
    job = Job("t", run_dir, 0.5, 1, "keras", "d")
    timed_out = slot.run(job)
    assert timed_out.returncode is None and slot.worker is None
    pids = []
    for _ in range(2):
        assert slot.run(Job("t", run_dir, 300, 1, "keras", "d")).returncode == 0
        assert slot.worker is None                       # above the ceiling: retired
        pids.append(json.loads(Path(run_dir, "env.json").read_text())["worker"]["pid"])
    assert pids[0] != pids[1]
    assert not _serve_workers(os.getpid())


def test_a_slot_prefers_the_worker_and_data_it_has():
    jobs = [Job("a", "", 1, 2, "tflearn", "r0"), Job("b", "", 1, 2, "keras", "r1"),
            Job("c", "", 1, 1, "keras", "r0"), Job("d", "", 1, 2, "keras", "r0")]
    queue = JobQueue(jobs)
    assert queue.take(("keras", 2), "r0").key == "d"       # same worker, same data
    assert queue.take(("keras", 2), "r0").key == "b"       # same worker
    assert queue.take(("keras", 3), "r0").key == "a"       # no worker like it: the first
    assert queue.take().key == "c" and queue.take() is None
