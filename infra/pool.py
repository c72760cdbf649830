"""Ray actor pools of engine replicas: one pool per distinct model, N replicas each.

A pool is itself an Engine (``generate``, ``prompt_format``, ``target_logprobs``), so stage logic
does not know whether it talks to one local engine or to replicas on a cluster.

- **Keeping engines busy.** A replica is a threaded actor: batches from concurrent shard tasks
  reach it together, and it hands its engine everything waiting (same method and sampling) in one
  call, up to a bound per replica: vLLM's ``max_num_seqs`` on a GPU (vLLM wants hundreds of
  sequences in flight), 16 on a CPU (smaller calls measured faster there; DESIGN.md section 5).
- **Backpressure.** Batches go to the least-loaded replica, with a bound on batches in flight per
  replica shared by every caller of the pool.
- **Failures.** A replica that dies is restarted by Ray and its batch retried, a bounded number of
  times, with an error that names the replica and the batch.
- **Placement.** A replica that needs more than one GPU (tensor x pipeline parallel) reserves them
  through a placement group, and vLLM runs its workers in it; a replica that cannot be placed is a
  clear error after a timeout, not a hang.
- **Reuse.** Replicas are named actors, so a teacher and a student on the same model share them, and
  persistent replicas (detached actors) let a later run on the same Ray head reuse loaded models.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from tasks.engine import ChatRequest, Completion, ModelRole, Sampling, ScoreRequest, TargetLogprobs
from tasks.scoring.templates import PromptFormat
from tasks.usage import record_engine_time

from .cluster import NAMESPACE
from .placement import Placement, plan_placement

# Calls to the actor that are not engine work (``ready``, ``stats``) must never wait behind batches.
SPARE_ACTOR_THREADS = 4


class PoolError(RuntimeError):
    """A batch failed on every try, or replicas could not start or be placed; says which and why."""


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

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                taken = self._take()
            method, arg = taken[0].key
            merged = [item for p in taken for item in p.items]
            t0 = time.perf_counter()
            try:
                out = self.run(method, arg, merged)
                if len(out) != len(merged):
                    raise RuntimeError(f"engine returned {len(out)} results for {len(merged)} requests")
            except BaseException as exc:  # every caller of the merged call gets the error
                for p in taken:
                    p.done.set_exception(exc)
                continue
            self.stats.calls += 1
            self.stats.requests += len(merged)
            elapsed = time.perf_counter() - t0
            start = 0
            for p in taken:
                p.seconds = elapsed * len(p.items) / max(1, len(merged))
                p.done.set_result(out[start : start + len(p.items)])
                start += len(p.items)


class _EngineActor:
    """Holds one engine replica inside a Ray worker process; concurrent calls are merged."""

    def __init__(self, spec: str, options: dict[str, Any], merge_bound: int | None) -> None:
        from infra.engines import load_engine

        self.engine = load_engine(spec, options)
        bound = merge_bound or int(getattr(self.engine, "max_requests_per_call", 64))
        self.merger = BatchMerger(self._run, bound, self._mergeable)

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

        group = ray.get_runtime_context().get_placement_group_id()
        return {
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
            "merge_bound": self.merger.bound,
            "gpus": [str(g) for g in ray.get_gpu_ids()],
            "placement_group": group,
        }

    def stats(self) -> dict[str, float]:
        return {**self.merger.stats.as_dict(), "in_flight": self.merger.held}

    # Each returns its results and its share of the engine's seconds (for the stage's usage).
    def generate(self, requests: Sequence[ChatRequest], sampling: Sampling) -> tuple[list[Completion], float]:
        return self.merger.submit_timed("generate", sampling, requests)

    def target_logprobs(self, requests: Sequence[ScoreRequest]) -> tuple[list[TargetLogprobs], float]:
        return self.merger.submit_timed("target_logprobs", None, requests)


class EnginePool:
    """Replicas of one engine as named Ray actors, used like a single engine (and thread-safe)."""

    def __init__(
        self,
        role: ModelRole,
        *,
        ready_timeout_s: float = 900.0,
        placement_timeout_s: float = 120.0,
        wait: bool = True,
    ) -> None:
        """Start the replicas; with ``wait=False`` return at once (they load their models meanwhile,
        and the first call waits for them: ``wait_ready``)."""
        import ray

        from infra.engines import load_tokenizer

        self.role = role
        self.spec = role.spec
        self.names = [f"engine-{role.key()}-{i}" for i in range(role.replicas)]
        # Replicas someone else started (a persistent pool of the same model) are borrowed: used,
        # never killed by this pool's close().
        self.borrowed = {name for name in self.names if _actor_exists(name)}
        self.placement: Placement = plan_placement(role)
        self.placement_groups: list[Any] = []
        self.ready_timeout_s = ready_timeout_s
        remote: Any = ray.remote(_EngineActor)
        self.actors = []
        for i, name in enumerate(self.names):
            options = self._actor_options(i, name, placement_timeout_s)
            self.actors.append(remote.options(**options).remote(role.spec, role.options, role.merge_bound))
        self._ready_refs = [a.ready.remote() for a in self.actors]
        # After the actors: they load their models meanwhile (the tokenizer alone takes seconds).
        self.tokenizer = load_tokenizer(role.spec, role.options)
        self._ready_lock = threading.Lock()
        self.replicas_ready: list[dict[str, Any]] = []
        self.pids: list[int] = []
        self.nodes: list[str] = []  # the Ray node of each replica
        self.pids_at_start: list[int] = []
        self.merge_bounds: list[int] = []
        self.max_in_flight = 1
        self.retried = 0  # batches sent again after their replica died
        self._load = [0] * len(self.actors)
        self._slots = threading.Condition()
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Block until every replica has loaded its model (once; later calls return at once)."""
        import ray

        with self._ready_lock:
            if self.replicas_ready:
                return
            try:
                ready = ray.get(self._ready_refs, timeout=self.ready_timeout_s)
            except Exception as exc:
                self.close()
                raise PoolError(f"replicas of {self.role.spec} did not start: {_cause(exc)}") from exc
            self.pids = [r["pid"] for r in ready]
            self.nodes = [r.get("node", "") for r in ready]  # none from a replica of an earlier version
            self.merge_bounds = [int(r["merge_bound"]) for r in ready]
            self.pids_at_start = list(self.pids)
            self.max_in_flight = self.role.max_in_flight or max(
                2, math.ceil(max(self.merge_bounds) / self.role.batch_size) + 1
            )
            self.replicas_ready = list(ready)

    def _actor_options(self, index: int, name: str, placement_timeout_s: float) -> dict[str, Any]:
        role, placement = self.role, self.placement
        options: dict[str, Any] = {
            "name": name,
            "namespace": NAMESPACE,
            "get_if_exists": True,
            "num_cpus": role.num_cpus,
            "num_gpus": placement.actor_gpus,
            "max_restarts": role.max_batch_retries + 1,
            "max_task_retries": 0,
            "max_concurrency": (role.max_in_flight or 64) + SPARE_ACTOR_THREADS,
        }
        if role.persistent:
            options["lifetime"] = "detached"
        if not placement.gpus:
            options["runtime_env"] = {"env_vars": {"OMP_NUM_THREADS": str(cpu_threads(role.replicas))}}
        if not (placement.bundles and name not in self.borrowed):
            if role.spread:
                options["scheduling_strategy"] = "SPREAD"  # one replica per node while nodes last
        else:
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            group = self._reserve(index, placement_timeout_s)
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                placement_group=group,
                placement_group_bundle_index=0,
                placement_group_capture_child_tasks=True,
            )
        return options

    def _reserve(self, index: int, timeout_s: float) -> Any:
        """A placement group for replica ``index``, or a PoolError saying what is missing."""
        import ray
        from ray.util import placement_group, remove_placement_group

        need = self.placement.gpus
        total = ray.cluster_resources().get("GPU", 0.0)
        if need * self.role.replicas > total:
            raise PoolError(
                f"{self.role.spec}: {self.role.replicas} replicas x {need:g} GPUs ({self.placement.why}) "
                f"need {need * self.role.replicas:g} GPUs; the Ray cluster has {total:g}"
            )
        lifetime = "detached" if self.role.persistent else None
        group = placement_group(self.placement.bundles, strategy=self.placement.strategy, lifetime=lifetime)
        try:
            ray.get(group.ready(), timeout=timeout_s)
        except Exception as exc:
            remove_placement_group(group)
            free = ray.available_resources().get("GPU", 0.0)
            raise PoolError(
                f"replica {index} of {self.role.spec} could not be placed within {timeout_s:.0f} s: it needs "
                f"{need:g} GPUs ({self.placement.why}, {self.placement.strategy}); {free:g} of the cluster's "
                f"{total:g} GPUs are free. Free GPUs, lower replicas, or add nodes."
            ) from exc
        self.placement_groups.append(group)
        return group

    # -- the Engine interface --------------------------------------------------------------------
    @property
    def prompt_format(self) -> PromptFormat:
        return self.tokenizer.prompt_format

    def generate(self, requests: Sequence[ChatRequest], sampling: Sampling) -> list[Completion]:
        batches = _split(requests, self.role.batch_size)
        return [c for out in self._map("generate", batches, sampling) for c in out]

    def target_logprobs(self, requests: Sequence[ScoreRequest]) -> list[TargetLogprobs]:
        batches = _split(requests, self.role.batch_size)
        return [r for out in self._map("target_logprobs", batches) for r in out]

    def stats(self) -> list[dict[str, float]]:
        """Per replica: engine calls, requests, peak and mean requests in flight."""
        import ray

        return list(ray.get([a.stats.remote() for a in self.actors]))

    def close(self) -> None:
        """Release the replicas this pool started (unless persistent: those stay for the next run)."""
        import ray
        from ray.util import remove_placement_group

        if self.role.persistent:
            return
        for name, actor in zip(self.names, self.actors, strict=False):
            if name not in self.borrowed:
                ray.kill(actor, no_restart=True)
        for group in self.placement_groups:
            remove_placement_group(group)
        self.placement_groups = []

    # -- dispatch --------------------------------------------------------------------------------
    def _acquire(self, wait: bool) -> int | None:
        """A slot on the least-loaded replica; None when all are full and ``wait`` is False."""
        with self._slots:
            while min(self._load) >= self.max_in_flight:
                if not wait:
                    return None
                self._slots.wait()
            a = self._load.index(min(self._load))
            self._load[a] += 1
            return a

    def _release(self, a: int) -> None:
        with self._slots:
            self._load[a] -= 1
            self._slots.notify_all()

    def _map(self, method: str, batches: Sequence[Sequence[Any]], *args: Any) -> list[Any]:
        import ray

        self.wait_ready()
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError

        queue = deque(range(len(batches)))
        attempts = [0] * len(batches)
        restarted: set[int] = set()
        pending: dict[Any, tuple[int, int]] = {}
        results: list[Any] = [None] * len(batches)
        try:
            while queue or pending:
                while queue:
                    a = self._acquire(wait=not pending)
                    if a is None:
                        break
                    b = queue.popleft()
                    pending[getattr(self.actors[a], method).remote(batches[b], *args)] = (b, a)
                [done], _ = ray.wait(list(pending), num_returns=1)
                b, a = pending.pop(done)
                self._release(a)
                try:
                    results[b] = self._metered(ray.get(done), a)
                except (ActorDiedError, ActorUnavailableError, RayActorError) as exc:
                    attempts[b] += 1
                    if attempts[b] > self.role.max_batch_retries:
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
        finally:
            for _, a in pending.values():  # abandoned on an error: give the slots back
                self._release(a)
        for a in restarted:  # Ray restarted these replicas: new processes
            again = ray.get(self.actors[a].ready.remote())
            self.pids[a], self.nodes[a] = again["pid"], again.get("node", "")  # perhaps on another node now
        return results

    def _metered(self, got: Any, a: int) -> Any:
        """A replica's results; its engine seconds (times the replica's devices) and its node go to
        the stage's meter."""
        if isinstance(got, tuple) and len(got) == 2 and isinstance(got[1], float):
            out, seconds = got
            record_engine_time(seconds * self.devices, self.nodes[a] or None)
            return out
        return got  # a replica of an earlier version, started before this one (persistent)

    @property
    def devices(self) -> float:
        """Devices one replica holds: its GPUs; a CPU replica counts as one device."""
        return max(1.0, float(self.placement.gpus or 0))

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


