"""Ray actor pools of engine replicas: one pool per distinct model, N replicas each.

A pool is itself an Engine (``generate``, ``chat_prefix``, ``target_logprobs``), so stage logic
does not know whether it talks to one local engine or to replicas on a cluster. Batches go to the
least-loaded replica with a bound on batches in flight (backpressure); a replica that dies is
restarted by Ray and its batch retried, a bounded number of times, with an error that names the
replica and the batch. Replicas are named actors, so a teacher and a student on the same model
share them, and with ``persistent=True`` (detached actors) a later run on the same Ray head reuses
the loaded models instead of loading them again.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tasks.scoring.templates import PromptFormat

from .cluster import NAMESPACE
from .engines.base import ChatRequest, Completion, Sampling, ScoreRequest, TargetLogprobs


class PoolConfig(BaseModel):
    """One model served by replicas: the engine spec, its options, and resources per replica."""

    model_config = ConfigDict(extra="forbid")

    spec: str
    options: dict[str, Any] = Field(default_factory=dict)
    replicas: int = Field(1, ge=1)
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica (tensor_parallel_size for vllm)")
    batch_size: int = Field(64, ge=1, description="requests per batch sent to one replica")
    max_in_flight: int = Field(2, ge=1, description="batches queued per replica")
    max_batch_retries: int = Field(2, ge=0)
    persistent: bool = Field(False, description="detached actors that outlive the run (reuse loaded models)")

    def key(self) -> str:
        """Identity of the model a replica holds: same spec and options -> same replicas."""
        blob = json.dumps({"spec": self.spec, "options": self.options}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


class PoolError(RuntimeError):
    """A batch failed on every try; names the replica and the batch."""


class _EngineActor:
    """Holds one engine replica inside a Ray worker process."""

    def __init__(self, spec: str, options: dict[str, Any]) -> None:
        from infra.engines import load_engine

        self.engine = load_engine(spec, options)

    def ready(self) -> int:
        return os.getpid()

    def generate(self, requests: Sequence[ChatRequest], sampling: Sampling) -> list[Completion]:
        return self.engine.generate(requests, sampling)

    def target_logprobs(self, requests: Sequence[ScoreRequest]) -> list[TargetLogprobs]:
        return self.engine.target_logprobs(requests)


class EnginePool:
    """Replicas of one engine as named Ray actors, used like a single engine."""

    def __init__(self, config: PoolConfig, *, ready_timeout_s: float = 900.0) -> None:
        import ray

        from infra.engines import load_tokenizer

        self.config = config
        self.spec = config.spec
        self.tokenizer = load_tokenizer(config.spec, config.options)
        remote: Any = ray.remote(_EngineActor)
        self.names = [f"engine-{config.key()}-{i}" for i in range(config.replicas)]
        options: dict[str, Any] = {
            "namespace": NAMESPACE,
            "get_if_exists": True,
            "num_cpus": config.num_cpus,
            "num_gpus": config.num_gpus,
            "max_restarts": config.max_batch_retries + 1,
            "max_task_retries": 0,
            "max_concurrency": 1,
        }
        if config.persistent:
            options["lifetime"] = "detached"
        # Replicas someone else started (a persistent pool of the same model) are borrowed: used,
        # never killed by this pool's close().
        self.borrowed = {name for name in self.names if _actor_exists(name)}
        self.actors = [
            remote.options(name=name, **options).remote(config.spec, config.options) for name in self.names
        ]
        try:
            self.pids: list[int] = ray.get([a.ready.remote() for a in self.actors], timeout=ready_timeout_s)
        except Exception as exc:
            raise PoolError(f"replicas of {config.spec} did not start: {_cause(exc)}") from exc
        self.pids_at_start = list(self.pids)
        self.ready_timeout_s = ready_timeout_s
        self.retried = 0  # batches sent again after their replica died

    # -- the Engine interface --------------------------------------------------------------------
    @property
    def prompt_format(self) -> PromptFormat:
        return self.tokenizer.prompt_format

    def generate(self, requests: Sequence[ChatRequest], sampling: Sampling) -> list[Completion]:
        batches = _split(requests, self.config.batch_size)
        return [c for out in self._map("generate", batches, sampling) for c in out]

    def target_logprobs(self, requests: Sequence[ScoreRequest]) -> list[TargetLogprobs]:
        batches = _split(requests, self.config.batch_size)
        return [r for out in self._map("target_logprobs", batches) for r in out]

    def close(self) -> None:
        """Release the replicas this pool started (unless persistent: those stay for the next run)."""
        import ray

        if not self.config.persistent:
            for name, actor in zip(self.names, self.actors, strict=True):
                if name not in self.borrowed:
                    ray.kill(actor, no_restart=True)

    # -- dispatch --------------------------------------------------------------------------------
    def _map(self, method: str, batches: Sequence[Sequence[Any]], *args: Any) -> list[Any]:
        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError

        queue = deque(range(len(batches)))
        attempts = [0] * len(batches)
        restarted: set[int] = set()
        load = [0] * len(self.actors)
        pending: dict[Any, tuple[int, int]] = {}
        results: list[Any] = [None] * len(batches)
        while queue or pending:
            while queue and min(load) < self.config.max_in_flight:
                a = load.index(min(load))
                b = queue.popleft()
                pending[getattr(self.actors[a], method).remote(batches[b], *args)] = (b, a)
                load[a] += 1
            [done], _ = ray.wait(list(pending), num_returns=1)
            b, a = pending.pop(done)
            load[a] -= 1
            try:
                results[b] = ray.get(done)
            except (ActorDiedError, ActorUnavailableError, RayActorError) as exc:
                attempts[b] += 1
                if attempts[b] > self.config.max_batch_retries:
                    raise PoolError(
                        f"batch {b} ({len(batches[b])} requests) of {method} failed {attempts[b]} times; "
                        f"last on replica {self.names[a]}: {_cause(exc)}"
                    ) from exc
                self.retried += 1
                restarted.add(a)
                self._await_restart(a)
                queue.appendleft(b)
            except RayTaskError as exc:
                raise exc.as_instanceof_cause() from None
        for a in restarted:  # Ray restarted these replicas: new processes
            self.pids[a] = ray.get(self.actors[a].ready.remote())
        return results

    def _await_restart(self, a: int) -> None:
        """Wait until Ray has restarted replica ``a`` (its model loaded again).

        A batch sent while the replica restarts fails at once ("actor is restarting"), which would
        spend every retry in milliseconds. A replica that stays dead is left to the next try's error.
        """
        import ray
        from ray.exceptions import ActorUnavailableError

        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            try:
                ray.get(self.actors[a].ready.remote(), timeout=max(deadline - time.monotonic(), 0.1))
                return
            except ActorUnavailableError:
                time.sleep(0.5)
            except Exception:  # dead for good, or not back in time: the retry reports it
                return


_POOLS: dict[str, EnginePool] = {}
_POOLS_LOCK = threading.Lock()


def get_pool(config: PoolConfig) -> EnginePool:
    """One pool per model key in this process: a teacher and a student on one model share it.

    Thread-safe: concurrent shard tasks asking for the same model get the same replicas.
    """
    key = f"{config.key()}:{config.replicas}"
    with _POOLS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = EnginePool(config)
        return _POOLS[key]


def close_pools() -> None:
    while _POOLS:
        _, pool = _POOLS.popitem()
        pool.close()


def _actor_exists(name: str) -> bool:
    import ray

    try:
        ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return False
    return True


def _split(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[s : s + size] for s in range(0, len(items), size)]


def _cause(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
