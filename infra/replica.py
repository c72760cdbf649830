"""One engine replica inside a Ray worker process: the actor a pool's requests reach.

A replica serves many shard tasks at once (a threaded actor). A streaming engine (vLLM) takes each
caller's requests into its running engine directly; an engine that runs one batch at a time
(``hf``) gets concurrent batches merged into one call (``infra.merger``). Either way ``load`` says
what the engine holds now, which the pool samples for occupancy.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from tasks.engine import ChatRequest, Completion, Sampling, ScoreRequest, TargetLogprobs

from .merger import BatchMerger

# Calls to the actor that are not engine work (``ready``, ``load``, ``stats``) must never wait behind batches.
SPARE_ACTOR_THREADS = 4


class EngineReplica:
    """Holds one engine replica inside a Ray worker process; concurrent calls stream or are merged.

    The constructor loads nothing, so that Ray reports the actor placed (``__ray_ready__``) at once
    and a pool tells a replica that cannot be placed from one that is still loading its model;
    ``ready`` loads the engine (once per process: again after Ray restarts a dead replica).
    """

    def __init__(
        self, spec: str, options: dict[str, Any], merge_bound: int | None, limiter: str | None = None
    ) -> None:
        _compute_at_normal_priority()
        self.spec, self.options, self.merge_bound, self.limiter = spec, options, merge_bound, limiter
        self._engine: Any = None
        self._load_lock = threading.Lock()

    def _load(self) -> None:
        from infra.engines import load_engine

        with self._load_lock:
            if self._engine is not None:
                return
            limiter = None
            if self.limiter is not None:
                from .limiter import RayLimiter

                limiter = RayLimiter(self.limiter)
            engine = load_engine(self.spec, self.options, limiter=limiter)
            self.streams = bool(getattr(engine, "streams", False))
            bound = self.merge_bound or int(getattr(engine, "max_requests_per_call", 64))
            # The engine's own capacity (vLLM's max_num_seqs), or what one merged call may hold.
            self.capacity = int(getattr(engine, "capacity", 0) or bound)
            self.merger = BatchMerger(self._run, bound, self._mergeable)
            self._engine = engine

    def _ensure_loaded(self) -> None:
        if self._engine is None:
            self._load()

    @property
    def engine(self) -> Any:
        self._ensure_loaded()
        return self._engine

    def _mergeable(self, method: str, sampling: Any) -> bool:
        """Merging must not change a reply: fine for scoring, greedy decoding, and engines that seed
        each request on its own (vLLM, servers); not for sampling on one global generator (hf)."""
        if method != "generate" or sampling.temperature == 0:
            return True
        return bool(getattr(self.engine, "seeds_each_request", False))

    def _run(self, method: str, sampling: Any, items: list[Any]) -> list[Any]:
        if method == "generate":
            return self.engine.generate(items, sampling)
        return self.engine.target_logprobs(items)

    def ready(self) -> dict[str, Any]:
        import ray

        self._load()
        group = ray.get_runtime_context().get_placement_group_id()
        return {
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
            "merge_bound": self.merger.bound,
            "capacity": self.capacity,
            "streams": self.streams,
            "gpus": [str(g) for g in ray.get_gpu_ids()],
            "placement_group": group,
        }

    def stats(self) -> dict[str, Any]:
        self._ensure_loaded()
        occupancy = self._engine_call("occupancy") if self.streams else {}
        return {**self.merger.stats.as_dict(), "in_flight": self.merger.held, "engine": occupancy}

    def load(self) -> dict[str, int]:
        """What the engine holds now: requests running, waiting (in the engine or behind its current
        call), queued, and its capacity. Merged calls count what the engine itself still runs where it
        says (vLLM's scheduler), else every request of the current call."""
        self._ensure_loaded()
        if self.streams:
            return dict(self._engine_call("load"))
        merged = self.merger.load()
        engine = dict(getattr(self.engine, "load", dict)() or {})
        if not engine:
            return merged
        behind = merged["waiting"]  # whole batches waiting for the current call to end
        return {**engine, "waiting": engine["waiting"] + behind}

    # Each returns its results and its share of the engine's seconds (for the stage's usage).
    def generate(self, requests: Sequence[ChatRequest], sampling: Sampling) -> tuple[list[Completion], float]:
        self._ensure_loaded()
        if self.streams:
            return self._streamed(lambda: self.engine.generate(requests, sampling), len(requests))
        return self.merger.submit_timed("generate", sampling, requests)

    def target_logprobs(self, requests: Sequence[ScoreRequest]) -> tuple[list[TargetLogprobs], float]:
        self._ensure_loaded()
        if self.streams:
            return self._streamed(lambda: self.engine.target_logprobs(requests), len(requests))
        return self.merger.submit_timed("target_logprobs", None, requests)

    def _streamed(self, call: Any, n: int) -> tuple[Any, float]:
        """A streaming engine's results, and this batch's share of the engine's seconds: its wall
        time times its requests' share of all the requests the engine held meanwhile."""
        t0, before = time.perf_counter(), self._request_seconds()
        out = call()
        elapsed = time.perf_counter() - t0
        held = (self._request_seconds() - before) / elapsed if elapsed > 0 else n
        return out, elapsed * n / max(n, held)

    def _request_seconds(self) -> float:
        return float(self._engine_call("occupancy").get("request_seconds", 0.0))

    def _engine_call(self, name: str) -> dict[str, Any]:
        """A streaming engine's own figures (``load``, ``occupancy``): not part of the Engine interface."""
        return dict(getattr(self.engine, name)())


def _compute_at_normal_priority() -> None:
    """Ray starts workers at nice 15, so that its own processes stay responsive; a replica that computes
    on the CPU then loses its cores to anything else running. Back to the priority of the process that
    started Ray where the OS allows it (an unprivileged user cannot lower niceness: left as it is).
    A GPU replica keeps Ray's setting (the device does the work)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES"):
        return
    with contextlib.suppress(OSError):  # PermissionError included
        os.setpriority(os.PRIO_PROCESS, 0, 0)
