"""Which traces are scored and kept, and the rows the ``traces`` table gets."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tasks.scoring.score import ResponseScore
from tasks.traces.keep import decide, scorable, score_text, trace_table_rows


def trace(**over: Any) -> dict[str, Any]:
    row = {
        "source_id": "s1",
        "teacher": "hf:t",
        "prompt_version": "v1+v1",
        "question": "What is 2 + 2?",
        "gold": "4",
        "raw_text": "<thinking>2 + 2 = 4</thinking><output>4</output>",
        "thinking": "2 + 2 = 4",
        "output": "4",
        "n_reflections": 0,
        "valid": True,
        "invalid_reason": None,
        "verified": True,
        "prompt_tokens": 10,
        "completion_tokens": 12,
        "latency_s": 0.5,
        "finish_reason": "stop",
    }
    return {**row, **over}


def score(cond: float = 0.5, direct: float = 1.0, error: str | None = None) -> ResponseScore:
    return ResponseScore(cond, direct, 12, False, error)


@pytest.mark.parametrize(
    ("row", "s", "expected"),
    [
        (trace(), score(), (True, "kept")),
        (trace(verified=None, gold=None), score(), (True, "kept")),
        (trace(valid=False, invalid_reason="no_output", verified=False), None, (False, "invalid:no_output")),
        (trace(verified=False), None, (False, "wrong_answer")),
        (trace(), None, (False, "not_scored")),
        (trace(), score(error="response: empty"), (False, "not_scored")),
        (trace(), score(cond=math.nan), (False, "not_scored")),
        (trace(), score(cond=1.0, direct=1.0), (False, "ifd>=1")),
        (trace(), score(cond=2.0, direct=1.0), (False, "ifd>=1")),
    ],
)
def test_decide(row: dict[str, Any], s: ResponseScore | None, expected: tuple[bool, str]) -> None:
    assert decide(row, s) == expected


def test_only_valid_and_not_contradicted_traces_are_scored() -> None:
    assert scorable(trace()) and scorable(trace(verified=None))
    assert not scorable(trace(verified=False))
    assert not scorable(trace(valid=False, verified=None))
    assert score_text(trace()).instruction == "What is 2 + 2?"
    assert score_text(trace()).response == trace()["raw_text"]


def test_table_rows_carry_the_trace_the_score_and_the_decision() -> None:
    rows = trace_table_rows(
        [trace(), trace(source_id="s2", verified=False)], {"s1": score(0.5, 1.0)}, "hf:student"
    )
    kept, wrong = rows
    assert kept["kept"] and kept["reason"] == "kept" and kept["student"] == "hf:student"
    assert kept["ifd_ppl"] == pytest.approx(math.exp(-0.5)) and kept["ifd_loss"] == pytest.approx(0.5)
    assert kept["score_error"] is None and kept["raw_text"] == trace()["raw_text"]
    assert not wrong["kept"] and wrong["reason"] == "wrong_answer"
    assert math.isnan(wrong["ifd_ppl"]) and wrong["score_error"] == "not scored: wrong_answer"
