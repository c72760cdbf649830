"""The stage machinery through its ``Services`` seam: an in-memory store and an engine that counts calls.

Each recycle and traces stage runs as its shard task does (the task's function, without Prefect,
Ray or Delta): a shard is computed and committed once, a committed shard is read back without one
engine call, a stage whose upstream shard is missing says which, and a whole shard chain ends with
one decision per pair. Milliseconds, where a flow run takes half a minute.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from tasks.engine import ChatRequest, Completion, ModelRole, Sampling, ScoreRequest, TargetLogprobs
from tasks.judge.shard_tasks import judge_task
from tasks.recycle.shard_tasks import (
    reflect_instructions_task,
    reflect_responses_task,
    score_task,
    select_task,
)
from tasks.scoring.templates import PromptFormat, prompt_format
from tasks.shards import ShardJob
from tasks.traces.shard_tasks import generate_traces_task, score_traces_task

Rows = list[dict[str, Any]]


class MemoryStore:
    """``tasks.shards.ShardStore`` in memory, with the store's rule: a shard is committed once."""

    def __init__(self) -> None:
        self.shards: dict[tuple[str, str, str, int], Rows] = {}
        self.commits: Counter[str] = Counter()

    def read_shard(self, name: str, run_id: str, stage: str, shard: int) -> Rows | None:
        rows = self.shards.get((name, run_id, stage, shard))
        return None if rows is None else [dict(r) for r in rows]

    def commit_shard(self, name: str, rows: Rows, *, run_id: str, stage: str, shard: int) -> bool:
        key = (name, run_id, stage, shard)
        if key in self.shards:
            return False
        self.shards[key] = [dict(r) for r in rows]
        self.commits[stage] += 1
        return True


class CountingEngine:
    """A teacher and a student in one: replies in the free-text reflection formats, and log-probs that
    make every response easier to predict with its instruction than without (IFD < 1)."""

    spec = "fake:counting"

    def __init__(self, trace: str = "") -> None:
        self.calls: Counter[str] = Counter()
        self.trace = trace

    @property
    def prompt_format(self) -> PromptFormat:
        return prompt_format("alpaca")

    def generate(self, requests: Sequence[ChatRequest], sampling: Sampling) -> list[Completion]:
        self.calls["generate"] += 1
        return [self._reply(r.messages[-1]["content"]) for r in requests]

    def _reply(self, prompt: str) -> Completion:
        if self.trace:
            text = self.trace
        elif "Assistant 1's Answer" in prompt:  # the judge, asked in either order: the first wins
            text = "8 6\nThe first answer is better."
        elif "the Assistant's Answer" in prompt:  # the judge's rating of a kept pair
            text = "7\nHelpful and accurate."
        elif "[New Instruction]" in prompt:
            text = "[New Instruction] Explain it step by step. [End]\n[New Answer] Step one, then two. [End]"
        else:
            text = "[Better Answer] A clearer, better answer. [End]"
        return Completion(text, "stop", len(prompt.split()), len(text.split()))

    def target_logprobs(self, requests: Sequence[ScoreRequest]) -> list[TargetLogprobs]:
        self.calls["target_logprobs"] += 1
        per_token = {True: -0.5, False: -1.0}  # with a context, every token is likelier
        return [
            TargetLogprobs(tuple(per_token[bool(r.context)] for _ in r.target.split()) or (-1.0,))
            for r in requests
        ]

    def close(self) -> None:
        pass


class FakeServices:
    def __init__(self, engine: CountingEngine) -> None:
        self._engine, self._store = engine, MemoryStore()

    def engine(self, role: ModelRole) -> CountingEngine:
        return self._engine

    def store(self) -> MemoryStore:
        return self._store


PAIRS = (
    ("p1", "Name a colour.", "", "Blue."),
    ("p2", "Add the numbers.", "2 and 3", "5"),
    ("p3", "Say hello in French.", "", "Bonjour."),
)
RECYCLE = (reflect_instructions_task, reflect_responses_task, score_task, select_task)


def job(shard: int = 0, pairs: tuple[tuple[str, str, str, str], ...] = PAIRS) -> ShardJob:
    model = ModelRole(spec="hf:fake")
    return ShardJob(run_id="r1", shard=shard, pairs=pairs, teacher=model, student=model,
                    sampling=Sampling(max_tokens=64), constrained=False)  # fmt: skip


def run_chain(services: FakeServices, j: ShardJob) -> list[Any]:
    return [task.fn(j, services) for task in RECYCLE]


