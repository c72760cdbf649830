"""A recycle run with an API teacher at a provider's prices and limits, end to end.

The teacher is ``tests.teacher_server``: OpenAI's protocol over real HTTP, its per-minute limits
stated only in ``x-ratelimit-*`` headers, 429 past them. The student is the tiny local model. Two
teacher replicas share one rate limiter (a named Ray actor), so together they keep to the limit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from storage.store import Store
from tests.cli import reflectory
from tests.integration.test_recycle_flow import write_input
from tests.tables import run_row
from tests.teacher_server import teacher_server

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("paid_teacher")]

PAIRS = 6


def recycle(inp: Path, store: Path, url: str, student: Path, run_id: str, *extra: str) -> list[str]:
    return [
        "run", "recycle", "-i", str(inp), "-s", str(store), "--teacher", f"openai:teacher@{url}",
        "--teacher-replicas", "2", "--student", f"hf:{student}", "--run-id", run_id,
        "--shard-size", "2", "--max-tokens", "96", *extra,
    ]  # fmt: skip


def statuses(store: Path, run_id: str) -> dict[str, int]:
    rows = Store(str(store)).sql(
        "SELECT parse_status, count(*) FROM reflections WHERE run_id = ? GROUP BY 1", params=[run_id]
    )
    return dict(rows.fetchall())


def test_two_replicas_under_a_per_minute_limit_lose_no_pair(tmp_path: Path, tiny_model_path: Path) -> None:
    inp = write_input(tmp_path / "in.jsonl", n=PAIRS)
    store = tmp_path / "factory"
    # 30,000 tokens a minute (500 a second), nearly all spent when the run starts.
    with teacher_server(rpm=10_000, tpm=30_000, full=0.02) as server:
        out = reflectory(*recycle(inp, store, server.url, tiny_model_path, "limited"))
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        answered = sorted(server.answered, key=lambda a: a["at"])
    assert statuses(store, "limited") == {"ok": 3 * PAIRS}  # every request answered: none lost to a 429
    decided = Store(str(store)).sql("SELECT count(*) FROM selected WHERE run_id = 'limited'").fetchall()
    assert decided == [(PAIRS,)]
    assert server.throttled <= 3, server.throttled
    # The limit sets the pace: tokens past the first 2% took their refill time, and not much more.
    refill_s = (sum(a["counted"] for a in answered) - 600) / 500
    span = answered[-1]["at"] - answered[0]["at"]
    assert 0.8 * refill_s <= span <= 1.6 * refill_s + 5, (span, refill_s)
    (cost,) = run_row(store, "limited", "cost_json")
    assert json.loads(cost)["prompt_tokens"] == sum(a["prompt_tokens"] for a in answered)
