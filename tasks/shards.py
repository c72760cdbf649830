"""Prefect tasks, one per (stage, shard): ask the store, compute with an engine, commit once, summarise.

Resume has one owner, the store (docs/architecture.md). A task first asks whether its shard is
committed; if so it reads that shard back (only its files) and returns the summary, spending no
engine time. Otherwise it reads its inputs (the upstream stages' rows of the same shard) from the
store, calls the pure stage logic with an engine, commits the rows once (a Delta app transaction),
and returns a small summary: counts, tokens, seconds. Rows never travel back to the flow and are
never put in Prefect's result storage or an input-keyed cache, so a deleted store means every
shard is computed again, and a kill between two stages loses only the stage that was running.

The engines and the store come in through ``Services``: this module does not know Ray or Delta.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.engine import Engine, ModelRole, Sampling
from tasks.prompts import PROMPT_VERSIONS
from tasks.recycle import (
    SimplePair,
    candidates,
    reflected_pairs,
    request_failures,
    score_rows,
    selection_rows,
)
from tasks.scoring.score import score_pairs, score_responses
from tasks.teacher.forms import instruction_form, response_form
from tasks.teacher.stages import ReflectionRow, generate_traces, reflect_instructions, reflect_responses
from tasks.traces import SimpleQuestion, scorable, score_text, trace_table_rows
from tasks.usage import metering

Rows = list[dict[str, Any]]


class ShardStore(Protocol):
    """The part of the store a shard task uses (``storage.store.Store`` implements it)."""

    def read_shard(self, name: str, run_id: str, stage: str, shard: int) -> Rows | None:
        """The committed shard's rows, or None when it has not been committed."""
        ...

    def commit_shard(self, name: str, rows: Rows, *, run_id: str, stage: str, shard: int) -> bool: ...


class Services(Protocol):
    """What shard tasks need from outside the pure side: an engine per model role, and the store."""

    def engine(self, role: ModelRole) -> Engine: ...

    def store(self) -> ShardStore: ...


@dataclass(frozen=True)
class ShardJob:
    """One shard of a run: its items and the models and sampling that work on them."""

    run_id: str
    shard: int
    pairs: tuple[tuple[str, str, str, str], ...]  # (id, instruction, input, output); questions: input ""
    teacher: ModelRole
    student: ModelRole
    sampling: Sampling
    constrained: bool = True
    prompt_versions: dict[str, str] = field(default_factory=lambda: dict(PROMPT_VERSIONS))
    judge: ModelRole | None = None  # the recycle flow's optional judge stage
    judge_sampling: Sampling | None = None
    judge_constrained: bool = True

    def seeds(self) -> list[SimplePair]:
        return [SimplePair(*p) for p in self.pairs]

    def questions(self) -> list[SimpleQuestion]:
        """The traces flow's items: (id, question, "", gold answer or "")."""
        return [SimpleQuestion(id, question, answer or None) for id, question, _, answer in self.pairs]


@dataclass(frozen=True)
class ShardSummary:
    """What a shard task returns to the flow instead of its rows."""

    stage: str
    shard: int
    rows: int
    resumed: bool
    seconds: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # the stage's outcome column, value -> rows
    flags: dict[str, int] = field(default_factory=dict)  # kept / valid / verified -> rows where true
    device_seconds: float = 0.0  # engine seconds x devices per replica spent on it in this run
    nodes: tuple[str, ...] = ()  # Ray nodes whose replicas computed it (this run)
    finished_at: float = 0.0  # wall clock (epoch seconds) when its task finished


@dataclass(frozen=True)
class Stage:
    """A stage's table, its name in the store's shard keys, the column its summary counts, and the
    model role whose engine it uses (None: no model)."""

    table: str
    name: str
    count_by: str
    role: str | None = None


INSTRUCTION = Stage("reflections", "instruction", "parse_status", "teacher")
RESPONSE = Stage("reflections", "response", "parse_status", "teacher")
SCORE = Stage("scores", "score", "variant", "student")
SELECT = Stage("selected", "select", "reason")
GENERATE = Stage("trace_replies", "generate", "invalid_reason", "teacher")
TRACE = Stage("traces", "trace", "reason", "student")
ANSWER = Stage("compare_answers", "answer", "status", "model")
COMPARE = Stage("comparisons", "compare", "outcome", "judge")
JUDGE = Stage("judgements", "judge", "outcome", "judge")
STAGES = {s.name: s for s in (INSTRUCTION, RESPONSE, SCORE, SELECT, GENERATE, TRACE, ANSWER, COMPARE, JUDGE)}
# The roles whose rows carry the tokens their own model wrote (a student's rows carry none of its own).
WRITERS = ("teacher", "model", "judge")
FLAGS = ("kept", "valid", "verified")


def summarize(
    stage: Stage,
    shard: int,
    rows: Rows,
    *,
    resumed: bool,
    seconds: float,
    finished_at: float,
    device_seconds: float = 0.0,
    nodes: tuple[str, ...] = (),
) -> ShardSummary:
    """Counts, flags and the teacher's tokens of a shard's rows (pure). Tokens count only where the
    stage's own model wrote them: a trace row carries its teacher reply's tokens, not the student's."""
    present = rows[0].keys() if rows else ()
    own_tokens = stage.role in WRITERS
    return ShardSummary(
        stage=stage.name,
        shard=shard,
        rows=len(rows),
        resumed=resumed,
        seconds=seconds,
        prompt_tokens=sum(int(r.get("prompt_tokens") or 0) for r in rows) if own_tokens else 0,
        completion_tokens=sum(int(r.get("completion_tokens") or 0) for r in rows) if own_tokens else 0,
        counts=dict(Counter(str(r.get(stage.count_by) or "ok") for r in rows)),
        flags={k: sum(1 for r in rows if r.get(k) is True) for k in FLAGS if k in present},
        device_seconds=device_seconds,
        nodes=nodes,
        finished_at=finished_at,
    )


