"""Selective Reflection-Tuning for one shard, as pure data plumbing between the stages.

ori = (x0, y0) is the seed; the instruction reflection proposes Q = (x1, y1); the response
reflection gives A = (x0, y0') and QA = (x1, y1'). The student scores every variant that exists
and ``tasks.recycle.select`` picks one per pair, with the reason. A seed that ends a conversation
keeps its history in every variant: the variants replace its last exchange only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tasks.conversation import History, PairLike
from tasks.engine import REQUEST_FAILURES, failure_cause
from tasks.recycle.select import VARIANTS, Decision, VariantScore, select_variant
from tasks.scoring.ifd import PairScore
from tasks.scoring.score import PairText
from tasks.teacher.stages import ReflectionRow


@dataclass(frozen=True)
class SimplePair:
    """A pair as the teacher stages see it (id = the seed's source id), after its history if any."""

    id: str
    instruction: str
    input: str
    output: str
    history: History = ()


@dataclass(frozen=True)
class Candidate:
    """One variant of one seed pair, ready to score."""

    source_id: str
    variant: str
    instruction: str
    input: str
    output: str
    history: History = ()

    @property
    def text(self) -> PairText:
        return PairText(self.instruction, self.output, self.input, self.history)


def reflected_pairs(seeds: Sequence[PairLike], instruction_rows: Iterable[ReflectionRow]) -> list[SimplePair]:
    """(x1, y1) for every seed whose instruction reflection parsed (the new instruction holds any
    input), after the seed's history."""
    history = {s.id: s.history for s in seeds}
    return [
        SimplePair(r.source_id, r.new_instruction, "", r.new_answer, history.get(r.source_id, ()))
        for r in instruction_rows
        if r.ok and r.new_instruction and r.new_answer
    ]


def candidates(
    seeds: Sequence[PairLike],
    instruction_rows: Iterable[ReflectionRow],
    response_rows: Iterable[ReflectionRow],
) -> list[Candidate]:
    """Every variant that exists, seed by seed in seed order, variants in the order ori, Q, A, QA."""
    q = {p.id: p for p in reflected_pairs(seeds, instruction_rows)}
    better = {(r.source_id, r.stage): r.better_answer for r in response_rows if r.ok and r.better_answer}
    out: list[Candidate] = []
    for s in seeds:
        h = s.history
        out.append(Candidate(s.id, "ori", s.instruction, s.input, s.output, h))
        if s.id in q:
            out.append(Candidate(s.id, "Q", q[s.id].instruction, "", q[s.id].output, h))
        if (a := better.get((s.id, "response_original"))) is not None:
            out.append(Candidate(s.id, "A", s.instruction, s.input, a, h))
        if s.id in q and (qa := better.get((s.id, "response_reflected"))) is not None:
            out.append(Candidate(s.id, "QA", q[s.id].instruction, "", qa, h))
    return out


def score_rows(cands: Sequence[Candidate], scores: Sequence[PairScore], student: str) -> list[dict[str, Any]]:
    """Rows of the ``scores`` table."""
    return [
        {
            "source_id": c.source_id,
            "variant": c.variant,
            "student": student,
            "instruction": c.instruction,
            "input": c.input,
            "output": c.output,
            **s.as_columns(),
        }
        for c, s in zip(cands, scores, strict=True)
    ]


# Which variants a failed teacher request leaves absent: the instruction reflection makes Q (and so
# QA), the response reflections A (the original pair) and QA (the reflected pair).
ABSENT_AFTER = {"instruction": ("Q", "QA"), "response_original": ("A",), "response_reflected": ("QA",)}


def request_failures(rows: Iterable[ReflectionRow]) -> dict[str, dict[str, str]]:
    """Per seed, the variants that a request failing alone left absent, with the failure's cause
    (``prompt_too_long``, ``rejected``, ``engine_error``); parse failures are not request failures."""
    out: dict[str, dict[str, str]] = {}
    for r in rows:
        cause = failure_cause(r.parse_status)
        if cause in REQUEST_FAILURES or cause == "engine_error":
            for variant in ABSENT_AFTER.get(r.stage, ()):
                out.setdefault(r.source_id, {}).setdefault(variant, cause)
    return out


def _with_cause(decision: Decision, failed: dict[str, str]) -> str:
    """The decision's reason, or ``failed:CAUSE`` when the pair was dropped because a variant it
    needed is absent (or unscorable) and a teacher request of that pair failed alone."""
    if decision.kept or not failed or not decision.reason.startswith(("missing:", "unscored:")):
        return decision.reason
    cause = failed.get(decision.variant or "") or next(iter(failed.values()))
    return f"failed:{cause}"


def selection_rows(
    score_table: Sequence[dict[str, Any]],
    *,
    teacher: str,
    student: str,
    prompt_version: str,
    failures: dict[str, dict[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """One ``selected`` row per seed: the decision, its reason, and the kept (or judged) variant.

    ``failures`` (``request_failures``) names the cause when a pair is dropped because a teacher
    request failed alone (``failed:prompt_too_long``)."""
    failures = failures or {}
    by_seed: dict[str, dict[str, dict[str, Any]]] = {}
    for row in score_table:
        by_seed.setdefault(row["source_id"], {})[row["variant"]] = row
    out = []
    for source_id, variants in by_seed.items():
        decision = select_variant(
            {v: VariantScore(row["ifd_ppl"], row["rifd_ppl"]) for v, row in variants.items() if v in VARIANTS}
        )
        # The row shows the variant it names: the one judged, or ori when that one does not exist.
        name = decision.variant if decision.variant in variants else "ori"
        judged = variants[name]
        out.append(
            {
                "source_id": source_id,
                "kept": decision.kept,
                "variant": name,
                "branch": decision.branch,
                "reason": _with_cause(decision, failures.get(source_id, {})),
                "instruction": judged["instruction"],
                "input": judged["input"],
                "output": judged["output"],
                "ifd_ppl": judged["ifd_ppl"],
                "rifd_ppl": judged["rifd_ppl"],
                "scoring_version": judged.get("scoring_version"),
                "teacher": teacher,
                "student": student,
                "prompt_version": prompt_version,
            }
        )
    return out