def cpu_threads(replicas: int) -> int:
    """Compute threads of a replica on CPU: the smallest node's cores shared by the pool's replicas.

    Ray sets OMP_NUM_THREADS to an actor's reserved CPUs (1 by default), which left one replica on a
    2-core machine computing on one core while the same engine in one process used two (the tiny
    model of bench/overhead.py, being Python-bound, ran no faster with two). The reservation stays
    small, so a teacher and a student of different models both fit; OMP_NUM_THREADS set by the user
    wins.
    """
    import ray

    if os.environ.get("OMP_NUM_THREADS"):
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    cores = [n["Resources"].get("CPU", 1) for n in ray.nodes() if n.get("Alive")] or [os.cpu_count() or 1]
    return max(1, int(min(cores)) // max(1, replicas))


_POOLS: dict[str, EnginePool] = {}
_POOLS_LOCK = threading.Lock()


def start_pool(role: ModelRole) -> EnginePool:
    """The pool of ``role`` in this process, its replicas started but perhaps still loading.

    One pool per model key: a teacher and a student on one model share it. Thread-safe.
    """
    key = f"{role.key()}:{role.replicas}"
    with _POOLS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = EnginePool(role, wait=False)
        return _POOLS[key]


def get_pool(role: ModelRole) -> EnginePool:
    """The pool of ``role``, ready: concurrent shard tasks asking for one model get the same replicas."""
    pool = start_pool(role)
    pool.wait_ready()
    return pool


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
