"""Merged engine calls for engines that run a batch at a time (``hf``, and vLLM with streaming off).

Concurrent batches from many shard tasks reach a replica together; the merger hands its engine
every waiting batch with the same method and sampling in one call, up to a bound. A call ends
with its slowest request, which is why vLLM replicas stream instead (``infra.engines.stream``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any


@dataclass
class MergeStats:
    """What one replica's engine saw: calls, requests, and how many requests it held at once."""

    calls: int = 0
    requests: int = 0
    batches: int = 0
    peak_in_flight: int = 0
    in_flight_seconds: float = 0.0  # integral of requests held over time
    busy_seconds: float = 0.0  # time with at least one request held

    @property
    def mean_in_flight(self) -> float:
        return self.in_flight_seconds / self.busy_seconds if self.busy_seconds else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "calls": self.calls,
            "requests": self.requests,
            "batches": self.batches,
            "peak_in_flight": self.peak_in_flight,
            "mean_in_flight": self.mean_in_flight,
            "mean_requests_per_call": self.requests / self.calls if self.calls else 0.0,
        }


@dataclass
class _Pending:
    key: tuple[str, Any]
    items: Sequence[Any]
    done: Future[list[Any]] = field(default_factory=Future)
    seconds: float = 0.0  # this batch's share of the engine call that ran it


class BatchMerger:
    """Runs concurrent calls of one engine as few engine calls as possible, one at a time.

    Callers block on ``submit``; one worker thread takes every waiting batch with the same key
    (method and sampling), up to ``bound`` requests (always at least one batch), runs them as one
    engine call and hands each caller its slice. Engines are not thread-safe, and one call over
    merged batches is how vLLM's continuous batching gets enough sequences.
    """

    def __init__(
        self,
        run: Callable[[str, Any, list[Any]], list[Any]],
        bound: int,
        mergeable: Callable[[str, Any], bool] = lambda method, arg: True,
    ) -> None:
        self.run = run
        self.mergeable = mergeable
        self.bound = max(1, bound)
        self.stats = MergeStats()
        self._queue: deque[_Pending] = deque()
        self._cond = threading.Condition()
        self._held = 0
        self._running = 0
        self._since = time.monotonic()
        threading.Thread(target=self._work, name="engine-merger", daemon=True).start()

    @property
    def held(self) -> int:
        """Requests handed to this replica and not answered yet."""
        return self._held

    def submit(self, method: str, arg: Any, items: Sequence[Any]) -> list[Any]:
        return self.submit_timed(method, arg, items)[0]

    def submit_timed(self, method: str, arg: Any, items: Sequence[Any]) -> tuple[list[Any], float]:
        """The results, and this batch's share of the engine seconds (by its share of the requests)."""
        pending = _Pending((method, arg), items)
        with self._cond:
            self._account(+len(items))
            self.stats.batches += 1
            self._queue.append(pending)
            self._cond.notify()
        try:
            return pending.done.result(), pending.seconds
        finally:
            with self._cond:
                self._account(-len(items))

    def _account(self, delta: int) -> None:
        now = time.monotonic()
        if self._held:
            self.stats.in_flight_seconds += self._held * (now - self._since)
            self.stats.busy_seconds += now - self._since
        self._since = now
        self._held += delta
        self.stats.peak_in_flight = max(self.stats.peak_in_flight, self._held)

    def _take(self) -> list[_Pending]:
        first = self._queue.popleft()
        taken, size = [first], len(first.items)
        if not self.mergeable(*first.key):
            return taken
        for other in list(self._queue):
            if other.key == first.key and size + len(other.items) <= self.bound:
                self._queue.remove(other)
                taken.append(other)
                size += len(other.items)
        return taken

    def load(self) -> dict[str, int]:
        """Right now: requests in the engine call that is running, and requests queued behind it."""
        with self._cond:
            return {
                "running": self._running,
                "waiting": self._held - self._running,
                "queued": 0,
                "capacity": self.bound,
            }

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                taken = self._take()
            method, arg = taken[0].key
            merged = [item for p in taken for item in p.items]
            with self._cond:
                self._running = len(merged)
            t0 = time.perf_counter()
            try:
                out = self.run(method, arg, merged)
                if len(out) != len(merged):
                    raise RuntimeError(f"engine returned {len(out)} results for {len(merged)} requests")
            except BaseException as exc:  # every caller of the merged call gets the error
                for p in taken:
                    p.done.set_exception(exc)
                continue
            finally:
                with self._cond:
                    self._running = 0
            self.stats.calls += 1
            self.stats.requests += len(merged)
            elapsed = time.perf_counter() - t0
            start = 0
            for p in taken:
                p.seconds = elapsed * len(p.items) / max(1, len(merged))
                p.done.set_result(out[start : start + len(p.items)])
                start += len(p.items)
