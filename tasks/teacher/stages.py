"""Teacher stages over a batch of rows: one ``generate`` call per batch, every reply kept and parsed.

Each output row keeps the teacher's full reply (the pair's reflection trace), the parsed fields,
the parse status, the prompt version, the teacher spec, the sampling parameters and the token
accounting. A failed parse is marked and counted, never turned into a candidate.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, Protocol

from tasks.conversation import History, PairLike
from tasks.engine import REQUEST_FAILURES, ChatRequest, Completion, Generator, Sampling, failure_cause
from tasks.prompts import render, version
from tasks.traces.validate import validate_trace
from tasks.traces.verify import extract_gold, verify

from .forms import (
    ReplyForm,
    fitting_form,
    instruction_form,
    loads_object,
    response_form,
    trace_form,
    trace_from_json,
)
from .parse import OK, parse_instruction_reflection, parse_response_reflection


class QuestionLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def question(self) -> str: ...
    @property
    def answer(self) -> str | None: ...


@dataclass
class StageStats:
    """Counts of one stage over one or more batches."""

    rows: int = 0
    parsed: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, status: str, completion: Completion) -> None:
        self.rows += 1
        if status == OK:
            self.parsed += 1
        else:
            self.failed[status] += 1
        self.prompt_tokens += completion.prompt_tokens
        self.completion_tokens += completion.completion_tokens

    def merge(self, other: StageStats) -> StageStats:
        return StageStats(
            self.rows + other.rows,
            self.parsed + other.parsed,
            self.failed + other.failed,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failed": dict(self.failed)}


@dataclass(frozen=True)
class ReflectionRow:
    """One teacher reply about one pair (a row of the ``reflections`` table)."""

    source_id: str
    stage: str
    teacher: str
    prompt_version: str
    instruction: str
    input: str
    output: str
    raw_text: str
    new_instruction: str | None
    new_answer: str | None
    better_answer: str | None
    parse_status: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    finish_reason: str | None
    sampling_json: str
    reply_from: str | None = None  # the run that asked for this reply, when it was reused

    @property
    def ok(self) -> bool:
        return self.parse_status == OK

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TraceRow:
    """One generated reflection trace, validated and verified (a row of the ``traces`` table)."""

    source_id: str
    teacher: str
    prompt_version: str
    question: str
    gold: str | None
    raw_text: str
    thinking: str | None
    output: str | None
    n_reflections: int
    valid: bool
    invalid_reason: str | None
    verified: bool | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    finish_reason: str | None
    reply_from: str | None = None  # the run that asked for this reply, when it was reused

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sampling_json(sampling: Sampling) -> str:
    return json.dumps(sampling.model_dump(mode="json"), sort_keys=True)


def _engine_status(c: Completion) -> str | None:
    """The row's status when the engine failed this request alone: its reason as the engine gave it
    (``prompt_too_long: 5832 tokens > 2048``), other errors under ``engine_error:``."""
    if not c.error:
        return None
    return c.error if failure_cause(c.error) in REQUEST_FAILURES else f"engine_error:{c.error}"


def _generate(teacher: Generator, prompts: Sequence[ChatRequest], sampling: Sampling) -> list[Completion]:
    out = teacher.generate(prompts, sampling) if prompts else []
    if len(out) != len(prompts):
        raise RuntimeError(
            f"teacher {teacher.spec} returned {len(out)} completions for {len(prompts)} prompts"
        )
    return out


def _form_version(name: str, form: ReplyForm | None, history: History = ()) -> str:
    """The prompt version, marked ``+history`` when the prompt showed a conversation before the pair
    (the text without one is unchanged) and ``+json`` when the reply was constrained to the JSON form."""
    return version(name) + ("+history" if history else "") + ("+json" if form is not None else "")


def reflect_instructions(
    pairs: Sequence[PairLike], teacher: Generator, sampling: Sampling, *, constrained: bool = True
) -> tuple[list[ReflectionRow], StageStats]:
    """Critique each pair and propose (new instruction, new answer): the candidate (x1, y1).

    ``constrained`` replies take the JSON form of ``forms.instruction_form`` (fields bounded so the
    reply ends within ``max_tokens``); otherwise, or when ``max_tokens`` leaves no room for the form,
    the teacher writes free text with bracket tags.
    """
    form = fitting_form(instruction_form(sampling.max_tokens)) if constrained else None
    prompts = [
        ChatRequest.user(
            render(
                "reflect_instruction", instruction=p.instruction, input=p.input, output=p.output,
                history=p.history, structured=form is not None,
            ),
            form=form,
        )
        for p in pairs
    ]  # fmt: skip
    stats, rows = StageStats(), []
    for p, c in zip(pairs, _generate(teacher, prompts, sampling), strict=True):
        parsed = parse_instruction_reflection(c.text, c.finish_reason)
        status = _engine_status(c) or parsed.status
        stats.add(status, c)
        rows.append(
            _row(p, "instruction", _form_version("reflect_instruction", form, p.history), teacher, sampling,
                 c, status, new_instruction=parsed.new_instruction, new_answer=parsed.new_answer)
        )  # fmt: skip
    return rows, stats


def reflect_responses(
    pairs: Sequence[PairLike],
    teacher: Generator,
    sampling: Sampling,
    which: Literal["original", "reflected"],
    *,
    constrained: bool = True,
) -> tuple[list[ReflectionRow], StageStats]:
    """Critique each answer and write a better one: y0' for the original pair, y1' for the reflected."""
    form = fitting_form(response_form(sampling.max_tokens)) if constrained else None
    names = ["reflect_response_with_input" if p.input else "reflect_response" for p in pairs]
    prompts = [
        ChatRequest.user(
            render(
                name,
                instruction=p.instruction,
                input=p.input,
                output=p.output,
                history=p.history,
                structured=form is not None,
            ),
            form=form,
        )
        for name, p in zip(names, pairs, strict=True)
    ]
    stats, rows = StageStats(), []
    for name, p, c in zip(names, pairs, _generate(teacher, prompts, sampling), strict=True):
        parsed = parse_response_reflection(c.text, c.finish_reason)
        status = _engine_status(c) or parsed.status
        stats.add(status, c)
        rows.append(
            _row(
                p,
                f"response_{which}",
                _form_version(name, form, p.history),
                teacher,
                sampling,
                c,
                status,
                better_answer=parsed.better_answer,
            )
        )
    return rows, stats


def _row(
    p: PairLike,
    stage: str,
    prompt_version: str,
    teacher: Generator,
    sampling: Sampling,
    c: Completion,
    status: str,
    *,
    new_instruction: str | None = None,
    new_answer: str | None = None,
    better_answer: str | None = None,
) -> ReflectionRow:
    ok = status == OK
    return ReflectionRow(
        source_id=p.id,
        stage=stage,
        teacher=teacher.spec,
        prompt_version=prompt_version,
        instruction=p.instruction,
        input=p.input,
        output=p.output,
        raw_text=c.text,
        new_instruction=new_instruction if ok else None,
        new_answer=new_answer if ok else None,
        better_answer=better_answer if ok else None,
        parse_status=status,
        prompt_tokens=c.prompt_tokens,
        completion_tokens=c.completion_tokens,
        latency_s=c.latency_s,
        finish_reason=c.finish_reason,
        sampling_json=sampling_json(sampling),
        reply_from=c.reused_from,
    )


def generate_traces(
    questions: Sequence[QuestionLike], teacher: Generator, sampling: Sampling, *, constrained: bool = True
) -> tuple[list[TraceRow], StageStats]:
    """Ask for a Reflection-format trace per question; validate its structure and verify its output.

    ``constrained`` replies follow ``forms.trace_form``: the structure is forced and each part
    bounded, but the validator still checks every reply (and a JSON reply from an OpenAI-style
    server is rendered back into the Reflection format first).
    """
    form = fitting_form(trace_form(sampling.max_tokens)) if constrained else None
    system = render("trace_system")
    prompts = [
        ChatRequest.user(render("trace_user", question=q.question), system=system, form=form)
        for q in questions
    ]
    stats, rows = StageStats(), []
    prompt_version = f"{version('trace_system')}+{version('trace_user')}" + ("+grammar" if form else "")
    for q, c in zip(questions, _generate(teacher, prompts, sampling), strict=True):
        if form is not None and (data := loads_object(c.text)) is not None:
            c = replace(c, text=trace_from_json(data) or c.text)
        check = validate_trace(c.text)
        gold = extract_gold(q.answer)
        reason = _engine_status(c) or (None if check.valid else check.reason)
        if reason is None and c.finish_reason == "length":
            reason = "truncated"
        valid = reason is None
        stats.add(OK if valid else str(reason), c)
        rows.append(
            TraceRow(
                source_id=q.id,
                teacher=teacher.spec,
                prompt_version=prompt_version,
                question=q.question,
                gold=gold,
                raw_text=c.text,
                thinking=check.thinking,
                output=check.output,
                n_reflections=check.n_reflections,
                valid=valid,
                invalid_reason=reason,
                verified=verify(check.output, gold) if valid else (False if gold is not None else None),
                prompt_tokens=c.prompt_tokens,
                completion_tokens=c.completion_tokens,
                latency_s=c.latency_s,
                finish_reason=c.finish_reason,
                reply_from=c.reused_from,
            )
        )
    return rows, stats
