"""The traces flow for one shard, as pure plumbing: which traces to score, and which to keep.

A trace is kept when its structure is valid, its ``<output>`` does not contradict the gold answer
(``verified`` is True, or None when the question has no gold), and the student finds it
informative: IFD(trace | question) < 1. Only traces that can still be kept are scored: the rest
would spend the student's time on rows that are dropped anyway.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from tasks.scoring.ifd import SCORING_VERSION
from tasks.scoring.score import PairText, ResponseScore
from tasks.teacher.stages import TraceRow

KEPT = "kept"
NOT_SCORED = "not_scored"


def scorable(trace: Mapping[str, Any]) -> bool:
    """Valid and not contradicted by the gold answer."""
    return bool(trace["valid"]) and trace["verified"] is not False


def score_text(trace: Mapping[str, Any]) -> PairText:
    """What the student scores: the whole trace (thinking, reflections, output) given the question."""
    return PairText(trace["question"], trace["raw_text"])


def decide(trace: Mapping[str, Any], score: ResponseScore | None) -> tuple[bool, str]:
    """(kept, reason): the first check that fails names the reason."""
    if not trace["valid"]:
        return False, f"invalid:{trace['invalid_reason']}"
    if trace["verified"] is False:
        return False, "wrong_answer"
    if score is None or score.score_error or math.isnan(score.ifd.ppl):
        return False, NOT_SCORED
    if score.ifd.ppl >= 1:
        return False, "ifd>=1"
    return True, KEPT


def trace_table_rows(
    traces: Sequence[Mapping[str, Any]], scores: Mapping[str, ResponseScore], student: str
) -> list[dict[str, Any]]:
    """Rows of the ``traces`` table: the trace, its score (NaN when not scored), the decision."""
    fields = TraceRow.__dataclass_fields__
    out = []
    for trace in traces:
        score = scores.get(trace["source_id"])
        kept, reason = decide(trace, score)
        out.append(
            {
                **{k: trace.get(k) for k in fields},  # a column added later reads as None
                "student": student,
                "ifd_ppl": score.ifd.ppl if score else math.nan,
                "ifd_loss": score.ifd.loss if score else math.nan,
                "loss_cond": score.loss_cond if score else math.nan,
                "loss_direct": score.loss_direct if score else math.nan,
                "score_error": (score.score_error if score else "not scored: " + reason),
                "scoring_version": SCORING_VERSION if score else None,
                "kept": kept,
                "reason": reason,
            }
        )
    return out
