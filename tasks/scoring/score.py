"""Score (instruction, response) pairs with a student: IFD and r-IFD, every distinct text once.

Engine-agnostic: the student is anything with a ``prompt_format`` and ``target_logprobs``
(``infra.engines.base.Scorer``).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tasks.conversation import History, user_message
from tasks.engine import Scorer, ScoreRequest, TargetLogprobs

from .ifd import PairScore, Ratio, mean_loss
from .templates import PromptFormat


@dataclass(frozen=True)
class PairText:
    """What scoring needs of a pair: the instruction, the response, the row's input (if any), and the
    conversation before it (``tasks.conversation``; empty for a single-turn pair)."""

    instruction: str
    response: str
    input: str = ""
    history: History = ()

    @property
    def user_message(self) -> str:
        return user_message(self.instruction, self.input)


@dataclass(frozen=True)
class PairRequests:
    """The four passes of one pair (docs/scoring.md)."""

    cond_response: ScoreRequest
    direct_response: ScoreRequest
    cond_instruction: ScoreRequest
    direct_instruction: ScoreRequest

    def all(self) -> tuple[ScoreRequest, ...]:
        return (self.cond_response, self.direct_response, self.cond_instruction, self.direct_instruction)


def pair_requests(pair: PairText, fmt: PromptFormat) -> PairRequests:
    """IFD: the response after the history and the instruction's prompt, and alone. r-IFD: the
    instruction (as the format writes it) after the history and the reversed prompt, and alone."""
    instruction = fmt.instruction_target(pair.instruction, pair.input)
    return PairRequests(
        cond_response=ScoreRequest(fmt.prompt(pair.instruction, pair.input, pair.history), pair.response),
        direct_response=ScoreRequest("", pair.response),
        cond_instruction=ScoreRequest(fmt.reverse(pair.response, pair.history), instruction),
        direct_instruction=ScoreRequest("", instruction),
    )


def combine(reqs: PairRequests, results: dict[ScoreRequest, TargetLogprobs]) -> PairScore:
    """Turn the four passes' log-probs into a PairScore; any failed pass names itself in the error."""
    cy, dy = results[reqs.cond_response], results[reqs.direct_response]
    cx, dx = results[reqs.cond_instruction], results[reqs.direct_instruction]
    errors = [
        f"{name}: {r.error}"
        for name, r in (
            ("response", cy),
            ("response_direct", dy),
            ("instruction", cx),
            ("instruction_direct", dx),
        )
        if r.error
    ]
    return PairScore(
        loss_cond=mean_loss(cy.logprobs),
        loss_direct=mean_loss(dy.logprobs),
        rloss_cond=mean_loss(cx.logprobs),
        rloss_direct=mean_loss(dx.logprobs),
        n_response_tokens=len(cy.logprobs),
        n_instruction_tokens=len(cx.logprobs),
        truncated=any(r.truncated for r in (cy, dy, cx, dx)),
        score_error="; ".join(errors) or None,
    )


def score_pairs(
    pairs: Sequence[PairText],
    student: Scorer,
    *,
    chunk_size: int = 512,
    on_progress: Callable[[int], None] | None = None,
) -> list[PairScore]:
    """Score every pair; distinct texts go to the engine once, in length order, in chunks.

    ``on_progress`` receives the number of pairs whose passes have all been computed so far.
    """
    per_pair = [pair_requests(p, student.prompt_format) for p in pairs]
    results = _run_distinct([reqs.all() for reqs in per_pair], student, chunk_size, on_progress)
    return [combine(reqs, results) for reqs in per_pair]


@dataclass(frozen=True)
class ResponseScore:
    """IFD alone (no r-IFD): what the traces flow keeps for a trace given its question."""

    loss_cond: float
    loss_direct: float
    n_response_tokens: int
    truncated: bool
    score_error: str | None

    @property
    def ifd(self) -> Ratio:
        return Ratio(self.loss_cond, self.loss_direct)


def score_responses(
    pairs: Sequence[PairText],
    student: Scorer,
    *,
    chunk_size: int = 512,
    on_progress: Callable[[int], None] | None = None,
) -> list[ResponseScore]:
    """IFD of each response given its instruction: the two response passes of ``score_pairs`` only.

    For long outputs such as reflection traces, where the reversed pass would double the cost and
    the flow has no use for r-IFD.
    """
    per_pair = [pair_requests(p, student.prompt_format) for p in pairs]
    passes = [(r.cond_response, r.direct_response) for r in per_pair]
    results = _run_distinct(passes, student, chunk_size, on_progress)
    out = []
    for cond, direct in passes:
        c, d = results[cond], results[direct]
        errors = [f"{name}: {r.error}" for name, r in (("response", c), ("response_direct", d)) if r.error]
        out.append(
            ResponseScore(
                loss_cond=mean_loss(c.logprobs),
                loss_direct=mean_loss(d.logprobs),
                n_response_tokens=len(c.logprobs),
                truncated=c.truncated or d.truncated,
                score_error="; ".join(errors) or None,
            )
        )
    return out


def _run_distinct(
    request_sets: Sequence[Sequence[ScoreRequest]],
    student: Scorer,
    chunk_size: int,
    on_progress: Callable[[int], None] | None,
) -> dict[ScoreRequest, TargetLogprobs]:
    """Every distinct request once, shortest first, in chunks; progress counts completed sets."""
    unique = list(dict.fromkeys(r for reqs in request_sets for r in reqs))
    unique.sort(key=lambda r: len(r.context) + len(r.target))
    results: dict[ScoreRequest, TargetLogprobs] = {}
    # A set is done once the last of its requests (in engine order) is computed.
    position = {r: i for i, r in enumerate(unique)}
    done_at = sorted(max(position[r] for r in reqs) for reqs in request_sets if reqs)
    reported = 0
    for start in range(0, len(unique), chunk_size):
        chunk = unique[start : start + chunk_size]
        out = student.target_logprobs(chunk)
        if len(out) != len(chunk):
            raise RuntimeError(f"engine returned {len(out)} results for {len(chunk)} requests")
        results.update(zip(chunk, out, strict=True))
        if on_progress is not None:
            finished = bisect_right(done_at, start + len(chunk) - 1)
            on_progress(finished - reported)
            reported = finished
    return results
