"""Scheduling for real: a Prefect server, ``reflectory serve`` registering deployments, and a run
triggered through the Prefect API that completes with the parameters it was given. The work-pool
route (``infra/prefect.yaml``, a process worker) is ``test_worker_route.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from storage.store import Store
from tests.integration.conftest import PREFECT_AUTH, PREFECT_AUTH_STRING
from tests.integration.conftest import prefect_env as _env
from tests.integration.conftest import stop_group as _stop
from tests.tables import run_row

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


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
        r = httpx.get(f"{api}/deployments/name/{flow}/{deployment}", timeout=5, auth=PREFECT_AUTH)
        if r.status_code == 200:
            return dict(r.json())
        assert time.monotonic() < deadline, f"deployment {name} not registered in {timeout_s} s"
        time.sleep(1)


def test_a_served_deployment_runs_when_triggered_through_the_api(
    prefect_api: str, tmp_path: Path, tiny_model_path: Path
) -> None:
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

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
        with temporary_settings({PREFECT_API_URL: prefect_api, PREFECT_API_AUTH_STRING: PREFECT_AUTH_STRING}):
            run = run_deployment("recycle/tiny", parameters={"params": given}, timeout=420)
        assert run.state is not None and run.state.is_completed(), (run.state, log.read_text()[-3000:])
        assert run.parameters["params"]["run_id"] == "triggered"
        store = Store(str(tmp_path / "factory"))
        assert store.sql("SELECT count(*) FROM selected WHERE run_id = 'triggered'").fetchall() == [(2,)]
        assert run_row(store, "triggered", "status") == ("completed",)
    finally:
        _stop(serve)  # before the server: a serve process whose server is gone can hang on SIGTERM
