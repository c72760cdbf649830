"""Scheduling for real: a Prefect server, ``reflectory serve`` registering deployments, a run
triggered through the Prefect API that completes with the parameters it was given, and the work-pool
deployments of ``infra/prefect.yaml`` registered with ``prefect deploy``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from storage.store import Store
from tests.integration.conftest import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _env(home: Path, api: str | None = None) -> dict[str, str]:
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        RAY_AUTH_MODE="disabled",
        OMP_WAIT_POLICY="PASSIVE",
        HF_HUB_OFFLINE="1",
    )
    if api:
        env["PREFECT_API_URL"] = api
    return env


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``prefect server start`` on a free loopback port, with a home of its own."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    log = home / "server.log"
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=_env(home), start_new_session=True, cwd=home
        )
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (
                "prefect server not ready in 120 s:\n" + log.read_text()[-3000:]
            )
            time.sleep(1)
        yield api
    finally:
        _stop(proc, signal.SIGTERM)


def _params(tmp_path: Path, model: Path, run_id: str | None = None) -> dict[str, object]:
    rows = (ROOT / "data" / "demo_sample.jsonl").read_text().splitlines()[:2]
    (tmp_path / "in.jsonl").write_text("\n".join(rows) + "\n")
    params: dict[str, object] = {
        "input": str(tmp_path / "in.jsonl"),
        "store": str(tmp_path / "factory"),
        "teacher": {"spec": f"hf:{model}"},
        "student": {"spec": f"hf:{model}"},
        "shard_size": 1,
        "sampling": {"max_tokens": 16},
        "constrained": False,  # 16 tokens hold no reply form: free text keeps the run short
    }
    if run_id:
        params["run_id"] = run_id
    return params


def _deployment(api: str, name: str, timeout_s: float = 120) -> dict[str, object]:
    """Wait for a deployment to be registered; return it as the API does."""
    flow, _, deployment = name.partition("/")
    deadline = time.monotonic() + timeout_s
    while True:
        r = httpx.get(f"{api}/deployments/name/{flow}/{deployment}", timeout=5)
        if r.status_code == 200:
            return dict(r.json())
        assert time.monotonic() < deadline, f"deployment {name} not registered in {timeout_s} s"
        time.sleep(1)


def test_a_served_deployment_runs_when_triggered_through_the_api(
    prefect_api: str, tmp_path: Path, tiny_model_path: Path
) -> None:
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    config = tmp_path / "deployments.yaml"
    config.write_text(
        json.dumps(
            {
                "deployments": [
                    {
                        "name": "tiny",
                        "flow": "recycle",
                        "cron": "0 3 * * *",
                        "parameters": _params(tmp_path, tiny_model_path),
                    }
                ]
            }
        )
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "serve", "--config", str(config)],
            stdout=out, stderr=subprocess.STDOUT, env=_env(tmp_path / "prefect", prefect_api),
            cwd=ROOT, start_new_session=True,
        )  # fmt: skip
    try:
        deployment = _deployment(prefect_api, "recycle/tiny")
        assert deployment["schedules"][0]["schedule"]["cron"] == "0 3 * * *"
        assert deployment["parameters"]["params"]["shard_size"] == 1

        given = _params(tmp_path, tiny_model_path, run_id="triggered")
        with temporary_settings({PREFECT_API_URL: prefect_api}):
            run = run_deployment("recycle/tiny", parameters={"params": given}, timeout=420)
        assert run.state is not None and run.state.is_completed(), (run.state, log.read_text()[-3000:])
        assert run.parameters["params"]["run_id"] == "triggered"
        store = Store(str(tmp_path / "factory"))
        assert store.sql("SELECT count(*) FROM selected WHERE run_id = 'triggered'").fetchall() == [(2,)]
        assert store.sql("SELECT status FROM runs WHERE run_id = 'triggered'").fetchall() == [("completed",)]
    finally:
        _stop(serve)  # before the server: a serve process whose server is gone can hang on SIGTERM


def test_prefect_yaml_registers_work_pool_deployments_without_schedules(
    prefect_api: str, tmp_path: Path
) -> None:
    env = _env(tmp_path / "prefect", prefect_api)

    def prefect(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "prefect", "--no-prompt", *args],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        return out.stdout

    prefect("work-pool", "create", "reflectory", "--type", "process", "--overwrite")
    prefect("deploy", "--all", "--prefect-file", "infra/prefect.yaml")
    for name in ("recycle/recycle", "traces/traces", "export/export"):
        deployment = _deployment(prefect_api, name, timeout_s=10)
        assert deployment["work_pool_name"] == "reflectory"
        assert deployment["schedules"] == []  # schedules belong to the UI on this route
        assert "store" in deployment["parameters"]["params"]