class Shard(Protocol):
    """What committing a shard needs of its job: the run and the shard's number."""

    @property
    def run_id(self) -> str: ...
    @property
    def shard(self) -> int: ...


def run_stage(
    job: Shard, services: Services, stage: Stage, compute: Callable[[ShardStore], Rows]
) -> ShardSummary:
    """The committed shard's summary, or compute, commit once and summarise."""
    t0 = time.perf_counter()
    store = services.store()
    stored = store.read_shard(stage.table, job.run_id, stage.name, job.shard)
    if stored is not None:
        return summarize(
            stage, job.shard, stored, resumed=True, seconds=time.perf_counter() - t0, finished_at=time.time()
        )
    with metering(stage.name) as meter:
        rows = [{"run_id": job.run_id, "shard": job.shard, **r} for r in compute(store)]
    store.commit_shard(stage.table, rows, run_id=job.run_id, stage=stage.name, shard=job.shard)
    return summarize(
        stage,
        job.shard,
        rows,
        resumed=False,
        seconds=time.perf_counter() - t0,
        finished_at=time.time(),
        device_seconds=meter.device_seconds,
        nodes=tuple(sorted(meter.nodes)),
    )


def _upstream(store: ShardStore, job: ShardJob, stage: Stage) -> Rows:
    """An upstream stage's rows of this shard; it committed before this task was started."""
    rows = store.read_shard(stage.table, job.run_id, stage.name, job.shard)
    if rows is None:
        raise RuntimeError(f"shard {job.shard} of stage {stage.name!r} is not in the store")
    return rows


def _reflections(rows: Sequence[dict[str, Any]]) -> list[ReflectionRow]:
    names = ReflectionRow.__dataclass_fields__
    return [ReflectionRow(**{k: row[k] for k in names}) for row in rows]


# Retries cover transient failures (an engine replica restarting, a commit conflict); nothing is
# cached or persisted by Prefect: the store is the record.
TASK_OPTIONS: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": [2, 10],
    "cache_policy": NO_CACHE,
    "persist_result": False,
}


@task(name="reflect-instructions", **TASK_OPTIONS)
def reflect_instructions_task(job: ShardJob, services: Services) -> ShardSummary:
    def compute(_: ShardStore) -> Rows:
        rows, _stats = reflect_instructions(
            job.seeds(), services.engine(job.teacher), job.sampling, constrained=job.constrained
        )
        return [r.to_dict() for r in rows]

    return run_stage(job, services, INSTRUCTION, compute)


@task(name="reflect-responses", **TASK_OPTIONS)
def reflect_responses_task(job: ShardJob, services: Services) -> ShardSummary:
    def compute(store: ShardStore) -> Rows:
        teacher = services.engine(job.teacher)
        instruction_rows = _reflections(_upstream(store, job, INSTRUCTION))
        original, _ = reflect_responses(
            job.seeds(), teacher, job.sampling, which="original", constrained=job.constrained
        )
        reflected, _ = reflect_responses(
            reflected_pairs(instruction_rows),
            teacher,
            job.sampling,
            which="reflected",
            constrained=job.constrained,
        )
        return [r.to_dict() for r in [*original, *reflected]]

    return run_stage(job, services, RESPONSE, compute)


@task(name="score-variants", **TASK_OPTIONS)
def score_task(job: ShardJob, services: Services) -> ShardSummary:
    def compute(store: ShardStore) -> Rows:
        student = services.engine(job.student)
        cands = candidates(
            job.seeds(),
            _reflections(_upstream(store, job, INSTRUCTION)),
            _reflections(_upstream(store, job, RESPONSE)),
        )
        return score_rows(cands, score_pairs([c.text for c in cands], student), student.spec)

    return run_stage(job, services, SCORE, compute)


@task(name="select", **TASK_OPTIONS)
def select_task(job: ShardJob, services: Services) -> ShardSummary:
    def compute(store: ShardStore) -> Rows:
        version = "+".join(job.prompt_versions[k] for k in ("reflect_instruction", "reflect_response"))
        forms = (instruction_form(job.sampling.max_tokens), response_form(job.sampling.max_tokens))
        version += "+json" if job.constrained and all(f.fits() for f in forms) else ""
        reflections = _reflections([*_upstream(store, job, INSTRUCTION), *_upstream(store, job, RESPONSE)])
        return selection_rows(
            _upstream(store, job, SCORE),
            teacher=job.teacher.spec,
            student=job.student.spec,
            prompt_version=version,
            failures=request_failures(reflections),
        )

    return run_stage(job, services, SELECT, compute)


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
            for r in _upstream(store, job, GENERATE)
        ]
        todo = [t for t in traces if scorable(t)]
        scores = score_responses([score_text(t) for t in todo], student)
        return trace_table_rows(
            traces, {t["source_id"]: s for t, s in zip(todo, scores, strict=True)}, student.spec
        )

    return run_stage(job, services, TRACE, compute)
