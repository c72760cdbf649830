"""A provider's rate limits (requests and tokens per minute), learned from its answers (pure).

OpenAI and compatible servers state their limits on every answer: ``x-ratelimit-limit-requests``,
``-limit-tokens``, ``-remaining-requests``, ``-remaining-tokens`` and ``-reset-*`` (durations such
as ``1s``, ``6m0s``, ``20ms``). A request counts its prompt tokens plus its ``max_tokens`` against
the tokens per minute when it is sent, and a 429 may say how long to wait (``retry-after``).

``RateLimits`` is the state one role's replicas share (docs/api-teacher.md, "Rate limits"): two buckets
that refill continuously at limit/60 per second, the requests and tokens granted and not yet
answered, and a pause after a 429. Nothing is granted before the first answer has said what the
limits are: the first request goes alone, then the rest follow at the learned rate. A server that
states no limits (``vllm serve``) gets none. Options fix a limit instead of learning it.

Time is passed in (``now``, seconds on a monotonic clock), so every rule is tested without waiting.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Literal

Limit = Literal["requests", "tokens"]
LIMITS: tuple[Limit, ...] = ("requests", "tokens")
# Tokens a chat costs besides its messages' text (role markers; OpenAI counts about 4 per message).
TOKENS_PER_MESSAGE = 4
# Until an answer says how many tokens a character of prompt is, assume one per two characters
# (high for English, so that a first burst does not overshoot); every answer refines it.
FIRST_TOKENS_PER_CHAR = 0.5
# After a 429 that says neither how long to wait nor when the limit resets.
FIRST_PAUSE_S = 1.0
MAX_PAUSE_S = 60.0
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(text: str | None) -> float | None:
    """Seconds in ``1s``, ``6m0s``, ``20ms``, ``1h2m3.5s`` or a bare number of seconds; None if unreadable."""
    if text is None:
        return None
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


def retry_after_s(headers: Mapping[str, str], wall_now: float) -> float | None:
    """How long a 429 asks to wait: ``retry-after-ms``, or ``retry-after`` in seconds or as an HTTP date."""
    h = _lower(headers)
    if "retry-after-ms" in h:
        try:
            return max(0.0, float(h["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = h.get("retry-after")
    if value is None:
        return None
    seconds = parse_duration(value)
    if seconds is not None:
        return seconds
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - wall_now)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Stated:
    """What one answer's ``x-ratelimit-*`` headers say (None: not stated)."""

    limit: dict[Limit, int]
    remaining: dict[Limit, int]
    reset_s: dict[Limit, float]

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Stated:
        h = _lower(headers)
        limit: dict[Limit, int] = {}
        remaining: dict[Limit, int] = {}
        reset: dict[Limit, float] = {}
        for kind in LIMITS:
            for out, name in ((limit, "limit"), (remaining, "remaining")):
                value = _int(h.get(f"x-ratelimit-{name}-{kind}"))
                if value is not None:
                    out[kind] = value
            seconds = parse_duration(h.get(f"x-ratelimit-reset-{kind}"))
            if seconds is not None:
                reset[kind] = seconds
        return cls(limit, remaining, reset)

    @property
    def states_limits(self) -> bool:
        return bool(self.limit)


