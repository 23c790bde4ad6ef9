"""Interrupts with real signals: Ctrl-C and SIGTERM stop a run within seconds, kill -9
during the cache build leaves no orphan and no staging folder for good."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.data import cache
from harness.data.images import Preprocessing
from harness.processes import WORKER_MODULE
from tests.conftest import UTKFACE
from tests.helpers.experiments import TINY, write
from tests.helpers.processes import descendants, processes_mentioning, wait_for

ROOT = Path(__file__).resolve().parents[2]


def start_runner(path, results, cache_dir) -> subprocess.Popen:
    env = {**os.environ, "HARNESS_CACHE": str(cache_dir)}
    # Its own session, like a shell job: the test can signal its whole group as a
    # terminal's Ctrl-C does.
    return subprocess.Popen([sys.executable, "-m", "harness", "run", str(path), "--results", str(results)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def alive(pids) -> set[int]:
    survivors = set()
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
        if state != "Z":
            survivors.add(pid)
    return survivors


@pytest.mark.parametrize("how,code", [("ctrl-c", 130), ("sigterm", 143)])
def test_the_first_signal_stops_the_run_within_seconds(tmp_path, how, code):
    experiment = {**TINY, "backends": ["keras"],
                  "grid": {**TINY["grid"], "training": {"epochs": [40, 41, 42], "batch_size": 8}}}
    results = tmp_path / "r"
    runner = start_runner(write(tmp_path, experiment), results, tmp_path / "cache")
    trials = results / "tiny" / "trials"
    wait_for(lambda: list(trials.glob("*/history.csv.partial")) or list(trials.glob("*/log.txt")),
             what="a trial to start")
    workers = wait_for(lambda: [line for line in processes_mentioning(WORKER_MODULE)
                                if int(line.split()[0]) in descendants(runner.pid)], what="its worker process")
    time.sleep(1)
    family = descendants(runner.pid)
    if how == "ctrl-c":
        os.killpg(runner.pid, signal.SIGINT)     # what a terminal sends: the whole group
    else:
        runner.send_signal(signal.SIGTERM)
    # Without the fix it trained the whole queue (minutes); a hang past this is a failure,
    # not a measurement (no timed assertions on shared machines).
    stdout, stderr = runner.communicate(timeout=60)
    assert runner.returncode == code, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert stderr.count("Run the same command again to resume") == 1
    time.sleep(0.5)
    assert not alive(family), f"left behind: {alive(family)} (workers were {workers})"
    # Nothing was recorded for the stopped trials, and none of them looks finished.
    index = results / "tiny" / "index.jsonl"
    assert not index.exists() or not index.read_text().strip()
    assert not list(trials.glob("*/DONE"))


def test_kill_9_during_the_cache_build_leaves_no_orphan_and_no_staging_folder(tmp_path):
    experiment = {**TINY, "data": {"dataset": "utkface", "path": str(UTKFACE), "limit": 6000},
                  "preprocessing": {"size": 48}}
    cache_dir = tmp_path / "cache"
    runner = start_runner(write(tmp_path, experiment), tmp_path / "r", cache_dir)
    staging = wait_for(lambda: list(cache_dir.glob("*.building-*")), what="the cache build to start")
    children = wait_for(lambda: descendants(runner.pid), what="the cache workers")
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    time.sleep(1)
    assert not alive(children), "cache workers outlived the killed runner"
    assert all(path.exists() for path in staging)   # what the next build must clean up
    # The next build in the same cache (of any images) removes the dead build's staging.
    paths = sorted(UTKFACE.iterdir())[:3]
    cache.build([p.name for p in paths], paths, Preprocessing(size=16), cache_dir=cache_dir)
    assert not list(cache_dir.glob("*.building-*"))
    assert json.loads(next(cache_dir.glob("*/index.json")).read_text())["ids"]


def test_a_staging_folder_of_a_live_build_is_left_alone(tmp_path):
    live = tmp_path / f"abc.building-{os.getpid()}-x"
    dead = tmp_path / "abc.building-999999999-y"
    live.mkdir()
    dead.mkdir()
    assert cache.remove_stale_staging(tmp_path) == [dead]
    assert live.exists() and not dead.exists()
