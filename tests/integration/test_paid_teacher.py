"""A recycle run with an API teacher at a provider's prices and limits, end to end.

The teacher is ``tests.teacher_server``: OpenAI's protocol over real HTTP, its per-minute limits
stated only in ``x-ratelimit-*`` headers, 429 past them. The student is the tiny local model. Two
teacher replicas share one rate limiter (a named Ray actor), so together they keep to the limit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from storage.store import Store
from tests.cli import reflectory
from tests.integration.test_recycle_flow import write_input
from tests.tables import run_row
from tests.teacher_server import TeacherServer, teacher_server

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


@dataclass
class Limited:
    inp: Path
    store: Path
    server: TeacherServer
    stdout: str


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Iterator[Limited]:
    """One run through two teacher replicas under a per-minute limit: 30,000 tokens a minute (500 a
    second), nearly all spent when the run's first request comes."""
    tmp = tmp_path_factory.mktemp("paid")
    inp = write_input(tmp / "in.jsonl", n=PAIRS)
    store = tmp / "factory"
    with teacher_server(rpm=10_000, tpm=30_000, full=0.02) as server:
        out = reflectory(*recycle(inp, store, server.url, tiny_model_path, "limited"))
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        yield Limited(inp, store, server, out.stdout)


def test_two_replicas_under_a_per_minute_limit_lose_no_pair(limited: Limited) -> None:
    store, server = limited.store, limited.server
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
    # What the limits did is in the summary and the runs row: learned, waited on, answered 429.
    (counts,) = run_row(store, "limited", "counts_json")
    [limits] = json.loads(counts)["limits"].values()
    assert limits["limits"] == {"requests": 10_000, "tokens": 30_000}
    assert limits["waited_s"]["tokens"] > 0.5 * refill_s
    assert sum(limits["throttled"].values()) == server.throttled
    assert "limits openai:teacher" in limited.stdout and "s on tokens" in limited.stdout


def test_another_student_reuses_the_teacher_pass(limited: Limited, tiny_model_path: Path) -> None:
    """Selective Reflection-Tuning's student selects: a second student over the same pairs, in a run of
    another id, is served by the stored replies and sends the teacher nothing."""
    server = limited.server
    before = len(server.answered)
    other = [
        "--student-option",
        "chat_template=alpaca",
        "--teacher-price",
        "input=2",
        "--teacher-price",
        "output=8",
    ]
    out = reflectory(*recycle(limited.inp, limited.store, server.url, tiny_model_path, "second", *other))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert len(server.answered) == before  # no teacher request
    st = Store(str(limited.store))
    decided = st.sql("SELECT student, count(*) FROM selected WHERE run_id = 'second' GROUP BY 1").fetchall()
    assert decided == [(f"hf:{tiny_model_path}", PAIRS)]
    reused = st.sql("SELECT DISTINCT reply_from FROM reflections WHERE run_id = 'second'").fetchall()
    assert reused == [("limited",)]
    (cost_json,) = run_row(st, "second", "cost_json")
    cost = json.loads(cost_json)
    assert (cost["requests"], cost["reused"], cost["prompt_tokens"]) == (0, 3 * PAIRS, 0)
    first = json.loads(run_row(st, "limited", "cost_json")[0])
    saved = (first["prompt_tokens"] * 2 + first["completion_tokens"] * 8) / 1e6
    assert cost["saved"] == pytest.approx(saved) and cost["total"] == 0
    assert "replies reused" in out.stdout and f"{3 * PAIRS} of {3 * PAIRS}" in out.stdout
    page = (limited.store / "reports" / "report-second.html").read_text()
    assert "replies reused" in page and "cost saved by reuse" in page
    # --fresh-replies asks again.
    again = reflectory(
        *recycle(limited.inp, limited.store, server.url, tiny_model_path, "fresh", "--fresh-replies")
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert len(server.answered) == before + 3 * PAIRS


def test_a_budget_shared_by_two_replicas_holds_and_a_rerun_finishes(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    inp = write_input(tmp_path / "in.jsonl", n=PAIRS)
    store = tmp_path / "factory"
    with teacher_server() as server:
        budget = 3000
        out = reflectory(
            *recycle(inp, store, server.url, tiny_model_path, "budget", "-T", f"token_budget={budget}")
        )
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        served = server.tokens_served()
        assert 0 < served <= budget
        assert "stopped: the token budget of 3,000 tokens ran out" in out.stderr
        status, cause = run_row(store, "budget", "status", "cause")
        assert status == "stopped" and "token budget of 3,000 tokens" in cause
        asked = len(server.answered)
        # A larger budget: only what was not answered is sent, and every pair is decided.
        out = reflectory(
            *recycle(inp, store, server.url, tiny_model_path, "budget", "-T", "token_budget=1000000")
        )
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert server.answered_twice() == 0
        assert len(server.answered) == 3 * PAIRS > asked
    assert run_row(store, "budget", "status") == ("completed",)
    decided = Store(str(store)).sql("SELECT count(*) FROM selected WHERE run_id = 'budget'").fetchall()
    assert decided == [(PAIRS,)]


def test_a_cost_budget_stops_the_run_at_the_teachers_prices(tmp_path: Path, tiny_model_path: Path) -> None:
    inp = write_input(tmp_path / "in.jsonl", n=PAIRS)
    priced = ["--teacher-price", "input=100", "--teacher-price", "output=100", "--max-cost", "0.25"]
    with teacher_server() as server:
        out = reflectory(*recycle(inp, tmp_path / "factory", server.url, tiny_model_path, "capped", *priced))
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert 0 < server.tokens_served() <= 2500  # $0.25 at $100 per 1M tokens
    assert "stopped: the cost budget of $0.25 ran out" in out.stderr
