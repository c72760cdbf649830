"""Ray actor pools of engine replicas: one pool per distinct model, N replicas each.

A pool is itself an Engine (``generate``, ``prompt_format``, ``target_logprobs``), so stage logic
does not know whether it talks to one local engine or to replicas on a cluster.

- **Keeping engines busy.** A replica is a threaded actor: batches from concurrent shard tasks
  reach it together, and it hands its engine everything waiting (same method and sampling) in one
  call, up to a bound per replica: vLLM's ``max_num_seqs`` on a GPU (vLLM wants hundreds of
  sequences in flight), 16 on a CPU (smaller calls measured faster there; docs/architecture.md).
- **Backpressure.** Batches go to the least-loaded replica, with a bound on batches in flight per
  replica shared by every caller of the pool.
- **Failures.** A replica that dies is restarted by Ray and its batch retried, a bounded number of
  times, with an error that names the replica and the batch.
- **Placement.** A replica that needs more than one GPU (tensor x pipeline parallel) reserves them
  through a placement group, and vLLM runs its workers in it. A replica that cannot be placed is a
  clear error within ``placement_timeout_s`` (what the role asks for, what the cluster has), not a
  hang: replicas load their models after Ray has placed them, so the two waits are told apart.
- **Paid endpoints.** An ``openai:`` role's replicas share one rate limiter (``infra.limiter``, a
  named actor) and the pool holds the role's budget for the run (``tasks.budget``): a request is
  sent only if what it may cost fits, whichever replica sends it.
- **Reuse.** Replicas are named actors, so a teacher and a student on the same model share them, and
  persistent replicas (detached actors) let a later run on the same Ray head reuse loaded models.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from tasks.budget import Budget, Reservation, exhausted
from tasks.engine import ChatRequest, Completion, ModelRole, Sampling, ScoreRequest, TargetLogprobs
from tasks.scoring.templates import PromptFormat
from tasks.usage import current_stage, record_engine_time

from .cluster import NAMESPACE
from .engines.tokenizer import TextTokenizer
from .occupancy import OccupancyMeter, merge_reports
from .placement import Placement, plan_placement
from .replica import SPARE_ACTOR_THREADS, EngineReplica

# How often a pool samples its replicas' engines for occupancy.
SAMPLE_INTERVAL_S = 0.2
# Batches a replica serves at once (its actor threads) unless max_in_flight says otherwise.
MAX_BATCHES_PER_REPLICA = 256
# How long replicas may wait for Ray to place them before the pool says why they cannot be.
PLACEMENT_TIMEOUT_S = 60.0
# Engine options the pool applies for the whole run instead of each replica for itself.
RUN_OPTIONS = ("token_budget", "max_cost")
# How long closing a pool waits for its rate limiter's name to be released.
LIMITER_END_TIMEOUT_S = 10.0


class PoolError(RuntimeError):
    """A batch failed on every try, or replicas could not start or be placed; says which and why."""


class Unplaceable(PoolError):
    """Replicas that Ray cannot place: no retry changes that (the run fails with exit 2)."""

    final = True


class EnginePool:
    """Replicas of one engine as named Ray actors, used like a single engine (and thread-safe)."""

    def __init__(
        self,
        role: ModelRole,
        *,
        ready_timeout_s: float = 900.0,
        placement_timeout_s: float = PLACEMENT_TIMEOUT_S,
        wait: bool = True,
    ) -> None:
        """Start the replicas; with ``wait=False`` return at once (they load their models meanwhile,
        and the first call waits for them: ``wait_ready``)."""
        import ray

        self.role = role
        self.spec = role.spec
        self.names = [f"engine-{role.key()}-{i}" for i in range(role.replicas)]
        # Replicas someone else started (a persistent pool of the same model) are borrowed: used,
        # never killed by this pool's close().
        self.borrowed = {name for name in self.names if _actor_exists(name)}
        self.placement: Placement = plan_placement(role)
        self.placement_groups: list[Any] = []
        self.ready_timeout_s = ready_timeout_s
        self.placement_timeout_s = placement_timeout_s
        paid = paid_options(role)
        self.budget = run_budget(role, paid)
        self.limiter, self._limiter_actor = start_limiter(role, paid)  # the handle keeps the actor alive
        engine_options = {k: v for k, v in role.options.items() if k not in RUN_OPTIONS}
        remote: Any = ray.remote(EngineReplica)
        self.actors = []
        for i, name in enumerate(self.names):
            options = self._actor_options(i, name, placement_timeout_s)
            self.actors.append(
                remote.options(**options).remote(role.spec, engine_options, role.merge_bound, self.limiter)
            )
        self._placed_refs = [a.__ray_ready__.remote() for a in self.actors]
        self._unplaceable: Unplaceable | None = None
        self._ready_refs = [a.ready.remote() for a in self.actors]
        # The tokenizer loads when a scorer first asks for the prompt format: a generator behind an
        # OpenAI-style API (a judge, a served teacher) may have no tokenizer to load.
        self._tokenizer: TextTokenizer | None = None
        self._tokenizer_lock = threading.Lock()  # not the ready lock: a scorer need not wait for replicas
        self._ready_lock = threading.Lock()
        self.replicas_ready: list[dict[str, Any]] = []
        self.pids: list[int] = []
        self.nodes: list[str] = []  # the Ray node of each replica
        self.pids_at_start: list[int] = []
        self.merge_bounds: list[int] = []
        self.capacities: list[int] = []  # requests each replica's engine runs at once
        self.max_in_flight = 1  # batches per replica (an explicit cap, or as many as its threads)
        self.max_requests: list[int] = []  # requests per replica before the pool holds back
        self.occupancy = OccupancyMeter()
        self._outstanding: dict[str, int] = {}  # requests asked of the pool and not answered, per stage
        self._sampler: threading.Thread | None = None
        self._closed = threading.Event()
        self.retried = 0  # batches sent again after their replica died
        self._load = [0] * len(self.actors)  # batches held by each replica
        self._held = [0] * len(self.actors)  # requests held by each replica
        self._slots = threading.Condition()
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Block until every replica has loaded its model (once; later calls return at once)."""
        import ray

        with self._ready_lock:
            if self.replicas_ready:
                return
            if self._unplaceable is not None:  # said once; every later caller gets the same error
                raise self._unplaceable
            _, unplaced = ray.wait(
                self._placed_refs, num_returns=len(self._placed_refs), timeout=self.placement_timeout_s
            )
            if unplaced:
                self.close()
                self._unplaceable = Unplaceable(self._unplaced(len(unplaced)))
                raise self._unplaceable
            try:
                ready = ray.get(self._ready_refs, timeout=self.ready_timeout_s)
            except Exception as exc:
                self.close()
                raise PoolError(f"replicas of {self.role.spec} did not start: {_cause(exc)}") from exc
            self.pids = [r["pid"] for r in ready]
            self.nodes = [r.get("node", "") for r in ready]  # none from a replica of an earlier version
            self.merge_bounds = [int(r["merge_bound"]) for r in ready]
            self.pids_at_start = list(self.pids)
            self.capacities = [int(r.get("capacity") or r["merge_bound"]) for r in ready]
            # Keep each replica full: twice its capacity in flight, so that new requests are already
            # there when others finish (backpressure beyond that). Counted in requests, not batches:
            # a batch stays open until its slowest request ends, and shards send batches of any size.
            # An explicit max_in_flight also caps the batches.
            self.max_requests = [2 * c + self.role.batch_size for c in self.capacities]
            self.max_in_flight = self.role.max_in_flight or MAX_BATCHES_PER_REPLICA
            self.replicas_ready = list(ready)

    def _actor_options(self, index: int, name: str, placement_timeout_s: float) -> dict[str, Any]:
        role, placement = self.role, self.placement
        options: dict[str, Any] = {
            "name": name,
            "namespace": NAMESPACE,
            "get_if_exists": True,
            "num_cpus": role.cpus(),
            "num_gpus": placement.actor_gpus,
            "max_restarts": role.max_batch_retries + 1,
            "max_task_retries": 0,
            "max_concurrency": (role.max_in_flight or MAX_BATCHES_PER_REPLICA) + SPARE_ACTOR_THREADS,
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

    def _unplaced(self, missing: int) -> str:
        """Why ``missing`` replicas wait for Ray: what each asks for, and what the cluster has."""
        import ray

        asks = {"CPU": self.role.cpus(), "GPU": float(self.placement.gpus or 0)}
        total, free = ray.cluster_resources(), ray.available_resources()

        def show(resources: dict[str, float]) -> str:
            return ", ".join(f"{resources.get(k, 0.0):g} {k}" for k in ("CPU", "GPU"))

        return (
            f"{missing} of {self.role.replicas} replicas of {self.role.spec} could not be placed within "
            f"{self.placement_timeout_s:.0f} s: each asks for {show(asks)}; the Ray cluster has "
            f"{show(total)}, {show(free)} free (other pools hold the rest). Lower num_cpus, num_gpus or "
            "replicas of this role, or add nodes."
        )

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

    @property
    def tokenizer(self) -> TextTokenizer:
        with self._tokenizer_lock:
            if self._tokenizer is None:
                from infra.engines import load_tokenizer

                self._tokenizer = load_tokenizer(self.role.spec, self.role.options)
            return self._tokenizer

    def generate(self, requests: Sequence[ChatRequest], sampling: Sampling) -> list[Completion]:
        if not self.budget.limited:
            return self._generate(requests, sampling)
        # Each request is sent once its reservation fits the role's budget beside every request in
        # flight (any shard's); one that can never fit is refused, and no request is sent past it.
        out: list[Completion | None] = [None] * len(requests)
        pending = list(range(len(requests)))
        while pending:
            held: list[tuple[int, Reservation]] = []
            waiting: list[int] = []
            for k, i in enumerate(pending):
                got, final = self.budget.try_reserve(requests[i], sampling)
                if got is not None:
                    held.append((i, got))
                elif final:
                    out[i] = Completion("", None, 0, 0, error=exhausted(self.budget))
                else:
                    waiting = pending[k:]
                    break
            if held:
                answers = self._generate([requests[i] for i, _ in held], sampling)
                for (i, reservation), completion in zip(held, answers, strict=True):
                    out[i] = completion
                    self.budget.settle(reservation, completion)
            elif waiting:
                self.budget.wait_for_settle()
            pending = waiting
        return [c if c is not None else Completion("", None, 0, 0, error=exhausted(self.budget)) for c in out]

    def _generate(self, requests: Sequence[ChatRequest], sampling: Sampling) -> list[Completion]:
        if not requests:
            return []
        batches = _split(requests, self.role.batch_size)
        return [c for out in self._map("generate", batches, sampling) for c in out]

    def limits(self) -> dict[str, Any] | None:
        """The shared rate limiter's state (an ``openai:`` role), or None."""
        if self.limiter is None:
            return None
        from .limiter import RayLimiter

        return RayLimiter(self.limiter).snapshot()

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

        self._closed.set()
        if self.role.persistent:
            return
        for name, actor in zip(self.names, self.actors, strict=False):
            if name not in self.borrowed:
                ray.kill(actor, no_restart=True)
        for group in self.placement_groups:
            remove_placement_group(group)
        self.placement_groups = []
        self._end_limiter()

    def _end_limiter(self) -> None:
        """End this run's rate limiter and wait until its name is free.

        Dropping the handle would end it too, but later: a rerun in the same process then found the
        dying actor by name (``get_if_exists``) and its replicas missed it a moment after.
        """
        import ray

        if self.limiter is None or self._limiter_actor is None:
            return
        ray.kill(self._limiter_actor, no_restart=True)
        self._limiter_actor = None
        deadline = time.monotonic() + LIMITER_END_TIMEOUT_S
        while _actor_exists(self.limiter) and time.monotonic() < deadline:
            time.sleep(0.05)

    # -- dispatch --------------------------------------------------------------------------------
    def _acquire(self, size: int, wait: bool) -> int | None:
        """A slot for a batch of ``size`` on the least-loaded replica that has room; None when all are
        full and ``wait`` is False. A replica with room holds fewer than its request bound and batch
        cap (an empty replica always has room)."""
        with self._slots:
            while True:
                room = [
                    a
                    for a in range(len(self.actors))
                    if self._load[a] == 0
                    or (self._load[a] < self.max_in_flight and self._held[a] + size <= self.max_requests[a])
                ]
                if room:
                    break
                if not wait:
                    return None
                self._slots.wait()
            a = min(room, key=lambda r: (self._held[r] / max(1, self.capacities[r]), self._load[r]))
            self._load[a] += 1
            self._held[a] += size
            return a

    def _release(self, a: int, size: int) -> None:
        with self._slots:
            self._load[a] -= 1
            self._held[a] -= size
            self._slots.notify_all()

    # -- occupancy -------------------------------------------------------------------------------
    def _count(self, stage: str, delta: int) -> None:
        with self._slots:
            self._outstanding[stage] = self._outstanding.get(stage, 0) + delta
        if self._sampler is None:
            with self._ready_lock:
                if self._sampler is None:
                    self._sampler = threading.Thread(target=self._sample, name="pool-occupancy", daemon=True)
                    self._sampler.start()

    def _sample(self, interval: float = SAMPLE_INTERVAL_S) -> None:
        """Sample the replicas' engines while this pool has requests outstanding (docs/architecture.md)."""
        import ray

        last = time.monotonic()
        while not self._closed.wait(interval):
            with self._slots:
                outstanding = {k: v for k, v in self._outstanding.items() if v > 0}
            now = time.monotonic()
            if not outstanding:
                last = now
                continue
            try:
                loads = ray.get([a.load.remote() for a in self.actors], timeout=max(1.0, 10 * interval))
            except Exception:  # a replica restarting: no sample, not a failure
                last = now
                continue
            running = sum(int(x.get("running", 0)) for x in loads)
            capacity = sum(int(x.get("capacity", 0)) for x in loads) or sum(self.capacities)
            # Requests not finished yet: still queued at the pool, or unfinished in a replica (a batch
            # stays open until its last request ends; its finished requests are not outstanding).
            with self._slots:
                at_pool = max(0, sum(outstanding.values()) - sum(self._held))
            unfinished = at_pool + sum(
                int(x.get("running", 0)) + int(x.get("waiting", 0)) + int(x.get("queued", 0)) for x in loads
            )
            self.occupancy.sample(now - last, running, capacity, outstanding, unfinished)
            last = now

    def _map(self, method: str, batches: Sequence[Sequence[Any]], *args: Any) -> list[Any]:
        import ray

        self.wait_ready()
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError

        stage = current_stage()
        self._count(stage, sum(len(b) for b in batches))
        queue = deque(range(len(batches)))
        attempts = [0] * len(batches)
        restarted: set[int] = set()
        pending: dict[Any, tuple[int, int]] = {}
        results: list[Any] = [None] * len(batches)
        try:
            while queue or pending:
                while queue:
                    a = self._acquire(len(batches[queue[0]]), wait=not pending)
                    if a is None:
                        break
                    b = queue.popleft()
                    pending[getattr(self.actors[a], method).remote(batches[b], *args)] = (b, a)
                [done], _ = ray.wait(list(pending), num_returns=1)
                b, a = pending.pop(done)
                self._release(a, len(batches[b]))
                try:
                    results[b] = self._metered(ray.get(done), a)
                    self._count(stage, -len(batches[b]))
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
            for b, a in pending.values():  # abandoned on an error: give the slots back
                self._release(a, len(batches[b]))
            self._count(stage, -sum(len(batches[b]) for b in range(len(batches)) if results[b] is None))
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


def paid_options(role: ModelRole) -> Any:
    """An ``openai:`` role's checked options (budget, rate limits), or None for a local engine."""
    if not role.spec.startswith("openai:"):
        return None
    from .engines import check_options

    return check_options(role.spec, role.options)


def run_budget(role: ModelRole, paid: Any) -> Budget:
    """The role's budget for this run (``token_budget``, ``max_cost`` at its prices), or none."""
    if paid is None:
        return Budget()
    return Budget(tokens=paid.token_budget, dollars=paid.max_cost, prices=role.prices)


def start_limiter(role: ModelRole, paid: Any) -> tuple[str | None, Any]:
    """The rate limiter that an ``openai:`` role's replicas share (started here): name and handle."""
    if paid is None:
        return None, None
    from .engines import parse_spec
    from .engines.openai_engine import DEFAULT_BASE_URL
    from .limiter import limiter_name, start_ray_limiter

    parsed = parse_spec(role.spec)
    base_url = parsed.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    name = limiter_name(parsed.model, base_url)
    return name, start_ray_limiter(name, {"rpm": paid.rpm, "tpm": paid.tpm}, detached=role.persistent)


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


def pools_limits() -> dict[str, dict[str, Any]]:
    """The shared rate limiters' state of this process's ``openai:`` pools, by spec."""
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
    return {pool.spec: limits for pool in pools if (limits := pool.limits()) is not None}


def pools_occupancy() -> dict[str, dict[str, float]]:
    """Occupancy and idle seconds per stage over every pool of this process (before ``close_pools``)."""
    with _POOLS_LOCK:
        return merge_reports([pool.occupancy.report() for pool in _POOLS.values()])


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