@dataclass
class Bucket:
    """One per-minute limit: a level that refills at limit/60 a second, up to the limit."""

    per_minute: int
    level: float
    at: float

    def refill(self, now: float) -> None:
        if now > self.at:
            self.level = min(float(self.per_minute), self.level + (now - self.at) * self.per_minute / 60.0)
            self.at = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` fits (0: now). A request larger than the limit waits for a full bucket."""
        need = min(amount, float(self.per_minute))
        return 0.0 if self.level >= need else (need - self.level) * 60.0 / self.per_minute


@dataclass(frozen=True)
class Grant:
    """A request let through: the tokens it was counted for (given back when its answer comes)."""

    tokens: int


@dataclass
class LimitStats:
    """What the limits did to a role: seconds waited on each, 429s answered, and what was learned."""

    waited_s: dict[str, float] = field(default_factory=dict)  # requests / tokens / retry-after / first answer
    throttled: dict[str, int] = field(default_factory=dict)  # 429s by the limit they named
    granted: int = 0
    answered: int = 0
    tokens_granted: int = 0


class RateLimits:
    """The shared state of one role's limits. Not thread-safe: its owner serialises calls."""

    def __init__(self, requests_per_minute: int | None = None, tokens_per_minute: int | None = None) -> None:
        self.fixed: dict[Limit, int] = {}
        if requests_per_minute:
            self.fixed["requests"] = requests_per_minute
        if tokens_per_minute:
            self.fixed["tokens"] = tokens_per_minute
        self.buckets: dict[Limit, Bucket] = {}
        self.known = False  # an answer (or the options) said what the limits are
        self.outstanding: dict[Limit, int] = {"requests": 0, "tokens": 0}
        self.paused_until = 0.0
        self.pauses = 0  # 429s in a row without a stated wait, for the backoff
        self.tokens_per_char = FIRST_TOKENS_PER_CHAR
        self.stats = LimitStats()
        self.waiting_on: str | None = None
        if self.fixed:
            self.known = True

    # -- asking ----------------------------------------------------------------------------------
    def cost(self, prompt_chars: int, messages: int, max_tokens: int) -> int:
        """Tokens a request counts against the limit: its prompt (estimated) plus its max_tokens."""
        return math.ceil(prompt_chars * self.tokens_per_char) + TOKENS_PER_MESSAGE * messages + max_tokens

    def wait(self, tokens: int, now: float) -> tuple[float, str | None]:
        """Seconds until a request of ``tokens`` may go, and the limit it waits on (0, None: now)."""
        if now < self.paused_until:
            return self.paused_until - now, "retry-after"
        if not self.known and self.outstanding["requests"]:
            return 0.05, "first answer"  # the limits are learned from the first answer
        seconds, binding = 0.0, None
        for kind, bucket in self._buckets(now).items():
            wait = bucket.wait_for(1 if kind == "requests" else tokens)
            if wait > seconds:
                seconds, binding = wait, kind
        return seconds, binding

    def take(self, tokens: int, now: float) -> Grant:
        """Count a request as sent (call when ``wait`` says 0)."""
        for kind, bucket in self._buckets(now).items():
            bucket.level -= 1 if kind == "requests" else tokens
        self.outstanding["requests"] += 1
        self.outstanding["tokens"] += tokens
        self.stats.granted += 1
        self.stats.tokens_granted += tokens
        return Grant(tokens)

    def waited(self, kind: str, seconds: float) -> None:
        self.stats.waited_s[kind] = self.stats.waited_s.get(kind, 0.0) + seconds

    # -- answers ---------------------------------------------------------------------------------
    def answered(
        self,
        grant: Grant,
        headers: Mapping[str, str],
        now: float,
        *,
        prompt_chars: int = 0,
        messages: int = 0,
        prompt_tokens: int = 0,
    ) -> None:
        """A granted request was answered (not a 429): learn the limits and the token estimate."""
        self._settle(grant)
        self.stats.answered += 1
        self.pauses = 0
        self._learn(Stated.from_headers(headers), now)
        if prompt_chars > 0 and prompt_tokens > 0:
            seen = max(0.0, prompt_tokens - TOKENS_PER_MESSAGE * messages) / prompt_chars
            # Lean to the high side: a low estimate costs 429s, a high one a little throughput.
            self.tokens_per_char = max(seen, 0.9 * self.tokens_per_char + 0.1 * seen)

    def throttled(
        self, grant: Grant, headers: Mapping[str, str], body: str, now: float, wall_now: float
    ) -> float:
        """A granted request was answered 429: slow the role down; returns the pause imposed on it.

        The pause is the server's ``retry-after`` where it gives one. Otherwise the limit the 429 names
        is known (stated or fixed) and its bucket, now following the server's count, makes requests
        wait for the refill; with neither, the role backs off exponentially.
        """
        self._settle(grant)
        stated = Stated.from_headers(headers)
        self._learn(stated, now)
        text = body.lower()
        named = next((k for k in LIMITS if k in text or stated.remaining.get(k) == 0), None)
        self.stats.throttled[named or "unstated"] = self.stats.throttled.get(named or "unstated", 0) + 1
        pause = retry_after_s(headers, wall_now)
        bucket = self.buckets.get(named) if named is not None else None
        if named is not None and bucket is not None:
            # The server refused what our count let through: trust its count of what is left.
            bucket.level = min(bucket.level, float(stated.remaining.get(named, 0)) - self.outstanding[named])
        if pause is None and bucket is None:
            pause = min(MAX_PAUSE_S, FIRST_PAUSE_S * 2**self.pauses)
            self.pauses += 1
        pause = pause or 0.0
        self.paused_until = max(self.paused_until, now + pause)
        return pause

    def failed(self, grant: Grant) -> None:
        """A granted request got no answer (a dropped connection, a timeout)."""
        self._settle(grant)

    # -- state -----------------------------------------------------------------------------------
    def limits(self) -> dict[str, int]:
        return {k: b.per_minute for k, b in self.buckets.items()}

    def _settle(self, grant: Grant) -> None:
        self.outstanding["requests"] = max(0, self.outstanding["requests"] - 1)
        self.outstanding["tokens"] = max(0, self.outstanding["tokens"] - grant.tokens)

    def _buckets(self, now: float) -> dict[Limit, Bucket]:
        for kind, per_minute in self.fixed.items():
            if kind not in self.buckets:
                self.buckets[kind] = Bucket(per_minute, float(per_minute), now)
        for bucket in self.buckets.values():
            bucket.refill(now)
        return self.buckets

    def _learn(self, stated: Stated, now: float) -> None:
        """Take the stated limits (unless fixed by options) and follow the server's count of what is
        left, less what this role has in flight that the server may not have counted yet."""
        self.known = True
        for kind in LIMITS:
            per_minute = self.fixed.get(kind) or stated.limit.get(kind)
            if not per_minute:
                continue
            bucket = self.buckets.get(kind)
            if bucket is None:
                start = float(stated.remaining.get(kind, per_minute))
                bucket = self.buckets[kind] = Bucket(per_minute, start, now)
            bucket.refill(now)
            bucket.per_minute = per_minute
            if kind in stated.remaining:
                told = stated.remaining[kind] - self.outstanding[kind]
                bucket.level = min(bucket.level, float(told))


def waiting_line(spec: str, snapshot: Mapping[str, Any]) -> str | None:
    """One line for the progress display while a role waits on a limit, else None:
    ``openai:gpt-4o-mini: waiting on tokens per minute (30,000); 12 queued, 41.0 s waited, 2 x 429``."""
    kind = snapshot.get("waiting_on")
    if not kind:
        return None
    limit = snapshot.get("limits", {}).get(kind)
    what = {"requests": "requests per minute", "tokens": "tokens per minute"}.get(kind, kind)
    stated = f" ({limit:,})" if limit else ""
    waited = sum(snapshot.get("waited_s", {}).values())
    throttled = sum(snapshot.get("throttled", {}).values())
    tail = f", {throttled} x 429" if throttled else ""
    return (
        f"{spec}: waiting on {what}{stated}; {snapshot.get('queued', 0)} queued, {waited:.1f} s waited{tail}"
    )


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None
