"""One queue per provider for the rate limits that every replica of a role shares (docs/api-teacher.md).

``ProviderLimiter`` holds ``tasks.limits.RateLimits`` behind a first-come, first-served queue: a
request waits in ``acquire`` until the limits let it go, and reports its answer (or its 429) after.
On a Ray cluster it is a named async actor that replicas on any node reach by name, so N replicas
spend one limit, not N. An engine used on its own (a notebook, a test) gets one in-process, on a
thread with its own event loop, so that its concurrent callers share it just the same.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Coroutine, Mapping
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

from tasks.limits import Grant, RateLimits

T = TypeVar("T")
# The longest a queued request sleeps before looking again (a 429 elsewhere may have paused the role).
RECHECK_S = 0.5


class ProviderLimiter:
    """The limits of one provider's model, and the queue of requests waiting for them."""

    def __init__(self, requests_per_minute: int | None = None, tokens_per_minute: int | None = None) -> None:
        self.limits = RateLimits(requests_per_minute, tokens_per_minute)
        self._queue: asyncio.Lock | None = None
        self.queued = 0

    async def acquire(self, prompt_chars: int, messages: int, max_tokens: int) -> int:
        """Wait until a request may go; returns the tokens it was counted for."""
        tokens = self.limits.cost(prompt_chars, messages, max_tokens)
        if self._queue is None:
            self._queue = asyncio.Lock()  # asyncio's lock wakes waiters in the order they came
        self.queued += 1
        try:
            async with self._queue:
                while True:
                    now = time.monotonic()
                    seconds, kind = self.limits.wait(tokens, now)
                    if seconds <= 0:
                        self.limits.take(tokens, now)
                        self.limits.waiting_on = None
                        return tokens
                    self.limits.waiting_on = kind
                    nap = min(seconds, RECHECK_S)
                    await asyncio.sleep(nap)
                    self.limits.waited(kind or "", nap)
        finally:
            self.queued -= 1

    async def answered(
        self, tokens: int, headers: dict[str, str], prompt_chars: int, messages: int, prompt_tokens: int
    ) -> None:
        self.limits.answered(
            Grant(tokens),
            headers,
            time.monotonic(),
            prompt_chars=prompt_chars,
            messages=messages,
            prompt_tokens=prompt_tokens,
        )

    async def throttled(self, tokens: int, headers: dict[str, str], body: str) -> float:
        return self.limits.throttled(Grant(tokens), headers, body, time.monotonic(), time.time())

    async def failed(self, tokens: int) -> None:
        self.limits.failed(Grant(tokens))

    async def snapshot(self) -> dict[str, Any]:
        """Limits learned, what the queue waits on now, seconds waited per limit, and 429s."""
        stats = self.limits.stats
        return {
            "limits": self.limits.limits(),
            "known": self.limits.known,
            "queued": self.queued,
            "waiting_on": self.limits.waiting_on if self.queued else None,
            "waited_s": {k: round(v, 2) for k, v in stats.waited_s.items()},
            "throttled": dict(stats.throttled),
            "granted": stats.granted,
            "answered": stats.answered,
            "tokens_granted": stats.tokens_granted,
        }


class Limiter(Protocol):
    """What an engine calls around each request (awaited in the engine's event loop)."""

    async def acquire(self, prompt_chars: int, messages: int, max_tokens: int) -> int: ...
    async def answered(
        self, tokens: int, headers: dict[str, str], prompt_chars: int, messages: int, prompt_tokens: int
    ) -> None: ...
    async def throttled(self, tokens: int, headers: dict[str, str], body: str) -> float: ...
    async def failed(self, tokens: int) -> None: ...
    def snapshot(self) -> dict[str, Any]: ...


class LocalLimiter:
    """A ``ProviderLimiter`` in this process, on its own event loop thread (engines call it from many)."""

    def __init__(self, requests_per_minute: int | None = None, tokens_per_minute: int | None = None) -> None:
        self._inner = ProviderLimiter(requests_per_minute, tokens_per_minute)
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="rate-limits", daemon=True).start()

    def _submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def acquire(self, prompt_chars: int, messages: int, max_tokens: int) -> int:
        return await asyncio.wrap_future(
            self._submit(self._inner.acquire(prompt_chars, messages, max_tokens))
        )

    async def answered(
        self, tokens: int, headers: dict[str, str], prompt_chars: int, messages: int, prompt_tokens: int
    ) -> None:
        call = self._inner.answered(tokens, headers, prompt_chars, messages, prompt_tokens)
        await asyncio.wrap_future(self._submit(call))

    async def throttled(self, tokens: int, headers: dict[str, str], body: str) -> float:
        return await asyncio.wrap_future(self._submit(self._inner.throttled(tokens, headers, body)))

    async def failed(self, tokens: int) -> None:
        await asyncio.wrap_future(self._submit(self._inner.failed(tokens)))

    def snapshot(self) -> dict[str, Any]:
        return self._submit(self._inner.snapshot()).result()


class RayLimiter:
    """A named ``ProviderLimiter`` actor, shared by every replica that names it (on any node)."""

    def __init__(self, name: str) -> None:
        import ray

        from .cluster import NAMESPACE

        self.name = name
        self._actor = ray.get_actor(name, namespace=NAMESPACE)

    async def acquire(self, prompt_chars: int, messages: int, max_tokens: int) -> int:
        return int(await self._actor.acquire.remote(prompt_chars, messages, max_tokens))

    async def answered(
        self, tokens: int, headers: dict[str, str], prompt_chars: int, messages: int, prompt_tokens: int
    ) -> None:
        await self._actor.answered.remote(tokens, headers, prompt_chars, messages, prompt_tokens)

    async def throttled(self, tokens: int, headers: dict[str, str], body: str) -> float:
        return float(await self._actor.throttled.remote(tokens, headers, body))

    async def failed(self, tokens: int) -> None:
        await self._actor.failed.remote(tokens)

    def snapshot(self) -> dict[str, Any]:
        import ray

        return dict(ray.get(self._actor.snapshot.remote()))


def limiter_name(model: str, base_url: str) -> str:
    """One limiter per provider endpoint and model: roles on the same model share its limits."""
    return "limits-" + hashlib.sha256(f"{base_url.rstrip('/')}|{model}".encode()).hexdigest()[:12]


def start_ray_limiter(name: str, options: Mapping[str, Any], *, detached: bool) -> Any:
    """The named limiter actor (created if missing); it asks for no CPU: it only keeps time."""
    import ray

    from .cluster import NAMESPACE

    actor_options: dict[str, Any] = {
        "name": name,
        "namespace": NAMESPACE,
        "get_if_exists": True,
        "num_cpus": 0,
        "max_concurrency": 10_000,
    }
    if detached:
        actor_options["lifetime"] = "detached"
    remote: Any = ray.remote(ProviderLimiter)
    return remote.options(**actor_options).remote(options.get("rpm"), options.get("tpm"))
