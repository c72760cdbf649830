"""The ``traces`` flow: ingest questions -> generate traces -> validate and verify -> score -> ``traces``.

The teacher writes a Reflection-format trace per question (``<thinking>`` with ``<reflection>``
self-corrections, then ``<output>``); each is checked for structure, its output verified against the
gold answer when the question has one, and the student scores IFD(trace | question). Every trace
lands in ``traces`` with ``kept`` and the ``reason``; curation and export read the kept ones.
Like ``recycle``, a rerun with the same ``run_id`` recomputes only shards that did not commit.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture

from flows.factory import FlowRun
from flows.params import TracesParams
from flows.shard_tasks import ShardJob, generate_traces_task, score_traces_task
from storage.ingest import ingest_questions_to_store

STAGES = ("generate traces", "score and keep")


def _chain(job: ShardJob) -> list[PrefectFuture[Any]]:
    generated = generate_traces_task.submit(job)
    # Prefect resolves futures passed as arguments (typed as the plain result here).
    return [generated, score_traces_task.submit(job, generated)]  # type: ignore[call-overload]


@flow(name="traces", persist_result=True, log_prints=True)
def traces_flow(params: TracesParams) -> dict[str, Any]:
    """Verified reflection traces over a file of questions; returns the run's summary."""
    logger = get_run_logger()
    run = FlowRun("traces", params)
    with run.stage("ingest"):
        loaded, counts = ingest_questions_to_store(run.store, params.input, run.run_id)
        questions = loaded.questions[: params.limit] if params.limit else loaded.questions
    logger.info(
        "run %s: %d questions (%d rejected rows) in %s",
        run.run_id,
        len(questions),
        counts.rejects,
        params.input,
    )

    jobs = run.jobs([(q.id, q.question, "", q.answer or "") for q in questions])
    traces = [row for rows in run.run_shards(jobs, STAGES, _chain) for row in rows]
    return run.finish(
        traces,
        jobs,
        counts,
        table="traces",
        tokens_by=("traces", "teacher"),
        questions=len(questions),
        valid=sum(1 for r in traces if r["valid"]),
        verified=sum(1 for r in traces if r["verified"]),
    )
