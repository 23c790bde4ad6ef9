"""The Ray executor on a real two-node cluster (Ray's own ``cluster_utils.Cluster``, two
raylets on this machine): trials spread over both nodes, a killed driver resumes, and a
node lost mid-grid neither hangs the grid nor loses a trial."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.runs.index import read_index
from tests.helpers.experiments import TINY, harness_cli, write

ROOT = Path(__file__).resolve().parents[2]
# Three one-thread trials: with one CPU per node, two run at once, one on each node.
GRID = {**TINY, "backends": ["keras"], "threads": 1,
        "grid": {**TINY["grid"], "training": {"epochs": [1, 2, 3], "batch_size": 32}}}


def _cluster(nodes: int):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    extra = [cluster.add_node(num_cpus=1) for _ in range(nodes - 1)]
    cluster.wait_for_nodes()
    return cluster, extra


@pytest.fixture
def two_nodes():
    cluster, (second,) = _cluster(2)
    yield cluster, second
    cluster.shutdown()


def _run(path, results, address, cache):
    return subprocess.Popen([sys.executable, "-m", "harness", "run", str(path), "--results", str(results),
                             "--executor", "ray", "--ray-address", address, "--no-report"],
                            cwd=ROOT, env={**os.environ, "HARNESS_CACHE": str(cache)}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, what: str, seconds: float = 300):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _completed(results: Path) -> list[str]:
    lines = [json.loads(line) for line in (results / "tiny" / "index.jsonl").read_text().splitlines()]
    return [r["trial_id"] for r in lines if r["status"] == "completed"]


def test_trials_spread_over_both_nodes_and_a_killed_driver_resumes(two_nodes, tmp_path):
    cluster, _ = two_nodes
    path, results, cache = write(tmp_path, GRID), tmp_path / "r", tmp_path / "cache"
    driver = _run(path, results, cluster.address, cache)
    trials = results / "tiny" / "trials"
    _wait_for(lambda: list(trials.glob("*/DONE")), "a first trial")
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    first_done = {d.parent.name: d.stat().st_mtime_ns for d in trials.glob("*/DONE")}
    again = harness_cli("run", path, "--results", results, "--executor", "ray", "--ray-address", cluster.address,
                        "--no-report", cache=str(cache))
    assert again.returncode == 0, again.stderr[-3000:]
    completed = _completed(results)
    assert len(completed) == len(set(completed)) == 3             # each trial exactly once
    for trial_id, mtime in first_done.items():
        assert (trials / trial_id / "DONE").stat().st_mtime_ns == mtime, "a finished trial ran again"
    nodes = {json.loads(p.read_text()).get("ray_node_id") for p in trials.glob("*/env.json")}
    assert len(nodes) == 2 and None not in nodes, nodes


def test_a_node_lost_mid_grid_has_its_trials_run_again_elsewhere(two_nodes, tmp_path):
    cluster, second = two_nodes
    path, results, cache = write(tmp_path, GRID), tmp_path / "r", tmp_path / "cache"
    driver = _run(path, results, cluster.address, cache)
    trials = results / "tiny" / "trials"
    # Two trials training at once: one of them is on the second node.
    _wait_for(lambda: sum((d / "log.txt").is_file() and not (d / "DONE").exists() for d in trials.glob("*")) >= 2,
              "two trials training at once")
    cluster.remove_node(second, allow_graceful=False)
    try:
        _, stderr = driver.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(driver.pid, signal.SIGKILL)
        pytest.fail("the grid hung after losing a node")
    assert driver.returncode == 0, stderr[-3000:]
    records = read_index(results / "tiny")
    assert len(records) == 3 and {r["status"] for r in records.values()} == {"completed"}
    # The trial that was on the lost node started twice (Ray retried it), and finished.
    starts = [(d / "log.txt").read_text().count(" backend=keras ") for d in trials.glob("*")]
    assert max(starts) == 2, starts
    nodes = {json.loads(p.read_text()).get("ray_node_id") for p in trials.glob("*/env.json")}
    assert cluster.head_node.node_id in nodes and None not in nodes, nodes
