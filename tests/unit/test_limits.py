"""The rate-limit rules (tasks.limits), with time passed in: nothing here sleeps."""

from __future__ import annotations

import itertools

import pytest

from tasks.limits import RateLimits, Stated, parse_duration, retry_after_s

HEADERS = {
    "x-ratelimit-limit-requests": "60",
    "x-ratelimit-limit-tokens": "6000",
    "x-ratelimit-remaining-requests": "59",
    "x-ratelimit-remaining-tokens": "5900",
    "x-ratelimit-reset-requests": "1s",
    "x-ratelimit-reset-tokens": "1s",
}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("2.5", 2.5),
        ("soon", None),
        ("", None),
    ],
)
def test_durations_read_as_openai_writes_them(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_retry_after_in_seconds_milliseconds_or_a_date() -> None:
    assert retry_after_s({"Retry-After": "3"}, 0) == 3.0
    assert retry_after_s({"retry-after-ms": "250"}, 0) == 0.25
    assert retry_after_s({"retry-after": "Thu, 01 Jan 1970 00:00:10 GMT"}, 4.0) == pytest.approx(6.0)
    assert retry_after_s({}, 0) is None


def test_headers_read_case_blind() -> None:
    stated = Stated.from_headers({k.upper(): v for k, v in HEADERS.items()})
    assert stated.limit == {"requests": 60, "tokens": 6000}
    assert stated.remaining == {"requests": 59, "tokens": 5900}
    assert stated.reset_s == {"requests": 1.0, "tokens": 1.0}


def test_the_first_request_goes_alone_until_an_answer_states_the_limits() -> None:
    limits = RateLimits()
    assert limits.wait(100, 0.0) == (0.0, None)
    first = limits.take(100, 0.0)
    seconds, kind = limits.wait(100, 0.0)
    assert seconds > 0 and kind == "first answer"
    limits.answered(first, HEADERS, 0.1)
    assert limits.limits() == {"requests": 60, "tokens": 6000}
    assert limits.wait(100, 0.1) == (0.0, None)


def test_a_server_that_states_no_limits_gets_none() -> None:
    limits = RateLimits()
    limits.answered(limits.take(10, 0.0), {}, 0.0)
    for _ in range(1000):
        assert limits.wait(10_000, 0.0)[0] == 0
        limits.take(10_000, 0.0)


def test_tokens_per_minute_spaced_at_the_refill_rate() -> None:
    limits = RateLimits(tokens_per_minute=6000)  # 100 tokens a second
    sent = []
    now = 0.0
    for _ in range(200):
        seconds, kind = limits.wait(1000, now)
        if seconds:
            assert kind == "tokens"
            now += seconds
            continue
        limits.take(1000, now)
        sent.append(now)
    # A full minute's bucket at once, then one request each 10 s (1000 tokens at 100 a second).
    assert sent[:6] == [0.0] * 6
    gaps = [b - a for a, b in itertools.pairwise(sent[6:])]
    assert all(g == pytest.approx(10.0) for g in gaps)
    tokens_in_10_minutes = 1000 * sum(1 for t in sent if t < 600)
    assert tokens_in_10_minutes <= 6000 + 6000 * 10


def test_requests_per_minute_binds_small_requests() -> None:
    limits = RateLimits(requests_per_minute=120, tokens_per_minute=10**9)
    now, sent = 0.0, 0
    while now < 60:
        seconds, kind = limits.wait(1, now)
        if seconds:
            assert kind == "requests"
            now += seconds
            continue
        limits.take(1, now)
        sent += 1
    assert 120 <= sent <= 241  # the first minute's bucket plus a minute of refill


def test_the_servers_count_wins_when_it_is_lower() -> None:
    limits = RateLimits()
    first = limits.take(50, 0.0)
    in_flight = limits.take(50, 0.0)  # sent before the answer came
    low = {**HEADERS, "x-ratelimit-remaining-tokens": "300"}  # someone else spends the key too
    limits.answered(first, low, 0.0)
    # 300 left, less the 50 still in flight that the server may not have counted.
    assert limits.buckets["tokens"].level == pytest.approx(250.0)
    assert limits.wait(200, 0.0) == (0.0, None)
    assert limits.wait(300, 0.0)[1] == "tokens"
    limits.answered(in_flight, HEADERS, 0.0)
    assert limits.outstanding == {"requests": 0, "tokens": 0}


def test_a_429_pauses_the_role_for_retry_after() -> None:
    limits = RateLimits(requests_per_minute=60, tokens_per_minute=6000)
    grant = limits.take(10, 0.0)
    pause = limits.throttled(grant, {"retry-after": "2"}, "Rate limit reached on tokens per min", 0.0, 0.0)
    assert pause == 2.0
    assert limits.wait(10, 1.0) == (1.0, "retry-after")
    assert limits.stats.throttled == {"tokens": 1}


def test_a_429_without_retry_after_makes_the_named_limit_follow_the_servers_count() -> None:
    limits = RateLimits(requests_per_minute=60, tokens_per_minute=6000)
    grant = limits.take(10, 0.0)
    told = {**HEADERS, "x-ratelimit-remaining-requests": "0"}
    assert limits.throttled(grant, told, "slow down", 0.0, 0.0) == 0.0
    assert limits.stats.throttled == {"requests": 1}
    # Nothing left on the server's count: the next request waits one refill (a second at 60 a minute).
    assert limits.wait(10, 0.0) == (pytest.approx(1.0), "requests")


def test_a_429_without_a_stated_wait_backs_off_and_an_answer_resets_it() -> None:
    limits = RateLimits(requests_per_minute=60)
    pauses = [limits.throttled(limits.take(1, 0.0), {}, "busy", 0.0, 0.0) for _ in range(4)]
    assert pauses == [1.0, 2.0, 4.0, 8.0]
    limits.answered(limits.take(1, 100.0), {}, 100.0)
    assert limits.throttled(limits.take(1, 100.0), {}, "busy", 100.0, 0.0) == 1.0


def test_the_token_estimate_learns_from_usage_and_leans_high() -> None:
    limits = RateLimits()
    assert limits.cost(400, 1, 100) == 200 + 4 + 100  # half a token a character at first
    limits.answered(limits.take(1, 0.0), {}, 0.0, prompt_chars=400, messages=1, prompt_tokens=104)
    assert limits.tokens_per_char == pytest.approx(0.5 * 0.9 + 0.025)
    for _ in range(60):
        limits.answered(limits.take(1, 0.0), {}, 0.0, prompt_chars=400, messages=1, prompt_tokens=104)
    assert limits.tokens_per_char == pytest.approx(0.25, rel=0.01)
    limits.answered(limits.take(1, 0.0), {}, 0.0, prompt_chars=400, messages=1, prompt_tokens=204)
    assert limits.tokens_per_char == pytest.approx(0.5)  # a denser prompt raises it at once


def test_the_progress_line_says_which_limit_the_role_waits_on() -> None:
    from tasks.limits import waiting_line

    snapshot = {
        "limits": {"requests": 500, "tokens": 30_000},
        "waiting_on": "tokens",
        "queued": 12,
        "waited_s": {"tokens": 40.0, "first answer": 1.0},
        "throttled": {"tokens": 2},
    }
    assert waiting_line("openai:gpt-4o-mini", snapshot) == (
        "openai:gpt-4o-mini: waiting on tokens per minute (30,000); 12 queued, 41.0 s waited, 2 x 429"
    )
    assert waiting_line("openai:gpt-4o-mini", {**snapshot, "waiting_on": None}) is None
