"""Prefect tasks, one per (stage, shard): thin wrappers that call stage logic with engine pools and the store.

Every task first asks the store whether its shard is already committed (a rerun after a crash) and
then reads the rows back instead of recomputing; otherwise it computes, commits the shard once, and
returns the rows. Prefect caches results on (run, store, stage, shard content, models, prompt
versions, sampling), and retries transient engine failures with backoff.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow.compute as pc
from prefect import task
from prefect.context import TaskRunContext

from infra.engines.base import Sampling
from infra.pool import PoolConfig, get_pool
from storage.store import Store
from tasks.prompts import PROMPT_VERSIONS
from tasks.recycle import SimplePair, candidates, reflected_pairs, score_rows, selection_rows
from tasks.scoring.score import score_pairs, score_responses
from tasks.teacher.stages import ReflectionRow, generate_traces, reflect_instructions, reflect_responses
from tasks.traces import SimpleQuestion, scorable, score_text, trace_table_rows

Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class ShardJob:
    """Everything a shard task needs, JSON-able so Prefect can hash it and show it."""

    run_id: str
    store: str
    shard: int
    pairs: tuple[tuple[str, str, str, str], ...]  # (id, instruction, input, output); questions: input ""
    teacher: dict[str, Any]
    student: dict[str, Any]
    sampling: dict[str, Any]
    prompt_versions: dict[str, str] = field(default_factory=lambda: dict(PROMPT_VERSIONS))

    def seeds(self) -> list[SimplePair]:
        return [SimplePair(*p) for p in self.pairs]

    def questions(self) -> list[SimpleQuestion]:
        """The traces flow's items: (id, question, "", gold answer or "")."""
        return [SimpleQuestion(id, question, answer or None) for id, question, _, answer in self.pairs]

    def key(self, stage: str) -> str:
        blob = json.dumps({"stage": stage, **asdict(self)}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


def _cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    job: ShardJob = parameters["job"]
    return job.key(context.task.name)


def _stored(job: ShardJob, table: str, stage: str) -> Rows | None:
    """The shard's committed rows, or None when it has not committed (not run, or killed before)."""
    store = Store(job.store)
    if not store.shard_committed(table, job.run_id, stage, job.shard):
        return None
    key = f"reflectory/{job.run_id}/{stage}/{table}/{job.shard}"
    return [
        {k: v for k, v in row.items() if k != "shard_key"}
        for row in store.table(table).filter(pc.field("shard_key") == key).to_pylist()
    ]


def _stored_or_computed(job: ShardJob, table: str, stage: str, compute: Callable[[], Rows]) -> Rows:
    stored = _stored(job, table, stage)
    if stored is not None:
        return stored
    rows = [{"run_id": job.run_id, "shard": job.shard, **r} for r in compute()]
    Store(job.store).commit_shard(table, rows, run_id=job.run_id, stage=stage, shard=job.shard)
    return rows


def _reflection(row: dict[str, Any]) -> ReflectionRow:
    names = ReflectionRow.__dataclass_fields__
    return ReflectionRow(**{k: row[k] for k in names})


TASK_OPTIONS: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": [2, 10],
    "cache_key_fn": _cache_key,
    "persist_result": True,
}


@task(name="reflect-instructions", **TASK_OPTIONS)
def reflect_instructions_task(job: ShardJob) -> Rows:
    def compute() -> Rows:
        teacher = get_pool(PoolConfig(**job.teacher))
        rows, _ = reflect_instructions(job.seeds(), teacher, Sampling(**job.sampling))
        return [r.to_dict() for r in rows]

    return _stored_or_computed(job, "reflections", "instruction", compute)


@task(name="reflect-responses", **TASK_OPTIONS)
def reflect_responses_task(job: ShardJob, instruction_rows: Rows) -> Rows:
    def compute() -> Rows:
        teacher = get_pool(PoolConfig(**job.teacher))
        sampling = Sampling(**job.sampling)
        original, _ = reflect_responses(job.seeds(), teacher, sampling, which="original")
        reflected, _ = reflect_responses(
            reflected_pairs(_reflection(r) for r in instruction_rows), teacher, sampling, which="reflected"
        )
        return [r.to_dict() for r in [*original, *reflected]]

    return _stored_or_computed(job, "reflections", "response", compute)


@task(name="score-variants", **TASK_OPTIONS)
def score_task(job: ShardJob, instruction_rows: Rows, response_rows: Rows) -> Rows:
    def compute() -> Rows:
        student = get_pool(PoolConfig(**job.student))
        cands = candidates(
            job.seeds(), [_reflection(r) for r in instruction_rows], [_reflection(r) for r in response_rows]
        )
        scores = score_pairs([c.text for c in cands], student)
        return score_rows(cands, scores, student.spec)

    return _stored_or_computed(job, "scores", "score", compute)


@task(name="select", **TASK_OPTIONS)
def select_task(job: ShardJob, scores: Rows) -> Rows:
    def compute() -> Rows:
        version = "+".join(job.prompt_versions[k] for k in ("reflect_instruction", "reflect_response"))
        return selection_rows(
            scores, teacher=job.teacher["spec"], student=job.student["spec"], prompt_version=version
        )

    return _stored_or_computed(job, "selected", "select", compute)


@task(name="generate-traces", **TASK_OPTIONS)
def generate_traces_task(job: ShardJob) -> Rows:
    """Teacher traces, validated and verified; not committed on their own (Prefect caches them).

    A shard whose ``traces`` rows already committed returns those and spends no teacher time.
    """
    stored = _stored(job, "traces", "trace")
    if stored is not None:
        return stored
    teacher = get_pool(PoolConfig(**job.teacher))
    rows, _ = generate_traces(job.questions(), teacher, Sampling(**job.sampling))
    return [r.to_dict() for r in rows]


@task(name="score-traces", **TASK_OPTIONS)
def score_traces_task(job: ShardJob, traces: Rows) -> Rows:
    """IFD of each keepable trace given its question, the keep decision, and the shard's commit."""

    def compute() -> Rows:
        student = get_pool(PoolConfig(**job.student))
        todo = [t for t in traces if scorable(t)]
        scores = score_responses([score_text(t) for t in todo], student)
        return trace_table_rows(
            traces, {t["source_id"]: s for t, s in zip(todo, scores, strict=True)}, student.spec
        )

    return _stored_or_computed(job, "traces", "trace", compute)