def test_a_shard_chain_commits_each_stage_once_and_decides_every_pair() -> None:
    engine = CountingEngine()
    services = FakeServices(engine)
    summaries = run_chain(services, job())
    assert [s.stage for s in summaries] == ["instruction", "response", "score", "select"]
    assert not any(s.resumed for s in summaries)
    assert services.store().commits == {"instruction": 1, "response": 1, "score": 1, "select": 1}
    selected = services.store().read_shard("selected", "r1", "select", 0)
    assert selected is not None and sorted(r["source_id"] for r in selected) == ["p1", "p2", "p3"]
    assert all(r["reason"] for r in selected)  # every decision says why
    scores = services.store().read_shard("scores", "r1", "score", 0) or []
    assert {r["variant"] for r in scores} == {"ori", "Q", "A", "QA"}
    assert all(r["ifd_ppl"] < 1 for r in scores if not math.isnan(r["ifd_ppl"]))
    # The teacher's tokens travel in the summaries, not the rows' way back to the flow.
    assert summaries[0].prompt_tokens > 0 and summaries[0].completion_tokens > 0


def test_a_committed_shard_is_read_back_without_one_engine_call() -> None:
    engine = CountingEngine()
    services = FakeServices(engine)
    first = run_chain(services, job())
    calls = dict(engine.calls)
    again = run_chain(services, job())
    assert engine.calls == calls  # no engine call at all
    assert all(s.resumed for s in again) and [s.rows for s in again] == [s.rows for s in first]
    assert [s.counts for s in again] == [s.counts for s in first]
    assert services.store().commits == {"instruction": 1, "response": 1, "score": 1, "select": 1}
    # Another shard of the same run is its own unit: computed, not confused with shard 0.
    other = run_chain(services, job(shard=1, pairs=PAIRS[:1]))
    assert not any(s.resumed for s in other) and engine.calls["generate"] > calls["generate"]


def test_a_stage_whose_upstream_shard_is_missing_names_it() -> None:
    services = FakeServices(CountingEngine())
    with pytest.raises(RuntimeError, match="shard 0 of stage 'instruction' is not in the store"):
        score_task.fn(job(), services)
    assert services.store().commits == {}  # nothing half-written


def test_a_stage_interrupted_before_its_commit_is_computed_again_whole() -> None:
    """A kill between compute and commit leaves no rows: the rerun computes that stage only."""
    engine = CountingEngine()
    services = FakeServices(engine)
    reflect_instructions_task.fn(job(), services)
    before = engine.calls["generate"]
    original = services.store().commit_shard

    def dies(*args: Any, **kwargs: Any) -> bool:
        raise KeyboardInterrupt  # the process is going away mid-stage

    services.store().commit_shard = dies  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        reflect_responses_task.fn(job(), services)
    services.store().commit_shard = original  # type: ignore[method-assign]
    summaries = run_chain(services, job())
    assert [s.resumed for s in summaries] == [True, False, False, False]
    assert engine.calls["generate"] > before
    assert services.store().commits == {"instruction": 1, "response": 1, "score": 1, "select": 1}


TRACE = (
    "<thinking>\n2 + 3 = 5.\n<reflection>\nChecked: 5.\n</reflection>\n</thinking>\n<output>\n5\n</output>"
)


def test_traces_are_committed_before_scoring_and_kept_by_their_checks() -> None:
    engine = CountingEngine(trace=TRACE)
    services = FakeServices(engine)
    questions = (("q1", "What is 2 + 3?", "", "5"), ("q2", "What is 2 + 2?", "", "4"), ("q3", "Any?", "", ""))
    j = job(pairs=questions)
    generated = generate_traces_task.fn(j, services)
    assert generated.rows == 3 and engine.calls["target_logprobs"] == 0  # the teacher's work is safe
    scored = score_traces_task.fn(j, services)
    rows = {r["source_id"]: r for r in services.store().read_shard("traces", "r1", "trace", 0) or []}
    assert rows["q1"]["verified"] is True and rows["q1"]["kept"]
    assert rows["q2"]["verified"] is False and rows["q2"]["reason"] == "wrong_answer"
    assert rows["q3"]["verified"] is None
    assert scored.flags["kept"] == sum(1 for r in rows.values() if r["kept"])
    calls = dict(engine.calls)
    assert score_traces_task.fn(j, services).resumed and engine.calls == calls


def test_the_judge_stage_judges_each_pair_once_and_reads_its_shard_back() -> None:
    """What a killed run's rerun relies on: judged shards are never asked again (the judge is paid)."""
    engine = CountingEngine()
    services = FakeServices(engine)
    model = ModelRole(spec="hf:fake")
    greedy = Sampling(max_tokens=32, temperature=0.0)
    j = ShardJob(run_id="r1", shard=0, pairs=PAIRS, teacher=model, student=model,
                 sampling=Sampling(max_tokens=64), constrained=False, judge=model,
                 judge_sampling=greedy, judge_constrained=False)  # fmt: skip
    run_chain(services, j)
    before = engine.calls["generate"]
    judged = judge_task.fn(j, services)
    rows = services.store().read_shard("judgements", "r1", "judge", 0) or []
    assert judged.rows == len(PAIRS) == len(rows) and engine.calls["generate"] > before
    # Both orders: the first answer shown always wins, so the orders disagree: a tie, as the rule says.
    assert {r["outcome"] for r in rows} == {"tie"}
    calls = dict(engine.calls)
    again = judge_task.fn(j, services)
    assert again.resumed and engine.calls == calls and again.counts == judged.counts


