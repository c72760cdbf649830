"""The teacher through OpenAI's Batch API (``-T batch=true``) against ``tests.teacher_server``:
files and batches over real HTTP with the official client, a ledger in the store, requests the
server fails sent again, and a run SIGKILLed after its first batch is created resumed by its run id
without a request answered twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra.engines.batch import BATCH_FAILED, BatchEngine
from storage.batches import StoreBatches
from storage.store import Store
from tasks.batches import BatchEntry
from tasks.engine import ChatRequest, ModelRole, Sampling
from tests.cli import reflectory
from tests.integration.test_recycle_flow import ROOT, env, write_input
from tests.tables import run_row
from tests.teacher_server import teacher_server

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("paid_teacher")]

PAIRS = 4
SAMPLING = Sampling(max_tokens=20, temperature=0.0)


class MemoryLedger:
    def __init__(self) -> None:
        self.rows: list[BatchEntry] = []

    def latest(self, key: str) -> BatchEntry | None:
        return next((e for e in reversed(self.rows) if e.key == key), None)

    def write(self, entry: BatchEntry) -> None:
        self.rows.append(entry)


def role(url: str, **options: object) -> ModelRole:
    return ModelRole(spec=f"openai:teacher@{url}", options={"batch": True, "batch_poll_s": 0.05, **options})


def test_failed_requests_of_a_batch_are_sent_again_and_the_ledger_follows_every_state() -> None:
    with teacher_server(batch_step_s=0.1, batch_fail_every=3) as server:
        ledger = MemoryLedger()
        engine = BatchEngine(role(server.url), ledger, "r1")
        requests = [ChatRequest.user(f"Question {i}: what colour is the sky?") for i in range(10)]
        out = engine.generate(requests, SAMPLING)
        assert [c.error for c in out] == [None] * 10
        assert len(server.batch_failed) == 3 and server.answered_twice() == 0
        assert server.uploads == 2  # the batch, then one of the 3 requests it failed
        states = [e.state for e in ledger.rows if e.attempt == 1]
        assert states[0] == "uploading" and "finalizing" in states and states[-1] == "completed"
        # The same requests again (a rerun): found in the ledger, nothing uploaded or answered again.
        again = BatchEngine(role(server.url), ledger, "r1").generate(requests, SAMPLING)
        assert [c.text for c in again] == [c.text for c in out]
        assert server.uploads == 2 and len(server.answered) == 10


def test_a_batch_found_on_the_provider_is_not_created_again() -> None:
    """A kill between creating the batch and writing its id down: the rerun lists the provider's
    batches and finds it by the key in its metadata."""
    with teacher_server(batch_step_s=0.1) as server:
        requests = [ChatRequest.user(f"Question {i}") for i in range(3)]
        BatchEngine(role(server.url), MemoryLedger(), "r1").generate(requests, SAMPLING)
        out = BatchEngine(role(server.url), MemoryLedger(), "r1").generate(requests, SAMPLING)
        assert [c.error for c in out] == [None] * 3
        assert server.uploads == 1 and len(server.batches) == 1 and server.answered_twice() == 0


def test_requests_still_failing_after_every_attempt_fail_alone_with_the_reason() -> None:
    with teacher_server(batch_step_s=0.05, batch_fail_every=1) as server:
        engine = BatchEngine(role(server.url, batch_attempts=1), MemoryLedger(), "r1")
        [c] = engine.generate([ChatRequest.user("hi")], SAMPLING)
        assert c.error == f"{BATCH_FAILED}: server_error: The model had an error processing this request."


def test_a_killed_batch_run_resumes_by_its_run_id(tmp_path: Path, tiny_model_path: Path) -> None:
    inp = write_input(tmp_path / "in.jsonl", n=PAIRS)
    store = tmp_path / "factory"
    args = [
        "run", "recycle", "-i", str(inp), "-s", str(store), "--teacher", "", "-T", "batch=true",
        "-T", "batch_poll_s=0.2", "--student", f"hf:{tiny_model_path}", "--run-id", "batched",
        "--shard-size", "2", "--max-tokens", "96",
        "--teacher-price", "input=2", "--teacher-price", "output=8",
    ]  # fmt: skip
    with teacher_server(batch_step_s=0.5, batch_fail_every=2) as server:
        args[args.index("--teacher") + 1] = f"openai:teacher@{server.url}"
        cmd = [sys.executable, "-m", "flows.cli", *args]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env(tmp_path), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 240
        while not server.batches:
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "no batch was created"
            time.sleep(0.1)
        time.sleep(1.0)  # while its first batch is still going
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        created = len(server.batches)

        out = reflectory(*args)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert server.answered_twice() == 0  # no request answered twice
        assert server.batch_failed  # the server failed some requests; they were sent again
        keys = [b["metadata"]["reflectory_batch"] for b in server.batches.values()]
        assert len(keys) == len(set(keys)) and len(keys) > created  # no batch created twice
    st = Store(str(store))
    variants = st.sql(
        "SELECT source_id, count(DISTINCT variant) FROM scores WHERE run_id = 'batched' GROUP BY 1"
    ).fetchall()
    assert sorted(n for _, n in variants) == [4] * PAIRS  # every pair has ori, Q, A and QA
    assert run_row(st, "batched", "status") == ("completed",)
    # Batch prices are half the given ones (batch_discount 0.5).
    cost = json.loads(run_row(st, "batched", "cost_json")[0])
    assert cost["prompt_tokens"] > 0
    assert cost["total"] == pytest.approx((cost["prompt_tokens"] * 1 + cost["completion_tokens"] * 4) / 1e6)
    ledger = StoreBatches(st)
    assert all(ledger.latest(k).state == "completed" for k in keys)  # type: ignore[union-attr]
