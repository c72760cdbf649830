"""The openai engine under a provider's per-minute limits, stated only in x-ratelimit-* headers
(tests.teacher_server over real HTTP), and its token budget."""

from __future__ import annotations

import time

from infra.engines.openai_engine import BUDGET_EXHAUSTED, OpenAIEngine, OpenAIOptions
from tasks.engine import ChatRequest, Sampling
from tests.teacher_server import teacher_server

SAMPLING = Sampling(max_tokens=20, temperature=0.0)


def requests(n: int) -> list[ChatRequest]:
    # About 20 prompt tokens each on the server's count, plus max_tokens 20: ~50 counted tokens.
    return [ChatRequest.user(f"Question {i:03d}: what is the colour of a clear sky?") for i in range(n)]


def test_requests_wait_for_the_tokens_per_minute_instead_of_failing() -> None:
    # 24,000 tokens a minute (400 a second), nearly all spent by someone else when the run starts.
    with teacher_server(rpm=100_000, tpm=24_000, full=0.01) as server:
        engine = OpenAIEngine("teacher", server.url, OpenAIOptions(concurrency=16))
        t0 = time.monotonic()
        out = engine.generate(requests(60), SAMPLING)
        elapsed = time.monotonic() - t0
        assert [c.error for c in out] == [None] * 60
        over = server.counted_tokens() - 240  # what had to wait for the refill
        assert elapsed >= 0.85 * over / 400, (elapsed, over)  # never faster than the limit
        assert elapsed <= 1.5 * over / 400 + 1, (elapsed, over)  # and not much slower
        assert server.throttled <= 2
        snapshot = engine.limiter.snapshot()
        assert snapshot["limits"] == {"requests": 100_000, "tokens": 24_000}
        assert snapshot["waited_s"].get("tokens", 0) > 0


def test_429s_with_retry_after_slow_the_role_and_lose_nothing() -> None:
    # The options claim more than the server allows: the 429s it answers pause the role instead.
    with teacher_server(rpm=600, tpm=1_000_000, full=0.01, retry_after=True) as server:
        engine = OpenAIEngine("teacher", server.url, OpenAIOptions(concurrency=8, rpm=60_000))
        out = engine.generate(requests(40), SAMPLING)
        assert [c.error for c in out] == [None] * 40
        assert server.throttled > 0
        assert engine.throttled == server.throttled
        assert len(server.answered) == 40 and server.answered_twice() == 0
        assert engine.limiter.snapshot()["throttled"].get("requests", 0) == server.throttled


def test_a_token_budget_is_reserved_before_sending_and_never_overshot() -> None:
    from tasks.budget import prompt_tokens_at_most

    with teacher_server() as server:
        engine = OpenAIEngine("teacher", server.url, OpenAIOptions(concurrency=16, token_budget=700))
        batch = requests(40)
        out = engine.generate(batch, SAMPLING)
        sent = [c for c in out if c.error is None]
        refused = [c for c in out if c.error == f"{BUDGET_EXHAUSTED} (token budget of 700 tokens)"]
        assert sent and refused and len(sent) + len(refused) == 40
        assert server.tokens_served() <= 700
        # Refused only when even the bound of one more request no longer fits what is left.
        bound = max(prompt_tokens_at_most(r) for r in batch) + SAMPLING.max_tokens
        assert server.tokens_served() > 700 - bound
        assert len(server.answered) == len(sent) and server.answered_twice() == 0
