"""Judge stages over a batch of items: one ``generate`` call per batch, every reply kept and parsed.

``judge_pairs`` asks each (question, answer A, answer B) in both orders and gives A's outcome by the
reference rule; ``rate_answers`` gives each (question, answer) a score from 1 to 10. Each row keeps
both raw replies, the scores read from them, the prompt version, the judge and its token accounting.
A reply without scores, or a request the engine failed alone, makes the item ``failed`` with the
reason; it is never a tie.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tasks.engine import ChatRequest, Completion, Generator, Sampling

from .protocol import (
    PAIR_PROMPT,
    RATING_PROMPT,
    Scores,
    pair_form,
    pair_request,
    parse_rating,
    parse_score_pair,
    prompt_version,
    rating_form,
    rating_request,
)
from .verdict import outcome


@dataclass(frozen=True)
class PairItem:
    """One comparison: A's answer against B's to the same question."""

    id: str
    question: str
    answer_a: str
    answer_b: str


@dataclass(frozen=True)
class AnswerItem:
    """One answer to rate."""

    id: str
    question: str
    answer: str


def _generate(judge: Generator, requests: Sequence[ChatRequest], sampling: Sampling) -> list[Completion]:
    out = judge.generate(requests, sampling) if requests else []
    if len(out) != len(requests):
        raise RuntimeError(f"judge {judge.spec} returned {len(out)} completions for {len(requests)} prompts")
    return out


def _scores(c: Completion, parse: Any) -> Scores:
    """The reply's scores, or the engine's own failure of the request (``prompt_too_long: ...``)."""
    return Scores(error=c.error) if c.error else parse(c.text)


def _accounting(*completions: Completion) -> dict[str, Any]:
    """Tokens and seconds of a row's replies; ``reply_from`` where every one was reused."""
    return {
        "prompt_tokens": sum(c.prompt_tokens for c in completions),
        "completion_tokens": sum(c.completion_tokens for c in completions),
        "latency_s": sum(c.latency_s for c in completions),
        "reply_from": completions[0].reused_from if all(c.reused_from for c in completions) else None,
    }


def judge_pairs(
    items: Sequence[PairItem], judge: Generator, sampling: Sampling, *, constrained: bool = True
) -> list[dict[str, Any]]:
    """Each item judged with A shown first, then B shown first (one call for both orders)."""
    form = pair_form(sampling, constrained)
    requests = [
        request
        for it in items
        for request in (
            pair_request(it.question, it.answer_a, it.answer_b, form),
            pair_request(it.question, it.answer_b, it.answer_a, form),
        )
    ]
    replies = _generate(judge, requests, sampling)
    rows = []
    for i, it in enumerate(items):
        a_first, b_first = replies[2 * i], replies[2 * i + 1]
        s1, s2 = _scores(a_first, parse_score_pair), _scores(b_first, parse_score_pair)
        errors = [f"{order}: {s.error}" for order, s in (("a_first", s1), ("b_first", s2)) if s.error]
        enforced = form if not (a_first.free or b_first.free) else None
        rows.append(
            {
                "source_id": it.id,
                "question": it.question,
                "answer_a": it.answer_a,
                "answer_b": it.answer_b,
                "judge": judge.spec,
                "judge_prompt_version": prompt_version(PAIR_PROMPT, enforced),
                "reply_a_first": a_first.text,
                "reply_b_first": b_first.text,
                "a_first_score_a": s1.values[0] if s1.ok else None,
                "a_first_score_b": s1.values[1] if s1.ok else None,
                "b_first_score_a": s2.values[1] if s2.ok else None,
                "b_first_score_b": s2.values[0] if s2.ok else None,
                "outcome": outcome(s1.values or None, s2.values or None),
                "failure": "; ".join(errors) or None,
                **_accounting(a_first, b_first),
            }
        )
    return rows


def rate_answers(
    items: Sequence[AnswerItem], judge: Generator, sampling: Sampling, *, constrained: bool = True
) -> list[dict[str, Any]]:
    """Each answer's score from 1 to 10, with the reply and its reason when it gave none."""
    form = rating_form(sampling, constrained)
    replies = _generate(judge, [rating_request(it.question, it.answer, form) for it in items], sampling)
    rows = []
    for it, reply in zip(items, replies, strict=True):
        s = _scores(reply, parse_rating)
        rows.append(
            {
                "source_id": it.id,
                "rating": s.values[0] if s.ok else None,
                "rating_reply": reply.text,
                "rating_failure": s.error,
                "rating_prompt_version": prompt_version(RATING_PROMPT, None if reply.free else form),
                **{f"rating_{k}": v for k, v in _accounting(reply).items()},
            }
        )
    return rows


def answer_questions(
    items: Sequence[AnswerItem], model: Generator, sampling: Sampling, side: str
) -> list[dict[str, Any]]:
    """A model's answers to test-set questions (free text, the model's own chat template), each row
    with its status: ``ok``, or the request's failure (``prompt_too_long: ...``)."""
    replies = _generate(model, [ChatRequest.user(it.question) for it in items], sampling)
    return [
        {
            "source_id": it.id,
            "side": side,
            "model": model.spec,
            "question": it.question,
            "answer": reply.text,
            "status": reply.error or ("ok" if reply.text.strip() else "empty"),
            "finish_reason": reply.finish_reason,
            **_accounting(reply),
        }
        for it, reply in zip(items, replies, strict=True)
    ]


def failed_pair(item: PairItem, judge: str, version: str, failure: str) -> dict[str, Any]:
    """The row of an item that could not be judged (an answer missing): failed, with its reason."""
    return {
        "source_id": item.id,
        "question": item.question,
        "answer_a": item.answer_a,
        "answer_b": item.answer_b,
        "judge": judge,
        "judge_prompt_version": version,
        "outcome": "failed",
        "failure": failure,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "latency_s": 0.0,
    }