class MemoryReplies:
    """``tasks.replies.ReplyStore`` in memory."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    def lookup(self, keys: Sequence[str]) -> dict[str, Any]:
        from tasks.replies import StoredReply

        fields = StoredReply.__dataclass_fields__
        return {k: StoredReply(**{f: self.rows[k][f] for f in fields}) for k in keys if k in self.rows}

    def save(self, rows: Sequence[dict[str, Any]]) -> None:
        for r in rows:
            self.rows.setdefault(r["key"], dict(r))


class CachedServices(FakeServices):
    """What the flows give their tasks: every engine behind the store's replies."""

    def __init__(self, engine: CountingEngine, replies: MemoryReplies, run_id: str, fresh: bool = False):
        super().__init__(engine)
        from tasks.replies import ReplyCache

        self.cache = ReplyCache(engine, ModelRole(spec="hf:fake"), replies, run_id, fresh=fresh)  # type: ignore[arg-type]

    def engine(self, role: ModelRole) -> Any:
        return self.cache


def test_a_second_run_of_another_id_reuses_every_teacher_reply_and_says_whose() -> None:
    engine, replies = CountingEngine(), MemoryReplies()
    first = run_chain(CachedServices(engine, replies, "r1"), job())
    asked = engine.calls["generate"]
    services = CachedServices(engine, replies, "r2")
    second = [task.fn(replace_run(job(), "r2"), services) for task in RECYCLE]
    assert engine.calls["generate"] == asked  # the teacher was not asked again
    assert services.cache.asked == 0 and services.cache.reused == 3 * len(PAIRS)
    rows = services.store().read_shard("reflections", "r2", "instruction", 0) or []
    assert {r["reply_from"] for r in rows} == {"r1"}
    # Tokens: none spent by the second run; what the reused replies cost is counted as saved.
    assert second[0].prompt_tokens == 0 and second[0].saved_prompt_tokens == first[0].prompt_tokens > 0
    assert second[0].reused == len(PAIRS)
    # The same decisions: the replies are the same.
    decided = services.store().read_shard("selected", "r2", "select", 0) or []
    assert len(decided) == len(PAIRS)
    # Fresh replies ask again.
    fresh = CachedServices(engine, replies, "r3", fresh=True)
    reflect_instructions_task.fn(replace_run(job(), "r3"), fresh)
    assert engine.calls["generate"] == asked + 1 and fresh.cache.asked == len(PAIRS)


def replace_run(j: ShardJob, run_id: str) -> ShardJob:
    from dataclasses import replace

    return replace(j, run_id=run_id)


def test_a_shard_that_meets_its_budget_is_not_committed_and_keeps_what_it_paid_for() -> None:
    from tasks.budget import BudgetStopped
    from tasks.runs import RunStopped

    class Budgeted(CountingEngine):
        """Answers ``allowed`` requests, then refuses the rest as a pool over its budget does."""

        def __init__(self, allowed: int) -> None:
            super().__init__()
            self.allowed = allowed

        def generate(self, requests: Sequence[ChatRequest], sampling: Sampling) -> list[Completion]:
            out = super().generate(requests, sampling)
            refused = "token_budget_exhausted (token budget of 99 tokens)"
            for i in range(len(out)):
                if self.allowed <= 0:
                    out[i] = Completion("", None, 0, 0, error=refused)
                self.allowed -= 1
            return out

    replies = MemoryReplies()
    services = CachedServices(Budgeted(allowed=2), replies, "r1")
    with pytest.raises(
        BudgetStopped, match=r"the token budget of 99 tokens ran out: 1 requests of stage instruction"
    ) as caught:
        reflect_instructions_task.fn(job(), services)
    assert isinstance(caught.value, RunStopped) and caught.value.final
    assert services.store().commits == {}  # not committed: a rerun computes it
    assert len(replies.rows) == 2  # what was answered is kept
    # The rerun with a larger budget asks only for the request that was not answered.
    bigger = Budgeted(allowed=100)
    rerun = CachedServices(bigger, replies, "r1")
    rerun._store = services.store()
    summary = reflect_instructions_task.fn(job(), rerun)
    assert rerun.cache.asked == 1 and rerun.cache.reused == 2
    assert summary.rows == len(PAIRS) and services.store().commits == {"instruction": 1}
    # Replies this run paid for in its first attempt are its own: spent, not reused from elsewhere.
    assert summary.reused == 0 and summary.prompt_tokens > 0
