"""The ``traces`` flow: ingest questions -> generate traces -> validate and verify -> score -> ``traces``.

The teacher writes a Reflection-format trace per question (``<thinking>`` with ``<reflection>``
self-corrections, then ``<output>``); each is checked for structure, its output verified against the
gold answer when the question has one, and the student scores IFD(trace | question). Every trace
lands in ``traces`` with ``kept`` and the ``reason``; curation and export read the kept ones.
Like ``recycle``, a rerun with the same ``run_id`` recomputes only shards that did not commit.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

from prefect import flow
from prefect.futures import PrefectFuture

from flows.factory import FlowRun
from flows.params import TracesParams
from flows.run_context import FactoryServices
from storage.ingest import ingest_questions_to_store
from storage.sources import stream_questions, unique
from tasks.shards import ShardJob, ShardSummary
from tasks.traces.shard_tasks import generate_traces_task, score_traces_task

STAGES = ("generate traces", "score and keep")


def _chain(job: ShardJob, services: FactoryServices) -> list[PrefectFuture[ShardSummary]]:
    generated = generate_traces_task.submit(job, services)
    return [generated, score_traces_task.submit(job, services, wait_for=[generated], return_state=False)]


@flow(name="traces", persist_result=True, log_prints=True)
def traces_flow(params: TracesParams) -> dict[str, Any]:
    """Verified reflection traces over a file of questions; returns the run's summary."""
    with FlowRun("traces", params) as run:
        with run.stage("ingest"):
            counts = ingest_questions_to_store(run.store, params.input, run.run_id)
        n = min(counts.items, params.limit) if params.limit else counts.items
        run.announce("questions", n, counts.rejects)
        questions = islice(unique(stream_questions(params.input)), n)  # read again, shard by shard
        jobs = run.jobs((((q.id, q.question, "", q.answer or ""), ()) for q in questions), n)
        summaries = run.run_shards(jobs, STAGES, _chain)
        return run.finish(summaries, counts, final="trace", questions=n)
