"""The ``recycle`` flow: ingest -> reflect instructions -> reflect responses -> score -> select [-> judge].

One Prefect task per (stage, shard); shards run concurrently, their engine calls balanced over the
Ray replicas of each model. A rerun with the same ``run_id`` recomputes only shards that did not
commit, and ends with the same tables as an uninterrupted run.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

from prefect import flow
from prefect.futures import PrefectFuture

from flows.factory import FlowRun
from flows.params import RecycleParams
from flows.run_context import FactoryServices
from storage.ingest import ingest_to_store
from storage.sources import stream_pairs, unique
from tasks.judge.shard_tasks import judge_task
from tasks.recycle.shard_tasks import (
    reflect_instructions_task,
    reflect_responses_task,
    score_task,
    select_task,
)
from tasks.shards import ShardJob, ShardSummary

STAGES = ("reflect instructions", "reflect responses", "score variants", "select")
JUDGE_STAGE = "judge"


def _chain(job: ShardJob, services: FactoryServices) -> list[PrefectFuture[ShardSummary]]:
    """One shard's tasks; each reads its inputs from the store, so only the order travels here."""
    ins = reflect_instructions_task.submit(job, services)
    resp = reflect_responses_task.submit(job, services, wait_for=[ins], return_state=False)
    scored = score_task.submit(job, services, wait_for=[ins, resp], return_state=False)
    chosen = select_task.submit(job, services, wait_for=[scored], return_state=False)
    if job.judge is None:
        return [ins, resp, scored, chosen]
    return [
        ins,
        resp,
        scored,
        chosen,
        judge_task.submit(job, services, wait_for=[chosen], return_state=False),
    ]


@flow(name="recycle", persist_result=True, log_prints=True)
def recycle_flow(params: RecycleParams) -> dict[str, Any]:
    """Selective Reflection-Tuning over an input file; returns the run's summary."""
    with FlowRun("recycle", params) as run:
        with run.stage("ingest"):
            counts = ingest_to_store(run.store, params.input, run.run_id)
        n = min(counts.items, params.limit) if params.limit else counts.items
        run.announce("pairs", n, counts.rejects)
        # The shards read the input again as they are admitted; a conversation's last exchange is
        # recycled after its history (docs/recycle.md).
        pairs = islice(unique(stream_pairs(params.input)), n)
        jobs = run.jobs((((p.id, p.instruction, p.input, p.output), p.history) for p in pairs), n)
        stages = (*STAGES, JUDGE_STAGE) if params.judge else STAGES
        summaries = run.run_shards(jobs, stages, _chain)
        return run.finish(summaries, counts, final="select", pairs=n, conversations=jobs.conversations)
