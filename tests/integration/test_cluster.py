"""The recycle flow on a real two-node Ray cluster (``tests/cluster.py``): replicas spread over the
nodes, the summary names the node of each shard, and a worker node killed in the middle of a stage
(its raylet, SIGKILL) costs no row and duplicates none: the tables equal a clean run's.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.store import Store
from tests.cluster import RayCluster
from tests.prefect_home import seeded
from tests.tables import recycle_tables, run_row

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PAIRS = 8


def _input(path: Path) -> Path:
    rows = (ROOT / "data" / "demo_sample.jsonl").read_text().splitlines()[:PAIRS]
    path.write_text("\n".join(rows) + "\n")
    return path


def _config(path: Path, model: Path, address: str) -> Path:
    role = {"spec": f"hf:{model}", "replicas": 2, "spread": True, "num_cpus": 1}
    params = {"teacher": role, "student": role, "ray_address": address, "shard_size": 2, "constrained": False,
              "sampling": {"max_tokens": 8}}  # fmt: skip
    path.write_text(json.dumps(params))
    return path


def _flow(cluster: RayCluster, tmp: Path, model: Path, store: Path, run_id: str) -> subprocess.Popen[str]:
    config = _config(tmp / "params.json", model, cluster.address)
    cmd = [sys.executable, "-m", "flows.cli", "run", "recycle", "-i", str(_input(tmp / "in.jsonl")),
           "-s", str(store), "--run-id", run_id, "--config", str(config)]  # fmt: skip
    env = dict(cluster.env(), PREFECT_HOME=str(seeded(tmp / "prefect")), HF_HUB_OFFLINE="1")
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    return out + err


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RayCluster]:
    ray = RayCluster(tmp_path).start_head(cpus=2)
    try:
        ray.add_worker("worker1", cpus=2)
        yield ray
    finally:
        ray.stop()


def _nodes(store: Path, run_id: str) -> list[list[str]]:
    (shards,) = run_row(store, run_id, "shards_json")
    return [s["nodes"] for s in json.loads(shards)]


def test_a_killed_worker_node_costs_no_row_and_duplicates_none(
    cluster: RayCluster, tiny_model_path: Path, tmp_path: Path
) -> None:
    store = tmp_path / "factory"
    clean_out = _finish(_flow(cluster, tmp_path, tiny_model_path, store, "clean"))
    # Two replicas, spread: both nodes computed shards, and the summary says which.
    assert len({node for nodes in _nodes(store, "clean") for node in nodes}) == 2
    # One line per node: "node 0123456789ab | 3 shards" (a table cell each side of a border).
    assert len(re.findall(r"node [0-9a-f]{12}\W+\d+ shards", clean_out)) == 2, clean_out

    faulty = _flow(cluster, tmp_path, tiny_model_path, store, "faulty")
    deadline = time.monotonic() + 300
    while not _committed_shards(store, "faulty"):  # the first shard of the first stage is in: mid-stage
        assert faulty.poll() is None and time.monotonic() < deadline, faulty.communicate()[1][-3000:]
        time.sleep(0.2)
    cluster.node("worker1").kill_raylet()
    out = _finish(faulty)
    assert "Traceback" not in out
    # The worker's replica was restarted on the node that remained, and every shard completed.
    assert recycle_tables(store, "faulty") == recycle_tables(store, "clean")
    t = recycle_tables(store, "faulty")
    assert t["duplicates"] == {"scores": 0, "reflections": 0}
    assert t["counts"]["selected"] == PAIRS  # type: ignore[index]


def _committed_shards(store: Path, run_id: str) -> int:
    st = Store(str(store))
    if not st.exists("reflections"):
        return 0
    return int(
        st.sql(f"SELECT count(DISTINCT shard_key) FROM reflections WHERE run_id = '{run_id}'").fetchall()[0][
            0
        ]
    )
