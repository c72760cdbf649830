"""The ``recycle`` flow: ingest -> reflect instructions -> reflect responses -> score -> select.

One Prefect task per (stage, shard); shards run concurrently, their engine calls balanced over the
Ray replicas of each model. A rerun with the same ``run_id`` recomputes only shards that did not
commit, and ends with the same tables as an uninterrupted run.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture

from flows.factory import FlowRun
from flows.params import RecycleParams
from flows.shard_tasks import (
    ShardJob,
    reflect_instructions_task,
    reflect_responses_task,
    score_task,
    select_task,
)
from storage.ingest import ingest_to_store

STAGES = ("reflect instructions", "reflect responses", "score variants", "select")


def _chain(job: ShardJob) -> list[PrefectFuture[Any]]:
    ins = reflect_instructions_task.submit(job)
    # Prefect resolves futures passed as arguments (typed as the plain result here).
    resp = reflect_responses_task.submit(job, ins)  # type: ignore[call-overload]
    scored = score_task.submit(job, ins, resp)  # type: ignore[call-overload]
    return [ins, resp, scored, select_task.submit(job, scored)]


@flow(name="recycle", persist_result=True, log_prints=True)
def recycle_flow(params: RecycleParams) -> dict[str, Any]:
    """Selective Reflection-Tuning over an input file; returns the run's summary."""
    logger = get_run_logger()
    run = FlowRun("recycle", params)
    with run.stage("ingest"):
        loaded, counts = ingest_to_store(run.store, params.input, run.run_id)
        pairs = loaded.pairs[: params.limit] if params.limit else loaded.pairs
    logger.info(
        "run %s: %d pairs (%d rejected rows) in %s", run.run_id, len(pairs), counts.rejects, params.input
    )

    jobs = run.jobs([(p.id, p.instruction, p.input, p.output) for p in pairs])
    selected = [row for rows in run.run_shards(jobs, STAGES, _chain) for row in rows]
    return run.finish(
        selected, jobs, counts, table="selected", tokens_by=("reflections", "stage"), pairs=len(pairs)
    )
