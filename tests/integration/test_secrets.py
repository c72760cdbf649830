"""A recycle run whose teacher is an OpenAI-style server reached with an API key and priced per
token, and whose last stage pushes to a Hub with a token:

- tokens never land anywhere: neither secret is in its logs, its output, its tables, its report page,
  its dataset card or Prefect's artifacts and logs (the run's Prefect home, where its API keeps them,
  is scanned byte for byte);
- its cost is the teacher's tokens times its prices (a run without prices shows no cost:
  ``tests/integration/test_recycle_flow.py`` checks its clean run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from storage.store import Store
from tests.hub_server import HubServer
from tests.integration.conftest import ROOT, prefect_env
from tests.tables import run_row

pytestmark = pytest.mark.slow

API_KEY = "sk-reflectoryTestKey-8d1e0b7c55"
HUB_TOKEN = "hf_reflectoryFlowToken_51c0e9aa"


@dataclass(frozen=True)
class PricedRun:
    tmp: Path
    out: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def priced_run(
    vllm_server: str, tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> PricedRun:
    """The run, with its secrets in its environment and its teacher's prices as flags."""
    tmp_path = tmp_path_factory.mktemp("secrets")
    rows = [json.loads(x) for x in (ROOT / "data" / "demo_sample.jsonl").read_text().splitlines()[:2]]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    teacher = {"spec": f"openai:tiny@{vllm_server}", "options": {"tokenizer": str(tiny_model_path),
               "api_key_env": "REFLECTORY_TEST_KEY"}}  # fmt: skip
    export = {"repo": "org/secret-check", "curation": {"require": {}}, "plots": True}  # every row goes
    config = {"teacher": teacher, "student": f"hf:{tiny_model_path}", "constrained": False,
              "sampling": {"max_tokens": 8}, "export": export}  # fmt: skip
    (tmp_path / "params.json").write_text(json.dumps(config))
    with HubServer(tmp_path / "hub", HUB_TOKEN) as hub:
        env = {
            k: v
            for k, v in prefect_env(tmp_path / "home").items()
            if not k.startswith(("HF_", "HUGGINGFACE"))
        }
        env.update(
            REFLECTORY_TEST_KEY=API_KEY, HF_TOKEN=HUB_TOKEN, HF_ENDPOINT=hub.url,
            HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1",
            PREFECT_LOGGING_LEVEL="DEBUG", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
        )  # fmt: skip
        cmd = [sys.executable, "-m", "flows.cli", "run", "recycle", "-i", str(tmp_path / "in.jsonl"),
               "-s", str(tmp_path / "factory"), "--run-id", "secret",
               "--config", str(tmp_path / "params.json"),
               "--teacher-price", "input=1.5", "--teacher-price", "output=4"]  # fmt: skip
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return PricedRun(tmp_path, out)


def test_secrets_reach_no_log_table_report_card_or_artifact(priced_run: PricedRun) -> None:
    tmp_path, out = priced_run.tmp, priced_run.out
    for secret in (API_KEY, HUB_TOKEN):
        assert secret not in out.stdout and secret not in out.stderr
    scanned = {"report": 0, "store": 0, "prefect": 0, "hub": 0}
    for path in tmp_path.rglob("*"):
        if not path.is_file() or path.name == "params.json":
            continue
        data = path.read_bytes()
        for secret in (API_KEY, HUB_TOKEN):
            assert secret.encode() not in data, f"a secret was written to {path}"
        rel = path.relative_to(tmp_path).parts[0]
        key = {"factory": "store", "home": "prefect", "hub": "hub"}.get(rel)
        if path.suffix == ".html":
            scanned["report"] += 1
        elif key:
            scanned[key] += 1
    # Every place was really looked at: the report page, the tables, Prefect's database, the pushed card.
    assert (
        scanned["report"] >= 1 and scanned["store"] > 5 and scanned["prefect"] >= 1 and scanned["hub"] >= 1
    ), scanned
    reports = list((tmp_path / "factory" / "reports").glob("*.html"))
    assert reports and "secret" in reports[0].name
    assert (
        os.path.getsize(next((tmp_path / "home").rglob("*.db"))) > 0
    )  # the API's store of artifacts and logs


def test_cost_is_the_tokens_times_the_prices(priced_run: PricedRun) -> None:
    store = Store(str(priced_run.tmp / "factory"))
    [(p, c)] = store.sql(
        "SELECT sum(prompt_tokens), sum(completion_tokens) FROM reflections WHERE run_id = 'secret'"
    ).fetchall()
    assert p > 0 and c > 0
    (cost_json,) = run_row(store, "secret", "cost_json")
    cost = json.loads(cost_json)
    assert cost["total"] == pytest.approx(p * 1.5 / 1e6 + c * 4 / 1e6)
    # The student (a local replica) had no price: the total is the teacher's, and says it leaves it out.
    assert not cost["priced"] and [s["cost"] for s in cost["stages"] if s["role"] == "student"] == [None]
    assert "cost" in priced_run.out.stdout and "$" in priced_run.out.stdout
