"""A step loop over vLLM's offline engine: requests join the running engine between steps.

``LLM.generate`` adds a call's requests and steps until all of them are done, so a replica's next
call waits for the slowest reply of the current one, and one invalid prompt fails the whole call
(docs/architecture.md). Here one thread owns the engine and loops: admit every request submitted
since the last step (``add_request``; a request the engine refuses fails alone), run one ``step``,
and hand each finished request to its caller. Any number of callers (the threads of a Ray replica
serving many shard tasks) submit concurrently; the engine schedules everything it holds up to its
own capacity (``max_num_seqs``).

Why not ``AsyncLLM``: it runs the engine core in a second process, which on a CPU took 20-47 s to
build against 3-5 s in-process, and the offline engine has the same continuous batching.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol


class OfflineEngine(Protocol):
    """The part of vLLM's ``LLMEngine`` the loop drives."""

    def add_request(self, request_id: str, prompt: Any, params: Any) -> Any: ...

    def step(self) -> list[Any]: ...

    def has_unfinished_requests(self) -> bool: ...


class RequestRejected(Exception):
    """The engine refused one request (its own validation); the other requests are unaffected."""


class EngineStopped(RuntimeError):
    """The engine failed while stepping; every request it held failed with it."""


@dataclass
class Occupancy:
    """Time integrals of what the engine held: the raw figures behind occupancy and idle time."""

    running_seconds: float = 0.0  # integral of requests being scheduled
    waiting_seconds: float = 0.0  # integral of requests admitted but not yet scheduled
    held_seconds: float = 0.0  # integral of min(capacity, requests held)
    request_seconds: float = 0.0  # integral of requests held (each request's seconds in the engine)
    busy_seconds: float = 0.0  # time with at least one request held
    steps: int = 0
    requests: int = 0
    rejected: int = 0

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Finished:
    """A finished request: vLLM's ``RequestOutput`` and the seconds from its submission to its end."""

    output: Any
    seconds: float


@dataclass
class _Submitted:
    prompt: Any
    params: Any
    done: Future[Finished]
    at: float = 0.0


class StepLoop:
    """One thread that owns an offline engine; ``submit`` from any thread, get a Future per request.

    ``counts`` tells how many requests the engine is running and how many wait (vLLM's scheduler
    where it can be read in-process; otherwise the held requests cut at ``capacity``).
    """

    def __init__(
        self,
        engine: OfflineEngine,
        capacity: int,
        counts: Callable[[], tuple[int, int]] | None = None,
        name: str = "engine-steps",
    ) -> None:
        self.engine = engine
        self.capacity = max(1, capacity)
        self._counts = counts
        self.stats = Occupancy()
        self._ids = itertools.count()
        self._inbox: deque[_Submitted] = deque()
        self._held: dict[str, _Submitted] = {}
        self._cond = threading.Condition()
        self._failure: BaseException | None = None
        self._since = time.monotonic()
        self._running = self._waiting = 0
        threading.Thread(target=self._loop, name=name, daemon=True).start()

    def submit(self, prompt: Any, params: Any) -> Future[Finished]:
        """Queue one request; its Future gets the finished request, or ``RequestRejected`` when the
        engine refused it, or ``EngineStopped``."""
        item = _Submitted(prompt, params, Future(), time.perf_counter())
        with self._cond:
            if self._failure is not None:
                raise EngineStopped(f"the engine stopped earlier: {self._failure}") from self._failure
            self._inbox.append(item)
            self._cond.notify()
        return item.done

    def load(self) -> dict[str, int]:
        """Right now: requests running, waiting in the engine, and submitted but not admitted yet.

        Where the scheduler can be read it is read now, from the caller's thread (lengths of its
        queues, read under the GIL), so a sample taken during a step sees what that step runs."""
        with self._cond:
            running, waiting = self._running, self._waiting
            queued = len(self._inbox)
        if self._counts is not None and self._failure is None:
            running, waiting = self._counts()
        return {"running": running, "waiting": waiting, "queued": queued, "capacity": self.capacity}

    # -- the engine thread -----------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._inbox and not self._held:
                    self._account()
                    self._cond.wait()
                admitted = list(self._inbox)
                self._inbox.clear()
            for item in admitted:
                self._admit(item)
            if admitted:
                with self._cond:
                    self._account()
            if not self._held:
                continue
            try:
                outputs = self.engine.step()
            except BaseException as exc:  # the engine is broken: nobody's request can finish
                self._stop(exc)
                return
            self.stats.steps += 1
            for out in outputs:
                if getattr(out, "finished", True):
                    item = self._held.pop(out.request_id, None)  # type: ignore[arg-type]
                    if item is not None:
                        item.done.set_result(Finished(out, time.perf_counter() - item.at))
            with self._cond:
                self._account()

    def _admit(self, item: _Submitted) -> None:
        request_id = str(next(self._ids))
        try:
            self.engine.add_request(request_id, item.prompt, item.params)
        except Exception as exc:  # vLLM's validation of this one request
            self.stats.rejected += 1
            item.done.set_exception(
                RequestRejected(str(exc).strip().splitlines()[0] if str(exc) else repr(exc))
            )
            return
        self.stats.requests += 1
        self._held[request_id] = item

    def _account(self) -> None:
        """Integrate the engine's load since the last update (held under the condition)."""
        now = time.monotonic()
        dt, self._since = now - self._since, now
        held = len(self._held)
        if held:
            self.stats.running_seconds += self._running * dt
            self.stats.waiting_seconds += self._waiting * dt
            self.stats.held_seconds += min(self.capacity, held) * dt
            self.stats.request_seconds += held * dt
            self.stats.busy_seconds += dt
        if self._counts is not None:
            self._running, self._waiting = self._counts()
        else:
            self._running, self._waiting = min(held, self.capacity), max(0, held - self.capacity)

    def _stop(self, exc: BaseException) -> None:
        with self._cond:
            self._failure = exc
            pending = [i.done for i in self._held.values()] + [i.done for i in self._inbox]
            self._held.clear()
            self._inbox.clear()
            self._running = self._waiting = 0
        error = EngineStopped(f"the engine failed while stepping: {type(exc).__name__}: {exc}")
        for future in pending:
            future.set_exception(error)
