"""The traces flow's Prefect tasks, one per (stage, shard)."""

from __future__ import annotations

from prefect import task

from tasks.scoring.score import score_responses
from tasks.shard_tasks import TASK_OPTIONS
from tasks.shards import (
    GENERATE,
    TRACE,
    Rows,
    Services,
    ShardJob,
    ShardStore,
    ShardSummary,
    run_stage,
    upstream,
)
from tasks.teacher.stages import generate_traces
from tasks.traces.keep import scorable, score_text, trace_table_rows


@task(name="generate-traces", **TASK_OPTIONS)
def generate_traces_task(job: ShardJob, services: Services) -> ShardSummary:
    """Teacher traces, validated and verified, committed before any scoring: no teacher token is lost."""

    def compute(_: ShardStore) -> Rows:
        rows, _stats = generate_traces(
            job.questions(), services.engine(job.teacher), job.sampling, constrained=job.constrained
        )
        return [r.to_dict() for r in rows]

    return run_stage(job, services, GENERATE, compute)


@task(name="score-traces", **TASK_OPTIONS)
def score_traces_task(job: ShardJob, services: Services) -> ShardSummary:
    """IFD of each keepable trace given its question, and the keep decision."""

    def compute(store: ShardStore) -> Rows:
        student = services.engine(job.student)
        traces = [
            {k: v for k, v in r.items() if k not in ("run_id", "shard")}
            for r in upstream(store, job, GENERATE)
        ]
        todo = [t for t in traces if scorable(t)]
        scores = score_responses([score_text(t) for t in todo], student)
        return trace_table_rows(
            traces, {t["source_id"]: s for t, s in zip(todo, scores, strict=True)}, student.spec
        )

    return run_stage(job, services, TRACE, compute)
