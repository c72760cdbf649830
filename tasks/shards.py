"""The shard machinery of every stage: ask the store, compute with an engine, commit once, summarise.

Resume has one owner, the store (docs/architecture.md). A task first asks whether its shard is
committed; if so it reads that shard back (only its files) and returns the summary, spending no
engine time. Otherwise it reads its inputs (the upstream stages' rows of the same shard) from the
store, calls the pure stage logic with an engine, commits the rows once (a Delta app transaction),
and returns a small summary: counts, tokens, seconds. Rows never travel back to the flow and are
never put in Prefect's result storage or an input-keyed cache, so a deleted store means every
shard is computed again, and a kill between two stages loses only the stage that was running.

The engines and the store come in through ``Services``: this module does not know Ray, Prefect or
Delta. The Prefect tasks that run it are each concept's ``shard_tasks`` module (``tasks.recycle``,
``tasks.traces``, ``tasks.judge``), with the options of ``tasks.shard_tasks``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from itertools import islice
from typing import Any, Protocol

from tasks.budget import BUDGET_EXHAUSTED, BudgetStopped
from tasks.conversation import History
from tasks.engine import Engine, ModelRole, Sampling
from tasks.ingest.records import Question
from tasks.prompts import PROMPT_VERSIONS
from tasks.recycle.variants import SimplePair
from tasks.teacher.stages import ReflectionRow
from tasks.usage import metering

Rows = list[dict[str, Any]]
# One item of a shard: (id, instruction, input, output); a question is (id, question, "", gold or "").
Item = tuple[str, str, str, str]


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
    pairs: tuple[Item, ...]
    teacher: ModelRole
    student: ModelRole
    sampling: Sampling
    constrained: bool = True
    prompt_versions: dict[str, str] = field(default_factory=lambda: dict(PROMPT_VERSIONS))
    judge: ModelRole | None = None  # the recycle flow's optional judge stage
    judge_sampling: Sampling | None = None
    judge_constrained: bool = True
    # (id, history) of the pairs that end a conversation (tasks.conversation); single-turn pairs have
    # none, so a shard of Alpaca rows carries nothing more.
    histories: tuple[tuple[str, History], ...] = ()

    def seeds(self) -> list[SimplePair]:
        history = dict(self.histories)
        return [SimplePair(*p, history=history.get(p[0], ())) for p in self.pairs]

    def questions(self) -> list[Question]:
        """The traces flow's items: (id, question, "", gold answer or "")."""
        return [Question(id, question, answer or None) for id, question, _, answer in self.pairs]


class Jobs(Protocol):
    """Shard jobs to admit one by one, and how many there are (a list, or ``ShardJobs``)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Any]: ...


class ShardJobs:
    """A run's shard jobs, made one at a time as the flow admits them, so that the flow holds the
    shards in flight and not its input (docs/architecture.md).

    ``items``: each item with the conversation before it (``()`` for a single exchange), ``total`` of
    them, read once; ``template``: the job every shard copies (run id, models, sampling); ``source``
    names the input in the error raised when it does not hold ``total`` items any more.
    """

    def __init__(
        self, items: Iterable[tuple[Item, History]], total: int, size: int, template: ShardJob, source: str
    ) -> None:
        self._items, self.items_total, self.size = items, total, max(1, size)
        self.template, self.source = template, source
        self.conversations = 0  # items with a history, among those made so far
        self._started = False

    def __len__(self) -> int:
        return -(-self.items_total // self.size)

    def __iter__(self) -> Iterator[ShardJob]:
        if self._started:
            raise RuntimeError("a run's shard jobs are made once")
        self._started = True
        return self._make()

    def _make(self) -> Iterator[ShardJob]:
        stream = iter(self._items)
        made = 0
        for n in range(len(self)):
            shard = list(islice(stream, min(self.size, self.items_total - made)))
            if not shard:
                break
            made += len(shard)
            self.conversations += sum(1 for _, history in shard if history)
            yield replace(
                self.template,
                shard=n,
                pairs=tuple(item for item, _ in shard),
                histories=tuple((item[0], history) for item, history in shard if history),
            )
        if made != self.items_total:
            raise ValueError(
                f"{self.source} changed while the run read it: ingest counted {self.items_total} items, "
                f"the shards found {made}; rerun with the same run id to work on it as it is now"
            )


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
    reused: int = 0  # rows whose model replies came from an earlier run (tasks.replies)
    saved_prompt_tokens: int = 0  # what those replies cost when they were asked for
    saved_completion_tokens: int = 0


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
    asked = [r for r in rows if not r.get("reply_from")] if own_tokens else []
    reused = [r for r in rows if r.get("reply_from")] if own_tokens else []

    def tokens(rows: Rows, kind: str) -> int:
        return sum(int(r.get(kind) or 0) for r in rows)

    return ShardSummary(
        stage=stage.name,
        shard=shard,
        rows=len(rows),
        resumed=resumed,
        seconds=seconds,
        prompt_tokens=tokens(asked, "prompt_tokens"),
        completion_tokens=tokens(asked, "completion_tokens"),
        reused=len(reused),
        saved_prompt_tokens=tokens(reused, "prompt_tokens"),
        saved_completion_tokens=tokens(reused, "completion_tokens"),
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
    unsent = [
        str(r[k])
        for r in rows
        for k in (stage.count_by, "failure", "rating_failure")
        if BUDGET_EXHAUSTED in str(r.get(k) or "")
    ]
    if unsent:
        # Not committed: a rerun of this run id with a larger budget computes the shard again, and
        # the replies it already paid for come from the store (tasks.replies).
        raise BudgetStopped.of(stage.name, job.shard, len(unsent), unsent[0])
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


def upstream(store: ShardStore, job: ShardJob, stage: Stage) -> Rows:
    """An upstream stage's rows of this shard; it committed before this task was started."""
    rows = store.read_shard(stage.table, job.run_id, stage.name, job.shard)
    if rows is None:
        raise RuntimeError(f"shard {job.shard} of stage {stage.name!r} is not in the store")
    return rows


def reflections_of(rows: Sequence[dict[str, Any]]) -> list[ReflectionRow]:
    names = ReflectionRow.__dataclass_fields__
    return [ReflectionRow(**{k: row.get(k) for k in names}) for row in rows]  # type: ignore[arg-type]
